#[coroutines::test]
#[test]
fn twice() {}

fn main() {}
