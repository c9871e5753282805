//! `read`, `write`, `readv`, `writev`, and `preadv2`/`pwritev2` at the
//! current position: pipes, FIFOs, sockets, ttys and files. Also glibc's
//! `eventfd_read` and `eventfd_write`, which read and write through
//! internal calls no other hook sees.

use libc::{c_int, c_void, iovec, size_t, ssize_t};

use super::descriptor::{self, Kind};
use super::driver::{blocking_io, Call, Len, Nonblock};
use super::iov;
use crate::blocking;
use crate::coroutine::in_coroutine;
use crate::identity;
use crate::reactor::fd_table::Interest;
use crate::sys::{c_result, syscall};

/// `preadv2`/`pwritev2` with offset -1 use and advance the file position,
/// like `readv`/`writev`; `RWF_NOWAIT` makes that one call non-blocking on
/// sockets and pipes.
const CURRENT_POSITION: isize = -1;

/// What the user called: `read`/`write` of one buffer, or their vectored
/// forms; the call as made is the same system call (`readv` costs more).
#[derive(Clone, Copy)]
enum Made {
    Buffer(*mut c_void, size_t),
    Vectored,
}

/// A read or write (as `iov`), blocking as the user asked for.
///
/// Writes to stdout and stderr block the worker in coroutines that share
/// their worker's thread identity: std's stdout lock is re-entrant per
/// thread, so parking inside it would let the worker's other coroutines
/// into it.
#[inline(always)]
fn transfer(
    fd: c_int,
    interest: Interest,
    iov: *const iovec,
    count: c_int,
    len: Len,
    made: Made,
) -> ssize_t {
    let (vectored, nowait) = match interest {
        Interest::Read => (libc::SYS_readv, libc::SYS_preadv2),
        Interest::Write => (libc::SYS_writev, libc::SYS_pwritev2),
    };
    let as_made = move || match made {
        Made::Buffer(buf, len) => match interest {
            Interest::Read => syscall!(libc::SYS_read, fd, buf, len),
            Interest::Write => syscall!(libc::SYS_write, fd, buf, len),
        },
        Made::Vectored => syscall!(vectored, fd, iov, count),
    };
    let stdio = fd == libc::STDOUT_FILENO || fd == libc::STDERR_FILENO;
    if interest == Interest::Write && stdio && !identity::in_private_identity() {
        return c_result(as_made());
    }
    if let Made::Buffer(_, len) = made {
        if len > isize::MAX as usize {
            // read(2)/write(2) refuse such a count at once (EFAULT: the
            // range is not user memory); as an iovec it would be EINVAL.
            return c_result(as_made());
        }
    }
    let call = Call::transfer(fd, interest, Nonblock::Rwf, len);
    c_result(blocking_io(call, move |attempt| {
        let (nonblocking, done) = (attempt.nonblocking, attempt.done);
        let rest;
        let (iov, count) = match done {
            0 => (iov, count),
            done => {
                // SAFETY: an attempt with these iovecs succeeded.
                rest = unsafe { iov::skip(iov, count.max(0) as usize, done) };
                (rest.as_ptr(), rest.len() as c_int)
            }
        };
        if attempt.quiet && interest == Interest::Write && is_socket(fd) {
            return send_rest(fd, iov, count, nonblocking);
        }
        match (nonblocking, done) {
            (true, _) => syscall!(
                nowait,
                fd,
                iov,
                count,
                CURRENT_POSITION,
                0,
                libc::RWF_NOWAIT
            ),
            (false, 0) => as_made(),
            (false, _) => syscall!(vectored, fd, iov, count),
        }
    }))
}

fn is_socket(fd: c_int) -> bool {
    descriptor::known_kind(fd).is_some_and(Kind::is_socket)
}

/// A write to a socket (what is left of one), without SIGPIPE.
fn send_rest(fd: c_int, iov: *const iovec, count: c_int, nonblocking: bool) -> isize {
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
    msg.msg_iov = iov as *mut iovec;
    msg.msg_iovlen = count as usize;
    let flags = match nonblocking {
        true => libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        false => libc::MSG_NOSIGNAL,
    };
    syscall!(libc::SYS_sendmsg, fd, &msg as *const libc::msghdr, flags)
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
    transfer(
        fd,
        Interest::Read,
        &iov,
        1,
        Len::Buffer(count),
        Made::Buffer(buf, count),
    )
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
    let made = Made::Buffer(buf as *mut c_void, count);
    transfer(fd, Interest::Write, &iov, 1, Len::Buffer(count), made)
}

