//! The runtime never leaves stdin, stdout or stderr non-blocking, not even
//! for a moment: their open file descriptions are shared with other
//! processes (the shell, the parent, a pipeline's other end).
//!
//! - In this process: after writing to stdout/stderr and polling stdin
//!   inside coroutines, `F_GETFL` of 0, 1 and 2 is what it was before.
//! - In a child (this test binary run again, see [`CHILD`]): a coroutine
//!   reads its stdin, a pipe or a terminal, while a ticker runs; the parent,
//!   which shares the stdin file description, sees no O_NONBLOCK on it while
//!   the child is parked in the read, and the child's flags are unchanged
//!   afterwards.

mod support;

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

/// Set in the environment of the child process; its value names the stdin
/// kind for messages.
const CHILD: &str = "COROUTINES_STDIO_FLAGS_CHILD";

/// The line the child prints just before it reads stdin.
const READY: &[u8] = b"stdin-child-ready\n";

/// The kernel's flags of 0, 1 and 2, `None` for one that is not open.
fn stdio_flags() -> [Option<i32>; 3] {
    [0, 1, 2].map(|fd| {
        // SAFETY: F_GETFL takes no argument; a raw call no hook sees.
        let flags = unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFL) };
        (flags >= 0).then_some(flags as i32)
    })
}

/// The same, through the hooked `fcntl`.
fn stdio_flags_hooked() -> [Option<i32>; 3] {
    [0, 1, 2].map(|fd| {
        // SAFETY: F_GETFL takes no argument.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        (flags >= 0).then_some(flags)
    })
}

fn poll_fd(fd: RawFd, events: i16, timeout_ms: i32) -> i32 {
    let mut pollfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one live pollfd.
    unsafe { libc::poll(&mut pollfd, 1, timeout_ms) }
}

#[test]
fn stdio_flags_unchanged_after_use_in_coroutines() {
    let before = stdio_flags();
    on_one_worker("stdio use", move || {
        // Writes through the hooks (empty, to keep the test output clean)
        // and through std.
        for fd in [1, 2] {
            // SAFETY: a zero-length write.
            unsafe { libc::write(fd, b"".as_ptr() as *const libc::c_void, 0) };
        }
        io::stdout().flush().unwrap();
        io::stderr().write_all(b"").unwrap();
        // Polls, immediate and parked.
        poll_fd(0, libc::POLLIN, 0);
        poll_fd(0, libc::POLLIN, 50);
        poll_fd(1, libc::POLLOUT, 50);
        poll_fd(2, libc::POLLOUT, 50);
        // While another coroutine is parked polling stdin.
        let poller = coroutines::spawn(|| poll_fd(0, libc::POLLIN, 100));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            stdio_flags(),
            before,
            "kernel flags while a coroutine polls stdin"
        );
        poller.join().unwrap();
        assert_eq!(stdio_flags_hooked(), before, "F_GETFL inside a coroutine");
        assert_eq!(stdio_flags(), before, "kernel flags inside a coroutine");
    });
    assert_eq!(
        stdio_flags(),
        before,
        "kernel flags after the runtime ended"
    );
}

/// The child's side, run only in the child process (a no-op otherwise):
/// reads a line from stdin in a coroutine with a ticker and checks flags.
#[test]
fn child_reads_stdin_in_a_coroutine() {
    let Ok(kind) = std::env::var(CHILD) else {
        return;
    };
    let before = stdio_flags();
    let name = kind.clone();
    on_one_worker("child stdin read", move || {
        let kind = name;
        let ticker = Ticker::start();
        let mut out = io::stdout();
        out.write_all(READY).unwrap();
        out.flush().unwrap();
        let mut line = String::new();
        let (n, elapsed, ticks) =
            ticker.during(|| io::stdin().lock().read_line(&mut line).unwrap());
        assert!(n > 0, "{kind}: end of file on stdin");
        assert_eq!(line.trim_end(), "hello", "{kind}");
        assert_parked(&format!("{kind} stdin read"), elapsed, ticks);
        assert_eq!(
            stdio_flags_hooked(),
            before,
            "{kind}: F_GETFL in the coroutine"
        );
        assert_eq!(
            stdio_flags(),
            before,
            "{kind}: kernel flags in the coroutine"
        );
    });
    assert_eq!(stdio_flags(), before, "{kind}: kernel flags at the end");
    io::stdout().write_all(b"child ok\n").unwrap();
}

/// Runs [`child_reads_stdin_in_a_coroutine`] in a child whose stdin is
/// `stdin`; `shared` is the parent's handle on the same open file
/// description, and `feed` writes the line the child waits for.
fn run_child(kind: &str, stdin: OwnedFd, shared: OwnedFd, feed: impl FnOnce()) {
    let before = kernel_flags(shared.as_raw_fd());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_reads_stdin_in_a_coroutine",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, kind)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert_ne!(
            stdout.read_line(&mut line).unwrap(),
            0,
            "{kind}: the child ended early"
        );
        if line.as_bytes().ends_with(READY) {
            break;
        }
    }
    // The child is about to park in its read; let it.
    std::thread::sleep(WAIT);
    let during = kernel_flags(shared.as_raw_fd());
    feed();
    let output = child.wait_with_output().unwrap();
    let mut rest = String::new();
    stdout.read_to_string_lossy(&mut rest);
    let report = format!(
        "{kind}: child {:?}\nstdout: {rest}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{report}");
    assert!(rest.contains("child ok"), "{report}");
    assert_eq!(
        during, before,
        "{kind}: the shared stdin's flags while the child was parked reading it"
    );
    assert_eq!(
        kernel_flags(shared.as_raw_fd()),
        before,
        "{kind}: flags at the end"
    );
}

trait ReadToStringLossy {
    fn read_to_string_lossy(&mut self, out: &mut String);
}

impl<R: io::Read> ReadToStringLossy for R {
    fn read_to_string_lossy(&mut self, out: &mut String) {
        let mut bytes = Vec::new();
        let _ = self.read_to_end(&mut bytes);
        out.push_str(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn child_reading_piped_stdin_parks_and_leaves_its_flags() {
    let (reader, mut writer) = io::pipe().unwrap();
    let reader: OwnedFd = reader.into();
    let shared = reader.try_clone().unwrap();
    run_child("pipe", reader, shared, move || {
        writer.write_all(b"hello\n").unwrap();
    });
}

#[test]
fn child_reading_terminal_stdin_parks_and_leaves_its_flags() {
    // SAFETY: the usual pseudo-terminal set-up, on descriptors owned here.
    let (master, slave) = unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(master >= 0, "posix_openpt: {}", io::Error::last_os_error());
        let master = OwnedFd::from_raw_fd(master);
        assert_eq!(libc::grantpt(master.as_raw_fd()), 0);
        assert_eq!(libc::unlockpt(master.as_raw_fd()), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(
            libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()),
            0
        );
        let slave = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(slave >= 0, "open slave: {}", io::Error::last_os_error());
        (master, OwnedFd::from_raw_fd(slave))
    };
    let shared = slave.try_clone().unwrap();
    // The master stays open until the child has ended: closing it hangs
    // the terminal up.
    let mut master = std::fs::File::from(master);
    run_child("terminal", slave, shared, || {
        master.write_all(b"hello\n").unwrap();
    });
    drop(master);
}
