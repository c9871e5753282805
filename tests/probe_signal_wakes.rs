//! Probes: a signal handler that wakes a coroutine (`Thread::unpark`,
//! `Condvar::notify_one`, a raw `FUTEX_WAKE`) while the signal interrupted
//! the worker thread inside the runtime's own wake machinery.
//!
//! Such a wake goes through the futex hook to the table (`futex/wake.rs`:
//! the bucket's spin lock) and the scheduler (`scheduler::schedule`: on the
//! worker's own thread, `Local::push` into the `ready` `RefCell`, or into
//! the crossbeam `Worker` queue with work stealing). The code the signal
//! interrupted may be in the middle of exactly that: registering a park
//! under a bucket lock, waking under one, pushing to the ready queue. The
//! hazards probed:
//! - (a) the handler's `Local::push` finds `ready` already borrowed: a
//!   panic in the handler, which aborts (it cannot unwind out of the
//!   `extern "C"` trampoline);
//! - (b) the handler's wake spins on a bucket lock that the interrupted
//!   frame holds: the worker deadlocks inside the handler;
//! - (c) with work stealing, the handler's push re-enters the worker's
//!   crossbeam `Worker::push` (not re-entrant): a lost or duplicated task.
//!
//! The shape is differential: the same storm runs on plain threads (the
//! reference, which any program survives: the kernel's futexes are
//! re-entrant) and on a runtime, each side in a child process so that an
//! abort or a hang is a result, not the end of the test binary. A plain
//! thread signals the threads the case runs on (in a coroutine: the one
//! worker) with SIGUSR1 thousands of times, one signal at a time, while
//! their parties keep parking and waking each other through std's
//! `Mutex`/`Condvar`, `mpsc`, spawn/join and yields; each handler wakes a
//! waiter party, which must see every signal. Signals come one at a time
//! (the next once the last handler returned, after a small varying pause)
//! so that they land all over the worker's cycle.
//!
//! All three are fixed: a handler's wake goes to the worker's mailbox
//! (`scheduler/mailbox.rs`), and one that finds its bucket's lock taken
//! leaves the wake to the holder (`futex/bucket.rs`).

mod support;

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use coroutines::Runtime;
use support::child::{child_case, rerun, wait_bounded};
use support::differential::Side;
use support::futex_table::{bucket_mates, private_wait, private_wake};
use support::identity::os_thread;

/// Signals sent at most, one at a time.
const SIGNALS: u64 = 40_000;
/// How long the storm may last at most; it usually ends by count.
const STORM: Duration = Duration::from_secs(8);
/// A handler that has not returned this long after its signal was sent is
/// stuck (or its signal was never delivered).
const STALL: Duration = Duration::from_secs(2);
/// The coroutine side's watchdog: a hang fails within it.
const WATCHDOG: Duration = Duration::from_secs(25);
/// How long a child may take in all.
const CHILD_LIMIT: Duration = Duration::from_secs(60);
/// Marks the line on which a child prints its outcome.
const OUTCOME_MARK: &str = "PROBE OUTCOME: ";

/// What the handler does to the waiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    /// `WAITER.unpark()`: the waiter `thread::park`s.
    Unpark = 0,
    /// `CONDVAR.notify_one()`: the waiter waits on it (with a short
    /// timeout: a handler cannot take the mutex, so a notification may
    /// fall between the waiter's check and its wait, on threads too).
    Notify = 1,
    /// A raw `FUTEX_WAKE` of `TARGET` after bumping it; the waiter
    /// `FUTEX_WAIT`s on it. Churn parties ping-pong on words of the same
    /// futex-table bucket, so that its lock is often held.
    Futex = 2,
}

