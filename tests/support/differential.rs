//! The differential shape: the same case runs (a) on a plain OS thread,
//! where the hooks pass through and the result is what libc gives, and (b)
//! as the root coroutine of a fresh one-worker runtime; the two results,
//! as plain data (byte counts, bytes, error numbers, coarse timings), must
//! be equal.
//!
//! A case is a closure of a [`Side`], which says where it runs and spawns
//! its helper parties as the same kind (threads beside a thread, coroutines
//! beside a coroutine); peers that act later are plain threads on both
//! sides (`support::after`).
//!
//! A hang of the coroutine side is a failure within [`LIMIT`], by the
//! watchdog; a crash of either side (a hook that dereferences a bad user
//! pointer) is a result of its own with [`isolated`], which runs each side
//! in a child process.

use std::fmt::Debug;
use std::io;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use super::child::wait_bounded;
use super::{alone, watchdog_on, FD_NUMBERS, PROMPT};

/// How long either side of a case may take: every case here is designed to
/// finish well within a second, and a side that hangs fails the test this
/// long after it started.
pub const LIMIT: Duration = Duration::from_secs(5);

/// Where a case runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// A plain OS thread: the reference.
    Thread,
    /// The root coroutine of a one-worker runtime.
    Coroutine,
}

impl Side {
    /// Runs `f` beside the case, as the case runs: a thread on the thread
    /// side, a coroutine of the same runtime on the coroutine side.
    pub fn spawn<T: Send + 'static>(self, f: impl FnOnce() -> T + Send + 'static) -> Party<T> {
        match self {
            Side::Thread => Party::Thread(thread::spawn(f)),
            Side::Coroutine => Party::Coroutine(coroutines::spawn(f)),
        }
    }
}

/// A helper party of a case; see [`Side::spawn`].
pub enum Party<T> {
    Thread(thread::JoinHandle<T>),
    Coroutine(coroutines::JoinHandle<T>),
}

impl<T> Party<T> {
    /// Waits for the party (parking, in a coroutine) and returns its value;
    /// a panic of the party is resumed here.
    pub fn join(self) -> T {
        let result = match self {
            Party::Thread(handle) => handle.join(),
            Party::Coroutine(handle) => handle.join(),
        };
        result.unwrap_or_else(|payload| std::panic::resume_unwind(payload))
    }

    /// Whether the party has finished.
    pub fn is_finished(&self) -> bool {
        match self {
            Party::Thread(handle) => handle.is_finished(),
            Party::Coroutine(handle) => handle.is_finished(),
        }
    }
}

/// Runs `case` on a plain thread, then in a coroutine on one worker, and
/// asserts that both give the same value; returns it (the reference), so
/// that the caller can also check that the reference is what the kernel is
/// known to give. Other tests of the binary may run meanwhile.
#[track_caller]
pub fn differential<T, F>(what: &str, case: F) -> T
where
    T: PartialEq + Debug + Send + 'static,
    F: Fn(Side) -> T + Send + Sync + 'static,
{
    differential_on(1, what, case)
}

/// As [`differential`], the coroutine side on a runtime of `workers`
/// workers: for cases whose coroutines must be able to run in parallel, as
/// threads do (a forked child that inherits a second worker, acceptors
/// racing on two workers).
#[track_caller]
pub fn differential_on<T, F>(workers: usize, what: &str, case: F) -> T
where
    T: PartialEq + Debug + Send + 'static,
    F: Fn(Side) -> T + Send + Sync + 'static,
{
    let _shared = FD_NUMBERS.read().unwrap_or_else(|e| e.into_inner());
    compare(what, coroutine_side(workers), case)
}

/// As [`differential_on`], with the blocked-worker monitor of a default
/// runtime: for cases about what the monitor rescues.
#[track_caller]
pub fn differential_monitored<T, F>(workers: usize, what: &str, case: F) -> T
where
    T: PartialEq + Debug + Send + 'static,
    F: Fn(Side) -> T + Send + Sync + 'static,
{
    let _shared = FD_NUMBERS.read().unwrap_or_else(|e| e.into_inner());
    compare(what, coroutines::Runtime::builder().workers(workers), case)
}

