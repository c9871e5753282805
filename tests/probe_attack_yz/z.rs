//! Round Z: probes against holds kept off a file while its number is
//! closed or replaced (`exclude_holds`, `wait_for_close`), the hooked
//! `siginterrupt` and `sigset(sig, SIG_ERR)`.
//!
//! Every probe asserts what a plain thread without the runtime sees, or
//! what glibc's own function (found past the hook with
//! `dlsym(RTLD_NEXT, name)`) gives. Every probe of this file runs alone
//! (`serial_z`): they close numbers and install handlers.
//!
//! Found and fixed: the first exclusion counted closes per number until
//! their system call returned, so a file that took the number while a
//! lingering close of the old one went on waited for that close (z01, z02,
//! z11: ~0.5 s where a thread took 20 ms), and for ever if the closer's
//! runtime was dropped meanwhile (z03); it now names the closing file's
//! generation, and a hold that waits for it stops once the kernel says the
//! number names another file or none. `ssignal`, glibc's third name for
//! `signal`, was not hooked and missed the hooked `siginterrupt` (z04).

use crate::support;

use std::ffi::CStr;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use libc::{c_int, sighandler_t};
use support::differential::*;
use support::raw::{fill_below, set_linger};
use support::*;

fn serial_z() -> MutexGuard<'static, ()> {
    crate::SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

unsafe extern "C" {
    // Resolve to the runtime's hooks, defined in this executable.
    fn siginterrupt(signal: c_int, interrupt: c_int) -> c_int;
    fn sigset(signal: c_int, disposition: sighandler_t) -> sighandler_t;
    // Not hooked: glibc's (the same code as glibc's `signal`).
    fn ssignal(signal: c_int, handler: sighandler_t) -> sighandler_t;
    /// glibc's `sigaction` under its exported alias, past the hook.
    fn __sigaction(signal: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int;
}

type Interrupter = unsafe extern "C" fn(c_int, c_int) -> c_int;
type Installer = unsafe extern "C" fn(c_int, sighandler_t) -> sighandler_t;

fn glibc_symbol(name: &CStr) -> *mut libc::c_void {
    // SAFETY: dlsym with a NUL-terminated name.
    let address = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
    assert!(!address.is_null(), "glibc's {name:?}");
    address
}

fn glibc_siginterrupt() -> Interrupter {
    // SAFETY: the symbol has this type.
    unsafe { std::mem::transmute::<*mut libc::c_void, Interrupter>(glibc_symbol(c"siginterrupt")) }
}

fn glibc_installer(name: &CStr) -> Installer {
    // SAFETY: the symbol has this type.
    unsafe { std::mem::transmute::<*mut libc::c_void, Installer>(glibc_symbol(name)) }
}

fn rt(n: c_int) -> c_int {
    libc::SIGRTMIN() + n
}

/// Whether `fd` names no open file (a raw fcntl, no hook).
fn is_free(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on any number is harmless.
    unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFD) < 0 }
}

/// The kernel's status flags of `fd` (a raw fcntl, no hook).
fn raw_flags(fd: RawFd) -> i64 {
    // SAFETY: F_GETFL on any number is harmless.
    unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFL) }
}

fn close_all(fds: Vec<RawFd>) {
    for fd in fds {
        // SAFETY: opened by the probe, closed once.
        unsafe { libc::close(fd) };
    }
}

/// A TCP socket with unsent data its peer does not read, made to linger
/// for `seconds`: its close frees the number at once and then waits in the
/// kernel until the peer reads (or the linger time). Returns its number
/// and the peer.
fn lingering_socket(seconds: i32) -> (RawFd, TcpStream) {
    let (lingering, peer) = tcp_pair();
    small_buffers(&lingering, &peer);
    fill_send_buffer(&lingering);
    set_linger(lingering.as_raw_fd(), seconds);
    (lingering.into_raw_fd(), peer)
}

/// Reads `peer` to its end on a plain thread after `delay`: the lingering
/// close of its other end then returns.
fn drain_later(peer: TcpStream, delay: Duration) -> thread::JoinHandle<()> {
    after(delay, move || {
        let mut peer = peer;
        peer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut sink = vec![0u8; 64 * 1024];
        while let Ok(n) = peer.read(&mut sink) {
            if n == 0 {
                break;
            }
        }
    })
}

