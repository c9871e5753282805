//! glibc's fortified entry points (`_FORTIFY_SOURCE`, on by default with
//! Ubuntu's and Debian's compilers): C code calls `__recv_chk` for a `recv`
//! into a buffer of known size, and so on. glibc's own versions check the
//! size, then call its internal `__recv`, which no hook sees: they would
//! block the worker. These check the same way and call the hooked
//! function.

use libc::{c_int, c_void, nfds_t, pollfd, sigset_t, size_t, sockaddr, socklen_t, ssize_t};

extern "C" {
    /// glibc's "buffer overflow detected" abort.
    fn __chk_fail() -> !;
}

/// Aborts as glibc does if `len` bytes do not fit in the `size` the
/// compiler knows of.
fn check(len: size_t, size: size_t) {
    if len > size {
        // SAFETY: takes nothing, returns never.
        unsafe { __chk_fail() }
    }
}

/// Hooked: `recv` into a buffer of `buflen` bytes.
///
/// # Safety
/// As `recv(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    buflen: size_t,
    flags: c_int,
) -> ssize_t {
    check(len, buflen);
    // SAFETY: same contract.
    unsafe { super::socket::recv(fd, buf, len, flags) }
}

/// Hooked: `recvfrom` into a buffer of `buflen` bytes.
///
/// # Safety
/// As `recvfrom(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    buflen: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> ssize_t {
    check(len, buflen);
    // SAFETY: same contract.
    unsafe { super::socket::recvfrom(fd, buf, len, flags, addr, addrlen) }
}

/// Hooked: `read` into a buffer of `buflen` bytes.
///
/// # Safety
/// As `read(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    buflen: size_t,
) -> ssize_t {
    check(len, buflen);
    // SAFETY: same contract.
    unsafe { super::io::read(fd, buf, len) }
}

/// Hooked: `poll` on an array of `fdslen` bytes.
///
/// # Safety
/// As `poll(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __poll_chk(
    fds: *mut pollfd,
    nfds: nfds_t,
    timeout: c_int,
    fdslen: size_t,
) -> c_int {
    check(nfds as size_t, fdslen / core::mem::size_of::<pollfd>());
    // SAFETY: same contract.
    unsafe { super::poll::poll(fds, nfds, timeout) }
}

/// Hooked: `ppoll` on an array of `fdslen` bytes.
///
/// # Safety
/// As `ppoll(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __ppoll_chk(
    fds: *mut pollfd,
    nfds: nfds_t,
    timeout: *const libc::timespec,
    sigmask: *const sigset_t,
    fdslen: size_t,
) -> c_int {
    check(nfds as size_t, fdslen / core::mem::size_of::<pollfd>());
    // SAFETY: same contract.
    unsafe { super::poll::ppoll(fds, nfds, timeout, sigmask) }
}
