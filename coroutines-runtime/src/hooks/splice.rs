//! `splice`, `tee` and `sendfile` (what `io::copy` between pipes, sockets
//! and files uses), and `vmsplice`. Their per-call non-blocking flag covers
//! pipes only, so in a coroutine they run, as made, on a helper thread of
//! the runtime (`crate::blocking`) while the coroutine parks.

use libc::{c_int, c_uint, loff_t, off_t, size_t, ssize_t};

use crate::blocking;
use crate::coroutine::in_coroutine;
use crate::sys::{c_result, syscall};

/// `call` where it cannot block a worker.
fn off_the_worker(call: impl FnOnce() -> isize) -> ssize_t {
    c_result(match in_coroutine() {
        true => blocking::run_borrowed(call),
        false => call(),
    })
}

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
    off_the_worker(|| syscall!(libc::SYS_splice, fd_in, off_in, fd_out, off_out, len, flags))
}

/// Hooked: see the module docs.
///
/// # Safety
/// As `tee(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tee(fd_in: c_int, fd_out: c_int, len: size_t, flags: c_uint) -> ssize_t {
    off_the_worker(|| syscall!(libc::SYS_tee, fd_in, fd_out, len, flags))
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
    off_the_worker(|| syscall!(libc::SYS_vmsplice, fd, iov, count, flags))
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
    off_the_worker(|| syscall!(libc::SYS_sendfile, fd_out, fd_in, offset, count))
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