const SENTINEL: i32 = 4242;
/// Well under the drain at 100 ms, well over a loopback connection.
const QUICK: Duration = Duration::from_millis(80);

/// z01. A listener that got the number while a lingering close of the
/// number's previous file (another party's) is still in its system call:
/// an accept on it with a client arriving after 20 ms returns the
/// connection at once on a thread (the kernel freed the number first), and
/// in a coroutine too: the close marks only the file it ends
/// (`FdEntry::closing`). Found with a count on the number instead: the
/// accept parked until the close ended (here when the peer is drained,
/// 100 ms later; else the whole linger time).
#[test]
fn z01_accept_on_a_listener_that_got_the_number_during_a_lingering_close() {
    let _serial = serial_z();
    let got = differential_exclusive("accept during a lingering close", |side| {
        let (number, peer) = lingering_socket(3);
        let fillers = fill_below(number);
        let closer = side.spawn(move || {
            // SAFETY: the probe owns `number` and closes it once.
            unsafe { libc::close(number) }
        });
        while !is_free(number) {
            thread::sleep(Duration::from_millis(1));
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let same = listener.as_raw_fd() == number;
        let addr = listener.local_addr().unwrap();
        let drainer = drain_later(peer, Duration::from_millis(100));
        let client = after(Duration::from_millis(20), move || {
            TcpStream::connect(addr).is_ok()
        });
        set_errno(SENTINEL);
        let start = Instant::now();
        // SAFETY: a listener of this probe; no address wanted.
        let accepted = unsafe {
            libc::accept(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        let errno_after = errno();
        let elapsed = start.elapsed();
        eprintln!("{side:?}: waited {elapsed:?}");
        let connected = client.join().unwrap();
        drainer.join().unwrap();
        let closed = closer.join();
        if accepted >= 0 {
            // SAFETY: accepted just now.
            unsafe { libc::close(accepted) };
        }
        drop(listener);
        close_all(fillers);
        (
            same,
            connected,
            accepted >= 0,
            errno_after,
            elapsed < QUICK,
            closed,
        )
    });
    assert_eq!(got, (true, true, true, SENTINEL, true, 0));
}

/// z02. As z01 for a blocking `connect` of a new TCP socket that got the
/// number during another party's lingering close: on a thread it connects
/// to a loopback listener at once.
#[test]
fn z02_connect_on_a_socket_that_got_the_number_during_a_lingering_close() {
    let _serial = serial_z();
    let got = differential_exclusive("connect during a lingering close", |side| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (number, peer) = lingering_socket(3);
        let fillers = fill_below(number);
        let closer = side.spawn(move || {
            // SAFETY: the probe owns `number` and closes it once.
            unsafe { libc::close(number) }
        });
        while !is_free(number) {
            thread::sleep(Duration::from_millis(1));
        }
        let socket = raw_tcp_socket();
        let same = socket == number;
        let drainer = drain_later(peer, Duration::from_millis(100));
        set_errno(SENTINEL);
        let start = Instant::now();
        let sin = sockaddr_in(addr);
        // SAFETY: a live sockaddr_in of its size.
        let ret = unsafe {
            libc::connect(
                socket,
                (&sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        let errno_after = errno();
        let elapsed = start.elapsed();
        eprintln!("{side:?}: waited {elapsed:?}");
        drainer.join().unwrap();
        let closed = closer.join();
        // SAFETY: ours.
        unsafe { libc::close(socket) };
        drop(listener);
        close_all(fillers);
        (same, ret, errno_after, elapsed < QUICK, closed)
    });
    assert_eq!(got, (true, 0, SENTINEL, true, 0));
}

/// z03. A runtime dropped while one of its coroutines is in a lingering
/// close (on a helper thread) abandons that coroutine, never unwinding it:
/// the guard that clears `closing` (`HoldsExcluded`, hooks/descriptor.rs)
/// never drops. On a thread, as in a runtime, an accept on a listener given
/// the number later returns its connection: a hold that meets `closing`
/// asks the kernel whether the number still names the closing file. Found
/// with a count on the number instead: every later accept on that number,
/// in any runtime, parked for good, polling every 32 ms.
#[test]
fn z03_accept_on_a_number_whose_close_a_dropped_runtime_abandoned() {
    let _serial = serial_z();
    alone(|| {
        let (number, peer) = lingering_socket(2);
        let runtime = coroutines::Runtime::builder().workers(1).build().unwrap();
        runtime.block_on(move || {
            coroutines::spawn(move || {
                // SAFETY: the probe owns `number` and closes it once.
                unsafe { libc::close(number) };
            });
            thread::sleep(Duration::from_millis(50));
        });
        assert!(is_free(number), "the lingering close has started");
        let started = Instant::now();
        drop(runtime);
        let dropped_in = started.elapsed();
        drain_later(peer, Duration::ZERO).join().unwrap();
        // The helper's close has returned by now (the peer saw its end).
        thread::sleep(Duration::from_millis(20));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // SAFETY: `number` is free; the listener's description gets it.
        assert_eq!(unsafe { libc::dup2(listener.as_raw_fd(), number) }, number);
        let (done, finished) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let outcome = watchdog_try(move || {
                let client = after(Duration::from_millis(20), move || TcpStream::connect(addr));
                // SAFETY: a listener's number; no address wanted.
                let fd =
                    unsafe { libc::accept(number, std::ptr::null_mut(), std::ptr::null_mut()) };
                let _ = client.join();
                fd
            });
            let _ = done.send(outcome);
        });
        let outcome = finished.recv_timeout(Duration::from_millis(500));
        match outcome {
            Ok(Some(fd)) if fd >= 0 => {
                // SAFETY: accepted just now.
                unsafe { libc::close(fd) };
            }
            other => {
                // Unblock the parked accept (it retries every 32 ms and
                // sees the number closed).
                panic!(
                    "accept on number {number} after a dropped runtime's lingering close \
                     (runtime dropped in {dropped_in:?}): {other:?} within 0.5 s \
                     (expected a connection at once)"
                );
            }
        }
        // SAFETY: given by dup2 above.
        unsafe { libc::close(number) };
        drop(listener);
    });
}

/// Runs `body` as the root coroutine of a fresh one-worker runtime; None
/// if it panicked. The caller bounds the wait.
fn watchdog_try<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let runtime = coroutines::Runtime::builder().workers(1).build().unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(body)));
    result.ok()
}

