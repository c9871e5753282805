//! Runtime counters: `spawned` grows by exactly the number of spawns,
//! `alive` counts the unfinished and returns to 0 after joins,
//! `context_switches` counts every switch into a coroutine, and each runtime
//! has counters of its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coroutines::{Runtime, Stats};

const N: u64 = 500;

fn wait_for(runtime: &Runtime, what: &str, cond: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = runtime.stats();
        if cond(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn fresh_runtime_counts_nothing() {
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let stats = runtime.stats();
    assert_eq!(stats.workers, 2);
    assert_eq!(stats.spawned, 0);
    assert_eq!(stats.alive, 0);
    assert_eq!(stats.context_switches, 0);
    assert_eq!(stats.migrations, 0);
}

#[test]
fn spawned_and_alive_follow_spawns_and_joins() {
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let release = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let release = release.clone();
            runtime.spawn(move || {
                while !release.load(Ordering::SeqCst) {
                    coroutines::yield_now();
                }
                i
            })
        })
        .collect();
    // All N exist and none can finish yet.
    let stats = runtime.stats();
    assert_eq!(stats.spawned, N, "{stats:?}");
    assert_eq!(stats.alive, N, "{stats:?}");

    release.store(true, Ordering::SeqCst);
    let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(sum, (N - 1) * N / 2);
    // A result reaches its handle just before the worker retires the
    // coroutine, so `alive` may trail the last join by a moment.
    let stats = wait_for(&runtime, "alive == 0", |s| s.alive == 0);
    assert_eq!(stats.spawned, N, "{stats:?}");
    // Each coroutine was switched into at least once.
    assert!(stats.context_switches >= stats.spawned, "{stats:?}");

    // Growing by exactly N again, from inside a coroutine this time (the
    // root coroutine of block_on counts as one spawn).
    let inside = runtime.block_on(|| {
        let before = coroutines::stats();
        let handles: Vec<_> = (0..N).map(|i| coroutines::spawn(move || i)).collect();
        let during = coroutines::stats();
        for h in handles {
            h.join().unwrap();
        }
        (before, during)
    });
    let (before, during) = inside;
    assert_eq!(before.spawned, N + 1, "{before:?}");
    assert_eq!(during.spawned, 2 * N + 1, "{during:?}");
    assert!(during.alive >= 1, "the root itself is alive: {during:?}");
    let stats = wait_for(&runtime, "alive == 0", |s| s.alive == 0);
    assert_eq!(stats.spawned, 2 * N + 1, "{stats:?}");
    assert!(stats.context_switches >= stats.spawned, "{stats:?}");
}

#[test]
fn panicked_coroutines_are_not_alive() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let handles: Vec<_> = (0..10)
        .map(|_| runtime.spawn(|| panic!("counted as finished")))
        .collect();
    for h in handles {
        assert!(h.join().is_err());
    }
    let stats = wait_for(&runtime, "alive == 0", |s| s.alive == 0);
    assert_eq!(stats.spawned, 10);
}

#[test]
fn every_yield_is_a_context_switch() {
    const YIELDS: u64 = 1000;
    let runtime = Runtime::builder().workers(1).build().unwrap();
    runtime
        .spawn(|| {
            for _ in 0..YIELDS {
                coroutines::yield_now();
            }
        })
        .join()
        .unwrap();
    let stats = wait_for(&runtime, "alive == 0", |s| s.alive == 0);
    // The first run plus one resumption per yield.
    assert_eq!(stats.context_switches, YIELDS + 1, "{stats:?}");
    assert_eq!(stats.spawned, 1);
    assert_eq!(stats.migrations, 0);
}

#[test]
fn runtimes_count_separately() {
    let a = Runtime::builder().workers(1).build().unwrap();
    let b = Runtime::builder().workers(2).build().unwrap();
    let handles: Vec<_> = (0..N).map(|i| a.spawn(move || i)).collect();
    for h in handles {
        h.join().unwrap();
    }
    let in_b = b.block_on(coroutines::stats);
    assert_eq!(in_b.workers, 2, "{in_b:?}");
    assert_eq!(in_b.spawned, 1, "only b's own root coroutine: {in_b:?}");
    assert_eq!(a.stats().spawned, N);
    assert_eq!(a.stats().workers, 1);
    // Inside a coroutine, `stats()` is that coroutine's runtime's.
    assert_eq!(a.block_on(coroutines::stats).spawned, N + 1);
}

#[test]
fn counters_only_grow() {
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let mut last = runtime.stats();
    for round in 0..20 {
        let handles: Vec<_> = (0..50)
            .map(|_| runtime.spawn(coroutines::yield_now))
            .collect();
        let now = runtime.stats();
        assert!(now.spawned >= last.spawned + 50, "round {round}: {now:?}");
        assert!(now.context_switches >= last.context_switches, "{now:?}");
        assert!(now.migrations >= last.migrations, "{now:?}");
        for h in handles {
            h.join().unwrap();
        }
        last = now;
    }
}
