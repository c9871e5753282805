//! Scoped coroutines (`coroutines::scope`): borrowing from the caller's
//! stack, many coroutines, nested scopes, panics (joined, unjoined, of the
//! closure, of a stack overflow), results and their drops, from a plain
//! thread and from a coroutine, overlap on one worker, a runtime shut down
//! under a waiting scope, and (in `ui`) borrows the compiler must refuse.

mod support;

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use coroutines::{Builder, Runtime};
use support::{recurse_deeply, LIMIT};

/// Runs `body` on a plain OS thread, failing the test instead of hanging.
fn on_thread<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(panic::catch_unwind(AssertUnwindSafe(body)));
    });
    match finished.recv_timeout(LIMIT) {
        Ok(Ok(value)) => value,
        Ok(Err(payload)) => panic::resume_unwind(payload),
        Err(_) => panic!("the scope did not return within {LIMIT:?}"),
    }
}

/// The message of a panic payload.
fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Disjoint mutable borrows of one vector, a shared borrow, and a counter,
/// all on the caller's stack.
fn borrow_from_the_stack() {
    let mut numbers = vec![0u64; 1000];
    let offset = 7u64;
    let mut spawned = 0;
    coroutines::scope(|s| {
        for (i, chunk) in numbers.chunks_mut(100).enumerate() {
            spawned += 1;
            s.spawn(move || {
                for (j, n) in chunk.iter_mut().enumerate() {
                    coroutines::yield_now();
                    *n = (i * 100 + j) as u64 + offset;
                }
            });
        }
    });
    assert_eq!(spawned, 10);
    assert!(numbers.iter().enumerate().all(|(k, &n)| n == k as u64 + 7));
}

#[test]
fn borrows_mutably_and_disjointly_from_a_threads_stack() {
    on_thread(borrow_from_the_stack);
}

#[test]
fn borrows_mutably_and_disjointly_from_a_coroutines_stack() {
    support::run(2, LIMIT, || {
        assert!(coroutines::in_coroutine());
        borrow_from_the_stack();
    });
}

