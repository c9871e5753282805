//! Differential probes of the hook layer's pass-through and errno promises:
//! every hooked call gives the same return value and the same `errno` (set
//! on failure, untouched on success, and what `io::Error::last_os_error`
//! reads) on a plain thread, in a coroutine with its own thread identity
//! and in one that shares its worker's. Where the call changes nothing,
//! the kernel's own answer (a raw `syscall` instruction, which no hook
//! sees) is the reference too.
//!
//! Covers the three changes of the hook layer's fast paths: errno written
//! at its offset from the thread pointer (threads, identities, signal
//! handlers, forked children, fresh processes, migrating coroutines),
//! `blocking_io`'s inline pass-through, and the futex hook's FUTEX_WAKE
//! first path (null, misaligned, unmapped and kernel words, odd counts and
//! op words, bitsets, shared wakes, and wakes in a forked child).

mod support;

use std::fmt::Debug;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier, Condvar, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use coroutines::Runtime;
use support::child::{child_case, rerun, wait_bounded};
use support::futex_table::futex;
use support::*;

/// A descriptor number that is never open.
const BAD_FD: i32 = 1_000_000;
/// What errno holds before each call: a value no call sets.
const MARK: i32 = 4242;
/// How long one environment of a probe may take.
const BOUND: Duration = Duration::from_secs(20);

const WAKE: i32 = libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG;
const WAIT: i32 = libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG;
const WAKE_BITSET: i32 = libc::FUTEX_WAKE_BITSET | libc::FUTEX_PRIVATE_FLAG;
const WAIT_BITSET: i32 = libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG;
/// An address in the kernel's half: the kernel answers EFAULT.
const KERNEL_ADDRESS: usize = 0xffff_8000_0000_0000;
/// The first address past user space (non-canonical).
const PAST_USER: usize = 0x0000_8000_0000_0000;

/// Where a probe runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Env {
    /// A plain OS thread: the hooks pass through.
    Thread,
    /// The root coroutine of a one-worker runtime, with its own identity.
    IdentityOn,
    /// The root coroutine of a one-worker runtime sharing its worker's.
    IdentityOff,
}

const COROUTINES: [Env; 2] = [Env::IdentityOn, Env::IdentityOff];

fn builder(env: Env, workers: usize) -> coroutines::runtime::Builder {
    Runtime::builder()
        .workers(workers)
        .thread_identity(env == Env::IdentityOn)
}

/// Runs `f` in `env` and returns its value (a panic is resumed; a hang
/// fails the test after [`BOUND`]).
fn in_env<T: Send + 'static>(env: Env, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let what = format!("{what} [{env:?}]");
    match env {
        Env::Thread => support::differential::on_plain_thread_within(&what, BOUND, f),
        _ => watchdog_on(&what, BOUND, builder(env, 1), f),
    }
}

/// Runs `case` on a plain thread and in coroutines with identity on and
/// off; asserts that all three give the same value, and returns it.
#[track_caller]
fn everywhere<T, F>(what: &str, case: F) -> T
where
    T: PartialEq + Debug + Send + 'static,
    F: Fn(Env) -> T + Send + Sync + 'static,
{
    let case = Arc::new(case);
    let run = |env: Env| {
        let case = case.clone();
        among_others(|| in_env(env, what, move || case(env)))
    };
    let reference = run(Env::Thread);
    for env in COROUTINES {
        let got = run(env);
        assert_eq!(
            got, reference,
            "{what}: {env:?} (left) differs from a plain thread (right)"
        );
    }
    reference
}

/// A call's result as C code sees it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Seen {
    ret: i64,
    errno: i32,
    last_os_error: i32,
}

impl Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = |e: i32| match e {
            MARK => "untouched".to_owned(),
            e => format!("{e} ({})", io::Error::from_raw_os_error(e)),
        };
        write!(
            f,
            "ret {} errno {} last_os_error {}",
            self.ret,
            name(self.errno),
            name(self.last_os_error)
        )
    }
}

/// Makes `call` with errno at [`MARK`]; what it returned and left.
fn seen(call: impl FnOnce() -> i64) -> Seen {
    set_errno(MARK);
    let ret = call();
    // SAFETY: the calling thread's errno slot.
    let errno = unsafe { *libc::__errno_location() };
    let last_os_error = io::Error::last_os_error().raw_os_error().unwrap();
    Seen {
        ret,
        errno,
        last_os_error,
    }
}

/// What libc's wrapper makes of a raw result, with errno at [`MARK`].
fn as_libc(raw: isize) -> Seen {
    match raw {
        raw if raw < 0 => Seen {
            ret: -1,
            errno: -raw as i32,
            last_os_error: -raw as i32,
        },
        raw => Seen {
            ret: raw as i64,
            errno: MARK,
            last_os_error: MARK,
        },
    }
}

/// A list of calls and what each gave, with the calls that differed from
/// the kernel's answer.
#[derive(Default, Debug, PartialEq)]
struct Report {
    seen: Vec<(String, Seen)>,
    against_kernel: Vec<String>,
}

impl Report {
    /// Records `call`.
    fn call(&mut self, what: &str, call: impl FnOnce() -> i64) -> Seen {
        let got = seen(call);
        self.seen.push((what.to_owned(), got));
        got
    }

    /// Records `call`, and compares it to the raw system call `nr` with
    /// `args`, made first: for calls that change nothing.
    fn vs_kernel(
        &mut self,
        what: &str,
        nr: libc::c_long,
        args: [usize; 6],
        call: impl FnOnce() -> i64,
    ) {
        // SAFETY: the caller passes the call's own arguments, for which
        // the kernel's answer is an error or a harmless result.
        let expected = as_libc(unsafe { kernel_syscall(nr, args) });
        let got = self.call(what, call);
        if got != expected {
            self.against_kernel
                .push(format!("{what}: hooked {got:?}, kernel {expected:?}"));
        }
    }
}

/// Runs `report` everywhere; asserts that no environment differed from
/// the kernel and that all agree.
#[track_caller]
fn everywhere_vs_kernel<F>(what: &str, report: F) -> Report
where
    F: Fn(Env) -> Report + Send + Sync + 'static,
{
    let report = Arc::new(report);
    let mut reference = None;
    let mut failures = Vec::new();
    for env in [Env::Thread, Env::IdentityOn, Env::IdentityOff] {
        let report = report.clone();
        let got = among_others(|| in_env(env, what, move || report(env)));
        failures.extend(
            got.against_kernel
                .iter()
                .map(|failure| format!("[{env:?}] {failure}")),
        );
        match &reference {
            None => reference = Some(got),
            Some(reference) => {
                for ((name, a), (_, b)) in got.seen.iter().zip(&reference.seen) {
                    if a != b {
                        failures.push(format!("[{env:?}] {name}: {a:?}, on a thread {b:?}"));
                    }
                }
                assert_eq!(got.seen.len(), reference.seen.len());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} call(s) differ:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    reference.unwrap()
}

fn pipe(flags: i32) -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    assert_eq!(
        unsafe { libc::pipe2(fds.as_mut_ptr(), flags | libc::O_CLOEXEC) },
        0
    );
    (fds[0], fds[1])
}

fn close(fd: RawFd) {
    // SAFETY: a descriptor the probe owns.
    unsafe { libc::close(fd) };
}

fn iov(buf: &mut [u8]) -> libc::iovec {
    libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }
}

fn msg(iov: &mut libc::iovec, count: usize) -> libc::msghdr {
    // SAFETY: an all-zero msghdr is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = count;
    msg
}

