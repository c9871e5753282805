//! Signal handlers that run while a coroutine is current, differentially
//! ("also examine"). A handler interrupts whatever its thread runs; on a
//! plain thread a sleep or a blocking read in it blocks the thread, and a
//! close in it simply closes. In a coroutine the same must hold: a sleep
//! or read in a handler must not park the interrupted coroutine inside
//! the handler (letting other coroutines run on a thread whose interrupted
//! code is in an arbitrary state), and a close in a handler must not spin
//! on a lock the interrupted code holds.
//!
//! Each case delivers SIGUSR1 with `pthread_kill` to the thread the case
//! runs on (in a coroutine: its worker) while the case spins or is parked.
//! To see whether other code ran on that thread during the handler, the
//! case's party counts its ticks made on the case's kernel thread: beside
//! a thread it is another thread and makes none, beside a coroutine it
//! shares the worker. (Not a thread-local: a coroutine has its own.)
//! Handlers are process-wide, so the tests of this file run one at a time
//! (which also keeps the numbers of the descriptors they close from being
//! taken by another test).
//!
//! Also: what `sigaction` reports of a handler the runtime wraps, and the
//! SIGPIPEs a write that moved some bytes raises (none).

mod support;

use std::io::Write;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::differential::*;
use support::*;

/// Serialises the tests: each installs its own SIGUSR1 handler.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How long a handler sleeps or waits for data.
const IN_HANDLER: Duration = Duration::from_millis(20);

/// When the signal comes, and how long the case spins or sleeps in all.
const SIGNAL_AT: Duration = Duration::from_millis(50);
const CASE_LENGTH: Duration = Duration::from_millis(200);

/// The kernel thread the case runs on, and the party's ticks made there.
static CASE_THREAD: AtomicI32 = AtomicI32::new(0);
static PARTY_TICKS_THERE: AtomicU64 = AtomicU64::new(0);

/// What the last handler saw; set by the handler, read by the case.
static HANDLED: AtomicBool = AtomicBool::new(false);
/// Whether the party ran on the handler's thread while the handler ran.
static PARTY_RAN_MEANWHILE: AtomicBool = AtomicBool::new(false);
/// The handler's call returned what it should (sleep: long enough; read:
/// the bytes; close: 0).
static CALL_OK: AtomicBool = AtomicBool::new(false);
/// The descriptor the handler reads or closes.
static HANDLER_FD: AtomicI32 = AtomicI32::new(-1);
/// Descriptors the handler closed.
static CLOSED: AtomicI64 = AtomicI64::new(0);

/// Installs `handler` for SIGUSR1 (restarting interrupted calls) and
/// clears what the last handler saw.
fn install(handler: extern "C" fn(libc::c_int)) {
    HANDLED.store(false, Ordering::SeqCst);
    PARTY_RAN_MEANWHILE.store(false, Ordering::SeqCst);
    CALL_OK.store(false, Ordering::SeqCst);
    CLOSED.store(0, Ordering::SeqCst);
    install_for(libc::SIGUSR1, handler);
}

/// Installs `handler` for `signal`, restarting interrupted calls.
fn install_for(signal: i32, handler: extern "C" fn(libc::c_int)) {
    // SAFETY: a zeroed sigaction is valid; the handlers only use
    // async-signal-safe calls, a thread-local without destructor and
    // atomics.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = handler as usize;
        act.sa_flags = libc::SA_RESTART;
        assert_eq!(libc::sigaction(signal, &act, std::ptr::null_mut()), 0);
    }
}

/// Runs `call` in a handler and records whether the party ran on this
/// thread meanwhile and whether the call did what it should.
fn in_handler(call: impl FnOnce() -> bool) {
    let before = PARTY_TICKS_THERE.load(Ordering::SeqCst);
    let ok = call();
    CALL_OK.store(ok, Ordering::SeqCst);
    let after = PARTY_TICKS_THERE.load(Ordering::SeqCst);
    PARTY_RAN_MEANWHILE.store(after != before, Ordering::SeqCst);
    HANDLED.store(true, Ordering::SeqCst);
}

extern "C" fn sleeping_handler(_: libc::c_int) {
    in_handler(|| {
        let start = Instant::now();
        thread::sleep(IN_HANDLER);
        start.elapsed() >= IN_HANDLER
    });
}

