//! Dropping a runtime: coroutines that can no longer finish (parked,
//! runnable or never started) are abandoned, their join handles return an
//! `Err` whose `String` payload says the runtime shut down, and the drop
//! returns promptly. Abandoned stacks are leaked, never unwound.
//!
//! The process must not abort at shutdown either: this binary finishing
//! normally, with coroutines still parked in runtimes that were dropped and
//! in the process-wide one (which is never dropped), is the proof.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use coroutines::{JoinHandle, Runtime};

/// Joins `handle` from a plain thread, failing the test instead of hanging
/// if the join never returns.
fn join_within<T: Send + 'static>(handle: JoinHandle<T>, what: &str) -> thread::Result<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(handle.join());
    });
    rx.recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("joining {what} after shutdown hangs"))
}

/// Asserts that `result` is the error of a coroutine abandoned at shutdown.
fn assert_shut_down<T>(result: thread::Result<T>, what: &str) {
    let payload = match result {
        Ok(_) => panic!("{what} finished, but it could not have"),
        Err(payload) => payload,
    };
    let message = payload
        .downcast_ref::<String>()
        .unwrap_or_else(|| panic!("{what}: the payload should be a String"));
    assert!(
        message.contains("shut down"),
        "{what}: the message should say the runtime shut down: {message:?}"
    );
}

/// Drops `runtime`, asserting that it does not take long.
fn drop_promptly(runtime: Runtime) {
    let start = Instant::now();
    drop(runtime);
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "dropping the runtime took {took:?}"
    );
}

/// Waits until `counter` reaches `n`.
fn wait_for(counter: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while counter.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "coroutines did not start");
        thread::sleep(Duration::from_millis(1));
    }
    // Let the last of them reach its wait.
    thread::sleep(Duration::from_millis(20));
}