/// A user-space page that is not mapped.
fn unmapped_page() -> usize {
    // SAFETY: an anonymous mapping, then unmapped: its address stays
    // unmapped unless something maps there again (nothing in this probe).
    unsafe {
        let page = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(page, libc::MAP_FAILED);
        assert_eq!(libc::munmap(page, 4096), 0);
        page as usize
    }
}

/// The thread and both kinds of coroutine are what the probes think: with
/// identity on, two coroutines of one worker are two threads to std; off,
/// one.
#[test]
fn the_environments_are_as_configured() {
    let distinct = |env: Env| {
        in_env(env, "identities", || {
            let other = coroutines::spawn(|| thread::current().id()).join().unwrap();
            other != thread::current().id()
        })
    };
    assert!(
        distinct(Env::IdentityOn),
        "identity on: coroutines share a ThreadId"
    );
    assert!(
        !distinct(Env::IdentityOff),
        "identity off: coroutines have their own ThreadId"
    );
}

/// Failing read/write family calls, against the kernel: EBADF, ENOTSOCK,
/// EFAULT, EINVAL, EAGAIN; and the successful ones leave errno alone.
#[test]
fn read_write_family_errors_are_the_kernels() {
    everywhere_vs_kernel("read/write family", |_| {
        let mut r = Report::default();
        let mut buf = [0u8; 64];
        let b = buf.as_mut_ptr() as usize;
        let (pr, pw) = pipe(0);
        let (npr, npw) = pipe(libc::O_NONBLOCK);
        // SAFETY (all calls below): buffers are live for the stated
        // lengths, or deliberately bad pointers the kernel checks.
        unsafe {
            assert_eq!(libc::write(pw, b"data".as_ptr().cast(), 4), 4);
            let mut v = iov(&mut buf);
            let vp = &mut v as *mut libc::iovec as usize;
            r.vs_kernel(
                "read(BAD_FD)",
                libc::SYS_read,
                [BAD_FD as usize, b, 8, 0, 0, 0],
                || libc::read(BAD_FD, b as *mut _, 8) as i64,
            );
            r.vs_kernel(
                "write(BAD_FD)",
                libc::SYS_write,
                [BAD_FD as usize, b, 8, 0, 0, 0],
                || libc::write(BAD_FD, b as *const _, 8) as i64,
            );
            r.vs_kernel(
                "readv(BAD_FD)",
                libc::SYS_readv,
                [BAD_FD as usize, vp, 1, 0, 0, 0],
                || libc::readv(BAD_FD, vp as *const _, 1) as i64,
            );
            r.vs_kernel(
                "writev(BAD_FD)",
                libc::SYS_writev,
                [BAD_FD as usize, vp, 1, 0, 0, 0],
                || libc::writev(BAD_FD, vp as *const _, 1) as i64,
            );
            r.vs_kernel(
                "read(write end)",
                libc::SYS_read,
                [pw as usize, b, 8, 0, 0, 0],
                || libc::read(pw, b as *mut _, 8) as i64,
            );
            r.vs_kernel(
                "write(read end)",
                libc::SYS_write,
                [pr as usize, b, 8, 0, 0, 0],
                || libc::write(pr, b as *const _, 8) as i64,
            );
            r.vs_kernel(
                "read(pipe, bad buf)",
                libc::SYS_read,
                [pr as usize, 8, 4, 0, 0, 0],
                || libc::read(pr, 8 as *mut _, 4) as i64,
            );
            r.vs_kernel(
                "write(pipe, bad buf)",
                libc::SYS_write,
                [pw as usize, 8, 4, 0, 0, 0],
                || libc::write(pw, 8 as *const _, 4) as i64,
            );
            r.vs_kernel(
                "readv(pipe, NULL iov)",
                libc::SYS_readv,
                [pr as usize, 0, 1, 0, 0, 0],
                || libc::readv(pr, std::ptr::null(), 1) as i64,
            );
            r.vs_kernel(
                "writev(pipe, NULL iov)",
                libc::SYS_writev,
                [pw as usize, 0, 1, 0, 0, 0],
                || libc::writev(pw, std::ptr::null(), 1) as i64,
            );
            let minus_one = -1i64 as usize;
            r.vs_kernel(
                "readv(pipe, count -1)",
                libc::SYS_readv,
                [pr as usize, vp, minus_one, 0, 0, 0],
                || libc::readv(pr, vp as *const _, -1) as i64,
            );
            r.vs_kernel(
                "writev(pipe, count 1025)",
                libc::SYS_writev,
                [pw as usize, vp, 1025, 0, 0, 0],
                || libc::writev(pw, vp as *const _, 1025) as i64,
            );
            r.vs_kernel(
                "read(empty O_NONBLOCK pipe)",
                libc::SYS_read,
                [npr as usize, b, 8, 0, 0, 0],
                || libc::read(npr, b as *mut _, 8) as i64,
            );
            r.vs_kernel(
                "readv(empty O_NONBLOCK pipe)",
                libc::SYS_readv,
                [npr as usize, vp, 1, 0, 0, 0],
                || libc::readv(npr, vp as *const _, 1) as i64,
            );
            r.vs_kernel(
                "read(pipe, 0 bytes)",
                libc::SYS_read,
                [pr as usize, b, 0, 0, 0, 0],
                || libc::read(pr, b as *mut _, 0) as i64,
            );
            r.vs_kernel(
                "write(pipe, 0 bytes)",
                libc::SYS_write,
                [pw as usize, b, 0, 0, 0, 0],
                || libc::write(pw, b as *const _, 0) as i64,
            );
            r.vs_kernel(
                "readv(pipe, 0 iovecs)",
                libc::SYS_readv,
                [pr as usize, vp, 0, 0, 0, 0],
                || libc::readv(pr, vp as *const _, 0) as i64,
            );
            r.vs_kernel(
                "write(stdout, 0 bytes)",
                libc::SYS_write,
                [1, b, 0, 0, 0, 0],
                || libc::write(1, b as *const _, 0) as i64,
            );
            r.vs_kernel(
                "write(stderr, bad buf)",
                libc::SYS_write,
                [2, 8, 1, 0, 0, 0],
                || libc::write(2, 8 as *const _, 1) as i64,
            );
            r.vs_kernel(
                "writev(stderr, NULL iov)",
                libc::SYS_writev,
                [2, 0, 1, 0, 0, 0],
                || libc::writev(2, std::ptr::null(), 1) as i64,
            );
            // Successful transfers (they consume: compared between the
            // environments only).
            r.call("read(pipe with data)", || {
                libc::read(pr, b as *mut _, 2) as i64
            });
            let v2 = iov(&mut buf[..2]);
            r.call("readv(pipe with data)", || libc::readv(pr, &v2, 1) as i64);
            r.call("write(pipe)", || {
                libc::write(pw, b"ab".as_ptr().cast(), 2) as i64
            });
            r.call("writev(pipe)", || libc::writev(pw, &v2, 1) as i64);
            r.call("write(O_NONBLOCK pipe)", || {
                libc::write(npw, b"x".as_ptr().cast(), 1) as i64
            });
            // A pipe whose reader is gone (SIGPIPE is ignored in Rust
            // programs).
            close(pr);
            r.vs_kernel(
                "write(pipe, reader gone)",
                libc::SYS_write,
                [pw as usize, b, 4, 0, 0, 0],
                || libc::write(pw, b as *const _, 4) as i64,
            );
            r.vs_kernel(
                "writev(pipe, reader gone)",
                libc::SYS_writev,
                [pw as usize, vp, 1, 0, 0, 0],
                || libc::writev(pw, vp as *const _, 1) as i64,
            );
        }
        for fd in [pw, npr, npw] {
            close(fd);
        }
        r
    });
}

