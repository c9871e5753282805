//! The table's own invariants, which the public API cannot observe: no
//! entry outlives its wait, and a wake's count is exactly the waiters it
//! released, even when wakes race deadlines.

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bucket::Bucket;
use crate::test_support::{join, runtime, spawn, Done};
use crate::SpawnOptions;

fn waiters_on(word: &AtomicU32) -> usize {
    let addr = word.as_ptr() as usize;
    let bucket = Bucket::of(addr);
    let mut queue = bucket.lock();
    let mut linked = 0;
    // Counting by unlinking: only when nothing should be left.
    queue.drain(addr, |_| {
        linked += 1;
        true
    });
    linked
}

#[test]
fn timed_out_waits_leave_no_entry() {
    static WORD: AtomicU32 = AtomicU32::new(0);
    let runtime = runtime(1);
    let root = spawn(Some(&runtime), || {
        let waiters: Vec<_> = (0..300)
            .map(|i| {
                spawn(None, move || {
                    let deadline = Instant::now() + Duration::from_micros(200 * (i % 7));
                    let result = super::wait(&WORD, 0, Some(deadline));
                    assert_eq!(result, Err(libc::ETIMEDOUT));
                })
            })
            .collect();
        waiters.iter().for_each(|done| join(done));
    });
    join(&root);
    assert_eq!(waiters_on(&WORD), 0);
    assert_eq!(Bucket::of(WORD.as_ptr() as usize).waiters(), 0);
}

#[test]
fn wake_counts_match_released_waiters_when_racing_deadlines() {
    const ROUNDS: usize = 50;
    const WAITERS: usize = 40;
    let runtime = Arc::new(runtime(2));
    for round in 0..ROUNDS {
        let word = Arc::new(AtomicU32::new(0));
        let released = Arc::new(AtomicUsize::new(0));
        let waiters: Vec<_> = (0..WAITERS)
            .map(|i| {
                let (word, released) = (word.clone(), released.clone());
                spawn(Some(&runtime), move || {
                    // Deadlines spread around the moment the wakes come.
                    let deadline = Instant::now() + Duration::from_micros(50 * (i as u64 % 20));
                    match super::wait(&word, 0, Some(deadline)) {
                        Ok(()) => {
                            released.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(error) => assert_eq!(error, libc::ETIMEDOUT),
                    }
                })
            })
            .collect();
        // Wake from a plain thread, a few at a time, while deadlines pass.
        let mut woken = 0;
        let start = Instant::now();
        while start.elapsed() < Duration::from_micros(300 + 20 * round as u64) {
            woken += super::wake(word.as_ptr() as usize, 3, |_| 0) as usize;
        }
        waiters.iter().for_each(|done| join(done));
        woken += super::wake(word.as_ptr() as usize, usize::MAX, |_| 0) as usize;
        assert_eq!(woken, released.load(Ordering::SeqCst), "round {round}");
        assert_eq!(waiters_on(&word), 0);
    }
}

#[test]
fn release_runtime_lets_go_of_its_parked_coroutines() {
    static WORD: AtomicU32 = AtomicU32::new(0);
    let runtime = runtime(1);
    let parked = Done::new(|| {
        let _ = super::wait(&WORD, 0, None);
    });
    let task = runtime
        .spawn_raw(SpawnOptions::default(), parked.clone())
        .expect("spawn");
    // The runtime's identity, without keeping the task alive.
    let shared = task.0.shared.clone();
    drop(task);
    let bucket = Bucket::of(WORD.as_ptr() as usize);
    while bucket.waiters() == 0 {
        std::thread::yield_now();
    }
    // Dropping the runtime releases the table's hold on its coroutine.
    drop(runtime);
    assert_eq!(parked.failed.load(Ordering::SeqCst), 1);
    assert_eq!(bucket.waiters(), 0);
    // A second release finds nothing left.
    super::release_runtime(&shared);
    assert_eq!(parked.failed.load(Ordering::SeqCst), 1);
}