static KIND: AtomicU8 = AtomicU8::new(0);
/// Handlers that started, and that returned.
static ENTERED: AtomicU64 = AtomicU64::new(0);
static LEFT: AtomicU64 = AtomicU64::new(0);
/// The waiter's thread (in a coroutine: its own `Thread`).
static WAITER: OnceLock<Thread> = OnceLock::new();
static CONDVAR: Condvar = Condvar::new();
static CONDVAR_MUTEX: Mutex<()> = Mutex::new(());
/// Words for [`Kind::Futex`]: the target is `WORDS[0]`; churn uses others
/// of its bucket.
static WORDS: [AtomicU32; 8192] = [const { AtomicU32::new(0) }; 8192];
/// The signals the waiter has seen, stored right before it waits again:
/// the storm sends the next signal once the waiter is (about to be)
/// parked, so that the handler's wake finds a parked waiter.
static SEEN: AtomicU64 = AtomicU64::new(0);
/// The threads the parties run on, to be signalled.
static TIDS: Mutex<Vec<libc::pid_t>> = Mutex::new(Vec::new());
/// Churn rounds made.
static CHURN: AtomicU64 = AtomicU64::new(0);
/// Churn rounds by kind: baton, mpsc, spawn/join, yield, futex.
static CHURN_BY: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

fn churned(kind: usize) -> u64 {
    CHURN_BY[kind].fetch_add(1, Ordering::Relaxed);
    CHURN.fetch_add(1, Ordering::Relaxed)
}

fn churn_by() -> Vec<u64> {
    CHURN_BY.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

/// Set when the storm is over: the churn parties finish.
static STOP: AtomicBool = AtomicBool::new(false);

fn target() -> &'static AtomicU32 {
    &WORDS[0]
}

/// The user's handler: wakes the waiter as [`KIND`] says. Only atomics and
/// futex wakes, as a handler that wakes a thread would do.
extern "C" fn on_signal(_: libc::c_int) {
    ENTERED.fetch_add(1, Ordering::SeqCst);
    match KIND.load(Ordering::SeqCst) {
        0 => {
            if let Some(waiter) = WAITER.get() {
                waiter.unpark();
            }
        }
        1 => CONDVAR.notify_one(),
        _ => {
            target().fetch_add(1, Ordering::SeqCst);
            private_wake(target(), 1);
        }
    }
    LEFT.fetch_add(1, Ordering::SeqCst);
}

/// What one side of a probe saw, compared between the sides.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Every signal sent was handled, each handler returned.
    every_handler_returned: bool,
    /// The waiter saw the last signal and finished.
    waiter_saw_all: bool,
    /// The churn parties made progress and finished.
    churn_finished: bool,
}

/// Registers the calling thread (a coroutine's: its worker) as one to
/// signal.
fn register_tid() {
    let tid = os_thread();
    let mut tids = TIDS.lock().unwrap();
    if !tids.contains(&tid) {
        tids.push(tid);
    }
}

/// The waiter: waits, as [`KIND`] says, until it has seen the storm's
/// last signal (`last` is set once the storm is over). Returns how many
/// times it woke.
fn waiter(kind: Kind, last: Arc<AtomicU64>) -> u64 {
    register_tid();
    let _ = WAITER.set(thread::current());
    let done = || {
        let last = last.load(Ordering::SeqCst);
        last != u64::MAX && ENTERED.load(Ordering::SeqCst) >= last
    };
    let mut wakes = 0;
    match kind {
        Kind::Unpark => {
            while !done() {
                SEEN.store(ENTERED.load(Ordering::SeqCst), Ordering::SeqCst);
                // Unbounded: the storm's last unpark must end it.
                thread::park();
                wakes += 1;
            }
        }
        Kind::Notify => {
            let mut guard = CONDVAR_MUTEX.lock().unwrap();
            while !done() {
                SEEN.store(ENTERED.load(Ordering::SeqCst), Ordering::SeqCst);
                guard = CONDVAR
                    .wait_timeout(guard, Duration::from_millis(5))
                    .unwrap()
                    .0;
                wakes += 1;
            }
        }
        Kind::Futex => loop {
            let seen = target().load(Ordering::SeqCst);
            if done() {
                break;
            }
            SEEN.store(ENTERED.load(Ordering::SeqCst), Ordering::SeqCst);
            // Unbounded: the handler bumps the word before it wakes.
            private_wait(target(), seen, None);
            wakes += 1;
        },
    }
    wakes
}

