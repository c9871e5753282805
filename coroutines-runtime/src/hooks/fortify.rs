//! glibc's fortified entry points (`_FORTIFY_SOURCE`, on by default in many
//! distributions' C compilers): C code that reads into a buffer of known
//! size calls `__read_chk` for `read`, `__recv_chk` for `recv`, and so on.
//! glibc's versions check the size and then jump to its internal function,
//! where no hook reaches; these make the same check and then the hooked
//! call.

use libc::{c_int, c_void, nfds_t, pollfd, sigset_t, size_t, sockaddr, socklen_t, ssize_t};

use super::{io, poll, socket};

unsafe extern "C" {
    /// glibc's report of a buffer overflow: prints it and aborts.
    fn __chk_fail() -> !;
}

/// Aborts as glibc does if `len` bytes do not fit in `room`.
fn check(len: usize, room: usize) {
    if len > room {
        // SAFETY: glibc's own failure path for this check; it never returns.
        unsafe { __chk_fail() }
    }
}

/// Hooked: `read` into a buffer of `buflen` bytes.
///
/// # Safety
/// As `read(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    nbytes: size_t,
    buflen: size_t,
) -> ssize_t {
    check(nbytes, buflen);
    // SAFETY: same contract.
    unsafe { io::read(fd, buf, nbytes) }
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
    unsafe { socket::recv(fd, buf, len, flags) }
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
    unsafe { socket::recvfrom(fd, buf, len, flags, addr, addrlen) }
}

/// Hooked: `poll` of an array of `fdslen` bytes.
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
    check(nfds as usize, fdslen / core::mem::size_of::<pollfd>());
    // SAFETY: same contract.
    unsafe { poll::poll(fds, nfds, timeout) }
}

/// Hooked: `ppoll` of an array of `fdslen` bytes.
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
    check(nfds as usize, fdslen / core::mem::size_of::<pollfd>());
    // SAFETY: same contract.
    unsafe { poll::ppoll(fds, nfds, timeout, sigmask) }
}