/// As [`differential`], with no other test of the binary running meanwhile
/// (see `on_one_worker_exclusive`): for cases that close a descriptor
/// another party still uses, or replace it with `dup2`.
#[track_caller]
pub fn differential_exclusive<T, F>(what: &str, case: F) -> T
where
    T: PartialEq + Debug + Send + 'static,
    F: Fn(Side) -> T + Send + Sync + 'static,
{
    alone(|| compare(what, coroutine_side(1), case))
}

/// The coroutine side's runtime: without the blocked-worker monitor, which
/// would move a companion off a blocked worker and so hide the block.
fn coroutine_side(workers: usize) -> coroutines::runtime::Builder {
    coroutines::Runtime::builder()
        .workers(workers)
        .blocked_worker_threshold(Duration::MAX)
}

#[track_caller]
fn compare<T, F>(what: &str, runtime: coroutines::runtime::Builder, case: F) -> T
where
    T: PartialEq + Debug + Send + 'static,
    F: Fn(Side) -> T + Send + Sync + 'static,
{
    let case = Arc::new(case);
    let reference = on_plain_thread(what, {
        let case = case.clone();
        move || case(Side::Thread)
    });
    let coroutine = watchdog_on(what, LIMIT, runtime, move || case(Side::Coroutine));
    assert_eq!(
        coroutine, reference,
        "{what}: the coroutine (left) differs from the plain thread (right)"
    );
    reference
}

/// Runs `f` on a new plain thread; a panic is resumed, and a thread that
/// does not finish within [`LIMIT`] fails the test (the case itself is then
/// wrong: a plain thread is the reference).
#[track_caller]
pub fn on_plain_thread<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    on_plain_thread_within(what, LIMIT, f)
}

/// As [`on_plain_thread`], with `limit` for the bound.
#[track_caller]
pub fn on_plain_thread_within<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done, finished) = mpsc::channel();
    thread::Builder::new()
        .name(format!("reference: {what}"))
        .spawn(move || {
            let _ = done.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        })
        .unwrap();
    match finished.recv_timeout(limit) {
        Ok(Ok(value)) => value,
        Ok(Err(payload)) => std::panic::resume_unwind(payload),
        Err(_) => panic!("{what}: the plain-thread reference did not finish within {limit:?}"),
    }
}

/// Set in the child processes of [`isolated`] to the side to run.
const SIDE_VARIABLE: &str = "COROUTINES_DIFFERENTIAL_SIDE";
/// Marks the line on which a child of [`isolated`] prints its value.
const VALUE_MARK: &str = "differential value: ";

/// How one side of an [`isolated`] case ended, as data.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// It returned this value (its `Debug` form).
    Value(String),
    /// A signal killed it (e.g. SIGSEGV from a bad pointer).
    Killed(i32),
    /// It failed otherwise (a panic, the watchdog); the child's output.
    Failed(String),
}

/// As [`differential`], with each side in a child process (the test binary
/// re-run for the calling test only), so that a side that crashes the
/// process is a result ([`Ended::Killed`]) rather than the end of the test
/// run. Returns how the thread's side ended (in a child process: the value
/// is only printed, and the return value means nothing). Call it from the
/// test function itself: the children find the case by the test's name.
#[track_caller]
pub fn isolated<T, F>(case: F) -> Ended
where
    T: Debug + Send + 'static,
    F: Fn(Side) -> T + Send + Sync + 'static,
{
    let test = thread::current()
        .name()
        .expect("isolated: call it from the test's own thread")
        .to_owned();
    if let Ok(side) = std::env::var(SIDE_VARIABLE) {
        // A child: run one side and print its value.
        let value = match side.as_str() {
            "thread" => on_plain_thread(&test, move || case(Side::Thread)),
            _ => {
                let _shared = FD_NUMBERS.read().unwrap_or_else(|e| e.into_inner());
                watchdog_on(&test, LIMIT, coroutine_side(1), move || {
                    case(Side::Coroutine)
                })
            }
        };
        // On a line of its own: the harness has started one already.
        println!("\n{VALUE_MARK}{value:?}");
        return Ended::Value(format!("{value:?}"));
    }
    let reference = run_side(&test, "thread");
    let coroutine = run_side(&test, "coroutine");
    assert_eq!(
        coroutine, reference,
        "{test}: the coroutine (left) differs from the plain thread (right)"
    );
    reference
}

