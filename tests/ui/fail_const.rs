#[coroutines::main]
const fn main() {}
