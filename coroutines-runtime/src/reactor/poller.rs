//! One worker's epoll instance and the eventfd that wakes it.

use std::io;
use std::time::Duration;

use libc::c_int;

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};

use super::fd_table::FD_TABLE;
use crate::sys;

/// Readiness a descriptor is registered for: both directions, edge
/// triggered, so it is registered once and never modified per wait. Urgent
/// data (EPOLLPRI) too: it changes what a short read means.
pub(crate) const INTEREST: u32 =
    (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLPRI | libc::EPOLLET) as u32;

/// The epoll token of the wake-up eventfd; descriptor tokens are their fd
/// numbers, which are never negative.
const NOTIFY_TOKEN: u64 = u64::MAX;
/// The epoll token of the process-wide kick eventfd (see [`kick`]).
const KICK_TOKEN: u64 = u64::MAX - 1;

/// An eventfd every poller watches, so that code that may not touch the
/// scheduler (a signal handler) can wake every worker to finish what it
/// left; see `FdTable::finish_deferred_resets`. -1 until the first poller.
static KICK: AtomicI32 = AtomicI32::new(-1);

/// Wakes every worker of every runtime to finish deferred work.
/// Async-signal-safe: one load and one `write`.
pub(crate) fn kick() {
    let fd = KICK.load(Ordering::Acquire);
    if fd >= 0 {
        write_one(fd);
    }
}

/// Adds one to the eventfd `fd`.
fn write_one(fd: c_int) {
    let one: u64 = 1;
    let _ = sys::raw(
        libc::SYS_write,
        [fd as usize, &one as *const u64 as usize, 8, 0, 0, 0],
    );
}

/// Creates a non-blocking, close-on-exec eventfd.
fn eventfd() -> Result<c_int, c_int> {
    sys::check(sys::raw(
        libc::SYS_eventfd2,
        [
            0,
            (libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) as usize,
            0,
            0,
            0,
            0,
        ],
    ))
    .map(|fd| fd as c_int)
}

/// The kick eventfd, created on first use.
fn kick_fd() -> Result<c_int, c_int> {
    let current = KICK.load(Ordering::Acquire);
    if current >= 0 {
        return Ok(current);
    }
    let fresh = eventfd()?;
    match KICK.compare_exchange(-1, fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Ok(fresh),
        Err(existing) => {
            sys::close(fresh);
            Ok(existing)
        }
    }
}
/// Events taken per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 256;

/// A worker's epoll instance.
pub(crate) struct Poller {
    /// -1 once closed (see `close`).
    epoll: AtomicI32,
    notify: AtomicI32,
    /// Unique for the life of the process, unlike the epoll fd number, so
    /// that a descriptor's "registered with" list never confuses a dropped
    /// runtime's poller with a new one.
    pub(crate) id: u64,
    /// Descriptors ever registered; while zero, a busy worker skips polling.
    registrations: AtomicUsize,
}

impl Poller {
    pub(crate) fn new() -> io::Result<Poller> {
        let epoll = sys::check(sys::raw(
            libc::SYS_epoll_create1,
            [libc::EPOLL_CLOEXEC as usize, 0, 0, 0, 0, 0],
        ))
        .map_err(io::Error::from_raw_os_error)? as c_int;
        let notify = match eventfd() {
            Ok(fd) => fd,
            Err(e) => {
                sys::close(epoll);
                return Err(io::Error::from_raw_os_error(e));
            }
        };
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let poller = Poller {
            epoll: AtomicI32::new(epoll),
            notify: AtomicI32::new(notify),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            registrations: AtomicUsize::new(0),
        };
        // Edge-triggered: every write to an eventfd produces one edge, so
        // they never need to be read back.
        let edge = libc::EPOLLIN as u32 | libc::EPOLLET as u32;
        poller
            .add(notify, NOTIFY_TOKEN, edge)
            .and_then(|()| poller.add(kick_fd()?, KICK_TOKEN, edge))
            .map_err(io::Error::from_raw_os_error)?;
        Ok(poller)
    }

