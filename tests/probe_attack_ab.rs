//! Round AB probes: the holds' lock (`HELD`) under plain threads that
//! change modes in loops, many contending threads, a low-priority
//! contender, and fork while it is taken or awaited.
//!
//! Every case is bounded: a hang fails (a watchdog, or a child process
//! that is killed), it never stalls the run.

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::child::{child_case, rerun, wait_bounded};
use support::raw::{close, close_all, pipe};
use support::*;

/// The bound on a ticker gap or an accept's latency: generous, a blocked
/// worker or a stalled lock shows as hundreds of milliseconds.
const BOUND: Duration = Duration::from_millis(200);

fn flags(fd: RawFd) -> i32 {
    // SAFETY: F_GETFL of a descriptor.
    unsafe { libc::fcntl(fd, libc::F_GETFL) }
}

fn kernel_flags(fd: RawFd) -> i32 {
    // SAFETY: F_GETFL, raw, no pointers.
    let ret = unsafe {
        kernel_syscall(
            libc::SYS_fcntl,
            [fd as usize, libc::F_GETFL as usize, 0, 0, 0, 0],
        )
    };
    ret as i32
}

fn set_fl(fd: RawFd, value: i32) -> i32 {
    // SAFETY: F_SETFL of a descriptor.
    unsafe { libc::fcntl(fd, libc::F_SETFL, value) }
}

fn fionbio(fd: RawFd, on: bool) -> i32 {
    let mut arg: libc::c_int = on.into();
    // SAFETY: FIONBIO with a live int.
    unsafe { libc::ioctl(fd, libc::FIONBIO, &mut arg) }
}

/// Sets its flag when dropped, also as a failed assertion unwinds: the
/// looping threads of a failed case stop, and do not load the next cases.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn one_worker() -> coroutines::runtime::Builder {
    coroutines::Runtime::builder()
        .workers(1)
        .blocked_worker_threshold(Duration::MAX)
}

/// What the accepting side measured.
#[derive(Debug, Default)]
struct Served {
    accepted: u64,
    /// Longest connect-to-reply round trip a client saw.
    worst_latency: Duration,
    /// Client round trips that failed (timeout, reset).
    failed: u64,
    /// The ticker's longest gap.
    ticker_gap: Duration,
}

/// On the caller's (one-worker) runtime: an acceptor coroutine accepts
/// `n` connections on blocking listener `l` (holds) and answers each with a
/// byte; a plain client thread connects `n` times, `pace` apart, and times
/// each connect-to-reply round trip; a ticker measures the worker's gaps.
fn serve(l: RawFd, addr: SocketAddr, n: u64, pace: Duration) -> Served {
    let ticker = Ticker::start();
    let _ = ticker.take_max_gap();
    let acceptor = coroutines::spawn(move || {
        let mut accepted = 0;
        while accepted < n {
            // SAFETY: null address arguments are allowed.
            let fd = unsafe { libc::accept(l, std::ptr::null_mut(), std::ptr::null_mut()) };
            if fd < 0 {
                let e = errno();
                assert!(
                    e == libc::EINTR,
                    "accept on a blocking listener failed: errno {e}"
                );
                continue;
            }
            // SAFETY: a live descriptor, a live byte.
            unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
            close(fd);
            accepted += 1;
        }
        accepted
    });
    let client = thread::spawn(move || {
        let mut worst = Duration::ZERO;
        let mut failed = 0;
        for _ in 0..n {
            let start = Instant::now();
            match TcpStream::connect(addr) {
                Ok(mut s) => {
                    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                    let mut b = [0u8; 1];
                    match s.read(&mut b) {
                        Ok(1) => worst = worst.max(start.elapsed()),
                        _ => failed += 1,
                    }
                }
                Err(_) => failed += 1,
            }
            thread::sleep(pace);
        }
        (worst, failed)
    });
    // Join the client by polling, parking the root coroutine meanwhile.
    while !client.is_finished() {
        thread::sleep(Duration::from_millis(2));
    }
    let (worst_latency, failed) = client.join().unwrap();
    let accepted = if failed == 0 {
        acceptor.join().unwrap()
    } else {
        0
    };
    Served {
        accepted,
        worst_latency,
        failed,
        ticker_gap: ticker.take_max_gap(),
    }
}

fn blocking_listener() -> (TcpListener, RawFd, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let l = listener.as_raw_fd();
    let addr = listener.local_addr().unwrap();
    assert_eq!(flags(l) & libc::O_NONBLOCK, 0);
    (listener, l, addr)
}

/// What mode-changing plain threads saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Seen {
    /// `F_GETFL` answers with O_NONBLOCK (the user never set it).
    nonblocking_views: u64,
    /// Calls that failed.
    errors: u64,
}

