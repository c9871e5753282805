#[coroutines::test(workers = 0, stack_size = "64 KiB")]
fn spawns() {}

fn main() {
    spawns();
}
