//! Thread identity: every coroutine is a thread of its own to std and libc.
//! Its `thread::current()` (id, parker), `thread_local!` values (destroyed
//! when it ends), `errno` and `pthread_self()` are its own, stable across
//! the waits that move it off and back onto its worker, and distinct from
//! its worker's and from the thread that spawned it.
//!
//! Everything runs on ONE worker unless a test says otherwise: coroutines
//! sharing a kernel thread is where shared identity went wrong (two
//! coroutines of one worker had one `ThreadId`, one parker, one errno).
//! Every test runs under a watchdog, so a lost wake-up fails instead of
//! hanging.

mod support;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use support::identity::{
    identity_seen_by_a_signal_handler, joined, on_runtime, os_thread, workers,
};
use support::*;

/// Coroutines alive at once in the identity tests.
const COROUTINES: usize = 100;

/// Rounds of waits each coroutine makes between identity checks.
const ROUNDS: usize = 5;

#[test]
fn a_hundred_live_coroutines_have_distinct_stable_thread_ids() {
    let spawner = thread::current().id();
    let (ids, owner) = on_runtime(workers(1), WATCHDOG, |runtime| {
        let owner = thread::current().id();
        let started = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..COROUTINES)
            .map(|i| {
                let started = started.clone();
                runtime.spawn(move || {
                    let me = thread::current().id();
                    // All of them are alive while the ids are compared.
                    started.fetch_add(1, Ordering::SeqCst);
                    yield_until(|| started.load(Ordering::SeqCst) == COROUTINES);
                    for round in 0..ROUNDS {
                        // Sleeps of different lengths reorder the coroutines
                        // on the worker between checks.
                        thread::sleep(Duration::from_millis(((i + round) % 4) as u64));
                        assert_eq!(thread::current().id(), me, "coroutine {i} after a sleep");
                        coroutines::yield_now();
                        assert_eq!(thread::current().id(), me, "coroutine {i} after a yield");
                    }
                    me
                })
            })
            .collect();
        let ids: Vec<ThreadId> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (ids, owner)
    });
    let distinct: HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), COROUTINES, "ThreadIds: {ids:?}");
    assert!(
        !ids.contains(&owner),
        "a coroutine has the ThreadId of the OS thread that spawned it"
    );
    assert!(
        !ids.contains(&spawner),
        "a coroutine has the test thread's ThreadId"
    );
}

#[test]
fn a_coroutine_spawned_by_a_coroutine_has_its_own_id() {
    run(1, WATCHDOG, || {
        let parent = thread::current().id();
        let (child, parent_seen_by_child) = coroutines::spawn(move || {
            let child = thread::current().id();
            coroutines::yield_now();
            (child, parent)
        })
        .join()
        .unwrap();
        assert_ne!(child, parent, "child and parent coroutine share a ThreadId");
        assert_eq!(parent_seen_by_child, parent);
        assert_eq!(thread::current().id(), parent, "the parent's id after join");
    });
}

#[test]
fn a_coroutine_is_not_its_worker_thread() {
    let (mine, worker, kernel_threads) = run(1, WATCHDOG, || {
        let mine = thread::current().id();
        // Signal handlers run on the worker's identity.
        let worker = identity_seen_by_a_signal_handler();
        assert_eq!(thread::current().id(), mine, "after the signal handler");
        let other = coroutines::spawn(|| (identity_seen_by_a_signal_handler(), os_thread()))
            .join()
            .unwrap();
        assert_eq!(
            other.0, worker,
            "the second coroutine's worker, seen by a handler"
        );
        (mine, worker, (os_thread(), other.1))
    });
    let (worker_id, worker_name) = worker;
    assert_ne!(
        mine, worker_id,
        "the coroutine has its worker thread's ThreadId"
    );
    assert_eq!(
        worker_name.as_deref(),
        Some("coroutines-worker-0"),
        "a signal handler in a coroutine runs on the worker's identity"
    );
    assert_eq!(
        kernel_threads.0, kernel_threads.1,
        "both coroutines ran on the one worker's kernel thread"
    );
}

#[test]
fn thread_current_handles_of_one_coroutine_are_one_thread() {
    run(1, WATCHDOG, || {
        let first = thread::current();
        thread::sleep(Duration::from_millis(2));
        let second = thread::current();
        assert_eq!(first.id(), second.id());
        let from_other = coroutines::spawn(thread::current).join().unwrap();
        assert_ne!(first.id(), from_other.id());
        // Unparking the handle of a coroutine that has ended is harmless,
        // as for a thread that has exited.
        from_other.unpark();
    });
}

