#[coroutines::main]
async fn main() {}
