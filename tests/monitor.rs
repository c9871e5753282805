//! The blocked-worker monitor: a coroutine that computes without yielding
//! holds its worker, and the monitor moves the coroutines queued behind it
//! to a spare worker, warns once on stderr (naming the coroutine), and
//! counts the incident; the builder's threshold and warning switch change
//! that.
//!
//! The scenario: on one worker, a coroutine named [`CRUNCHER`] spawns
//! [`FOLLOWERS`] coroutines (queued on its worker, never started) and then
//! computes for [`CRUNCH`] without a single switch.

mod support;

use std::time::{Duration, Instant};

use coroutines::runtime::Builder;
use coroutines::Stats;
use support::child::*;
use support::*;

const CRUNCHER: &str = "cruncher";
const FOLLOWERS: usize = 100;
const CRUNCH: Duration = Duration::from_secs(1);

/// What one run of the scenario saw: when the cruncher finished, when the
/// last follower ran (both from the start), and the runtime's counters.
#[derive(Debug)]
struct Seen {
    crunched: Duration,
    followers_ran: Duration,
    stats: Stats,
}

/// Runs the scenario on a one-worker runtime from `builder`.
fn crunch(builder: Builder) -> Seen {
    // Timing the monitor needs a CPU: never beside the real-time hog of
    // `a_worker_waiting_for_its_cpu_is_no_incident`.
    among_others(|| {
        watchdog_on(
            "crunch",
            Duration::from_secs(20),
            builder.workers(1),
            || {
                let start = Instant::now();
                let cruncher = coroutines::Builder::new()
                    .name(CRUNCHER.into())
                    .spawn(move || {
                        let followers: Vec<_> = (0..FOLLOWERS)
                            .map(|_| coroutines::spawn(move || start.elapsed()))
                            .collect();
                        // Computes: no yield, no call that parks.
                        let mut spins = 0u64;
                        while start.elapsed() < CRUNCH {
                            spins = std::hint::black_box(spins + 1);
                        }
                        (start.elapsed(), followers)
                    })
                    .unwrap();
                let (crunched, followers) = cruncher.join().unwrap();
                let followers_ran = followers
                    .into_iter()
                    .map(|f| f.join().unwrap())
                    .max()
                    .unwrap();
                Seen {
                    crunched,
                    followers_ran,
                    stats: coroutines::stats(),
                }
            },
        )
    })
}

/// Asserts that the followers ran beside the cruncher, and the counters
/// say how: one incident, the followers moved, one spare worker.
#[track_caller]
fn assert_handed_off(seen: &Seen) {
    assert!(seen.crunched >= CRUNCH, "{seen:?}");
    // Behind the cruncher they would run after 1 s.
    assert!(
        seen.followers_ran < Duration::from_millis(700),
        "the coroutines queued behind a computing one ran after {:?}: {seen:?}",
        seen.followers_ran
    );
    assert_eq!(seen.stats.blocked_workers, 1, "{seen:?}");
    assert!(seen.stats.moved_off_blocked >= 1, "{seen:?}");
    assert_eq!(seen.stats.spare_workers_started, 1, "{seen:?}");
}

/// The warning, as the monitor words it.
const WARNING: &str = "without switching";

