//! What the user asked of an open file description: non-blocking mode and
//! socket timeouts.
//!
//! Both belong to the open file description, which duplicates
//! (`try_clone`), children and other processes share, so a record keyed by
//! fd number cannot know them. The hooks ask the kernel instead, and only
//! when it matters: right before a coroutine would park. The one thing the
//! kernel cannot say is who set O_NONBLOCK: while an accept or connect runs
//! in a coroutine the runtime holds the description non-blocking itself, and
//! remembers so here, keyed by the description's device and inode.
//!
//! Reads and writes park often, so for them the answers are cached per
//! descriptor until any hook sees a setting change in the process
//! (`F_SETFL`, `FIONBIO`, `SO_RCVTIMEO`/`SO_SNDTIMEO`); a change made by
//! another process sharing the description is seen after the next such
//! change here.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use libc::c_int;

use crate::reactor::fd_table::{FdEntry, Interest};
use crate::sync::SpinLock;
use crate::sys::syscall;

/// A description the runtime holds in O_NONBLOCK.
struct Held {
    /// Device and inode: the same for every descriptor of the description.
    id: (u64, u64),
    /// Calls in flight that need it non-blocking.
    holds: u32,
    /// The runtime set the flag (the user had not); restored at the last
    /// release, and hidden from `F_GETFL` meanwhile.
    added: bool,
    /// The status flags to put back then: those before the hold, or what
    /// the user set since.
    restore: c_int,
}

static HELD: SpinLock<Vec<Held>> = SpinLock::new(Vec::new());
/// `HELD.len()`, readable without the lock: the common case is 0.
static HELD_COUNT: AtomicUsize = AtomicUsize::new(0);

/// The description behind `fd`, or `None` if `fd` is not open.
fn identity(fd: c_int) -> Option<(u64, u64)> {
    let mut stat = core::mem::MaybeUninit::<libc::stat>::uninit();
    if syscall!(libc::SYS_fstat, fd, stat.as_mut_ptr()) < 0 {
        return None;
    }
    // SAFETY: fstat succeeded, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    Some((stat.st_dev, stat.st_ino))
}

fn flags(fd: c_int) -> Option<c_int> {
    let flags = syscall!(libc::SYS_fcntl, fd, libc::F_GETFL);
    (flags >= 0).then_some(flags as c_int)
}

fn set_flags(fd: c_int, flags: c_int) {
    syscall!(libc::SYS_fcntl, fd, libc::F_SETFL, flags);
}

/// The description behind `fd`, cached in its entry until the number is
/// reset: accept asks for every connection.
fn cached_identity(fd: c_int, entry: &FdEntry) -> Option<(u64, u64)> {
    let mut state = entry.state.lock();
    if state.identity.is_none() {
        // `reset` must now take the lock to clear it.
        entry.mark_watched();
        state.identity = identity(fd);
    }
    state.identity
}

/// Holds `fd`'s description in O_NONBLOCK for a call that has no per-call
/// non-blocking flag (accept, connect).
pub(crate) struct NonblockHold {
    fd: c_int,
    id: (u64, u64),
    entry: &'static FdEntry,
    /// The entry's generation at the hold: unchanged at the release means
    /// the number still names the held file.
    generation: u32,
}

impl NonblockHold {
    /// `None` if `fd` is not open (the call then fails by itself).
    pub(crate) fn take(fd: c_int, entry: &'static FdEntry) -> Option<NonblockHold> {
        let generation = entry.generation.load(Ordering::Acquire);
        let id = cached_identity(fd, entry)?;
        let mut held = HELD.lock();
        match held.iter_mut().find(|h| h.id == id) {
            Some(entry) => entry.holds += 1,
            None => {
                let current = flags(fd)?;
                let added = current & libc::O_NONBLOCK == 0;
                if added {
                    set_flags(fd, current | libc::O_NONBLOCK);
                }
                held.push(Held {
                    id,
                    holds: 1,
                    added,
                    restore: current,
                });
                HELD_COUNT.store(held.len(), Ordering::Release);
            }
        }
        Some(NonblockHold {
            fd,
            id,
            entry,
            generation,
        })
    }
}

