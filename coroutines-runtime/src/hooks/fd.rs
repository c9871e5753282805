//! Descriptors in general: read and write on pipes, FIFOs, sockets and
//! ttys; creating, duplicating and closing descriptors; and the flags the
//! user sets, which the runtime must both honour and never show as its own.

use libc::{c_int, c_ulong, c_void, iovec, size_t, ssize_t};

use super::blocking::{blocking_io, on_created, Nonblock};
use super::nonblock;
use crate::reactor::fd_table::{Interest, FD_TABLE};
use crate::sys::{c_result, syscall};

/// `preadv2`/`pwritev2` with offset -1 use and advance the file position,
/// like `readv`/`writev`; `RWF_NOWAIT` makes that one call non-blocking on
/// sockets and pipes.
const CURRENT_POSITION: isize = -1;

/// A vectored read or write, blocking as the user asked for. Writes to
/// stdout and stderr pass through (see the module docs of `hooks`).
fn vectored(fd: c_int, interest: Interest, iov: *const iovec, count: c_int) -> ssize_t {
    let (plain, nowait) = match interest {
        Interest::Read => (libc::SYS_readv, libc::SYS_preadv2),
        Interest::Write => (libc::SYS_writev, libc::SYS_pwritev2),
    };
    if interest == Interest::Write && (fd == libc::STDOUT_FILENO || fd == libc::STDERR_FILENO) {
        return c_result(syscall!(plain, fd, iov, count));
    }
    let requested = match interest {
        // SAFETY: the caller passes `count` readable iovecs.
        Interest::Read => (0..count.max(0) as usize)
            .map(|i| unsafe { (*iov.add(i)).iov_len })
            .sum(),
        Interest::Write => 0,
    };
    c_result(blocking_io(
        fd,
        interest,
        Nonblock::PerCall,
        requested,
        |nonblocking| {
            if nonblocking {
                syscall!(
                    nowait,
                    fd,
                    iov,
                    count,
                    CURRENT_POSITION,
                    0,
                    libc::RWF_NOWAIT
                )
            } else {
                syscall!(plain, fd, iov, count)
            }
        },
    ))
}

/// Hooked: `File`, pipe, stdin and socket reads.
///
/// # Safety
/// As `read(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t {
    let iov = iovec {
        iov_base: buf,
        iov_len: count,
    };
    vectored(fd, Interest::Read, &iov, 1)
}

/// Hooked: `File`, pipe, stdout and socket writes.
///
/// # Safety
/// As `write(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t {
    let iov = iovec {
        iov_base: buf as *mut c_void,
        iov_len: count,
    };
    vectored(fd, Interest::Write, &iov, 1)
}

/// Hooked: `read_vectored`.
///
/// # Safety
/// As `readv(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, count: c_int) -> ssize_t {
    vectored(fd, Interest::Read, iov, count)
}

/// Hooked: `write_vectored`.
///
/// # Safety
/// As `writev(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, count: c_int) -> ssize_t {
    vectored(fd, Interest::Write, iov, count)
}

/// Hooked: both ends start with a clean record.
///
/// # Safety
/// As `pipe2(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pipe2(fds: *mut c_int, flags: c_int) -> c_int {
    let ret = syscall!(libc::SYS_pipe2, fds, flags);
    if ret == 0 {
        // SAFETY: on success the kernel wrote two descriptors to `fds`.
        let pair = unsafe { [*fds, *fds.add(1)] };
        pair.into_iter().for_each(on_created);
    }
    c_result(ret) as c_int
}

/// Hooked: as `pipe2` without flags.
///
/// # Safety
/// As `pipe(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pipe(fds: *mut c_int) -> c_int {
    // SAFETY: same contract.
    unsafe { pipe2(fds, 0) }
}

/// Hooked: coroutines waiting on the descriptor wake with EBADF, and
/// readiness of the closed file can no longer reach the number's next owner.
///
/// # Safety
/// As `close(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if let Some(entry) = FD_TABLE.peek(fd) {
        entry.reset();
    }
    c_result(syscall!(libc::SYS_close, fd)) as c_int
}