/// Runs the test `test` alone in a child process on side `side`.
fn run_side(test: &str, side: &str) -> Ended {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(SIDE_VARIABLE, side)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (output, _) = wait_bounded(child, LIMIT * 3);
    if let Some(line) = String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix(VALUE_MARK))
    {
        return Ended::Value(line.to_owned());
    }
    use std::os::unix::process::ExitStatusExt;
    match output.status.signal() {
        Some(signal) => Ended::Killed(signal),
        None => Ended::Failed(format!(
            "{}; stderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )),
    }
}

/// A coarse timing of a call, comparable between the sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    /// Returned within [`PROMPT`].
    AtOnce,
    /// Took longer: waited for a peer or a timeout.
    Waited,
}

/// Runs `f` and buckets how long it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Timing) {
    let start = Instant::now();
    let value = f();
    let timing = if start.elapsed() < PROMPT {
        Timing::AtOnce
    } else {
        Timing::Waited
    };
    (value, timing)
}

/// How long a call that waits for a peer took, a little finer than
/// [`Timing`]: whether the peer's action, a few hundred milliseconds in at
/// most, ended the wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// Within [`PROMPT`].
    AtOnce,
    /// Within [`WOKEN_WITHIN`]: the peer's action ended it (a coroutine
    /// that only a periodic recheck notices it for is well within too).
    Woken,
    /// Longer: something else ended it (a far timeout, a rescue).
    Long,
}

/// The bound of [`Span::Woken`].
pub const WOKEN_WITHIN: Duration = Duration::from_secs(1);

impl Span {
    /// How long it has been since `start`. A call whose peer acts a set
    /// time after `start` is timed from there, so that a late start of the
    /// call itself (a loaded machine) does not make a woken call look prompt.
    pub fn since(start: Instant) -> Span {
        let elapsed = start.elapsed();
        if elapsed < PROMPT {
            Span::AtOnce
        } else if elapsed < WOKEN_WITHIN {
            Span::Woken
        } else {
            Span::Long
        }
    }
}

/// Runs `f` and buckets how long it took as a [`Span`].
pub fn timed_span<T>(f: impl FnOnce() -> T) -> (T, Span) {
    let start = Instant::now();
    let value = f();
    (value, Span::since(start))
}

/// How much of a request a transfer moved: how short a short transfer is
/// depends on buffer sizes and timing, whether it is short does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moved {
    Nothing,
    Part,
    All,
}

/// A transfer's return value as [`Moved`] of a request of `len` bytes, or
/// the error.
pub fn moved(ret: isize, len: usize) -> Result<Moved, Errno> {
    c_outcome(ret as i64).map(|n| match n as usize {
        0 => Moved::Nothing,
        n if n < len => Moved::Part,
        _ => Moved::All,
    })
}

/// How long a call that ends at a timeout took, against the timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Against {
    /// Well before it: the timeout was not kept.
    Early,
    /// About as long: the kernel rounds a timeout to its ticks (up to
    /// [`TICK_SLACK`] early), and a loaded machine wakes a thread late by
    /// up to tens of milliseconds ([`LOAD_SLACK`]).
    About,
    /// Well after it: the timeout restarted, or did not end the call.
    Late,
}

/// How much earlier than its timeout a call may end and still count as
/// [`Against::About`].
pub const TICK_SLACK: Duration = Duration::from_millis(10);
/// How much later.
pub const LOAD_SLACK: Duration = Duration::from_millis(150);

/// Runs `f`, which should end at a timeout of `timeout`, and buckets how
/// long it took against it.
pub fn timed_against<T>(timeout: Duration, f: impl FnOnce() -> T) -> (T, Against) {
    let start = Instant::now();
    let value = f();
    let elapsed = start.elapsed();
    let against = if elapsed + TICK_SLACK < timeout {
        Against::Early
    } else if elapsed > timeout + LOAD_SLACK {
        Against::Late
    } else {
        Against::About
    };
    (value, against)
}

