//! Round L probes against the last commits (af748b7..59249b2):
//!
//! - `Runtime::drop` from inside one of its coroutines now abandons every
//!   other registered coroutine at once, even one running on another
//!   worker at that instant: a scope and a join handle are then told the
//!   coroutine ended while it still runs; the dropper itself is skipped,
//!   so if it parks after the drop nothing ever fails its handle.
//! - The driver's new past-deadline rule (`hooks/driver.rs`): a wait that
//!   ends after the call's `SO_RCVTIMEO`/`SO_SNDTIMEO` deadline makes one
//!   last attempt and maps anything that is not data to EAGAIN: an EOF, a
//!   reset, EPIPE or ECONNREFUSED that came well before the deadline, but
//!   was seen by a coroutine resumed late (its worker was busy), is
//!   reported as a timeout, and the error is consumed.
//! - Late wakes (plain threads, signal handlers) of a runtime being
//!   dropped from outside: no descriptor opened after the drop is written
//!   to or closed, the process's descriptors balance, no join hangs.
//! - Child waits racing a runtime drop: the pidfds are closed once, and a
//!   descriptor opened right after the drop stays open.
//! - `WorkerStats::queued` under a signal storm, the worker-count bound.
//!
//! Cases that count descriptors or install handlers run one at a time
//! (`serial`); run the binary with `--test-threads=1`.

mod support;

use support::{fds, serial};

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use coroutines::{JoinHandle, Runtime};
use support::differential::{on_plain_thread_within, outcome, Errno, Side};
use support::{
    after, compute, join_within, no_monitor, payload_text, set_timeout_opt, watchdog_on,
};

// ------------------------------------------------------------------ helpers

/// Spins (no hooked call, so the coroutine keeps its worker) until `flag`
/// is set; false after 3 s.
fn spin_until(flag: &AtomicBool) -> bool {
    let start = Instant::now();
    while !flag.load(Ordering::SeqCst) {
        if start.elapsed() > Duration::from_secs(3) {
            return false;
        }
        std::hint::spin_loop();
    }
    true
}

/// A runtime of two workers, kept in a slot from which one of its own
/// coroutines takes it to drop it.
fn runtime_in_slot() -> (Runtime, Arc<Mutex<Option<Runtime>>>) {
    let runtime = Runtime::builder()
        .workers(2)
        .blocked_worker_warnings(false)
        .build()
        .unwrap();
    (runtime, Arc::new(Mutex::new(None)))
}

// ------------------------- 1-3. a runtime dropped from its own coroutine

/// What the scope owner saw.
#[derive(Debug, PartialEq, Eq)]
enum ScopeEnd {
    /// The scope returned after its coroutine had ended (correct).
    AfterTheCoroutine,
    /// The scope returned while its scoped coroutine was still running
    /// (it borrows the scope owner's stack: use after free once the owner
    /// goes on).
    WhileTheCoroutineRan,
    /// The scoped coroutine never got onto the other worker.
    NotSetUp,
}