#[test]
fn join_returns_values_that_borrow() {
    let text = String::from("scoped coroutines borrow their caller's words");
    let text = &text;
    let words: Vec<&str> = coroutines::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|i| s.spawn(move || text.split(' ').nth(i).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(words, ["scoped", "coroutines", "borrow"]);
}

#[test]
fn many_scoped_coroutines_from_a_coroutine() {
    let (count, stats) = support::run(2, LIMIT, || {
        let count = AtomicUsize::new(0);
        coroutines::scope(|s| {
            for _ in 0..10_000 {
                s.spawn(|| {
                    coroutines::yield_now();
                    count.fetch_add(1, Ordering::Relaxed);
                });
            }
        });
        (count.into_inner(), coroutines::stats())
    });
    assert_eq!(count, 10_000);
    assert!(stats.spawned >= 10_001, "{stats:?}");
}

#[test]
fn many_scoped_coroutines_from_a_thread() {
    let count = on_thread(|| {
        let count = AtomicUsize::new(0);
        coroutines::scope(|s| {
            for _ in 0..2_000 {
                s.spawn(|| count.fetch_add(1, Ordering::Relaxed));
            }
        });
        count.into_inner()
    });
    assert_eq!(count, 2_000);
}

#[test]
fn nested_scopes_and_spawning_from_scoped_coroutines() {
    let total = support::run(2, LIMIT, || {
        let outer = AtomicUsize::new(0);
        coroutines::scope(|s| {
            for i in 0..4 {
                let outer = &outer;
                s.spawn(move || {
                    // An inner scope borrows both this coroutine's locals and
                    // the outer caller's.
                    let mut local = [0usize; 4];
                    coroutines::scope(|inner| {
                        for (j, slot) in local.iter_mut().enumerate() {
                            inner.spawn(move || {
                                *slot = i * 10 + j;
                                outer.fetch_add(1, Ordering::Relaxed);
                            });
                        }
                    });
                    assert_eq!(local, [i * 10, i * 10 + 1, i * 10 + 2, i * 10 + 3]);
                    // A scoped coroutine spawns into its own scope, after
                    // the closure of `scope` may have returned.
                    s.spawn(move || {
                        thread::sleep(Duration::from_millis(20));
                        outer.fetch_add(100, Ordering::Relaxed);
                    });
                });
            }
        });
        outer.into_inner()
    });
    assert_eq!(total, 4 * 4 + 4 * 100);
}

#[test]
fn an_unjoined_panic_makes_scope_panic_once_all_have_ended() {
    let finished = AtomicBool::new(false);
    let payload = panic::catch_unwind(AssertUnwindSafe(|| {
        coroutines::scope(|s| {
            s.spawn(|| panic!("boom"));
            s.spawn(|| {
                thread::sleep(Duration::from_millis(100));
                finished.store(true, Ordering::SeqCst);
            });
        })
    }))
    .unwrap_err();
    assert_eq!(message(&*payload), "a scoped coroutine panicked");
    assert!(
        finished.load(Ordering::SeqCst),
        "scope panicked before its other coroutine ended"
    );
}

#[test]
fn an_unjoined_panic_propagates_from_inside_a_coroutine() {
    let payload = support::run(1, LIMIT, || {
        panic::catch_unwind(|| coroutines::scope(|s| drop(s.spawn(|| panic!("inner")))))
            .map_err(|payload| message(&*payload))
    });
    assert_eq!(payload.unwrap_err(), "a scoped coroutine panicked");
}

#[test]
fn a_joined_panic_is_reported_by_join_only() {
    let value = coroutines::scope(|s| {
        let failing = s.spawn(|| -> u32 { panic!("oh no") });
        let fine = s.spawn(|| 5u32);
        let payload = failing.join().unwrap_err();
        assert_eq!(message(&*payload), "oh no");
        fine.join().unwrap()
    });
    assert_eq!(value, 5);
}

#[test]
fn a_panic_of_the_closure_is_resumed_after_the_coroutines_end() {
    let finished = AtomicBool::new(false);
    let payload = panic::catch_unwind(AssertUnwindSafe(|| {
        coroutines::scope(|s| {
            s.spawn(|| {
                thread::sleep(Duration::from_millis(100));
                finished.store(true, Ordering::SeqCst);
            });
            panic!("the closure's own panic");
        })
    }))
    .unwrap_err();
    assert_eq!(message(&*payload), "the closure's own panic");
    assert!(finished.load(Ordering::SeqCst));
}

#[test]
fn sleeps_overlap_on_one_worker() {
    const N: u32 = 20;
    const NAP: Duration = Duration::from_millis(100);
    let elapsed = support::run(1, LIMIT, || {
        let start = Instant::now();
        let mut woke = [false; N as usize];
        coroutines::scope(|s| {
            for flag in woke.iter_mut() {
                s.spawn(move || {
                    thread::sleep(NAP);
                    *flag = true;
                });
            }
        });
        assert!(woke.iter().all(|&w| w));
        start.elapsed()
    });
    assert!(elapsed >= NAP, "{elapsed:?}");
    // Serial sleeps would take N × 100 ms = 2 s.
    assert!(elapsed < NAP * N / 4, "{N} naps took {elapsed:?}");
}

#[test]
fn the_waiting_caller_parks_so_its_worker_runs_the_scope() {
    // On one worker, a caller blocking its worker could never see its
    // coroutines run: the scope would hang.
    let order = support::run(1, LIMIT, || {
        let order = Mutex::new(Vec::new());
        coroutines::scope(|s| {
            s.spawn(|| {
                thread::sleep(Duration::from_millis(30));
                order.lock().unwrap().push("coroutine");
            });
            order.lock().unwrap().push("closure");
        });
        order.lock().unwrap().push("after");
        order.into_inner().unwrap()
    });
    assert_eq!(order, ["closure", "coroutine", "after"]);
}

/// Adds one to a borrowed counter when dropped: a result whose drop uses
/// a borrow of the caller's stack.
struct Bump<'a>(&'a AtomicUsize);

impl Drop for Bump<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn unjoined_results_are_dropped_before_scope_returns() {
    let drops = AtomicUsize::new(0);
    let gate = AtomicBool::new(false);
    coroutines::scope(|s| {
        // Dropped before the coroutine ends: the coroutine drops its result.
        for _ in 0..10 {
            s.spawn(|| {
                while !gate.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(1));
                }
                Bump(&drops)
            });
        }
        // Dropped after it ends: the handle drops the result.
        let late = s.spawn(|| Bump(&drops));
        while !late.is_finished() {
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(late);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        gate.store(true, Ordering::SeqCst);
    });
    assert_eq!(drops.load(Ordering::SeqCst), 11);
}

#[test]
fn a_forgotten_handle_does_not_hold_up_the_scope() {
    let ran = AtomicBool::new(false);
    coroutines::scope(|s| {
        std::mem::forget(s.spawn(|| ran.store(true, Ordering::SeqCst)));
    });
    assert!(ran.load(Ordering::SeqCst));
}

