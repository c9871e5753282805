//! Signal handlers: `sigaction` and glibc's one-call installers (`signal`
//! and its other names, `sysv_signal`, `sigset`) install the user's handler behind a trampoline
//! that runs it outside the coroutine it interrupts.
//!
//! A handler runs on whatever stack the signal found; if that is a
//! coroutine's, a hooked call in the handler would otherwise park the
//! coroutine *inside* the handler, switching away from a signal frame with
//! the worker's signal mask, and possibly while the interrupted code holds
//! a lock the park needs. Through the trampoline, hooked calls in a handler
//! behave as on a thread (a `sleep` sleeps, a `read` blocks), and `close`
//! leaves waking the descriptor's waiters to a worker. What `sigaction`
//! reports back is always what the user installed.
//!
//! Handlers run on the worker's thread identity (`identity::on_worker`),
//! the kernel thread the signal interrupted: that is what the `generator`
//! crate's stack-overflow handler needs (its context stack is in the
//! worker's thread-locals), and it keeps a handler's `errno` juggling off
//! the coroutine's. glibc's own set*id and cancellation signals, which its
//! `sigaction` refuses to touch, are wrapped the same way
//! (`glibc_signals.rs`).

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use libc::{c_int, c_void, sigaction as SigAction, sighandler_t, siginfo_t};

use crate::coroutine::switch;
use crate::identity;

/// Signal numbers are below this (`_NSIG` on Linux).
const SIGNALS: usize = 65;

/// The user's handler of each signal installed through these hooks: its
/// address, with bit 0 set if it takes `siginfo_t` (`SA_SIGINFO`); 0 if
/// none.
static HANDLERS: [AtomicUsize; SIGNALS] = [const { AtomicUsize::new(0) }; SIGNALS];
const TAKES_SIGINFO: usize = 1;

unsafe extern "C" {
    /// glibc's `sigaction`, under its exported alias.
    fn __sigaction(signal: c_int, act: *const SigAction, old: *mut SigAction) -> c_int;
}

/// The kernel calls this for every signal whose handler the user installed
/// through the hooks.
pub(super) extern "C" fn trampoline(signal: c_int, info: *mut siginfo_t, context: *mut c_void) {
    let Some(slot) = HANDLERS.get(signal as usize) else {
        return;
    };
    let handler = slot.load(Ordering::Acquire);
    let address = handler & !TAKES_SIGINFO;
    if address == 0 {
        return;
    }
    identity::on_worker(&mut || {
        switch::in_handler(|| {
            if handler & TAKES_SIGINFO != 0 {
                // SAFETY: the user installed this address as an SA_SIGINFO
                // handler.
                let f: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) =
                    unsafe { core::mem::transmute(address) };
                f(signal, info, context);
            } else {
                // SAFETY: the user installed this address as a plain handler.
                let f: extern "C" fn(c_int) = unsafe { core::mem::transmute(address) };
                f(signal);
            }
        })
    });
}

/// Whether `handler` is a function rather than `SIG_DFL` or `SIG_IGN`.
fn is_function(handler: sighandler_t) -> bool {
    handler != libc::SIG_DFL && handler != libc::SIG_IGN && handler != libc::SIG_ERR
}

/// Hooked: installs the user's handler behind the trampoline.
///
/// # Safety
/// As `sigaction(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigaction(
    signal: c_int,
    act: *const SigAction,
    old: *mut SigAction,
) -> c_int {
    let slot = usize::try_from(signal).ok().and_then(|s| HANDLERS.get(s));
    let (Some(slot), Some(requested)) = (slot, unsafe { act.as_ref() }) else {
        // A query, or a signal glibc rejects: nothing to wrap.
        // SAFETY: the caller's arguments.
        let ret = unsafe { __sigaction(signal, act, old) };
        // SAFETY: as above; `old` was written if the call succeeded.
        if ret == 0 {
            if let (Some(slot), Some(old)) = (slot, unsafe { old.as_mut() }) {
                report(slot.load(Ordering::Acquire), old);
            }
        }
        return ret;
    };
    let mut installed = *requested;
    let wrapped = is_function(requested.sa_sigaction);
    let user = requested.sa_sigaction
        | if requested.sa_flags & libc::SA_SIGINFO != 0 {
            TAKES_SIGINFO
        } else {
            0
        };
    if wrapped {
        installed.sa_sigaction = trampoline as *const () as sighandler_t;
        installed.sa_flags |= libc::SA_SIGINFO;
    }
    // The table changes before the kernel's handler when a handler is
    // installed, and after it when one is removed, so that the trampoline
    // never runs without its user's handler.
    let before = slot.load(Ordering::Acquire);
    if wrapped {
        slot.store(user, Ordering::Release);
    }
    // SAFETY: `installed` is a valid sigaction; `old` is the caller's.
    let ret = unsafe { __sigaction(signal, &installed, old) };
    if ret != 0 {
        slot.store(before, Ordering::Release);
        return ret;
    }
    if !wrapped {
        slot.store(0, Ordering::Release);
    }
    // SAFETY: the call succeeded, so `old`, if given, was written.
    if let Some(old) = unsafe { old.as_mut() } {
        report(before, old);
    }
    0
}