extern "C" fn quiet_handler(_: c_int) {}

fn query_glibc(signal: c_int) -> libc::sigaction {
    // SAFETY: a query into a zeroed sigaction.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(__sigaction(signal, std::ptr::null(), &mut old), 0);
        old
    }
}

fn reset(signal: c_int) {
    // SAFETY: SIG_DFL through glibc's own sigaction.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        __sigaction(signal, &action, std::ptr::null_mut());
    }
}

/// z04. `ssignal` is glibc's `signal` under another name (same address):
/// after `siginterrupt(sig, 1)` it installs without `SA_RESTART`, through
/// the hooked pair as through glibc's.
#[test]
fn z04_ssignal_after_siginterrupt_installs_without_sa_restart() {
    let _serial = serial_z();
    let glibc_interrupt = glibc_siginterrupt();
    let glibc_ssignal = glibc_installer(c"ssignal");
    let outcome = |interrupt: Interrupter, ssignal: Installer, signal: c_int| {
        // SAFETY: valid signals, a valid handler.
        unsafe {
            assert_eq!(interrupt(signal, 1), 0);
            let old = ssignal(signal, quiet_handler as *const () as sighandler_t);
            assert_ne!(old, libc::SIG_ERR);
        }
        let flags = query_glibc(signal).sa_flags & libc::SA_RESTART;
        // SAFETY: as above.
        unsafe { interrupt(signal, 0) };
        reset(signal);
        flags
    };
    let reference = outcome(glibc_interrupt, glibc_ssignal, rt(10));
    let hooked = outcome(siginterrupt, ssignal, rt(11));
    assert_eq!(reference, 0, "glibc's pair: no SA_RESTART");
    assert_eq!(
        hooked, reference,
        "ssignal after the hooked siginterrupt(sig, 1): SA_RESTART is {:#x}, glibc's pair {:#x}",
        hooked, reference
    );
}

