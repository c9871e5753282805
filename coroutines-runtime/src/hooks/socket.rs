//! Sockets: creation, accept, connect, the send and receive family, and
//! the timeouts the user sets.

use std::time::Instant;

use libc::{c_int, c_void, msghdr, size_t, sockaddr, socklen_t, ssize_t};

use super::blocking::{blocking_io, on_created, ready_now, Nonblock};
use super::nonblock::{self, NonblockHold};
use crate::coroutine::in_coroutine;
use crate::reactor::fd_table::{Interest, FD_TABLE};
use crate::reactor::{wait_fd, FdWait, Outcome};
use crate::sys::{c_result, syscall};

/// A send or receive: one attempt as is if the user passed `MSG_DONTWAIT`,
/// else through the shared driver with `MSG_DONTWAIT` added per attempt.
/// `len` is the buffer length of a plain receive (0 for sends and vectored
/// calls); peeking consumes nothing, so it never counts.
fn transfer(
    fd: c_int,
    interest: Interest,
    flags: c_int,
    len: usize,
    call: impl Fn(c_int) -> isize,
) -> ssize_t {
    if flags & libc::MSG_DONTWAIT != 0 {
        return c_result(call(flags));
    }
    let requested = if flags & libc::MSG_PEEK == 0 { len } else { 0 };
    c_result(blocking_io(
        fd,
        interest,
        Nonblock::PerCall,
        requested,
        |nonblocking| {
            call(if nonblocking {
                flags | libc::MSG_DONTWAIT
            } else {
                flags
            })
        },
    ))
}

/// Hooked: `TcpStream::read` and `peek`.
///
/// # Safety
/// As `recv(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    // SAFETY: same contract, without an address.
    unsafe {
        recvfrom(
            fd,
            buf,
            len,
            flags,
            core::ptr::null_mut(),
            core::ptr::null_mut(),
        )
    }
}

/// Hooked: `UdpSocket::recv_from`. `MSG_WAITALL` asks for the whole buffer,
/// but with `MSG_DONTWAIT` added per attempt the kernel returns what it
/// has, so in a coroutine the rest is collected here, parking in between.
///
/// # Safety
/// As `recvfrom(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> ssize_t {
    let once = |buf: *mut c_void, len: size_t, flags: c_int| {
        transfer(fd, Interest::Read, flags, len, |flags| {
            syscall!(libc::SYS_recvfrom, fd, buf, len, flags, addr, addrlen)
        })
    };
    let whole = flags & libc::MSG_WAITALL != 0
        && flags & (libc::MSG_DONTWAIT | libc::MSG_PEEK) == 0
        && in_coroutine();
    if !whole {
        return once(buf, len, flags);
    }
    let mut got = 0;
    while got < len {
        // SAFETY: `got < len`, within the caller's buffer.
        let rest = unsafe { buf.cast::<u8>().add(got) }.cast();
        match once(rest, len - got, flags & !libc::MSG_WAITALL) {
            0 => break,
            n if n < 0 => return if got > 0 { got as ssize_t } else { n },
            n => got += n as usize,
        }
    }
    got as ssize_t
}

/// Hooked: `UnixDatagram`, ancillary data.
///
/// # Safety
/// As `recvmsg(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    transfer(fd, Interest::Read, flags, 0, |flags| {
        syscall!(libc::SYS_recvmsg, fd, msg, flags)
    })
}

/// Hooked: `TcpStream::write` (with `MSG_NOSIGNAL`).
///
/// # Safety
/// As `send(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    transfer(fd, Interest::Write, flags, 0, |flags| {
        syscall!(libc::SYS_sendto, fd, buf, len, flags, 0, 0)
    })
}

/// Hooked: `UdpSocket::send_to`.
///
/// # Safety
/// As `sendto(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    addrlen: socklen_t,
) -> ssize_t {
    transfer(fd, Interest::Write, flags, 0, |flags| {
        syscall!(libc::SYS_sendto, fd, buf, len, flags, addr, addrlen)
    })
}

/// Hooked: ancillary data, vectored datagrams.
///
/// # Safety
/// As `sendmsg(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    transfer(fd, Interest::Write, flags, 0, |flags| {
        syscall!(libc::SYS_sendmsg, fd, msg, flags)
    })
}

