//! The driver shared by every hook that may block on a descriptor.

use core::sync::atomic::Ordering;
use std::time::Instant;

use libc::c_int;

use crate::coroutine::in_coroutine;
use crate::reactor::fd_table::{
    FdEntry, Interest, FD_TABLE, MODE_BLOCKING, MODE_NONBLOCKING, MODE_UNKNOWN,
    STRATEGY_PASS_THROUGH, STRATEGY_PER_CALL, STRATEGY_UNKNOWN, STRATEGY_WAIT_FIRST, STREAM_NO,
    STREAM_UNKNOWN, STREAM_YES,
};
use crate::reactor::{wait_fd, FdWait, Outcome};
use crate::sys::syscall;

/// How one attempt of a call is kept from blocking.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nonblock {
    /// The call takes a per-call flag (`MSG_DONTWAIT`, `RWF_NOWAIT`).
    PerCall,
    /// The call has none (accept): the file is held in O_NONBLOCK meanwhile.
    Hold,
}

/// Makes a call that may block on `fd` for `interest`; in a coroutine, parks
/// it instead of blocking the worker. Returns the raw result (`-errno` on
/// failure).
///
/// `requested` is, for a read that consumes a byte stream, the bytes asked
/// for (0 otherwise): when such a read comes back short, the stream is
/// drained, and the next read parks at once instead of making a call that
/// would return EAGAIN, until a readiness edge says otherwise.
///
/// `attempt(true)` must not block: with [`Nonblock::PerCall`] it adds the
/// per-call flag; with [`Nonblock::Hold`] the file is non-blocking while it
/// runs. `attempt(false)` is the call as the user made it. Outside a
/// coroutine, or when the user made the fd non-blocking, the call is made
/// once as is. The user's `SO_RCVTIMEO`/`SO_SNDTIMEO` bound the wait, after
/// which the result is EAGAIN, as the kernel gives it.
pub(crate) fn blocking_io(
    fd: c_int,
    interest: Interest,
    nonblock: Nonblock,
    requested: usize,
    mut attempt: impl FnMut(bool) -> isize,
) -> isize {
    if !in_coroutine() {
        return attempt(false);
    }
    let Some(entry) = FD_TABLE.get(fd) else {
        return attempt(false);
    };
    if user_mode(fd, entry) == MODE_NONBLOCKING {
        return attempt(false);
    }
    let _hold = (nonblock == Nonblock::Hold).then(|| NonblockHold::take(fd, entry));
    let deadline = entry.timeout(interest).map(|t| Instant::now() + t);
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
        if strategy == STRATEGY_WAIT_FIRST {
            if ready_now(fd, interest) {
                return attempt(false);
            }
        } else if !drained {
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
        match wait_fd(&wait, deadline) {
            Outcome::Ready => {}
            Outcome::TimedOut => return -(libc::EAGAIN as isize),
            Outcome::Closed => return -(libc::EBADF as isize),
            Outcome::NotPollable => return attempt(false),
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

/// Whether the user put `fd` in non-blocking mode, learned from the kernel
/// on first use if no hook saw it being set.
pub(crate) fn user_mode(fd: c_int, entry: &FdEntry) -> u8 {
    let mode = entry.mode.load(Ordering::Relaxed);
    if mode != MODE_UNKNOWN {
        return mode;
    }
    let flags = syscall!(libc::SYS_fcntl, fd, libc::F_GETFL);
    if flags < 0 {
        return MODE_BLOCKING;
    }
    let mode = if flags as c_int & libc::O_NONBLOCK != 0 {
        MODE_NONBLOCKING
    } else {
        MODE_BLOCKING
    };
    entry.mode.store(mode, Ordering::Relaxed);
    mode
}

/// Level-triggered readiness check, for descriptors whose calls cannot be
/// made non-blocking one at a time.
pub(crate) fn ready_now(fd: c_int, interest: Interest) -> bool {
    let events = match interest {
        Interest::Read => libc::POLLIN,
        Interest::Write => libc::POLLOUT,
    };
    let mut pollfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    syscall!(
        libc::SYS_ppoll,
        &mut pollfd as *mut libc::pollfd,
        1,
        &zero as *const libc::timespec,
        0,
        8
    ) != 0
}

/// Holds `fd` in O_NONBLOCK while a call that has no per-call flag
/// (accept, connect) runs; the user's mode comes back when the last holder
/// releases it, and `F_GETFL` hides the flag meanwhile.
pub(crate) struct NonblockHold {
    fd: c_int,
    entry: &'static FdEntry,
}

impl NonblockHold {
    pub(crate) fn take(fd: c_int, entry: &'static FdEntry) -> NonblockHold {
        let mut state = entry.state.lock();
        if state.nonblock_holds == 0 {
            let flags = syscall!(libc::SYS_fcntl, fd, libc::F_GETFL);
            if flags >= 0 && flags as c_int & libc::O_NONBLOCK == 0 {
                syscall!(
                    libc::SYS_fcntl,
                    fd,
                    libc::F_SETFL,
                    flags as c_int | libc::O_NONBLOCK
                );
                state.nonblock_added = true;
            }
        }
        state.nonblock_holds += 1;
        NonblockHold { fd, entry }
    }
}

impl Drop for NonblockHold {
    fn drop(&mut self) {
        let mut state = self.entry.state.lock();
        state.nonblock_holds = state.nonblock_holds.saturating_sub(1);
        if state.nonblock_holds == 0 && state.nonblock_added {
            state.nonblock_added = false;
            let flags = syscall!(libc::SYS_fcntl, self.fd, libc::F_GETFL);
            if flags >= 0 {
                syscall!(
                    libc::SYS_fcntl,
                    self.fd,
                    libc::F_SETFL,
                    flags as c_int & !libc::O_NONBLOCK
                );
            }
        }
    }
}

/// Forgets what was known of a descriptor number that was just created, and
/// records whether it starts non-blocking.
pub(crate) fn on_created(fd: c_int, nonblocking: bool) {
    if let Some(entry) = FD_TABLE.peek(fd) {
        entry.reset();
        let mode = if nonblocking {
            MODE_NONBLOCKING
        } else {
            MODE_BLOCKING
        };
        entry.mode.store(mode, Ordering::Relaxed);
    }
}