/// Failing socket calls, against the kernel.
#[test]
fn socket_family_errors_are_the_kernels() {
    everywhere_vs_kernel("socket family", |_| {
        let mut r = Report::default();
        let mut buf = [0u8; 64];
        let b = buf.as_mut_ptr() as usize;
        let (pr, pw) = pipe(0);
        let (ua, ub) = UnixStream::pair().unwrap();
        (&ub).write_all(b"hello").unwrap();
        let (client, _server) = tcp_pair();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let idle = TcpListener::bind("127.0.0.1:0").unwrap();
        idle.set_nonblocking(true).unwrap();
        let (sa, sb) = UnixStream::pair().unwrap();
        sa.shutdown(std::net::Shutdown::Write).unwrap();
        let unconnected = raw_tcp_socket();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (u, c, l, i, s, x, d) = (
            ua.as_raw_fd() as usize,
            client.as_raw_fd() as usize,
            listener.as_raw_fd() as usize,
            idle.as_raw_fd() as usize,
            sa.as_raw_fd() as usize,
            unconnected as usize,
            udp.as_raw_fd() as usize,
        );
        let sin = sockaddr_in(refused_addr());
        let sinp = &sin as *const libc::sockaddr_in as usize;
        let sinlen = std::mem::size_of::<libc::sockaddr_in>();
        let mut v = iov(&mut buf);
        let mut m = msg(&mut v, 1);
        let mp = &mut m as *mut libc::msghdr as usize;
        let mut big = msg(&mut v, 1025);
        let bigp = &mut big as *mut libc::msghdr as usize;
        let nosig = libc::MSG_NOSIGNAL as usize;
        let dontwait = libc::MSG_DONTWAIT as usize;
        let errqueue = libc::MSG_ERRQUEUE as usize;
        let zerocopy = libc::MSG_ZEROCOPY as usize;
        let bad = BAD_FD as usize;
        let (rf, sf, sm, rm, ac, cn) = (
            libc::SYS_recvfrom,
            libc::SYS_sendto,
            libc::SYS_sendmsg,
            libc::SYS_recvmsg,
            libc::SYS_accept4,
            libc::SYS_connect,
        );
        // SAFETY (all calls below): buffers and headers are live, or
        // deliberately bad pointers the kernel checks; every call fails or
        // moves nothing, except those marked.
        unsafe {
            let recvfrom = |fd: usize, buf: usize, len: usize, flags: usize| {
                libc::recvfrom(
                    fd as i32,
                    buf as *mut _,
                    len,
                    flags as i32,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                ) as i64
            };
            let sendto = |fd: usize, buf: usize, len: usize, flags: usize| {
                libc::sendto(
                    fd as i32,
                    buf as *const _,
                    len,
                    flags as i32,
                    std::ptr::null(),
                    0,
                ) as i64
            };
            for (name, fd) in [("BAD_FD", bad), ("pipe", pr as usize)] {
                r.vs_kernel(&format!("recv({name})"), rf, [fd, b, 8, 0, 0, 0], || {
                    libc::recv(fd as i32, b as *mut _, 8, 0) as i64
                });
                r.vs_kernel(
                    &format!("recvfrom({name})"),
                    rf,
                    [fd, b, 8, 0, 0, 0],
                    || recvfrom(fd, b, 8, 0),
                );
                r.vs_kernel(
                    &format!("recvmsg({name})"),
                    rm,
                    [fd, mp, 0, 0, 0, 0],
                    || libc::recvmsg(fd as i32, mp as *mut _, 0) as i64,
                );
                r.vs_kernel(
                    &format!("send({name})"),
                    sf,
                    [fd, b, 8, nosig, 0, 0],
                    || libc::send(fd as i32, b as *const _, 8, nosig as i32) as i64,
                );
                r.vs_kernel(
                    &format!("sendto({name})"),
                    sf,
                    [fd, b, 8, nosig, 0, 0],
                    || sendto(fd, b, 8, nosig),
                );
                r.vs_kernel(
                    &format!("sendmsg({name})"),
                    sm,
                    [fd, mp, nosig, 0, 0, 0],
                    || libc::sendmsg(fd as i32, mp as *const _, nosig as i32) as i64,
                );
                r.vs_kernel(
                    &format!("send({name}, MSG_ZEROCOPY)"),
                    sf,
                    [fd, b, 8, zerocopy, 0, 0],
                    || libc::send(fd as i32, b as *const _, 8, zerocopy as i32) as i64,
                );
                r.vs_kernel(
                    &format!("recv({name}, MSG_ERRQUEUE)"),
                    rf,
                    [fd, b, 8, errqueue, 0, 0],
                    || recvfrom(fd, b, 8, errqueue),
                );
                r.vs_kernel(&format!("accept({name})"), ac, [fd, 0, 0, 0, 0, 0], || {
                    libc::accept(fd as i32, std::ptr::null_mut(), std::ptr::null_mut()) as i64
                });
                r.vs_kernel(
                    &format!("accept4({name})"),
                    ac,
                    [fd, 0, 0, libc::SOCK_CLOEXEC as usize, 0, 0],
                    || {
                        libc::accept4(
                            fd as i32,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_CLOEXEC,
                        ) as i64
                    },
                );
                r.vs_kernel(
                    &format!("connect({name})"),
                    cn,
                    [fd, sinp, sinlen, 0, 0, 0],
                    || libc::connect(fd as i32, sinp as *const _, sinlen as u32) as i64,
                );
            }
            // EFAULT.
            r.vs_kernel(
                "recv(unix with data, NULL buf)",
                rf,
                [u, 0, 8, 0, 0, 0],
                || recvfrom(u, 0, 8, 0),
            );
            r.vs_kernel("recvmsg(unix, NULL msg)", rm, [u, 0, 0, 0, 0, 0], || {
                libc::recvmsg(u as i32, std::ptr::null_mut(), 0) as i64
            });
            r.vs_kernel("sendmsg(unix, NULL msg)", sm, [u, 0, 0, 0, 0, 0], || {
                libc::sendmsg(u as i32, std::ptr::null(), 0) as i64
            });
            r.vs_kernel("send(unix, bad buf)", sf, [u, 8, 8, nosig, 0, 0], || {
                sendto(u, 8, 8, nosig)
            });
            r.vs_kernel("connect(NULL addr)", cn, [x, 0, sinlen, 0, 0, 0], || {
                libc::connect(x as i32, std::ptr::null(), sinlen as u32) as i64
            });
            // EINVAL, EMSGSIZE, ENOTCONN, EDESTADDRREQ, EPIPE, EAGAIN.
            r.vs_kernel("connect(addrlen 0)", cn, [x, sinp, 0, 0, 0, 0], || {
                libc::connect(x as i32, sinp as *const _, 0) as i64
            });
            r.vs_kernel("accept(connected tcp)", ac, [c, 0, 0, 0, 0, 0], || {
                libc::accept(c as i32, std::ptr::null_mut(), std::ptr::null_mut()) as i64
            });
            r.vs_kernel(
                "accept(idle O_NONBLOCK listener)",
                ac,
                [i, 0, 0, 0, 0, 0],
                || libc::accept(i as i32, std::ptr::null_mut(), std::ptr::null_mut()) as i64,
            );
            r.vs_kernel("recv(listener)", rf, [l, b, 8, 0, 0, 0], || {
                recvfrom(l, b, 8, 0)
            });
            r.vs_kernel("recv(unconnected tcp)", rf, [x, b, 8, 0, 0, 0], || {
                recvfrom(x, b, 8, 0)
            });
            r.vs_kernel("send(unconnected tcp)", sf, [x, b, 8, nosig, 0, 0], || {
                sendto(x, b, 8, nosig)
            });
            r.vs_kernel("send(unconnected udp)", sf, [d, b, 8, 0, 0, 0], || {
                sendto(d, b, 8, 0)
            });
            r.vs_kernel(
                "sendmsg(1025 iovecs)",
                sm,
                [u, bigp, nosig, 0, 0, 0],
                || libc::sendmsg(u as i32, bigp as *const _, nosig as i32) as i64,
            );
            r.vs_kernel(
                "send(shut down, MSG_NOSIGNAL)",
                sf,
                [s, b, 8, nosig, 0, 0],
                || sendto(s, b, 8, nosig),
            );
            r.vs_kernel(
                "sendmsg(shut down, MSG_NOSIGNAL)",
                sm,
                [s, mp, nosig, 0, 0, 0],
                || libc::sendmsg(s as i32, mp as *const _, nosig as i32) as i64,
            );
            r.vs_kernel(
                "recv(tcp, MSG_DONTWAIT)",
                rf,
                [c, b, 8, dontwait, 0, 0],
                || recvfrom(c, b, 8, dontwait),
            );
            r.vs_kernel(
                "recv(tcp, MSG_ERRQUEUE)",
                rf,
                [c, b, 8, errqueue, 0, 0],
                || recvfrom(c, b, 8, errqueue),
            );
            r.vs_kernel("recv(tcp, 0 bytes)", rf, [c, b, 0, dontwait, 0, 0], || {
                recvfrom(c, b, 0, dontwait)
            });
            // Successful calls leave errno alone.
            r.call("recv(unix with data)", || recvfrom(u, b, 2, 0));
            r.call("recvmsg(unix with data)", || {
                v.iov_len = 2;
                libc::recvmsg(u as i32, mp as *mut _, 0) as i64
            });
            r.call("recv(unix with data, MSG_DONTWAIT)", || {
                recvfrom(u, b, 8, dontwait)
            });
            r.call("send(unix)", || sendto(u, b, 3, 0));
            r.call("sendmsg(unix)", || {
                libc::sendmsg(u as i32, mp as *const _, 0) as i64
            });
            r.call("send(tcp, MSG_ZEROCOPY without SO_ZEROCOPY)", || {
                sendto(c, b, 3, zerocopy)
            });
            r.call("send(tcp, MSG_DONTWAIT)", || sendto(c, b, 3, dontwait));
            r.call("connect(refused)", || {
                libc::connect(x as i32, sinp as *const _, sinlen as u32) as i64
            });
            let _connected = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            r.call("accept(pending)", || {
                let fd = libc::accept(l as i32, std::ptr::null_mut(), std::ptr::null_mut());
                close(fd);
                (fd >= 0) as i64
            });
        }
        drop(sb);
        for fd in [pr, pw, unconnected] {
            close(fd);
        }
        r
    });
}

