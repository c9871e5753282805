//! `epoll_wait`, `epoll_pwait` and `epoll_pwait2`: event loops inside
//! coroutines (a tokio or mio runtime built inside a call of a synchronous
//! client) park the coroutine instead of blocking the worker.
//!
//! An epoll instance is itself pollable (readable while it has events to
//! report), so in a coroutine the hooks ask it with a zero timeout and park
//! on its readiness in between: the events are the kernel's own. The
//! signal mask of the `p` variants applies to each of those questions, as
//! for `ppoll` (see `hooks::poll`).

use std::time::{Duration, Instant};

use libc::{c_int, epoll_event, sigset_t, timespec};

use super::driver::Recheck;
use crate::coroutine::{self, in_coroutine, Wait};
use crate::reactor::fd_table::Interest;
use crate::reactor::{wait_fd, FdWait, Outcome};
use crate::sys::{self, c_result, syscall, SIGSET_BYTES};

/// `epoll_pwait` with a zero timeout and the caller's signal mask (null:
/// the thread's), as a timed-out call ends: events, an error, or 0,
/// without looking for signals. The raw result.
fn epoll_ready(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    sigmask: *const sigset_t,
) -> isize {
    syscall!(
        libc::SYS_epoll_pwait,
        epfd,
        events,
        max,
        0,
        sigmask,
        SIGSET_BYTES
    )
}

/// What a blocking `epoll_pwait` with the caller's signal mask (null: the
/// thread's) returns without sleeping: its events, its error, or EINTR;
/// else 0. The raw result.
fn epoll_now(epfd: c_int, events: *mut epoll_event, max: c_int, sigmask: *const sigset_t) -> isize {
    let ready = epoll_ready(epfd, events, max, sigmask);
    if ready != 0 || sigmask.is_null() {
        return ready;
    }
    // Nothing ready: the blocking call would now look for signals, and a
    // pending one that the mask unblocks interrupts it, where one with a
    // zero timeout has returned. `ppoll` looks (and runs the handler).
    match sys::ppoll_masked(core::ptr::null_mut(), 0, Some(Duration::ZERO), sigmask) {
        interrupted if interrupted < 0 => interrupted,
        _ => 0,
    }
}

/// An epoll wait for the hooks, up to `timeout` (`None`: no limit);
/// `call` is the wait as the user made it, for outside coroutines. The raw
/// result.
fn epoll_waited(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: Option<Duration>,
    sigmask: *const sigset_t,
    call: impl FnOnce() -> isize,
) -> isize {
    if !in_coroutine() || timeout == Some(Duration::ZERO) {
        return call();
    }
    // The kernel validates everything first; events or an error return at
    // once.
    let now = epoll_now(epfd, events, max, sigmask);
    if now != 0 {
        return now;
    }
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut recheck = Recheck::UNWATCHED;
    loop {
        let Some(wait) = FdWait::lookup(epfd, Interest::Read) else {
            return call();
        };
        let now = epoll_now(epfd, events, max, sigmask);
        if now != 0 {
            return now;
        }
        match wait_fd(&wait, deadline) {
            Outcome::Ready => {}
            Outcome::TimedOut | Outcome::Closed => return epoll_ready(epfd, events, max, sigmask),
            Outcome::NotPollable => {
                // An epoll instance nested too deep for the worker's to
                // watch: asked again now and then.
                coroutine::park(Some(recheck.next(deadline)), Wait::Fds, drop);
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return epoll_ready(epfd, events, max, sigmask);
                }
            }
        }
    }
}

/// An `int` milliseconds timeout: negative waits for ever.
fn millis(timeout: c_int) -> Option<Duration> {
    (timeout >= 0).then(|| Duration::from_millis(timeout as u64))
}

/// Hooked: see the module docs.
///
/// # Safety
/// As `epoll_wait(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_wait(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: c_int,
) -> c_int {
    let call = || syscall!(libc::SYS_epoll_wait, epfd, events, max, timeout);
    let ret = epoll_waited(epfd, events, max, millis(timeout), core::ptr::null(), call);
    c_result(ret) as c_int
}

/// Hooked: see the module docs.
///
/// # Safety
/// As `epoll_pwait(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: c_int,
    sigmask: *const sigset_t,
) -> c_int {
    let call = || {
        syscall!(
            libc::SYS_epoll_pwait,
            epfd,
            events,
            max,
            timeout,
            sigmask,
            SIGSET_BYTES
        )
    };
    c_result(epoll_waited(
        epfd,
        events,
        max,
        millis(timeout),
        sigmask,
        call,
    )) as c_int
}

/// Hooked: see the module docs.
///
/// # Safety
/// As `epoll_pwait2(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_pwait2(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: *const timespec,
    sigmask: *const sigset_t,
) -> c_int {
    let call = || {
        syscall!(
            libc::SYS_epoll_pwait2,
            epfd,
            events,
            max,
            timeout,
            sigmask,
            SIGSET_BYTES
        )
    };
    if !in_coroutine() {
        return c_result(call()) as c_int;
    }
    let ret = match super::timespec::read(timeout) {
        Ok(limit) => epoll_waited(epfd, events, max, limit, sigmask, call),
        Err(error) => -(error as isize),
    };
    c_result(ret) as c_int
}