/// z05. `siginterrupt` on good and bad signals: its result and errno (a
/// sentinel where it succeeds) as glibc's own gives.
#[test]
fn z05_siginterrupt_results_and_errno_as_glibc() {
    let _serial = serial_z();
    let glibc_interrupt = glibc_siginterrupt();
    let signals = [
        0,
        -1,
        65,
        1000,
        32,
        33,
        libc::SIGKILL,
        libc::SIGSTOP,
        64,
        rt(12),
    ];
    let run = |interrupt: Interrupter| -> Vec<(c_int, c_int, c_int, i32)> {
        let mut out = Vec::new();
        for &signal in &signals {
            for flag in [1, 0, 7] {
                set_errno(SENTINEL);
                // SAFETY: any signal number; the call checks it.
                let ret = unsafe { interrupt(signal, flag) };
                out.push((signal, flag, ret, errno()));
            }
        }
        out
    };
    let reference = run(glibc_interrupt);
    reset(64);
    reset(rt(12));
    let hooked = run(siginterrupt);
    reset(64);
    reset(rt(12));
    assert_eq!(hooked, reference);
}

extern "C" fn info_handler(_: c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// What a query shows of `signal`'s action, for comparison: handler,
/// flags without SA_RESTORER, and whether the mask holds SIGUSR2 and the
/// signal itself.
fn shown(action: &libc::sigaction, signal: c_int) -> (usize, c_int, bool, bool) {
    // SAFETY: a valid sigset.
    unsafe {
        (
            action.sa_sigaction,
            action.sa_flags & !0x0400_0000,
            libc::sigismember(&action.sa_mask, libc::SIGUSR2) == 1,
            libc::sigismember(&action.sa_mask, signal) == 1,
        )
    }
}

/// z06. `siginterrupt` after a `sigaction` that installed a handler (with
/// and without SA_SIGINFO, with a mask and SA_ONSTACK | SA_NODEFER), then
/// after a one-shot handler has run: what `sigaction` reports after
/// `siginterrupt(sig, 1)` and after `siginterrupt(sig, 0)`, hooks against
/// glibc's own sigaction and siginterrupt.
#[test]
fn z06_siginterrupt_after_sigaction_reports_as_glibc() {
    let _serial = serial_z();
    type Act = unsafe extern "C" fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int;
    let glibc_interrupt = glibc_siginterrupt();
    let hooked_sigaction: Act = libc::sigaction;
    let glibc_sigaction: Act = __sigaction;
    let cases: [(usize, c_int); 3] = [
        (
            info_handler as *const () as usize,
            libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER,
        ),
        (
            quiet_handler as *const () as usize,
            libc::SA_RESTART | libc::SA_ONSTACK,
        ),
        (
            quiet_handler as *const () as usize,
            libc::SA_RESETHAND | libc::SA_RESTART,
        ),
    ];
    let run = |act: Act, interrupt: Interrupter, signal: c_int| {
        let mut seen = Vec::new();
        for (i, &(handler, flags)) in cases.iter().enumerate() {
            // SAFETY: a valid action.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = handler;
                action.sa_flags = flags;
                libc::sigaddset(&mut action.sa_mask, libc::SIGUSR2);
                assert_eq!(act(signal, &action, std::ptr::null_mut()), 0);
                if i == 2 {
                    // The one-shot handler runs; SIG_DFL is back.
                    libc::raise(signal);
                }
                for flag in [1, 0] {
                    let ret = interrupt(signal, flag);
                    let mut old: libc::sigaction = std::mem::zeroed();
                    assert_eq!(act(signal, std::ptr::null(), &mut old), 0);
                    seen.push((ret, shown(&old, signal)));
                }
            }
        }
        reset(signal);
        seen
    };
    let reference = run(glibc_sigaction, glibc_interrupt, rt(13));
    let hooked = run(hooked_sigaction, siginterrupt, rt(14));
    // Signals differ: compare the "mask holds the signal" bits as they are
    // (both false unless the kernel adds it).
    assert_eq!(hooked, reference);
}