/// The churn: parties that park and wake each other as fast as they can,
/// until [`STOP`]. Returns their handles.
fn churn(side: Side, kind: Kind) -> Vec<support::differential::Party<()>> {
    let mut parties = Vec::new();
    // A Mutex + Condvar baton between two parties.
    let baton = Arc::new((Mutex::new(0u64), Condvar::new()));
    for me in 0..2u64 {
        let baton = baton.clone();
        parties.push(side.spawn(move || {
            register_tid();
            let (lock, turn) = &*baton;
            let mut value = lock.lock().unwrap();
            while !STOP.load(Ordering::SeqCst) {
                if *value % 2 == me {
                    *value += 1;
                    churned(0);
                    turn.notify_all();
                } else {
                    value = turn
                        .wait_timeout(value, Duration::from_millis(1))
                        .unwrap()
                        .0;
                }
            }
        }));
    }
    // An mpsc ping-pong.
    let (ping, pinged) = mpsc::channel::<u64>();
    let (pong, ponged) = mpsc::channel::<u64>();
    parties.push(side.spawn(move || {
        register_tid();
        let mut n = 0;
        while !STOP.load(Ordering::SeqCst) {
            ping.send(n).unwrap();
            n = ponged.recv().unwrap() + 1;
            churned(1);
        }
    }));
    parties.push(side.spawn(move || {
        register_tid();
        while let Ok(n) = pinged.recv() {
            if pong.send(n).is_err() {
                break;
            }
        }
    }));
    // Spawn and join.
    parties.push(side.spawn(move || {
        register_tid();
        while !STOP.load(Ordering::SeqCst) {
            side.spawn(|| churned(2)).join();
        }
    }));
    // Yields.
    parties.push(side.spawn(move || {
        register_tid();
        while !STOP.load(Ordering::SeqCst) {
            thread::yield_now();
            churned(3);
        }
    }));
    if kind == Kind::Futex {
        // Two futex ping-pong pairs on words of the target's bucket: its
        // lock is taken by every wait's registration and every wake.
        for word in bucket_mates(&WORDS, 2) {
            for me in 0..2u32 {
                parties.push(side.spawn(move || {
                    register_tid();
                    while !STOP.load(Ordering::SeqCst) {
                        let v = word.load(Ordering::SeqCst);
                        if v % 2 == me {
                            word.store(v + 1, Ordering::SeqCst);
                            private_wake(word, 1);
                            churned(4);
                        } else {
                            private_wait(word, v, Some(Duration::from_millis(1)));
                        }
                    }
                    // Let the other one see the stop.
                    word.fetch_add(2, Ordering::SeqCst);
                    private_wake(word, 1);
                }));
            }
        }
    }
    parties
}

/// What the kernel says a thread is doing: its state and system call.
fn thread_state(tid: libc::pid_t) -> String {
    let read = |what: &str| {
        std::fs::read_to_string(format!("/proc/self/task/{tid}/{what}")).unwrap_or_default()
    };
    let stat = read("stat");
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .unwrap_or("?")
        .to_owned();
    let syscall = read("syscall");
    let nr = syscall.split(' ').next().unwrap_or("?").trim().to_owned();
    format!("tid {tid}: state {state}, syscall {nr}")
}

/// The storm: signals the registered threads, round robin, one signal at
/// a time. Returns how many were sent, and a description of a stall.
fn storm() -> (u64, Option<String>) {
    let start = Instant::now();
    let pid = std::process::id() as libc::pid_t;
    let mut sent = 0u64;
    while sent < SIGNALS && start.elapsed() < STORM {
        let tids = TIDS.lock().unwrap().clone();
        let tid = tids[sent as usize % tids.len()];
        // SAFETY: signals a thread of this process with a signal whose
        // handler is installed.
        let ret = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGUSR1) };
        assert_eq!(ret, 0, "tgkill");
        sent += 1;
        let asked = Instant::now();
        while LEFT.load(Ordering::SeqCst) < sent {
            if asked.elapsed() > STALL {
                let states: Vec<_> = tids.iter().map(|&t| thread_state(t)).collect();
                return (
                    sent,
                    Some(format!(
                        "signal {sent} (to tid {tid}) not handled within {STALL:?}: \
                         {} handlers entered, {} returned; {}",
                        ENTERED.load(Ordering::SeqCst),
                        LEFT.load(Ordering::SeqCst),
                        states.join("; ")
                    )),
                );
            }
            thread::yield_now();
        }
        // The waiter has seen this signal and waits again (the Condvar
        // waiter may miss a notification and see it at its timeout).
        while SEEN.load(Ordering::SeqCst) < sent {
            if asked.elapsed() > STALL {
                return (
                    sent,
                    Some(format!(
                        "the waiter did not see signal {sent} within {STALL:?} (it saw {})",
                        SEEN.load(Ordering::SeqCst)
                    )),
                );
            }
            thread::yield_now();
        }
        // A varying pause, so that signals land all over the worker's
        // cycle.
        let pause = Duration::from_micros((sent.wrapping_mul(2_654_435_761) >> 7) % 40);
        let paused = Instant::now();
        while paused.elapsed() < pause {
            std::hint::spin_loop();
        }
    }
    (sent, None)
}

