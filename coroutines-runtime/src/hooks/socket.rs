//! Sockets: creation, accept, connect, the send and receive family, and
//! the options that change how they block.

use std::time::{Duration, Instant};

use libc::{c_int, c_void, iovec, msghdr, size_t, sockaddr, socklen_t, ssize_t};

use super::descriptor::{self, Kind};
use super::driver::{blocking_io, on_created, poll_one, ready_now, Call, Len, Nonblock};
use super::iov;
use crate::coroutine::{self, in_coroutine, Wait};
use crate::reactor::fd_table::{Interest, FD_TABLE};
use crate::reactor::{wait_fd, FdWait, Outcome};
use crate::sys::{c_result, syscall};

/// An AF_UNIX connect to a full backlog is tried again after this long,
/// doubling up to `LONGEST_RETRY`: nothing the runtime can wait on tells
/// when the listener accepts.
const FIRST_RETRY: Duration = Duration::from_millis(1);
const LONGEST_RETRY: Duration = Duration::from_millis(32);

/// A send or receive: one attempt as is if the user passed `MSG_DONTWAIT`,
/// else through the driver with `MSG_DONTWAIT` added per attempt.
/// `call(flags, done)` makes the call for what is left after `done` bytes.
fn transfer(
    fd: c_int,
    interest: Interest,
    flags: c_int,
    len: Len,
    call: impl Fn(c_int, usize) -> isize,
) -> ssize_t {
    if flags & libc::MSG_DONTWAIT != 0 {
        return c_result(call(flags, 0));
    }
    let call_info = Call {
        wait_all: flags & libc::MSG_WAITALL != 0,
        peek: flags & libc::MSG_PEEK != 0,
        ..Call::transfer(fd, interest, Nonblock::Flag, len)
    };
    c_result(blocking_io(call_info, |nonblocking, done| {
        let flags = match nonblocking {
            true => flags | libc::MSG_DONTWAIT,
            false => flags,
        };
        call(flags, done)
    }))
}

/// The buffer after its first `done` bytes (within it: `done` never
/// exceeds what the kernel transferred into or out of it).
fn after(buf: *const c_void, done: usize) -> *const c_void {
    buf.cast::<u8>().wrapping_add(done).cast()
}

/// A message header for what is left of `msg` after `done` bytes: its
/// remaining iovecs, and no address or control data (those went with the
/// first part). `iovs` keeps the iovecs alive.
///
/// # Safety
/// `msg` and its iovecs are readable: a call with them succeeded.
unsafe fn rest_of(msg: *const msghdr, done: usize, iovs: &mut Vec<iovec>) -> msghdr {
    // SAFETY: per the contract.
    let msg = unsafe { &*msg };
    // SAFETY: per the contract.
    *iovs = unsafe { iov::skip(msg.msg_iov, msg.msg_iovlen, done) };
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
    let mut rest: msghdr = unsafe { core::mem::zeroed() };
    rest.msg_iov = iovs.as_mut_ptr();
    rest.msg_iovlen = iovs.len();
    rest
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

/// Hooked: `UdpSocket::recv_from`.
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
    transfer(
        fd,
        Interest::Read,
        flags,
        Len::Buffer(len),
        |flags, done| {
            let (addr, addrlen) = match done {
                0 => (addr, addrlen),
                _ => (core::ptr::null_mut(), core::ptr::null_mut()),
            };
            let rest = after(buf, done);
            syscall!(
                libc::SYS_recvfrom,
                fd,
                rest,
                len - done,
                flags,
                addr,
                addrlen
            )
        },
    )
}

/// Hooked: `UnixDatagram`, ancillary data.
///
/// # Safety
/// As `recvmsg(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    transfer(
        fd,
        Interest::Read,
        flags,
        Len::Message(msg),
        |flags, done| {
            if done == 0 {
                return syscall!(libc::SYS_recvmsg, fd, msg, flags);
            }
            let mut iovs = Vec::new();
            // SAFETY: an attempt with `msg` succeeded.
            let mut rest = unsafe { rest_of(msg, done, &mut iovs) };
            syscall!(libc::SYS_recvmsg, fd, &mut rest as *mut msghdr, flags)
        },
    )
}

/// Hooked: `TcpStream::write` (with `MSG_NOSIGNAL`).
///
/// # Safety
/// As `send(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    transfer(
        fd,
        Interest::Write,
        flags,
        Len::Buffer(len),
        |flags, done| {
            syscall!(
                libc::SYS_sendto,
                fd,
                after(buf, done),
                len - done,
                flags,
                0,
                0
            )
        },
    )
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
    transfer(
        fd,
        Interest::Write,
        flags,
        Len::Buffer(len),
        |flags, done| {
            let (addr, addrlen) = match done {
                0 => (addr, addrlen),
                _ => (core::ptr::null(), 0),
            };
            syscall!(
                libc::SYS_sendto,
                fd,
                after(buf, done),
                len - done,
                flags,
                addr,
                addrlen
            )
        },
    )
}