extern "C" fn reading_handler(_: libc::c_int) {
    in_handler(|| {
        let mut buf = [0u8; 8];
        // SAFETY: a read into a live buffer.
        let n = unsafe {
            libc::read(
                HANDLER_FD.load(Ordering::SeqCst),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        n == 4 && &buf[..4] == b"data"
    });
}

/// What a case saw of its handler.
#[derive(Debug, PartialEq)]
struct Handled {
    ran: bool,
    call_ok: bool,
    party_ran_meanwhile: bool,
}

fn handled() -> Handled {
    Handled {
        ran: HANDLED.load(Ordering::SeqCst),
        call_ok: CALL_OK.load(Ordering::SeqCst),
        party_ran_meanwhile: PARTY_RAN_MEANWHILE.load(Ordering::SeqCst),
    }
}

const HANDLED_ALONE: Handled = Handled {
    ran: true,
    call_ok: true,
    party_ran_meanwhile: false,
};

/// How the case's thread spends [`CASE_LENGTH`] while the signal comes.
#[derive(Clone, Copy)]
enum Busy {
    /// Spinning without yielding: in a coroutine, it is current.
    Spinning,
    /// Sleeping: in a coroutine, parked.
    Parked,
}

/// The shape of the handler cases: a party ticks beside the case; the
/// case's own thread gets SIGUSR1 at [`SIGNAL_AT`] while it is `busy`.
fn signalled_while(side: Side, busy: Busy) -> Handled {
    // SAFETY: gettid has no preconditions.
    CASE_THREAD.store(unsafe { libc::gettid() }, Ordering::SeqCst);
    let stop = Arc::new(AtomicBool::new(false));
    let party = {
        let stop = stop.clone();
        side.spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                // SAFETY: gettid has no preconditions.
                if unsafe { libc::gettid() } == CASE_THREAD.load(Ordering::SeqCst) {
                    PARTY_TICKS_THERE.fetch_add(1, Ordering::SeqCst);
                }
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    thread::sleep(Duration::from_millis(5));
    // SAFETY: pthread_self has no preconditions.
    let target = unsafe { libc::pthread_self() };
    let signaller = after(SIGNAL_AT, move || {
        // SAFETY: the target thread outlives the case.
        unsafe { libc::pthread_kill(target, libc::SIGUSR1) }
    });
    match busy {
        Busy::Spinning => {
            let start = Instant::now();
            while start.elapsed() < CASE_LENGTH {
                std::hint::spin_loop();
            }
        }
        Busy::Parked => thread::sleep(CASE_LENGTH),
    }
    assert_eq!(signaller.join().unwrap(), 0, "pthread_kill");
    stop.store(true, Ordering::SeqCst);
    party.join();
    handled()
}

#[test]
fn sleep_in_a_handler_interrupting_a_running_coroutine_blocks_the_thread() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let got = differential("sleep in a handler, running", |side| {
        install(sleeping_handler);
        signalled_while(side, Busy::Spinning)
    });
    assert_eq!(got, HANDLED_ALONE);
}

unsafe extern "C" {
    fn sigset(signal: libc::c_int, handler: libc::sighandler_t) -> libc::sighandler_t;
    fn sysv_signal(signal: libc::c_int, handler: libc::sighandler_t) -> libc::sighandler_t;
    fn bsd_signal(signal: libc::c_int, handler: libc::sighandler_t) -> libc::sighandler_t;
}

/// glibc's other ways to install a handler, which it implements with its
/// own `sigaction`, out of the hooks' sight: the handler still runs
/// outside the coroutine it interrupts.
#[test]
fn sleep_in_a_handler_installed_by_any_installer_blocks_the_thread() {
    let installers: [(&str, Installer); 4] = [
        ("signal", libc::signal),
        ("bsd_signal", bsd_signal),
        ("sysv_signal", sysv_signal),
        ("sigset", sigset),
    ];
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for (name, installer) in installers {
        let got = differential(name, move |side| {
            install(sleeping_handler);
            // SAFETY: installs a handler that only sleeps and stores
            // atomics and a thread-local without destructor.
            let old = unsafe {
                installer(
                    libc::SIGUSR1,
                    sleeping_handler as *const () as libc::sighandler_t,
                )
            };
            assert_ne!(old, libc::SIG_ERR, "{name}");
            signalled_while(side, Busy::Spinning)
        });
        assert_eq!(got, HANDLED_ALONE, "{name}");
    }
}

/// Passes today: with every coroutine parked, the worker is in the
/// scheduler (no coroutine is current) when the signal comes.
#[test]
fn sleep_in_a_handler_interrupting_parked_coroutines_blocks_the_thread() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let got = differential("sleep in a handler, parked", |side| {
        install(sleeping_handler);
        signalled_while(side, Busy::Parked)
    });
    assert_eq!(got, HANDLED_ALONE);
}

/// Passes today: the data is there, so the hooked read does not park.
#[test]
fn read_in_a_handler_of_a_pipe_with_data() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let got = differential("read in a handler, data there", |side| {
        install(reading_handler);
        let (reader, mut writer) = std::io::pipe().unwrap();
        writer.write_all(b"data").unwrap();
        HANDLER_FD.store(reader.as_raw_fd(), Ordering::SeqCst);
        signalled_while(side, Busy::Spinning)
    });
    assert_eq!(got, HANDLED_ALONE);
}