/// One side of a probe: the waiter and the churn as `side` says, the storm
/// from a plain thread.
fn case(side: Side, kind: Kind) -> Outcome {
    KIND.store(kind as u8, Ordering::SeqCst);
    support::install_handler(libc::SIGUSR1, on_signal);
    let last = Arc::new(AtomicU64::new(u64::MAX));
    let waiter = {
        let last = last.clone();
        side.spawn(move || waiter(kind, last))
    };
    let parties = churn(side, kind);
    // Every party has registered its thread (and the waiter its handle).
    let expected = match side {
        Side::Thread => parties.len() + 1,
        Side::Coroutine => 1,
    };
    let ready = Instant::now();
    while (TIDS.lock().unwrap().len() < expected || WAITER.get().is_none())
        && ready.elapsed() < STALL
    {
        thread::sleep(Duration::from_millis(1));
    }
    println!("\nINFO churn before the storm: {:?}", churn_by());
    let storm_start = Instant::now();
    let (sent, stall) = thread::spawn(|| {
        let (sent, stall) = storm();
        if let Some(stall) = &stall {
            // From the storm's thread: a worker stuck in a handler would
            // keep the coroutine that joins it from saying so.
            println!("\nINFO stall: {stall}");
        }
        (sent, stall)
    })
    .join()
    .unwrap();
    let storm_time = storm_start.elapsed();
    println!("\nINFO churn after the storm: {:?}", churn_by());
    last.store(sent, Ordering::SeqCst);
    // The waiter may have seen the last signal before `last` was set:
    // one more wake, from here, ends its wait.
    let every_handler_returned = stall.is_none()
        && ENTERED.load(Ordering::SeqCst) == sent
        && LEFT.load(Ordering::SeqCst) == sent;
    if stall.is_none() {
        match kind {
            Kind::Unpark => WAITER.get().unwrap().unpark(),
            Kind::Notify => CONDVAR.notify_all(),
            Kind::Futex => {
                target().fetch_add(1, Ordering::SeqCst);
                private_wake(target(), 1);
            }
        }
    }
    STOP.store(true, Ordering::SeqCst);
    let churn_rounds = CHURN.load(Ordering::Relaxed);
    for party in parties {
        party.join();
    }
    println!("\nINFO churn parties joined; joining the waiter");
    let wakes = waiter.join();
    println!(
        "\nINFO {side:?} {kind:?}: {sent} signals sent in {storm_time:?}, {} handled, waiter \
         woke {wakes} times, {churn_rounds} churn rounds",
        LEFT.load(Ordering::SeqCst)
    );
    Outcome {
        every_handler_returned,
        waiter_saw_all: true,
        churn_finished: churn_rounds > 0,
    }
}

/// Runs the calling test's probe: in a child, one side (as `CHILD_CASE`
/// says); in the parent, both sides in children, and compares them.
fn probe(kind: Kind, builder: fn() -> coroutines::runtime::Builder) {
    if let Some(side) = child_case() {
        let outcome = match side.as_str() {
            "thread" => case(Side::Thread, kind),
            _ => {
                let what = thread::current().name().unwrap_or("probe").to_owned();
                support::watchdog_on(&what, WATCHDOG, builder(), move || {
                    case(Side::Coroutine, kind)
                })
            }
        };
        println!("\n{OUTCOME_MARK}{outcome:?}");
        return;
    }
    let reference = run_side("thread");
    let expected = format!(
        "{:?}",
        Outcome {
            every_handler_returned: true,
            waiter_saw_all: true,
            churn_finished: true,
        }
    );
    assert_eq!(reference, expected, "the plain-thread reference");
    let coroutine = run_side("coroutine");
    assert_eq!(
        coroutine, reference,
        "the coroutine side (left) differs from the plain threads (right)"
    );
}

