//! stdout and panics with thread identity: std's stdout lock is re-entrant
//! per *thread*, and its panic count is per thread. With each coroutine its
//! own thread, a coroutine that holds the stdout lock across a wait keeps
//! the other coroutines of its worker out (no interleaving), writes to a
//! full stdout pipe park the coroutine instead of blocking the worker, and
//! one coroutine's panic is not another's.
//!
//! Each test re-runs this binary as a child process whose stdout and
//! stderr are pipes the parent reads: output from coroutines is not
//! captured by libtest (its capture is a thread-local of the test thread,
//! and a coroutine is another thread).

mod support;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::panic;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::child::{child_case, child_command, run_child};
use support::identity::joined;
use support::*;

/// Coroutines printing at once.
const PRINTERS: usize = 100;

/// Lines each printer prints.
const LINES: usize = 20;

/// Every this many printers, one holds the stdout lock across a sleep.
const LOCKER_EVERY: usize = 10;

/// Lines a locker prints inside its BEGIN/END pair.
const LOCKED_LINES: usize = 6;

/// How long the parent leaves the child's stdout pipe full before it
/// starts reading.
const STALL: Duration = Duration::from_millis(300);

/// The pipe's capacity: one page, so it is full after a few dozen lines.
const PIPE_SIZE: i32 = 4096;

/// Line `line` of printer `printer`: long enough that a write split by
/// another coroutine's would show, and checkable from its numbers alone.
fn printed_line(printer: usize, line: usize) -> String {
    let fill: String = (0..96)
        .map(|k| char::from(b'a' + ((printer * 7 + line * 3 + k) % 26) as u8))
        .collect();
    format!("@@ {printer:03} {line:02} {fill} @@")
}

/// Line `line` inside locker `printer`'s BEGIN/END pair.
fn locked_line(printer: usize, line: usize) -> String {
    format!("@@ {printer:03} locked {line} @@")
}

/// The child's side of [`println_from_a_hundred_coroutines_into_a_slow_pipe`].
fn print_from_coroutines() {
    let (max_gap, ticks) = run(1, Duration::from_secs(30), || {
        let ticker = Ticker::start();
        let before = ticker.ticks();
        let handles: Vec<_> = (0..PRINTERS)
            .map(|i| {
                coroutines::spawn(move || {
                    if i % LOCKER_EVERY == 0 {
                        let mut out = io::stdout().lock();
                        writeln!(out, "@@ BEGIN {i:03} @@").unwrap();
                        for k in 0..LOCKED_LINES {
                            writeln!(out, "{}", locked_line(i, k)).unwrap();
                            if k == LOCKED_LINES / 2 {
                                // Everybody else who prints now must wait
                                // for this coroutine, not re-enter its lock.
                                thread::sleep(Duration::from_millis(5));
                            }
                        }
                        writeln!(out, "@@ END {i:03} @@").unwrap();
                    }
                    for j in 0..LINES {
                        println!("{}", printed_line(i, j));
                        if j % 5 == 4 {
                            thread::sleep(Duration::from_millis(1));
                        }
                    }
                })
            })
            .collect();
        for handle in handles {
            joined(handle);
        }
        io::stdout().flush().unwrap();
        (ticker.take_max_gap(), ticker.ticks() - before)
    });
    eprintln!("child: ticker max gap {max_gap:?}, {ticks} ticks");
    // The parent stalls its reads for STALL: a worker blocked in a write
    // would hold the ticker up that long.
    assert!(
        max_gap < STALL / 3,
        "the ticker was held up {max_gap:?} while stdout was full: a write blocked the worker"
    );
    assert!(ticks >= 100, "the ticker ticked only {ticks} times");
}

/// A pipe whose capacity is [`PIPE_SIZE`]: (read end, write end).
fn small_pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a live array of two ints; the new descriptors are
    // owned by the returned values only.
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        assert!(libc::fcntl(fds[0], libc::F_SETPIPE_SZ, PIPE_SIZE) >= PIPE_SIZE);
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    }
}

