#[coroutines::main(workers)]
fn main() {}
