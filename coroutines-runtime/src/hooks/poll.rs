//! `poll` and `select`: used by `connect_timeout`, `std::process` pipe
//! reading, and libraries that multiplex descriptors.
//!
//! In a coroutine both ask the kernel with a zero timeout whether anything
//! is ready, and park on the descriptors' readiness edges until something
//! may have changed: the answers are always the kernel's own.

use std::time::{Duration, Instant};

use libc::{c_int, fd_set, nfds_t, pollfd, sigset_t, timeval};

use super::driver::Recheck;
use crate::coroutine::{self, in_coroutine, Wait};
use crate::reactor::fd_table::Interest;
use crate::reactor::{wait_fds, FdWait, Outcome};
use crate::sys::{c_result, ppoll_masked, read_user_bytes, syscall, timespec, SIGSET_BYTES};

/// `poll` events that readability edges report, and writability edges.
const READS: libc::c_short =
    libc::POLLIN | libc::POLLPRI | libc::POLLRDHUP | libc::POLLRDNORM | libc::POLLRDBAND;
const WRITES: libc::c_short = libc::POLLOUT | libc::POLLWRNORM | libc::POLLWRBAND;

/// One descriptor to watch, and which ways.
#[derive(Clone, Copy)]
struct Watch {
    fd: c_int,
    read: bool,
    write: bool,
}

/// Parks the current coroutine until `ready()` reports something (its
/// non-zero raw result, returned) or `deadline` passes (then `ready()`'s
/// last answer, zero). Each pass takes the descriptors' edge counts before
/// asking, so an edge in between is not lost.
fn parked_until(
    watches: &[Watch],
    deadline: Option<Instant>,
    mut ready: impl FnMut() -> isize,
) -> isize {
    let mut recheck = Recheck::UNWATCHED;
    loop {
        let waits: Vec<FdWait> = watches
            .iter()
            .flat_map(|w| {
                let read = w.read.then(|| FdWait::lookup(w.fd, Interest::Read));
                let write = w.write.then(|| FdWait::lookup(w.fd, Interest::Write));
                read.flatten().into_iter().chain(write.flatten())
            })
            .collect();
        let answer = ready();
        if answer != 0 {
            return answer;
        }
        if waits.is_empty() {
            // Nothing to wait on: a plain timeout, or for ever.
            coroutine::park(deadline, Wait::Sleep, drop);
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return ready();
            }
            continue;
        }
        match wait_fds(&waits, deadline) {
            Outcome::Ready | Outcome::Closed => {}
            Outcome::TimedOut => return ready(),
            Outcome::NotPollable => {
                // Only descriptors epoll refuses: files, which report
                // nothing of what was asked (events 0, or exceptions), but
                // also epoll instances nested too deep to watch, which
                // will: asked again now and then.
                coroutine::park(Some(recheck.next(deadline)), Wait::Fds, drop);
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return ready();
                }
            }
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
    c_result(polled(fds, nfds, timeout, core::ptr::null())) as c_int
}

/// Hooked: as `poll`, with a `timespec` timeout and a signal mask.
///
/// # Safety
/// As `ppoll(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ppoll(
    fds: *mut pollfd,
    nfds: nfds_t,
    timeout: *const libc::timespec,
    sigmask: *const sigset_t,
) -> c_int {
    let ret = match super::timespec::read(timeout) {
        Ok(timeout) => polled(fds, nfds, timeout, sigmask),
        Err(error) => -(error as isize),
    };
    c_result(ret) as c_int
}

/// `poll` for the hooks: `timeout` `None` waits for ever; the raw result.
fn polled(
    fds: *mut pollfd,
    nfds: nfds_t,
    timeout: Option<Duration>,
    sigmask: *const sigset_t,
) -> isize {
    if !in_coroutine() {
        return ppoll_masked(fds, nfds, timeout, sigmask);
    }
    // The kernel reads (and so validates) the array before anything here
    // does; a ready or failed call returns at once.
    let now = ppoll_masked(fds, nfds, Some(Duration::ZERO), sigmask);
    if now != 0 || timeout == Some(Duration::ZERO) {
        return now;
    }
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let watches: Vec<Watch> = (0..nfds as usize)
        .map(|i| {
            // SAFETY: the kernel has just read all `nfds` entries.
            let p = unsafe { &*fds.add(i) };
            Watch {
                fd: p.fd,
                read: p.events & READS != 0 || p.events & WRITES == 0,
                write: p.events & WRITES != 0,
            }
        })
        .filter(|w| w.fd >= 0)
        .collect();
    parked_until(&watches, deadline, || {
        ppoll_masked(fds, nfds, Some(Duration::ZERO), sigmask)
    })
}

