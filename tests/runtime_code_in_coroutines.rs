//! Runtime code that runs on a coroutine's stack (its queue pushes, starting
//! the process-wide runtime) can reach hooked calls: other crates' code runs
//! inside it, and starting a runtime waits. Each case runs in a child
//! process, since a failure may be a crash or a hang, and the process-wide
//! runtime can start only once per process.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::Duration;

use support::child::{child_case, rerun, run_child};
use support::{no_monitor, watchdog_on};

/// How many coroutines the root spawns at once: several times crossbeam's
/// smallest queue (64 tasks), so that the worker's queue grows while the
/// root pushes.
const SPAWNED: usize = 300;

/// How many functions [`leave_garbage`] defers.
const DEFERRED: usize = 64;

/// Leaves `DEFERRED` sealed bags of garbage in crossbeam's global epoch
/// queue, each a function that calls `collected`: its epoch collector runs
/// them wherever it next collects, in whatever thread pinned the epoch. A
/// participant pinned meanwhile holds the epoch back, so none of them can
/// be collected before it lets go.
fn leave_garbage(collected: impl Fn() + Clone + Send + 'static) {
    let hold = crossbeam_epoch::pin();
    thread::spawn(move || {
        for _ in 0..DEFERRED {
            let guard = crossbeam_epoch::pin();
            guard.defer(collected.clone());
            guard.flush();
        }
    })
    .join()
    .unwrap();
    drop(hold);
}

/// A coroutine spawns hundreds at once on one worker: the worker's queue
/// grows, and crossbeam pins its epoch to retire the old buffer, which
/// collects other crates' garbage, whose functions may wait. A coroutine
/// that parked there, halfway through its worker's queue, let the worker
/// run the tasks it had copied and push new ones, which the stale copy
/// then lost (or ran twice).
#[test]
fn garbage_collected_while_a_coroutine_grows_its_queue_may_wait() {
    if child_case().as_deref() == Some("grow") {
        let ran_on = Arc::new(Mutex::new(Vec::new()));
        // Each sleeps, as a drop that takes a contended lock or flushes a
        // file waits.
        let ran = ran_on.clone();
        leave_garbage(move || {
            ran.lock().unwrap().push(thread::current().id());
            thread::sleep(Duration::from_millis(2));
        });
        let (root, runs) = watchdog_on(
            "spawning beside sleeping garbage",
            Duration::from_secs(30),
            no_monitor(),
            || {
                let runs: Arc<Vec<AtomicUsize>> =
                    Arc::new((0..SPAWNED).map(|_| AtomicUsize::new(0)).collect());
                let handles: Vec<_> = (0..SPAWNED)
                    .map(|i| {
                        let runs = runs.clone();
                        coroutines::spawn(move || {
                            runs[i].fetch_add(1, Ordering::SeqCst);
                            // A push of the worker's own while the root
                            // may be parked halfway through the queue.
                            let runs = runs.clone();
                            coroutines::spawn(move || runs[i].fetch_add(1, Ordering::SeqCst))
                                .join()
                                .unwrap();
                        })
                    })
                    .collect();
                for handle in handles {
                    handle.join().unwrap();
                }
                let runs: Vec<usize> = runs.iter().map(|r| r.load(Ordering::SeqCst)).collect();
                (thread::current().id(), runs)
            },
        );
        let ran_in_root = ran_on.lock().unwrap().contains(&root);
        // Otherwise the case did not test what it is about.
        assert!(
            ran_in_root,
            "no garbage was collected in the spawning coroutine"
        );
        // Each of them and its own child: two runs.
        let wrong: Vec<_> = runs.iter().enumerate().filter(|(_, &n)| n != 2).collect();
        assert!(
            wrong.is_empty(),
            "(coroutine, runs) not run twice: {wrong:?}"
        );
        println!("CHILD OK");
        return;
    }
    let output = run_child("grow", rerun("grow"), Duration::from_secs(60));
    assert!(String::from_utf8_lossy(&output.stdout).contains("CHILD OK"));
}

/// As above, with coroutines sharing their worker's identity, where the
/// garbage wakes a coroutine of the spawning one's worker, as a drop that
/// releases a lock or sends on a channel does. The wake came back into the
/// worker's queue halfway through the spawner's push.
#[test]
fn garbage_collected_while_a_coroutine_grows_its_queue_may_wake_its_worker() {
    static SPAWNING: AtomicBool = AtomicBool::new(false);
    static RAN_WHILE_SPAWNING: AtomicBool = AtomicBool::new(false);
    static WOKEN: AtomicBool = AtomicBool::new(false);
    static WAITER: OnceLock<Thread> = OnceLock::new();
    if child_case().as_deref() == Some("wake") {
        leave_garbage(|| {
            if SPAWNING.load(Ordering::SeqCst) {
                RAN_WHILE_SPAWNING.store(true, Ordering::SeqCst);
            }
            WOKEN.store(true, Ordering::SeqCst);
            if let Some(waiter) = WAITER.get() {
                waiter.unpark();
            }
        });
        watchdog_on(
            "spawning beside garbage that wakes",
            Duration::from_secs(30),
            // Stealing puts woken coroutines in the worker's queue too.
            no_monitor().thread_identity(false).work_stealing(true),
            || {
                let waiter = coroutines::spawn(|| {
                    WAITER.set(thread::current()).unwrap();
                    while !WOKEN.load(Ordering::SeqCst) {
                        thread::park();
                    }
                });
                // The waiter runs until it parks.
                coroutines::yield_now();
                SPAWNING.store(true, Ordering::SeqCst);
                let handles: Vec<_> = (0..SPAWNED).map(|_| coroutines::spawn(|| ())).collect();
                SPAWNING.store(false, Ordering::SeqCst);
                for handle in handles {
                    handle.join().unwrap();
                }
                waiter.join().unwrap();
            },
        );
        // Otherwise the case did not test what it is about.
        assert!(
            RAN_WHILE_SPAWNING.load(Ordering::SeqCst),
            "no garbage was collected while the coroutine spawned"
        );
        println!("CHILD OK");
        return;
    }
    let output = run_child("wake", rerun("wake"), Duration::from_secs(60));
    assert!(String::from_utf8_lossy(&output.stdout).contains("CHILD OK"));
}

/// Two coroutines of one worker start the process-wide runtime at once,
/// in a runtime whose coroutines share the worker's identity (so starting
/// one with identities self-tests them first, which waits for the test's
/// coroutines). The second must wait for the first, then be told it has
/// started, as two threads are: spinning, it kept the worker from the
/// first, for ever.
#[test]
fn coroutines_of_one_worker_may_race_to_start_the_process_wide_runtime() {
    if child_case().as_deref() == Some("race") {
        let outcomes = watchdog_on(
            "two starts of the process-wide runtime",
            Duration::from_secs(30),
            no_monitor().thread_identity(false),
            || {
                let start = || {
                    coroutines::Runtime::builder()
                        .workers(1)
                        .start_default()
                        .map_err(|error| error.to_string())
                };
                let first = coroutines::spawn(start);
                let second = coroutines::spawn(start);
                [first.join().unwrap(), second.join().unwrap()]
            },
        );
        let started = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
        let refused = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, Err(e) if e.contains("already started")))
            .count();
        assert_eq!((started, refused), (1, 1), "{outcomes:?}");
        println!("CHILD OK");
        return;
    }
    let output = run_child("race", rerun("race"), Duration::from_secs(60));
    assert!(String::from_utf8_lossy(&output.stdout).contains("CHILD OK"));
}
