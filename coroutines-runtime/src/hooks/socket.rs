//! Sockets: creation, accept, connect, the send and receive family, and
//! the options that change how they block.

use std::time::{Duration, Instant};

use libc::{c_int, c_uint, c_void, iovec, msghdr, size_t, sockaddr, socklen_t, ssize_t};

use super::descriptor::{self, Kind};
use super::driver::{blocking_io, on_created, poll_one, Call, Len, Nonblock};
use super::iov;
use crate::blocking;
use crate::coroutine::{self, in_coroutine, Wait};
use crate::reactor::fd_table::{Interest, FD_TABLE};
use crate::reactor::{wait_fd, FdWait, Outcome};
use crate::scheduler::in_forked_child;
use crate::sys::{c_result, syscall};

/// `SO_RCVTIMEO`/`SO_SNDTIMEO` with a `timeval`, and with 64-bit seconds
/// (the same layout on x86-64).
const SO_RCVTIMEO_OLD: c_int = libc::SO_RCVTIMEO;
const SO_SNDTIMEO_OLD: c_int = libc::SO_SNDTIMEO;
const SO_RCVTIMEO_NEW: c_int = 66;
const SO_SNDTIMEO_NEW: c_int = 67;

/// An AF_UNIX connect to a full backlog is tried again after this long,
/// doubling up to `LONGEST_RETRY`: nothing the runtime can wait on tells
/// when the listener accepts.
const FIRST_RETRY: Duration = Duration::from_millis(1);
const LONGEST_RETRY: Duration = Duration::from_millis(32);

/// `UIO_MAXIOV`: the most messages one `sendmmsg` sends.
const UIO_MAXIOV: c_uint = 1024;

