//! The driver shared by every hook that may block on a descriptor.

use core::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use libc::c_int;

use super::nonblock::{self, NonblockHold};
use crate::coroutine::in_coroutine;
use crate::reactor::fd_table::{
    FdEntry, Interest, FD_TABLE, STRATEGY_PASS_THROUGH, STRATEGY_PER_CALL, STRATEGY_UNKNOWN,
    STRATEGY_WAIT_FIRST, STREAM_NO, STREAM_UNKNOWN, STREAM_YES,
};
use crate::reactor::{wait_fd, FdWait, Outcome};
use crate::sys::syscall;

/// How one attempt of a call is kept from blocking.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nonblock {
    /// The call takes a per-call flag (`MSG_DONTWAIT`, `RWF_NOWAIT`).
    PerCall,
    /// The call has none (accept): the description is held in O_NONBLOCK
    /// meanwhile.
    Hold,
}

/// Makes a call that may block on `fd` for `interest`; in a coroutine, parks
/// it instead of blocking the worker. Returns the raw result (`-errno` on
/// failure).
///
/// `attempt(true)` must not block: with [`Nonblock::PerCall`] it adds the
/// per-call flag; with [`Nonblock::Hold`] the description is non-blocking
/// while it runs. `attempt(false)` is the call as the user made it, made
/// once outside coroutines. Before parking, the kernel is asked what the
/// user wants: a non-blocking description fails with EAGAIN at once, and
/// `SO_RCVTIMEO`/`SO_SNDTIMEO` bound the wait, after which the result is
/// EAGAIN, as the kernel gives it.
///
/// `requested` is, for a read that consumes a byte stream, the bytes asked
/// for (0 otherwise): when such a read comes back short, the stream is
/// drained, and the next read parks at once instead of making a call that
/// would return EAGAIN, until a readiness edge says otherwise.
pub(crate) fn blocking_io(
    fd: c_int,
    interest: Interest,
    nonblock_by: Nonblock,
    requested: usize,
    mut attempt: impl FnMut(bool) -> isize,
) -> isize {
    if !in_coroutine() {
        return if nonblock_by == Nonblock::Hold && nonblock::added_by_runtime(fd) {
            blocking_in_thread(fd, interest, attempt)
        } else {
            attempt(false)
        };
    }
    let Some(entry) = FD_TABLE.get(fd) else {
        return attempt(false);
    };
    let _hold = match nonblock_by {
        Nonblock::Hold => match NonblockHold::take(fd, entry) {
            Some(hold) => Some(hold),
            None => return attempt(false),
        },
        Nonblock::PerCall => None,
    };
    // Learned from the kernel, and timed from, the first time the call
    // would park: a call that does not block never reads the clock.
    let mut deadline: Option<Option<Instant>> = None;
    loop {
        let strategy = entry.strategy.load(Ordering::Relaxed);
        if strategy == STRATEGY_PASS_THROUGH {
            return attempt(false);
        }
        let wait = FdWait::new(fd, entry, interest);
        // The edge count alone cannot tell end-of-file: the hang-up edge may
        // have come before the short read, and none follows it.
        let drained = requested != 0
            && entry.drained_at.load(Ordering::Relaxed) == wait.snapshot()
            && !entry.read_closed.load(Ordering::Acquire);
        let tried = strategy != STRATEGY_WAIT_FIRST && !drained;
        if strategy == STRATEGY_WAIT_FIRST && ready_now(fd, interest) {
            return attempt(false);
        }
        if tried {
            let ret = attempt(true);
            if ret > 0 && (ret as usize) < requested && is_stream(fd, entry) {
                entry.drained_at.store(wait.snapshot(), Ordering::Relaxed);
            }
            if ret == -(libc::EOPNOTSUPP as isize) && strategy == STRATEGY_UNKNOWN {
                entry.strategy.store(STRATEGY_WAIT_FIRST, Ordering::Relaxed);
                continue;
            }
            if ret != -(libc::EAGAIN as isize) {
                if ret >= 0 && strategy == STRATEGY_UNKNOWN {
                    entry.strategy.store(STRATEGY_PER_CALL, Ordering::Relaxed);
                }
                return ret;
            }
        }
        // Valid across the runtime's own holds: they never change what the
        // user asked for.
        let (user_nonblocking, timeout) = nonblock::cached_settings(fd, entry, interest);
        let deadline =
            *deadline.get_or_insert_with(|| timeout.and_then(|t| Instant::now().checked_add(t)));
        if user_nonblocking {
            // The user's call does not block: make it as is.
            return if tried {
                -(libc::EAGAIN as isize)
            } else {
                attempt(false)
            };
        }
        match wait_fd(&wait, deadline) {
            Outcome::Ready => {}
            Outcome::TimedOut => return -(libc::EAGAIN as isize),
            Outcome::Closed => return -(libc::EBADF as isize),
            Outcome::NotPollable => return attempt(false),
        }
    }
}