#[test]
fn read_in_a_handler_waiting_for_data_blocks_the_thread() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let got = differential("read in a handler, data later", |side| {
        install(reading_handler);
        let (reader, mut writer) = std::io::pipe().unwrap();
        HANDLER_FD.store(reader.as_raw_fd(), Ordering::SeqCst);
        let late = after(SIGNAL_AT + IN_HANDLER, move || {
            writer.write_all(b"data").unwrap();
            writer
        });
        let handled = signalled_while(side, Busy::Spinning);
        drop((late.join().unwrap(), reader));
        handled
    });
    assert_eq!(got, HANDLED_ALONE);
}

extern "C" fn closing_handler(_: libc::c_int) {
    let fd = HANDLER_FD.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: the descriptor was handed over to be closed, once.
        if unsafe { libc::close(fd) } == 0 {
            CLOSED.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Whether a stress loop ran its course, and whether its handler closed
/// descriptors at all.
#[derive(Debug, PartialEq)]
struct RanItsCourse {
    finished: bool,
    handler_closed_some: bool,
}

#[test]
fn close_in_a_handler_interrupting_a_hooked_call_on_the_same_descriptor() {
    // The case makes call after call on fresh sockets while a plain thread
    // signals its thread every few microseconds; the handler closes the
    // socket the case is using. Signals arrive as system calls return, and
    // in a coroutine a first accept on a socket looks the socket up with a
    // system call under the socket's lock in the runtime's table: a close
    // there, in the handler, must not wait for that lock.
    const BUDGET: Duration = Duration::from_secs(1);
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let got = differential("close in a handler, racing", move |_| {
        install(closing_handler);
        // SAFETY: pthread_self has no preconditions.
        let target = unsafe { libc::pthread_self() };
        let stop = Arc::new(AtomicBool::new(false));
        let signaller = {
            let stop = stop.clone();
            // Ends by itself too: a case that deadlocks never stops it.
            thread::spawn(move || {
                let start = Instant::now();
                let mut random = 1u64;
                while !stop.load(Ordering::SeqCst) && start.elapsed() < BUDGET * 2 {
                    // SAFETY: the target thread outlives the signaller's
                    // budget, or the case has deadlocked on it.
                    unsafe { libc::pthread_kill(target, libc::SIGUSR1) };
                    random = random
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let pause = Duration::from_nanos(2_000 + (random >> 33) % 20_000);
                    let paused = Instant::now();
                    while paused.elapsed() < pause {
                        std::hint::spin_loop();
                    }
                }
            })
        };
        let start = Instant::now();
        while start.elapsed() < BUDGET {
            let fd = raw_tcp_socket();
            HANDLER_FD.store(fd, Ordering::SeqCst);
            // Not listening: accept fails at once (EINVAL), or with EBADF
            // once the handler has closed the socket.
            // SAFETY: accept on a socket this loop owns, without address.
            unsafe { libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut()) };
            if HANDLER_FD.swap(-1, Ordering::SeqCst) == fd {
                // SAFETY: not closed by the handler: ours to close.
                unsafe { libc::close(fd) };
            }
        }
        stop.store(true, Ordering::SeqCst);
        signaller.join().unwrap();
        RanItsCourse {
            finished: true,
            handler_closed_some: CLOSED.load(Ordering::SeqCst) > 0,
        }
    });
    assert_eq!(
        got,
        RanItsCourse {
            finished: true,
            handler_closed_some: true,
        }
    );
}

/// Passes today: the parked reader wakes with EBADF, as a thread blocked
/// in read does when its handler closed the descriptor (the restarted read
/// finds it closed).
#[test]
fn close_in_a_handler_of_the_descriptor_a_parked_read_waits_on() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let got = differential("close in a handler, parked read", |_| {
        install(closing_handler);
        let (reader, _writer) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = reader.into_raw_fd();
        HANDLER_FD.store(fd, Ordering::SeqCst);
        // SAFETY: pthread_self has no preconditions.
        let target = unsafe { libc::pthread_self() };
        let signaller = after(SIGNAL_AT, move || {
            // SAFETY: the target thread outlives the case.
            unsafe { libc::pthread_kill(target, libc::SIGUSR1) }
        });
        let mut buf = [0u8; 8];
        // SAFETY: a read into a live buffer; the handler closes `fd`.
        let got = c_outcome(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } as i64);
        signaller.join().unwrap();
        (got, CLOSED.load(Ordering::SeqCst))
    });
    assert_eq!(got, (Err(Errno(libc::EBADF)), 1));
}

