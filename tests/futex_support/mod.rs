//! Shared by the futex and join tests: a watchdog and a yield loop.
//!
//! Where the tests sleep inside coroutines they call `std::thread::sleep`,
//! which parks the coroutine through the sleep hook.
#![allow(dead_code)]

use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::Duration;

/// A bound generous enough for a loaded CI machine; a missing hook blocks
/// the worker forever, so only the order of magnitude matters.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Runs `body` as the root coroutine of a new runtime with `workers`
/// workers, on a plain thread, and fails the test if it has not finished
/// within `limit`: without the hooks a coroutine that waits blocks its
/// worker, and the body never ends. Panics of the body are resumed.
pub fn run<T: Send + 'static>(
    workers: usize,
    limit: Duration,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done, result) = mpsc::channel();
    std::thread::Builder::new()
        .name("watched-runtime".into())
        .spawn(move || {
            let runtime = coroutines::Runtime::builder()
                .workers(workers)
                .build()
                .expect("runtime");
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(body)));
            let _ = done.send(outcome);
        })
        .expect("spawn the watched thread");
    match result.recv_timeout(limit) {
        Ok(Ok(value)) => value,
        Ok(Err(payload)) => panic::resume_unwind(payload),
        Err(_) => panic!(
            "not finished within {limit:?}: a coroutine blocked its worker \
             (is the futex hook missing?)"
        ),
    }
}

/// Yields until `condition` holds.
pub fn yield_until(mut condition: impl FnMut() -> bool) {
    while !condition() {
        coroutines::yield_now();
    }
}