/// The descriptor sets of one `select`, copied: `nfds` bits each, in the
/// kernel's unit (whole `long`s), so a set may be larger than an `fd_set`.
#[derive(Clone)]
struct Sets([Option<Vec<u64>>; 3]);

impl Sets {
    /// Copies the caller's sets (null ones stay `None`); `EFAULT` if one
    /// cannot be read, as the kernel would say.
    fn copy(sets: [*mut fd_set; 3], nfds: c_int) -> Result<Sets, c_int> {
        let words = (nfds as usize).div_ceil(64);
        let mut copied = [None, None, None];
        for (copy, set) in copied.iter_mut().zip(sets) {
            if !set.is_null() {
                let mut bits = vec![0u64; words];
                // SAFETY: the vector's own bytes, `words * 8` of them.
                let bytes = unsafe {
                    core::slice::from_raw_parts_mut(bits.as_mut_ptr().cast::<u8>(), words * 8)
                };
                read_user_bytes(set.cast(), bytes)?;
                *copy = Some(bits);
            }
        }
        Ok(Sets(copied))
    }

    fn ptr(&mut self, i: usize) -> *mut fd_set {
        self.0[i]
            .as_mut()
            .map_or(core::ptr::null_mut(), |bits| bits.as_mut_ptr().cast())
    }

    fn has(&self, i: usize, fd: c_int) -> bool {
        let fd = fd as usize;
        self.0[i]
            .as_ref()
            .is_some_and(|bits| bits[fd / 64] & (1 << (fd % 64)) != 0)
    }

    /// Writes the sets back to the caller's, as many bytes as the kernel
    /// writes.
    fn write_back(&self, user: [*mut fd_set; 3]) {
        for (bits, set) in self.0.iter().zip(user) {
            if let (Some(bits), false) = (bits, set.is_null()) {
                // SAFETY: select's contract: a writable set of `nfds` bits,
                // which the kernel's unit rounds up to these words.
                unsafe {
                    core::ptr::copy_nonoverlapping(bits.as_ptr(), set.cast::<u64>(), bits.len())
                };
            }
        }
    }
}

/// A `timeval` as `select` takes it, as glibc reads it: the microseconds
/// as a 32-bit `int`, negative parts EINVAL, microseconds past a second
/// carried into the seconds.
fn select_timeout(timeout: *mut timeval) -> Result<Option<Duration>, c_int> {
    // SAFETY: the caller passes a valid or null timeval (select's contract).
    let Some(tv) = (unsafe { timeout.as_ref() }) else {
        return Ok(None);
    };
    let micros = tv.tv_usec as i32;
    if tv.tv_sec < 0 || micros < 0 {
        return Err(libc::EINVAL);
    }
    let micros = micros as u64;
    let secs = (tv.tv_sec as u64).saturating_add(micros / 1_000_000);
    Ok(Some(Duration::new(
        secs,
        (micros % 1_000_000) as u32 * 1000,
    )))
}

/// `pselect6` with `timeout` (`None`: no limit) on the given sets and the
/// caller's signal mask (null: the thread's); the raw result. The time not
/// slept is written back to `tv` if given, as Linux's `select` does.
fn pselect6(
    nfds: c_int,
    sets: [*mut fd_set; 3],
    timeout: Option<Duration>,
    sigmask: *const sigset_t,
    tv: *mut timeval,
) -> isize {
    let mut ts = timeout.map(timespec);
    let ts_ptr = ts
        .as_mut()
        .map_or(core::ptr::null_mut(), |t| t as *mut libc::timespec);
    // The kernel takes the mask as a pointer and a size, in one struct.
    let mask = [sigmask as usize, SIGSET_BYTES];
    let mask = match sigmask.is_null() {
        true => core::ptr::null(),
        false => mask.as_ptr(),
    };
    let [read, write, except] = sets;
    let ret = syscall!(libc::SYS_pselect6, nfds, read, write, except, ts_ptr, mask);
    // SAFETY: the caller passes a valid or null timeval.
    if let (Some(tv), Some(ts)) = (unsafe { tv.as_mut() }, ts) {
        tv.tv_sec = ts.tv_sec;
        tv.tv_usec = (ts.tv_nsec / 1000) as libc::suseconds_t;
    }
    ret
}

/// Hooked: as glibc's `select` outside coroutines. In a coroutine it asks
/// the kernel with a zero timeout and parks on the descriptors' readiness
/// in between; like the kernel, it takes sets of `nfds` bits, larger than
/// an `fd_set` if `nfds` is. As on Linux, the timeout is updated to the
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
    let ret = match select_timeout(timeout) {
        Ok(limit) => selected(
            nfds,
            [read, write, except],
            limit,
            core::ptr::null(),
            timeout,
        ),
        Err(error) => -(error as isize),
    };
    c_result(ret) as c_int
}