/// A coroutine opens a scope, spawns a scoped coroutine that computes on
/// the other worker while borrowing the owner's stack, and drops the
/// runtime (its own) from inside the scope. The scope must not return
/// while the scoped coroutine still runs: `scope.rs` relies on `fail`
/// coming only for coroutines that never run again.
#[test]
fn scope_does_not_return_while_its_coroutine_runs_after_an_inside_drop() {
    let _serial = serial();
    let (runtime, slot) = runtime_in_slot();
    let s = slot.clone();
    let owner = runtime.spawn(move || {
        let started = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let mut borrowed = [0u64; 64];
        let mut set_up = true;
        let _ = panic::catch_unwind(AssertUnwindSafe(|| {
            coroutines::scope(|scope| {
                let (started2, done2) = (started.clone(), done.clone());
                let borrowed = &mut borrowed;
                scope.spawn(move || {
                    started2.store(true, Ordering::SeqCst);
                    let start = Instant::now();
                    while start.elapsed() < Duration::from_millis(400) {
                        // Uses the owner's stack all along.
                        borrowed[0] = borrowed[0].wrapping_add(1);
                        std::hint::spin_loop();
                    }
                    done2.store(true, Ordering::SeqCst);
                });
                set_up = spin_until(&started);
                drop(s.lock().unwrap().take());
            })
        }));
        let end = match (set_up, done.load(Ordering::SeqCst)) {
            (false, _) => ScopeEnd::NotSetUp,
            (true, true) => ScopeEnd::AfterTheCoroutine,
            (true, false) => ScopeEnd::WhileTheCoroutineRan,
        };
        // Keeps `borrowed` alive until the scoped coroutine has stopped
        // touching it, so that the probe itself corrupts nothing.
        spin_until(&done);
        std::hint::black_box(&borrowed);
        end
    });
    *slot.lock().unwrap() = Some(runtime);
    match join_within(owner, Duration::from_secs(10)) {
        None => panic!("the scope owner's join hung"),
        // The owner parked in the scope and was failed at the shutdown:
        // the scope did not return early.
        Some(Err(p)) => eprintln!("owner failed: {}", payload_text(&*p)),
        Some(Ok(end)) => assert_eq!(
            end,
            ScopeEnd::AfterTheCoroutine,
            "coroutines::scope returned while a scoped coroutine was still running"
        ),
    }
}

/// A coroutine computes on one worker; another coroutine drops the runtime
/// from the other worker. A plain thread joins the computing coroutine:
/// the join must not return while the coroutine is still running (std's
/// join never does), and a handle's result, if Err, should not be followed
/// by the coroutine's side effects.
#[test]
fn join_does_not_return_while_the_coroutine_still_runs_after_an_inside_drop() {
    let _serial = serial();
    let (runtime, slot) = runtime_in_slot();
    let started = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let worker = {
        let (started, done) = (started.clone(), done.clone());
        runtime.spawn(move || {
            started.store(true, Ordering::SeqCst);
            compute(Duration::from_millis(400));
            done.store(true, Ordering::SeqCst);
            7u32
        })
    };
    let s = slot.clone();
    let st = started.clone();
    let dropper = runtime.spawn(move || {
        let set_up = spin_until(&st);
        drop(s.lock().unwrap().take());
        set_up
    });
    *slot.lock().unwrap() = Some(runtime);
    let joined = join_within(worker, Duration::from_secs(10));
    let done_at_join = done.load(Ordering::SeqCst);
    assert_eq!(
        join_within(dropper, Duration::from_secs(10)).map(|r| r.ok()),
        Some(Some(true)),
        "not set up"
    );
    let joined = joined.expect("the join hung");
    let what = match &joined {
        Ok(v) => format!("Ok({v})"),
        Err(p) => format!("Err({})", payload_text(&**p)),
    };
    assert!(
        done_at_join,
        "join returned {what} while the coroutine was still running"
    );
}

/// The dropper itself is not abandoned; if it parks after dropping its
/// runtime (a sleep), its worker stops and drops its timer: nothing is
/// left to run it or to fail its handle. Its join must not hang.
#[test]
fn dropper_that_parks_after_dropping_its_runtime_does_not_hang_its_join() {
    let _serial = serial();
    let (runtime, slot) = runtime_in_slot();
    let s = slot.clone();
    let dropper = runtime.spawn(move || {
        thread::sleep(Duration::from_millis(20));
        drop(s.lock().unwrap().take());
        thread::sleep(Duration::from_millis(20));
        7u32
    });
    *slot.lock().unwrap() = Some(runtime);
    match join_within(dropper, Duration::from_secs(5)) {
        None => panic!("the dropper's join hangs (it parked after the drop)"),
        Some(Ok(v)) => assert_eq!(v, 7),
        Some(Err(p)) => eprintln!("dropper failed: {}", payload_text(&*p)),
    }
}

