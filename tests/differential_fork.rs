//! fork, differentially (issue item 3). A child forked by a coroutine must
//! behave as a single-threaded process, as a child forked by a plain
//! thread does: its hooked calls block it like libc's, and it must not
//! touch the parent's reactor (the epoll instance it inherits is shared
//! with the parent) nor run copies of the parent's coroutines. Meanwhile a
//! coroutine of the parent parked on a pipe still gets its data.
//! `std::process::Command` keeps working from a coroutine.

mod support;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::differential::*;

/// Bits of the child's exit code, above [`CHILD_RAN`].
const SLEPT: i32 = 1;
const READ_PING: i32 = 2;
const WROTE_PONG: i32 = 4;
/// The child does not count as running in a coroutine.
const NOT_IN_COROUTINE: i32 = 8;
/// Set in every exit code of the child, so that 0 never means "ran".
const CHILD_RAN: i32 = 64;

/// How long the child sleeps first; the parent's pipe gets its data
/// meanwhile, at [`WATCHED_DATA_AT`].
const CHILD_SLEEP: Duration = Duration::from_millis(100);
const WATCHED_DATA_AT: Duration = Duration::from_millis(30);

/// What the child does, with hooked calls only and no allocation: checks
/// that it is not in a coroutine, sleeps, reads "ping" from `ping`, writes
/// "pong" to `pong`; exits with a code saying which worked. Its output goes
/// to `quiet`; `parent` is the process that forked it.
fn child(ping: RawFd, pong: RawFd, quiet: RawFd, parent: libc::pid_t) -> ! {
    // A child that hangs must neither outlive the test (killed when the
    // thread that forked it ends) nor hold the harness's output open.
    // SAFETY: prctl, getppid and dup2 on descriptors the child has.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(1);
        }
        libc::dup2(quiet, libc::STDOUT_FILENO);
        libc::dup2(quiet, libc::STDERR_FILENO);
    }
    let mut code = CHILD_RAN;
    if !coroutines::in_coroutine() {
        code |= NOT_IN_COROUTINE;
    }
    let start = Instant::now();
    thread::sleep(CHILD_SLEEP);
    if start.elapsed() >= CHILD_SLEEP {
        code |= SLEPT;
    }
    let mut buf = [0u8; 4];
    // SAFETY: a read into a live buffer.
    if unsafe { libc::read(ping, buf.as_mut_ptr().cast(), 4) } == 4 && &buf == b"ping" {
        code |= READ_PING;
    }
    // SAFETY: a write from a live buffer.
    if unsafe { libc::write(pong, b"pong".as_ptr().cast(), 4) } == 4 {
        code |= WROTE_PONG;
    }
    // SAFETY: ends the child at once, running nothing of the parent's.
    unsafe { libc::_exit(code) }
}

