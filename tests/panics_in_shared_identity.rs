//! Panics in coroutines that share their worker's thread identity, whose
//! panic count is the worker's: the cooperative budget's yield (after 128
//! hooked calls without a switch) is skipped while one unwinds, so is a
//! sleep's park, and a descriptor wait during unwinding still parks, so
//! that a peer on the same worker can answer it.

mod support;

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coroutines::runtime::Builder;
use support::child::{child_case, rerun, wait_bounded};
use support::watchdog_on;

/// One worker, coroutines sharing the worker's thread identity, no monitor.
fn shared_identity() -> Builder {
    Builder::default()
        .workers(1)
        .thread_identity(false)
        .blocked_worker_threshold(Duration::MAX)
}

/// Writes one byte to /dev/null `times` times: hooked calls that never
/// block (each goes through `blocking_io`, so each spends budget).
fn cheap_calls(times: usize) {
    let mut null = File::create("/dev/null").unwrap();
    for _ in 0..times {
        null.write_all(b"x").unwrap();
    }
}

/// A value whose drop makes hooked calls, as a `BufWriter<File>` or a
/// logger flushing in its destructor does.
#[derive(Default)]
struct FlushOnDrop;

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        cheap_calls(300);
    }
}

/// What the bystander saw while the panicking coroutine unwound.
#[derive(Debug, PartialEq)]
struct Seen {
    /// `thread::panicking()` was true in the bystander, which never
    /// panicked.
    bystander_saw_panicking: bool,
    /// The mutex the bystander locked and unlocked (and never panicked
    /// with) is poisoned.
    poisoned: bool,
}

/// A value whose drop sleeps, as a destructor that waits for a flush to
/// settle or backs off before a retry does.
#[derive(Default)]
struct SleepOnDrop;

impl Drop for SleepOnDrop {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// A party that panics while holding `D`, whose drop runs as it unwinds.
fn panics_holding<D: Default>() {
    let _held = D::default();
    panic!("expected panic (probe)");
}

/// A bystander holds a std mutex across yields; another party, `panicker`,
/// panics, and unwinding runs a destructor that makes hooked calls.
fn unwinding_beside_a_lock_holder(in_coroutines: bool, panicker: fn()) -> Seen {
    let lock = Arc::new(Mutex::new(0u32));
    let stop = Arc::new(AtomicBool::new(false));
    let saw = Arc::new(AtomicBool::new(false));
    let bystander_body = {
        let (lock, stop, saw) = (lock.clone(), stop.clone(), saw.clone());
        move || {
            while !stop.load(Ordering::SeqCst) {
                let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
                if std::thread::panicking() {
                    saw.store(true, Ordering::SeqCst);
                }
                match in_coroutines {
                    true => coroutines::yield_now(),
                    false => std::thread::yield_now(),
                }
                if std::thread::panicking() {
                    saw.store(true, Ordering::SeqCst);
                }
                drop(guard);
            }
        }
    };
    if in_coroutines {
        let bystander = coroutines::spawn(bystander_body);
        coroutines::yield_now();
        let panicker = coroutines::spawn(panicker);
        assert!(panicker.join().is_err());
        stop.store(true, Ordering::SeqCst);
        bystander.join().unwrap();
    } else {
        let bystander = std::thread::spawn(bystander_body);
        let panicker = std::thread::spawn(panicker);
        assert!(panicker.join().is_err());
        stop.store(true, Ordering::SeqCst);
        bystander.join().unwrap();
    }
    Seen {
        bystander_saw_panicking: saw.load(Ordering::SeqCst),
        poisoned: lock.is_poisoned(),
    }
}

/// With a shared identity the panic count is the worker's: a yield inside
/// an unwinding destructor would let the worker's other coroutines run with
/// `thread::panicking()` true, poisoning a mutex they release.
#[test]
fn a_panic_unwinding_through_hooked_calls_stays_its_own() {
    compare_unwinding_beside_a_lock_holder(panics_holding::<FlushOnDrop>);
}

/// As above, for a destructor that sleeps: a sleep ends by itself, so
/// while its coroutine unwinds it blocks the worker, as a thread's would
/// block the thread, rather than let the bystander run.
#[test]
fn a_panic_unwinding_through_a_sleep_stays_its_own() {
    compare_unwinding_beside_a_lock_holder(panics_holding::<SleepOnDrop>);
}

fn compare_unwinding_beside_a_lock_holder(panicker: fn()) {
    let thread = unwinding_beside_a_lock_holder(false, panicker);
    let coroutine = watchdog_on(
        "unwinding beside a lock holder",
        Duration::from_secs(20),
        shared_identity(),
        move || unwinding_beside_a_lock_holder(true, panicker),
    );
    assert_eq!(
        thread,
        Seen {
            bystander_saw_panicking: false,
            poisoned: false
        }
    );
    assert_eq!(
        coroutine, thread,
        "coroutine (left) differs from threads (right)"
    );
}

/// A panic hook that logs to a file (hooked writes) in a coroutine sharing
/// its worker's identity, and a second coroutine that panics meanwhile.
#[test]
fn a_panic_hook_that_logs_to_a_file_survives_a_second_panic() {
    if child_case().as_deref() == Some("hook") {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // A logging hook: a few lines to a file, each a write.
            cheap_calls(40);
            default(info);
        }));
        let survived = watchdog_on(
            "logging hook",
            Duration::from_secs(10),
            shared_identity(),
            || {
                let first = coroutines::spawn(|| {
                    // Well into its budget, as a busy coroutine is.
                    cheap_calls(100);
                    panic!("first expected panic");
                });
                let second = coroutines::spawn(|| panic!("second expected panic"));
                (first.join().is_err(), second.join().is_err())
            },
        );
        println!("\nSURVIVED {survived:?}");
        return;
    }
    let (output, ended) = wait_bounded(rerun("hook").spawn().unwrap(), Duration::from_secs(20));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        ended && stdout.contains("SURVIVED (true, true)"),
        "the child did not survive two panics in two coroutines (status {:?}, ended {ended});\nstderr:\n{stderr}",
        output.status
    );
}

