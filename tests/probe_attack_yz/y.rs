//! Round Y: probes against the one-call installers' hooks (`sysv_signal`,
//! `__sysv_signal`, `sigset`, and `signal` through `install`), the holds'
//! release and `close_range`'s wait, and the poller's uninitialised events
//! buffer.
//!
//! Every probe asserts what a plain thread without the runtime sees, or
//! what glibc's own function (found past the hook with
//! `dlsym(RTLD_NEXT, name)`) gives. Signal handlers and descriptor ranges
//! are process-wide: every probe of this file runs alone (`SERIAL`).
//!
//! Found and fixed: y04 (`sigset(sig, SIG_ERR)` said EINVAL where glibc
//! 2.36 installs it), y10 and y11 (a hold started after a close's wait for
//! holds and before its system call left the description non-blocking).
//! The round's probes of documented limitations are not kept here: a
//! `SIG_HOLD` in a coroutine blocks the signal for its worker, a parked
//! call gets no `EINTR`, and a handler's close under a hold leaves the
//! description non-blocking. `signal` after `siginterrupt` is
//! `differential_signals.rs`'s.

use crate::support;

use std::ffi::CStr;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use libc::{c_int, sighandler_t};
use support::differential::LIMIT;
use support::differential::*;
use support::*;

fn serial_y() -> MutexGuard<'static, ()> {
    crate::SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

type Installer = unsafe extern "C" fn(c_int, sighandler_t) -> sighandler_t;

unsafe extern "C" {
    // These resolve to the runtime's hooks, defined in this executable.
    fn sigset(signal: c_int, disposition: sighandler_t) -> sighandler_t;
    fn sysv_signal(signal: c_int, handler: sighandler_t) -> sighandler_t;
    fn __sysv_signal(signal: c_int, handler: sighandler_t) -> sighandler_t;
    fn bsd_signal(signal: c_int, handler: sighandler_t) -> sighandler_t;
    // Not hooked: glibc's, which use glibc's own sigaction / sigprocmask.
    fn sighold(signal: c_int) -> c_int;
    fn sigrelse(signal: c_int) -> c_int;
    fn sigignore(signal: c_int) -> c_int;
    /// glibc's `sigaction` under its exported alias, past the hook.
    fn __sigaction(signal: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int;
}

fn hooked_signal(signal: c_int, handler: sighandler_t) -> sighandler_t {
    // SAFETY: forwards to the hooked `signal`.
    unsafe { libc::signal(signal, handler) }
}

unsafe extern "C" fn hooked_signal_c(signal: c_int, handler: sighandler_t) -> sighandler_t {
    hooked_signal(signal, handler)
}

/// glibc's own `name`, past the hook in this executable.
fn glibc(name: &CStr) -> Installer {
    // SAFETY: dlsym with a NUL-terminated name; the symbol has this type.
    unsafe {
        let address = libc::dlsym(libc::RTLD_NEXT, name.as_ptr());
        assert!(!address.is_null(), "glibc's {name:?}");
        std::mem::transmute::<*mut libc::c_void, Installer>(address)
    }
}

const SIG_HOLD: sighandler_t = 2;

fn rt(n: c_int) -> c_int {
    libc::SIGRTMIN() + n
}

/// A disposition as plain data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Disp {
    Err,
    Dfl,
    Ign,
    Hold,
    Recording,
    Reinstalling,
    Quiet,
    Other(usize),
}

fn disp(value: sighandler_t) -> Disp {
    match value {
        libc::SIG_ERR => Disp::Err,
        libc::SIG_DFL => Disp::Dfl,
        libc::SIG_IGN => Disp::Ign,
        SIG_HOLD => Disp::Hold,
        v if v == recording as *const () as usize => Disp::Recording,
        v if v == reinstalling as *const () as usize => Disp::Reinstalling,
        v if v == quiet as *const () as usize => Disp::Quiet,
        v => Disp::Other(v),
    }
}