/// A plain thread's call on a description a coroutine holds in O_NONBLOCK
/// while the user wants it blocking: blocks in `ppoll` between attempts, up
/// to the user's timeout, as the kernel would have blocked in the call.
fn blocking_in_thread(
    fd: c_int,
    interest: Interest,
    mut attempt: impl FnMut(bool) -> isize,
) -> isize {
    let deadline = nonblock::user_timeout(fd, interest).map(|t| Instant::now() + t);
    loop {
        let ret = attempt(false);
        if ret != -(libc::EAGAIN as isize) || !nonblock::added_by_runtime(fd) {
            return ret;
        }
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if remaining.is_some_and(|r| r.is_zero()) || poll_one(fd, interest, remaining) < 0 {
            return ret;
        }
    }
}

/// Whether reads on `fd` consume a byte stream; learned from the kernel
/// once per descriptor.
fn is_stream(fd: c_int, entry: &FdEntry) -> bool {
    let known = entry.stream.load(Ordering::Relaxed);
    if known != STREAM_UNKNOWN {
        return known == STREAM_YES;
    }
    let mut stat = core::mem::MaybeUninit::<libc::stat>::uninit();
    let stream = if syscall!(libc::SYS_fstat, fd, stat.as_mut_ptr()) < 0 {
        false
    } else {
        // SAFETY: fstat succeeded, so it filled `stat`.
        match unsafe { stat.assume_init() }.st_mode & libc::S_IFMT {
            libc::S_IFIFO => true,
            libc::S_IFSOCK => {
                let mut kind: c_int = 0;
                let mut size = core::mem::size_of::<c_int>() as libc::socklen_t;
                let ret = syscall!(
                    libc::SYS_getsockopt,
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_TYPE,
                    &mut kind as *mut c_int,
                    &mut size as *mut libc::socklen_t
                );
                ret == 0 && kind == libc::SOCK_STREAM
            }
            _ => false,
        }
    };
    entry.stream.store(
        if stream { STREAM_YES } else { STREAM_NO },
        Ordering::Relaxed,
    );
    stream
}

/// Level-triggered readiness check, for descriptors whose calls cannot be
/// made non-blocking one at a time.
pub(crate) fn ready_now(fd: c_int, interest: Interest) -> bool {
    poll_one(fd, interest, Some(Duration::ZERO)) != 0
}

/// `ppoll` on one descriptor for `interest`, up to `timeout` (forever if
/// `None`); the raw result.
fn poll_one(fd: c_int, interest: Interest, timeout: Option<Duration>) -> isize {
    let events = match interest {
        Interest::Read => libc::POLLIN,
        Interest::Write => libc::POLLOUT,
    };
    let mut pollfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    crate::sys::ppoll(&mut pollfd, 1, timeout)
}

/// Forgets what was known of a descriptor number that was just created.
pub(crate) fn on_created(fd: c_int) {
    if let Some(entry) = FD_TABLE.peek(fd) {
        entry.reset();
    }
}