/// z07. `sigset(sig, SIG_ERR)` then `signal(sig, h)`: what the second
/// returns (the old disposition) and what the kernel then has, hooks against
/// glibc's pair; and `signal(sig, SIG_ERR)`'s own result and errno.
#[test]
fn z07_sigset_sig_err_then_signal_as_glibc() {
    let _serial = serial_z();
    let glibc_sigset = glibc_installer(c"sigset");
    let glibc_signal = glibc_installer(c"signal");
    let hooked_sigset: Installer = sigset;
    let hooked_signal: Installer = libc::signal;
    let run = |set: Installer, install: Installer, signal: c_int| {
        // SAFETY: valid signals; SIG_ERR is what is probed.
        unsafe {
            set_errno(SENTINEL);
            let first = set(signal, libc::SIG_ERR);
            let e1 = errno();
            let after_set = query_glibc(signal).sa_sigaction;
            set_errno(SENTINEL);
            let refused = install(signal, libc::SIG_ERR);
            let e2 = errno();
            let second = install(signal, quiet_handler as *const () as sighandler_t);
            let now = query_glibc(signal);
            let blocked = {
                let mut mask: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask);
                libc::sigismember(&mask, signal) == 1
            };
            reset(signal);
            (
                first,
                e1,
                after_set,
                refused,
                e2,
                second,
                now.sa_flags & libc::SA_RESTART,
                blocked,
            )
        }
    };
    let reference = run(glibc_sigset, glibc_signal, rt(15));
    let hooked = run(hooked_sigset, hooked_signal, rt(16));
    assert_eq!(hooked, reference);
}

