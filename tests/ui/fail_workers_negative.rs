#[coroutines::main(workers = -1)]
fn main() {}