/// Hooked: `TcpListener::accept`. A listener has no per-call non-blocking
/// flag, so it is held in O_NONBLOCK while coroutines accept on it.
///
/// # Safety
/// As `accept4(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
    flags: c_int,
) -> c_int {
    let ret = blocking_io(fd, Interest::Read, Nonblock::Hold, 0, |_| {
        syscall!(libc::SYS_accept4, fd, addr, addrlen, flags)
    });
    if ret >= 0 {
        on_created(ret as c_int);
    }
    c_result(ret) as c_int
}

/// Hooked: as `accept4` without flags.
///
/// # Safety
/// As `accept(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, addrlen: *mut socklen_t) -> c_int {
    // SAFETY: same contract.
    unsafe { accept4(fd, addr, addrlen, 0) }
}

/// Hooked: `TcpStream::connect`. In a coroutine the connection is started
/// non-blocking and the coroutine parks until the socket is writable; the
/// outcome is the socket's `SO_ERROR`. A send timeout bounds the wait and
/// yields EINPROGRESS, as Linux does for a blocking connect.
///
/// # Safety
/// As `connect(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let plain = || c_result(syscall!(libc::SYS_connect, fd, addr, len)) as c_int;
    if !in_coroutine() || nonblock::user_nonblocking(fd) {
        return plain();
    }
    let Some(entry) = FD_TABLE.get(fd) else {
        return plain();
    };
    let start = Instant::now();
    let mut wait = FdWait::new(fd, entry, Interest::Write);
    let Some(_hold) = NonblockHold::take(fd, entry) else {
        return plain();
    };
    let ret = syscall!(libc::SYS_connect, fd, addr, len);
    if ret != -(libc::EINPROGRESS as isize) {
        return c_result(ret) as c_int;
    }
    let deadline = nonblock::user_timeout(fd, Interest::Write).and_then(|t| start.checked_add(t));
    loop {
        match wait_fd(&wait, deadline) {
            Outcome::Ready | Outcome::NotPollable => {}
            Outcome::TimedOut => return c_result(-(libc::EINPROGRESS as isize)) as c_int,
            Outcome::Closed => return c_result(-(libc::EBADF as isize)) as c_int,
        }
        wait = FdWait::new(fd, entry, Interest::Write);
        if ready_now(fd, Interest::Write) {
            break;
        }
    }
    let mut error: c_int = 0;
    let mut size = core::mem::size_of::<c_int>() as socklen_t;
    let ret = syscall!(
        libc::SYS_getsockopt,
        fd,
        libc::SOL_SOCKET,
        libc::SO_ERROR,
        &mut error as *mut c_int,
        &mut size as *mut socklen_t
    );
    match (ret, error) {
        (ret, _) if ret < 0 => c_result(ret) as c_int,
        (_, 0) => 0,
        (_, error) => c_result(-(error as isize)) as c_int,
    }
}

/// Hooked: a new receive or send timeout makes the hooks ask the kernel
/// again before the next park.
///
/// # Safety
/// As `setsockopt(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    let ret = syscall!(libc::SYS_setsockopt, fd, level, name, value, len);
    if level == libc::SOL_SOCKET && matches!(name, libc::SO_RCVTIMEO | libc::SO_SNDTIMEO) {
        // After the change; see `fcntl`.
        nonblock::settings_changed();
    }
    c_result(ret) as c_int
}

/// Hooked: a new socket starts with a clean record.
///
/// # Safety
/// As `socket(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int {
    let ret = syscall!(libc::SYS_socket, domain, kind, protocol);
    if ret >= 0 {
        on_created(ret as c_int);
    }
    c_result(ret) as c_int
}

/// Hooked: as `socket`, for both ends.
///
/// # Safety
/// As `socketpair(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn socketpair(
    domain: c_int,
    kind: c_int,
    protocol: c_int,
    sv: *mut c_int,
) -> c_int {
    let ret = syscall!(libc::SYS_socketpair, domain, kind, protocol, sv);
    if ret == 0 {
        // SAFETY: on success the kernel wrote two descriptors to `sv`.
        let fds = unsafe { [*sv, *sv.add(1)] };
        fds.into_iter().for_each(on_created);
    }
    c_result(ret) as c_int
}
