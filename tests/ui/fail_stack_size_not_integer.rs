#[coroutines::main(stack_size = 64 * 1024)]
fn main() {}
