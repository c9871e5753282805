#[coroutines::main(stack_size = 100, main_stack_size = 2_000_000_000_000)]
fn main() {}
