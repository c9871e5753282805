//! Raw descriptor and socket calls for differential probes: integer and
//! timeout socket options, socket pairs, pipes, reads, writes, sends and
//! receives with flags, `splice` and `tee`, closing, Unix-path connects,
//! descriptors passed with `SCM_RIGHTS`, counting SIGPIPEs, and filling the
//! numbers below one. Each makes the libc call (so through the hooks) and
//! gives its result as plain data ([`Errno`], [`Bytes`]) where a case
//! compares it.

use std::os::fd::RawFd;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::differential::{bytes, c_outcome, Bytes, Errno};
use super::install_handler;

/// Closes a raw descriptor this test owns.
pub fn close(fd: RawFd) {
    // SAFETY: the caller owns `fd` and closes it once.
    unsafe { libc::close(fd) };
}

/// An integer socket option, read back.
pub fn int_opt(fd: RawFd, level: i32, name: i32) -> Result<i32, Errno> {
    let mut value: i32 = 0;
    let mut size = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: `value` and `size` are live and of the given size.
    let ret =
        unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut i32).cast(), &mut size) };
    c_outcome(ret).map(|_| value)
}

/// `SO_RCVTIMEO`/`SO_SNDTIMEO` read back through libc, in milliseconds.
pub fn timeout_opt_ms(fd: RawFd, name: i32) -> Result<u128, Errno> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut size = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: `tv` and `size` are live and of the given size.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&mut tv as *mut libc::timeval).cast(),
            &mut size,
        )
    };
    c_outcome(ret).map(|_| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000).as_millis())
}

/// A raw Unix socketpair of `kind` (flags included).
pub fn unix_socketpair(kind: i32) -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    let ret = unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) };
    assert_eq!(ret, 0, "socketpair: {}", std::io::Error::last_os_error());
    (fds[0], fds[1])
}

/// A new blocking Unix stream socket.
pub fn unix_stream_socket() -> RawFd {
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    fd
}

/// A `sockaddr_un` for `path`.
pub fn sockaddr_un(path: &Path) -> libc::sockaddr_un {
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (i, b) in path.as_os_str().as_encoded_bytes().iter().enumerate() {
        addr.sun_path[i] = *b as libc::c_char;
    }
    addr
}

/// A Unix stream listener at `path` with backlog 0 (one connection fits).
pub fn unix_listener(path: &Path) -> RawFd {
    // SAFETY: plain socket calls on a socket this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let addr = sockaddr_un(path);
        let ret = libc::bind(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        );
        assert_eq!(ret, 0, "bind: {}", std::io::Error::last_os_error());
        assert_eq!(libc::listen(fd, 0), 0);
        fd
    }
}

/// `connect(2)` of `fd` to the Unix path `path`, as data.
pub fn unix_connect(fd: RawFd, path: &Path) -> Result<i64, Errno> {
    let addr = sockaddr_un(path);
    // SAFETY: `addr` is a live sockaddr_un of the given size.
    c_outcome(unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    })
}

/// `send(2)` of `data` with `flags`, as data.
pub fn send_flags(fd: RawFd, data: &[u8], flags: i32) -> Result<i64, Errno> {
    // SAFETY: `data` is a live buffer of its length.
    c_outcome(unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), flags) } as i64)
}

/// Sends `data` on `fd` with the descriptors `passed` as `SCM_RIGHTS`.
pub fn send_fds(fd: RawFd, data: &[u8], passed: &[RawFd]) {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of_val(passed) as u32) } as usize;
    assert!(space <= std::mem::size_of_val(&control));
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives
    // the sendmsg, and the control buffer has room for the descriptors.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(passed) as u32) as usize;
        let out = libc::CMSG_DATA(cmsg).cast::<RawFd>();
        for (i, fd) in passed.iter().enumerate() {
            out.add(i).write_unaligned(*fd);
        }
        let sent = libc::sendmsg(fd, &msg, 0);
        assert_eq!(
            sent,
            data.len() as isize,
            "sendmsg: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// `recv(2)` of up to `len` bytes with `flags`, as data.
pub fn recv_len(fd: RawFd, len: usize, flags: i32) -> Result<Bytes, Errno> {
    let mut buf = vec![0u8; len];
    // SAFETY: `buf` is valid for `len` bytes.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), len, flags) };
    c_outcome(n as i64).map(|n| bytes(&buf[..(n as usize).min(len)]))
}

/// One `read(2)` of up to 64 bytes, as data.
pub fn read_once(fd: RawFd) -> Result<Bytes, Errno> {
    let mut buf = [0u8; 64];
    // SAFETY: `buf` is valid for 64 bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    c_outcome(n as i64).map(|n| bytes(&buf[..n as usize]))
}

/// The descriptors that the `SCM_RIGHTS` messages of a received `msg`
/// carry, in order (left open: the caller owns them).
///
/// # Safety
/// `msg` must be a header that `recvmsg` filled, with its control buffer
/// still live.
pub unsafe fn passed_fds(msg: &libc::msghdr) -> Vec<RawFd> {
    let mut fds = Vec::new();
    // SAFETY: per the caller's contract, the control messages walked are
    // the kernel's, within the control buffer.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let size = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                for i in 0..size / std::mem::size_of::<RawFd>() {
                    fds.push(data.add(i).read_unaligned());
                }
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    fds
}

