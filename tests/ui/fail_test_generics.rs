#[coroutines::test]
fn defaults<T: Default + PartialEq + std::fmt::Debug>() {
    assert_eq!(T::default(), T::default());
}

fn main() {
    defaults::<u8>();
}