// ------------------- 4-8. timeouts seen by a coroutine resumed late

/// The thread's value, then the coroutine's: the case runs on a plain
/// thread, then as the root coroutine of a one-worker runtime without the
/// blocked-worker monitor, where a neighbour that computes (spawned by the
/// case) holds the worker past the call's deadline.
fn late<T, F>(what: &str, case: F) -> (T, T)
where
    T: PartialEq + std::fmt::Debug + Send + 'static,
    F: Fn(Side) -> T + Send + Sync + 'static,
{
    let case = Arc::new(case);
    let c = case.clone();
    let thread = on_plain_thread_within(what, Duration::from_secs(10), move || c(Side::Thread));
    let coroutine = watchdog_on(what, Duration::from_secs(10), no_monitor(), move || {
        case(Side::Coroutine)
    });
    (thread, coroutine)
}

/// How long the neighbour holds the worker, and the call's timeout.
const HOLD: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_millis(80);
/// When the peer acts: well before the deadline.
const PEER_ACTS: Duration = Duration::from_millis(15);

fn neighbour(side: Side) -> support::differential::Party<()> {
    side.spawn(|| compute(HOLD))
}

/// A Unix stream read with SO_RCVTIMEO; the peer closes 15 ms in (EOF).
/// A thread's read returns 0 then; the coroutine's read must too, even
/// when its worker only gets back to it past the deadline.
#[test]
fn late_resumed_read_returns_eof_not_eagain() {
    let _serial = serial();
    let (thread, coroutine) = late("eof", |side| {
        let (a, b) = UnixStream::pair().unwrap();
        set_timeout_opt(a.as_raw_fd(), libc::SO_RCVTIMEO, TIMEOUT);
        let n = neighbour(side);
        let closer = after(PEER_ACTS, move || drop(b));
        let mut buf = [0u8; 16];
        let first = outcome((&a).read(&mut buf));
        n.join();
        closer.join().unwrap();
        first
    });
    assert_eq!(thread, Ok(0), "reference");
    assert_eq!(coroutine, thread, "EOF before the deadline, resumed late");
}

/// As `late_resumed_read_returns_eof_not_eagain`, on a default one-worker
/// runtime (blocked-worker monitor on, 20 ms threshold) and a 10 ms
/// SO_RCVTIMEO, the peer closing 2 ms in: the monitor's rescue comes after
/// the deadline, so the EOF is reported as EAGAIN here too.
#[test]
fn late_resumed_read_returns_eof_with_the_monitor_on() {
    let _serial = serial();
    let case = |side: Side| {
        let (a, b) = UnixStream::pair().unwrap();
        set_timeout_opt(a.as_raw_fd(), libc::SO_RCVTIMEO, Duration::from_millis(10));
        let n = neighbour(side);
        let closer = after(Duration::from_millis(2), move || drop(b));
        let mut buf = [0u8; 16];
        let first = outcome((&a).read(&mut buf));
        n.join();
        closer.join().unwrap();
        first
    };
    let thread = on_plain_thread_within("eof monitor", Duration::from_secs(10), move || {
        case(Side::Thread)
    });
    let coroutine = support::watchdog("eof monitor", Duration::from_secs(10), 1, move || {
        case(Side::Coroutine)
    });
    assert_eq!(thread, Ok(0), "reference");
    assert_eq!(
        coroutine, thread,
        "EOF 2 ms in, 10 ms timeout, default monitor"
    );
}

