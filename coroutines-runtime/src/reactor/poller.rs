//! One worker's epoll instance and the eventfd that wakes it.

use std::io;
use std::time::Duration;

use libc::c_int;

use crate::sys;

/// The epoll token of the wake-up eventfd; descriptor tokens are their fd
/// numbers, which are never negative.
const NOTIFY_TOKEN: u64 = u64::MAX;
/// Events taken per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 256;

/// A worker's epoll instance.
pub(crate) struct Poller {
    epoll: c_int,
    notify: c_int,
}

/// A readiness event: the descriptor and what it became ready for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Event {
    pub(crate) fd: c_int,
    pub(crate) events: u32,
}

impl Poller {
    pub(crate) fn new() -> io::Result<Poller> {
        let epoll = sys::check(sys::raw(
            libc::SYS_epoll_create1,
            [libc::EPOLL_CLOEXEC as usize, 0, 0, 0, 0, 0],
        ))
        .map_err(io::Error::from_raw_os_error)? as c_int;
        let notify = match sys::check(sys::raw(
            libc::SYS_eventfd2,
            [0, (libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) as usize, 0, 0, 0, 0],
        )) {
            Ok(fd) => fd as c_int,
            Err(e) => {
                sys::close(epoll);
                return Err(io::Error::from_raw_os_error(e));
            }
        };
        let poller = Poller { epoll, notify };
        // Edge-triggered: every write to the eventfd produces one edge, so
        // it never needs to be read back.
        poller
            .add(notify, NOTIFY_TOKEN, libc::EPOLLIN as u32 | libc::EPOLLET as u32)
            .map_err(io::Error::from_raw_os_error)?;
        Ok(poller)
    }

    /// Registers `fd` with `events`, reported under `token`.
    pub(crate) fn add(&self, fd: c_int, token: u64, events: u32) -> Result<(), c_int> {
        let mut event = libc::epoll_event { events, u64: token };
        sys::check(sys::raw(
            libc::SYS_epoll_ctl,
            [
                self.epoll as usize,
                libc::EPOLL_CTL_ADD as usize,
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
        let one: u64 = 1;
        let _ = sys::raw(
            libc::SYS_write,
            [self.notify as usize, &one as *const u64 as usize, 8, 0, 0, 0],
        );
    }

    /// Waits up to `timeout` (forever if `None`) and passes each descriptor
    /// event to `on_event`. Returns the number of events, notifications
    /// included.
    pub(crate) fn wait(&self, timeout: Option<Duration>, mut on_event: impl FnMut(Event)) -> usize {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT];
        let timeout_ms: c_int = match timeout {
            None => -1,
            // Round up so a timer is never woken for early.
            Some(t) => t
                .as_nanos()
                .div_ceil(1_000_000)
                .min(c_int::MAX as u128) as c_int,
        };
        let n = sys::raw(
            libc::SYS_epoll_pwait,
            [
                self.epoll as usize,
                events.as_mut_ptr() as usize,
                EVENTS_PER_WAIT,
                timeout_ms as usize,
                0,
                8,
            ],
        );
        let n = n.max(0) as usize;
        for event in &events[..n] {
            if event.u64 != NOTIFY_TOKEN {
                on_event(Event {
                    fd: event.u64 as c_int,
                    events: event.events,
                });
            }
        }
        n
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        sys::close(self.notify);
        sys::close(self.epoll);
    }
}
