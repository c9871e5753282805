//! Thread calls: `pthread_join` (`JoinHandle::join` from a coroutine parks
//! the coroutine, not its worker) and `sched_yield` (`thread::yield_now`
//! lets the worker's other coroutines run).
//!
//! glibc's `pthread_join` waits on the thread's tid word inside libc (the
//! kernel clears it and wakes it when the thread exits), through its own
//! internal futex call that no hook sees. So inside a coroutine the hook:
//! 1. tries `pthread_tryjoin_np`: a thread that has already finished is
//!    joined at once, and every error is glibc's own;
//! 2. otherwise makes the blocking join on a helper thread of the runtime
//!    (`crate::blocking`) while the coroutine parks: it resumes as soon as
//!    the thread has ended, without periodic wake-ups.
//!
//! Outside a coroutine, and in a coroutine that is panicking, the hook is
//! glibc's `pthread_join` (as `pthread_timedjoin_np` without a deadline,
//! which glibc implements with the same code and which is not hooked).

use core::ptr;

use libc::{c_int, c_void, pthread_t};

use crate::blocking;
use crate::coroutine::{may_switch, yield_now};

/// Hooked: `std::thread::JoinHandle::join` calls it.
///
/// # Safety
/// As `pthread_join(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pthread_join(thread: pthread_t, retval: *mut *mut c_void) -> c_int {
    if !may_switch() {
        // SAFETY: the caller's arguments, as for pthread_join.
        return unsafe { libc::pthread_timedjoin_np(thread, retval, ptr::null()) };
    }
    // SAFETY: pthread_self has no preconditions.
    if thread == unsafe { libc::pthread_self() } {
        // A coroutine joining its own worker thread: glibc's answer.
        return libc::EDEADLK;
    }
    // SAFETY: the caller's arguments; tryjoin never blocks.
    match unsafe { libc::pthread_tryjoin_np(thread, retval) } {
        libc::EBUSY => {}
        done => return done,
    }
    let (result, value) = blocking::run(|| {
        let mut value = ptr::null_mut();
        // SAFETY: `thread` is joinable (tryjoin said it is running) and
        // only this call joins it now; on a helper thread this is glibc's
        // blocking join.
        let result = unsafe { libc::pthread_timedjoin_np(thread, &mut value, ptr::null()) };
        (result, value as usize)
    });
    if result == 0 && !retval.is_null() {
        // SAFETY: the caller passes a writable `retval` or null.
        unsafe { *retval = value as *mut c_void };
    }
    result
}

/// Hooked: `std::thread::yield_now` (and spin loops' back-off, such as
/// `std::sync::mpsc`'s). A coroutine first yields to the other coroutines
/// of its worker: a loop waiting for one of them would otherwise hold the
/// worker for ever. Then the worker yields its CPU, as a thread's call
/// does. Runtime code that spins this way yields only the CPU
/// (`switch::as_worker_thread`).
///
/// # Safety
/// Always safe; `unsafe` for symmetry with the C declaration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sched_yield() -> c_int {
    if may_switch() {
        yield_now();
    }
    crate::sys::sched_yield();
    0
}
