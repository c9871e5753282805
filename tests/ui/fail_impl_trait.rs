#[coroutines::main]
fn main() -> impl std::process::Termination {}