    /// Registers `fd` with `events`, reported under `token`.
    fn add(&self, fd: c_int, token: u64, events: u32) -> Result<(), c_int> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, events)
    }

    /// Registers a descriptor for both directions under `token`; if it is
    /// already registered (under an older token), updates the token.
    pub(crate) fn register(&self, fd: c_int, token: u64) -> Result<(), c_int> {
        match self.add(fd, token, INTEREST) {
            Err(libc::EEXIST) => self.ctl(libc::EPOLL_CTL_MOD, fd, token, INTEREST),
            Ok(()) => {
                self.registrations.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Whether any descriptor was ever registered.
    pub(crate) fn has_registrations(&self) -> bool {
        self.registrations.load(Ordering::Relaxed) != 0
    }

    fn ctl(&self, op: c_int, fd: c_int, token: u64, events: u32) -> Result<(), c_int> {
        let mut event = libc::epoll_event { events, u64: token };
        sys::check(sys::raw(
            libc::SYS_epoll_ctl,
            [
                self.epoll.load(Ordering::Relaxed) as usize,
                op as usize,
                fd as usize,
                &mut event as *mut _ as usize,
                0,
                0,
            ],
        ))
        .map(drop)
    }

    /// Wakes the worker sleeping in [`wait`](Self::wait), or makes its next
    /// wait return at once.
    pub(crate) fn notify(&self) {
        write_one(self.notify.load(Ordering::Relaxed));
    }

    /// Waits up to `timeout` (forever if `None`) and passes each descriptor
    /// event, as its token and event bits, to `on_event`. Returns whether
    /// the wait ended on a [`notify`](Self::notify).
    pub(crate) fn wait(
        &self,
        timeout: Option<Duration>,
        mut on_event: impl FnMut(u64, u32),
    ) -> bool {
        // Not zeroed (3 KiB, on every wait): only what the kernel wrote is read.
        let mut events = [const { MaybeUninit::<libc::epoll_event>::uninit() }; EVENTS_PER_WAIT];
        let n = epoll_wait(self.epoll.load(Ordering::Relaxed), &mut events, timeout);
        let n = (n.max(0) as usize).min(EVENTS_PER_WAIT);
        // SAFETY: the kernel wrote the first `n`.
        let events =
            unsafe { &*(&events[..n] as *const [MaybeUninit<_>] as *const [libc::epoll_event]) };
        let mut notified = false;
        for event in events {
            match event.u64 {
                NOTIFY_TOKEN => notified = true,
                KICK_TOKEN => FD_TABLE.finish_deferred_resets(),
                token => on_event(token, event.events),
            }
        }
        notified
    }
}

/// Set once the kernel has refused `epoll_pwait2`: before Linux 5.11
/// (ENOSYS), or under a seccomp filter that does not know it (EPERM).
static NO_PWAIT2: AtomicBool = AtomicBool::new(false);

/// Waits in `epoll` up to `timeout` (for ever if `None`), to the
/// nanosecond where the kernel allows (`epoll_pwait2`): a sleep of 100 us
/// takes about that, not a millisecond. Returns the raw result.
fn epoll_wait(
    epoll: c_int,
    events: &mut [MaybeUninit<libc::epoll_event>],
    timeout: Option<Duration>,
) -> isize {
    let (epoll, list, max) = (epoll as usize, events.as_mut_ptr() as usize, events.len());
    if !NO_PWAIT2.load(Ordering::Relaxed) {
        let ts = timeout.map(sys::timespec);
        let ts = ts
            .as_ref()
            .map_or(0, |t| t as *const libc::timespec as usize);
        let n = sys::raw(libc::SYS_epoll_pwait2, [epoll, list, max, ts, 0, 8]);
        if n != -(libc::ENOSYS as isize) && n != -(libc::EPERM as isize) {
            return n;
        }
        NO_PWAIT2.store(true, Ordering::Relaxed);
    }
    let timeout_ms: c_int = match timeout {
        None => -1,
        // Round up so a timer is never woken for early.
        Some(t) => t.as_nanos().div_ceil(1_000_000).min(c_int::MAX as u128) as c_int,
    };
    sys::raw(
        libc::SYS_epoll_pwait,
        [epoll, list, max, timeout_ms as usize, 0, 8],
    )
}

impl Poller {
    /// Closes its descriptors, once its worker has stopped for good and no
    /// other thread will wait in it or notify it. A runtime whose stopped
    /// coroutines still hold it (through a handle on a leaked stack) would
    /// otherwise keep them open for ever. Later calls fail with `EBADF`.
    pub(crate) fn close(&self) {
        for fd in [&self.notify, &self.epoll] {
            let fd = fd.swap(-1, Ordering::Relaxed);
            if fd >= 0 {
                sys::close(fd);
            }
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.close();
    }
}