/// Runs one side in a child process; its outcome, or how it ended.
fn run_side(side: &str) -> String {
    let mut command = rerun(side);
    command.env("RUST_BACKTRACE", "0");
    let started = Instant::now();
    let (output, ended) = wait_bounded(command.spawn().unwrap(), CHILD_LIMIT);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    for line in stdout.lines().filter(|line| line.starts_with("INFO")) {
        eprintln!("{side}: {line}");
    }
    if let Some(outcome) = stdout
        .lines()
        .find_map(|line| line.strip_prefix(OUTCOME_MARK))
    {
        return outcome.to_owned();
    }
    let how = match (ended, output.status.signal()) {
        (false, _) => format!("hung (killed after {:?})", started.elapsed()),
        (true, Some(signal)) => format!("killed by signal {signal}"),
        (true, None) => format!("failed ({})", output.status),
    };
    format!("{side} side {how}; {}", diagnosis(&stderr))
}

/// The panics in a child's stderr, and the frames a signal interrupted
/// (those right below the signal frame, `<unknown>` after the trampoline).
fn diagnosis(stderr: &str) -> String {
    let lines: Vec<_> = stderr.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.contains("panicked at") {
            found.push(format!("{line} {}", lines.get(i + 1).unwrap_or(&"")));
        }
    }
    let frames: Vec<_> = lines
        .iter()
        .filter_map(|line| line.split_once(" - ").map(|(_, name)| name.trim()))
        .collect();
    if let Some(at) = frames.iter().position(|f| f.contains("signal::trampoline")) {
        let interrupted: Vec<_> = frames[at + 1..]
            .iter()
            .skip_while(|f| f.contains("trampoline") || f.contains("<unknown>"))
            .take(4)
            .collect();
        found.push(format!("the signal interrupted: {interrupted:?}"));
        let handler: Vec<_> = frames[..at]
            .iter()
            .filter(|f| f.contains("coroutines_runtime") || f.contains("coroutines_futex"))
            .take(6)
            .collect();
        found.push(format!("in the handler: {handler:?}"));
    }
    if found.is_empty() {
        let tail: Vec<_> = lines.iter().rev().take(10).rev().copied().collect();
        found.push(tail.join("\n"));
    }
    found.join("\n")
}

fn one_worker() -> coroutines::runtime::Builder {
    Runtime::builder().workers(1)
}

fn one_worker_stealing() -> coroutines::runtime::Builder {
    Runtime::builder().workers(1).work_stealing(true)
}

/// Hazards (a) and (b): the handler unparks a coroutine parked on the one
/// worker it interrupted (ready `RefCell`; the bucket lock of the waiter's
/// parker, taken by its own registration).
#[test]
fn unpark_in_a_handler_interrupting_the_worker() {
    probe(Kind::Unpark, one_worker);
}

/// Hazards (a) and (b), through `Condvar::notify_one`.
#[test]
fn condvar_notify_in_a_handler_interrupting_the_worker() {
    probe(Kind::Notify, one_worker);
}

/// Hazard (b) above all: a raw futex wake in the handler, while churn
/// keeps the target word's bucket lock busy (registrations and wakes of
/// other words in the same bucket). (a) may show first.
#[test]
fn futex_wake_in_a_handler_while_its_bucket_is_busy() {
    probe(Kind::Futex, one_worker);
}

/// Hazard (c): with work stealing, the handler's `Local::push` goes to
/// the crossbeam `Worker` queue that the interrupted code may be pushing
/// to (no `RefCell` involved). (b) may show too.
#[test]
fn unpark_in_a_handler_with_work_stealing() {
    probe(Kind::Unpark, one_worker_stealing);
}

/// Hazard (b) without (a): as the futex probe, with work stealing.
#[test]
fn futex_wake_in_a_handler_while_its_bucket_is_busy_with_work_stealing() {
    probe(Kind::Futex, one_worker_stealing);
}