/// A TCP read with SO_RCVTIMEO; the peer resets the connection 15 ms in.
/// The thread gets ECONNRESET, and its next read 0. The coroutine must
/// not turn the reset into EAGAIN (and so lose it).
#[test]
fn late_resumed_read_reports_a_reset() {
    let _serial = serial();
    let (thread, coroutine) = late("reset", |side| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        set_timeout_opt(a.as_raw_fd(), libc::SO_RCVTIMEO, TIMEOUT);
        let n = neighbour(side);
        let resetter = after(PEER_ACTS, move || {
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: a live linger struct of the given size.
            unsafe {
                libc::setsockopt(
                    b.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &linger as *const libc::linger as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            drop(b);
        });
        let mut buf = [0u8; 16];
        let first = outcome((&a).read(&mut buf));
        n.join();
        resetter.join().unwrap();
        let second = outcome((&a).read(&mut buf));
        (first, second)
    });
    assert_eq!(thread, (Err(Errno(libc::ECONNRESET)), Ok(0)), "reference");
    assert_eq!(coroutine, thread, "reset before the deadline, resumed late");
}

/// A connected UDP socket with SO_RCVTIMEO; 15 ms in, a datagram it sends
/// (from a plain thread) to a closed port brings back ECONNREFUSED. The
/// thread's recv fails with it.
#[test]
fn late_resumed_udp_recv_reports_refused() {
    let _serial = serial();
    let (thread, coroutine) = late("udp refused", |side| {
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = closed.local_addr().unwrap();
        drop(closed);
        let a = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        a.connect(target).unwrap();
        set_timeout_opt(a.as_raw_fd(), libc::SO_RCVTIMEO, TIMEOUT);
        let n = neighbour(side);
        let a2 = a.clone();
        let sender = after(PEER_ACTS, move || {
            // A raw send: the plain thread's own, whatever the side.
            let byte = [1u8];
            // SAFETY: a live buffer of the given length.
            unsafe { libc::send(a2.as_raw_fd(), byte.as_ptr().cast(), 1, 0) };
        });
        let mut buf = [0u8; 16];
        let first = outcome(a.recv(&mut buf));
        n.join();
        sender.join().unwrap();
        first
    });
    assert_eq!(thread, Err(Errno(libc::ECONNREFUSED)), "reference");
    assert_eq!(
        coroutine, thread,
        "ICMP error before the deadline, resumed late"
    );
}

/// A Unix stream write into a full buffer with SO_SNDTIMEO; the reader
/// closes 15 ms in (with data unread: the thread's write fails with
/// ECONNRESET; EPIPE without).
#[test]
fn late_resumed_write_reports_the_peer_close() {
    let _serial = serial();
    let (thread, coroutine) = late("epipe", |side| {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let chunk = [7u8; 4096];
        while (&a).write(&chunk).is_ok() {}
        a.set_nonblocking(false).unwrap();
        set_timeout_opt(a.as_raw_fd(), libc::SO_SNDTIMEO, TIMEOUT);
        let n = neighbour(side);
        let closer = after(PEER_ACTS, move || drop(b));
        let first = outcome((&a).write(&chunk[..1]));
        n.join();
        closer.join().unwrap();
        first
    });
    assert!(
        matches!(thread, Err(Errno(libc::EPIPE | libc::ECONNRESET))),
        "reference: {thread:?}"
    );
    assert_eq!(
        coroutine, thread,
        "peer closed before the deadline, resumed late"
    );
}

/// An unconnected Unix datagram sender with SO_SNDTIMEO, to a full
/// receiver (the new back-off path, `sleep_on_fd`); the receiver is closed
/// 40 ms in. The thread's send_to fails with ECONNREFUSED then.
#[test]
fn late_resumed_unix_datagram_send_reports_refused() {
    let _serial = serial();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let (thread, coroutine) = late("dgram refused", |side| {
        let name = format!(
            "coroutines-probe-l-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&addr).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        sender.set_nonblocking(true).unwrap();
        let mut filled = 0;
        while sender.send_to_addr(b"x", &addr).is_ok() {
            filled += 1;
        }
        assert!(filled > 0);
        sender.set_nonblocking(false).unwrap();
        set_timeout_opt(sender.as_raw_fd(), libc::SO_SNDTIMEO, TIMEOUT);
        let n = neighbour(side);
        let closer = after(Duration::from_millis(40), move || drop(receiver));
        let first = outcome(sender.send_to_addr(b"y", &addr));
        n.join();
        closer.join().unwrap();
        first
    });
    assert_eq!(thread, Err(Errno(libc::ECONNREFUSED)), "reference");
    assert_eq!(
        coroutine, thread,
        "receiver closed before the deadline, resumed late"
    );
}

/// Control: data that came before the deadline is returned by a coroutine
/// resumed late (the last attempt takes it).
#[test]
fn late_resumed_read_returns_data_control() {
    let _serial = serial();
    let (thread, coroutine) = late("data", |side| {
        let (a, b) = UnixStream::pair().unwrap();
        set_timeout_opt(a.as_raw_fd(), libc::SO_RCVTIMEO, TIMEOUT);
        let n = neighbour(side);
        let writer = after(PEER_ACTS, move || {
            (&b).write_all(b"hello").unwrap();
            b
        });
        let mut buf = [0u8; 16];
        let first = outcome((&a).read(&mut buf)).map(|k| buf[..k].to_vec());
        n.join();
        drop(writer.join().unwrap());
        first
    });
    assert_eq!(thread, Ok(b"hello".to_vec()), "reference");
    assert_eq!(coroutine, thread);
}

// ------------- 9. late wakes of a runtime dropped from outside, new fds

/// Threads the handler unparks: leaked, never freed.
static STORM_TARGETS: [AtomicPtr<Thread>; 8] = [const { AtomicPtr::new(ptr::null_mut()) }; 8];
static HANDLER_WAKES: AtomicU64 = AtomicU64::new(0);

extern "C" fn unpark_targets(_: libc::c_int) {
    for target in &STORM_TARGETS {
        let thread = target.load(Ordering::SeqCst);
        // SAFETY: a leaked `Thread`, or null.
        if let Some(thread) = unsafe { thread.as_ref() } {
            thread.unpark();
            HANDLER_WAKES.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn raise_here(signal: libc::c_int) {
    // SAFETY: signals the calling thread; the handler is installed.
    unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid(),
            libc::gettid(),
            signal as libc::c_long,
        )
    };
}

/// Whether `fd` is open.
fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on any number is harmless.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// 200 runtimes, each with coroutines parked in `thread::park` that plain
/// threads and a signal handler keep unparking, dropped from outside
/// during the storm. Right after each drop an eventfd and a pipe are
/// opened (likely on the numbers of the closed pollers): late wakes must
/// neither write to them nor close them; no join hangs; the process's
/// descriptors balance.
#[test]
fn runtime_dropped_under_late_wakes_touches_no_new_descriptor() {
    let _serial = serial();
    support::install_handler(libc::SIGUSR2, unpark_targets);
    let fds0 = fds();
    let mut problems = Vec::new();
    for round in 0..200 {
        let runtime = Runtime::builder()
            .workers(2)
            .blocked_worker_warnings(false)
            .build()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Thread>();
        let handles: Vec<JoinHandle<()>> = (0..8)
            .map(|_| {
                let tx = tx.clone();
                runtime.spawn(move || {
                    let _ = tx.send(thread::current());
                    loop {
                        thread::park();
                    }
                })
            })
            .collect();
        let targets: Vec<Thread> = (0..8).map(|_| rx.recv().unwrap()).collect();
        for (slot, t) in STORM_TARGETS.iter().zip(&targets) {
            slot.store(Box::into_raw(Box::new(t.clone())), Ordering::SeqCst);
        }
        let stormers: Vec<_> = (0..2)
            .map(|k| {
                let (stop, targets) = (stop.clone(), targets.clone());
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match k {
                            0 => targets.iter().for_each(Thread::unpark),
                            _ => raise_here(libc::SIGUSR2),
                        }
                    }
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(2));
        drop(runtime);
        // Opened right after the drop, while the storm goes on.
        // SAFETY: plain system calls on fresh descriptors.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        let mut pipe = [0; 2];
        // SAFETY: as above.
        unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        thread::sleep(Duration::from_millis(3));
        stop.store(true, Ordering::SeqCst);
        stormers.into_iter().for_each(|s| s.join().unwrap());
        for slot in &STORM_TARGETS {
            slot.store(ptr::null_mut(), Ordering::SeqCst);
        }
        let mut counter = 0u64;
        // SAFETY: an 8-byte buffer for an eventfd read.
        let got = unsafe { libc::read(efd, (&mut counter as *mut u64).cast(), 8) };
        if got != -1 || io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN) {
            problems.push(format!(
                "round {round}: the new eventfd {efd} read {got} ({counter})"
            ));
        }
        let mut byte = [0u8; 8];
        // SAFETY: a live buffer.
        let got = unsafe { libc::read(pipe[0], byte.as_mut_ptr().cast(), 8) };
        if got != -1 {
            problems.push(format!("round {round}: the new pipe {pipe:?} read {got}"));
        }
        for fd in [efd, pipe[0], pipe[1]] {
            if !is_open(fd) {
                problems.push(format!("round {round}: new descriptor {fd} was closed"));
            } else {
                // SAFETY: ours.
                unsafe { libc::close(fd) };
            }
        }
        for h in handles {
            match join_within(h, Duration::from_secs(5)) {
                None => problems.push(format!("round {round}: a join hung")),
                Some(Ok(())) => problems.push(format!("round {round}: a parker returned")),
                Some(Err(_)) => {}
            }
        }
        if !problems.is_empty() {
            break;
        }
    }
    let start = Instant::now();
    while fds() > fds0 + 2 && start.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(20));
    }
    let fds1 = fds();
    eprintln!(
        "handler wakes: {}, fds {fds0} -> {fds1}",
        HANDLER_WAKES.load(Ordering::Relaxed)
    );
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(fds1 <= fds0 + 2, "descriptors leaked: {fds0} -> {fds1}");
}