#[test]
fn println_from_a_hundred_coroutines_into_a_slow_pipe() {
    const TEST: &str = "println_from_a_hundred_coroutines_into_a_slow_pipe";
    match child_case().as_deref() {
        Some("stdout") => return print_from_coroutines(),
        Some(_) => return,
        None => {}
    }
    let (read_end, write_end) = small_pipe();
    let mut child = child_command(TEST, "stdout")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stderr = thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    let reader = thread::spawn(move || {
        let mut pipe = std::fs::File::from(read_end);
        // Leave the pipe full for a while, then read it slowly.
        thread::sleep(STALL);
        let mut all = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            match pipe.read(&mut chunk).unwrap() {
                0 => return all,
                n => all.extend_from_slice(&chunk[..n]),
            }
            thread::sleep(Duration::from_micros(200));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the child did not finish within 30 s");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let stdout = String::from_utf8(reader.join().unwrap()).unwrap();
    let stderr = stderr.join().unwrap();
    assert!(status.success(), "child failed ({status}):\n{stderr}");
    check_printed(&stdout);
}

/// Checks the child's stdout: every line is whole, every expected line is
/// there once, and each locker's BEGIN..END block holds only its lines.
#[track_caller]
fn check_printed(stdout: &str) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    // The locker whose block is open, and how many of its lines followed.
    let mut open: Option<(usize, usize)> = None;
    for (n, line) in stdout.lines().enumerate() {
        let line = match line.find("@@") {
            None => continue, // libtest's own lines
            // libtest prints "test NAME ... " before the test's output.
            Some(at) if at > 0 && line.starts_with("test ") => &line[at..],
            Some(_) => line,
        };
        if let Some(rest) = line.strip_prefix("@@ BEGIN ") {
            assert_eq!(open, None, "line {n}: BEGIN inside another block: {line:?}");
            open = Some((rest.trim_end_matches(" @@").parse().unwrap(), 0));
        } else if let Some(rest) = line.strip_prefix("@@ END ") {
            let who: usize = rest.trim_end_matches(" @@").parse().unwrap();
            assert_eq!(
                open,
                Some((who, LOCKED_LINES)),
                "line {n}: END outside its block, or too early: {line:?}"
            );
            open = None;
        } else if let Some((locker, k)) = &mut open {
            assert_eq!(
                line,
                locked_line(*locker, *k),
                "line {n}: inside coroutine {locker}'s locked block, another line appeared"
            );
            *k += 1;
        }
        *seen.entry(line.to_owned()).or_default() += 1;
    }
    assert_eq!(open, None, "a block was never closed");
    let mut expected = Vec::new();
    for i in 0..PRINTERS {
        expected.extend((0..LINES).map(|j| printed_line(i, j)));
        if i % LOCKER_EVERY == 0 {
            expected.push(format!("@@ BEGIN {i:03} @@"));
            expected.push(format!("@@ END {i:03} @@"));
            expected.extend((0..LOCKED_LINES).map(|k| locked_line(i, k)));
        }
    }
    for line in &expected {
        assert_eq!(
            seen.get(line).copied().unwrap_or(0),
            1,
            "line {line:?}: want exactly once"
        );
    }
    let garbled: Vec<_> = seen
        .keys()
        .filter(|line| !expected.contains(line))
        .take(5)
        .collect();
    assert!(garbled.is_empty(), "lines that are not whole: {garbled:?}");
}

// ---------------------------------------------------------------------------
// Panics

/// The panic message the parent looks for.
const PANIC_MESSAGE: &str = "identity test panic 7f3a";
/// The message of a second panic, caught, while the first unwinds.
const SECOND_PANIC: &str = "second panic 9b1c";

/// A guard whose drop, during the panicker's unwinding, waits for a mutex
/// another coroutine holds: the panicking coroutine parks mid-panic.
struct WaitsWhileUnwinding {
    lock: Arc<Mutex<u32>>,
    parked: Arc<AtomicBool>,
}

impl Drop for WaitsWhileUnwinding {
    fn drop(&mut self) {
        assert!(thread::panicking(), "the guard drops during the unwind");
        self.parked.store(true, Ordering::SeqCst);
        // The holder is not panicking, so the mutex is not poisoned.
        let value = *self.lock.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(value, 1, "the holder's write");
    }
}

/// The child's side of [`a_panic_while_another_coroutine_waits_on_a_mutex`].
fn panic_among_waiters() {
    run(1, Duration::from_secs(20), || {
        let lock = Arc::new(Mutex::new(0u32));
        let held = Arc::new(AtomicBool::new(false));
        let parked = Arc::new(AtomicBool::new(false));
        let holder = {
            let (lock, held) = (lock.clone(), held.clone());
            coroutines::spawn(move || {
                let mut guard = lock.lock().unwrap();
                held.store(true, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(150));
                *guard = 1;
            })
        };
        yield_until(|| held.load(Ordering::SeqCst));
        let waiter = {
            let lock = lock.clone();
            coroutines::spawn(move || {
                let start = Instant::now();
                let guard = lock.lock().expect("not poisoned: the holder did not panic");
                assert_eq!(*guard, 1);
                assert!(!thread::panicking(), "the waiter is not panicking");
                start.elapsed()
            })
        };
        let panicker = {
            let (lock, parked) = (lock.clone(), parked.clone());
            coroutines::spawn(move || {
                let _guard = WaitsWhileUnwinding { lock, parked };
                thread::sleep(Duration::from_millis(20));
                panic!("{PANIC_MESSAGE}");
            })
        };
        // While the panicker is parked mid-unwind, other coroutines of the
        // worker are not panicking, and may panic (and catch it) without
        // "panicked while processing panic".
        yield_until(|| parked.load(Ordering::SeqCst));
        let bystander = coroutines::spawn(|| {
            assert!(!thread::panicking(), "a bystander sees another's panic");
            let caught = panic::catch_unwind(|| panic!("{SECOND_PANIC}"));
            assert!(caught.is_err());
            assert!(!thread::panicking());
        });
        assert!(!thread::panicking(), "the root sees another's panic");
        joined(bystander);
        let payload = panicker.join().unwrap_err();
        assert_eq!(
            payload.downcast_ref::<String>().map(String::as_str),
            Some(PANIC_MESSAGE)
        );
        let waited = joined(waiter);
        assert!(
            waited >= Duration::from_millis(50),
            "the waiter waited {waited:?}"
        );
        joined(holder);
        // The mutex still works, unpoisoned.
        assert_eq!(*lock.lock().unwrap(), 1);
    });
    println!("CHILD OK");
}

/// Runs the panic case in a child with `RUST_BACKTRACE` set to `backtrace`
/// and checks its stderr.
fn check_panic_child(backtrace: &str) {
    let mut command = child_command("a_panic_while_another_coroutine_waits_on_a_mutex", "panic");
    command.env("RUST_BACKTRACE", backtrace);
    let output = run_child("panic child", command, Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.contains("CHILD OK"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for bad in [
        "panicked while processing panic",
        "aborting",
        "thread caused non-unwinding",
    ] {
        assert!(
            !stderr.contains(bad),
            "RUST_BACKTRACE={backtrace}: {bad:?}:\n{stderr}"
        );
    }
    for message in [PANIC_MESSAGE, SECOND_PANIC] {
        assert_eq!(
            stderr.matches(message).count(),
            1,
            "RUST_BACKTRACE={backtrace}: the panic message {message:?} is printed once:\n{stderr}"
        );
    }
}

#[test]
fn a_panic_while_another_coroutine_waits_on_a_mutex() {
    match child_case().as_deref() {
        Some("panic") => return panic_among_waiters(),
        Some(_) => return,
        None => {}
    }
    check_panic_child("0");
}

#[test]
fn a_panic_with_a_backtrace_in_a_coroutine() {
    if child_case().is_some() {
        return;
    }
    // The default hook walks the coroutine's stack to print the backtrace.
    check_panic_child("1");
}

// ---------------------------------------------------------------------------
// Lock ownership, in this process (nothing is printed)

/// Holds `lock` (taken by `take`) for [`WAIT`] in one coroutine while
/// another of the worker prints nothing through `print`: the printer must
/// wait for the lock (it is another thread's), and the holder itself may
/// take it again (it is re-entrant for its owner).
fn assert_lock_is_per_coroutine<L: 'static>(what: &str, take: fn() -> L, print: fn()) {
    let what = what.to_owned();
    on_one_worker(&what.clone(), move || {
        let ticker = Ticker::start();
        let held = Arc::new(AtomicBool::new(false));
        let holder = {
            let held = held.clone();
            coroutines::spawn(move || {
                let guard = take();
                // Re-entrant for its owner: returns at once.
                let start = Instant::now();
                print();
                let reentry = start.elapsed();
                held.store(true, Ordering::SeqCst);
                thread::sleep(WAIT);
                drop(guard);
                reentry
            })
        };
        yield_until(|| held.load(Ordering::SeqCst));
        let (_, elapsed, ticks) = ticker.during(print);
        // Joined before any assertion: a holder abandoned by a failed test
        // would keep the lock, and libtest's report would wait for it.
        let reentry = joined(holder);
        assert_parked(
            &format!("{what} while another coroutine holds it"),
            elapsed,
            ticks,
        );
        assert_prompt(&format!("{what} by its holder"), reentry);
    });
}

#[test]
fn the_stdout_lock_belongs_to_one_coroutine() {
    assert_lock_is_per_coroutine("print!", || io::stdout().lock(), || print!(""));
}

#[test]
fn the_stderr_lock_belongs_to_one_coroutine() {
    assert_lock_is_per_coroutine("eprint!", || io::stderr().lock(), || eprint!(""));
}
