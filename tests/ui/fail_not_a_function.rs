#[coroutines::main]
struct Main;

fn main() {}