/// Hooked: as `select`, with a `timespec` timeout (never written) and a
/// signal mask.
///
/// # Safety
/// As `pselect(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pselect(
    nfds: c_int,
    read: *mut fd_set,
    write: *mut fd_set,
    except: *mut fd_set,
    timeout: *const libc::timespec,
    sigmask: *const sigset_t,
) -> c_int {
    let ret = match super::timespec::read(timeout) {
        Ok(limit) => selected(
            nfds,
            [read, write, except],
            limit,
            sigmask,
            core::ptr::null_mut(),
        ),
        Err(error) => -(error as isize),
    };
    c_result(ret) as c_int
}

/// `select` for the hooks: `limit` `None` waits for ever; the time not
/// slept is written to `timeout` if given; the raw result.
fn selected(
    nfds: c_int,
    user: [*mut fd_set; 3],
    limit: Option<Duration>,
    sigmask: *const sigset_t,
    timeout: *mut timeval,
) -> isize {
    if !in_coroutine() || limit == Some(Duration::ZERO) || nfds < 0 {
        return pselect6(nfds, user, limit, sigmask, timeout);
    }
    let start = Instant::now();
    let deadline = limit.and_then(|t| start.checked_add(t));
    // The kernel reads and writes the bits of at most as many descriptors
    // as its table holds when the call starts, whatever `nfds` says (a set
    // sized to `FD_SETSIZE` with `nfds` from `getdtablesize()`).
    let table = (nfds > MIN_TABLE).then(descriptor_table_size).flatten();
    let nfds = table.map_or(nfds, |size| nfds.min(size));
    let ret = select_parked(nfds, user, deadline, sigmask, table.is_some());
    // As Linux, whatever the result.
    // SAFETY: the caller passes a valid or null timeval.
    if let (Some(tv), Some(limit)) = (unsafe { timeout.as_mut() }, limit) {
        let left = limit.saturating_sub(start.elapsed());
        tv.tv_sec = left.as_secs() as libc::time_t;
        tv.tv_usec = left.subsec_micros() as libc::suseconds_t;
    }
    ret
}

/// [`selected`]'s wait in a coroutine, the sets written back on success.
/// `within_table`: `nfds` is no more than the kernel's table holds.
fn select_parked(
    nfds: c_int,
    user: [*mut fd_set; 3],
    deadline: Option<Instant>,
    sigmask: *const sigset_t,
    within_table: bool,
) -> isize {
    let asked = match Sets::copy(user, nfds) {
        Ok(asked) => asked,
        Err(error) => return -(error as isize),
    };
    let mut answer = asked.clone();
    let mut ready = || {
        answer = asked.clone();
        let sets = [answer.ptr(0), answer.ptr(1), answer.ptr(2)];
        pselect6(
            nfds,
            sets,
            Some(Duration::ZERO),
            sigmask,
            core::ptr::null_mut(),
        )
    };
    let now = ready();
    if now != 0 {
        if now > 0 {
            answer.write_back(user);
        }
        return now;
    }
    // The kernel found every asked descriptor open, or (if the table's
    // size is unknown) past the end of its table, which it ignores: a wait
    // on one of those would end at once, for ever.
    let watches: Vec<Watch> = (0..nfds)
        .map(|fd| Watch {
            fd,
            read: asked.has(0, fd) || asked.has(2, fd),
            write: asked.has(1, fd),
        })
        .filter(|w| (w.read || w.write) && (within_table || w.fd < MIN_TABLE || is_open(w.fd)))
        .collect();
    let ret = parked_until(&watches, deadline, ready);
    if ret >= 0 {
        answer.write_back(user);
    }
    ret
}

/// The fewest descriptors a process's table holds (`NR_OPEN_DEFAULT`).
const MIN_TABLE: c_int = 64;

/// How many descriptors this process's table holds now (`FDSize` in
/// `/proc/self/status`), read with raw system calls; `None` if it cannot
/// be read.
fn descriptor_table_size() -> Option<c_int> {
    let path = c"/proc/self/status";
    let flags = libc::O_RDONLY | libc::O_CLOEXEC;
    let fd = syscall!(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), flags);
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 4096];
    let n = syscall!(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len());
    crate::sys::close(fd as c_int);
    let text = core::str::from_utf8(&buf[..n.max(0) as usize]).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("FDSize:"))?;
    line.trim().parse().ok()
}

/// Whether `fd` is an open descriptor.
fn is_open(fd: c_int) -> bool {
    syscall!(libc::SYS_fcntl, fd, libc::F_GETFD) >= 0
}
