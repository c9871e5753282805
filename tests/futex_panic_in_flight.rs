//! A coroutine whose panic hook waits on a lock must not let the other
//! coroutines of its worker run: std counts panics per OS thread, so a
//! second panic on the same worker meanwhile would be taken for a panic
//! inside the first one's hook, and abort the process. The futex hook
//! therefore blocks the worker instead of parking while a panic is in
//! flight.
//!
//! Alone in its file: it installs a process-wide panic hook.

mod support;

use std::panic;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{run, yield_until, LIMIT};

/// The panic hook takes this lock first; the test holds it from a thread.
static GATE: Mutex<()> = Mutex::new(());

#[test]
fn second_panic_on_the_worker_waits_for_the_first_hook() {
    let default = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        drop(GATE.lock());
        default(info);
    }));
    let held = Arc::new(AtomicBool::new(false));
    let gatekeeper = {
        let held = held.clone();
        std::thread::spawn(move || {
            let _gate = GATE.lock().unwrap();
            held.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(200));
        })
    };
    let failures = run(1, LIMIT, move || {
        yield_until(|| held.load(Ordering::SeqCst));
        let panicking: Vec<_> = (0..2)
            .map(|i| coroutines::spawn(move || panic!("expected panic {i}")))
            .collect();
        panicking
            .into_iter()
            .filter_map(|handle| handle.join().err())
            .count()
    });
    gatekeeper.join().unwrap();
    assert_eq!(failures, 2);
}
