//! Process-wide libc machinery with coroutines that have their own thread
//! identity: name lookups (run on a helper thread while the coroutine
//! parks), child processes (`posix_spawn` and `fork` from a coroutine), and
//! glibc's set*id broadcast, which signals every thread glibc knows and
//! waits for each to answer: the workers must answer while they run a
//! coroutine on a private thread pointer, or while they wait for work.

mod support;

use std::cell::Cell;
use std::io::Read;
use std::net::ToSocketAddrs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use support::identity::{joined, os_thread};
use support::*;

/// The watchdog's limit here: each test takes well under a few seconds.
const LIMIT: Duration = Duration::from_secs(20);

thread_local! {
    static MARK: Cell<usize> = const { Cell::new(usize::MAX) };
}

#[test]
fn localhost_lookups_from_coroutines_of_one_worker() {
    run(1, LIMIT, || {
        let ticker = Ticker::start();
        let handles: Vec<_> = (0..20)
            .map(|i| {
                coroutines::spawn(move || {
                    let me = thread::current().id();
                    MARK.with(|m| m.set(i));
                    let addrs: Vec<_> = ("localhost", 80).to_socket_addrs().unwrap().collect();
                    // The lookup ran on a helper thread; the caller is
                    // still itself. (errno after a successful lookup is
                    // unspecified, as on a thread.)
                    assert_eq!(thread::current().id(), me, "ThreadId after the lookup");
                    assert_eq!(MARK.with(Cell::get), i, "a thread-local after the lookup");
                    addrs
                })
            })
            .collect();
        for handle in handles {
            let addrs = joined(handle);
            assert!(
                addrs.iter().any(|a| a.ip().is_loopback() && a.port() == 80),
                "localhost resolved to {addrs:?}"
            );
        }
        let gap = ticker.take_max_gap();
        assert!(
            gap < Duration::from_secs(1),
            "the ticker was held up {gap:?}"
        );
    });
}

#[test]
fn command_status_and_output_from_coroutines() {
    run(1, LIMIT, || {
        let ticker = Ticker::start();
        let handles: Vec<_> = (0..10)
            .map(|i| {
                coroutines::spawn(move || {
                    let status = Command::new("true").status().unwrap();
                    assert!(status.success(), "true: {status}");
                    let output = Command::new("echo")
                        .arg(format!("child {i}"))
                        .output()
                        .unwrap();
                    assert!(output.status.success());
                    assert_eq!(
                        String::from_utf8_lossy(&output.stdout),
                        format!("child {i}\n")
                    );
                    let failed = Command::new("false").status().unwrap();
                    assert_eq!(failed.code(), Some(1));
                })
            })
            .collect();
        for handle in handles {
            joined(handle);
        }
        drop(ticker);
    });
}

#[test]
fn fork_from_a_coroutine_gives_a_working_child() {
    run(1, LIMIT, || {
        let ticker = Ticker::start();
        let mut fds = [0; 2];
        // SAFETY: `fds` is a live array of two ints.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let parent_id = format!("{:?}", thread::current().id());
        // SAFETY: the child only allocates (glibc resets malloc's locks in
        // the child), formats, writes to a pipe and `_exit`s; the runtime's
        // other coroutines are not touched there.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // The child: one thread, running on as this coroutine.
            let words: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
            let report = format!(
                "pid {} tid {} id {:?} words {}",
                std::process::id(),
                os_thread(),
                thread::current().id(),
                words.len()
            );
            // SAFETY: writes a live buffer to the pipe, then exits at once.
            unsafe {
                libc::write(fds[1], report.as_ptr().cast(), report.len());
                libc::_exit(0);
            }
        }
        // SAFETY: the descriptors are ours; each is owned once.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        drop(write_end);
        let mut report = String::new();
        std::fs::File::from(read_end)
            .read_to_string(&mut report)
            .unwrap();
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert_eq!(
            report,
            format!("pid {pid} tid {pid} id {parent_id} words 1000"),
            "the child goes on as the forking coroutine, on its one kernel thread"
        );
        // The parent coroutine is unchanged.
        assert_eq!(format!("{:?}", thread::current().id()), parent_id);
        drop(ticker);
    });
}