/// One `recvmsg` on `fd` with `flags` into `buf`, with `control` as the
/// control buffer: the raw result and the header the kernel filled, whose
/// control pointer (for `CMSG_*` and [`passed_fds`]) is into `control`.
pub fn recvmsg_into(
    fd: RawFd,
    buf: &mut [u8],
    control: &mut [u64],
    flags: i32,
) -> (isize, libc::msghdr) {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid, and every pointer set outlives
    // the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(control);
    // SAFETY: as above.
    let n = unsafe { libc::recvmsg(fd, &mut msg, flags) };
    // The data buffer is the caller's; the iovec dies here.
    msg.msg_iov = std::ptr::null_mut();
    msg.msg_iovlen = 0;
    (n, msg)
}

/// SIGPIPEs counted by [`count_sigpipe`] in this process.
static SIGPIPES: AtomicI64 = AtomicI64::new(0);

/// A SIGPIPE handler that counts.
extern "C" fn count_sigpipe(_: libc::c_int) {
    SIGPIPES.fetch_add(1, Ordering::SeqCst);
}

/// SIGPIPEs `f` raised (a handler counts them meanwhile), and its value.
pub fn counting_sigpipes<T>(f: impl FnOnce() -> T) -> (T, i64) {
    install_handler(libc::SIGPIPE, count_sigpipe);
    let before = SIGPIPES.load(Ordering::SeqCst);
    let value = f();
    let raised = SIGPIPES.load(Ordering::SeqCst) - before;
    // SAFETY: restores the disposition the Rust runtime set.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    (value, raised)
}

/// A pipe (`pipe2` with `flags`, close-on-exec): (read end, write end).
pub fn pipe(flags: i32) -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), flags | libc::O_CLOEXEC) };
    assert_eq!(ret, 0, "pipe2: {}", std::io::Error::last_os_error());
    (fds[0], fds[1])
}

/// Closes raw descriptors this test owns.
pub fn close_all(fds: impl IntoIterator<Item = RawFd>) {
    for fd in fds {
        close(fd);
    }
}

/// One `write` of `data`, as data.
pub fn write_once(fd: RawFd, data: &[u8]) -> Result<i64, Errno> {
    // SAFETY: a write from a live buffer.
    c_outcome(unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) } as i64)
}

/// One `read` of up to `len` bytes, as data.
pub fn read_len(fd: RawFd, len: usize) -> Result<Bytes, Errno> {
    let mut buf = vec![0u8; len.max(1)];
    // SAFETY: `buf` is valid for `len` bytes.
    let n = c_outcome(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), len) } as i64)?;
    buf.truncate(n as usize);
    Ok(Bytes(buf))
}

/// `splice` without offsets, as data.
pub fn splice(from: RawFd, to: RawFd, len: usize, flags: u32) -> Result<i64, Errno> {
    let (none_in, none_out) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: no offsets; the kernel checks the descriptors.
    c_outcome(unsafe { libc::splice(from, none_in, to, none_out, len, flags) } as i64)
}

/// `tee`, as data.
pub fn tee(from: RawFd, to: RawFd, len: usize, flags: u32) -> Result<i64, Errno> {
    // SAFETY: plain descriptors and a length.
    c_outcome(unsafe { libc::tee(from, to, len, flags) } as i64)
}

/// Sets `SO_LINGER` on socket `fd`: on, for `seconds` (0: a close resets
/// the connection).
pub fn set_linger(fd: RawFd, seconds: i32) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: seconds,
    };
    // SAFETY: a live linger of the given size.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

/// Receives one byte and one passed descriptor on `stream`: the new
/// descriptor's number. The kernel installs it without any hook seeing it.
pub fn recv_fd(stream: RawFd) -> RawFd {
    let mut byte = [0u8; 1];
    let mut control = [0u64; 4];
    let (n, msg) = recvmsg_into(stream, &mut byte, &mut control, 0);
    assert_eq!(n, 1, "recvmsg: {}", std::io::Error::last_os_error());
    // SAFETY: the header `recvmsg` filled; `control` is live.
    let fds = unsafe { passed_fds(&msg) };
    *fds.first().expect("no descriptor came")
}

/// Opens /dev/null on every free number below `number`, so that the next
/// descriptor the kernel hands out is `number` once it is free.
pub fn fill_below(number: RawFd) -> Vec<RawFd> {
    let mut fillers = Vec::new();
    loop {
        // SAFETY: a NUL-terminated path.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
        assert!(fd >= 0);
        if fd > number {
            // SAFETY: ours, just opened.
            unsafe { libc::close(fd) };
            break;
        }
        fillers.push(fd);
    }
    fillers
}