/// Runs the scenario in a child process (this test re-run with `role`)
/// and returns its stderr.
fn child_stderr(role: &str) -> String {
    let output = run_child(role, rerun(role), Duration::from_secs(30));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Coroutines queued behind one that computes run on a spare worker within
/// a few hundred milliseconds, and the counters record the incident.
#[test]
fn queued_coroutines_move_off_a_computing_worker() {
    let seen = crunch(Builder::default().blocked_worker_warnings(false));
    println!(
        "followers ran within {:?}, {:?}",
        seen.followers_ran, seen.stats
    );
    assert_handed_off(&seen);
}

/// One warning per incident names the computing coroutine, its worker and
/// the advice, however often the monitor looked during the second.
#[test]
fn the_warning_names_the_coroutine_once() {
    if child_case().is_some() {
        return assert_handed_off(&crunch(Builder::default()));
    }
    let stderr = child_stderr("warn");
    let warnings: Vec<_> = stderr.lines().filter(|l| l.contains(WARNING)).collect();
    assert_eq!(warnings.len(), 1, "want one warning; stderr:\n{stderr}");
    let warning = warnings[0];
    for part in [
        "coroutines: worker 0 ",
        &format!("('{CRUNCHER}')"),
        "coroutines::yield_now()",
        "coroutines::spawn_blocking",
        "blocked_worker_warnings(false)",
    ] {
        assert!(warning.contains(part), "no {part:?} in: {warning}");
    }
}

/// `blocked_worker_warnings(false)` silences the warning; the monitor still
/// moves the coroutines and counts the incident.
#[test]
fn warnings_can_be_silenced() {
    if child_case().is_some() {
        return assert_handed_off(&crunch(Builder::default().blocked_worker_warnings(false)));
    }
    let stderr = child_stderr("quiet");
    assert!(!stderr.contains(WARNING), "stderr:\n{stderr}");
}

/// With the threshold `Duration::MAX` the monitor does nothing: the
/// followers wait for the cruncher, nothing is counted, nothing printed.
#[test]
fn threshold_max_disables_the_monitor() {
    if child_case().is_some() {
        let seen = crunch(Builder::default().blocked_worker_threshold(Duration::MAX));
        assert!(seen.followers_ran >= seen.crunched, "{seen:?}");
        assert_eq!(seen.stats.blocked_workers, 0, "{seen:?}");
        assert_eq!(seen.stats.moved_off_blocked, 0, "{seen:?}");
        assert_eq!(seen.stats.spare_workers_started, 0, "{seen:?}");
        return;
    }
    let stderr = child_stderr("disabled");
    assert!(!stderr.contains(WARNING), "stderr:\n{stderr}");
}

/// A longer threshold is waited out: the followers run after it, yet
/// before the cruncher is done.
#[test]
fn the_threshold_is_how_long_a_worker_may_compute() {
    let threshold = Duration::from_millis(400);
    let seen = crunch(
        Builder::default()
            .blocked_worker_threshold(threshold)
            .blocked_worker_warnings(false),
    );
    assert!(seen.followers_ran >= threshold, "{seen:?}");
    assert!(seen.followers_ran < seen.crunched, "{seen:?}");
    assert_eq!(seen.stats.blocked_workers, 1, "{seen:?}");
}

/// A coroutine that computes alone, with nothing queued behind it, is left
/// alone: no incident, no spare worker.
#[test]
fn a_computing_coroutine_with_nothing_behind_it_is_no_incident() {
    let builder = Builder::default().workers(1);
    let stats = watchdog_on("alone", Duration::from_secs(20), builder, || {
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(300) {
            std::hint::black_box(());
        }
        coroutines::stats()
    });
    assert_eq!(stats.blocked_workers, 0, "{stats:?}");
    assert_eq!(stats.spare_workers_started, 0, "{stats:?}");
}

/// A worker the OS does not let run (a real-time thread holds its CPU) is
/// not blocked by its coroutine: with coroutines queued behind it and a
/// run far past the threshold, no incident is counted or printed. Needs
/// `SCHED_FIFO` (root or CAP_SYS_NICE); says so and passes without it.
#[test]
fn a_worker_waiting_for_its_cpu_is_no_incident() {
    if child_case().is_none() {
        // Its child holds CPU 0 with a real-time thread: alone, so that no
        // test of this binary that times the monitor runs meanwhile.
        let stderr = alone(|| child_stderr("preempted"));
        assert!(!stderr.contains(WARNING), "stderr:\n{stderr}");
        return;
    }
    let runtime = Builder::default().workers(1).build().unwrap();
    let stats = runtime.block_on(|| {
        pin_to_cpu_0();
        let followers: Vec<_> = (0..FOLLOWERS).map(|_| coroutines::spawn(|| ())).collect();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hog = {
            let done = done.clone();
            std::thread::spawn(move || {
                pin_to_cpu_0();
                let param = libc::sched_param { sched_priority: 1 };
                // SAFETY: sets this thread's own policy from a valid struct.
                let fifo = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0;
                let start = Instant::now();
                while fifo && start.elapsed() < Duration::from_millis(300) {
                    std::hint::spin_loop();
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                fifo
            })
        };
        // Runs without a switch until the hog is done; while it spins this
        // worker gets (almost) no CPU.
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            std::hint::spin_loop();
        }
        if !hog.join().unwrap() {
            eprintln!("no SCHED_FIFO here: the preemption was not made, nothing to see");
        }
        followers.into_iter().for_each(|f| f.join().unwrap());
        coroutines::stats()
    });
    assert_eq!(stats.blocked_workers, 0, "{stats:?}");
}

/// A coroutine that wakes another and then blocks its worker waiting for
/// it, in a call the hooks cannot see, is rescued: the woken coroutine has
/// started, sits in the blocked worker's own ready queue, and the monitor
/// moves it to a spare worker, which lets it answer.
#[test]
fn a_coroutine_woken_by_the_blocked_one_moves_too() {
    let (answered, stats) = among_others(|| {
        watchdog_on(
            "woken just before the block",
            Duration::from_secs(20),
            Builder::default().workers(1).blocked_worker_warnings(false),
            || {
                let (read, write) = raw::pipe(0);
                let (wake, woken) = std::sync::mpsc::channel::<()>();
                let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let helper = {
                    let started = started.clone();
                    coroutines::spawn(move || {
                        started.store(true, std::sync::atomic::Ordering::SeqCst);
                        woken.recv().unwrap();
                        raw::write_once(write, b"!").unwrap();
                    })
                };
                yield_until(|| started.load(std::sync::atomic::Ordering::SeqCst));
                coroutines::yield_now();
                wake.send(()).unwrap();
                let start = Instant::now();
                let mut byte = 0u8;
                // SAFETY: a one-byte read into `byte` from a pipe this test
                // owns, made past the hooks so that it blocks the worker.
                let n = unsafe {
                    kernel_syscall(
                        libc::SYS_read,
                        [read as usize, &mut byte as *mut u8 as usize, 1, 0, 0, 0],
                    )
                };
                assert_eq!((n, byte), (1, b'!'));
                let answered = start.elapsed();
                helper.join().unwrap();
                raw::close_all([read, write]);
                (answered, coroutines::stats())
            },
        )
    });
    println!("answered after {answered:?}, {stats:?}");
    assert!(answered < Duration::from_secs(5), "{answered:?} {stats:?}");
    assert!(stats.moved_off_blocked >= 1, "{stats:?}");
}

/// A coroutine that computes and wakes coroutines of its own worker all
/// the while, as the monitor takes them off it, loses none: each woken one
/// runs once, with its message.
#[test]
fn wakes_made_while_the_monitor_takes_the_queue_are_kept() {
    const WOKEN: usize = 2_000;
    let (sum, stats) = among_others(|| {
        watchdog_on(
            "waking while computing",
            Duration::from_secs(30),
            Builder::default().workers(1).blocked_worker_warnings(false),
            || {
                let mut senders = Vec::new();
                let waiters: Vec<_> = (0..WOKEN)
                    .map(|_| {
                        let (send, receive) = std::sync::mpsc::channel::<usize>();
                        senders.push(send);
                        coroutines::spawn(move || receive.recv().unwrap())
                    })
                    .collect();
                // Every waiter starts and parks.
                std::thread::sleep(Duration::from_millis(50));
                let start = Instant::now();
                for (i, send) in senders.iter().enumerate() {
                    // Computes between wakes, without a switch, so that the
                    // worker is blocked while it wakes.
                    let until = start + CRUNCH * (i as u32 + 1) / WOKEN as u32;
                    while Instant::now() < until {
                        std::hint::spin_loop();
                    }
                    send.send(i).unwrap();
                }
                let sum: usize = waiters.into_iter().map(|w| w.join().unwrap()).sum();
                (sum, coroutines::stats())
            },
        )
    });
    println!("{stats:?}");
    assert_eq!(sum, WOKEN * (WOKEN - 1) / 2);
    assert!(stats.moved_off_blocked >= 1, "{stats:?}");
}

/// A spare worker whose thread the system refused to start starts at the
/// next need: the monitor keeps what it needs for another attempt. The
/// refusal is said once on stderr, not at every look, and not at all with
/// `blocked_worker_warnings(false)`.
#[test]
fn a_spare_that_could_not_start_starts_at_the_next_need() {
    if child_case().is_none() {
        for (case, expected) in [("warnings", 1), ("quiet", 0)] {
            let output = run_child(case, rerun(case), Duration::from_secs(60));
            println!("{}", String::from_utf8_lossy(&output.stdout));
            let stderr = String::from_utf8_lossy(&output.stderr);
            let said = stderr
                .matches("could not start a spare worker thread")
                .count();
            assert_eq!(said, expected, "{case}: stderr:\n{stderr}");
        }
        return;
    }
    const BLOCK: Duration = Duration::from_millis(300);
    let warnings = child_case().as_deref() == Some("warnings");
    let runtime = Builder::default()
        .workers(1)
        .blocked_worker_warnings(warnings)
        .build()
        .unwrap();
    let (refused, started, stats) = runtime.block_on(|| {
        let follower = coroutines::spawn(Instant::now);
        let before = limit_address_space(None);
        sleep_past_hooks(BLOCK);
        let unblocked = Instant::now();
        limit_address_space(Some(before));
        let refused = follower.join().unwrap() >= unblocked;
        let follower = coroutines::spawn(Instant::now);
        sleep_past_hooks(BLOCK);
        let unblocked = Instant::now();
        let started = follower.join().unwrap() < unblocked;
        (refused, started, coroutines::stats())
    });
    println!("{stats:?}");
    assert!(
        refused,
        "with thread creation refused, the follower waits out the block"
    );
    assert!(started, "the spare started at the second block: {stats:?}");
    assert_eq!(stats.spare_workers_started, 1, "{stats:?}");
}