/// Hooked: `read_vectored`.
///
/// # Safety
/// As `readv(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, count: c_int) -> ssize_t {
    let len = Len::Vectored(iov, count.max(0) as usize);
    transfer(fd, Interest::Read, iov, count, len, Made::Vectored)
}

/// Hooked: `write_vectored`.
///
/// # Safety
/// As `writev(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, count: c_int) -> ssize_t {
    let len = Len::Vectored(iov, count.max(0) as usize);
    transfer(fd, Interest::Write, iov, count, len, Made::Vectored)
}

/// Hooked: at the current position (offset -1) and without flags,
/// `readv`. With flags, which a file may refuse with `RWF_NOWAIT` or at
/// all (an answer the driver would take for the file's), the call as made
/// on a helper thread (`crate::blocking`). At an offset, or with
/// `RWF_NOWAIT`, the call does not wait: made in place.
///
/// # Safety
/// As `preadv2(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn preadv2(
    fd: c_int,
    iov: *const iovec,
    count: c_int,
    offset: libc::off_t,
    flags: c_int,
) -> ssize_t {
    positioned(fd, Interest::Read, iov, count, offset, flags)
}

/// Hooked: glibc's large-file name for `preadv2`.
///
/// # Safety
/// As `preadv2(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn preadv64v2(
    fd: c_int,
    iov: *const iovec,
    count: c_int,
    offset: libc::off64_t,
    flags: c_int,
) -> ssize_t {
    // SAFETY: same contract; `off_t` is 64 bits wide here.
    unsafe { preadv2(fd, iov, count, offset, flags) }
}

/// Hooked: as `preadv2`, for writes.
///
/// # Safety
/// As `pwritev2(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pwritev2(
    fd: c_int,
    iov: *const iovec,
    count: c_int,
    offset: libc::off_t,
    flags: c_int,
) -> ssize_t {
    positioned(fd, Interest::Write, iov, count, offset, flags)
}

/// Hooked: glibc's large-file name for `pwritev2`.
///
/// # Safety
/// As `pwritev2(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pwritev64v2(
    fd: c_int,
    iov: *const iovec,
    count: c_int,
    offset: libc::off64_t,
    flags: c_int,
) -> ssize_t {
    // SAFETY: same contract; `off_t` is 64 bits wide here.
    unsafe { pwritev2(fd, iov, count, offset, flags) }
}

/// `preadv2`/`pwritev2`: see [`preadv2`].
fn positioned(
    fd: c_int,
    interest: Interest,
    iov: *const iovec,
    count: c_int,
    offset: libc::off_t,
    flags: c_int,
) -> ssize_t {
    let nr = match interest {
        Interest::Read => libc::SYS_preadv2,
        Interest::Write => libc::SYS_pwritev2,
    };
    let as_made = || syscall!(nr, fd, iov, count, offset, 0, flags);
    let waits = offset == CURRENT_POSITION as libc::off_t && flags & libc::RWF_NOWAIT == 0;
    match (waits && in_coroutine(), flags) {
        (false, _) => c_result(as_made()),
        (true, 0) => {
            let len = Len::Vectored(iov, count.max(0) as usize);
            transfer(fd, interest, iov, count, len, Made::Vectored)
        }
        (true, _) => c_result(blocking::run_borrowed(as_made)),
    }
}

/// Hooked: glibc's reads the counter with an internal `read`.
///
/// # Safety
/// As `eventfd_read(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eventfd_read(fd: c_int, value: *mut libc::eventfd_t) -> c_int {
    const LEN: usize = core::mem::size_of::<libc::eventfd_t>();
    // SAFETY: same contract: `value` is writable for one counter.
    match unsafe { read(fd, value.cast(), LEN) } {
        n if n == LEN as ssize_t => 0,
        _ => -1,
    }
}

/// Hooked: glibc's adds to the counter with an internal `write`.
///
/// # Safety
/// Always safe; `unsafe` for symmetry with the C declaration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eventfd_write(fd: c_int, value: libc::eventfd_t) -> c_int {
    const LEN: usize = core::mem::size_of::<libc::eventfd_t>();
    // SAFETY: `value` is readable for one counter.
    match unsafe { write(fd, (&value as *const libc::eventfd_t).cast(), LEN) } {
        n if n == LEN as ssize_t => 0,
        _ => -1,
    }
}
