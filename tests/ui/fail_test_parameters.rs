#[coroutines::test]
fn adds(a: u32, b: u32) {
    assert_eq!(a + b, b + a);
}

fn main() {
    adds(1, 2);
}