/// Shows the user what they installed: their handler where the kernel has
/// the trampoline, and their flags (without the `SA_SIGINFO` the
/// trampoline needs) also once `SA_RESETHAND` has put `SIG_DFL` back.
fn report(user: usize, old: &mut SigAction) {
    if user == 0 {
        return;
    }
    let ours = old.sa_sigaction == trampoline as *const () as sighandler_t;
    let reset = old.sa_sigaction == libc::SIG_DFL && old.sa_flags & libc::SA_RESETHAND != 0;
    if ours {
        old.sa_sigaction = user & !TAKES_SIGINFO;
    }
    if (ours || reset) && user & TAKES_SIGINFO == 0 {
        old.sa_flags &= !libc::SA_SIGINFO;
    }
}

/// glibc's `SIG_HOLD` disposition of `sigset`: block the signal.
const SIG_HOLD: sighandler_t = 2;
/// glibc's obsolete `SA_INTERRUPT`, which its `sysv_signal` passes on.
const SA_INTERRUPT: c_int = 0x2000_0000;

/// Installs `handler` for `signal` through the hooked `sigaction` with
/// `flags`, the signal blocked during the handler if `blocked`, as glibc's
/// one-call installers do (which call glibc's `sigaction` where no hook
/// sees it); returns the old handler, or `SIG_ERR`. `SIG_ERR` itself is
/// refused with EINVAL, as `signal` and `sysv_signal` refuse it (`sigset`
/// installs it).
fn install(signal: c_int, handler: sighandler_t, flags: c_int, blocked: bool) -> sighandler_t {
    if handler == libc::SIG_ERR {
        crate::sys::set_errno(libc::EINVAL);
        return libc::SIG_ERR;
    }
    install_any(signal, handler, flags, blocked)
}

/// [`install`], `SIG_ERR` included.
fn install_any(signal: c_int, handler: sighandler_t, flags: c_int, blocked: bool) -> sighandler_t {
    if !(1..SIGNALS as c_int).contains(&signal) {
        crate::sys::set_errno(libc::EINVAL);
        return libc::SIG_ERR;
    }
    // SAFETY: an all-zero sigaction is valid; `signal` is in range for
    // the set.
    let mut act: SigAction = unsafe { core::mem::zeroed() };
    act.sa_sigaction = handler;
    act.sa_flags = flags;
    if blocked {
        // SAFETY: as above.
        unsafe { libc::sigaddset(&mut act.sa_mask, signal) };
    }
    // SAFETY: as above.
    let mut old: SigAction = unsafe { core::mem::zeroed() };
    // SAFETY: both are valid sigactions.
    match unsafe { sigaction(signal, &act, &mut old) } {
        0 => old.sa_sigaction,
        _ => libc::SIG_ERR,
    }
}

/// The signals `siginterrupt` made interrupt calls: `signal` installs
/// their handlers without `SA_RESTART`, as glibc's does.
static INTERRUPTING: AtomicU64 = AtomicU64::new(0);

/// Hooked: glibc's `signal` (BSD semantics: `SA_RESTART` unless
/// `siginterrupt` said otherwise, the signal blocked during its handler).
///
/// # Safety
/// As `signal(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn signal(signal: c_int, handler: sighandler_t) -> sighandler_t {
    let interrupts = (1..SIGNALS as c_int).contains(&signal)
        && INTERRUPTING.load(Ordering::Acquire) & (1 << (signal - 1)) != 0;
    let flags = match interrupts {
        true => 0,
        false => libc::SA_RESTART,
    };
    install(signal, handler, flags, true)
}

