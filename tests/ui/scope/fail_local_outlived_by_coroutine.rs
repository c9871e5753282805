// A scoped coroutine may outlive the scope's closure, so it cannot borrow the
// closure's own locals.
fn main() {
    coroutines::scope(|s| {
        let word = String::from("local");
        s.spawn(|| println!("{word}"));
    });
}
