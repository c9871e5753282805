#[coroutines::main(work_stealing = 1)]
fn main() {}
