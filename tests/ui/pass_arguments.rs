// All three arguments, in a different order than documented, with a digit
// separator and a suffix.

/// Doc comments and other attributes are kept.
#[coroutines::main(stack_size = 262_144, work_stealing = true, workers = 2usize)]
#[allow(clippy::all)]
fn main() {
    assert!(coroutines::in_coroutine());
    let total: u64 = (1..=10).sum();
    assert_eq!(total, 55);
}