#[test]
fn thread_name_inside_a_coroutine() {
    let names = run(1, WATCHDOG, || {
        let unnamed = coroutines::spawn(|| thread::current().name().map(str::to_owned));
        let named = coroutines::Builder::new()
            .name("worker-of-the-test".into())
            .spawn(|| thread::current().name().map(str::to_owned))
            .unwrap();
        (unnamed.join().unwrap(), named.join().unwrap())
    });
    // A fresh thread that std did not spawn has no name; it must not
    // inherit the worker's ("coroutines-worker-0") or anybody else's.
    assert_eq!(names.0, None, "an unnamed coroutine's thread name");
    assert_ne!(
        names.1.as_deref(),
        Some("coroutines-worker-0"),
        "a named coroutine must not see its worker's name"
    );
}

// ---------------------------------------------------------------------------
// park / unpark

#[test]
fn park_and_unpark_by_handle_between_coroutines_of_one_worker() {
    run(1, WATCHDOG, || {
        let ticker = Ticker::start();
        let woken = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<thread::Thread>();
        let parker = {
            let woken = woken.clone();
            coroutines::spawn(move || {
                tx.send(thread::current()).unwrap();
                let start = Instant::now();
                // park may return spuriously; the flag says when it was
                // the unpark.
                while !woken.load(Ordering::SeqCst) {
                    thread::park();
                }
                start.elapsed()
            })
        };
        let target = rx.recv().unwrap();
        let unparker = coroutines::spawn(move || {
            thread::sleep(WAIT);
            woken.store(true, Ordering::SeqCst);
            target.unpark();
        });
        let (elapsed, _, ticks) = ticker.during(|| parker.join().unwrap());
        unparker.join().unwrap();
        assert_parked(
            "park until a coroutine of the same worker unparks",
            elapsed,
            ticks,
        );
        assert!(elapsed < WAIT * 5, "park returned after {elapsed:?}");
    });
}

#[test]
fn unpark_before_park_makes_park_return_at_once() {
    run(1, WATCHDOG, || {
        let unparked = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<thread::Thread>();
        let parker = {
            let unparked = unparked.clone();
            coroutines::spawn(move || {
                tx.send(thread::current()).unwrap();
                yield_until(|| unparked.load(Ordering::SeqCst));
                // The token is already there: no wait, even though nobody
                // will unpark again.
                let start = Instant::now();
                thread::park();
                start.elapsed()
            })
        };
        let target = rx.recv().unwrap();
        target.unpark();
        unparked.store(true, Ordering::SeqCst);
        let elapsed = parker.join().unwrap();
        assert_prompt("park after unpark", elapsed);
        // A token is consumed by one park: the next one waits for its
        // timeout.
        let waited = coroutines::spawn(|| {
            thread::current().unpark();
            thread::park();
            let start = Instant::now();
            thread::park_timeout(WAIT);
            start.elapsed()
        })
        .join()
        .unwrap();
        assert_about("the second park, with the token used up", waited, WAIT);
    });
}

#[test]
fn park_timeout_returns_on_time_while_the_worker_runs() {
    run(1, WATCHDOG, || {
        let ticker = Ticker::start();
        // Two coroutines time out at the same time: each on its own parker.
        let other = coroutines::spawn(|| {
            let start = Instant::now();
            thread::park_timeout(WAIT);
            start.elapsed()
        });
        let (mine, elapsed, ticks) = ticker.during(|| {
            let start = Instant::now();
            thread::park_timeout(WAIT);
            start.elapsed()
        });
        assert_about("park_timeout", mine, WAIT);
        assert_parked("park_timeout", elapsed, ticks);
        assert_about(
            "park_timeout in another coroutine",
            other.join().unwrap(),
            WAIT,
        );
    });
}

#[test]
fn an_unpark_is_not_delivered_to_another_coroutine_of_the_worker() {
    run(1, WATCHDOG, || {
        let (tx, rx) = mpsc::channel::<thread::Thread>();
        let bystander = coroutines::spawn(move || {
            tx.send(thread::current()).unwrap();
            let start = Instant::now();
            thread::park_timeout(WAIT);
            start.elapsed()
        });
        let target = rx.recv().unwrap();
        // Unparking ourselves leaves a token for us only.
        thread::current().unpark();
        let start = Instant::now();
        thread::park();
        assert_prompt("park with our own token", start.elapsed());
        assert_about(
            "the bystander's park_timeout (nobody unparked it)",
            bystander.join().unwrap(),
            WAIT,
        );
        drop(target);
    });
}

