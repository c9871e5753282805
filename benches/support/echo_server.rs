//! What every echo server process of `echo_process.rs` shares: the listener
//! it inherits, its connection tally, the blocking accept loop and echo
//! handler, and the control loop on stdin/stdout through which the driver
//! asks for counters. `echo.rs` uses the accept loop and handler too.
//!
//! Included with `#[path]` by the `echo_process` bench (peer servers, no
//! `coroutines` in the binary) and by the `echo_server_coroutines` binary
//! (ours). It uses std only, plus one libc function declared here, so that
//! the binary that includes it links no more than it names.

use std::io::{BufRead, Read, Write};
use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes each server handler reads at once.
pub const SERVER_BUFFER: usize = 4096;

/// The control protocol: the server prints [`READY`] once it accepts, then
/// answers each [`STATS`] line on stdin with
/// `<accepted> <finished> <process CPU ns>`, and exits when stdin closes.
pub const READY: &str = "ready";
pub const STATS: &str = "stats";

/// Connections accepted and finished (closed by the server) so far.
#[derive(Default)]
pub struct Tally {
    accepted: AtomicU64,
    finished: AtomicU64,
}

/// What a server counts of its connections.
pub trait Count: Send + Sync + 'static {
    fn accept(&self);
    fn finish(&self);
}

impl Count for Tally {
    fn accept(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    fn finish(&self) {
        self.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// Accepts on `listener` for ever, each connection with `TCP_NODELAY`;
/// `spawn` starts [`echo_blocking`] on it (a thread, a coroutine), counted
/// in `tally`. `name` says whose accept failed.
pub fn accept_loop<C: Count>(
    name: &str,
    listener: TcpListener,
    tally: Arc<C>,
    spawn: impl Fn(Box<dyn FnOnce() + Send>),
) {
    for stream in listener.incoming() {
        let stream = stream.unwrap_or_else(|e| panic!("{name}: accept: {e}"));
        stream
            .set_nodelay(true)
            .unwrap_or_else(|e| panic!("{name}: TCP_NODELAY: {e}"));
        let tally = tally.clone();
        tally.accept();
        spawn(Box::new(move || {
            echo_blocking(stream);
            tally.finish();
        }));
    }
}

/// The listening socket the driver passed as descriptor `fd` (its text is
/// the argument `arg`).
pub fn inherited_listener(arg: Option<&str>) -> TcpListener {
    let fd: RawFd = arg
        .and_then(|a| a.parse().ok())
        .expect("usage: pass the inherited listening descriptor's number");
    // SAFETY: the driver hands this process the descriptor of a bound,
    // listening TCP socket that nothing else in this process owns.
    unsafe { TcpListener::from_raw_fd(fd) }
}

/// The handler every blocking server runs: read, echo, until EOF.
pub fn echo_blocking(mut stream: impl Read + Write) {
    let mut buf = [0u8; SERVER_BUFFER];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// CPU time (user + system, all threads) this process has used, in ns.
pub fn process_cpu_ns() -> u64 {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    let ret = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(ret, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Announces that the server is up, then answers the driver on stdin until
/// it closes stdin; exits the process then, without waiting for handlers.
pub fn control_loop(tally: &Tally) -> ! {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{READY}").and_then(|()| out.flush()).ok();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == STATS {
            let accepted = tally.accepted.load(Ordering::Relaxed);
            let finished = tally.finished.load(Ordering::Relaxed);
            let cpu = process_cpu_ns();
            if writeln!(out, "{accepted} {finished} {cpu}")
                .and_then(|()| out.flush())
                .is_err()
            {
                break;
            }
        }
    }
    std::process::exit(0)
}