/// A send or receive: one call as is if it cannot block (`MSG_DONTWAIT`,
/// and error-queue reads, which never wait), else through the driver with
/// `MSG_DONTWAIT` added per attempt. `call(flags, done)` makes the call for
/// what is left after `done` bytes.
#[inline(always)]
fn transfer(
    fd: c_int,
    interest: Interest,
    flags: c_int,
    len: Len,
    call: impl Fn(c_int, usize) -> isize,
) -> ssize_t {
    if flags & (libc::MSG_DONTWAIT | libc::MSG_ERRQUEUE) != 0 {
        return c_result(call(flags, 0));
    }
    if interest == Interest::Write && flags & libc::MSG_ZEROCOPY != 0 {
        // Each call is one completion ID, which the user counts: the call
        // as made, on a helper thread, never split into attempts.
        return c_result(blocking::run_borrowed(|| call(flags, 0)));
    }
    let call_info = Call {
        wait_all: flags & libc::MSG_WAITALL != 0,
        peek: flags & libc::MSG_PEEK != 0,
        ..Call::transfer(fd, interest, Nonblock::Flag, len)
    };
    c_result(blocking_io(call_info, move |attempt| {
        let mut flags = match attempt.nonblocking {
            true => flags | libc::MSG_DONTWAIT,
            false => flags,
        };
        if attempt.quiet && interest == Interest::Write {
            flags |= libc::MSG_NOSIGNAL;
        }
        call(flags, attempt.done)
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
    let ret = transfer(
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
    );
    if ret >= 0 {
        // SAFETY: the call succeeded, so the kernel wrote `msg`.
        unsafe { learn_received(msg) };
    }
    ret
}

/// Records the descriptors that came with received message `msg`
/// (`SCM_RIGHTS`) as created: the kernel installed them, where no hook
/// saw their numbers made, and a number may still carry the facts of a
/// file closed behind the hooks' back.
///
/// # Safety
/// `msg` is a header a successful receive wrote.
unsafe fn learn_received(msg: *const msghdr) {
    // SAFETY: per the contract.
    if unsafe { (*msg).msg_controllen } == 0 {
        return;
    }
    // SAFETY: per the contract, the kernel wrote `msg_controllen` bytes of
    // well-formed control messages at `msg_control`, which the CMSG macros
    // walk within.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<c_int>();
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..bytes / core::mem::size_of::<c_int>() {
                    on_created(data.add(i).read_unaligned(), None);
                }
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
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
    let ret = blocking_io(call, |_| {
        syscall!(libc::SYS_accept4, fd, addr, addrlen, flags)
    });
    if ret >= 0 {
        on_created(ret as c_int, descriptor::known_kind(fd));
        descriptor::learn_accepted(ret as c_int, fd, flags);
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
/// parks until the socket is writable; then one more connect call under a
/// hold ends it, as the blocking call ends its own wait. A Unix listener
/// with a full backlog is tried again until it has room, as the blocking
/// call waits. A send timeout bounds the whole call, and yields what Linux
/// gives then (EINPROGRESS, or EAGAIN for a full Unix backlog).
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
    // The user's mode and timeout as the call starts: the kernel's
    // blocking connect keeps them while it waits.
    let mut deadline: Option<Option<Instant>> = None;
    let mut retry = FIRST_RETRY;
    loop {
        let wait = FdWait::new(fd, entry, Interest::Write);
        let generation = wait.generation();
        let Some(kind) = descriptor::kind(fd, entry, generation).filter(|k| k.accepts()) else {
            // Not a connection (datagrams connect at once), or not open.
            return call();
        };
        let deadline = match deadline {
            Some(deadline) => deadline,
            None => {
                let view = descriptor::view(fd, entry, generation, kind);
                if view.nonblocking {
                    return call();
                }
                *deadline.insert(
                    view.send_timeout
                        .and_then(|t| Instant::now().checked_add(t)),
                )
            }
        };
        let Some(ret) = descriptor::held(fd, entry, generation, &call) else {
            continue;
        };
        match ret {
            // Started now; or started earlier by a non-blocking connect,
            // which a blocking one waits for (and times out with EALREADY).
            ret if ret == -(libc::EINPROGRESS as isize) || ret == -(libc::EALREADY as isize) => {
                return connected(fd, wait, entry, deadline, ret, &call);
            }
            ret if ret == -(libc::EAGAIN as isize) && kind != Kind::Tcp => {
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

/// Waits for a connection under way to finish, and returns its outcome, or
/// `timed_out` at the deadline. The socket stays "connecting" until a
/// connect call sees the connection finished (the blocking one does, in
/// its wait): connected, it says 0 and the socket is connected; closed, it
/// takes the error (ECONNABORTED if none) and the socket is unconnected
/// again. `SO_ERROR` would take the error and leave the socket connecting.
/// So once the socket is writable, one more `call` under a hold ends it.
fn connected(
    fd: c_int,
    mut wait: FdWait,
    entry: &'static crate::reactor::fd_table::FdEntry,
    deadline: Option<Instant>,
    timed_out: isize,
    call: impl Fn() -> isize,
) -> isize {
    loop {
        match wait_fd(&wait, deadline) {
            Outcome::Ready => {}
            Outcome::TimedOut => return timed_out,
            Outcome::Closed => return -(libc::EBADF as isize),
            Outcome::NotPollable => {
                let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                poll_one(fd, Interest::Write, remaining);
            }
        }
        wait = FdWait::new(fd, entry, Interest::Write);
        match descriptor::held(fd, entry, wait.generation(), &call) {
            // Still connecting (the wake-up was not the end).
            Some(ret) if ret == -(libc::EALREADY as isize) => {}
            // Another call ended the wait first and saw it connected; the
            // blocking call, woken, would have seen it connected too.
            Some(ret) if ret == -(libc::EISCONN as isize) => return 0,
            Some(ret) => return ret,
            // Closed or replaced meanwhile: the next wait says so.
            None => {}
        }
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
    let interest = match name {
        SO_RCVTIMEO_OLD | SO_RCVTIMEO_NEW => Some(Interest::Read),
        SO_SNDTIMEO_OLD | SO_SNDTIMEO_NEW => Some(Interest::Write),
        _ => None,
    };
    if level == libc::SOL_SOCKET && (interest.is_some() || name == libc::SO_RCVLOWAT) {
        if let (0, Some(interest)) = (ret, interest) {
            // Linux takes a negative timeout as zero (the call fails at
            // once), but reads it back as none; remember it. Both forms
            // are two 64-bit words here, which the kernel has just read.
            // SAFETY: as just said.
            let seconds = unsafe { *(value as *const i64) };
            descriptor::set_zero_timeout(fd, interest, seconds < 0);
        }
        // After the change; see `descriptor::settings_changed`.
        descriptor::settings_changed();
    }
    if level == libc::SOL_SOCKET && name == libc::SO_LINGER && ret == 0 {
        // SAFETY: the kernel has just read a `linger` there.
        let linger = unsafe { *(value as *const libc::linger) };
        // A negative time is a huge one to Linux (unsigned), not none.
        descriptor::set_lingers(fd, linger.l_onoff != 0 && linger.l_linger != 0);
    }
    c_result(ret) as c_int
}

/// Hooked: the shutdown may end waits that no readiness event reports (a
/// Unix socket shut down for sending, a datagram socket or a listener shut
/// down for receiving): the socket's waiters try their calls again.
///
/// # Safety
/// As `shutdown(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    let ret = syscall!(libc::SYS_shutdown, fd, how);
    if ret == 0 && !in_forked_child() {
        if let Some(entry) = FD_TABLE.peek(fd) {
            entry.shut_down(how != libc::SHUT_WR);
        }
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

/// A call on a vector of messages (`recvmmsg`, `sendmmsg`), which blocks
/// per message: for each, parks until one attempt (`call(first, count,
/// flags)`, for the messages from `first` on) moves at least one, until
/// all `count` moved, or one is enough (`MSG_WAITFORONE`). Returns the
/// messages moved, or the first attempt's error. After a message, an error
/// ends the call: `recvmmsg` leaves it for the next call (the kernel puts
/// it back), so a pending one is not taken; `sendmmsg` takes it.
fn per_message(
    fd: c_int,
    interest: Interest,
    count: c_uint,
    flags: c_int,
    call: impl Fn(c_uint, c_uint, c_int) -> isize,
) -> isize {
    let mut moved: c_uint = 0;
    while moved < count {
        let step = Call {
            moved_before: moved > 0 && interest == Interest::Read,
            ..Call::other(fd, interest, Nonblock::Flag)
        };
        let ret = blocking_io(step, |attempt| {
            let mut flags = flags;
            if attempt.nonblocking {
                flags |= libc::MSG_DONTWAIT;
            }
            if moved > 0 && interest == Interest::Write {
                flags |= libc::MSG_NOSIGNAL;
            }
            call(moved, count - moved, flags)
        });
        match ret {
            n if n > 0 => moved += n as c_uint,
            n if moved == 0 => return n,
            _ => break,
        }
        if flags & libc::MSG_WAITFORONE != 0 {
            break;
        }
    }
    moved as isize
}

/// Hooked: see [`per_message`]; with a timeout (whose rules are the
/// kernel's own), the call as made, on a helper thread.
///
/// # Safety
/// As `recvmmsg(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvmmsg(
    fd: c_int,
    messages: *mut libc::mmsghdr,
    count: c_uint,
    flags: c_int,
    timeout: *mut libc::timespec,
) -> c_int {
    let plain = || syscall!(libc::SYS_recvmmsg, fd, messages, count, flags, timeout);
    let ret = match () {
        _ if !in_coroutine() || flags & (libc::MSG_DONTWAIT | libc::MSG_ERRQUEUE) != 0 => plain(),
        // No message to wait for: the kernel still checks the descriptor.
        _ if count == 0 => plain(),
        _ if !timeout.is_null() => blocking::run_borrowed(plain),
        _ => per_message(fd, Interest::Read, count, flags, |first, left, flags| {
            let rest = messages.wrapping_add(first as usize);
            syscall!(libc::SYS_recvmmsg, fd, rest, left, flags, 0)
        }),
    };
    for i in 0..ret.max(0) as usize {
        // SAFETY: the call succeeded for its first `ret` messages, so the
        // kernel wrote their headers.
        unsafe { learn_received(&(*messages.add(i)).msg_hdr) };
    }
    c_result(ret) as c_int
}

/// Hooked: see [`per_message`].
///
/// # Safety
/// As `sendmmsg(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendmmsg(
    fd: c_int,
    messages: *mut libc::mmsghdr,
    count: c_uint,
    flags: c_int,
) -> c_int {
    // The kernel sends at most UIO_MAXIOV messages per call.
    let count = count.min(UIO_MAXIOV);
    let ret = match in_coroutine() && flags & libc::MSG_DONTWAIT == 0 && count > 0 {
        false => syscall!(libc::SYS_sendmmsg, fd, messages, count, flags),
        true => per_message(fd, Interest::Write, count, flags, |first, left, flags| {
            let rest = messages.wrapping_add(first as usize);
            syscall!(libc::SYS_sendmmsg, fd, rest, left, flags)
        }),
    };
    c_result(ret) as c_int
}