/// Puts SIG_DFL back through the hooked `sigaction` (which also forgets
/// the runtime's record of the handler) and unblocks the signal.
fn reset(signal: c_int) {
    // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask.
    unsafe {
        let act: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, &act, std::ptr::null_mut());
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// What the hooked `sigaction` shows of `signal`: handler, flags, whether
/// the signal is in the handler's mask.
fn shown(signal: c_int) -> (Disp, c_int, bool) {
    // SAFETY: a query into a valid sigaction.
    unsafe {
        let mut now: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(signal, std::ptr::null(), &mut now), 0);
        (
            disp(now.sa_sigaction),
            now.sa_flags,
            libc::sigismember(&now.sa_mask, signal) == 1,
        )
    }
}

fn blocked(signal: c_int) -> bool {
    // SAFETY: queries the calling thread's mask into a valid set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set);
        libc::sigismember(&set, signal) == 1
    }
}

extern "C" fn quiet(_: c_int) {}

/// Per signal: how often `recording` ran, whether its signal was blocked
/// while it ran, and what `sigaction` showed of the signal meanwhile.
static COUNT: [AtomicU32; 65] = [const { AtomicU32::new(0) }; 65];
static BLOCKED_IN: [AtomicBool; 65] = [const { AtomicBool::new(false) }; 65];
static SHOWN_IN: [AtomicUsize; 65] = [const { AtomicUsize::new(0) }; 65];

extern "C" fn recording(signal: c_int) {
    let s = signal as usize;
    COUNT[s].fetch_add(1, Ordering::SeqCst);
    BLOCKED_IN[s].store(blocked(signal), Ordering::SeqCst);
    // SAFETY: a query into a valid sigaction.
    unsafe {
        let mut now: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut now);
        SHOWN_IN[s].store(now.sa_sigaction, Ordering::SeqCst);
    }
}

fn clear_records(signal: c_int) {
    let s = signal as usize;
    COUNT[s].store(0, Ordering::SeqCst);
    BLOCKED_IN[s].store(false, Ordering::SeqCst);
    SHOWN_IN[s].store(usize::MAX, Ordering::SeqCst);
}

#[derive(Debug, PartialEq)]
struct SysvSeen {
    first: Disp,
    second: Disp,
    errno_kept: bool,
    before: (Disp, c_int, bool),
    runs: u32,
    blocked_in_handler: bool,
    shown_in_handler: Disp,
    after: (Disp, c_int, bool),
    blocked_after: bool,
}

fn sysv_sequence(installer: Installer, signal: c_int) -> SysvSeen {
    reset(signal);
    clear_records(signal);
    let h = recording as *const () as sighandler_t;
    set_errno(777);
    // SAFETY: installs a handler that only queries and stores atomics.
    let first = disp(unsafe { installer(signal, h) });
    // SAFETY: as above.
    let second = disp(unsafe { installer(signal, h) });
    let errno_kept = errno() == 777;
    let before = shown(signal);
    // SAFETY: raise runs the handler on this thread before it returns.
    unsafe { libc::raise(signal) };
    let s = signal as usize;
    let seen = SysvSeen {
        first,
        second,
        errno_kept,
        before,
        runs: COUNT[s].load(Ordering::SeqCst),
        blocked_in_handler: BLOCKED_IN[s].load(Ordering::SeqCst),
        shown_in_handler: disp(SHOWN_IN[s].load(Ordering::SeqCst)),
        after: shown(signal),
        blocked_after: blocked(signal),
    };
    reset(signal);
    seen
}