// ---------------------------------------------------------------------------
// thread_local!

/// Per coroutine index, how many times its [`Probe`] was dropped, and
/// whether the drop saw the coroutine's own thread-locals.
static PROBE_DROPS: [AtomicU32; COROUTINES] = [const { AtomicU32::new(0) }; COROUTINES];
static PROBE_DROPS_WITH_OWN_TLS: [AtomicU32; COROUTINES] =
    [const { AtomicU32::new(0) }; COROUTINES];

/// A thread-local value with a destructor, owned by coroutine `index`.
struct Probe {
    index: Cell<Option<usize>>,
}

/// How long a [`Probe`]'s destructor works before it counts itself: long
/// enough for a joiner that was told too early to look at the count first.
const PROBE_DROP_WORK: Duration = Duration::from_millis(3);

impl Drop for Probe {
    fn drop(&mut self) {
        let Some(index) = self.index.get() else {
            return;
        };
        // Busy, not sleeping: this destructor does not give the worker to
        // another coroutine, so only a joiner on another thread can look.
        let until = Instant::now() + PROBE_DROP_WORK;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        PROBE_DROPS[index].fetch_add(1, Ordering::SeqCst);
        // The coroutine's other thread-locals are still there.
        if MARK.with(Cell::get) == Some(index) && ERRNO_AT_END.with(Cell::get) == index as i32 {
            PROBE_DROPS_WITH_OWN_TLS[index].fetch_add(1, Ordering::SeqCst);
        }
    }
}

thread_local! {
    static PROBE: Probe = const { Probe { index: Cell::new(None) } };
    static MARK: Cell<Option<usize>> = const { Cell::new(None) };
    static ERRNO_AT_END: Cell<i32> = const { Cell::new(-1) };
    /// Lazily initialised (not `const`): each coroutine must run the
    /// initialiser itself.
    static LAZY: RefCell<Vec<usize>> = RefCell::new(vec![usize::MAX]);
    static INITIALISED: Cell<u32> = const { Cell::new(0) };
}

/// Marks the caller's thread-locals as coroutine `index`'s.
fn claim(index: usize) {
    PROBE.with(|p| p.index.set(Some(index)));
    MARK.with(|m| m.set(Some(index)));
    ERRNO_AT_END.with(|e| e.set(index as i32));
}

#[test]
fn thread_locals_are_per_coroutine_and_start_fresh() {
    run(1, WATCHDOG, || {
        // The root coroutine's values must not leak into new ones.
        MARK.with(|m| m.set(Some(usize::MAX)));
        LAZY.with(|l| l.borrow_mut().push(12345));
        let started = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..COROUTINES)
            .map(|i| {
                let started = started.clone();
                coroutines::spawn(move || {
                    assert_eq!(
                        MARK.with(Cell::get),
                        None,
                        "coroutine {i}: MARK starts unset"
                    );
                    assert_eq!(INITIALISED.with(Cell::get), 0, "coroutine {i}");
                    LAZY.with(|l| {
                        INITIALISED.with(|n| n.set(n.get() + 1));
                        assert_eq!(*l.borrow(), [usize::MAX], "coroutine {i}: LAZY is fresh");
                        l.borrow_mut().push(i);
                    });
                    MARK.with(|m| m.set(Some(i)));
                    started.fetch_add(1, Ordering::SeqCst);
                    yield_until(|| started.load(Ordering::SeqCst) == COROUTINES);
                    for round in 0..ROUNDS {
                        thread::sleep(Duration::from_millis((i % 3) as u64));
                        coroutines::yield_now();
                        assert_eq!(
                            MARK.with(Cell::get),
                            Some(i),
                            "coroutine {i}, round {round}"
                        );
                        LAZY.with(|l| l.borrow_mut().push(i));
                    }
                    LAZY.with(|l| l.borrow().clone())
                })
            })
            .collect();
        for (i, handle) in handles.into_iter().enumerate() {
            let seen = handle.join().unwrap();
            let mut want = vec![usize::MAX];
            want.extend(std::iter::repeat_n(i, ROUNDS + 1));
            assert_eq!(seen, want, "coroutine {i}'s LAZY");
        }
        assert_eq!(MARK.with(Cell::get), Some(usize::MAX), "the root's MARK");
        assert_eq!(LAZY.with(|l| l.borrow().clone()), [usize::MAX, 12345]);
    });
}