/// A handler that runs on another thread (the signal is sent to the
/// process) and closes the descriptor a coroutine is parked reading wakes
/// the coroutine with EBADF. Coroutine only: a thread blocked in `read`
/// keeps the file it started on, and stays blocked; the runtime promises
/// EBADF to parked readers of a closed descriptor, whoever closed it.
#[test]
fn close_in_a_handler_on_another_thread_wakes_the_parked_read_with_ebadf() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    install(closing_handler);
    let got = run(1, support::differential::LIMIT, || {
        let (reader, _writer) = std::io::pipe().unwrap();
        let fd = reader.into_raw_fd();
        HANDLER_FD.store(fd, Ordering::SeqCst);
        let signaller = after(WAIT, || {
            // SAFETY: kill to our own process.
            unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) }
        });
        let mut buf = [0u8; 4];
        // SAFETY: a read into a live buffer; the handler closes `fd`.
        let got = timed_span(|| {
            c_outcome(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } as i64)
        });
        assert_eq!(signaller.join().unwrap(), 0, "kill");
        got
    });
    assert_eq!(got, (Err(Errno(libc::EBADF)), Span::Woken));
}

unsafe extern "C" {
    /// glibc's `sigaction` under its exported alias, past the hook.
    fn __sigaction(
        signal: libc::c_int,
        act: *const libc::sigaction,
        old: *mut libc::sigaction,
    ) -> libc::c_int;
}

extern "C" fn ignoring_handler(_: libc::c_int) {}

/// `sigaction` reports a handler installed with SA_RESETHAND as glibc's
/// does: with the flags given, and once it has fired, reset to SIG_DFL
/// (whatever flags the runtime added to the handler it installed).
#[test]
fn sigaction_reports_a_reset_handler_as_glibc_does() {
    type Sigaction =
        unsafe extern "C" fn(libc::c_int, *const libc::sigaction, *mut libc::sigaction) -> i32;
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Each its own signal: glibc's view of a signal the hook installed
    // would be the hook's wrapper.
    let report = |sigaction: Sigaction, signal: i32| {
        // SAFETY: zeroed sigactions are valid; `raise` runs the handler,
        // which does nothing, on this thread.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = ignoring_handler as extern "C" fn(libc::c_int) as usize;
            act.sa_flags = libc::SA_RESETHAND;
            sigaction(signal, &act, std::ptr::null_mut());
            let query = |sigaction: Sigaction| {
                let mut old: libc::sigaction = std::mem::zeroed();
                sigaction(signal, std::ptr::null(), &mut old);
                (old.sa_sigaction, old.sa_flags)
            };
            let before = query(sigaction).1;
            libc::raise(signal);
            (before, query(sigaction))
        }
    };
    let hooked = report(libc::sigaction, libc::SIGRTMIN() + 3);
    let glibc = report(__sigaction, libc::SIGRTMIN() + 4);
    assert_eq!(
        hooked, glibc,
        "the hooked sigaction (left) differs from glibc's (right)"
    );
}

/// SIGPIPEs raised since the last `count_sigpipes`.
static SIGPIPES: AtomicI64 = AtomicI64::new(0);

extern "C" fn count_sigpipe(_: libc::c_int) {
    SIGPIPES.fetch_add(1, Ordering::SeqCst);
}

/// Counts SIGPIPEs while it lives; then they are ignored again, as the
/// Rust runtime has them.
struct CountSigpipes;