/// y01: the hooked sysv_signal (and __sysv_signal) on a plain thread and
/// in a coroutine answers, reports, resets (SA_RESETHAND) and leaves the
/// signal unblocked in its handler (SA_NODEFER) as glibc's sysv_signal
/// does on a plain thread.
#[test]
fn y01_sysv_signal_reports_and_fires_as_glibc() {
    let _serial = serial_y();
    let reference = thread::spawn(|| sysv_sequence(glibc(c"sysv_signal"), rt(10)))
        .join()
        .unwrap();
    let on_thread = thread::spawn(|| sysv_sequence(sysv_signal, rt(11)))
        .join()
        .unwrap();
    let internal = thread::spawn(|| sysv_sequence(__sysv_signal, rt(11)))
        .join()
        .unwrap();
    let in_coroutine = run(1, LIMIT, || sysv_sequence(sysv_signal, rt(11)));
    assert_eq!(reference.runs, 1, "reference: {reference:?}");
    assert_eq!(
        on_thread, reference,
        "hooked sysv_signal on a thread (left) vs glibc's"
    );
    assert_eq!(
        internal, reference,
        "hooked __sysv_signal (left) vs glibc's"
    );
    assert_eq!(
        in_coroutine, reference,
        "hooked sysv_signal in a coroutine (left) vs glibc's"
    );
}

/// The installer `reinstalling` uses, and the depth it reached.
static REINSTALLER: AtomicUsize = AtomicUsize::new(0);
static DEPTH: AtomicI32 = AtomicI32::new(0);
static MAX_DEPTH: AtomicI32 = AtomicI32::new(0);
static REINSTALL_ANSWER: AtomicUsize = AtomicUsize::new(0);

/// The classic System V handler: reinstalls itself first, then (once)
/// raises its own signal again, which SA_NODEFER lets in at once.
extern "C" fn reinstalling(signal: c_int) {
    let depth = DEPTH.fetch_add(1, Ordering::SeqCst) + 1;
    MAX_DEPTH.fetch_max(depth, Ordering::SeqCst);
    // SAFETY: the address was stored from an `Installer`.
    let installer: Installer =
        unsafe { std::mem::transmute::<usize, Installer>(REINSTALLER.load(Ordering::SeqCst)) };
    // SAFETY: reinstalls this handler.
    let old = unsafe { installer(signal, reinstalling as *const () as sighandler_t) };
    if depth == 1 {
        REINSTALL_ANSWER.store(old, Ordering::SeqCst);
        // SAFETY: the nested handler runs before raise returns.
        unsafe { libc::raise(signal) };
    }
    DEPTH.fetch_sub(1, Ordering::SeqCst);
}

fn reinstall_case(installer: Installer, signal: c_int) -> (i32, Disp, Disp, bool) {
    reset(signal);
    REINSTALLER.store(installer as usize, Ordering::SeqCst);
    MAX_DEPTH.store(0, Ordering::SeqCst);
    REINSTALL_ANSWER.store(usize::MAX, Ordering::SeqCst);
    // SAFETY: installs `reinstalling`.
    unsafe { installer(signal, reinstalling as *const () as sighandler_t) };
    // SAFETY: raise runs the handler on this thread.
    unsafe { libc::raise(signal) };
    let got = (
        MAX_DEPTH.load(Ordering::SeqCst),
        disp(REINSTALL_ANSWER.load(Ordering::SeqCst)),
        shown(signal).0,
        blocked(signal),
    );
    reset(signal);
    got
}

/// y02: a System V handler that reinstalls itself and takes its own signal
/// again while it runs (nested, SA_NODEFER): in a coroutine as on a thread
/// with glibc's sysv_signal.
#[test]
fn y02_sysv_handler_reinstalling_itself_nested() {
    let _serial = serial_y();
    let reference = thread::spawn(|| reinstall_case(glibc(c"sysv_signal"), rt(12)))
        .join()
        .unwrap();
    let on_thread = thread::spawn(|| reinstall_case(sysv_signal, rt(13)))
        .join()
        .unwrap();
    let in_coroutine = run(1, LIMIT, || reinstall_case(sysv_signal, rt(13)));
    assert_eq!(reference, (2, Disp::Dfl, Disp::Reinstalling, false));
    assert_eq!(on_thread, reference, "hooked, on a thread");
    assert_eq!(in_coroutine, reference, "hooked, in a coroutine");
}

