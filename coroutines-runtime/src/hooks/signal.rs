//! Signal handlers: `sigaction` and `signal` install the user's handler
//! behind a trampoline that runs it outside the coroutine it interrupts.
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
//! `sigaction` refuses to touch, are wrapped the same way by
//! [`wrap_glibc_signals`]: their handlers update the worker's thread
//! descriptor, which the set*id broadcast waits on.

use core::sync::atomic::{AtomicUsize, Ordering};

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
extern "C" fn trampoline(signal: c_int, info: *mut siginfo_t, context: *mut c_void) {
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

/// glibc's internal signals: `__SIGRTMIN` (cancellation) and
/// `__SIGRTMIN + 1` (the set*id broadcast).
const SIGCANCEL: c_int = 32;
const SIGSETXID: c_int = 33;
/// The kernel's `SA_RESTORER`: glibc installs its handlers with one.
const SA_RESTORER: u64 = 0x0400_0000;

/// glibc's handlers behind the wrappers.
static GLIBC_CANCEL: AtomicUsize = AtomicUsize::new(0);
static GLIBC_SETXID: AtomicUsize = AtomicUsize::new(0);

/// The kernel's `struct sigaction` for `rt_sigaction` on x86-64.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

fn rt_sigaction(signal: c_int, new: Option<&KernelSigaction>, old: &mut KernelSigaction) -> isize {
    let new = new.map_or(core::ptr::null(), |n| n as *const KernelSigaction);
    crate::sys::syscall!(
        libc::SYS_rt_sigaction,
        signal,
        new,
        old as *mut KernelSigaction,
        8
    )
}

/// Runs glibc's handler for an internal signal on the worker's identity.
extern "C" fn glibc_signal(signal: c_int, info: *mut siginfo_t, context: *mut c_void) {
    let next = match signal {
        SIGSETXID => &GLIBC_SETXID,
        _ => &GLIBC_CANCEL,
    };
    // SAFETY: set (to glibc's SA_SIGINFO handler) before this wrapper was
    // installed.
    let next: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) =
        unsafe { core::mem::transmute(next.load(Ordering::Acquire)) };
    identity::on_worker(&mut || next(signal, info, context));
}

/// Puts [`glibc_signal`] in front of glibc's handlers for its internal
/// signals (already installed: the set*id one with the first thread, the
/// cancellation one by a `pthread_cancel`, which identity's start-up
/// makes), keeping glibc's flags, mask and restorer.
pub(crate) fn wrap_glibc_signals() -> Result<(), String> {
    for (signal, next) in [(SIGSETXID, &GLIBC_SETXID), (SIGCANCEL, &GLIBC_CANCEL)] {
        let mut old = KernelSigaction::default();
        if rt_sigaction(signal, None, &mut old) != 0 {
            return Err(format!("cannot read the handler of signal {signal}"));
        }
        let wrapper = glibc_signal as *const () as usize;
        if old.handler == wrapper {
            continue;
        }
        let expected = libc::SA_SIGINFO as u64 | SA_RESTORER;
        if old.handler <= 1 || old.flags & expected != expected {
            return Err(format!(
                "glibc's handler for signal {signal} is not installed as expected \
                 (handler {:#x}, flags {:#x})",
                old.handler, old.flags
            ));
        }
        next.store(old.handler, Ordering::Release);
        let new = KernelSigaction {
            handler: wrapper,
            ..old
        };
        let mut check = KernelSigaction::default();
        if rt_sigaction(signal, Some(&new), &mut check) != 0 {
            return Err(format!("cannot wrap glibc's handler of signal {signal}"));
        }
    }
    Ok(())
}

/// Checks that faults go through the trampoline: the `generator` crate's
/// stack-overflow handler (installed with the first generator, through the
/// hooked `sigaction`) must run on the worker's identity.
pub(crate) fn verify_fault_handlers() -> Result<(), String> {
    for signal in [libc::SIGSEGV, libc::SIGBUS] {
        let mut current = KernelSigaction::default();
        rt_sigaction(signal, None, &mut current);
        if current.handler != trampoline as *const () as usize {
            return Err(format!(
                "the handler of signal {signal} does not go through the sigaction hook"
            ));
        }
    }
    Ok(())
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

/// Hooked: glibc's `signal` (BSD semantics: `SA_RESTART`, the signal
/// blocked during its handler) through the hooked `sigaction`.
///
/// # Safety
/// As `signal(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn signal(signal: c_int, handler: sighandler_t) -> sighandler_t {
    // SAFETY: an all-zero sigaction is valid; the set functions get a
    // valid set.
    let mut act: SigAction = unsafe { core::mem::zeroed() };
    act.sa_sigaction = handler;
    act.sa_flags = libc::SA_RESTART;
    // SAFETY: as above.
    if unsafe { libc::sigaddset(&mut act.sa_mask, signal) } != 0 {
        return libc::SIG_ERR;
    }
    // SAFETY: as above.
    let mut old: SigAction = unsafe { core::mem::zeroed() };
    // SAFETY: both are valid sigactions.
    match unsafe { sigaction(signal, &act, &mut old) } {
        0 => old.sa_sigaction,
        _ => libc::SIG_ERR,
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