// ------------------------ 10. child waits racing the runtime's drop

/// 40 runtimes whose coroutines wait for children (`Command::status`)
/// that end around the time the runtime is dropped from outside. Right
/// after each drop a pipe is opened: it must stay open and working (a
/// pidfd closed twice would close it); descriptors balance at the end
/// (zombies are a documented limit, not counted).
#[test]
fn child_waits_racing_the_drop_close_no_foreign_descriptor() {
    let _serial = serial();
    let fds0 = fds();
    let mut problems = Vec::new();
    for round in 0..40 {
        let runtime = Runtime::builder().workers(2).build().unwrap();
        let waiters: Vec<JoinHandle<bool>> = (0..4)
            .map(|k| {
                runtime.spawn(move || {
                    let delay = format!("0.0{}", 1 + (k + round) % 5);
                    std::process::Command::new("sleep")
                        .arg(delay)
                        .status()
                        .map(|s| s.success())
                        .unwrap_or(false)
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(10 + (round % 7) as u64 * 5));
        drop(runtime);
        let mut pipe = [0; 2];
        // SAFETY: a fresh pipe.
        unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) };
        thread::sleep(Duration::from_millis(30));
        for w in waiters {
            if join_within(w, Duration::from_secs(5)).is_none() {
                problems.push(format!("round {round}: a child wait's join hung"));
            }
        }
        // SAFETY: the pipe is ours.
        let wrote = unsafe { libc::write(pipe[1], b"z".as_ptr().cast(), 1) };
        let mut b = [0u8; 1];
        // SAFETY: as above.
        let read = unsafe { libc::read(pipe[0], b.as_mut_ptr().cast(), 1) };
        if wrote != 1 || read != 1 || b[0] != b'z' {
            problems.push(format!(
                "round {round}: the pipe {pipe:?} opened after the drop broke: wrote {wrote}, read {read}"
            ));
        }
        for fd in pipe {
            // SAFETY: ours.
            unsafe { libc::close(fd) };
        }
    }
    // Reap what the abandoned waits left.
    // SAFETY: a non-blocking wait for any child.
    while unsafe { libc::waitpid(-1, ptr::null_mut(), libc::WNOHANG) } > 0 {}
    let start = Instant::now();
    while fds() > fds0 + 2 && start.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(20));
    }
    let fds1 = fds();
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(fds1 <= fds0 + 2, "descriptors leaked: {fds0} -> {fds1}");
}

