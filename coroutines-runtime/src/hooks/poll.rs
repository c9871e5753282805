//! `poll`: used by `connect_timeout`, `std::process` pipe reading, and
//! libraries that multiplex descriptors.

use std::time::{Duration, Instant};

use libc::{c_int, nfds_t, pollfd};

use crate::coroutine::in_coroutine;
use crate::reactor::fd_table::Interest;
use crate::reactor::{wait_fds, FdWait, Outcome};
use crate::sys::{c_result, ppoll};

/// Hooked: in a coroutine, parks until one of the descriptors may be ready
/// or the timeout passes, then reports what `poll` reports.
///
/// # Safety
/// As `poll(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int {
    let duration = (timeout >= 0).then(|| Duration::from_millis(timeout as u64));
    if !in_coroutine() || timeout == 0 {
        return c_result(ppoll(fds, nfds, duration)) as c_int;
    }
    let deadline = duration.and_then(|d| Instant::now().checked_add(d));
    let entries = if fds.is_null() {
        &[][..]
    } else {
        // SAFETY: the caller passes `nfds` readable pollfds.
        unsafe { core::slice::from_raw_parts(fds, nfds as usize) }
    };
    loop {
        let waits: Vec<FdWait> = entries
            .iter()
            .filter(|p| p.fd >= 0)
            .flat_map(|p| {
                let read = p.events & (libc::POLLIN | libc::POLLPRI | libc::POLLRDHUP) != 0
                    || p.events & libc::POLLOUT == 0;
                let write = p.events & libc::POLLOUT != 0;
                let read = read.then(|| FdWait::lookup(p.fd, Interest::Read)).flatten();
                let write = write
                    .then(|| FdWait::lookup(p.fd, Interest::Write))
                    .flatten();
                read.into_iter().chain(write)
            })
            .collect();
        let ready = ppoll(fds, nfds, Some(Duration::ZERO));
        if ready != 0 {
            return c_result(ready) as c_int;
        }
        match wait_fds(&waits, deadline) {
            Outcome::Ready | Outcome::Closed => {}
            Outcome::TimedOut => return c_result(ppoll(fds, nfds, Some(Duration::ZERO))) as c_int,
            Outcome::NotPollable => return c_result(ppoll(fds, nfds, duration)) as c_int,
        }
    }
}