/// `read` and `write` of more than `SSIZE_MAX` bytes: the kernel's
/// `read(2)`/`write(2)` check the range first (EFAULT); a hook that makes
/// the call as `preadv2`/`pwritev2` gets EINVAL for the iovec instead.
#[test]
fn read_and_write_of_more_than_ssize_max_fail_as_the_kernel_says() {
    everywhere_vs_kernel("read/write of > SSIZE_MAX bytes", |_| {
        let mut r = Report::default();
        let mut buf = [0u8; 64];
        let b = buf.as_mut_ptr() as usize;
        let (pr, pw) = pipe(0);
        let (ua, ub) = UnixStream::pair().unwrap();
        let u = ua.as_raw_fd();
        let huge = usize::MAX;
        let over = isize::MAX as usize + 1;
        // SAFETY: the kernel refuses these lengths before touching `buf`
        // (which has data waiting behind it, so nothing would block).
        unsafe {
            assert_eq!(libc::write(pw, b"data".as_ptr().cast(), 4), 4);
            (&ub).write_all(b"data").unwrap();
            for (name, len) in [("usize::MAX", huge), ("SSIZE_MAX + 1", over)] {
                r.vs_kernel(
                    &format!("read(pipe, {name})"),
                    libc::SYS_read,
                    [pr as usize, b, len, 0, 0, 0],
                    || libc::read(pr, b as *mut _, len) as i64,
                );
                r.vs_kernel(
                    &format!("write(pipe, {name})"),
                    libc::SYS_write,
                    [pw as usize, b, len, 0, 0, 0],
                    || libc::write(pw, b as *const _, len) as i64,
                );
                r.vs_kernel(
                    &format!("read(unix socket, {name})"),
                    libc::SYS_read,
                    [u as usize, b, len, 0, 0, 0],
                    || libc::read(u, b as *mut _, len) as i64,
                );
                r.vs_kernel(
                    &format!("write(unix socket, {name})"),
                    libc::SYS_write,
                    [u as usize, b, len, 0, 0, 0],
                    || libc::write(u, b as *const _, len) as i64,
                );
            }
        }
        close(pr);
        close(pw);
        r
    });
}

/// `sendmmsg`/`recvmmsg` of no messages still check the descriptor, and
/// `sendmmsg` sends at most `UIO_MAXIOV` (1024) messages per call.
#[test]
fn mmsg_calls_check_the_descriptor_and_clamp_as_the_kernel_does() {
    everywhere_vs_kernel("sendmmsg/recvmmsg", |_| {
        let mut r = Report::default();
        let (pr, pw) = pipe(0);
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.connect(sink.local_addr().unwrap()).unwrap();
        let mut byte = [7u8; 1];
        let mut v = iov(&mut byte);
        // SAFETY: an all-zero mmsghdr is valid.
        let mut msgs: Vec<libc::mmsghdr> =
            (0..1025).map(|_| unsafe { std::mem::zeroed() }).collect();
        for m in &mut msgs {
            m.msg_hdr.msg_iov = &mut v;
            m.msg_hdr.msg_iovlen = 1;
        }
        let mp = msgs.as_mut_ptr() as usize;
        // SAFETY: the messages are live; descriptors are bad or owned.
        unsafe {
            for (name, fd) in [("BAD_FD", BAD_FD), ("pipe", pr)] {
                r.vs_kernel(
                    &format!("sendmmsg({name}, 0 messages)"),
                    libc::SYS_sendmmsg,
                    [fd as usize, mp, 0, 0, 0, 0],
                    || libc::sendmmsg(fd, mp as *mut _, 0, 0) as i64,
                );
                r.vs_kernel(
                    &format!("recvmmsg({name}, 0 messages)"),
                    libc::SYS_recvmmsg,
                    [fd as usize, mp, 0, 0, 0, 0],
                    || libc::recvmmsg(fd, mp as *mut _, 0, 0, std::ptr::null_mut()) as i64,
                );
                r.vs_kernel(
                    &format!("sendmmsg({name}, 1 message)"),
                    libc::SYS_sendmmsg,
                    [fd as usize, mp, 1, 0, 0, 0],
                    || libc::sendmmsg(fd, mp as *mut _, 1, 0) as i64,
                );
            }
            let u = udp.as_raw_fd();
            r.call("sendmmsg(udp, 1025 messages)", || {
                libc::sendmmsg(u, mp as *mut _, 1025, 0) as i64
            });
        }
        close(pr);
        close(pw);
        r
    });
}

