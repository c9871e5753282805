// The caller cannot touch what a scoped coroutine borrows mutably.
fn main() {
    let mut count = 0;
    coroutines::scope(|s| {
        s.spawn(|| count += 1);
        count += 1;
    });
    println!("{count}");
}
