//! Runtime counters: `spawned` grows by exactly the number of spawns,
//! `alive` counts the unfinished and returns to 0 after joins,
//! `context_switches` counts every switch into a coroutine, and each runtime
//! has counters of its own.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread;
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

/// A sleep that runs its time counts as a sleep; a wait that ends by its
/// deadline (a channel's `recv_timeout`, a socket's read timeout) as a
/// timeout.
#[test]
fn sleeps_and_timeouts_are_counted_apart() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    runtime.block_on(|| {
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(2));
        }
        let (_keep, rx) = std::sync::mpsc::channel::<()>();
        assert!(rx.recv_timeout(Duration::from_millis(5)).is_err());
        let (mut socket, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        assert!(std::io::Read::read(&mut socket, &mut [0u8; 8]).is_err());
    });
    let stats = runtime.stats();
    assert_eq!((stats.sleeps, stats.timeouts), (5, 2), "{stats:?}");
}

/// Per-worker figures: the coroutine asking runs on one worker, parked
/// coroutines are counted on their worker, and a worker that computed has
/// busy time.
#[test]
fn worker_stats_show_running_parked_and_busy() {
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let (workers, asker) = runtime.block_on(|| {
        let gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let parked: Vec<_> = (0..3)
            .map(|_| {
                let gate = gate.clone();
                coroutines::spawn(move || {
                    let (lock, opened) = &*gate;
                    let _open = opened.wait_while(lock.lock().unwrap(), |open| !*open);
                })
            })
            .collect();
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        while coroutines::worker_stats()
            .iter()
            .map(|w| w.parked)
            .sum::<usize>()
            < 3
        {
            coroutines::yield_now();
        }
        let workers = coroutines::worker_stats();
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        parked.into_iter().for_each(|h| h.join().unwrap());
        (workers, coroutines::current().id())
    });
    assert_eq!(workers.len(), 2, "{workers:?}");
    assert_eq!(
        workers.iter().map(|w| w.parked).sum::<usize>(),
        3,
        "{workers:?}"
    );
    let running: Vec<_> = workers.iter().filter_map(|w| w.running).collect();
    assert_eq!(running, [asker], "{workers:?}");
    assert!(
        workers.iter().any(|w| w.busy >= Duration::from_millis(15)),
        "{workers:?}"
    );
    assert!(workers.iter().all(|w| !w.spare), "{workers:?}");
}

/// The coroutine that `unpark_from_handler` wakes.
static WOKEN_BY_HANDLER: OnceLock<thread::Thread> = OnceLock::new();

extern "C" fn unpark_from_handler(_: libc::c_int) {
    WOKEN_BY_HANDLER.get().unwrap().unpark();
}

#[test]
fn worker_stats_count_coroutines_woken_from_signal_handlers() {
    // Such a wake waits apart from the worker's other queues (its
    // mailbox); it is queued all the same.
    let runtime = Runtime::builder()
        .workers(1)
        .blocked_worker_threshold(Duration::from_secs(60))
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let parked = runtime.spawn(move || {
        tx.send(thread::current()).unwrap();
        thread::park();
    });
    let release = Arc::new(AtomicBool::new(false));
    let spinner = runtime.spawn({
        let release = release.clone();
        move || {
            while !release.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        }
    });
    WOKEN_BY_HANDLER.set(rx.recv().unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let worker = &runtime.worker_stats()[0];
        if worker.running == Some(spinner.coroutine().id()) && worker.parked == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{worker:?}");
        thread::sleep(Duration::from_millis(1));
    }
    support::install_handler(libc::SIGUSR1, unpark_from_handler);
    // SAFETY: raising a signal whose handler is installed.
    unsafe { libc::raise(libc::SIGUSR1) };
    let workers = runtime.worker_stats();
    release.store(true, Ordering::Relaxed);
    parked.join().unwrap();
    spinner.join().unwrap();
    assert_eq!(workers[0].queued, 1, "{workers:?}");
    assert_eq!(workers[0].parked, 0, "{workers:?}");
}