/// `new` now names another open file description: forget its record.
fn on_duplicated(new: c_int) {
    if let Some(target) = FD_TABLE.peek(new) {
        target.reset();
    }
}

/// Hooked: see [`on_duplicated`].
///
/// # Safety
/// As `dup(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup(old: c_int) -> c_int {
    let ret = syscall!(libc::SYS_dup, old);
    if ret >= 0 {
        on_duplicated(ret as c_int);
    }
    c_result(ret) as c_int
}

/// Hooked: `new` is closed first if open, as `close` would.
///
/// # Safety
/// As `dup3(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    let ret = syscall!(libc::SYS_dup3, old, new, flags);
    if ret >= 0 {
        on_duplicated(new);
    }
    c_result(ret) as c_int
}

/// Hooked: as `dup3`; `dup2(fd, fd)` checks `fd` and changes nothing.
///
/// # Safety
/// As `dup2(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    if old == new {
        let ret = syscall!(libc::SYS_fcntl, old, libc::F_GETFD);
        return if ret < 0 { c_result(ret) as c_int } else { new };
    }
    // SAFETY: same contract.
    unsafe { dup3(old, new, 0) }
}

/// Hooked (`fcntl` is variadic in C; on x86-64 a fixed third argument is
/// passed in the same register): `F_GETFL` never shows an O_NONBLOCK the
/// runtime added, `F_SETFL` keeps one a coroutine's accept or connect relies
/// on, and `F_DUPFD*` give the new number a clean record.
///
/// # Safety
/// As `fcntl(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    match cmd {
        libc::F_GETFL => {
            let ret = syscall!(libc::SYS_fcntl, fd, cmd);
            if ret >= 0 && ret as c_int & libc::O_NONBLOCK != 0 && nonblock::added_by_runtime(fd) {
                return ret as c_int & !libc::O_NONBLOCK;
            }
            c_result(ret) as c_int
        }
        libc::F_SETFL => {
            let wanted = arg as c_int;
            let keep = nonblock::user_sets_mode(fd, wanted & libc::O_NONBLOCK != 0, Some(wanted));
            let effective = if keep {
                wanted | libc::O_NONBLOCK
            } else {
                wanted
            };
            let ret = syscall!(libc::SYS_fcntl, fd, cmd, effective);
            // After the change, so a concurrent refresh cannot cache the
            // old mode under the new epoch.
            nonblock::settings_changed();
            c_result(ret) as c_int
        }
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            let ret = syscall!(libc::SYS_fcntl, fd, cmd, arg);
            if ret >= 0 {
                on_duplicated(ret as c_int);
            }
            c_result(ret) as c_int
        }
        _ => c_result(syscall!(libc::SYS_fcntl, fd, cmd, arg)) as c_int,
    }
}

/// Hooked: glibc's large-file name for `fcntl`.
///
/// # Safety
/// As `fcntl(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: same contract.
    unsafe { fcntl(fd, cmd, arg) }
}

/// Hooked (variadic in C, register-compatible on x86-64): `FIONBIO`, which
/// `set_nonblocking` uses, must not clear an O_NONBLOCK a coroutine's accept
/// or connect relies on; the flag then counts as the user's if they asked.
///
/// # Safety
/// As `ioctl(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int {
    if request == libc::FIONBIO as c_ulong && !arg.is_null() {
        // SAFETY: FIONBIO takes a pointer to an int.
        let nonblocking = unsafe { *(arg as *const c_int) } != 0;
        let keep = nonblock::user_sets_mode(fd, nonblocking, None);
        let value = c_int::from(nonblocking || keep);
        let ret = syscall!(libc::SYS_ioctl, fd, request, &value as *const c_int);
        nonblock::settings_changed();
        return c_result(ret) as c_int;
    }
    c_result(syscall!(libc::SYS_ioctl, fd, request, arg)) as c_int
}
