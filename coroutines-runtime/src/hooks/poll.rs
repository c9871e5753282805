//! `poll` and `select`: used by `connect_timeout`, `std::process` pipe
//! reading, and libraries that multiplex descriptors.

use std::time::{Duration, Instant};

use libc::{c_int, c_short, fd_set, nfds_t, pollfd, timeval};

use crate::coroutine::in_coroutine;
use crate::reactor::fd_table::Interest;
use crate::reactor::{wait_fds, FdWait, Outcome};
use crate::sys::{c_result, ppoll, set_errno, syscall};

/// Parks the current coroutine until one of `fds` is ready or `timeout`
/// passes (`None`: no limit); the raw result of the `ppoll` that reports it.
fn poll_parked(fds: *mut pollfd, nfds: nfds_t, timeout: Option<Duration>) -> isize {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    // Copied out: the kernel writes `revents` into `fds` on every ppoll.
    let wanted: Vec<(c_int, c_short)> = (0..nfds as usize)
        .map(|i| {
            // SAFETY: the caller passes `nfds` readable pollfds.
            let p = unsafe { &*fds.add(i) };
            (p.fd, p.events)
        })
        .collect();
    loop {
        let waits: Vec<FdWait> = wanted
            .iter()
            .filter(|(fd, _)| *fd >= 0)
            .flat_map(|&(fd, events)| {
                let read = events & (libc::POLLIN | libc::POLLPRI | libc::POLLRDHUP) != 0
                    || events & libc::POLLOUT == 0;
                let write = events & libc::POLLOUT != 0;
                let read = read.then(|| FdWait::lookup(fd, Interest::Read)).flatten();
                let write = write.then(|| FdWait::lookup(fd, Interest::Write)).flatten();
                read.into_iter().chain(write)
            })
            .collect();
        let ready = ppoll(fds, nfds, Some(Duration::ZERO));
        if ready != 0 {
            return ready;
        }
        match wait_fds(&waits, deadline) {
            Outcome::Ready | Outcome::Closed => {}
            Outcome::TimedOut => return ppoll(fds, nfds, Some(Duration::ZERO)),
            Outcome::NotPollable => return ppoll(fds, nfds, timeout),
        }
    }
}

/// Hooked: in a coroutine, parks until one of the descriptors may be ready
/// or the timeout passes, then reports what `poll` reports.
///
/// # Safety
/// As `poll(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int {
    let timeout = (timeout >= 0).then(|| Duration::from_millis(timeout as u64));
    if !in_coroutine() || timeout == Some(Duration::ZERO) {
        return c_result(ppoll(fds, nfds, timeout)) as c_int;
    }
    c_result(poll_parked(fds, nfds, timeout)) as c_int
}

/// Hooked: in a coroutine, `select` is answered through [`poll_parked`]: the
/// sets become pollfds and back. As on Linux, the timeout is updated to the
/// time not slept.
///
/// # Safety
/// As `select(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn select(
    nfds: c_int,
    read: *mut fd_set,
    write: *mut fd_set,
    except: *mut fd_set,
    timeout: *mut timeval,
) -> c_int {
    // SAFETY: the caller passes a valid or null timeval.
    let limit = match unsafe { timeout.as_ref() } {
        None => None,
        Some(tv) if tv.tv_sec < 0 || !(0..1_000_000).contains(&tv.tv_usec) => {
            set_errno(libc::EINVAL);
            return -1;
        }
        Some(tv) => Some(Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000)),
    };
    if !(0..=libc::FD_SETSIZE as c_int).contains(&nfds) {
        set_errno(libc::EINVAL);
        return -1;
    }
    if !in_coroutine() || limit == Some(Duration::ZERO) {
        return select_now(nfds, read, write, except, timeout, limit);
    }
    let start = Instant::now();
    // Each set is null or valid for FD_SETSIZE descriptors (the caller's
    // contract), and every fd used below is under `nfds <= FD_SETSIZE`.
    // SAFETY: as just said.
    let member = |set: *mut fd_set, fd: c_int| !set.is_null() && unsafe { libc::FD_ISSET(fd, set) };
    let mut fds: Vec<pollfd> = (0..nfds)
        .filter_map(|fd| {
            let mut events = 0;
            if member(read, fd) {
                events |= libc::POLLIN;
            }
            if member(write, fd) {
                events |= libc::POLLOUT;
            }
            if member(except, fd) {
                events |= libc::POLLPRI;
            }
            (events != 0).then_some(pollfd {
                fd,
                events,
                revents: 0,
            })
        })
        .collect();
    let ret = poll_parked(fds.as_mut_ptr(), fds.len() as nfds_t, limit);
    if ret < 0 {
        return c_result(ret) as c_int;
    }
    if fds.iter().any(|p| p.revents & libc::POLLNVAL != 0) {
        set_errno(libc::EBADF);
        return -1;
    }
    for set in [read, write, except] {
        if !set.is_null() {
            // SAFETY: a non-null set of the caller's.
            unsafe { libc::FD_ZERO(set) };
        }
    }
    let mut count = 0;
    for p in &fds {
        let hits = [
            (read, libc::POLLIN | libc::POLLHUP | libc::POLLERR),
            (write, libc::POLLOUT | libc::POLLERR),
            (except, libc::POLLPRI),
        ];
        for (set, bits) in hits {
            if !set.is_null() && p.events & bits != 0 && p.revents & bits != 0 {
                // SAFETY: a non-null set of the caller's; `p.fd < nfds`.
                unsafe { libc::FD_SET(p.fd, set) };
                count += 1;
            }
        }
    }
    // SAFETY: the caller passes a valid or null timeval.
    if let (Some(tv), Some(limit)) = (unsafe { timeout.as_mut() }, limit) {
        let left = limit.saturating_sub(start.elapsed());
        tv.tv_sec = left.as_secs() as libc::time_t;
        tv.tv_usec = left.subsec_micros() as libc::suseconds_t;
    }
    count
}

/// `select` as libc makes it, through `pselect6` (the portable system
/// call), writing the time not slept back as Linux's `select` does.
fn select_now(
    nfds: c_int,
    read: *mut fd_set,
    write: *mut fd_set,
    except: *mut fd_set,
    timeout: *mut timeval,
    limit: Option<Duration>,
) -> c_int {
    let mut ts = limit.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_mut()
        .map_or(core::ptr::null_mut(), |t| t as *mut libc::timespec);
    let ret = syscall!(libc::SYS_pselect6, nfds, read, write, except, ts_ptr, 0);
    // SAFETY: the caller passes a valid or null timeval.
    if let (Some(tv), Some(ts)) = (unsafe { timeout.as_mut() }, ts) {
        tv.tv_sec = ts.tv_sec;
        tv.tv_usec = (ts.tv_nsec / 1000) as libc::suseconds_t;
    }
    c_result(ret) as c_int
}
