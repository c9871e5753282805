//! One `Mutex`/`Condvar` shared by OS threads and coroutines on two
//! workers. Every wake must reach the right kind of waiter: a wake-up lost
//! between the futex table and the kernel hangs the test (the watchdog
//! fails it), and a double grant of the lock loses increments.

mod support;

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use support::run;

const THREADS: usize = 4;
const COROUTINES: usize = 1_000;
const TOTAL: usize = 1_000_000;
const PER_THREAD: usize = 100_000;
const PER_COROUTINE: usize = (TOTAL - THREADS * PER_THREAD) / COROUTINES;

#[derive(Default)]
struct State {
    /// Set once every participant waits: they all start together.
    go: bool,
    waiting: usize,
    count: usize,
    finished: usize,
}

/// One participant: waits for the start, increments `n` times under the
/// lock, and reports that it finished.
fn participate(shared: &(Mutex<State>, Condvar), n: usize) {
    let (lock, changed) = shared;
    let mut state = lock.lock().unwrap();
    state.waiting += 1;
    changed.notify_all();
    state = changed.wait_while(state, |state| !state.go).unwrap();
    drop(state);
    for i in 0..n {
        let mut state = lock.lock().unwrap();
        // Not atomic on purpose: two holders at once would lose counts.
        let count = state.count;
        if i % 64 == 0 {
            // Hold the lock across a yield now and then, so that waiters
            // pile up on both sides.
            drop(state);
            coroutines::yield_now();
            state = lock.lock().unwrap();
            state.count += 1;
        } else {
            state.count = count + 1;
        }
    }
    lock.lock().unwrap().finished += 1;
    changed.notify_all();
}

#[test]
fn four_threads_and_a_thousand_coroutines_count_to_a_million() {
    assert_eq!(THREADS * PER_THREAD + COROUTINES * PER_COROUTINE, TOTAL);
    let count = run(2, Duration::from_secs(120), || {
        let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let shared = shared.clone();
                std::thread::spawn(move || participate(&shared, PER_THREAD))
            })
            .collect();
        let coroutines: Vec<_> = (0..COROUTINES)
            .map(|_| {
                let shared = shared.clone();
                coroutines::spawn(move || participate(&shared, PER_COROUTINE))
            })
            .collect();
        let (lock, changed) = &*shared;
        let mut state = changed
            .wait_while(lock.lock().unwrap(), |state| {
                state.waiting < THREADS + COROUTINES
            })
            .unwrap();
        state.go = true;
        changed.notify_all();
        state = changed
            .wait_while(state, |state| state.finished < THREADS + COROUTINES)
            .unwrap();
        let count = state.count;
        drop(state);
        for thread in threads {
            thread.join().unwrap();
        }
        for coroutine in coroutines {
            coroutine.join().unwrap();
        }
        count
    });
    assert_eq!(count, TOTAL);
}
