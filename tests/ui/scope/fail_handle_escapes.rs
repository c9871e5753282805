// A join handle cannot leave the scope it belongs to.
fn main() {
    let handle = coroutines::scope(|s| s.spawn(|| 1));
    handle.join().unwrap();
}