#[test]
fn is_finished_and_the_coroutines_identity() {
    support::run(1, LIMIT, || {
        let gate = AtomicBool::new(false);
        coroutines::scope(|s| {
            let handle = Builder::new()
                .name("scoped one".into())
                .spawn_scoped(s, || {
                    support::yield_until(|| gate.load(Ordering::SeqCst));
                    coroutines::current().id()
                })
                .unwrap();
            assert_eq!(handle.coroutine().name(), Some("scoped one"));
            assert!(!handle.is_finished());
            gate.store(true, Ordering::SeqCst);
            support::yield_until(|| handle.is_finished());
            let id = handle.coroutine().id();
            assert_eq!(handle.join().unwrap(), id);
            assert!(format!("{s:?}").starts_with("Scope"));
        });
    });
}

#[test]
fn a_failed_spawn_leaves_the_scope_usable() {
    let dropped = AtomicUsize::new(0);
    let ran = Cell::new(false);
    coroutines::scope(|s| {
        let bump = Bump(&dropped);
        let error = Builder::new()
            .stack_size(0)
            .spawn_scoped(s, move || drop(bump))
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        // The closure that never ran was dropped, within the scope.
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        ran.set(s.spawn(|| 1).join().unwrap() == 1);
    });
    assert!(ran.get());
}

#[test]
fn a_scoped_coroutine_that_overflows_its_stack_fails_the_scope() {
    let (joined, unjoined) = support::run(1, LIMIT, || {
        let depth = 1_000_000;
        let joined = coroutines::scope(|s| {
            let deep = Builder::new()
                .stack_size(64 * 1024)
                .spawn_scoped(s, || recurse_deeply(depth))
                .unwrap();
            message(&*deep.join().unwrap_err())
        });
        let unjoined = panic::catch_unwind(AssertUnwindSafe(|| {
            coroutines::scope(|s| {
                Builder::new()
                    .stack_size(64 * 1024)
                    .spawn_scoped(s, || recurse_deeply(depth))
                    .unwrap();
            })
        }))
        .map_err(|payload| message(&*payload));
        (joined, unjoined)
    });
    assert!(joined.contains("overflowed its 64 KiB stack"), "{joined}");
    assert_eq!(unjoined.unwrap_err(), "a scoped coroutine panicked");
}

thread_local! {
    static LOCAL: Cell<Option<Bump<'static>>> = const { Cell::new(None) };
}

static LOCAL_DROPS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn thread_local_destructors_have_run_when_scope_returns() {
    support::run(2, LIMIT, || {
        let own_identity = coroutines::scope(|s| {
            let a = s.spawn(|| thread::current().id());
            let b = s.spawn(|| thread::current().id());
            a.join().unwrap() != b.join().unwrap()
        });
        coroutines::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| LOCAL.with(|local| local.set(Some(Bump(&LOCAL_DROPS)))));
            }
        });
        if own_identity {
            // Each coroutine's thread-locals are destroyed as it ends, before
            // its end is delivered to the scope.
            assert_eq!(LOCAL_DROPS.load(Ordering::SeqCst), 8);
        }
    });
}

#[test]
fn a_runtime_shut_down_under_a_waiting_scope_never_lets_it_return() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let returned = Arc::new(AtomicBool::new(false));
    let owner = {
        let (started, returned) = (started.clone(), returned.clone());
        runtime.spawn(move || {
            let mut borrowed = [0u8; 64];
            coroutines::scope(|s| {
                for byte in borrowed.iter_mut() {
                    let started = &started;
                    s.spawn(move || {
                        started.fetch_add(1, Ordering::SeqCst);
                        thread::sleep(Duration::from_secs(3600));
                        *byte = 1;
                    });
                }
            });
            returned.store(true, Ordering::SeqCst);
            borrowed
        })
    };
    let deadline = Instant::now() + LIMIT;
    while started.load(Ordering::SeqCst) < 64 {
        assert!(
            Instant::now() < deadline,
            "the scoped coroutines did not start"
        );
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(Duration::from_millis(20));
    drop(runtime);
    // The owner is abandoned with its scoped coroutines: its join handle
    // fails, and the code after `scope` never runs.
    let payload = owner.join().unwrap_err();
    assert!(
        message(&*payload).contains("shut down"),
        "{}",
        message(&*payload)
    );
    thread::sleep(Duration::from_millis(50));
    assert!(!returned.load(Ordering::SeqCst));
}

#[test]
fn ui() {
    trybuild::TestCases::new().compile_fail("tests/ui/scope/fail_*.rs");
}