/// Probe owners: one range of indices per test, so that the tests of this
/// binary, which run in parallel, do not share counters.
const DESTRUCTOR_SAME_WORKER: std::ops::Range<usize> = 0..30;
const DESTRUCTOR_OTHER_WORKER: std::ops::Range<usize> = 30..60;
const DESTRUCTOR_PLAIN_THREAD: std::ops::Range<usize> = 60..90;

/// Spawns a coroutine that owns probe `index` and ends after some waits,
/// with `errno` set to its index (the destructor checks it too).
fn probe_owner(index: usize) -> impl FnOnce() + Send + 'static {
    move || {
        claim(index);
        thread::sleep(Duration::from_millis((index % 3) as u64));
        coroutines::yield_now();
        set_errno(index as i32);
    }
}

/// Asserts that the probes in `range` were dropped exactly once each, with
/// their coroutine's thread-locals.
#[track_caller]
fn assert_dropped_once(what: &str, range: std::ops::Range<usize>) {
    for i in range {
        let drops = PROBE_DROPS[i].load(Ordering::SeqCst);
        let own = PROBE_DROPS_WITH_OWN_TLS[i].load(Ordering::SeqCst);
        assert_eq!(
            drops, 1,
            "{what}: coroutine {i}'s thread-local was dropped {drops} times"
        );
        assert_eq!(
            own, 1,
            "{what}: coroutine {i}'s thread-local destructor did not see its own thread-locals"
        );
    }
}

#[test]
fn thread_local_destructors_run_before_join_returns_in_a_coroutine_of_the_worker() {
    let range = DESTRUCTOR_SAME_WORKER;
    run(1, WATCHDOG, move || {
        for i in range.clone() {
            coroutines::spawn(probe_owner(i)).join().unwrap();
            assert_eq!(
                PROBE_DROPS[i].load(Ordering::SeqCst),
                1,
                "coroutine {i}'s thread-local was not dropped when join returned"
            );
        }
    });
    assert_dropped_once("after the runtime ended", DESTRUCTOR_SAME_WORKER);
}

#[test]
fn thread_local_destructors_run_before_join_returns_on_another_worker() {
    let range = DESTRUCTOR_OTHER_WORKER;
    on_runtime(workers(2), WATCHDOG, move |runtime| {
        let joiner = runtime.spawn(move || {
            let home = os_thread();
            for i in range.clone() {
                let started = Arc::new(AtomicBool::new(false));
                let handle = {
                    let started = started.clone();
                    coroutines::spawn(move || {
                        started.store(true, Ordering::SeqCst);
                        let there = os_thread();
                        probe_owner(i)();
                        there
                    })
                };
                // Spinning without yielding keeps this worker busy, so the
                // new coroutine can only start on the other one.
                let deadline = Instant::now() + Duration::from_secs(2);
                while !started.load(Ordering::SeqCst) {
                    assert!(Instant::now() < deadline, "coroutine {i} never started");
                    std::hint::spin_loop();
                }
                let there = handle.join().unwrap();
                assert_ne!(there, home, "coroutine {i} ran on the joiner's worker");
                // The drop must be complete when join returns, wherever
                // the coroutine ran.
                assert_eq!(
                    PROBE_DROPS[i].load(Ordering::SeqCst),
                    1,
                    "coroutine {i} (ran on another worker): its thread-local was not \
                     dropped when join returned"
                );
            }
        });
        joined(joiner);
    });
    assert_dropped_once("after the runtime ended", DESTRUCTOR_OTHER_WORKER);
}

#[test]
fn thread_local_destructors_run_before_join_returns_on_a_plain_thread() {
    let range = DESTRUCTOR_PLAIN_THREAD;
    on_runtime(workers(1), WATCHDOG, move |runtime| {
        for i in range.clone() {
            runtime.spawn(probe_owner(i)).join().unwrap();
            assert_eq!(
                PROBE_DROPS[i].load(Ordering::SeqCst),
                1,
                "coroutine {i}'s thread-local was not dropped when a plain thread's join returned"
            );
        }
    });
    // The workers have exited: their exit must not drop the probes again.
    assert_dropped_once("after the runtime ended", DESTRUCTOR_PLAIN_THREAD);
}

