// `return` in the body leaves the body, with an explicit return type.

use std::sync::atomic::{AtomicU32, Ordering};

static STEPS: AtomicU32 = AtomicU32::new(0);

#[coroutines::main]
fn main() -> Result<(), String> {
    assert!(coroutines::in_coroutine());
    for i in 0.. {
        if i == 3 {
            assert_eq!(STEPS.load(Ordering::SeqCst), 3);
            return Ok(());
        }
        STEPS.fetch_add(1, Ordering::SeqCst);
    }
    Err("`return` must leave main's body".to_owned())
}