/// The futex hook's FUTEX_WAKE first path and the rest, against the
/// kernel: words the kernel rejects or cannot reach, odd counts, op words
/// with high bits, bitsets, shared wakes, waits that return at once.
#[test]
fn futex_calls_are_the_kernels() {
    everywhere_vs_kernel("futex", |_| {
        let mut r = Report::default();
        let word = AtomicU32::new(5);
        let w = word.as_ptr() as usize;
        let unmapped = unmapped_page();
        let zero = timespec(Duration::ZERO);
        let z = &zero as *const libc::timespec as usize;
        let bad_ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 2_000_000_000,
        };
        let bt = &bad_ts as *const libc::timespec as usize;
        let nr = libc::SYS_futex;
        let mut call = |what: &str, a: [usize; 6]| {
            r.vs_kernel(what, nr, a, || futex(a[0], a[1], a[2], a[3], a[4], a[5]));
        };
        let (wake, wait) = (WAKE as usize, WAIT as usize);
        let shared_wake = libc::FUTEX_WAKE as usize;
        let shared_wait = libc::FUTEX_WAIT as usize;
        for (name, at) in [
            ("word", w),
            ("null", 0),
            ("misaligned", w + 1),
            ("unmapped", unmapped),
            ("kernel address", KERNEL_ADDRESS),
            ("past user space", PAST_USER),
        ] {
            call(&format!("WAKE {name}"), [at, wake, 1, 0, 0, 0]);
            call(
                &format!("shared WAKE {name}"),
                [at, shared_wake, 1, 0, 0, 0],
            );
            call(
                &format!("WAKE_BITSET {name} bitset 0"),
                [at, WAKE_BITSET as usize, 1, 0, 0, 0],
            );
            call(
                &format!("WAKE_BITSET {name} bitset 1"),
                [at, WAKE_BITSET as usize, 1, 0, 0, 1],
            );
        }
        for val in [
            0usize,
            -1i64 as usize,
            i32::MIN as usize,
            u32::MAX as usize,
            (1 << 40) | 1,
        ] {
            call(&format!("WAKE val {val:#x}"), [w, wake, val, 0, 0, 0]);
        }
        call("WAKE op with bit 32 set", [w, (1 << 32) | wake, 1, 0, 0, 0]);
        call(
            "WAKE op with high bits set",
            [w, 0xdead_beef_0000_0000 | wake, 1, 0, 0, 0],
        );
        call(
            "WAKE | CLOCK_REALTIME",
            [w, wake | libc::FUTEX_CLOCK_REALTIME as usize, 1, 0, 0, 0],
        );
        call(
            "unknown op",
            [w, 99 | libc::FUTEX_PRIVATE_FLAG as usize, 1, 0, 0, 0],
        );
        call("WAIT, value differs", [w, wait, 6, 0, 0, 0]);
        call(
            "WAIT, value differs (high bits in val)",
            [w, wait, (1 << 32) | 6, 0, 0, 0],
        );
        call("WAIT null", [0, wait, 0, z, 0, 0]);
        call("WAIT misaligned", [w + 1, wait, 5, z, 0, 0]);
        // (Not a WAIT on an unmapped or kernel word: in a coroutine the
        // hook reads the word itself and faults, a documented limitation.)
        call("WAIT zero timeout", [w, wait, 5, z, 0, 0]);
        call("WAIT malformed timeout", [w, wait, 5, bt, 0, 0]);
        call("WAIT unreadable timeout", [w, wait, 5, 8, 0, 0]);
        call(
            "WAIT_BITSET bitset 0",
            [w, WAIT_BITSET as usize, 5, z, 0, 0],
        );
        call(
            "WAIT_BITSET past deadline",
            [w, WAIT_BITSET as usize, 5, z, 0, u32::MAX as usize],
        );
        call(
            "WAIT_BITSET bitset 1 past deadline",
            [w, WAIT_BITSET as usize, 5, z, 0, 1],
        );
        call(
            "WAIT_BITSET realtime past deadline",
            [
                w,
                (WAIT_BITSET | libc::FUTEX_CLOCK_REALTIME) as usize,
                5,
                z,
                0,
                u32::MAX as usize,
            ],
        );
        call(
            "WAIT_BITSET value differs",
            [w, WAIT_BITSET as usize, 6, 0, 0, u32::MAX as usize],
        );
        call("shared WAIT value differs", [w, shared_wait, 6, 0, 0, 0]);
        call("shared WAIT zero timeout", [w, shared_wait, 5, z, 0, 0]);
        call(
            "REQUEUE",
            [
                w,
                (libc::FUTEX_REQUEUE | libc::FUTEX_PRIVATE_FLAG) as usize,
                1,
                1,
                w + 4,
                0,
            ],
        );
        call(
            "CMP_REQUEUE value differs",
            [
                w,
                (libc::FUTEX_CMP_REQUEUE | libc::FUTEX_PRIVATE_FLAG) as usize,
                1,
                1,
                w + 4,
                6,
            ],
        );
        r
    });
}

/// Waiters that are kernel threads: a wake of 0 or a negative count wakes
/// one, as the kernel does, whether the waker is a thread or a coroutine;
/// a shared wake wakes a shared waiter.
#[test]
fn futex_wake_counts_of_kernel_waiters() {
    fn is_asleep(tid: libc::pid_t) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        stat[stat.rfind(')').unwrap() + 1..]
            .trim_start()
            .starts_with('S')
    }
    let got = everywhere("futex wake counts", |_| {
        let word: &'static AtomicU32 = Box::leak(Box::new(AtomicU32::new(0)));
        let w = word.as_ptr() as usize;
        let mut counts = Vec::new();
        for (op, val) in [
            (WAKE, 0usize),
            (WAKE, -1i64 as usize),
            (WAKE, i32::MIN as usize),
            (WAKE, 2),
            (libc::FUTEX_WAKE, 1),
            (WAKE_BITSET, 0),
        ] {
            let shared = op & libc::FUTEX_PRIVATE_FLAG == 0;
            let wait_op = if shared { libc::FUTEX_WAIT } else { WAIT } as usize;
            let woken = Arc::new(AtomicU64::new(0));
            let tids = Arc::new(Mutex::new(Vec::new()));
            let waiters: Vec<_> = (0..3)
                .map(|_| {
                    let (woken, tids) = (woken.clone(), tids.clone());
                    thread::spawn(move || {
                        // SAFETY: gettid has no preconditions.
                        tids.lock().unwrap().push(unsafe { libc::gettid() });
                        // A raw wait: blocks this thread in the kernel.
                        // SAFETY: a live word; no timeout.
                        let ret =
                            unsafe { kernel_syscall(libc::SYS_futex, [w, wait_op, 0, 0, 0, 0]) };
                        assert!(ret == 0 || ret == -(libc::EAGAIN as isize), "{ret}");
                        woken.fetch_add(1, Ordering::SeqCst);
                    })
                })
                .collect();
            let deadline = Instant::now() + Duration::from_secs(5);
            while tids.lock().unwrap().len() < 3
                || !tids.lock().unwrap().iter().all(|&t| is_asleep(t))
            {
                assert!(Instant::now() < deadline, "the waiters never slept");
                thread::sleep(Duration::from_millis(1));
            }
            // Asleep in the futex, not elsewhere: give them a moment more.
            thread::sleep(Duration::from_millis(20));
            let bitset = if op == WAKE_BITSET {
                u32::MAX as usize
            } else {
                0
            };
            let s = seen(|| futex(w, op as usize, val, 0, 0, bitset));
            let deadline = Instant::now() + Duration::from_millis(300);
            while woken.load(Ordering::SeqCst) < s.ret.max(0) as u64 && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
            }
            thread::sleep(Duration::from_millis(30));
            let after = woken.load(Ordering::SeqCst);
            // Release the rest.
            word.store(1, Ordering::SeqCst);
            // SAFETY: a live word; wakes everybody of either kind.
            unsafe {
                kernel_syscall(
                    libc::SYS_futex,
                    [w, WAKE as usize, i32::MAX as usize, 0, 0, 0],
                );
                kernel_syscall(
                    libc::SYS_futex,
                    [w, libc::FUTEX_WAKE as usize, i32::MAX as usize, 0, 0, 0],
                );
            }
            for waiter in waiters {
                waiter.join().unwrap();
            }
            word.store(0, Ordering::SeqCst);
            counts.push((op, val as i64, s, after));
        }
        counts
    });
    for (op, val, s, after) in got {
        let expected = if val == 2 { 2 } else { 1 };
        assert_eq!(
            (s.ret, s.errno),
            (expected, MARK),
            "op {op} val {val}: {s:?}"
        );
        assert_eq!(after, expected as u64, "op {op} val {val}: waiters woken");
    }
}