/// Hooked: sets or clears `SA_RESTART` of the installed handler, and
/// remembers it for later `signal` calls (glibc keeps that in a set its
/// `signal` reads, which the hooked `signal` cannot).
///
/// # Safety
/// As `siginterrupt(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn siginterrupt(signal: c_int, interrupt: c_int) -> c_int {
    // SAFETY: an all-zero sigaction is valid.
    let mut action: SigAction = unsafe { core::mem::zeroed() };
    // SAFETY: a query into a valid sigaction; it fails for a bad signal.
    if unsafe { sigaction(signal, core::ptr::null(), &mut action) } < 0 {
        return -1;
    }
    // Signals 1 to 64: the query refused any other.
    let bit = 1u64 << (signal - 1);
    if interrupt != 0 {
        INTERRUPTING.fetch_or(bit, Ordering::AcqRel);
        action.sa_flags &= !libc::SA_RESTART;
    } else {
        INTERRUPTING.fetch_and(!bit, Ordering::AcqRel);
        action.sa_flags |= libc::SA_RESTART;
    }
    // SAFETY: the action just reported, with one flag changed.
    match unsafe { sigaction(signal, &action, core::ptr::null_mut()) } {
        0 => 0,
        _ => -1,
    }
}

/// Hooked: glibc's other name for `signal`.
///
/// # Safety
/// As `signal(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bsd_signal(signal: c_int, handler: sighandler_t) -> sighandler_t {
    // SAFETY: same contract.
    unsafe { self::signal(signal, handler) }
}

/// Hooked: glibc's third name for `signal` (the same function there).
///
/// # Safety
/// As `signal(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ssignal(signal: c_int, handler: sighandler_t) -> sighandler_t {
    // SAFETY: same contract.
    unsafe { self::signal(signal, handler) }
}

/// Hooked: System V semantics: the handler is reset to the default as it
/// runs, and the signal is not blocked during it.
///
/// # Safety
/// As `sysv_signal(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysv_signal(signal: c_int, handler: sighandler_t) -> sighandler_t {
    let flags = libc::SA_RESETHAND | libc::SA_NODEFER | SA_INTERRUPT;
    install(signal, handler, flags, false)
}

/// Hooked: glibc's internal name for `sysv_signal`.
///
/// # Safety
/// As `sysv_signal(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __sysv_signal(signal: c_int, handler: sighandler_t) -> sighandler_t {
    // SAFETY: same contract.
    unsafe { sysv_signal(signal, handler) }
}

/// Hooked: `sigset` installs a handler (and unblocks the signal) or, with
/// `SIG_HOLD`, blocks the signal; it returns `SIG_HOLD` if the signal was
/// blocked, else the old handler.
///
/// # Safety
/// As `sigset(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigset(signal: c_int, disposition: sighandler_t) -> sighandler_t {
    if !(1..SIGNALS as c_int).contains(&signal) {
        crate::sys::set_errno(libc::EINVAL);
        return libc::SIG_ERR;
    }
    // SAFETY: all-zero signal sets are valid, and `signal` is in range.
    let (mut set, mut was) = unsafe { (core::mem::zeroed(), core::mem::zeroed()) };
    // SAFETY: as above.
    unsafe { libc::sigaddset(&mut set, signal) };
    let how = match disposition {
        SIG_HOLD => libc::SIG_BLOCK,
        _ => libc::SIG_UNBLOCK,
    };
    let old = match disposition {
        SIG_HOLD => libc::SIG_DFL,
        _ => install_any(signal, disposition, 0, false),
    };
    // SAFETY: valid sets.
    if old == libc::SIG_ERR || unsafe { libc::sigprocmask(how, &set, &mut was) } < 0 {
        return libc::SIG_ERR;
    }
    // SAFETY: a valid set.
    if unsafe { libc::sigismember(&was, signal) } == 1 {
        return SIG_HOLD;
    }
    if disposition != SIG_HOLD {
        return old;
    }
    // SAFETY: an all-zero sigaction is valid; a query.
    let mut now: SigAction = unsafe { core::mem::zeroed() };
    // SAFETY: a query into a valid sigaction.
    match unsafe { sigaction(signal, core::ptr::null(), &mut now) } {
        0 => now.sa_sigaction,
        _ => libc::SIG_ERR,
    }
}