/// Hooked: ancillary data, vectored datagrams.
///
/// # Safety
/// As `sendmsg(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    transfer(
        fd,
        Interest::Write,
        flags,
        Len::Message(msg),
        |flags, done| {
            if done == 0 {
                return syscall!(libc::SYS_sendmsg, fd, msg, flags);
            }
            let mut iovs = Vec::new();
            // SAFETY: an attempt with `msg` succeeded.
            let rest = unsafe { rest_of(msg, done, &mut iovs) };
            syscall!(libc::SYS_sendmsg, fd, &rest as *const msghdr, flags)
        },
    )
}

/// Hooked: `TcpListener::accept`. A listener has no per-call non-blocking
/// flag, so each attempt in a coroutine holds it non-blocking (see
/// `descriptor`); the connection's kind is the listener's.
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
    let call = Call::other(fd, Interest::Read, Nonblock::Hold);
    let ret = blocking_io(call, |_, _| {
        syscall!(libc::SYS_accept4, fd, addr, addrlen, flags)
    });
    if ret >= 0 {
        on_created(ret as c_int, descriptor::known_kind(fd));
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

/// Hooked: `TcpStream::connect`, `UnixStream::connect`. In a coroutine the
/// connection is started under a hold (see `descriptor`) and the coroutine
/// parks until the socket is writable; the outcome is the socket's
/// `SO_ERROR`. A Unix listener with a full backlog is tried again until it
/// has room, as the blocking call waits. A send timeout bounds the whole
/// call, and yields what Linux gives then (EINPROGRESS, or EAGAIN for a
/// full Unix backlog).
///
/// # Safety
/// As `connect(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let plain = || syscall!(libc::SYS_connect, fd, addr, len);
    c_result(connect_parked(fd, plain)) as c_int
}

/// `connect` in a coroutine; `call` makes the system call.
fn connect_parked(fd: c_int, call: impl Fn() -> isize) -> isize {
    if !in_coroutine() {
        return call();
    }
    let Some(entry) = FD_TABLE.get(fd) else {
        return call();
    };
    let mut deadline: Option<Option<Instant>> = None;
    let mut retry = FIRST_RETRY;
    loop {
        let wait = FdWait::new(fd, entry, Interest::Write);
        let generation = wait.generation();
        let kind = descriptor::kind(fd, entry, generation);
        if !kind.is_some_and(Kind::accepts) {
            // Not a connection (datagrams connect at once), or not open.
            return call();
        }
        let view = descriptor::view(fd, entry, generation, Kind::StreamSocket);
        if view.nonblocking {
            return call();
        }
        let deadline = *deadline.get_or_insert_with(|| {
            view.send_timeout
                .and_then(|t| Instant::now().checked_add(t))
        });
        let Some(ret) = descriptor::held(fd, entry, generation, &call) else {
            continue;
        };
        match ret {
            ret if ret == -(libc::EINPROGRESS as isize) => {
                return connected(fd, wait, entry, deadline);
            }
            ret if ret == -(libc::EAGAIN as isize) && kind != Some(Kind::Tcp) => {
                let pause = match deadline {
                    Some(deadline) if Instant::now() >= deadline => return ret,
                    Some(deadline) => retry.min(deadline.saturating_duration_since(Instant::now())),
                    None => retry,
                };
                let what = Wait::Fd { fd, write: true };
                coroutine::park(Some(Instant::now() + pause), what, drop);
                retry = (retry * 2).min(LONGEST_RETRY);
            }
            ret => return ret,
        }
    }
}

/// Waits for a connection under way to finish, and returns its outcome.
fn connected(
    fd: c_int,
    mut wait: FdWait,
    entry: &'static crate::reactor::fd_table::FdEntry,
    deadline: Option<Instant>,
) -> isize {
    loop {
        match wait_fd(&wait, deadline) {
            Outcome::Ready => {}
            Outcome::TimedOut => return -(libc::EINPROGRESS as isize),
            Outcome::Closed => return -(libc::EBADF as isize),
            Outcome::NotPollable => {
                let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                poll_one(fd, Interest::Write, remaining);
            }
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
        (ret, _) if ret < 0 => ret,
        (_, 0) => 0,
        (_, error) => -(error as isize),
    }
}

/// Hooked: new timeouts or a new low-water mark make the hooks ask the
/// kernel again before the next park.
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
    let watched = [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO, libc::SO_RCVLOWAT];
    if level == libc::SOL_SOCKET && watched.contains(&name) {
        // After the change; see `descriptor::settings_changed`.
        descriptor::settings_changed();
    }
    c_result(ret) as c_int
}

/// Hooked: a new socket starts with a clean record of its kind.
///
/// # Safety
/// As `socket(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int {
    let ret = syscall!(libc::SYS_socket, domain, kind, protocol);
    if ret >= 0 {
        on_created(ret as c_int, Some(Kind::of_socket(domain, kind, protocol)));
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
        let kind = Kind::of_socket(domain, kind, protocol);
        fds.into_iter().for_each(|fd| on_created(fd, Some(kind)));
    }
    c_result(ret) as c_int
}