/// One installer call with errno preset: its answer and errno after.
fn answer(installer: Installer, signal: c_int, disposition: sighandler_t) -> (Disp, i32) {
    set_errno(777);
    // SAFETY: the dispositions are never delivered (the signals are not
    // raised) or are plain handlers.
    let got = disp(unsafe { installer(signal, disposition) });
    (got, errno())
}

/// A table of calls; `own` is a signal the caller may install on.
fn answers(installer: Installer, own: c_int, with_hold: bool) -> Vec<(String, (Disp, i32))> {
    let h = quiet as *const () as sighandler_t;
    let mut cases: Vec<(c_int, sighandler_t)> = vec![
        (0, h),
        (-1, h),
        (65, h),
        (1000, libc::SIG_DFL),
        (libc::SIGKILL, h),
        (libc::SIGSTOP, libc::SIG_IGN),
        (libc::SIGKILL, libc::SIG_DFL),
        (32, h),
        (33, libc::SIG_DFL),
        (own, libc::SIG_ERR),
        (own, h),
        (own, libc::SIG_IGN),
        (own, libc::SIG_DFL),
        (own, libc::SIG_DFL),
    ];
    if with_hold {
        cases.extend([
            (32, SIG_HOLD),
            (33, SIG_HOLD),
            (libc::SIGKILL, SIG_HOLD),
            (0, SIG_HOLD),
            (65, SIG_HOLD),
            (own, SIG_HOLD),
            (own, SIG_HOLD),
            (own, h),
            (own, SIG_HOLD),
            (own, libc::SIG_IGN),
            (own, libc::SIG_DFL),
        ]);
    } else {
        // Installs address 2 as a handler (never delivered), then takes it
        // back.
        cases.extend([(own, SIG_HOLD), (own, libc::SIG_DFL)]);
    }
    reset(own);
    let got = cases
        .into_iter()
        .map(|(signal, disposition)| {
            let name = if signal == own {
                "own".to_owned()
            } else {
                signal.to_string()
            };
            (
                format!("({name}, {})", disposition as isize),
                answer(installer, signal, disposition),
            )
        })
        .collect();
    reset(own);
    got
}