/// `setgid(getgid())`: a set*id call that changes nothing but makes glibc
/// run its broadcast over every thread.
fn setgid_same() {
    // SAFETY: setting the gid to the current one changes nothing.
    let ret = unsafe { libc::setgid(libc::getgid()) };
    assert_eq!(ret, 0, "setgid: {}", std::io::Error::last_os_error());
}

#[test]
fn setgid_from_a_plain_thread_while_coroutines_run_and_park() {
    const CALLS: usize = 200;
    let calls = run(2, LIMIT, || {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel::<()>();
        let receiver = coroutines::spawn(move || {
            // Parked on a channel most of the time.
            let mut n = 0;
            while rx.recv().is_ok() {
                n += 1;
            }
            n
        });
        let workers: Vec<_> = (0..8)
            .map(|i| {
                let (stop, rounds, tx) = (stop.clone(), rounds.clone(), tx.clone());
                coroutines::spawn(move || {
                    let me = thread::current().id();
                    set_errno(100 + i);
                    while !stop.load(Ordering::SeqCst) {
                        match i % 4 {
                            // Busy: interrupted by the broadcast while on
                            // the coroutine's thread pointer.
                            0 => {
                                let until = Instant::now() + Duration::from_micros(300);
                                while Instant::now() < until {
                                    std::hint::spin_loop();
                                }
                                coroutines::yield_now();
                            }
                            1 => coroutines::yield_now(),
                            2 => thread::sleep(Duration::from_millis(1)),
                            // Wakes the receiver, parked on the channel.
                            _ => {
                                tx.send(()).unwrap();
                                // (A send may leave EAGAIN from a contended
                                // lock, as on a thread.)
                                set_errno(100 + i);
                                thread::sleep(Duration::from_millis(1));
                            }
                        }
                        // The broadcast's handler ran on the worker's
                        // identity, not on ours.
                        assert_eq!(errno(), 100 + i, "errno of coroutine {i}");
                        assert_eq!(thread::current().id(), me);
                        rounds.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        drop(tx);
        let caller = {
            let rounds = rounds.clone();
            thread::spawn(move || {
                for _ in 0..CALLS {
                    setgid_same();
                    // Let the coroutines move between calls.
                    let seen = rounds.load(Ordering::Relaxed);
                    let until = Instant::now() + Duration::from_millis(5);
                    while rounds.load(Ordering::Relaxed) == seen && Instant::now() < until {
                        thread::yield_now();
                    }
                }
                CALLS
            })
        };
        let calls = caller.join().unwrap();
        stop.store(true, Ordering::SeqCst);
        for handle in workers {
            joined(handle);
        }
        assert!(joined(receiver) > 0);
        calls
    });
    assert_eq!(calls, CALLS);
}

#[test]
fn setgid_from_coroutines_on_both_workers_at_once() {
    run(2, LIMIT, || {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                coroutines::spawn(|| {
                    for _ in 0..50 {
                        setgid_same();
                        coroutines::yield_now();
                    }
                })
            })
            .collect();
        for handle in handles {
            joined(handle);
        }
    });
}

#[test]
fn a_child_reading_a_coroutines_pipe_while_its_parent_waits() {
    // `Command::output` from a coroutine whose child blocks on stdin that
    // another coroutine of the worker feeds.
    run(1, LIMIT, || {
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let feeder = coroutines::spawn(move || {
            use std::io::Write;
            for i in 0..100 {
                writeln!(stdin, "line {i}").unwrap();
                if i % 10 == 0 {
                    thread::sleep(Duration::from_millis(1));
                }
            }
        });
        let output = child.wait_with_output().unwrap();
        joined(feeder);
        assert!(output.status.success());
        assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 100);
    });
}
