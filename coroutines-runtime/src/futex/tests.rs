//! The table's own invariants, which the public API cannot observe: no
//! entry outlives its wait, a wake's count is exactly the waiters it
//! released, even when wakes race deadlines, and buckets disarm and re-arm
//! without losing a wake-up.

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bucket::{Bucket, DISARM_AFTER};
use crate::sync::membarrier;
use crate::test_support::{join, runtime, spawn, Done};
use crate::SpawnOptions;

/// Held by each test here: several count what happens in one bucket
/// (waiters, idle wakes), which another test's words may share.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn waiters_on(word: &AtomicU32) -> usize {
    let addr = word.as_ptr() as usize;
    let bucket = Bucket::of(addr);
    let mut queue = bucket.lock();
    let mut linked = 0;
    // Counting by unlinking: only when nothing should be left.
    queue.drain_where(
        |parked_on, _| parked_on == addr,
        |_| {
            linked += 1;
            true
        },
    );
    linked
}

#[test]
fn timed_out_waits_leave_no_entry() {
    let _serial = serial();
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
    let _serial = serial();
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
    let _serial = serial();
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

/// Wakes `word` `n` times with no waiter, as a thread's `notify_one` on a
/// condvar nobody waits on does.
fn idle_wakes(word: &AtomicU32, n: u32) {
    for _ in 0..n {
        assert_eq!(super::wake(word.as_ptr() as usize, 1, |_| 0), 0);
    }
}

/// Wakes `word` with no waiter until its bucket disarms. More than
/// [`DISARM_AFTER`] wakes if another test's coroutine shares the bucket
/// for a while.
fn disarm(word: &AtomicU32) {
    let bucket = Bucket::of(word.as_ptr() as usize);
    let start = Instant::now();
    while bucket.armed() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the bucket stays armed"
        );
        idle_wakes(word, 1);
    }
}

#[test]
fn the_constructor_registered_membarrier_where_the_kernel_has_it() {
    let _serial = serial();
    // SAFETY: MEMBARRIER_CMD_QUERY takes no pointers.
    let supported = unsafe { libc::syscall(libc::SYS_membarrier, libc::MEMBARRIER_CMD_QUERY, 0) };
    let expedited = libc::MEMBARRIER_CMD_PRIVATE_EXPEDITED as libc::c_long;
    assert_eq!(
        membarrier::available(),
        supported >= 0 && supported & expedited != 0
    );
}

#[test]
fn idle_wakes_disarm_a_bucket_and_a_waiter_arms_it_again() {
    let _serial = serial();
    static WORD: AtomicU32 = AtomicU32::new(0);
    if !membarrier::available() {
        return;
    }
    let bucket = Bucket::of(WORD.as_ptr() as usize);
    disarm(&WORD);
    // A waiter resets the count of idle wakes, and the last waiter to leave
    // does not disarm the bucket: only wakes that find it empty do.
    idle_wakes(&WORD, DISARM_AFTER / 2);
    let runtime = runtime(1);
    let waiter = spawn(Some(&runtime), || {
        while WORD.load(Ordering::SeqCst) == 0 {
            let _ = super::wait(&WORD, 0, None);
        }
    });
    while bucket.waiters() == 0 {
        std::thread::yield_now();
    }
    assert!(bucket.armed(), "a waiter arms its bucket");
    WORD.store(1, Ordering::SeqCst);
    assert_eq!(super::wake(WORD.as_ptr() as usize, 1, |_| 0), 1);
    join(&waiter);
    assert!(
        bucket.armed(),
        "a bucket stays armed until idle wakes disarm it"
    );
    idle_wakes(&WORD, DISARM_AFTER - 1);
    assert!(bucket.armed());
    disarm(&WORD);
}

/// A waiter that arms a bucket races wakers that found it disarmed and
/// skipped their fence: every round, the bucket is disarmed, a coroutine
/// waits for the word to change, and a plain thread changes it and wakes.
/// A lost wake-up hangs the round: it catches a waiter that does not arm,
/// or a bucket disarmed under a waiter. (The store-buffer window that the
/// `membarrier` closes is a few cycles wide; no test provokes it reliably.)
#[test]
fn a_waiter_arming_a_bucket_never_misses_a_waker_that_skipped_its_fence() {
    let _serial = serial();
    const ROUNDS: u32 = 2_000;
    if !membarrier::available() {
        return;
    }
    let runtime = runtime(1);
    let word = Arc::new(AtomicU32::new(0));
    for round in 1..=ROUNDS {
        disarm(&word);
        let waiter = {
            let word = word.clone();
            spawn(Some(&runtime), move || {
                while word.load(Ordering::SeqCst) < round {
                    let _ = super::wait(&word, round - 1, None);
                }
            })
        };
        // Spin a varying while, so the store lands before, during and after
        // the waiter's arming.
        for _ in 0..(round % 64) * 16 {
            core::hint::spin_loop();
        }
        word.store(round, Ordering::Release);
        super::wake(word.as_ptr() as usize, 1, |_| 0);
        let start = Instant::now();
        while !waiter.ended() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "round {round}: the waiter missed its wake-up"
            );
            std::thread::yield_now();
        }
    }
}