/// Waits for `pid` up to `limit`, parking between looks; its exit code,
/// or `None` if it did not exit normally in time (it is killed then).
fn wait_child(pid: libc::pid_t, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child, without blocking.
        let ret = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if ret == pid {
            return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        }
        if start.elapsed() > limit {
            // SAFETY: our own child, killed and reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Reads up to 16 bytes from `fd` if it becomes readable within `limit`.
fn read_within(fd: RawFd, limit: Duration) -> Option<Bytes> {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd.
    if unsafe { libc::poll(&mut pollfd, 1, limit.as_millis() as i32) } != 1 {
        return None;
    }
    let mut buf = [0u8; 16];
    // SAFETY: a read into a live buffer.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    (n >= 0).then(|| bytes(&buf[..n as usize]))
}

/// What the parent saw of its child and of its own waiting party.
#[derive(Debug, PartialEq)]
struct Forked {
    /// The child's exit code (see [`child`]); `None` if it hung.
    child_exit: Option<i32>,
    /// What the child wrote back.
    pong: Option<Bytes>,
    /// The parent's party, parked on a pipe that got data while the child
    /// lived, returned by itself.
    party_woke: bool,
    /// What the party read.
    party_read: Bytes,
}

#[test]
fn a_forked_child_is_single_threaded_and_leaves_the_parent_alone() {
    let got = differential("fork", |side| {
        let (ping_reader, mut ping_writer) = std::io::pipe().unwrap();
        let (pong_reader, pong_writer) = std::io::pipe().unwrap();
        let (mut watched_reader, mut watched_writer) = std::io::pipe().unwrap();
        let mut rescuer = watched_writer.try_clone().unwrap();
        // A party of the parent waits on a pipe (in a coroutine: parked,
        // its pipe in the reactor).
        let party = side.spawn(move || {
            let mut buf = [0u8; 16];
            let n = watched_reader.read(&mut buf).unwrap();
            bytes(&buf[..n])
        });
        thread::sleep(Duration::from_millis(50));
        let quiet = std::fs::File::create("/dev/null").unwrap();
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the child runs `child` only, which ends in _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            child(
                ping_reader.as_raw_fd(),
                pong_writer.as_raw_fd(),
                quiet.as_raw_fd(),
                parent,
            );
        }
        let writer = thread::spawn(move || {
            thread::sleep(WATCHED_DATA_AT);
            watched_writer.write_all(b"data").unwrap();
        });
        // The parent stays busy without yielding while the data comes:
        // in a coroutine, its worker does not poll the reactor meanwhile,
        // so only a child that waits on the shared epoll instance could
        // take the pipe's readiness (and a copy of the party its data).
        let start = Instant::now();
        while start.elapsed() < CHILD_SLEEP + Duration::from_millis(50) {
            std::hint::spin_loop();
        }
        writer.join().unwrap();
        ping_writer.write_all(b"ping").unwrap();
        // Bounded well within the watchdog's limit, so that a child that
        // hangs is killed and reaped here.
        let pong = read_within(pong_reader.as_raw_fd(), Duration::from_secs(1));
        let child_exit = wait_child(pid, Duration::from_secs(1));
        let deadline = Instant::now() + Duration::from_millis(500);
        while !party.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        let party_woke = party.is_finished();
        if !party_woke {
            rescuer.write_all(b"!").unwrap();
        }
        Forked {
            child_exit,
            pong,
            party_woke,
            party_read: party.join(),
        }
    });
    assert_eq!(
        got,
        Forked {
            child_exit: Some(CHILD_RAN | NOT_IN_COROUTINE | SLEPT | READ_PING | WROTE_PONG),
            pong: Some(bytes(b"pong")),
            party_woke: true,
            party_read: bytes(b"data"),
        }
    );
}

/// How a command ended: its exit code and what it printed.
#[derive(Debug, PartialEq)]
struct Ran {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: Bytes,
}

/// Passes today: std starts children with posix_spawn (vfork), or, with a
/// `pre_exec` hook, by fork and exec with nothing but dup2/close between.
#[test]
fn commands_run_from_a_coroutine_as_from_a_thread() {
    let got = differential("std::process::Command", |_| {
        let status = Command::new("true").status().unwrap();
        let output = Command::new("sh")
            .args(["-c", "echo hello; exit 3"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let mut forked = Command::new("sh");
        forked
            .args(["-c", "echo forked"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        // SAFETY: the hook does nothing, which is async-signal-safe; its
        // presence makes std fork and exec itself.
        unsafe { forked.pre_exec(|| Ok(())) };
        let forked = forked.output().unwrap();
        [
            (status.code(), status.signal(), Vec::new()),
            (output.status.code(), output.status.signal(), output.stdout),
            (forked.status.code(), forked.status.signal(), forked.stdout),
        ]
        .map(|(code, signal, stdout)| Ran {
            code,
            signal,
            stdout: Bytes(stdout),
        })
    });
    assert_eq!(
        got,
        [
            Ran {
                code: Some(0),
                signal: None,
                stdout: bytes(b""),
            },
            Ran {
                code: Some(3),
                signal: None,
                stdout: bytes(b"hello\n"),
            },
            Ran {
                code: Some(0),
                signal: None,
                stdout: bytes(b"forked\n"),
            },
        ]
    );
}

/// A `vfork` child that closes a descriptor before it execs closes its own
/// copy: the parent's neighbour reading it keeps waiting, and gets the
/// data written later.
#[test]
fn a_vfork_child_closing_a_descriptor_leaves_the_parents_reader_alone() {
    let got = differential("vfork child's close vs the parent's reader", |side| {
        let (reader, mut writer) = std::io::pipe().unwrap();
        let fd = reader.as_raw_fd();
        let party = side.spawn(move || {
            let mut buf = [0u8; 8];
            // SAFETY: a read into a live buffer.
            let got =
                timed(|| c_outcome(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 8) } as i64));
            drop(reader);
            got
        });
        thread::sleep(Duration::from_millis(50));
        let path = c"/bin/true";
        let argv = [path.as_ptr(), std::ptr::null()];
        // SAFETY: the child only closes, execs and exits, as vfork allows;
        // vfork itself is deprecated in `libc` for its hazards, and is the
        // call under test.
        #[allow(deprecated)]
        let pid = unsafe { libc::vfork() };
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                libc::close(fd);
                libc::execv(path.as_ptr(), argv.as_ptr());
                libc::_exit(127);
            }
        }
        let exited = wait_child(pid, Duration::from_secs(2));
        thread::sleep(Duration::from_millis(250));
        writer.write_all(b"ok").unwrap();
        (exited, party.join())
    });
    assert_eq!(got, (Some(0), (Ok(2), Timing::Waited)));
}

/// What a child does after a fork, as bits of its exit code: reads a pipe
/// a thread of its own writes late (1), joins that thread (2), hands a
/// mutex to another thread (4), resolves localhost (8), accepts and reads
/// a connection (16).
fn process_work() -> i32 {
    let mut code = 0;
    let (mut reader, mut writer) = std::io::pipe().unwrap();
    let late = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        writer.write_all(b"hi").unwrap();
    });
    let mut buf = [0u8; 4];
    if reader.read(&mut buf).ok() == Some(2) {
        code |= 1;
    }
    if late.join().is_ok() {
        code |= 2;
    }
    let shared = std::sync::Arc::new(std::sync::Mutex::new(0));
    let held = shared.lock().unwrap();
    let contender = {
        let shared = shared.clone();
        thread::spawn(move || *shared.lock().unwrap() += 1)
    };
    thread::sleep(Duration::from_millis(20));
    drop(held);
    if contender.join().is_ok() && *shared.lock().unwrap() == 1 {
        code |= 4;
    }
    if std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 80))
        .is_ok_and(|mut a| a.next().is_some())
    {
        code |= 8;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client =
        thread::spawn(move || std::net::TcpStream::connect(addr).map(|mut s| s.write_all(b"x")));
    if let Ok((mut stream, _)) = listener.accept() {
        if stream.read(&mut buf[..1]).is_ok() {
            code |= 16;
        }
    }
    let _ = client.join();
    code
}

/// A child forked from a runtime of two workers runs threads, locks, name
/// resolution and sockets as a process forked from a thread does.
#[test]
fn a_forked_child_of_two_workers_behaves_like_a_process() {
    let got = differential_on(2, "fork, then threads in the child", |_| {
        // SAFETY: the child runs `process_work` and ends in _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let code = process_work();
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(code) };
        }
        wait_child(pid, Duration::from_secs(4))
    });
    assert_eq!(got, Some(31));
}

/// A child forked by a spawned party that simply returns ends with status
/// 0, as a thread's does: the last thread of the child has ended.
#[test]
fn a_child_forked_by_a_spawned_party_that_returns_exits_with_zero() {
    let got = differential_on(2, "fork in a spawned party, the child returns", |side| {
        let pid = side
            .spawn(|| {
                // SAFETY: the child sleeps and returns from the party.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    thread::sleep(Duration::from_millis(20));
                }
                pid
            })
            .join();
        wait_child(pid, Duration::from_secs(2))
    });
    assert_eq!(got, Some(0));
}