impl Drop for NonblockHold {
    fn drop(&mut self) {
        let mut held = HELD.lock();
        let Some(index) = held.iter().position(|h| h.id == self.id) else {
            return;
        };
        held[index].holds -= 1;
        if held[index].holds == 0 {
            let last = held.swap_remove(index);
            HELD_COUNT.store(held.len(), Ordering::Release);
            // The number may name another file by now (closed and reused
            // meanwhile): restore only the description that was held. An
            // unchanged generation says so without asking the kernel.
            let same = self.entry.generation.load(Ordering::Acquire) == self.generation
                || identity(self.fd) == Some(self.id);
            if last.added && same {
                set_flags(self.fd, last.restore & !libc::O_NONBLOCK);
            }
        }
    }
}

/// Whether the runtime, not the user, put the O_NONBLOCK on `fd`'s
/// description. Cheap when the runtime holds nothing.
pub(crate) fn added_by_runtime(fd: c_int) -> bool {
    if HELD_COUNT.load(Ordering::Acquire) == 0 {
        return false;
    }
    let Some(id) = identity(fd) else {
        return false;
    };
    HELD.lock().iter().any(|h| h.id == id && h.added)
}

/// Whether the user made `fd` non-blocking, so that a call that would block
/// must fail with EAGAIN rather than park.
pub(crate) fn user_nonblocking(fd: c_int) -> bool {
    flags(fd).is_some_and(|f| f & libc::O_NONBLOCK != 0) && !added_by_runtime(fd)
}

/// The user sets `fd`'s mode (`F_SETFL` with all its status `flags`, or
/// `FIONBIO`). Returns whether the kernel must keep O_NONBLOCK anyway
/// because the runtime holds the description; from now on the flag counts
/// as the user's if they asked for it.
pub(crate) fn user_sets_mode(fd: c_int, nonblocking: bool, flags: Option<c_int>) -> bool {
    if HELD_COUNT.load(Ordering::Acquire) == 0 {
        return false;
    }
    let Some(id) = identity(fd) else {
        return false;
    };
    let mut held = HELD.lock();
    match held.iter_mut().find(|h| h.id == id) {
        Some(entry) => {
            entry.added = !nonblocking;
            if let Some(flags) = flags {
                entry.restore = flags;
            }
            true
        }
        None => false,
    }
}

/// The receive or send timeout the user set on socket `fd`
/// (`SO_RCVTIMEO`/`SO_SNDTIMEO`), if any.
pub(crate) fn user_timeout(fd: c_int, interest: Interest) -> Option<Duration> {
    let name = match interest {
        Interest::Read => libc::SO_RCVTIMEO,
        Interest::Write => libc::SO_SNDTIMEO,
    };
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut size = core::mem::size_of::<libc::timeval>() as libc::socklen_t;
    let ret = syscall!(
        libc::SYS_getsockopt,
        fd,
        libc::SOL_SOCKET,
        name,
        &mut tv as *mut libc::timeval,
        &mut size as *mut libc::socklen_t
    );
    let timeout = Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    (ret == 0 && !timeout.is_zero()).then_some(timeout)
}

/// Bumped whenever a hook sees the user change a mode or timeout anywhere in
/// the process; cached settings from an older epoch are stale.
static SETTINGS_EPOCH: AtomicU64 = AtomicU64::new(1);

/// Invalidates every descriptor's cached settings.
pub(crate) fn settings_changed() {
    SETTINGS_EPOCH.fetch_add(1, Ordering::AcqRel);
}

/// Whether the user made `fd` non-blocking, and their timeout for
/// `interest`: [`user_nonblocking`] and [`user_timeout`], cached in `entry`
/// until the next setting change.
pub(crate) fn cached_settings(
    fd: c_int,
    entry: &FdEntry,
    interest: Interest,
) -> (bool, Option<Duration>) {
    let epoch = SETTINGS_EPOCH.load(Ordering::Acquire);
    if entry.settings_epoch.load(Ordering::Acquire) != epoch {
        let nanos = |t: Option<Duration>| t.map_or(0, |t| t.as_nanos() as u64);
        entry
            .user_nonblocking
            .store(user_nonblocking(fd), Ordering::Relaxed);
        entry
            .recv_timeout
            .store(nanos(user_timeout(fd, Interest::Read)), Ordering::Relaxed);
        entry
            .send_timeout
            .store(nanos(user_timeout(fd, Interest::Write)), Ordering::Relaxed);
        entry.settings_epoch.store(epoch, Ordering::Release);
    }
    let timeout = match interest {
        Interest::Read => &entry.recv_timeout,
        Interest::Write => &entry.send_timeout,
    }
    .load(Ordering::Relaxed);
    (
        entry.user_nonblocking.load(Ordering::Relaxed),
        (timeout != 0).then(|| Duration::from_nanos(timeout)),
    )
}