/// A signal handler that makes failing and succeeding hooked calls sees
/// the kernel's errno inside; a handler that saves and restores errno
/// leaves the interrupted code's; one that does not leaves its own, as on
/// a thread, except in a coroutine with its own identity (handlers run on
/// the worker's identity: see `hooks/signal.rs` and identity_signals.rs).
#[test]
fn errno_in_and_after_signal_handlers() {
    static SIGNALS: Mutex<()> = Mutex::new(());
    static PIPE_WRITER: AtomicI32 = AtomicI32::new(-1);
    static RESTORE: AtomicBool = AtomicBool::new(true);
    static INSIDE: Mutex<Vec<Seen>> = Mutex::new(Vec::new());
    extern "C" fn handler(_: libc::c_int) {
        // SAFETY: the errno slot of the thread the handler runs on.
        let saved = unsafe { *libc::__errno_location() };
        let mut inside = Vec::new();
        let word = AtomicU32::new(0);
        // SAFETY: a bad descriptor, a live pipe and a live futex word.
        unsafe {
            inside.push(seen(|| libc::read(BAD_FD, std::ptr::null_mut(), 1) as i64));
            let fd = PIPE_WRITER.load(Ordering::SeqCst);
            inside.push(seen(|| libc::write(fd, b"s".as_ptr().cast(), 1) as i64));
            inside.push(seen(|| {
                futex(word.as_ptr() as usize + 1, WAKE as usize, 1, 0, 0, 0)
            }));
            inside.push(seen(|| {
                futex(word.as_ptr() as usize, WAKE as usize, 1, 0, 0, 0)
            }));
            inside.push(seen(|| {
                futex(word.as_ptr() as usize, WAIT as usize, 1, 0, 0, 0)
            }));
            inside.push(seen(|| libc::send(BAD_FD, std::ptr::null(), 1, 0) as i64));
        }
        if let Ok(mut slot) = INSIDE.try_lock() {
            *slot = inside;
        }
        // End on a failing call, then restore or not.
        // SAFETY: a bad descriptor.
        unsafe { libc::close(BAD_FD) };
        if RESTORE.load(Ordering::SeqCst) {
            // SAFETY: as above.
            unsafe { *libc::__errno_location() = saved };
        }
    }
    let _one = SIGNALS.lock().unwrap_or_else(|e| e.into_inner());
    // SIGUSR1 is this test's.
    install_handler(libc::SIGUSR1, handler);
    let (pr, pw) = pipe(libc::O_NONBLOCK);
    PIPE_WRITER.store(pw, Ordering::SeqCst);
    let mut results = Vec::new();
    for restore in [true, false] {
        for env in [Env::Thread, Env::IdentityOn, Env::IdentityOff] {
            RESTORE.store(restore, Ordering::SeqCst);
            INSIDE.lock().unwrap().clear();
            let after = in_env(env, "signal", move || {
                set_errno(MARK);
                // SAFETY: raises a handled signal on this kernel thread:
                // delivered before raise returns.
                let ret = unsafe { libc::raise(libc::SIGUSR1) };
                // SAFETY: the calling thread's errno slot.
                (ret, unsafe { *libc::__errno_location() })
            });
            let inside = std::mem::take(&mut *INSIDE.lock().unwrap());
            results.push((restore, env, after, inside));
        }
    }
    close(pr);
    close(pw);
    let expected_inside = vec![
        as_libc(-(libc::EBADF as isize)),
        as_libc(1),
        as_libc(-(libc::EINVAL as isize)),
        as_libc(0),
        as_libc(-(libc::EAGAIN as isize)),
        as_libc(-(libc::EBADF as isize)),
    ];
    for (restore, env, after, inside) in results {
        assert_eq!(
            inside, expected_inside,
            "inside the handler [{env:?}, restore {restore}]"
        );
        let expected = match (restore, env) {
            (true, _) => MARK,
            // The documented difference: the handler ran on the worker's
            // identity, whose errno is not the coroutine's.
            (false, Env::IdentityOn) => MARK,
            (false, _) => libc::EBADF,
        };
        assert_eq!(
            after,
            (0, expected),
            "errno after raise [{env:?}, restore {restore}]"
        );
    }
}

/// Threads started before and after the first failing hooked call of a
/// fresh process (errno's offset is learned then), and threads failing
/// calls at once, each see their own errno.
#[test]
fn errno_per_thread_in_a_fresh_process() {
    if child_case().as_deref() == Some("fresh") {
        let check = |i: i32| {
            let mut buf = [0u8; 4];
            set_errno(i);
            // SAFETY: a live buffer; a bad descriptor.
            let failed = seen(|| unsafe { libc::read(BAD_FD, buf.as_mut_ptr().cast(), 4) } as i64);
            assert_eq!(failed, as_libc(-(libc::EBADF as isize)), "thread {i}");
            set_errno(i);
            // SAFETY: a live word.
            let ret = futex(
                &AtomicU32::new(0) as *const AtomicU32 as usize,
                WAKE as usize,
                1,
                0,
                0,
                0,
            );
            assert_eq!((ret, errno()), (0, i), "thread {i} after a wake");
            // SAFETY: as above.
            let ret = unsafe { libc::write(BAD_FD, buf.as_ptr().cast(), 4) };
            assert_eq!((ret, errno()), (-1, libc::EBADF), "thread {i}");
        };
        let start = Arc::new(Barrier::new(5));
        let early: Vec<_> = (0..4)
            .map(|i| {
                let start = start.clone();
                thread::spawn(move || {
                    // (Not errno across the wait: std's futex waits may
                    // leave EAGAIN, on any thread.)
                    start.wait();
                    check(100 + i);
                })
            })
            .collect();
        // The first failing hooked call of this process (as far as this
        // test can tell).
        check(1);
        start.wait();
        for thread in early {
            thread.join().unwrap();
        }
        let late: Vec<_> = (0..4)
            .map(|i| thread::spawn(move || check(200 + i)))
            .collect();
        for thread in late {
            thread.join().unwrap();
        }
        let runtime = Runtime::builder().workers(2).build().unwrap();
        runtime.block_on(move || {
            let handles: Vec<_> = (0..8)
                .map(|i| coroutines::spawn(move || check(300 + i)))
                .collect();
            for handle in handles {
                handle.join().unwrap();
            }
        });
        println!("fresh process: ok");
        return;
    }
    let child = rerun("fresh").spawn().unwrap();
    let (output, ended) = wait_bounded(child, BOUND);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        ended && output.status.success() && stdout.contains("fresh process: ok"),
        "child: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The first parks of a fresh process, made at once by coroutines on
/// several workers, leave errno alone: a `thread::sleep` that succeeds
/// sets no errno, on a thread or in a coroutine. (The runtime's first park
/// initialises a `OnceLock`; a coroutine that finds another initialising
/// it waits on std's `Once`, whose futex wait may fail with EAGAIN, into
/// the coroutine's errno.) The race is per process: many child processes,
/// each of which rarely loses it (about one in ten with identity on).
#[test]
fn the_first_parks_of_a_process_leave_errno_alone() {
    const CHILDREN: usize = 160;
    if let Some(case) = child_case() {
        let identity = case == "IdentityOn";
        let runtime = builder(
            if identity {
                Env::IdentityOn
            } else {
                Env::IdentityOff
            },
            4,
        )
        .build()
        .unwrap();
        let changed = runtime.block_on(|| {
            let go = Arc::new(AtomicBool::new(false));
            let ready = Arc::new(AtomicU64::new(0));
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    let (go, ready) = (go.clone(), ready.clone());
                    coroutines::spawn(move || {
                        ready.fetch_add(1, Ordering::SeqCst);
                        // Yields, not parks, until all are ready.
                        while !go.load(Ordering::Acquire) {
                            coroutines::yield_now();
                        }
                        set_errno(MARK);
                        thread::sleep(Duration::from_micros(1));
                        errno()
                    })
                })
                .collect();
            while ready.load(Ordering::SeqCst) < 16 {
                coroutines::yield_now();
            }
            go.store(true, Ordering::Release);
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|&e| e != MARK)
                .collect::<Vec<_>>()
        });
        println!("\nerrno changed: {changed:?}");
        return;
    }
    let mut changed = Vec::new();
    for n in 0..CHILDREN {
        let env = if n % 2 == 0 {
            Env::IdentityOn
        } else {
            Env::IdentityOff
        };
        let child = rerun(&format!("{env:?}")).spawn().unwrap();
        let (output, ended) = wait_bounded(child, BOUND);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("errno changed: "));
        assert!(
            ended && line.is_some(),
            "[{env:?}] child: {}\n{stdout}",
            output.status
        );
        if line != Some("[]") {
            changed.push(format!("[{env:?}] {}", line.unwrap()));
        }
    }
    assert!(
        changed.is_empty(),
        "{} of {CHILDREN} processes had coroutines whose first, successful sleep changed errno: {changed:?}",
        changed.len()
    );
}

