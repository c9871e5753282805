//! Two `#[coroutines::test]`s with different worker counts in one test
//! binary. libtest runs tests in parallel threads of one process, so each
//! test must get a runtime of its own: each sees its own worker count and
//! counters, even while the other runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How many of the tests below have started.
static ARRIVED: AtomicUsize = AtomicUsize::new(0);

/// Waits (a while) for the other test to start too, so their runtimes
/// overlap when libtest runs them in parallel. Returns whether it came; with
/// `--test-threads=1` it never does and the tests still check their own
/// runtime.
fn meet_the_other_test() -> bool {
    ARRIVED.fetch_add(1, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(2);
    while ARRIVED.load(Ordering::SeqCst) < 2 {
        if Instant::now() > deadline {
            return false;
        }
        // A parked or yielding root lets this runtime's workers run; a short
        // OS sleep keeps a 1-worker runtime from spinning.
        coroutines::yield_now();
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Real work in the test's runtime: spawns, joins and yields, checking the
/// runtime's counters as it goes.
fn work(workers: usize) {
    assert!(coroutines::in_coroutine());
    let before = coroutines::stats();
    assert_eq!(before.workers, workers, "{before:?}");
    // The root coroutine is the only one spawned so far in this runtime.
    assert_eq!(before.spawned, 1, "{before:?}");

    for round in 0..5u64 {
        let handles: Vec<_> = (0..2000u64)
            .map(|i| {
                coroutines::spawn(move || {
                    if i % 7 == 0 {
                        coroutines::yield_now();
                    }
                    assert_eq!(coroutines::stats().workers, workers);
                    i * round
                })
            })
            .collect();
        let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(sum, round * 1999 * 2000 / 2);
    }

    let after = coroutines::stats();
    assert_eq!(after.workers, workers, "{after:?}");
    // Exactly our own spawns: nothing of the other test's runtime leaks in.
    assert_eq!(after.spawned, 1 + 5 * 2000, "{after:?}");
}

#[coroutines::test(workers = 1)]
fn test_with_one_worker() {
    let met = meet_the_other_test();
    work(1);
    if met {
        // The other test's runtime is alive at the same time in this process.
        assert_eq!(coroutines::stats().workers, 1);
    }
}

#[coroutines::test(workers = 3)]
fn test_with_three_workers() {
    let met = meet_the_other_test();
    work(3);
    if met {
        assert_eq!(coroutines::stats().workers, 3);
    }
}
