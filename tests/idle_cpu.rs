//! An idle runtime sleeps: after running some coroutines, a runtime with 2
//! workers uses (almost) no CPU over an idle second, its threads (workers,
//! the blocked-worker monitor) are not woken periodically, and work that
//! arrives afterwards is still picked up promptly.
//!
//! The CPU time measured is the whole process's, so the tests in this file
//! take turns (`support::serial`) rather than run in parallel.

mod support;

use support::{serial, thread_switches};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coroutines::Runtime;

/// CPU time used so far by all threads of this process.
fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(ret, 0, "clock_gettime failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs enough on `runtime` that both workers have been busy, then waits
/// until nothing is left alive.
fn warm_up(runtime: &Runtime) {
    let sum = runtime.block_on(|| {
        let handles: Vec<_> = (0..10_000u64)
            .map(|i| {
                coroutines::spawn(move || {
                    coroutines::yield_now();
                    i
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    assert_eq!(sum, 9_999 * 10_000 / 2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while runtime.stats().alive != 0 {
        assert!(Instant::now() < deadline, "{:?}", runtime.stats());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Spawns from this plain thread and returns how long until the coroutine
/// had run, failing (instead of hanging) if it never does.
fn spawn_latency(runtime: &Runtime) -> Duration {
    let ran = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handle = {
        let ran = ran.clone();
        runtime.spawn(move || ran.store(true, Ordering::SeqCst))
    };
    while !handle.is_finished() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "work sent to an idle runtime was not picked up (lost wake-up?)"
        );
        std::thread::sleep(Duration::from_micros(100));
    }
    let latency = start.elapsed();
    handle.join().unwrap();
    assert!(ran.load(Ordering::SeqCst));
    latency
}

#[test]
fn idle_runtime_uses_almost_no_cpu() {
    let _serial = serial();
    let runtime = Runtime::builder().workers(2).build().unwrap();
    warm_up(&runtime);
    // Let the workers run out of work and go to sleep.
    std::thread::sleep(Duration::from_millis(100));
    let switches = runtime.stats().context_switches;

    let before = process_cpu_time();
    std::thread::sleep(Duration::from_secs(1));
    let used = process_cpu_time() - before;

    // Busy polling would cost up to 2 s here (2 workers); a periodic wake-up
    // a little. 50 ms leaves room for noise from the test harness.
    assert!(
        used < Duration::from_millis(50),
        "an idle runtime with 2 workers used {used:?} of CPU in 1 s"
    );
    assert_eq!(
        runtime.stats().context_switches,
        switches,
        "nothing ran while idle"
    );
    // Still alive afterwards.
    assert_eq!(runtime.block_on(|| 7), 7);
}

#[test]
fn work_after_idleness_is_picked_up_promptly() {
    let _serial = serial();
    let runtime = Runtime::builder().workers(2).build().unwrap();
    warm_up(&runtime);
    let mut latencies = Vec::new();
    for _ in 0..10 {
        // Long enough for both workers to fall asleep.
        std::thread::sleep(Duration::from_millis(50));
        latencies.push(spawn_latency(&runtime));
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let worst = *latencies.last().unwrap();
    // A sleeping worker is woken directly (eventfd), which takes
    // microseconds; the bounds are generous for loaded CI machines.
    assert!(median < Duration::from_millis(100), "{latencies:?}");
    assert!(worst < Duration::from_secs(1), "{latencies:?}");

    // A coroutine parked (in join) on a sleeping worker is also woken
    // promptly when what it waits for finishes on another runtime.
    let other = Runtime::builder().workers(1).build().unwrap();
    let release = Arc::new(AtomicBool::new(false));
    let awaited = {
        let release = release.clone();
        other.spawn(move || {
            while !release.load(Ordering::SeqCst) {
                // Yields keep `other`'s worker responsive to its shutdown.
                coroutines::yield_now();
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let waiter = runtime.spawn(move || awaited.join().is_ok());
    std::thread::sleep(Duration::from_millis(100));
    assert!(!waiter.is_finished());
    let start = Instant::now();
    release.store(true, Ordering::SeqCst);
    while !waiter.is_finished() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "a parked coroutine on an idle worker was never woken"
        );
        std::thread::sleep(Duration::from_micros(100));
    }
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert!(waiter.join().unwrap());
}

/// The runtime's threads, the blocked-worker monitor among them, sleep
/// while it is idle: no periodic wake-ups over an idle second.
#[test]
fn idle_runtime_threads_are_not_woken_periodically() {
    let _serial = serial();
    let runtime = Runtime::builder()
        .workers(2)
        .blocked_worker_threshold(Duration::from_millis(20))
        .build()
        .unwrap();
    warm_up(&runtime);
    std::thread::sleep(Duration::from_millis(100));
    let (threads, before) = thread_switches("coroutines-");
    // Two workers and the monitor, at least: else this measures nothing.
    assert!(threads >= 3, "found {threads} runtime threads");
    std::thread::sleep(Duration::from_secs(1));
    let woken = thread_switches("coroutines-").1 - before;
    println!("{threads} runtime threads switched {woken} times in an idle second");
    // A monitor looking every few milliseconds would switch hundreds of
    // times a second; a helper thread's idle timeout is 10 s.
    assert!(
        woken < 20,
        "the idle runtime's threads switched {woken} times in 1 s"
    );
    assert_eq!(runtime.block_on(|| 7), 7);
}

/// A worker that sleeps and wakes again and again (a server between
/// requests) does not wake the blocked-worker monitor each time: the
/// monitor looks every few milliseconds while the runtime is busy, and
/// parks only after it has been idle for a while. Woken per worker
/// wake-up, it would cost a system call and a switch per request.
#[test]
fn a_worker_waking_often_does_not_wake_the_monitor_each_time() {
    const SLEEPS: u64 = 1000;
    let _serial = serial();
    let runtime = Runtime::builder().workers(1).build().unwrap();
    warm_up(&runtime);
    let (monitors, before) = thread_switches("coroutines-moni");
    assert!(monitors >= 1, "found no monitor thread");
    let start = Instant::now();
    runtime.block_on(|| {
        for _ in 0..SLEEPS {
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    let took = start.elapsed();
    let woken = thread_switches("coroutines-moni").1 - before;
    println!("the monitor switched {woken} times over {SLEEPS} worker wake-ups in {took:?}");
    // A look every 5 ms makes about one switch per 20 sleeps; a monitor
    // woken by worker wake-ups switched about once per 4.
    assert!(
        woken < SLEEPS / 7,
        "the monitor switched {woken} times over {SLEEPS} worker wake-ups ({took:?})"
    );
}
