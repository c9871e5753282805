//! Work stealing moves a started coroutine to another worker between two
//! of its waits; its identity moves with it. What std and libc see of it
//! (ThreadId, `pthread_self`, thread-locals, `errno`, the stdout lock it
//! holds) stays its own on the new worker, and its thread exit (thread-local
//! destructors, which may themselves wait and move) completes wherever it
//! ends.

mod support;

use std::cell::Cell;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use coroutines::Runtime;
use support::identity::{on_runtime, os_thread};
use support::*;

/// Coroutines moving between the two workers.
const COROUTINES: u64 = 40;

/// Migrations the coroutines wait for before they end.
const MIN_MIGRATIONS: u64 = 100;

fn stealing() -> coroutines::runtime::Builder {
    Runtime::builder().workers(2).work_stealing(true)
}

/// A wait after which the caller may resume on the other worker: a short
/// sleep, then a spin that keeps this worker busy so the other steals.
fn wait_and_hog() {
    thread::sleep(Duration::from_micros(200));
    let until = Instant::now() + Duration::from_micros(300);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

thread_local! {
    static MARK: Cell<u64> = const { Cell::new(0) };
}

#[test]
fn identity_moves_with_a_migrating_coroutine() {
    let (moves, stats) = on_runtime(stealing(), Duration::from_secs(20), |runtime| {
        let handles: Vec<_> = (1..=COROUTINES)
            .map(|i| {
                runtime.spawn(move || {
                    let id = thread::current().id();
                    // SAFETY: no preconditions.
                    let me = unsafe { libc::pthread_self() };
                    MARK.with(|m| m.set(i));
                    let mut kernel_thread = os_thread();
                    let mut moves = 0;
                    // Until the runtime has seen enough moves (a run
                    // usually needs a few rounds; a deadline bounds it).
                    let deadline = Instant::now() + Duration::from_secs(3);
                    let mut round = 0;
                    while round < 10
                        || (coroutines::stats().migrations < MIN_MIGRATIONS
                            && Instant::now() < deadline)
                    {
                        round += 1;
                        // Sometimes across a wait with the stdout lock held
                        // (printing nothing): it belongs to this coroutine
                        // wherever it runs.
                        if round % 10 == 0 {
                            let mut out = io::stdout().lock();
                            // (Set after the lock: taking a contended lock
                            // may leave EAGAIN, as on a thread.)
                            set_errno(i as i32);
                            wait_and_hog();
                            write!(out, "").unwrap();
                        } else {
                            set_errno(i as i32);
                            wait_and_hog();
                        }
                        if os_thread() != kernel_thread {
                            moves += 1;
                            kernel_thread = os_thread();
                        }
                        assert_eq!(thread::current().id(), id, "coroutine {i}'s ThreadId");
                        // SAFETY: no preconditions.
                        assert_eq!(unsafe { libc::pthread_self() }, me, "pthread_self");
                        assert_eq!(MARK.with(Cell::get), i, "coroutine {i}'s thread-local");
                        assert_eq!(errno(), i as i32, "coroutine {i}'s errno");
                    }
                    moves
                })
            })
            .collect();
        let moves: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        (moves, runtime.stats())
    });
    assert!(
        moves > 0 && stats.migrations > 0,
        "nothing migrated ({moves} moves, {} migrations)",
        stats.migrations
    );
}

static SLOW_DONE: AtomicU64 = AtomicU64::new(0);
static SLOW_MOVES: AtomicU64 = AtomicU64::new(0);
static SLOW_CONSISTENT: AtomicU64 = AtomicU64::new(0);

/// A thread-local whose destructor waits 20 times (moving between workers
/// meanwhile) and checks each time that it is still its coroutine.
struct Slow(Cell<u64>);

impl Drop for Slow {
    fn drop(&mut self) {
        let owner = self.0.get();
        let id = thread::current().id();
        let mut kernel_thread = os_thread();
        for _ in 0..20 {
            wait_and_hog();
            if os_thread() != kernel_thread {
                SLOW_MOVES.fetch_add(1, Ordering::SeqCst);
                kernel_thread = os_thread();
            }
            if thread::current().id() == id && MARK.with(Cell::get) == owner {
                SLOW_CONSISTENT.fetch_add(1, Ordering::SeqCst);
            }
        }
        SLOW_DONE.fetch_add(1, Ordering::SeqCst);
    }
}

thread_local! {
    static SLOW: Slow = const { Slow(Cell::new(0)) };
}

#[test]
fn thread_local_destructors_that_wait_may_move_to_another_worker() {
    on_runtime(stealing(), Duration::from_secs(20), |runtime| {
        let handles: Vec<_> = (1..=COROUTINES)
            .map(|i| {
                runtime.spawn(move || {
                    SLOW.with(|s| s.0.set(i));
                    MARK.with(|m| m.set(i));
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        // (Waited for: join may return before a coroutine's thread exit.)
        let deadline = Instant::now() + Duration::from_secs(5);
        while SLOW_DONE.load(Ordering::SeqCst) < COROUTINES && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
    });
    assert_eq!(
        SLOW_DONE.load(Ordering::SeqCst),
        COROUTINES,
        "destructors that ended"
    );
    assert_eq!(
        SLOW_CONSISTENT.load(Ordering::SeqCst),
        COROUTINES * 20,
        "destructor waits after which the coroutine was still itself"
    );
    assert!(
        SLOW_MOVES.load(Ordering::SeqCst) > 0,
        "no destructor moved: the test did not test moving thread exits"
    );
}
