//! Placement of started coroutines on 2 workers.
//!
//! Both tests run the same workload: the root coroutine spawns many
//! coroutines that each `yield_now` in a loop, waits until one of them is
//! queued on its own worker, then hogs that worker (spins without yielding);
//! from then on the others finish after a fixed number of yields.
//! Its worker's started coroutines can then only make progress elsewhere.
//! - With `work_stealing = true` the other worker, once out of work, steals
//!   them: `stats().migrations > 0`, and a coroutine sees two OS threads.
//! - With it off they wait for their own worker: `migrations == 0`, and every
//!   coroutine sees one OS thread id before and after each of its yields.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use coroutines::{Runtime, Stats};

/// A kernel thread id: which worker runs the caller. (`thread::current()`
/// names the coroutine itself, which has its own thread identity.)
type OsThread = libc::pid_t;

fn os_thread() -> OsThread {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

const COROUTINES: usize = 40;
const YIELDS: usize = 200;

#[derive(Default)]
struct Slot {
    /// The OS thread the coroutine last ran on.
    thread: Mutex<Option<OsThread>>,
    done: AtomicBool,
}

impl Slot {
    fn is_stuck_on(&self, thread: OsThread) -> bool {
        !self.done.load(Ordering::SeqCst) && *self.thread.lock().unwrap() == Some(thread)
    }
}

struct Outcome {
    stats: Stats,
    /// Per coroutine, the distinct OS threads it ran on, in order.
    threads: Vec<Vec<OsThread>>,
    /// Whether some coroutine that last ran on the hogged worker was still
    /// unfinished and had not run elsewhere when the hog ended.
    stuck_behind_hog: bool,
}

enum Hog {
    /// Spin until a migration is counted (or a generous deadline passes).
    UntilMigration,
    /// Spin for this long.
    For(Duration),
}

fn run(work_stealing: bool, hog: Hog) -> Outcome {
    // The blocked-worker monitor would move the hogged worker's coroutines
    // too: these tests are about work stealing alone.
    let runtime = Runtime::builder()
        .workers(2)
        .work_stealing(work_stealing)
        .blocked_worker_threshold(Duration::MAX)
        .build()
        .unwrap();
    let (threads, stuck_behind_hog) = runtime.block_on(move || {
        let slots: Arc<Vec<Slot>> = Arc::new((0..COROUTINES).map(|_| Slot::default()).collect());
        let hogging = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..COROUTINES)
            .map(|i| {
                let (slots, hogging) = (slots.clone(), hogging.clone());
                coroutines::spawn(move || {
                    let mut seen = vec![os_thread()];
                    *slots[i].thread.lock().unwrap() = Some(seen[0]);
                    // Not finishing before the hog starts keeps work queued
                    // on both workers until then.
                    let mut yields = 0;
                    while yields < YIELDS || !hogging.load(Ordering::SeqCst) {
                        coroutines::yield_now();
                        yields += 1;
                        let now = os_thread();
                        if *seen.last().unwrap() != now {
                            seen.push(now);
                            *slots[i].thread.lock().unwrap() = Some(now);
                        }
                    }
                    slots[i].done.store(true, Ordering::SeqCst);
                    seen
                })
            })
            .collect();

        // Let the new coroutines start, until some started one last ran on
        // this worker: it is queued behind us here.
        let stuck_here = |me: OsThread| slots.iter().any(|s| s.is_stuck_on(me));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            coroutines::yield_now();
            if stuck_here(os_thread()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no coroutine ran on the root's worker"
            );
        }

        // Hog this worker: no yield, so its queue only moves if stolen.
        let me = os_thread();
        hogging.store(true, Ordering::SeqCst);
        let start = Instant::now();
        match hog {
            Hog::UntilMigration => {
                while coroutines::stats().migrations == 0
                    && start.elapsed() < Duration::from_secs(5)
                {
                    std::hint::spin_loop();
                }
            }
            Hog::For(duration) => {
                while start.elapsed() < duration {
                    std::hint::spin_loop();
                }
            }
        }
        assert_eq!(os_thread(), me, "a running coroutine never moves");
        let stuck_behind_hog = stuck_here(me);

        let threads = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>();
        (threads, stuck_behind_hog)
    });
    Outcome {
        stats: runtime.stats(),
        threads,
        stuck_behind_hog,
    }
}

#[test]
fn with_work_stealing_started_coroutines_of_a_busy_worker_migrate() {
    let outcome = run(true, Hog::UntilMigration);
    assert!(
        outcome.stats.migrations > 0,
        "an idle worker should have stolen started coroutines from the hogged one: {:?}",
        outcome.stats
    );
    // The migration is real: some coroutine ran on two OS threads.
    let moved = outcome.threads.iter().filter(|t| t.len() > 1).count();
    assert!(
        moved > 0,
        "no coroutine changed OS thread: {:?}",
        outcome.stats
    );
    // Each move between threads is at least one counted migration.
    let moves: usize = outcome.threads.iter().map(|t| t.len() - 1).sum();
    assert!(
        outcome.stats.migrations >= moves as u64,
        "{moves} moves observed but {:?}",
        outcome.stats
    );
}

#[test]
fn without_work_stealing_started_coroutines_stay_on_their_thread() {
    let outcome = run(false, Hog::For(Duration::from_millis(300)));
    assert_eq!(outcome.stats.migrations, 0, "{:?}", outcome.stats);
    assert!(
        outcome.stuck_behind_hog,
        "the other worker must not have taken the hogged worker's started coroutines"
    );
    for (i, threads) in outcome.threads.iter().enumerate() {
        assert_eq!(
            threads.len(),
            1,
            "coroutine {i} ran on several OS threads: {threads:?}"
        );
    }
}