/// A child forked from a thread and from coroutines with identity on and
/// off: its hooked calls set errno and leave it alone as libc does, on its
/// only thread and on threads it starts, and its futex wakes are the
/// kernel's.
#[test]
fn errno_and_futex_wakes_in_a_forked_child() {
    let got = everywhere("forked child", |_| {
        let (pr, pw) = pipe(0);
        set_errno(MARK);
        // SAFETY: the child only makes calls and exits with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // A successful fork leaves errno alone in the child too.
            let at_fork = i32::from(errno() != MARK);
            let failures = at_fork + fork_child_checks(pw);
            let on_thread = thread::spawn(move || fork_child_checks(pw))
                .join()
                .unwrap_or(99);
            // SAFETY: ends the child without running the parent's exit
            // handlers.
            unsafe { libc::_exit(failures * 10 + on_thread) };
        }
        let after_fork = errno();
        let mut status = 0;
        // SAFETY: waits for our child.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        close(pr);
        close(pw);
        (
            pid > 0,
            after_fork,
            waited == pid,
            libc::WIFEXITED(status),
            libc::WEXITSTATUS(status),
        )
    });
    assert_eq!(
        got,
        (true, MARK, true, true, 0),
        "fork: (forked, errno after, waited, exited, code)"
    );
}

/// The checks a forked child makes; the number that failed (written to
/// stderr).
fn fork_child_checks(pw: RawFd) -> i32 {
    let word = AtomicU32::new(5);
    let w = word.as_ptr() as usize;
    let mut failures = 0;
    let mut expect = |what: &str, got: Seen, expected: Seen| {
        if got != expected {
            failures += 1;
            eprintln!("forked child: {what}: {got:?}, want {expected:?}");
        }
    };
    // SAFETY: a bad descriptor, a live pipe and buffer, a live word.
    unsafe {
        let s = seen(|| libc::read(BAD_FD, std::ptr::null_mut(), 1) as i64);
        expect("read(BAD_FD)", s, as_libc(-(libc::EBADF as isize)));
        let s = seen(|| libc::write(pw, b"x".as_ptr().cast(), 1) as i64);
        expect("write(pipe)", s, as_libc(1));
        for (what, a) in [
            ("WAKE word", [w, WAKE as usize, 1, 0, 0, 0]),
            ("WAKE misaligned", [w + 1, WAKE as usize, 1, 0, 0, 0]),
            (
                "WAKE kernel address",
                [KERNEL_ADDRESS, WAKE as usize, 1, 0, 0, 0],
            ),
            (
                "WAKE_BITSET bitset 0",
                [w, WAKE_BITSET as usize, 1, 0, 0, 0],
            ),
            ("WAIT value differs", [w, WAIT as usize, 6, 0, 0, 0]),
        ] {
            let expected = as_libc(kernel_syscall(libc::SYS_futex, a));
            let s = seen(|| futex(a[0], a[1], a[2], a[3], a[4], a[5]));
            expect(what, s, expected);
        }
    }
    // std::sync in the child.
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let other = {
        let pair = pair.clone();
        thread::spawn(move || {
            *pair.0.lock().unwrap() = true;
            pair.1.notify_all();
        })
    };
    let mut ready = pair.0.lock().unwrap();
    while !*ready {
        ready = pair.1.wait(ready).unwrap();
    }
    drop(ready);
    other.join().unwrap();
    failures
}

/// A failing `fork` sets errno, in a coroutine as on a thread. The fork is
/// made to fail (EAGAIN) by a seccomp filter on the calling kernel thread,
/// in a child process of the test so that nothing else sees the filter.
#[test]
fn a_failing_fork_sets_errno() {
    if let Some(case) = child_case() {
        let env = match case.as_str() {
            "Thread" => Env::Thread,
            "IdentityOn" => Env::IdentityOn,
            _ => Env::IdentityOff,
        };
        let got = in_env(env, "failing fork", || {
            refuse_forks_on_this_kernel_thread();
            seen(|| {
                // SAFETY: the filter makes the fork fail: no child.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    // SAFETY: a child, if the filter failed: leave at once.
                    unsafe { libc::_exit(0) };
                }
                pid as i64
            })
        });
        println!("\nfork seen: {got:?}");
        return;
    }
    let mut seen_by = Vec::new();
    for env in [Env::Thread, Env::IdentityOn, Env::IdentityOff] {
        let child = rerun(&format!("{env:?}")).spawn().unwrap();
        let (output, ended) = wait_bounded(child, BOUND);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let line = stdout
            .lines()
            .find_map(|line| line.strip_prefix("fork seen: "))
            .map(str::to_owned);
        assert!(
            ended && line.is_some(),
            "[{env:?}] child: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        seen_by.push((env, line.unwrap()));
    }
    let expected = format!("{:?}", as_libc(-(libc::EAGAIN as isize)));
    for (env, line) in &seen_by {
        assert_eq!(line, &expected, "[{env:?}] a fork refused with EAGAIN");
    }
}

/// Installs a seccomp filter on the calling kernel thread that fails
/// `clone` without `CLONE_THREAD` (a fork) with EAGAIN.
fn refuse_forks_on_this_kernel_thread() {
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let stmt = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u16, k: u32, jt: u8, jf: u8| libc::sock_filter { code, jt, jf, k };
    let ld_w_abs = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let jeq_k = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let jset_k = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    let ret_k = (libc::BPF_RET | libc::BPF_K) as u16;
    let program = [
        stmt(ld_w_abs, 0),                             // nr
        jump(jeq_k, libc::SYS_clone as u32, 0, 3),     // clone?
        stmt(ld_w_abs, 16),                            // flags, low word
        jump(jset_k, libc::CLONE_THREAD as u32, 1, 0), // a thread?
        stmt(ret_k, RET_ERRNO | libc::EAGAIN as u32),  // a fork: EAGAIN
        stmt(ret_k, RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: a valid filter program; no_new_privs first.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog
            ),
            0,
            "seccomp: {}",
            io::Error::last_os_error()
        );
    }
}

