#[coroutines::test]
async fn fetches() {}

fn main() {
    let _ = fetches();
}