impl CountSigpipes {
    fn start() -> CountSigpipes {
        install_for(libc::SIGPIPE, count_sigpipe);
        CountSigpipes
    }

    /// The SIGPIPEs that `f` raised, and its value.
    fn during<T>(&self, f: impl FnOnce() -> T) -> (T, i64) {
        let before = SIGPIPES.load(Ordering::SeqCst);
        let value = f();
        (value, SIGPIPES.load(Ordering::SeqCst) - before)
    }
}

impl Drop for CountSigpipes {
    fn drop(&mut self) {
        // SAFETY: restores the disposition the Rust runtime set.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    }
}

/// One blocking `write(2)` of `len` bytes to `fd` while `cut` runs on a
/// plain thread after `at`, which keeps what it returns until the write
/// has returned: how much it moved, and the SIGPIPEs it raised.
fn write_cut_counting_sigpipes<K: Send + 'static>(
    fd: RawFd,
    len: usize,
    at: Duration,
    cut: impl FnOnce() -> K + Send + 'static,
) -> (Result<Moved, Errno>, i64) {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let cutter = after(at, move || {
        let kept = cut();
        let _ = released.recv();
        kept
    });
    let data = vec![1u8; len];
    let counting = CountSigpipes::start();
    // SAFETY: a write from a live buffer.
    let got = counting.during(|| moved(unsafe { libc::write(fd, data.as_ptr().cast(), len) }, len));
    let _ = release.send(());
    drop(cutter.join().unwrap());
    got
}

/// A Unix stream write that moved some bytes before the peer shut down
/// reading returns the partial count and raises no SIGPIPE.
#[test]
fn unix_write_cut_by_peer_shutdown_raises_no_sigpipe() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let got = differential("SIGPIPEs of a partial Unix write", |_| {
        let (writer, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
        write_cut_counting_sigpipes(writer.as_raw_fd(), 4 << 20, WAIT, move || {
            let mut buf = vec![0u8; 64 * 1024];
            let _ = std::io::Read::read(&mut peer, &mut buf);
            peer.shutdown(std::net::Shutdown::Read).unwrap();
            peer
        })
    });
    assert_eq!(got, (Ok(Moved::Part), 0));
}

/// A TCP write that moved some bytes before another thread shut down the
/// writer's side returns the partial count and raises no SIGPIPE.
#[test]
fn tcp_write_cut_by_own_shutdown_raises_no_sigpipe() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let got = differential("SIGPIPEs of a partial TCP write", |_| {
        let (writer, peer) = tcp_pair();
        let clone = writer.try_clone().unwrap();
        let at = Duration::from_millis(150);
        write_cut_counting_sigpipes(writer.as_raw_fd(), 16 << 20, at, move || {
            clone.shutdown(std::net::Shutdown::Write).unwrap();
            (clone, peer)
        })
    });
    assert_eq!(got, (Ok(Moved::Part), 0));
}

type Installer = unsafe extern "C" fn(libc::c_int, libc::sighandler_t) -> libc::sighandler_t;

/// What a sequence of `sigset` calls through `sigset` answered, and the
/// mask and handler each left.
fn sigset_sequence(sigset: Installer) -> (Vec<(bool, bool)>, (bool, libc::c_int)) {
    extern "C" fn quiet(_: libc::c_int) {}
    let hold: libc::sighandler_t = 2;
    let handler = quiet as *const () as libc::sighandler_t;
    let blocked = || {
        // SAFETY: queries the calling thread's mask into a valid set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigprocmask(libc::SIG_BLOCK, std::ptr::null(), &mut set);
            libc::sigismember(&set, libc::SIGUSR2) == 1
        }
    };
    let mut seen = Vec::new();
    // SAFETY: sigset with valid dispositions; the handler does nothing.
    unsafe {
        seen.push((
            sigset(libc::SIGUSR2, libc::SIG_IGN) == libc::SIG_ERR,
            blocked(),
        ));
        seen.push((sigset(libc::SIGUSR2, hold) == libc::SIG_IGN, blocked()));
        seen.push((sigset(libc::SIGUSR2, hold) == hold, blocked()));
        seen.push((sigset(libc::SIGUSR2, handler) == hold, blocked()));
        seen.push((sigset(libc::SIGUSR2, libc::SIG_IGN) == handler, blocked()));
        seen.push((sigset(0, handler) == libc::SIG_ERR, errno() == libc::EINVAL));
        sigset(libc::SIGUSR2, handler);
    }
    // SAFETY: a query into a valid sigaction.
    let shown = unsafe {
        let mut now: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGUSR2, std::ptr::null(), &mut now);
        (now.sa_sigaction == handler, now.sa_flags & libc::SA_SIGINFO)
    };
    // SAFETY: puts the default back.
    unsafe { sigset(libc::SIGUSR2, libc::SIG_DFL) };
    (seen, shown)
}