/// A plain thread that, until `stop`, does `F_GETFL`, `F_SETFL` of the
/// flags it read, and `FIONBIO 0` on `fd`, counting what a user would not
/// see on a blocking descriptor: O_NONBLOCK, or a failure.
fn mode_looper(fd: RawFd, stop: Arc<AtomicBool>) -> thread::JoinHandle<(Seen, u64)> {
    thread::spawn(move || mode_loop(fd, &stop))
}

/// [`mode_looper`]'s loop, on the calling thread.
fn mode_loop(fd: RawFd, stop: &AtomicBool) -> (Seen, u64) {
    let mut seen = Seen::default();
    let mut rounds = 0;
    while !stop.load(Ordering::Relaxed) {
        let f = flags(fd);
        if f < 0 {
            seen.errors += 1;
        } else if f & libc::O_NONBLOCK != 0 {
            seen.nonblocking_views += 1;
        }
        if set_fl(fd, f & !libc::O_NONBLOCK) < 0 || fionbio(fd, false) < 0 {
            seen.errors += 1;
        }
        rounds += 1;
    }
    (seen, rounds)
}

// ---------------------------------------------------------------------
// 1. One plain thread changing the listener's mode in a tight loop.
// ---------------------------------------------------------------------

/// Idea 1: a plain thread does F_GETFL / F_SETFL / FIONBIO 0 on the
/// listener in a tight loop while a one-worker runtime accepts 150
/// connections on it. Each accept answers within [`BOUND`], the ticker on
/// the same worker never stalls longer, the thread never sees O_NONBLOCK,
/// and the listener ends blocking.
#[test]
fn mode_loop_thread_beside_accepts() {
    let (listener, l, addr) = blocking_listener();
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_unwind = StopOnDrop(stop.clone());
    let looper = mode_looper(l, stop.clone());
    let served = watchdog_on(
        "mode loop beside accepts",
        WATCHDOG,
        one_worker(),
        move || serve(l, addr, 150, Duration::from_micros(500)),
    );
    stop.store(true, Ordering::SeqCst);
    let (seen, rounds) = looper.join().unwrap();
    eprintln!("mode loop: {served:?}, {seen:?} over {rounds} rounds");
    assert_eq!(served.failed, 0, "{served:?}");
    assert_eq!(served.accepted, 150);
    assert!(served.worst_latency < BOUND, "{served:?}");
    assert!(served.ticker_gap < BOUND, "{served:?}");
    assert_eq!(seen, Seen::default(), "the looping thread's view");
    assert_eq!(
        kernel_flags(l) & libc::O_NONBLOCK,
        0,
        "kernel ends blocking"
    );
    assert_eq!(flags(l) & libc::O_NONBLOCK, 0, "user view ends blocking");
    drop(listener);
}

// ---------------------------------------------------------------------
// 2. Eight threads contending.
// ---------------------------------------------------------------------

/// Idea 2: eight plain threads (4x the CPUs) change modes in loops, four on
/// the listener and four on pipes of their own, while the worker accepts.
/// No hang, bounded gaps and latencies, no O_NONBLOCK seen, right final
/// flags on the listener and the pipes.
#[test]
fn eight_threads_contend_beside_accepts() {
    let (listener, l, addr) = blocking_listener();
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_unwind = StopOnDrop(stop.clone());
    let pipes: Vec<(RawFd, RawFd)> = (0..4).map(|_| pipe(0)).collect();
    let mut loopers = Vec::new();
    for i in 0..8 {
        let fd = if i < 4 { l } else { pipes[i - 4].0 };
        loopers.push(mode_looper(fd, stop.clone()));
    }
    let served = among_others(|| {
        watchdog_on("eight contenders", WATCHDOG, one_worker(), move || {
            serve(l, addr, 100, Duration::from_micros(500))
        })
    });
    stop.store(true, Ordering::SeqCst);
    let mut seen = Seen::default();
    for looper in loopers {
        let (s, _) = looper.join().unwrap();
        seen.nonblocking_views += s.nonblocking_views;
        seen.errors += s.errors;
    }
    eprintln!("eight: {served:?}, {seen:?}");
    assert_eq!(served.failed, 0, "{served:?}");
    assert!(served.worst_latency < BOUND, "{served:?}");
    assert!(served.ticker_gap < BOUND, "{served:?}");
    assert_eq!(seen, Seen::default());
    assert_eq!(kernel_flags(l) & libc::O_NONBLOCK, 0);
    for &(r, w) in &pipes {
        assert_eq!(kernel_flags(r) & libc::O_NONBLOCK, 0);
        close_all([r, w]);
    }
    drop(listener);
}

// ---------------------------------------------------------------------
// 3. Fork while the lock is taken or awaited.
// ---------------------------------------------------------------------