static PARKING_DROPS: AtomicUsize = AtomicUsize::new(0);

/// A thread-local value whose destructor waits: for a sleep, and for a
/// mutex another coroutine holds. Thread exit runs on the coroutine, so
/// the waits park it like any other.
struct Parking(Arc<Mutex<()>>);

impl Drop for Parking {
    fn drop(&mut self) {
        thread::sleep(Duration::from_millis(5));
        drop(self.0.lock().unwrap());
        PARKING_DROPS.fetch_add(1, Ordering::SeqCst);
    }
}

thread_local! {
    static PARKING: RefCell<Option<Parking>> = const { RefCell::new(None) };
}

#[test]
fn a_thread_local_destructor_may_park() {
    run(1, WATCHDOG, || {
        let ticker = Ticker::start();
        let lock = Arc::new(Mutex::new(()));
        let held = lock.lock().unwrap();
        let owner = {
            let lock = lock.clone();
            coroutines::spawn(move || PARKING.with(|p| *p.borrow_mut() = Some(Parking(lock))))
        };
        // The owner's body has returned; its destructor sleeps, then waits
        // for the mutex, while this coroutine and the ticker run.
        thread::sleep(WAIT);
        assert_eq!(PARKING_DROPS.load(Ordering::SeqCst), 0, "the lock is held");
        drop(held);
        joined(owner);
        // (Whether join waits for the destructor is checked by the
        // `..._before_join_returns_...` tests; here, only that it ends.)
        let deadline = Instant::now() + Duration::from_secs(2);
        while PARKING_DROPS.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            PARKING_DROPS.load(Ordering::SeqCst),
            1,
            "the destructor ended"
        );
        let gap = ticker.take_max_gap();
        assert!(
            gap < WAIT / 2,
            "the ticker was held up {gap:?}: the worker blocked"
        );
    });
}

/// A thread-local value that counts its drops and, in its destructor, uses
/// another thread-local with a destructor and `thread::current()`.
struct Noisy;

static NOISY_DROPS: AtomicUsize = AtomicUsize::new(0);
static NOISY_SAW_TLS: AtomicUsize = AtomicUsize::new(0);

impl Drop for Noisy {
    fn drop(&mut self) {
        NOISY_DROPS.fetch_add(1, Ordering::SeqCst);
        // Registers a new destructor during thread exit, as a thread's
        // destructor may: it must run too (glibc repeats the rounds).
        if LATE.try_with(|late| late.borrow_mut().push(1)).is_ok() {
            NOISY_SAW_TLS.fetch_add(1, Ordering::SeqCst);
        }
    }
}

static LATE_DROPS: AtomicUsize = AtomicUsize::new(0);

struct Late(RefCell<Vec<u8>>);

impl Late {
    fn borrow_mut(&self) -> std::cell::RefMut<'_, Vec<u8>> {
        self.0.borrow_mut()
    }
}

impl Drop for Late {
    fn drop(&mut self) {
        LATE_DROPS.fetch_add(1, Ordering::SeqCst);
    }
}

thread_local! {
    static NOISY: Noisy = const { Noisy };
    static LATE: Late = const { Late(RefCell::new(Vec::new())) };
}

