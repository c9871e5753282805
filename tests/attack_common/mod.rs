//! Shared by the `attack_*` probes: run one call on a plain OS thread and in
//! a coroutine, each bounded, and report what each got (or that it hung).
#![allow(dead_code)]

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use coroutines::Runtime;

/// What a probe saw: `None` means it did not finish within its bound.
pub type Seen<T> = Option<T>;

/// Runs `f` on a plain thread; `None` if it takes longer than `limit` (the
/// thread is left behind).
pub fn on_thread<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Seen<T> {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("attack-thread".into())
        .spawn(move || {
            let r = panic::catch_unwind(AssertUnwindSafe(f));
            let _ = tx.send(r);
        })
        .unwrap();
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => Some(v),
        Ok(Err(p)) => panic::resume_unwind(p),
        Err(_) => None,
    }
}

/// Runs `f` as the root coroutine of a fresh runtime of `workers` workers;
/// `None` if it takes longer than `limit` (the runtime is leaked with its
/// stuck threads).
pub fn in_coroutine<T: Send + 'static>(
    workers: usize,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Seen<T> {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("attack-runtime".into())
        .spawn(move || {
            let runtime = Runtime::builder().workers(workers).build().unwrap();
            let r = panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(f)));
            let _ = tx.send(r);
            drop(runtime);
        })
        .unwrap();
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => Some(v),
        Ok(Err(p)) => panic::resume_unwind(p),
        Err(_) => None,
    }
}

/// Starts a helper party the way a case's side does (a thread, or a
/// coroutine of the same runtime) and returns what joins it.
pub type Spawner<T> = fn(Box<dyn FnOnce() -> T + Send>) -> Box<dyn FnOnce() -> T>;

/// What a thread and a coroutine saw of the same case.
pub type Both<T> = (Seen<T>, Seen<T>);

/// A raw result (`ret`, errno if `ret < 0`).
pub fn res(ret: isize) -> Result<isize, i32> {
    if ret < 0 {
        Err(io::Error::last_os_error().raw_os_error().unwrap())
    } else {
        Ok(ret)
    }
}

/// Time a closure.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let v = f();
    (v, start.elapsed())
}

/// Whether this process is the child of [`in_subprocess`].
pub fn is_child() -> bool {
    std::env::var_os("ATTACK_CHILD").is_some()
}

/// Re-runs the test `name` of this binary in a child process (which sees
/// `is_child()`), returning its exit status and output.
pub fn in_subprocess(name: &str) -> (std::process::ExitStatus, String) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("ATTACK_CHILD", "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status, text)
}

/// Prints a comparison and asserts equality (as a finding when not equal).
#[track_caller]
pub fn compare<T: std::fmt::Debug + PartialEq>(what: &str, thread: &Seen<T>, coroutine: &Seen<T>) {
    eprintln!("[{what}] thread: {thread:?}  coroutine: {coroutine:?}");
    assert_eq!(thread, coroutine, "{what}: thread and coroutine differ");
}