/// An error number, shown by name in assertion messages.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Debug for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", io::Error::from_raw_os_error(self.0))
    }
}

/// An `io::Result` as plain data: the value, or the OS error number.
pub fn outcome<T>(result: io::Result<T>) -> Result<T, Errno> {
    result.map_err(|e| Errno(e.raw_os_error().unwrap_or(-1)))
}

/// A C-style return value as plain data: the value, or `errno` if it is
/// negative.
pub fn c_outcome<T: Into<i64> + Copy>(ret: T) -> Result<i64, Errno> {
    let ret = ret.into();
    if ret < 0 {
        Err(Errno(super::errno()))
    } else {
        Ok(ret)
    }
}

/// A peer's action held in reserve: it runs on a plain thread after a
/// delay unless disarmed first. A case arms one where its call, done right,
/// returns without it; a call that hangs instead is then released, and the
/// case returns a value that says so rather than tripping the watchdog.
pub struct Rescue {
    disarm: mpsc::Sender<()>,
    handle: thread::JoinHandle<bool>,
}

/// How long a [`Rescue`] waits: far longer than any call that should not
/// need it takes.
pub const RESCUE_AFTER: Duration = Duration::from_millis(500);

impl Rescue {
    /// Runs `action` after [`RESCUE_AFTER`] unless disarmed before.
    pub fn arm(action: impl FnOnce() + Send + 'static) -> Rescue {
        let (disarm, disarmed) = mpsc::channel();
        let handle = thread::spawn(move || match disarmed.recv_timeout(RESCUE_AFTER) {
            Ok(()) => false,
            Err(_) => {
                action();
                true
            }
        });
        Rescue { disarm, handle }
    }

    /// Cancels the action if it has not run; returns whether it ran.
    pub fn disarm(self) -> bool {
        let _ = self.disarm.send(());
        self.handle.join().unwrap()
    }
}

/// Bytes, shown as a byte string in assertion messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

/// [`Bytes`] from a slice.
pub fn bytes(data: &[u8]) -> Bytes {
    Bytes(data.to_vec())
}

impl Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: String = self
            .0
            .iter()
            .flat_map(|&b| std::ascii::escape_default(b))
            .map(char::from)
            .collect();
        write!(f, "b\"{shown}\"")
    }
}

/// A party that ticks about once a millisecond beside the case, as the
/// case runs: a thread beside a thread, where it always keeps ticking, and
/// a coroutine beside a coroutine, where it ticks only while the case's
/// worker is free. So "it kept ticking while the call waited" is true on a
/// thread, and in a coroutine says that the call parked rather than
/// blocked its worker: comparable data, like the call's result.
pub struct Companion {
    ticks: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    party: Option<Party<()>>,
}

impl Companion {
    pub fn start(side: Side) -> Companion {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let ticks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let party = {
            let (ticks, stop) = (ticks.clone(), stop.clone());
            side.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(1));
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        // Let it start (in a coroutine, this parks the case).
        thread::sleep(Duration::from_millis(2));
        Companion {
            ticks,
            stop,
            party: Some(party),
        }
    }

    /// Runs `f`; its value, and whether the companion kept ticking
    /// meanwhile, for calls long enough to tell (20 ms or more): a tick
    /// per 20 ms and at least two (a free companion ticks about once a
    /// millisecond, a loaded machine slows it; one behind a blocked worker
    /// makes one tick at most).
    pub fn during<T>(&self, f: impl FnOnce() -> T) -> (T, bool) {
        use std::sync::atomic::Ordering;
        let before = self.ticks.load(Ordering::Relaxed);
        let start = Instant::now();
        let value = f();
        let elapsed = start.elapsed();
        let ticked = self.ticks.load(Ordering::Relaxed) - before;
        let kept_ticking = elapsed < Duration::from_millis(20)
            || (ticked >= 2 && ticked * 20 >= elapsed.as_millis() as u64);
        (value, kept_ticking)
    }
}

impl Drop for Companion {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(party) = self.party.take() {
            if !thread::panicking() {
                party.join();
            }
        }
    }
}