#[test]
fn a_destructor_may_touch_thread_locals_first_used_during_thread_exit() {
    const N: usize = 20;
    // What a plain thread does: the baseline.
    thread::spawn(|| NOISY.with(|_| {})).join().unwrap();
    let thread_saw = NOISY_SAW_TLS.swap(0, Ordering::SeqCst);
    let thread_late = LATE_DROPS.swap(0, Ordering::SeqCst);
    assert_eq!(
        NOISY_DROPS.swap(0, Ordering::SeqCst),
        1,
        "a thread's Noisy drop"
    );
    run(1, WATCHDOG, || {
        let handles: Vec<_> = (0..N)
            .map(|_| {
                coroutines::spawn(|| {
                    NOISY.with(|_| {});
                    coroutines::yield_now();
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
    });
    assert_eq!(NOISY_DROPS.load(Ordering::SeqCst), N, "Noisy drops");
    // As on the thread: std accepts a thread-local first touched during
    // thread exit, and drops it too.
    assert_eq!(
        (thread_saw, thread_late),
        (1, 1),
        "a plain thread's late thread-local"
    );
    assert_eq!(
        NOISY_SAW_TLS.load(Ordering::SeqCst),
        N,
        "late thread-locals accepted"
    );
    assert_eq!(
        LATE_DROPS.load(Ordering::SeqCst),
        N,
        "late thread-locals dropped"
    );
}

#[test]
fn a_thread_local_vec_grown_in_a_coroutine_survives_waits() {
    thread_local! {
        static GROWN: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    }
    const N: usize = 8;
    const LEN: u64 = 200_000;
    run(1, WATCHDOG, || {
        let handles: Vec<_> = (0..N as u64)
            .map(|c| {
                coroutines::spawn(move || {
                    for i in 0..LEN {
                        // Reallocations (and frees of the old buffers)
                        // interleave with the other coroutines' on the
                        // worker's malloc state.
                        GROWN.with(|g| g.borrow_mut().push(c * LEN + i));
                        if i % 10_000 == 0 {
                            coroutines::yield_now();
                        }
                        if i % 50_000 == 0 {
                            thread::sleep(Duration::from_millis(1));
                        }
                    }
                    GROWN.with(|g| {
                        let g = g.borrow();
                        assert_eq!(g.len() as u64, LEN, "coroutine {c}");
                        assert!(
                            g.iter().zip(c * LEN..).all(|(a, b)| *a == b),
                            "coroutine {c}: the vector holds another coroutine's values"
                        );
                    });
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        GROWN.with(|g| assert!(g.borrow().is_empty(), "the root's vector"));
    });
}

// ---------------------------------------------------------------------------
// errno, pthread_self, the stack, the CPU

#[test]
fn errno_is_kept_per_coroutine_across_sleeps() {
    run(1, WATCHDOG, || {
        let handles: Vec<_> = [1111, 2222, 3333]
            .into_iter()
            .map(|value| {
                coroutines::spawn(move || {
                    assert_eq!(errno(), 0, "errno of a new coroutine");
                    set_errno(value);
                    for _ in 0..ROUNDS {
                        thread::sleep(Duration::from_millis(5));
                        assert_eq!(errno(), value, "errno after a sleep");
                        coroutines::yield_now();
                        assert_eq!(errno(), value, "errno after a yield");
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
    });
}

#[test]
fn errno_set_by_a_failing_call_is_not_seen_by_another_coroutine() {
    run(1, WATCHDOG, || {
        set_errno(0);
        coroutines::spawn(|| {
            // SAFETY: closing a descriptor number that is not open.
            assert_eq!(unsafe { libc::close(1_000_000) }, -1);
            assert_eq!(errno(), libc::EBADF);
        })
        .join()
        .unwrap();
        assert_eq!(errno(), 0, "another coroutine's EBADF leaked into ours");
    });
}

/// `pthread_self()` of the caller.
fn pthread_self() -> libc::pthread_t {
    // SAFETY: no preconditions.
    unsafe { libc::pthread_self() }
}

#[test]
fn pthread_self_is_distinct_per_coroutine_and_stable() {
    let (selves, worker_thread) = run(1, WATCHDOG, || {
        let handles: Vec<_> = (0..10)
            .map(|_| {
                coroutines::spawn(|| {
                    let me = pthread_self();
                    thread::sleep(Duration::from_millis(2));
                    assert_eq!(pthread_self(), me, "pthread_self after a sleep");
                    // SAFETY: pthread_equal only compares.
                    assert_ne!(unsafe { libc::pthread_equal(me, pthread_self()) }, 0);
                    me
                })
            })
            .collect();
        let selves: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (selves, os_thread())
    });
    let distinct: HashSet<_> = selves.iter().collect();
    assert_eq!(
        distinct.len(),
        selves.len(),
        "pthread_self values: {selves:x?}"
    );
    assert!(
        !selves.contains(&pthread_self()),
        "the test thread's pthread_t"
    );
    assert!(worker_thread > 0);
}

/// `[low, high)` of the calling thread's stack, as `pthread_getattr_np`
/// reports it.
fn reported_stack() -> (usize, usize) {
    // SAFETY: getattr_np on the calling thread with a local attribute
    // object, destroyed after use.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        assert_eq!(libc::pthread_getattr_np(libc::pthread_self(), &mut attr), 0);
        let (mut addr, mut size) = (std::ptr::null_mut(), 0usize);
        assert_eq!(libc::pthread_attr_getstack(&attr, &mut addr, &mut size), 0);
        libc::pthread_attr_destroy(&mut attr);
        (addr as usize, addr as usize + size)
    }
}

#[test]
fn pthread_getattr_np_reports_the_coroutines_own_stack() {
    const STACK: usize = 256 * 1024;
    run(1, WATCHDOG, || {
        let check = || {
            let local = 0u8;
            let here = std::hint::black_box(&local) as *const u8 as usize;
            let (low, high) = reported_stack();
            assert!(
                (low..high).contains(&here),
                "the stack is reported as [{low:#x}, {high:#x}), a local is at {here:#x}"
            );
            (low, high)
        };
        let (low, high) = check();
        let size = high - low;
        assert!(
            size < 16 * 1024 * 1024,
            "a coroutine's stack is reported as {size} bytes: the worker's?"
        );
        let big = coroutines::Builder::new()
            .stack_size(STACK)
            .spawn(move || {
                let bounds = check();
                thread::sleep(Duration::from_millis(1));
                assert_eq!(check(), bounds, "after a sleep");
                bounds
            })
            .unwrap()
            .join()
            .unwrap();
        let big_size = big.1 - big.0;
        assert!(
            (STACK..STACK + 64 * 1024).contains(&big_size),
            "a {STACK}-byte coroutine's stack is reported as {big_size} bytes"
        );
        assert!(
            big.1 <= low || big.0 >= high,
            "two coroutines' stacks overlap"
        );
    });
}

#[test]
fn sched_getcpu_names_a_cpu_the_worker_may_run_on() {
    run(1, WATCHDOG, || {
        // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills it.
        let allowed = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            assert_eq!(libc::sched_getaffinity(0, size, &mut set), 0);
            set
        };
        for _ in 0..20 {
            // SAFETY: no preconditions.
            let cpu = unsafe { libc::sched_getcpu() };
            assert!(
                cpu >= 0,
                "sched_getcpu: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: `cpu` is within the set's bounds (checked above).
            assert!(
                unsafe { libc::CPU_ISSET(cpu as usize, &allowed) },
                "sched_getcpu says {cpu}, which the worker may not run on"
            );
            thread::sleep(Duration::from_millis(1));
        }
    });
}

// ---------------------------------------------------------------------------
// Coroutines and OS threads

#[test]
fn scoped_threads_inside_a_coroutine() {
    run(1, WATCHDOG, || {
        let ticker = Ticker::start();
        let me = thread::current().id();
        let data: Vec<u64> = (1..=1000).collect();
        let ids = Mutex::new(Vec::new());
        let (sum, elapsed, ticks) = ticker.during(|| {
            thread::scope(|scope| {
                let halves = data.split_at(500);
                let handles: Vec<_> = [halves.0, halves.1]
                    .into_iter()
                    .map(|half| {
                        let ids = &ids;
                        scope.spawn(move || {
                            ids.lock().unwrap().push(thread::current().id());
                            thread::sleep(WAIT);
                            half.iter().sum::<u64>()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
            })
        });
        assert_eq!(sum, 500_500);
        // The scope's end waits with thread::park on the coroutine's own
        // parker, which the threads unpark.
        assert_parked("thread::scope", elapsed, ticks);
        let ids = ids.into_inner().unwrap();
        assert_eq!(ids.len(), 2);
        assert!(
            !ids.contains(&me),
            "a scoped thread has the coroutine's ThreadId"
        );
        assert_ne!(ids[0], ids[1]);
        assert_eq!(thread::current().id(), me);
    });
}

#[test]
fn a_scope_whose_threads_finish_first_does_not_hang() {
    // The threads end (and unpark the coroutine) before it reaches the
    // scope's wait: the unpark token must be kept for it.
    run(1, WATCHDOG, || {
        for _ in 0..50 {
            let total = AtomicUsize::new(0);
            thread::scope(|scope| {
                for _ in 0..4 {
                    scope.spawn(|| total.fetch_add(1, Ordering::SeqCst));
                }
                let until = Instant::now() + Duration::from_millis(2);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            });
            assert_eq!(total.load(Ordering::SeqCst), 4);
        }
    });
}

#[test]
fn coroutines_spawn_threads_that_spawn_coroutines() {
    let ids = run(2, WATCHDOG, || {
        let outer = thread::current().id();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                thread::spawn(move || {
                    let thread_id = thread::current().id();
                    // From a plain thread, coroutines go to the process-wide
                    // runtime; the thread blocks in join.
                    let inner: Vec<_> = (0..5)
                        .map(|c| {
                            coroutines::spawn(move || {
                                let me = thread::current().id();
                                thread::sleep(Duration::from_millis(2));
                                assert_eq!(thread::current().id(), me);
                                // And back: a thread spawned by a coroutine.
                                let grandchild =
                                    thread::spawn(|| thread::current().id()).join().unwrap();
                                assert_ne!(grandchild, me);
                                (t, c, me, grandchild)
                            })
                        })
                        .collect();
                    let inner: Vec<_> = inner.into_iter().map(|h| h.join().unwrap()).collect();
                    (thread_id, inner)
                })
            })
            .collect();
        // Joining the threads parks this coroutine.
        let mut ids = vec![outer];
        for handle in threads {
            let (thread_id, inner) = handle.join().unwrap();
            ids.push(thread_id);
            for (_, _, me, grandchild) in inner {
                ids.push(me);
                ids.push(grandchild);
            }
        }
        ids
    });
    let distinct: HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "some ThreadIds repeat: {ids:?}");
    assert_eq!(ids.len(), 1 + 4 * (1 + 5 * 2));
}

#[test]
fn setgid_from_a_coroutine_reaches_every_thread() {
    // glibc's set*id functions make every thread of the process run the
    // call (a signal broadcast over its thread list); from a coroutine, the
    // caller is a copy glibc does not list.
    run(2, WATCHDOG, || {
        let busy = Arc::new(AtomicBool::new(true));
        let others: Vec<_> = (0..4)
            .map(|i| {
                let busy = busy.clone();
                coroutines::spawn(move || {
                    while busy.load(Ordering::SeqCst) {
                        if i % 2 == 0 {
                            coroutines::yield_now();
                        } else {
                            thread::sleep(Duration::from_millis(1));
                        }
                    }
                })
            })
            .collect();
        for _ in 0..50 {
            // SAFETY: setting the gid to the current one changes nothing.
            let ret = unsafe { libc::setgid(libc::getgid()) };
            assert_eq!(ret, 0, "setgid: {}", std::io::Error::last_os_error());
        }
        busy.store(false, Ordering::SeqCst);
        for handle in others {
            handle.join().unwrap();
        }
    });
}

/// What [`Farewell`] destructors saw: (owner's id at start, the id
/// `thread::current()` gave in the destructor, if it did not panic).
static FAREWELLS: Mutex<Vec<(ThreadId, Option<ThreadId>)>> = Mutex::new(Vec::new());

/// A thread-local whose destructor asks std which thread it runs on.
struct Farewell(Cell<Option<ThreadId>>);

impl Drop for Farewell {
    fn drop(&mut self) {
        if let Some(owner) = self.0.get() {
            let now = std::panic::catch_unwind(|| thread::current().id()).ok();
            FAREWELLS.lock().unwrap().push((owner, now));
        }
    }
}

thread_local! {
    static FAREWELL: Farewell = const { Farewell(Cell::new(None)) };
}

fn remember_me() {
    FAREWELL.with(|f| f.0.set(Some(thread::current().id())));
}

#[test]
fn a_thread_local_destructor_sees_its_own_thread_as_on_a_thread() {
    // The baseline: a plain thread's destructor sees the thread itself.
    thread::spawn(remember_me).join().unwrap();
    let baseline = FAREWELLS
        .lock()
        .unwrap()
        .pop()
        .expect("the thread's farewell");
    assert_eq!(baseline.1, Some(baseline.0), "a plain thread");
    run(1, WATCHDOG, || {
        coroutines::spawn(remember_me).join().unwrap();
        // Its thread-locals are dropped after a panic too.
        let panicked = coroutines::spawn(|| {
            remember_me();
            coroutines::yield_now();
            // Unwinds without the panic hook: nothing is printed.
            std::panic::resume_unwind(Box::new("a coroutine that panics after a yield"));
        });
        assert!(panicked.join().is_err());
    });
    let seen = std::mem::take(&mut *FAREWELLS.lock().unwrap());
    assert_eq!(seen.len(), 2, "farewells: {seen:?}");
    for (owner, now) in seen {
        assert_eq!(now, Some(owner), "a coroutine's destructor, as on a thread");
    }
}