// ----------------- 11. WorkerStats::queued during a signal storm

static QUEUED_TARGET: AtomicPtr<Thread> = AtomicPtr::new(ptr::null_mut());

extern "C" fn unpark_queued_target(_: libc::c_int) {
    let thread = QUEUED_TARGET.load(Ordering::SeqCst);
    // SAFETY: a leaked `Thread`, or null.
    if let Some(thread) = unsafe { thread.as_ref() } {
        thread.unpark();
    }
}

/// Signal handlers keep waking a coroutine (its wakes go through the
/// mailbox) while a plain thread samples `worker_stats`: `queued` must
/// stay small (one coroutine can be queued at most once), never a wrapped
/// usize.
#[test]
fn queued_stays_small_under_a_signal_storm() {
    let _serial = serial();
    support::install_handler(libc::SIGURG, unpark_queued_target);
    let runtime = Arc::new(Runtime::builder().workers(2).build().unwrap());
    let (tx, rx) = mpsc::channel::<Thread>();
    let stop = Arc::new(AtomicBool::new(false));
    let parkers: Vec<_> = (0..4)
        .map(|_| {
            let (tx, stop) = (tx.clone(), stop.clone());
            runtime.spawn(move || {
                let _ = tx.send(thread::current());
                while !stop.load(Ordering::Relaxed) {
                    thread::park();
                }
            })
        })
        .collect();
    let targets: Vec<Thread> = (0..4).map(|_| rx.recv().unwrap()).collect();
    QUEUED_TARGET.store(
        Box::into_raw(Box::new(targets[0].clone())),
        Ordering::SeqCst,
    );
    let storm_stop = Arc::new(AtomicBool::new(false));
    let stormers: Vec<_> = (0..2)
        .map(|k| {
            let (s, targets) = (storm_stop.clone(), targets.clone());
            thread::spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    match k {
                        0 => raise_here(libc::SIGURG),
                        _ => targets.iter().for_each(Thread::unpark),
                    }
                }
            })
        })
        .collect();
    let max = AtomicUsize::new(0);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(700) {
        for w in runtime.worker_stats() {
            max.fetch_max(w.queued, Ordering::Relaxed);
        }
    }
    storm_stop.store(true, Ordering::SeqCst);
    stormers.into_iter().for_each(|s| s.join().unwrap());
    QUEUED_TARGET.store(ptr::null_mut(), Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    targets.iter().for_each(Thread::unpark);
    for p in parkers {
        assert!(matches!(
            join_within(p, Duration::from_secs(5)),
            Some(Ok(()))
        ));
    }
    let max = max.load(Ordering::Relaxed);
    assert!(
        max <= 8,
        "WorkerStats::queued reached {max} with 4 coroutines"
    );
}

// ----------------------------------------- 12. the worker-count bound

/// 4,097 workers is an InvalidInput error, not a panic. (A runtime of
/// 4,096 workers starts that many threads, which took 35 s here: the bound
/// itself is `n > MAX_WORKERS`.)
#[test]
fn worker_count_bound() {
    let _serial = serial();
    let err = Runtime::builder()
        .workers(4097)
        .build()
        .err()
        .map(|e| e.kind());
    assert_eq!(err, Some(io::ErrorKind::InvalidInput));
}