/// z08. Accepts on one listener in coroutines on two workers while a
/// plain thread and a coroutine keep replacing its number with a
/// duplicate of the same listener (`dup2`, `dup3`) and clients connect:
/// every connection is accepted (the same file stays behind the number, as
/// a thread's accept would see), errno stays as it was on success, the
/// description is left blocking, and afterwards an accept on the number
/// is prompt (no `closing` left set).
#[test]
fn z08_accepts_through_replacements_of_the_same_listener() {
    let _serial = serial_z();
    const CONNECTIONS: usize = 120;
    const ACCEPTORS: usize = 4;
    alone(|| {
        let outcome = watchdog(
            "accepts through dup2 churn",
            Duration::from_secs(4),
            2,
            || {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let original = listener.as_raw_fd();
                // SAFETY: a live descriptor.
                let number = unsafe { libc::dup(original) };
                assert!(number >= 0);
                let stop = Arc::new(AtomicBool::new(false));
                let accepted = Arc::new(AtomicUsize::new(0));
                let replacements = Arc::new(AtomicUsize::new(0));
                let churn_thread = {
                    let (stop, replacements) = (stop.clone(), replacements.clone());
                    thread::spawn(move || {
                        let mut i = 0;
                        while !stop.load(Ordering::Relaxed) {
                            // SAFETY: both live; the same file stays behind `number`.
                            let ret = unsafe {
                                match i % 2 {
                                    0 => libc::dup2(original, number),
                                    _ => libc::dup3(original, number, libc::O_CLOEXEC),
                                }
                            };
                            assert_eq!(ret, number);
                            replacements.fetch_add(1, Ordering::Relaxed);
                            i += 1;
                            thread::sleep(Duration::from_micros(200));
                        }
                    })
                };
                let churn_coroutine = {
                    let (stop, replacements) = (stop.clone(), replacements.clone());
                    coroutines::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            // SAFETY: both live.
                            assert_eq!(unsafe { libc::dup2(original, number) }, number);
                            replacements.fetch_add(1, Ordering::Relaxed);
                            coroutines::yield_now();
                        }
                    })
                };
                let acceptors: Vec<_> = (0..ACCEPTORS)
                    .map(|_| {
                        let accepted = accepted.clone();
                        coroutines::spawn(move || {
                            let mut wrong = Vec::new();
                            while accepted.load(Ordering::SeqCst) < CONNECTIONS {
                                set_errno(SENTINEL);
                                // SAFETY: a listener's number; no address wanted.
                                let fd = unsafe {
                                    libc::accept(number, std::ptr::null_mut(), std::ptr::null_mut())
                                };
                                let e = errno();
                                if fd < 0 {
                                    wrong.push(format!("accept: errno {e}"));
                                    continue;
                                }
                                if e != SENTINEL {
                                    wrong.push(format!("errno {e} after a successful accept"));
                                }
                                // SAFETY: accepted just now.
                                unsafe { libc::close(fd) };
                                accepted.fetch_add(1, Ordering::SeqCst);
                            }
                            wrong
                        })
                    })
                    .collect();
                let clients = thread::spawn(move || {
                    // One more per acceptor, so that none is left waiting.
                    for _ in 0..CONNECTIONS + ACCEPTORS {
                        let _ = TcpStream::connect(addr).unwrap();
                        thread::sleep(Duration::from_micros(500));
                    }
                });
                let mut wrong = Vec::new();
                for acceptor in acceptors {
                    wrong.extend(acceptor.join().unwrap());
                }
                stop.store(true, Ordering::Relaxed);
                churn_thread.join().unwrap();
                churn_coroutine.join().unwrap();
                clients.join().unwrap();
                // Drain what is left in the backlog (the extra connections).
                // SAFETY: a live descriptor.
                let nonblocking_after = raw_flags(original) & libc::O_NONBLOCK as i64 != 0;
                // A last accept: must be prompt.
                let client = after(Duration::from_millis(20), move || {
                    TcpStream::connect(addr).is_ok()
                });
                let start = Instant::now();
                let mut prompt = None;
                loop {
                    // SAFETY: as above.
                    let fd =
                        unsafe { libc::accept(number, std::ptr::null_mut(), std::ptr::null_mut()) };
                    assert!(fd >= 0, "last accept: {}", std::io::Error::last_os_error());
                    // SAFETY: accepted just now.
                    unsafe { libc::close(fd) };
                    if client.is_finished() {
                        prompt = Some(start.elapsed());
                        break;
                    }
                    if start.elapsed() > Duration::from_secs(1) {
                        break;
                    }
                }
                let _ = client.join();
                // SAFETY: ours.
                unsafe { libc::close(number) };
                drop(listener);
                (
                    wrong,
                    nonblocking_after,
                    prompt,
                    replacements.load(Ordering::Relaxed),
                )
            },
        );
        let (wrong, nonblocking_after, prompt, replacements) = outcome;
        assert!(
            wrong.is_empty(),
            "acceptors saw: {wrong:?} ({replacements} replacements)"
        );
        assert!(!nonblocking_after, "the listener was left non-blocking");
        assert!(
            prompt.is_some_and(|p| p < Duration::from_millis(300)),
            "last accept: {prompt:?}"
        );
    });
}

/// z09. A lingering close (1 s) of a listener on which coroutines of two
/// workers wait in accept: they end with EBADF promptly (the close of a
/// listener has nothing to linger for) and errno is EBADF.
#[test]
fn z09_lingering_close_of_a_listener_under_accepts() {
    let _serial = serial_z();
    alone(|| {
        let got = watchdog(
            "lingering listener close",
            Duration::from_secs(3),
            2,
            || {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                set_linger(listener.as_raw_fd(), 1);
                let number = listener.into_raw_fd();
                let acceptors: Vec<_> = (0..3)
                    .map(|_| {
                        coroutines::spawn(move || {
                            // SAFETY: a listener's number; no address wanted.
                            let fd = unsafe {
                                libc::accept(number, std::ptr::null_mut(), std::ptr::null_mut())
                            };
                            (fd, errno())
                        })
                    })
                    .collect();
                thread::sleep(Duration::from_millis(50));
                let start = Instant::now();
                let closer = coroutines::spawn(move || {
                    // SAFETY: the probe owns `number` and closes it once.
                    unsafe { libc::close(number) }
                });
                let results: Vec<_> = acceptors.into_iter().map(|a| a.join().unwrap()).collect();
                let elapsed = start.elapsed();
                (closer.join().unwrap(), results, elapsed < QUICK)
            },
        );
        assert_eq!(got, (0, vec![(-1, libc::EBADF); 3], true));
    });
}