/// Counts drops, to see whether an abandoned stack was unwound.
struct DropCounter(Arc<AtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn coroutine_parked_on_a_runnable_one_fails_at_shutdown() {
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let never = Arc::new(AtomicBool::new(false));
    let unwound = Arc::new(AtomicUsize::new(0));
    let spinner = {
        let (started, never) = (started.clone(), never.clone());
        runtime.spawn(move || {
            started.fetch_add(1, Ordering::SeqCst);
            while !never.load(Ordering::SeqCst) {
                coroutines::yield_now();
            }
        })
    };
    let waiter = {
        let (started, guard) = (started.clone(), DropCounter(unwound.clone()));
        runtime.spawn(move || {
            let _guard = guard;
            started.fetch_add(1, Ordering::SeqCst);
            spinner.join().is_ok()
        })
    };
    wait_for(&started, 2);
    assert!(!waiter.is_finished());

    drop_promptly(runtime);
    assert_shut_down(join_within(waiter, "the parked coroutine"), "parked");
    // The parked coroutine's stack was leaked, not unwound: its guard lives.
    assert_eq!(unwound.load(Ordering::SeqCst), 0);
}

#[test]
fn chain_of_parked_coroutines_fails_at_shutdown() {
    // a joins b, b joins c, c yields forever.
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let never = Arc::new(AtomicBool::new(false));
    let c = {
        let (started, never) = (started.clone(), never.clone());
        runtime.spawn(move || {
            started.fetch_add(1, Ordering::SeqCst);
            while !never.load(Ordering::SeqCst) {
                coroutines::yield_now();
            }
        })
    };
    let b = {
        let started = started.clone();
        runtime.spawn(move || {
            started.fetch_add(1, Ordering::SeqCst);
            c.join().is_ok()
        })
    };
    let a = {
        let started = started.clone();
        runtime.spawn(move || {
            started.fetch_add(1, Ordering::SeqCst);
            b.join().is_ok()
        })
    };
    wait_for(&started, 3);
    assert!(!a.is_finished());

    drop_promptly(runtime);
    assert_shut_down(join_within(a, "a"), "a (parked on a parked coroutine)");
}

#[test]
fn cycle_of_parked_coroutines_is_abandoned_at_shutdown() {
    // x joins y and y joins x: both parked for good, using no CPU. Their
    // handles are each other's, so nothing outside can join them; what can
    // be checked is that the drop returns promptly and unwinds nothing.
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let unwound = Arc::new(AtomicUsize::new(0));
    let slot: Arc<Mutex<Option<JoinHandle<bool>>>> = Arc::new(Mutex::new(None));
    let x = {
        let (started, slot) = (started.clone(), slot.clone());
        let guard = DropCounter(unwound.clone());
        runtime.spawn(move || {
            let _guard = guard;
            started.fetch_add(1, Ordering::SeqCst);
            let y = loop {
                if let Some(y) = slot.lock().unwrap().take() {
                    break y;
                }
                coroutines::yield_now();
            };
            y.join().is_ok()
        })
    };
    let y = {
        let started = started.clone();
        let guard = DropCounter(unwound.clone());
        runtime.spawn(move || {
            let _guard = guard;
            started.fetch_add(1, Ordering::SeqCst);
            x.join().is_ok()
        })
    };
    *slot.lock().unwrap() = Some(y);
    wait_for(&started, 2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while slot.lock().unwrap().is_some() {
        assert!(Instant::now() < deadline, "x never took y's handle");
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(Duration::from_millis(20));
    let stats = runtime.stats();
    assert_eq!(stats.alive, 2, "{stats:?}");

    drop_promptly(runtime);
    assert_eq!(
        unwound.load(Ordering::SeqCst),
        0,
        "an abandoned stack was unwound"
    );
}

#[test]
fn never_started_coroutines_fail_promptly_at_shutdown() {
    const QUEUED: usize = 10_000;
    // The monitor would move the queued coroutines off the busy worker;
    // this test needs them to stay queued until the shutdown.
    let runtime = Runtime::builder()
        .workers(1)
        .blocked_worker_threshold(Duration::MAX)
        .build()
        .unwrap();
    let hog_started = Arc::new(AtomicUsize::new(0));
    let dropping = Arc::new(AtomicBool::new(false));
    // Keep the only worker busy so that nothing else starts before the drop.
    let hog = {
        let (hog_started, dropping) = (hog_started.clone(), dropping.clone());
        runtime.spawn(move || {
            hog_started.fetch_add(1, Ordering::SeqCst);
            while !dropping.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
            // The drop has begun: give it time to flag the shutdown, then
            // yield so the worker notices it.
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(50) {
                std::hint::spin_loop();
            }
            loop {
                coroutines::yield_now();
            }
        })
    };
    wait_for(&hog_started, 1);
    let ran = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..QUEUED)
        .map(|i| {
            let ran = ran.clone();
            runtime.spawn(move || {
                ran.fetch_add(1, Ordering::SeqCst);
                i
            })
        })
        .collect();
    assert_eq!(runtime.stats().alive, QUEUED as u64 + 1);

    dropping.store(true, Ordering::SeqCst);
    drop_promptly(runtime);

    // Every handle answers at once: no coroutine is left to finish.
    let ran = ran.load(Ordering::SeqCst);
    assert_eq!(ran, 0, "the worker was busy until the shutdown");
    for (i, handle) in handles.into_iter().enumerate() {
        assert!(
            handle.is_finished(),
            "handle {i} is not finished after the drop"
        );
        assert_shut_down(handle.join(), "a never-started coroutine");
    }
    assert_shut_down(join_within(hog, "the hog"), "the hog");
}

#[test]
fn spawning_into_the_process_wide_runtime_and_leaving_coroutines_parked() {
    // The process-wide runtime is never dropped; a coroutine still parked in
    // it when the process exits must not make the exit abort or hang.
    let release = Arc::new(AtomicBool::new(false));
    let spinner = {
        let release = release.clone();
        coroutines::spawn(move || {
            while !release.load(Ordering::SeqCst) {
                coroutines::yield_now();
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let parked = coroutines::spawn(move || spinner.join().is_ok());
    thread::sleep(Duration::from_millis(20));
    assert!(!parked.is_finished());
    // Detach it: `parked` stays parked until the process exits.
    drop(parked);
}

/// A runtime dropped on another runtime's worker thread, outside any
/// coroutine (here: the detached result of a finished coroutine, which
/// that worker drops), does not hold that worker up while its own busy
/// worker finishes: the stop goes to a thread of its own.
#[test]
fn a_runtime_dropped_on_another_runtimes_worker_does_not_block_it() {
    const BUSY: Duration = Duration::from_millis(800);
    let busy_started = Arc::new(AtomicBool::new(false));
    let b = Runtime::builder()
        .workers(1)
        .blocked_worker_warnings(false)
        .build()
        .unwrap();
    let started = busy_started.clone();
    // Never parks: B's worker can only stop once it has run its time.
    let busy = b.spawn(move || {
        started.store(true, Ordering::SeqCst);
        let start = Instant::now();
        while start.elapsed() < BUSY {
            std::hint::spin_loop();
        }
    });
    drop(busy);
    while !busy_started.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(1));
    }
    let a = Runtime::builder().workers(1).build().unwrap();
    drop(a.spawn(move || b));
    // Queued behind the drop of B on A's only worker.
    let start = Instant::now();
    let next = a.spawn(Instant::now);
    let ran_at = join_within(next, "the next coroutine of A").unwrap();
    let held_up = ran_at.duration_since(start);
    assert!(
        held_up < BUSY / 2,
        "A's worker was held up {held_up:?} by the drop of B"
    );
    drop_promptly(a);
}
