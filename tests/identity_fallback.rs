//! Shared identity: when start-up verification fails (forced here with
//! `COROUTINES_THREAD_IDENTITY=force-failure`), when the variable turns it
//! off, and for a runtime built with `thread_identity(false)` next to one
//! that has it. Coroutines then share their worker's thread identity, the
//! process says why once on stderr (only for a failure), and what works
//! without identities (mpsc and park across workers, or with a plain
//! thread on one side) still works.
//!
//! The environment variable is read once per process, so each case runs
//! in a child process with the variable set (or removed) as it needs.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use coroutines::Runtime;
use support::child::{child_case, child_command, run_child};
use support::identity::{
    identity_seen_by_a_signal_handler, joined, on_runtime, os_thread, workers,
};
use support::*;

/// The variable the runtime reads.
const ENV: &str = "COROUTINES_THREAD_IDENTITY";

/// How the fallback warning starts.
const WARNING: &str = "coroutines: thread identity is off (";

/// How long a child may take.
const CHILD_LIMIT: Duration = Duration::from_secs(30);

/// Runs `test` in a child acting out `case`, with `ENV` set to `setting`
/// (or removed for `None`); returns its stderr after checking that it
/// passed.
#[track_caller]
fn child(test: &str, case: &str, setting: Option<&str>) -> String {
    let mut command: Command = child_command(test, case);
    command.env("RUST_BACKTRACE", "0");
    match setting {
        Some(value) => command.env(ENV, value),
        None => command.env_remove(ENV),
    };
    let output = run_child(case, command, CHILD_LIMIT);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        stdout.contains("CHILD OK"),
        "{case}: stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stderr
}

/// The ThreadIds of two coroutines that are alive at once on a one-worker
/// runtime built by `builder`, and what a signal handler on the worker
/// sees as the current thread.
fn two_ids(builder: coroutines::runtime::Builder) -> (ThreadId, ThreadId, ThreadId) {
    on_runtime(builder, WATCHDOG, |runtime| {
        runtime.block_on(|| {
            let other = coroutines::spawn(|| {
                coroutines::yield_now();
                thread::current().id()
            });
            let mine = thread::current().id();
            let worker = identity_seen_by_a_signal_handler().0;
            (mine, joined(other), worker)
        })
    })
}

/// Coroutines of one worker share one identity: the worker's.
#[track_caller]
fn assert_shared(what: &str, (a, b, worker): (ThreadId, ThreadId, ThreadId)) {
    assert_eq!(a, b, "{what}: two coroutines of one worker");
    assert_eq!(a, worker, "{what}: a coroutine and its worker");
}

/// Coroutines of one worker each have their own identity.
#[track_caller]
fn assert_own(what: &str, (a, b, worker): (ThreadId, ThreadId, ThreadId)) {
    assert_ne!(a, b, "{what}: two coroutines of one worker");
    assert_ne!(a, worker, "{what}: a coroutine and its worker");
}

/// Two coroutines of a two-worker runtime, one on each worker (the first
/// spins without yielding until the second has started, so the second
/// starts on the other worker), exchange `ROUNDS` messages over a
/// rendezvous channel and an unbounded one.
fn ping_pong_across_workers() {
    const ROUNDS: u32 = 1000;
    on_runtime(workers(2), CHILD_LIMIT, |runtime| {
        let started = Arc::new(AtomicBool::new(false));
        let (to_b, from_a) = mpsc::sync_channel::<u32>(0);
        let (to_a, from_b) = mpsc::channel::<u32>();
        let a = {
            let started = started.clone();
            runtime.spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(5);
                while !started.load(Ordering::SeqCst) {
                    assert!(
                        Instant::now() < deadline,
                        "B never started on the other worker"
                    );
                    std::hint::spin_loop();
                }
                let here = os_thread();
                for i in 0..ROUNDS {
                    to_b.send(i).unwrap();
                    assert_eq!(from_b.recv().unwrap(), i + 1);
                }
                here
            })
        };
        let b = runtime.spawn(move || {
            started.store(true, Ordering::SeqCst);
            let here = os_thread();
            for value in from_a {
                to_a.send(value + 1).unwrap();
            }
            here
        });
        let (a, b) = (joined(a), joined(b));
        assert_ne!(a, b, "the two coroutines ran on one worker");
    });
}

/// A coroutine and a plain thread exchange messages and unparks.
fn ping_pong_with_a_thread() {
    run(1, CHILD_LIMIT, || {
        let (to_thread, from_coroutine) = mpsc::sync_channel::<u32>(0);
        let (to_coroutine, from_thread) = mpsc::channel::<u32>();
        let me = thread::current();
        let echo = thread::spawn(move || {
            for value in from_coroutine {
                to_coroutine.send(value * 2).unwrap();
            }
            me.unpark();
        });
        for i in 0..1000 {
            to_thread.send(i).unwrap();
            assert_eq!(from_thread.recv().unwrap(), i * 2);
        }
        drop(to_thread);
        thread::park_timeout(Duration::from_secs(5));
        echo.join().unwrap();
    });
}