/// y04: every installer's answers and errno (preset to 777: kept on
/// success, EINVAL on failure) for bad signals, glibc's internal signals,
/// SIG_ERR, SIGKILL and a sequence on a signal of its own, as glibc's own
/// function gives them; on a thread and in a coroutine.
#[test]
fn y04_installers_answers_and_errno_as_glibc() {
    let _serial = serial_y();
    let installers: [(&str, Installer, &CStr, bool); 4] = [
        ("signal", hooked_signal_c, c"signal", false),
        ("bsd_signal", bsd_signal, c"signal", false),
        ("sysv_signal", sysv_signal, c"sysv_signal", false),
        ("sigset", sigset, c"sigset", true),
    ];
    let mut failures = Vec::new();
    for (name, hooked, glibc_name, hold) in installers {
        let glibc = glibc(glibc_name);
        let reference = thread::spawn(move || answers(glibc, rt(16), hold))
            .join()
            .unwrap();
        let on_thread = thread::spawn(move || answers(hooked, rt(17), hold))
            .join()
            .unwrap();
        let in_coroutine = run(1, LIMIT, move || answers(hooked, rt(17), hold));
        for (side, got) in [("thread", on_thread), ("coroutine", in_coroutine)] {
            for ((case, want), (_, have)) in reference.iter().zip(&got) {
                if want != have {
                    failures.push(format!(
                        "{name} {case} on a {side}: hooked {have:?}, glibc {want:?}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A sequence mixing the installers with glibc's unhooked sighold,
/// sigrelse and sigignore (and a raise): the installers' answers and the
/// mask after each step.
fn mixed_sequence(
    sigset_f: Installer,
    signal_f: Installer,
    sysv_f: Installer,
    s: c_int,
) -> Vec<(Disp, bool)> {
    let h = recording as *const () as sighandler_t;
    reset(s);
    clear_records(s);
    let mut seen = Vec::new();
    // SAFETY: the handlers only record; glibc's functions on valid signals.
    unsafe {
        seen.push((disp(sysv_f(s, h)), blocked(s)));
        sigignore(s);
        seen.push((disp(sigset_f(s, SIG_HOLD)), blocked(s)));
        seen.push((disp(signal_f(s, h)), blocked(s)));
        seen.push((disp(sigset_f(s, h)), blocked(s)));
        sighold(s);
        seen.push((disp(sigset_f(s, libc::SIG_DFL)), blocked(s)));
        seen.push((disp(sigset_f(s, SIG_HOLD)), blocked(s)));
        sigrelse(s);
        seen.push((disp(sysv_f(s, h)), blocked(s)));
        libc::raise(s);
        seen.push((shown(s).0, COUNT[s as usize].load(Ordering::SeqCst) == 1));
        seen.push((disp(signal_f(s, h)), blocked(s)));
        sighold(s);
        libc::raise(s); // pending while held
        seen.push((
            disp(sigset_f(s, h)),
            COUNT[s as usize].load(Ordering::SeqCst) == 2,
        ));
        sigignore(s);
        seen.push((disp(signal_f(s, libc::SIG_DFL)), blocked(s)));
        seen.push((shown(s).0, shown(s).2));
    }
    reset(s);
    seen
}

/// y06: the installers mixed with glibc's sighold / sigrelse / sigignore
/// (which go to the kernel past the hooks) answer as glibc's installers do.
#[test]
fn y06_installers_mixed_with_sighold_sigrelse_sigignore() {
    let _serial = serial_y();
    let (gs, gsig, gsysv) = (glibc(c"sigset"), glibc(c"signal"), glibc(c"sysv_signal"));
    let reference = thread::spawn(move || mixed_sequence(gs, gsig, gsysv, rt(19)))
        .join()
        .unwrap();
    let on_thread = thread::spawn(|| mixed_sequence(sigset, hooked_signal_c, sysv_signal, rt(20)))
        .join()
        .unwrap();
    let in_coroutine = run(1, LIMIT, || {
        mixed_sequence(sigset, hooked_signal_c, sysv_signal, rt(20))
    });
    assert_eq!(on_thread, reference, "hooked on a thread (left) vs glibc's");
    assert_eq!(
        in_coroutine, reference,
        "hooked in a coroutine (left) vs glibc's"
    );
}

/// y08: installers called from inside a handler that interrupted a running
/// coroutine (another coroutine shares the worker) answer as on a thread.
static FROM_HANDLER: Mutex<Vec<Disp>> = Mutex::new(Vec::new());

extern "C" fn installing_handler(_: c_int) {
    let s2 = rt(21);
    // SAFETY: installs and removes a quiet handler on a signal nobody sends.
    let answers = unsafe {
        [
            disp(sysv_signal(s2, quiet as *const () as sighandler_t)),
            disp(sigset(s2, SIG_HOLD)),
            disp(sigset(s2, libc::SIG_DFL)),
            disp(libc::signal(s2, quiet as *const () as sighandler_t)),
            disp(libc::signal(s2, libc::SIG_DFL)),
        ]
    };
    if let Ok(mut v) = FROM_HANDLER.try_lock() {
        v.extend(answers);
    }
}

#[test]
fn y08_installers_called_in_a_handler() {
    let _serial = serial_y();
    let got = differential("installers in a handler", |side| {
        reset(rt(21));
        FROM_HANDLER.lock().unwrap().clear();
        // SAFETY: installs a handler that only installs handlers.
        unsafe {
            sysv_signal(
                libc::SIGUSR1,
                installing_handler as *const () as sighandler_t,
            )
        };
        let stop = Arc::new(AtomicBool::new(false));
        let party = {
            let stop = stop.clone();
            side.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(1));
                }
            })
        };
        // SAFETY: pthread_self has no preconditions.
        let target = unsafe { libc::pthread_self() };
        let signaller = after(Duration::from_millis(20), move || {
            // SAFETY: the target thread outlives the case.
            unsafe { libc::pthread_kill(target, libc::SIGUSR1) }
        });
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(60) {
            std::hint::spin_loop();
        }
        signaller.join().unwrap();
        stop.store(true, Ordering::SeqCst);
        party.join();
        let after = (shown(libc::SIGUSR1).0, blocked(rt(21)));
        reset(libc::SIGUSR1);
        reset(rt(21));
        (FROM_HANDLER.lock().unwrap().clone(), after)
    });
    assert_eq!(
        got,
        (
            vec![Disp::Dfl, Disp::Quiet, Disp::Hold, Disp::Dfl, Disp::Quiet],
            (Disp::Dfl, false)
        )
    );
}

/// y09: more ready descriptors than one reactor wait takes (256): each of
/// 600 parked readers, on one and on two workers, gets its own byte; none
/// is lost or woken with another's.
#[test]
fn y09_many_ready_descriptors_at_once() {
    let _serial = serial_y();
    for workers in [1, 2] {
        let wrong = watchdog("many ready fds", Duration::from_secs(10), workers, || {
            const N: usize = 600;
            let pairs: Vec<_> = (0..N)
                .map(|_| std::os::unix::net::UnixStream::pair().unwrap())
                .collect();
            let mut writers = Vec::new();
            let mut readers = Vec::new();
            for (i, (a, b)) in pairs.into_iter().enumerate() {
                writers.push(b);
                readers.push(coroutines::spawn(move || {
                    let mut buf = [0u8; 8];
                    // SAFETY: a read into a live buffer.
                    let n = unsafe { libc::read(a.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
                    let got = if n == 4 {
                        u32::from_ne_bytes(buf[..4].try_into().unwrap())
                    } else {
                        u32::MAX
                    };
                    (i as u32, got)
                }));
            }
            thread::sleep(Duration::from_millis(50));
            let writer = thread::spawn(move || {
                for (i, mut w) in writers.into_iter().enumerate() {
                    w.write_all(&(i as u32).to_ne_bytes()).unwrap();
                    drop(w);
                }
            });
            let mut wrong = Vec::new();
            for r in readers {
                let (i, got) = r.join().unwrap();
                if i != got {
                    wrong.push((i, got));
                }
            }
            writer.join().unwrap();
            wrong
        });
        assert!(wrong.is_empty(), "{workers} workers: wrong reads {wrong:?}");
    }
}

unsafe extern "C" {
    fn close_range(first: libc::c_uint, last: libc::c_uint, flags: c_int) -> c_int;
}

/// An accept loop through `fd` in a coroutine until it fails: its errno.
fn accept_until_error(fd: RawFd) -> i32 {
    loop {
        // SAFETY: accept without an address.
        let c = unsafe { libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut()) };
        if c < 0 {
            return errno();
        }
        // SAFETY: ours.
        unsafe { libc::close(c) };
    }
}

/// Opens `n` connections to `addr` (pending in the listener's backlog).
fn pending(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect()
}

/// y10: close_range over numbers that coroutines on two workers are
/// accepting through (duplicates of one blocking listener with a backlog
/// of pending connections, so that holds start one after another): no
/// hang, each acceptor ends with EBADF, and the listener's description is
/// left blocking (as a thread never changes it).
#[test]
fn y10_close_range_over_accepting_duplicates() {
    let _serial = serial_y();
    let left = alone(|| {
        watchdog(
            "close_range over accepts",
            Duration::from_secs(10),
            2,
            || {
                const BASE: c_int = 7000;
                const K: c_int = 4;
                const ITERATIONS: usize = 70;
                let mut left_nonblocking = 0;
                let mut errnos = Vec::new();
                let mut seed = 7u64;
                for iteration in 0..ITERATIONS {
                    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                    let a = listener.as_raw_fd();
                    let addr = listener.local_addr().unwrap();
                    let clients = pending(addr, 100);
                    for j in 0..K {
                        // SAFETY: duplicates the listener onto a free number.
                        let d = unsafe { libc::fcntl(a, libc::F_DUPFD, BASE + j) };
                        assert_eq!(d, BASE + j);
                    }
                    let acceptors: Vec<_> = (0..2 * K)
                        .map(|j| coroutines::spawn(move || accept_until_error(BASE + j % K)))
                        .collect();
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let pause = Duration::from_micros((seed >> 33) % 400);
                    let closer = move || {
                        let t = Instant::now();
                        while t.elapsed() < pause {
                            std::hint::spin_loop();
                        }
                        // SAFETY: closes the duplicates this loop made.
                        unsafe { close_range(BASE as u32, (BASE + K - 1) as u32, 0) }
                    };
                    let ret = if iteration % 2 == 0 {
                        thread::spawn(closer).join().unwrap()
                    } else {
                        coroutines::yield_now();
                        closer()
                    };
                    assert_eq!(ret, 0);
                    for acceptor in acceptors {
                        errnos.push(acceptor.join().unwrap());
                    }
                    if kernel_flags(a) & libc::O_NONBLOCK != 0 {
                        left_nonblocking += 1;
                        // Put it back for the next iteration.
                        // SAFETY: raw F_SETFL on our listener.
                        unsafe { libc::syscall(libc::SYS_fcntl, a, libc::F_SETFL, libc::O_RDWR) };
                    }
                    drop((clients, listener));
                }
                errnos.retain(|&e| e != libc::EBADF);
                (left_nonblocking, errnos)
            },
        )
    });
    assert_eq!(
        left,
        (0, vec![]),
        "(iterations leaving O_NONBLOCK, errnos other than EBADF)"
    );
}

/// y11: a plain thread closes a duplicate of a blocking listener while a
/// coroutine accepts through it (a backlog of pending connections): the
/// listener's description is never left non-blocking.
#[test]
fn y11_close_of_duplicate_racing_accept() {
    let _serial = serial_y();
    let left = alone(|| {
        watchdog(
            "close of a dup racing accept",
            Duration::from_secs(10),
            2,
            || {
                let mut left_nonblocking = 0;
                let mut seed = 11u64;
                for _ in 0..150 {
                    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                    let a = listener.as_raw_fd();
                    let addr = listener.local_addr().unwrap();
                    let clients = pending(addr, 40);
                    // SAFETY: dup of our listener.
                    let b = unsafe { libc::dup(a) };
                    let acceptors: Vec<_> = (0..3)
                        .map(|_| coroutines::spawn(move || accept_until_error(b)))
                        .collect();
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let pause = Duration::from_micros((seed >> 33) % 200);
                    thread::spawn(move || {
                        let t = Instant::now();
                        while t.elapsed() < pause {
                            std::hint::spin_loop();
                        }
                        // SAFETY: closes the duplicate.
                        unsafe { libc::close(b) }
                    })
                    .join()
                    .unwrap();
                    for acceptor in acceptors {
                        acceptor.join().unwrap();
                    }
                    if kernel_flags(a) & libc::O_NONBLOCK != 0 {
                        left_nonblocking += 1;
                        // SAFETY: raw F_SETFL on our listener.
                        unsafe { libc::syscall(libc::SYS_fcntl, a, libc::F_SETFL, libc::O_RDWR) };
                    }
                    drop((clients, listener));
                }
                left_nonblocking
            },
        )
    });
    assert_eq!(left, 0, "iterations leaving O_NONBLOCK");
}
