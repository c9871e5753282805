// `Scope` is invariant over 'scope: a coroutine cannot hand the scope a
// borrow of its own locals, which would be dropped when it ends.
fn main() {
    coroutines::scope(|s| {
        s.spawn(|| {
            let word = String::from("abcd");
            s.spawn(|| println!("{word:?}"));
        });
    });
}