/// No user hook at all: with `RUST_BACKTRACE=1` the runtime's own panic
/// report (coroutine/panic_report.rs) captures and symbolizes a backtrace,
/// which reads files (/proc/self/maps, the binary) through hooked calls,
/// under std's backtrace lock, while the panic count is raised.
#[test]
fn a_backtrace_symbolized_near_the_budget_survives_a_second_panic() {
    if child_case().as_deref() == Some("backtrace") {
        let survived = watchdog_on(
            "backtrace",
            Duration::from_secs(20),
            shared_identity(),
            || {
                // The first makes 127 hooked calls, then panics: the
                // first hooked read of the symbolization spends its last
                // unit of budget. The second panics meanwhile.
                let first = coroutines::spawn(|| {
                    cheap_calls(127);
                    panic!("first expected panic");
                });
                let second = coroutines::spawn(|| panic!("second expected panic"));
                let results = [first.join().is_err(), second.join().is_err()];
                results.iter().all(|&e| e)
            },
        );
        println!("\nSURVIVED {survived:?}");
        return;
    }
    let mut command = rerun("backtrace");
    command.env("RUST_BACKTRACE", "1");
    let (output, ended) = wait_bounded(command.spawn().unwrap(), Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: String = stderr.lines().rev().take(15).collect::<Vec<_>>().join("\n");
    assert!(
        ended && stdout.contains("SURVIVED true"),
        "the child did not survive (status {:?}, ended {ended});\nstderr tail (reversed):\n{tail}",
        output.status
    );
}

thread_local! {
    static FLUSHED_AT_EXIT: std::cell::RefCell<Option<FlushOnDrop>> =
        const { std::cell::RefCell::new(None) };
}

/// With their own identities, coroutines whose thread-local destructors
/// (run at the coroutine's end) make hundreds of hooked calls yield inside
/// them; the worker's other coroutines run meanwhile and every one ends.
#[test]
fn budget_yields_inside_thread_local_destructors_let_every_coroutine_end() {
    let ran = watchdog_on(
        "tls destructors",
        Duration::from_secs(20),
        Builder::default()
            .workers(1)
            .blocked_worker_threshold(Duration::MAX),
        || {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    coroutines::spawn(|| {
                        FLUSHED_AT_EXIT.with(|slot| *slot.borrow_mut() = Some(FlushOnDrop));
                        cheap_calls(50);
                    })
                })
                .collect();
            let bystander = coroutines::spawn(|| 1);
            let ended = handles.into_iter().filter_map(|h| h.join().ok()).count();
            (ended, bystander.join().unwrap())
        },
    );
    assert_eq!(ran, (8, 1));
}

/// A destructor that, while its coroutine unwinds, reads what a peer
/// coroutine writes: the peer was spawned on the same worker and sleeps
/// first, so the read must park (blocking the worker would hang for good,
/// as started coroutines of a shared identity cannot move).
#[test]
fn a_destructor_reading_from_a_peer_on_its_worker_finishes_while_unwinding() {
    struct ReadOnDrop(UnixStream);

    impl Drop for ReadOnDrop {
        fn drop(&mut self) {
            let mut byte = [0u8; 1];
            self.0.read_exact(&mut byte).unwrap();
        }
    }

    let unwound = watchdog_on(
        "read in a destructor while unwinding",
        Duration::from_secs(20),
        Builder::default().workers(2).thread_identity(false),
        || {
            let panicker = coroutines::spawn(|| {
                let (ours, mut theirs) = UnixStream::pair().unwrap();
                let _reads = ReadOnDrop(ours);
                coroutines::spawn(move || {
                    std::thread::sleep(Duration::from_millis(50));
                    theirs.write_all(b"z").unwrap();
                });
                coroutines::yield_now();
                panic!("expected panic");
            });
            panicker.join().is_err()
        },
    );
    assert!(unwound);
}
