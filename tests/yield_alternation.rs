//! On one worker, two coroutines that `yield_now` in a loop run in strict
//! alternation: A, B, A, B, ... And `std::thread::yield_now` yields to the
//! worker's other coroutines too.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use coroutines::Runtime;

const ROUNDS: usize = 1000;

/// Records `(who, step)`; on one worker there is never contention on the
/// mutex, since only one coroutine runs at a time.
fn yielder(
    who: char,
    log: Arc<Mutex<Vec<char>>>,
    ready: Arc<AtomicUsize>,
) -> impl FnOnce() + Send + 'static {
    move || {
        // Both coroutines must have started before the alternation begins;
        // on one worker the second starts as soon as the first yields.
        ready.fetch_add(1, Ordering::SeqCst);
        while ready.load(Ordering::SeqCst) < 2 {
            coroutines::yield_now();
        }
        for _ in 0..ROUNDS {
            log.try_lock()
                .expect("on one worker nobody else holds the lock")
                .push(who);
            coroutines::yield_now();
        }
    }
}

fn assert_alternates(log: &[char]) {
    assert_eq!(log.len(), 2 * ROUNDS);
    let first = log[0];
    let second = if first == 'A' { 'B' } else { 'A' };
    for (i, &who) in log.iter().enumerate() {
        let expected = if i % 2 == 0 { first } else { second };
        assert_eq!(
            who,
            expected,
            "not strictly alternating at step {i}: {:?}",
            &log[i.saturating_sub(4)..(i + 4).min(log.len())]
        );
    }
}

#[test]
fn two_yielding_coroutines_alternate_on_one_worker() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let log = Arc::new(Mutex::new(Vec::with_capacity(2 * ROUNDS)));
    let ready = Arc::new(AtomicUsize::new(0));
    // Spawned from a plain thread (through the injector)...
    let a = runtime.spawn(yielder('A', log.clone(), ready.clone()));
    let b = runtime.spawn(yielder('B', log.clone(), ready.clone()));
    a.join().unwrap();
    b.join().unwrap();
    assert_alternates(&log.lock().unwrap());
    // Every recorded step was followed by a yield, i.e. a switch.
    assert!(runtime.stats().context_switches >= 2 * ROUNDS as u64);
}

#[test]
fn two_yielding_coroutines_alternate_when_spawned_from_a_coroutine() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let log = Arc::new(Mutex::new(Vec::with_capacity(2 * ROUNDS)));
    let ready = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    {
        // ...and from inside a coroutine of the runtime, which then parks in
        // join while the two take turns.
        let (log, ready, done) = (log.clone(), ready.clone(), done.clone());
        runtime.block_on(move || {
            let a = coroutines::spawn(yielder('A', log.clone(), ready.clone()));
            let b = coroutines::spawn(yielder('B', log, ready));
            a.join().unwrap();
            b.join().unwrap();
            done.store(true, Ordering::SeqCst);
        });
    }
    assert!(done.load(Ordering::SeqCst));
    assert_alternates(&log.lock().unwrap());
}

/// `std::thread::yield_now` in a coroutine lets the worker's other
/// coroutines run: a spin loop waiting for a flag that another coroutine of
/// its worker sets ends, with the blocked-worker monitor off (nothing else
/// would hand the worker over).
#[test]
fn thread_yield_now_lets_a_spin_loop_see_its_neighbour() {
    use std::time::Duration;
    let spins = support::watchdog_on(
        "spin on yield_now",
        Duration::from_secs(10),
        support::no_monitor(),
        support::spins_until_a_neighbour_sets_a_flag,
    );
    assert!(
        spins <= 2,
        "the spinner yielded {spins} times before its neighbour ran"
    );
    // Outside coroutines it is the system call.
    // SAFETY: sched_yield has no preconditions.
    assert_eq!(unsafe { libc::sched_yield() }, 0);
}
