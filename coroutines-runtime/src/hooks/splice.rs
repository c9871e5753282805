//! `splice`, `tee` and `sendfile` (what `io::copy` between pipes, sockets
//! and files uses), and `vmsplice`.
//!
//! `splice`, `tee` and `vmsplice` go through [`relay_io`]: in a coroutine,
//! a call that would block parks in the reactor on the end it waits for
//! (see `hooks::relay` for which ends can, and the helper thread for the
//! others). `sendfile` has no per-call non-blocking flag for its output,
//! and a blocking one to a socket sends everything asked for, reading the
//! file in between: in a coroutine it runs, as made, on a helper thread of
//! the runtime (`crate::blocking`). Its input is a file, which never waits,
//! so what it waits for is its reader.

use libc::{c_int, c_uint, loff_t, off_t, size_t, ssize_t};

use super::relay::{relay_io, relay_on_helper, Relay};
use crate::sys::{c_result, syscall};

/// Hooked: see the module docs.
///
/// # Safety
/// As `splice(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn splice(
    fd_in: c_int,
    off_in: *mut loff_t,
    fd_out: c_int,
    off_out: *mut loff_t,
    len: size_t,
    flags: c_uint,
) -> ssize_t {
    let relay = Relay::between(fd_in, fd_out, len, flags);
    c_result(relay_io(relay, |pass| {
        syscall!(
            libc::SYS_splice,
            fd_in,
            off_in,
            fd_out,
            off_out,
            pass.len,
            pass.flags
        )
    }))
}

/// Hooked: see the module docs.
///
/// # Safety
/// As `tee(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tee(fd_in: c_int, fd_out: c_int, len: size_t, flags: c_uint) -> ssize_t {
    let relay = Relay::between(fd_in, fd_out, len, flags);
    c_result(relay_io(relay, |pass| {
        syscall!(libc::SYS_tee, fd_in, fd_out, pass.len, pass.flags)
    }))
}

/// Hooked: see the module docs.
///
/// # Safety
/// As `vmsplice(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vmsplice(
    fd: c_int,
    iov: *const libc::iovec,
    count: size_t,
    flags: c_uint,
) -> ssize_t {
    let relay = Relay::memory(fd, count, flags);
    c_result(relay_io(relay, |pass| {
        syscall!(libc::SYS_vmsplice, fd, iov, pass.len, pass.flags)
    }))
}

/// Hooked: see the module docs.
///
/// # Safety
/// As `sendfile(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendfile(
    fd_out: c_int,
    fd_in: c_int,
    offset: *mut off_t,
    count: size_t,
) -> ssize_t {
    let relay = Relay::between(fd_in, fd_out, count, 0);
    c_result(relay_on_helper(relay, || {
        syscall!(libc::SYS_sendfile, fd_out, fd_in, offset, count)
    }))
}

/// Hooked: glibc's large-file name for `sendfile`.
///
/// # Safety
/// As `sendfile(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendfile64(
    fd_out: c_int,
    fd_in: c_int,
    offset: *mut off_t,
    count: size_t,
) -> ssize_t {
    // SAFETY: same contract.
    unsafe { sendfile(fd_out, fd_in, offset, count) }
}
