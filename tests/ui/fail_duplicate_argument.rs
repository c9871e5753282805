#[coroutines::main(workers = 2, stack_size = 65536, workers = 4)]
fn main() {}
