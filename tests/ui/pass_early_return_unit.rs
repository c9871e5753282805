// `return` in the body leaves the body, with the default return type. The
// attribute also works on a function with another name (once per process, as
// it starts the process-wide runtime).

use std::sync::atomic::{AtomicBool, Ordering};

static RETURNED: AtomicBool = AtomicBool::new(false);

#[coroutines::main]
fn run() {
    assert!(coroutines::in_coroutine());
    if !RETURNED.swap(true, Ordering::SeqCst) {
        return;
    }
    unreachable!("`return` must leave the body");
}

fn main() {
    assert!(!coroutines::in_coroutine());
    run();
    assert!(RETURNED.load(Ordering::SeqCst));
}