/// Two plain threads change the modes of pipes of their own in loops (the
/// lock is taken or awaited most of the time); the calling thread forks up
/// to 40 times, and each child sets the flags of a third pipe with
/// `F_SETFL` and exits. Returns the children that did not exit within 2 s
/// (killed), and the forks made.
fn fork_trials() -> (u32, u32) {
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_unwind = StopOnDrop(stop.clone());
    let (p1, p2, p3) = (pipe(0), pipe(0), pipe(0));
    let a = mode_looper(p1.0, stop.clone());
    let b = mode_looper(p2.0, stop.clone());
    thread::sleep(Duration::from_millis(10));
    let mut hung = 0;
    let mut forks = 0;
    for _ in 0..40 {
        // SAFETY: the child makes one hooked fcntl and `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            set_fl(p3.0, libc::O_NONBLOCK);
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(0) };
        }
        assert!(pid > 0, "fork: errno {}", errno());
        forks += 1;
        let start = Instant::now();
        let mut status = 0;
        loop {
            // SAFETY: a child of ours.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break;
            }
            if start.elapsed() > Duration::from_secs(2) {
                hung += 1;
                // SAFETY: a child of ours.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
        if hung >= 2 {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    a.join().unwrap();
    b.join().unwrap();
    close_all([p1.0, p1.1, p2.0, p2.1, p3.0, p3.1]);
    (hung, forks)
}

/// Idea 3, in a process that has built a runtime (whose atfork handler
/// makes a child's hooks pass through): on plain libc a child's `fcntl`
/// never waits for anything; every child must exit within 2 s.
#[test]
fn fork_while_others_change_modes() {
    alone(|| {
        let runtime = one_worker().build().unwrap();
        let (hung, forks) = fork_trials();
        drop(runtime);
        assert_eq!(hung, 0, "{hung} of {forks} forked children hung in F_SETFL");
    });
}

const FORK_NO_RUNTIME: &str = "fork in a process without a runtime";

/// Idea 3 in a child process that never builds a runtime (a program that
/// links the crate and forks from plain threads, before or without a
/// runtime): every forked child's `F_SETFL` must finish, as on plain libc.
#[test]
fn fork_without_runtime_while_others_change_modes() {
    if child_case().as_deref() == Some(FORK_NO_RUNTIME) {
        let (hung, forks) = fork_trials();
        eprintln!("FORKS hung={hung} of {forks}");
        // SAFETY: ends the child process.
        unsafe { libc::_exit(if hung == 0 { 0 } else { 3 }) };
    }
    let (output, ended) = wait_bounded(
        rerun(FORK_NO_RUNTIME).spawn().unwrap(),
        Duration::from_secs(10),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr.lines().find(|l| l.starts_with("FORKS"));
    assert!(ended, "the child did not end: {stderr}");
    assert_eq!(
        output.status.code(),
        Some(0),
        "forked children hung in F_SETFL: {line:?}"
    );
}

// ---------------------------------------------------------------------
// 4. A low-priority thread among the takers.
// ---------------------------------------------------------------------

/// Idea 4: a SCHED_IDLE plain thread and a normal one change the modes of
/// pipes of their own in loops while the worker accepts (holds), more
/// threads than CPUs. A low-priority thread's place among the takers must
/// not hold up the worker (a ticket lock's turn for a thread that does not
/// run did, for 0.7-0.9 s): the ticker's gap and the accepts' latency stay
/// under [`BOUND`]. (With normal threads spinning on every CPU as well, a
/// SCHED_IDLE thread preempted while it *holds* the lock still stalls the
/// worker: a known limit, in docs/troubleshooting.md.)
#[test]
fn low_priority_thread_among_the_takers() {
    alone(|| {
        let (listener, l, addr) = blocking_listener();
        let stop = Arc::new(AtomicBool::new(false));
        let _stop_on_unwind = StopOnDrop(stop.clone());
        let (p1, p2) = (pipe(0), pipe(0));
        let idle = {
            let stop = stop.clone();
            thread::spawn(move || {
                // SAFETY: a zeroed sched_param is valid for SCHED_IDLE.
                let param: libc::sched_param = unsafe { std::mem::zeroed() };
                // SAFETY: applies to the calling thread.
                let ret = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
                assert_eq!(ret, 0, "SCHED_IDLE: errno {}", errno());
                mode_loop(p1.0, &stop)
            })
        };
        let normal = mode_looper(p2.0, stop.clone());
        // 3 s: the accepts take about 0.6 s.
        let limit = Duration::from_secs(3);
        let served = watchdog_on("low priority", limit, one_worker(), move || {
            serve(l, addr, 100, Duration::from_millis(5))
        });
        stop.store(true, Ordering::SeqCst);
        let (_, idle_rounds) = idle.join().unwrap();
        let (_, normal_rounds) = normal.join().unwrap();
        close_all([p1.0, p1.1, p2.0, p2.1]);
        drop(listener);
        eprintln!(
            "low priority: {served:?}, idle rounds {idle_rounds}, normal rounds {normal_rounds}"
        );
        assert_eq!(served.failed, 0, "{served:?}");
        assert!(served.worst_latency < BOUND, "{served:?}");
        assert!(served.ticker_gap < BOUND, "{served:?}");
    });
}
