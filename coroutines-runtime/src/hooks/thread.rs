//! `pthread_join`: `std::thread::JoinHandle::join` from a coroutine parks
//! the coroutine, not its worker.
//!
//! glibc's `pthread_join` waits on the thread's tid word inside libc (the
//! kernel clears it and wakes it when the thread exits), through its own
//! internal futex call that no hook sees. So inside a coroutine the hook:
//! 1. tries `pthread_tryjoin_np`: a thread that has already finished is
//!    joined at once, and every error is glibc's own;
//! 2. otherwise hands the blocking `pthread_join` to a short-lived helper
//!    thread and parks the coroutine on a [`Latch`] that the helper sets.
//!
//! A helper thread rather than polling `pthread_tryjoin_np` with growing
//! sleeps: the coroutine resumes as soon as the thread has ended, without
//! periodic wake-ups; its price, one thread creation (tens of
//! microseconds, glibc re-uses thread stacks), is small next to the thread
//! being joined, which cost one as well. If no helper can be started, the
//! hook falls back to polling with parks of 1 ms growing to 20 ms.
//!
//! Outside a coroutine, and in a coroutine that is panicking, the hook is
//! glibc's `pthread_join` (as
//! `pthread_timedjoin_np` without a deadline, which glibc implements with
//! the same code and which is not hooked).

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libc::{c_int, c_void, pthread_t};

use crate::coroutine::{self, in_coroutine};
use crate::sync::Latch;

/// The helper's stack: it only calls `pthread_join`.
const HELPER_STACK: usize = 64 * 1024;
/// The polling fallback's first and longest park.
const FIRST_POLL: Duration = Duration::from_millis(1);
const LONGEST_POLL: Duration = Duration::from_millis(20);

/// Hooked: `std::thread::JoinHandle::join` calls it.
///
/// # Safety
/// As `pthread_join(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pthread_join(thread: pthread_t, retval: *mut *mut c_void) -> c_int {
    // While a panic is in flight the worker blocks instead: std's panic
    // count is per OS thread (see `may_park` in hooks/futex.rs).
    if !in_coroutine() || std::thread::panicking() {
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
    match join_on_helper(thread) {
        Some((result, value)) => {
            if result == 0 && !retval.is_null() {
                // SAFETY: the caller passes a writable `retval` or null.
                unsafe { *retval = value };
            }
            result
        }
        // SAFETY: the caller's arguments.
        None => unsafe { poll_join(thread, retval) },
    }
}

/// What the helper hands back: `pthread_join`'s result and the thread's
/// return value, published by `done`.
struct Joined {
    result: AtomicI32,
    value: UnsafeCell<*mut c_void>,
    done: Latch,
}

// SAFETY: `value` is written by the helper before `done.set()` and read by
// the coroutine only after `done.wait()` returns.
unsafe impl Sync for Joined {}
// SAFETY: as above; the raw pointer is the joined thread's opaque result.
unsafe impl Send for Joined {}

/// Joins `thread` on a helper thread while the coroutine parks. `None` if
/// no helper could be started.
fn join_on_helper(thread: pthread_t) -> Option<(c_int, *mut c_void)> {
    let joined = Arc::new(Joined {
        result: AtomicI32::new(0),
        value: UnsafeCell::new(ptr::null_mut()),
        done: Latch::new(),
    });
    let helper = joined.clone();
    let started = std::thread::Builder::new()
        .name("coroutines-join".into())
        .stack_size(HELPER_STACK)
        .spawn(move || {
            let mut value = ptr::null_mut();
            // SAFETY: `thread` is joinable (tryjoin said it is running) and
            // only this helper joins it now; not a coroutine, so this is
            // glibc's blocking join.
            let result = unsafe { pthread_join(thread, &mut value) };
            // SAFETY: written once, before `set`; see `Joined`.
            unsafe { *helper.value.get() = value };
            helper.result.store(result, Ordering::Relaxed);
            helper.done.set();
        });
    // The helper's own handle is dropped: it detaches itself.
    drop(started.ok()?);
    joined.done.wait();
    // SAFETY: `done` is set, so the helper's write has happened.
    let value = unsafe { *joined.value.get() };
    Some((joined.result.load(Ordering::Relaxed), value))
}

/// Polls `pthread_tryjoin_np`, parking the coroutine between tries for 1 ms
/// doubling up to 20 ms.
///
/// # Safety
/// As `pthread_join(3)`.
unsafe fn poll_join(thread: pthread_t, retval: *mut *mut c_void) -> c_int {
    let mut pause = FIRST_POLL;
    loop {
        // SAFETY: per the contract; tryjoin never blocks.
        match unsafe { libc::pthread_tryjoin_np(thread, retval) } {
            libc::EBUSY => {}
            done => return done,
        }
        coroutine::park(Some(Instant::now() + pause), drop);
        pause = (pause * 2).min(LONGEST_POLL);
    }
}