/// The child's side of [`forced_failure_falls_back_with_one_warning`].
fn forced_failure() {
    // Several runtimes, and the process-wide one: the warning is said once.
    assert_shared("the default builder", two_ids(workers(1)));
    assert_shared(
        "thread_identity(true) asked for",
        two_ids(workers(1).thread_identity(true)),
    );
    let default = coroutines::spawn(|| thread::current().id()).join().unwrap();
    assert_ne!(
        default,
        thread::current().id(),
        "the process-wide runtime's worker"
    );
    ping_pong_across_workers();
    ping_pong_with_a_thread();
    // Writes to stdout from a coroutine still work (blocking the worker).
    run(1, WATCHDOG, || println!("printed from a coroutine"));
    println!("CHILD OK");
}

#[test]
fn forced_failure_falls_back_with_one_warning() {
    match child_case().as_deref() {
        Some("forced") => return forced_failure(),
        Some(_) => return,
        None => {}
    }
    let stderr = child(
        "forced_failure_falls_back_with_one_warning",
        "forced",
        Some("force-failure"),
    );
    let warnings: Vec<_> = stderr.lines().filter(|l| l.starts_with(WARNING)).collect();
    assert_eq!(warnings.len(), 1, "the warning, once:\n{stderr}");
    assert!(
        warnings[0].contains("COROUTINES_THREAD_IDENTITY=force-failure"),
        "the warning says why: {}",
        warnings[0]
    );
    assert_eq!(
        stderr.matches("thread identity is off").count(),
        1,
        "nothing else repeats it:\n{stderr}"
    );
}

/// The child's side of [`turned_off_by_the_environment_quietly`].
fn turned_off() {
    assert_shared("COROUTINES_THREAD_IDENTITY=off", two_ids(workers(1)));
    ping_pong_across_workers();
    ping_pong_with_a_thread();
    println!("CHILD OK");
}

#[test]
fn turned_off_by_the_environment_quietly() {
    match child_case().as_deref() {
        Some("off") => return turned_off(),
        Some(_) => return,
        None => {}
    }
    for setting in ["off", "0"] {
        let stderr = child(
            "turned_off_by_the_environment_quietly",
            "off",
            Some(setting),
        );
        assert!(
            !stderr.contains("thread identity"),
            "{ENV}={setting} is quiet, but stderr says:\n{stderr}"
        );
    }
}

/// The child's side of [`one_runtime_without_identity_next_to_one_with_it`].
fn mixed_runtimes() {
    // Both at once: each keeps its own mode while the other runs.
    let off = thread::spawn(|| two_ids(workers(1).thread_identity(false)));
    let on = thread::spawn(|| two_ids(workers(1)));
    assert_shared("thread_identity(false)", off.join().unwrap());
    assert_own("the default, next to a runtime without", on.join().unwrap());
    // A runtime without identities after one with them, and the reverse.
    assert_shared(
        "thread_identity(false), again",
        two_ids(workers(1).thread_identity(false)),
    );
    assert_own(
        "thread_identity(true)",
        two_ids(workers(1).thread_identity(true)),
    );

    // A channel between a coroutine of each, both parked in turn.
    let without = Runtime::builder()
        .workers(1)
        .thread_identity(false)
        .build()
        .unwrap();
    let with = Runtime::builder().workers(1).build().unwrap();
    let (to_with, from_without) = mpsc::sync_channel::<u32>(0);
    let (to_without, from_with) = mpsc::sync_channel::<u32>(0);
    let echo = with.spawn(move || {
        for value in from_without {
            to_without.send(value + 1).unwrap();
        }
    });
    let sum = without
        .spawn(move || {
            (0..500)
                .map(|i| {
                    to_with.send(i).unwrap();
                    from_with.recv().unwrap()
                })
                .sum::<u32>()
        })
        .join()
        .unwrap();
    echo.join().unwrap();
    assert_eq!(sum, (1..=500).sum::<u32>());
    println!("CHILD OK");
}

#[test]
fn one_runtime_without_identity_next_to_one_with_it() {
    match child_case().as_deref() {
        Some("mixed") => return mixed_runtimes(),
        Some(_) => return,
        None => {}
    }
    // The variable removed, so that identity is on by default (as on this
    // machine's verified glibc).
    let stderr = child(
        "one_runtime_without_identity_next_to_one_with_it",
        "mixed",
        None,
    );
    assert!(
        !stderr.contains("thread identity is off"),
        "verification failed here, so the test cannot compare:\n{stderr}"
    );
}

/// Whether this process runs with thread identity, as the environment
/// decides (the attribute tests below run in the test process itself).
fn identity_expected() -> bool {
    !matches!(
        std::env::var(ENV).as_deref(),
        Ok("off" | "0" | "force-failure")
    )
}

#[coroutines::test(workers = 1, thread_identity = false)]
fn the_attribute_turns_identity_off() {
    let other = coroutines::spawn(|| thread::current().id());
    assert_eq!(
        thread::current().id(),
        joined(other),
        "thread_identity = false: coroutines share the worker's ThreadId"
    );
}

#[coroutines::test(workers = 1)]
fn the_attribute_keeps_identity_on_by_default() {
    let other = coroutines::spawn(|| thread::current().id());
    let distinct = thread::current().id() != joined(other);
    assert_eq!(
        distinct,
        identity_expected(),
        "{ENV}={:?}",
        std::env::var(ENV)
    );
}
