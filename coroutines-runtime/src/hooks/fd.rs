//! Descriptors in general: creating pipes, duplicating and closing
//! descriptors, and the flags the user sets, which the runtime must both
//! honour and never show as its own.

use libc::{c_int, c_ulong, c_void};

use super::descriptor::{self, Kind};
use super::driver::on_created;
use crate::reactor::fd_table::FD_TABLE;
use crate::scheduler::in_forked_child;
use crate::sys::{c_result, syscall};

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
        pair.into_iter()
            .for_each(|fd| on_created(fd, Some(Kind::Pipe)));
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

/// Runs `replace`, a system call that closes or replaces the file that
/// `fd` names: coroutines waiting on the old file wake with EBADF, and
/// nothing learned about it reaches the number's next file.
///
/// The record starts a new generation both before the call (so waiters
/// wake even if the call takes long) and after it (for waits that began in
/// between), unless a new file got the number meanwhile and started one
/// itself.
fn replacing(fd: c_int, replace: impl FnOnce() -> isize) -> isize {
    let entry = match in_forked_child() {
        true => None,
        false => FD_TABLE.peek(fd),
    };
    let Some(entry) = entry else {
        return replace();
    };
    let generation = entry.reset();
    descriptor::wait_for_holds(entry);
    let ret = replace();
    entry.reset_if(generation);
    ret
}

/// Closes a descriptor the hooks opened for themselves (a pidfd), as the
/// `close` hook would.
pub(crate) fn close_owned(fd: c_int) {
    replacing(fd, || syscall!(libc::SYS_close, fd));
}

/// Hooked: see [`replacing`].
///
/// # Safety
/// As `close(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    c_result(replacing(fd, || syscall!(libc::SYS_close, fd))) as c_int
}

/// Hooked: the new number starts with a clean record.
///
/// # Safety
/// As `dup(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup(old: c_int) -> c_int {
    let ret = syscall!(libc::SYS_dup, old);
    if ret >= 0 {
        on_created(ret as c_int, descriptor::known_kind(old));
    }
    c_result(ret) as c_int
}

/// Hooked: `new` is closed first if open, as `close` would be.
///
/// # Safety
/// As `dup3(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    if old == new {
        // EINVAL, and nothing changes.
        return c_result(syscall!(libc::SYS_dup3, old, new, flags)) as c_int;
    }
    let kind = descriptor::known_kind(old);
    let ret = replacing(new, || syscall!(libc::SYS_dup3, old, new, flags));
    if ret >= 0 {
        on_created(new, kind);
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
/// runtime holds, `F_SETFL` is what the runtime puts back after a hold,
/// and `F_DUPFD*` give the new number a clean record.
///
/// # Safety
/// As `fcntl(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    let ret = match cmd {
        _ if in_forked_child() => syscall!(libc::SYS_fcntl, fd, cmd, arg),
        libc::F_GETFL => descriptor::get_flags(fd),
        libc::F_SETFL => descriptor::set_user_flags(fd, arg as c_int),
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            let ret = syscall!(libc::SYS_fcntl, fd, cmd, arg);
            if ret >= 0 {
                on_created(ret as c_int, descriptor::known_kind(fd));
            }
            ret
        }
        _ => syscall!(libc::SYS_fcntl, fd, cmd, arg),
    };
    c_result(ret) as c_int
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
/// `set_nonblocking` uses, sets the user's mode as `F_SETFL` does.
///
/// # Safety
/// As `ioctl(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int {
    let call = || syscall!(libc::SYS_ioctl, fd, request, arg);
    let ret = match request == libc::FIONBIO as c_ulong && !in_forked_child() {
        true => descriptor::set_user_mode(fd, call),
        false => call(),
    };
    c_result(ret) as c_int
}