/// errno of coroutines that share their worker's identity follows them
/// when work stealing moves them between workers, across parks, yields
/// and failing calls.
#[test]
fn errno_moves_with_a_migrating_coroutine_without_identity() {
    let (moves, checks) = watchdog_on(
        "migrating errno",
        BOUND,
        builder(Env::IdentityOff, 2)
            .work_stealing(true)
            .blocked_worker_threshold(Duration::from_millis(5))
            .blocked_worker_warnings(false),
        || {
            // The first park of the process may meet a race of its own
            // (see the_first_parks_of_a_process_leave_errno_alone).
            thread::sleep(Duration::from_millis(1));
            let handles: Vec<_> = (1..=16)
                .map(|i: i32| {
                    coroutines::spawn(move || {
                        // SAFETY: gettid has no preconditions.
                        let tid = || unsafe { libc::gettid() };
                        let mut last = tid();
                        let (mut moves, mut checks) = (0u64, 0u64);
                        let deadline = Instant::now() + Duration::from_secs(3);
                        while checks < 40 || (moves == 0 && Instant::now() < deadline) {
                            let mut buf = [0u8; 1];
                            let expected = match checks % 3 {
                                0 => {
                                    set_errno(i);
                                    i
                                }
                                // SAFETY: a bad descriptor, a live buffer.
                                1 => unsafe {
                                    assert_eq!(libc::read(BAD_FD, buf.as_mut_ptr().cast(), 1), -1);
                                    libc::EBADF
                                },
                                _ => {
                                    set_errno(1000 + i);
                                    1000 + i
                                }
                            };
                            thread::sleep(Duration::from_micros(200));
                            // Now and then long enough for the monitor to
                            // move the coroutines queued behind this one.
                            let hog = if checks % 8 == 7 { 10_000 } else { 300 };
                            compute(Duration::from_micros(hog));
                            if checks % 2 == 0 {
                                coroutines::yield_now();
                            }
                            assert_eq!(errno(), expected, "coroutine {i}, check {checks}");
                            if tid() != last {
                                moves += 1;
                                last = tid();
                            }
                            checks += 1;
                        }
                        (moves, checks)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .fold((0, 0), |(m, c), (a, b)| (m + a, c + b))
        },
    );
    assert!(moves > 0, "no coroutine moved ({checks} checks)");
}

/// std::sync between threads and coroutines (identity on and off), with
/// every unlock and notify through the FUTEX_WAKE first path.
#[test]
fn std_sync_between_threads_and_coroutines() {
    for env in COROUTINES {
        watchdog_on("std::sync", BOUND, builder(env, 2), move || {
            const ROUNDS: u64 = 2000;
            let counter = Arc::new(Mutex::new(0u64));
            let rw = Arc::new(RwLock::new(0u64));
            let barrier = Arc::new(Barrier::new(4));
            let bump = |counter: Arc<Mutex<u64>>, rw: Arc<RwLock<u64>>, barrier: Arc<Barrier>| {
                move || {
                    barrier.wait();
                    for n in 0..ROUNDS {
                        *counter.lock().unwrap() += 1;
                        if n % 10 == 0 {
                            *rw.write().unwrap() += 1;
                        } else {
                            let _ = *rw.read().unwrap();
                        }
                    }
                    barrier.wait();
                }
            };
            let threads: Vec<_> = (0..2)
                .map(|_| thread::spawn(bump(counter.clone(), rw.clone(), barrier.clone())))
                .collect();
            let coros: Vec<_> = (0..2)
                .map(|_| coroutines::spawn(bump(counter.clone(), rw.clone(), barrier.clone())))
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            for c in coros {
                c.join().unwrap();
            }
            assert_eq!(*counter.lock().unwrap(), 4 * ROUNDS, "{env:?}: Mutex");
            assert_eq!(*rw.read().unwrap(), 4 * ROUNDS / 10, "{env:?}: RwLock");
            // Condvar ping-pong between a thread and a coroutine.
            let turn = Arc::new((Mutex::new(0u64), Condvar::new()));
            let other = {
                let turn = turn.clone();
                thread::spawn(move || {
                    for n in 0..200 {
                        let mut t = turn.0.lock().unwrap();
                        while *t != 2 * n + 1 {
                            t = turn.1.wait(t).unwrap();
                        }
                        *t += 1;
                        turn.1.notify_all();
                    }
                })
            };
            for n in 0..200 {
                let mut t = turn.0.lock().unwrap();
                while *t != 2 * n {
                    t = turn.1.wait(t).unwrap();
                }
                *t += 1;
                turn.1.notify_all();
            }
            other.join().unwrap();
            // mpsc and park/unpark, both ways.
            let (to_thread, from_coroutine) = mpsc::channel::<u64>();
            let (to_coroutine, from_thread) = mpsc::sync_channel::<u64>(0);
            let me = thread::current();
            let echo = thread::spawn(move || {
                for n in from_coroutine {
                    to_coroutine.send(n + 1).unwrap();
                }
                me.unpark();
            });
            for n in 0..200 {
                to_thread.send(n).unwrap();
                assert_eq!(from_thread.recv().unwrap(), n + 1);
            }
            drop(to_thread);
            let unparked = Instant::now();
            while !echo.is_finished() && unparked.elapsed() < Duration::from_secs(5) {
                thread::park_timeout(Duration::from_millis(10));
            }
            echo.join().unwrap();
        });
    }
}

/// A failing call's errno survives a neighbour's failing calls across a
/// park in both identity modes, and `io::Error::last_os_error` reads it;
/// failed and successful std I/O give the same errors everywhere.
#[test]
fn std_io_errors_are_the_same_everywhere() {
    let got = everywhere("std io errors", |env| {
        let (mut a, b) = UnixStream::pair().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let clobbers = Arc::new(AtomicI64::new(0));
        let neighbour = {
            let (stop, clobbers) = (stop.clone(), clobbers.clone());
            let work = move || {
                let mut buf = [0u8; 1];
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: a bad descriptor.
                    unsafe { libc::read(BAD_FD, buf.as_mut_ptr().cast(), 1) };
                    clobbers.fetch_add(1, Ordering::Relaxed);
                    thread::sleep(Duration::from_millis(1));
                }
            };
            match env {
                Env::Thread => support::differential::Side::Thread.spawn(work),
                _ => support::differential::Side::Coroutine.spawn(work),
            }
        };
        let writer = after(Duration::from_millis(50), move || {
            (&b).write_all(b"x").unwrap();
            drop(b);
        });
        let mut buf = [0u8; 4];
        let first = a.read(&mut buf).map_err(|e| e.raw_os_error());
        let eof = a.read(&mut buf).map_err(|e| e.raw_os_error());
        writer.join().unwrap();
        // A write to a peer that is gone: EPIPE (SIGPIPE is ignored).
        let epipe = a.write(b"y").map_err(|e| e.raw_os_error());
        set_errno(MARK);
        // SAFETY: a bad descriptor, no buffer needed.
        let failed = unsafe { libc::recv(BAD_FD, std::ptr::null_mut(), 0, 0) };
        thread::sleep(Duration::from_millis(20));
        let kept = io::Error::last_os_error().raw_os_error();
        stop.store(true, Ordering::Relaxed);
        neighbour.join();
        assert!(clobbers.load(Ordering::Relaxed) > 0);
        (first, eof, epipe, failed, kept)
    });
    assert_eq!(
        got,
        (Ok(1), Ok(0), Err(Some(libc::EPIPE)), -1, Some(libc::EBADF))
    );
}
