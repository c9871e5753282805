//! glibc's internal signals, which its `sigaction` refuses to touch: the
//! set*id broadcast and cancellation. With thread identities, their
//! handlers must run on the worker's identity, as the user's do
//! (`signal.rs`): they update the worker's thread descriptor, which the
//! set*id broadcast waits on. Dynamically linked programs only, like
//! identities.

use core::sync::atomic::{AtomicUsize, Ordering};

use libc::{c_int, c_void, siginfo_t};

use super::signal::trampoline;
use crate::identity;

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