/// z10. `close_range` over a listener's number from a plain thread while
/// coroutines on two workers accept on it, then a new listener dup2'd onto
/// the number: an accept on it is prompt (no count left raised), and the
/// first acceptors end with EBADF, not a hang.
#[test]
fn z10_close_range_then_reuse_of_the_number() {
    let _serial = serial_z();
    alone(|| {
        let got = watchdog("close_range then reuse", Duration::from_secs(3), 2, || {
            let first = TcpListener::bind("127.0.0.1:0").unwrap();
            let number = first.into_raw_fd();
            let acceptors: Vec<_> = (0..2)
                .map(|_| {
                    coroutines::spawn(move || {
                        // SAFETY: a listener's number.
                        let fd = unsafe {
                            libc::accept(number, std::ptr::null_mut(), std::ptr::null_mut())
                        };
                        (fd, errno())
                    })
                })
                .collect();
            thread::sleep(Duration::from_millis(30));
            let ret = thread::spawn(move || {
                // SAFETY: the probe owns `number`.
                unsafe { libc::close_range(number as u32, number as u32, 0) }
            })
            .join()
            .unwrap();
            let firsts: Vec<_> = acceptors.into_iter().map(|a| a.join().unwrap()).collect();
            let second = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = second.local_addr().unwrap();
            // SAFETY: `number` is free.
            assert_eq!(unsafe { libc::dup2(second.as_raw_fd(), number) }, number);
            let client = after(Duration::from_millis(20), move || {
                TcpStream::connect(addr).is_ok()
            });
            let start = Instant::now();
            // SAFETY: a listener's number.
            let fd = unsafe { libc::accept(number, std::ptr::null_mut(), std::ptr::null_mut()) };
            let elapsed = start.elapsed();
            let _ = client.join();
            if fd >= 0 {
                // SAFETY: accepted just now.
                unsafe { libc::close(fd) };
            }
            // SAFETY: ours.
            unsafe { libc::close(number) };
            (ret, firsts, fd >= 0, elapsed < QUICK)
        });
        assert_eq!(got, (0, vec![(-1, libc::EBADF); 2], true, true));
    });
}

/// z11. As z01 for `splice` from a connected TCP socket (data waiting)
/// into a pipe, the socket dup2'd onto the number while another party's
/// lingering close of the number's previous file is still in its system
/// call: on a thread the splice moves the data at once.
#[test]
fn z11_splice_from_a_socket_that_got_the_number_during_a_lingering_close() {
    let _serial = serial_z();
    let got = differential_exclusive("splice during a lingering close", |side| {
        let (mut client, server) = tcp_pair();
        let (number, peer) = lingering_socket(3);
        let closer = side.spawn(move || {
            // SAFETY: the probe owns `number` and closes it once.
            unsafe { libc::close(number) }
        });
        while !is_free(number) {
            thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: `number` is free; the connected socket gets it.
        let moved = unsafe { libc::dup2(server.as_raw_fd(), number) };
        std::io::Write::write_all(&mut client, b"hello").unwrap();
        thread::sleep(Duration::from_millis(10));
        let (read_end, write_end) = support::raw::pipe(0);
        let drainer = drain_later(peer, Duration::from_millis(100));
        set_errno(SENTINEL);
        let start = Instant::now();
        // SAFETY: live descriptors, no offsets.
        let n = unsafe {
            libc::splice(
                number,
                std::ptr::null_mut(),
                write_end,
                std::ptr::null_mut(),
                5,
                0,
            )
        };
        let errno_after = errno();
        let elapsed = start.elapsed();
        eprintln!("{side:?}: spliced after {elapsed:?}");
        drainer.join().unwrap();
        let closed = closer.join();
        support::raw::close_all([number, read_end, write_end]);
        drop(server);
        (moved == number, n, errno_after, elapsed < QUICK, closed)
    });
    assert_eq!(got, (true, 5, SENTINEL, true, 0));
}
