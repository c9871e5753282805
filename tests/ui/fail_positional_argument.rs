#[coroutines::main(4)]
fn main() {}
