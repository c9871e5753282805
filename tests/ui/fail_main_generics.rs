#[coroutines::main]
fn main<T: Default>() {}