/// `sigset`'s answers and its effect on the mask and the handler, which
/// the hook rebuilds from `sigaction` and `sigprocmask`: as glibc's own
/// `sigset` gives them on a plain thread.
#[test]
fn sigset_reports_and_blocks_as_glibc_does() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT finds glibc's
    // `sigset`, of this type, past the hook in this executable.
    let glibc: Installer = unsafe {
        let address = libc::dlsym(libc::RTLD_NEXT, c"sigset".as_ptr());
        assert!(!address.is_null(), "glibc's sigset");
        std::mem::transmute::<*mut libc::c_void, Installer>(address)
    };
    let reference = thread::spawn(move || sigset_sequence(glibc))
        .join()
        .unwrap();
    let got = differential("sigset", |_| sigset_sequence(sigset));
    assert_eq!(got, reference);
    assert_eq!(reference.0[1], (true, true), "SIG_HOLD blocks");
}

type Interrupter = unsafe extern "C" fn(libc::c_int, libc::c_int) -> libc::c_int;

/// Whether handlers that `signal` installs after `siginterrupt` calls
/// restart interrupted calls, through these functions.
fn restarts_after_siginterrupt(signal: Installer, siginterrupt: Interrupter) -> Vec<bool> {
    extern "C" fn quiet(_: libc::c_int) {}
    let handler = quiet as *const () as libc::sighandler_t;
    let restarts = || {
        // SAFETY: a query into a valid sigaction.
        unsafe {
            let mut now: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGUSR2, std::ptr::null(), &mut now);
            now.sa_flags & libc::SA_RESTART != 0
        }
    };
    let mut seen = Vec::new();
    // SAFETY: installs a handler that does nothing, then the default.
    unsafe {
        signal(libc::SIGUSR2, handler);
        seen.push(restarts());
        siginterrupt(libc::SIGUSR2, 1);
        seen.push(restarts());
        signal(libc::SIGUSR2, handler);
        seen.push(restarts());
        siginterrupt(libc::SIGUSR2, 0);
        seen.push(restarts());
        signal(libc::SIGUSR2, handler);
        seen.push(restarts());
        seen.push(siginterrupt(0, 1) == -1 && errno() == libc::EINVAL);
        signal(libc::SIGUSR2, libc::SIG_DFL);
    }
    seen
}

/// `siginterrupt` makes later `signal` calls install handlers that
/// interrupt calls, as glibc's pair does on a plain thread.
#[test]
fn signal_after_siginterrupt_as_glibc() {
    unsafe extern "C" {
        fn siginterrupt(signal: libc::c_int, interrupt: libc::c_int) -> libc::c_int;
    }
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: dlsym with NUL-terminated names; RTLD_NEXT finds glibc's
    // functions of these types past the hooks in this executable.
    let (glibc_signal, glibc_siginterrupt): (Installer, Interrupter) = unsafe {
        let signal = libc::dlsym(libc::RTLD_NEXT, c"signal".as_ptr());
        let siginterrupt = libc::dlsym(libc::RTLD_NEXT, c"siginterrupt".as_ptr());
        assert!(!signal.is_null() && !siginterrupt.is_null());
        (
            std::mem::transmute::<*mut libc::c_void, Installer>(signal),
            std::mem::transmute::<*mut libc::c_void, Interrupter>(siginterrupt),
        )
    };
    let reference =
        thread::spawn(move || restarts_after_siginterrupt(glibc_signal, glibc_siginterrupt))
            .join()
            .unwrap();
    // glibc's own set is left as the reference left it: clear it.
    // SAFETY: as above.
    unsafe { glibc_siginterrupt(libc::SIGUSR2, 0) };
    let got = differential("siginterrupt", |_| {
        restarts_after_siginterrupt(libc::signal, siginterrupt)
    });
    assert_eq!(got, reference);
    assert_eq!(reference, [true, false, false, true, true, true]);
}
