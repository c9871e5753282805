//! Round O probes: one descriptor (one open file description) shared by
//! coroutines and plain threads at the same time. What the coroutine side
//! does (holds of O_NONBLOCK for accept, connect and splice attempts) must
//! never show in a plain thread's results, and what a thread does must not
//! change a coroutine's call other than as it would change a thread's.
//!
//! Each case runs differentially: the "other party" (`side.spawn`) is a
//! thread beside a thread and a coroutine beside a coroutine, while the
//! victim is a plain OS thread on both sides (or a party of the side).

mod support;

use std::collections::HashSet;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::differential::*;
use support::raw::{close, close_all, pipe, send_fds, splice, unix_socketpair, write_once};
use support::*;

const EAGAIN: i32 = libc::EAGAIN;

/// How long the splicing party keeps going in the hold-leak cases.
const RUN: Duration = Duration::from_millis(400);

/// What a plain thread's blocking calls saw that a blocking call on a
/// blocking descriptor never gives: EAGAIN, a short count, other errors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Odd {
    eagain: u64,
    short: u64,
    other: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pair {
    Tcp,
    Unix,
}

fn socket_pair(pair: Pair) -> (RawFd, RawFd) {
    match pair {
        Pair::Tcp => {
            let (c, s) = tcp_pair();
            (c.into_raw_fd(), s.into_raw_fd())
        }
        Pair::Unix => unix_socketpair(libc::SOCK_STREAM | libc::SOCK_CLOEXEC),
    }
}

/// The other party: until `stop`, moves 512-byte pieces from a pipe of its
/// own into socket `c` with `splice` (a coroutine's attempt holds `c`'s
/// description O_NONBLOCK). Returns the bytes moved.
fn splice_into(c: RawFd, stop: Arc<AtomicBool>) -> u64 {
    splice_into_paced(c, stop, Duration::ZERO)
}

/// As [`splice_into`], pausing `pause` after each piece.
fn splice_into_paced(c: RawFd, stop: Arc<AtomicBool>, pause: Duration) -> u64 {
    let (r, w) = pipe(0);
    let mut moved = 0u64;
    let piece = [b'x'; 512];
    while !stop.load(Ordering::SeqCst) {
        write_once(w, &piece).unwrap();
        let mut left = piece.len();
        while left > 0 {
            match splice(r, c, left, 0) {
                Ok(n) => {
                    left -= n as usize;
                    moved += n as u64;
                }
                // The user made the socket non-blocking (the toggling
                // cases): as on a thread.
                Err(Errno(EAGAIN)) => thread::sleep(Duration::from_micros(50)),
                Err(e) => panic!("splice into the socket: {e:?}"),
            }
        }
        if !pause.is_zero() {
            thread::sleep(pause);
        }
    }
    close_all([r, w]);
    moved
}

/// How a plain thread reads or writes the shared socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Recv,
    Read,
    Send,
    Write,
}

fn do_op(op: Op, fd: RawFd, buf: &mut [u8]) -> isize {
    // SAFETY: `buf` is live for its length.
    unsafe {
        match op {
            Op::Recv => libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0),
            Op::Read => libc::read(fd, buf.as_mut_ptr().cast(), buf.len()),
            Op::Send => libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL),
            Op::Write => libc::write(fd, buf.as_ptr().cast(), buf.len()),
        }
    }
}

fn shut(fd: RawFd, how: i32) {
    // SAFETY: shutdown of a live socket.
    unsafe { libc::shutdown(fd, how) };
}

/// A plain thread reads socket `c` with blocking `op` calls until the end
/// of the stream, while the side's party splices into `c` (through a `dup`
/// of it when `dup` is set) and a plain echo thread sends everything the
/// peer `s` receives back to `c`. On a thread every read waits for bytes.
/// Returns what the reads saw, and whether every byte came back.
fn reader_beside_splicer(side: Side, pair: Pair, op: Op, dup: bool) -> (Odd, bool) {
    let (c, s) = socket_pair(pair);
    // SAFETY: dup of a live descriptor.
    let spliced_fd = if dup { unsafe { libc::dup(c) } } else { c };
    let echo = thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            // SAFETY: `buf` is live.
            let n = unsafe { libc::recv(s, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                break;
            }
            total += n as u64;
            let mut off = 0;
            while off < n as usize {
                // SAFETY: as above.
                let m = unsafe {
                    libc::send(
                        s,
                        buf[off..].as_ptr().cast(),
                        n as usize - off,
                        libc::MSG_NOSIGNAL,
                    )
                };
                assert!(m > 0, "echo send: {}", std::io::Error::last_os_error());
                off += m as usize;
            }
        }
        shut(s, libc::SHUT_WR);
        total
    });
    let victim = thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut odd = Odd::default();
        let mut total = 0u64;
        let start = Instant::now();
        loop {
            let n = do_op(op, c, &mut buf);
            match n {
                0 => break,
                n if n > 0 => total += n as u64,
                _ if errno() == EAGAIN => {
                    odd.eagain += 1;
                    thread::sleep(Duration::from_micros(50));
                }
                _ => odd.other += 1,
            }
            if start.elapsed() > Duration::from_secs(20) {
                break;
            }
        }
        (odd, total)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let party = side.spawn({
        let stop = stop.clone();
        move || splice_into(spliced_fd, stop)
    });
    thread::sleep(RUN);
    stop.store(true, Ordering::SeqCst);
    let spliced = party.join();
    shut(c, libc::SHUT_WR);
    let echoed = echo.join().unwrap();
    let (odd, read) = victim.join().unwrap();
    if odd != Odd::default() {
        eprintln!("{pair:?} {op:?} dup={dup}: {odd:?} over {spliced} spliced bytes");
    }
    if dup {
        close(spliced_fd);
    }
    close_all([c, s]);
    (odd, spliced == echoed && echoed == read)
}

/// A plain thread writes socket `c` with blocking `op` calls of 16 KiB
/// for a while, while the side's party splices into the same socket and a
/// plain thread drains the peer. On a thread a blocking write on a
/// blocking socket always writes everything.
fn writer_beside_splicer(side: Side, pair: Pair, op: Op, run: Duration) -> (Odd, bool) {
    let (c, s) = socket_pair(pair);
    if pair == Pair::Tcp {
        set_int_opt(c, libc::SOL_SOCKET, libc::SO_SNDBUF, 8192);
        set_int_opt(s, libc::SOL_SOCKET, libc::SO_RCVBUF, 8192);
    } else {
        set_int_opt(c, libc::SOL_SOCKET, libc::SO_SNDBUF, 8192);
    }
    let drain = thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        let mut total = 0u64;
        loop {
            // SAFETY: `buf` is live.
            let n = unsafe { libc::recv(s, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    let stop = Arc::new(AtomicBool::new(false));
    let party = side.spawn({
        let stop = stop.clone();
        move || splice_into(c, stop)
    });
    let victim = thread::spawn(move || {
        let mut buf = vec![b'v'; 16 * 1024];
        let mut odd = Odd::default();
        let mut total = 0u64;
        let start = Instant::now();
        while start.elapsed() < run {
            let n = do_op(op, c, &mut buf);
            match n {
                n if n == buf.len() as isize => total += n as u64,
                n if n >= 0 => {
                    odd.short += 1;
                    total += n as u64;
                }
                _ if errno() == EAGAIN => {
                    odd.eagain += 1;
                    thread::sleep(Duration::from_micros(50));
                }
                _ => odd.other += 1,
            }
        }
        (odd, total)
    });
    let (odd, written) = victim.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    let spliced = party.join();
    shut(c, libc::SHUT_WR);
    let drained = drain.join().unwrap();
    if odd != Odd::default() {
        eprintln!("{pair:?} {op:?}: {odd:?} over {spliced} spliced bytes");
    }
    close_all([c, s]);
    (odd, drained == written + spliced)
}

// ---------------------------------------------------------------------------
// A coroutine's splice hold and a plain thread's reads and writes
// ---------------------------------------------------------------------------

#[test]
#[ignore = "known limit (coroutines/docs/troubleshooting.md): a coroutine's splice holds the socket non-blocking for each attempt, which a plain thread's call on it at that instant sees"]
fn plain_thread_recv_on_tcp_while_a_coroutine_splices_into_it() {
    differential("thread recv beside splice (tcp)", |side| {
        reader_beside_splicer(side, Pair::Tcp, Op::Recv, false)
    });
}

#[test]
#[ignore = "known limit (coroutines/docs/troubleshooting.md): a coroutine's splice holds the socket non-blocking for each attempt, which a plain thread's call on it at that instant sees"]
fn plain_thread_read_on_tcp_dup_while_a_coroutine_splices_into_it() {
    differential("thread read beside splice (tcp, dup)", |side| {
        reader_beside_splicer(side, Pair::Tcp, Op::Read, true)
    });
}

#[test]
#[ignore = "known limit (coroutines/docs/troubleshooting.md): a coroutine's splice holds the socket non-blocking for each attempt, which a plain thread's call on it at that instant sees"]
fn plain_thread_recv_on_unix_stream_while_a_coroutine_splices_into_it() {
    differential("thread recv beside splice (unix)", |side| {
        reader_beside_splicer(side, Pair::Unix, Op::Recv, false)
    });
}

#[test]
#[ignore = "known limit (coroutines/docs/troubleshooting.md): a coroutine's splice holds the socket non-blocking for each attempt, which a plain thread's call on it at that instant sees"]
fn plain_thread_send_on_tcp_while_a_coroutine_splices_into_it() {
    differential("thread send beside splice (tcp)", |side| {
        writer_beside_splicer(side, Pair::Tcp, Op::Send, RUN * 5)
    });
}

#[test]
#[ignore = "known limit (coroutines/docs/troubleshooting.md): a coroutine's splice holds the socket non-blocking for each attempt, which a plain thread's call on it at that instant sees"]
fn plain_thread_write_on_unix_stream_while_a_coroutine_splices_into_it() {
    differential("thread write beside splice (unix)", |side| {
        writer_beside_splicer(side, Pair::Unix, Op::Write, RUN)
    });
}

// ---------------------------------------------------------------------------
// A coroutine's call made as is on a helper thread, beside another
// coroutine's holds
// ---------------------------------------------------------------------------

/// `recvmmsg` with a timeout, made as is on a helper thread: a coroutine
/// reads its socket with it (one message, blocking) while another party
/// splices into the same socket. On threads the blocking `recvmmsg` never
/// fails with EAGAIN.
#[test]
#[ignore = "known limit (coroutines/docs/troubleshooting.md): a coroutine's splice holds the socket non-blocking for each attempt, which a plain thread's call on it at that instant sees"]
fn coroutine_recvmmsg_with_timeout_beside_a_splicer_on_the_same_socket() {
    differential_on(2, "recvmmsg with timeout beside splice", |side| {
        let (c, s) = socket_pair(Pair::Unix);
        let echo = thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                // SAFETY: `buf` is live.
                let n = unsafe { libc::recv(s, buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n <= 0 {
                    break;
                }
                let mut off = 0;
                while off < n as usize {
                    // SAFETY: as above.
                    let m =
                        unsafe { libc::send(s, buf[off..].as_ptr().cast(), n as usize - off, 0) };
                    assert!(m > 0);
                    off += m as usize;
                }
            }
            shut(s, libc::SHUT_WR);
        });
        let victim = side.spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut odd = Odd::default();
            loop {
                let mut iov = libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: buf.len(),
                };
                // SAFETY: zeroed headers are valid; iov is live.
                let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
                msg.msg_hdr.msg_iov = &mut iov;
                msg.msg_hdr.msg_iovlen = 1;
                let mut timeout = timespec(Duration::from_secs(5));
                // SAFETY: one live header, a live timeout.
                let n = unsafe { libc::recvmmsg(c, &mut msg, 1, 0, &mut timeout) };
                match n {
                    1 if msg.msg_len == 0 => break,
                    1 => {}
                    _ if errno() == EAGAIN => {
                        odd.eagain += 1;
                        thread::sleep(Duration::from_micros(50));
                    }
                    _ => odd.other += 1,
                }
            }
            odd
        });
        let stop = Arc::new(AtomicBool::new(false));
        let party = side.spawn({
            let stop = stop.clone();
            move || splice_into(c, stop)
        });
        thread::sleep(RUN * 3);
        stop.store(true, Ordering::SeqCst);
        party.join();
        shut(c, libc::SHUT_WR);
        echo.join().unwrap();
        let odd = victim.join();
        close_all([c, s]);
        odd
    });
}

// ---------------------------------------------------------------------------
// Timeouts of calls that `thread_call` repeats
// ---------------------------------------------------------------------------

/// The other party: splices into a TCP socket of its own until `stop`
/// (a coroutine's attempts hold that socket: holds elsewhere in the
/// process).
fn splice_elsewhere(stop: Arc<AtomicBool>) {
    let (c, s) = socket_pair(Pair::Tcp);
    let drain = thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        // SAFETY: `buf` is live.
        while unsafe { libc::recv(s, buf.as_mut_ptr().cast(), buf.len(), 0) } > 0 {}
    });
    // One small splice a millisecond: holds now and then, little load.
    let (r, w) = pipe(0);
    while !stop.load(Ordering::SeqCst) {
        write_once(w, b"ping").unwrap();
        splice(r, c, 4, 0).unwrap();
        thread::sleep(Duration::from_millis(1));
    }
    close_all([r, w]);
    shut(c, libc::SHUT_WR);
    drain.join().unwrap();
    close_all([c, s]);
}

/// How long a call that should end at `timeout` took: about it (within
/// half of it), or much later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Took {
    AboutTimeout,
    Early,
    MuchLater,
}

fn took<T>(timeout: Duration, f: impl FnOnce() -> T) -> (T, Took) {
    let start = Instant::now();
    let value = f();
    let elapsed = start.elapsed();
    eprintln!("took {elapsed:?} against {timeout:?}");
    let bucket = if elapsed + Duration::from_millis(10) < timeout {
        Took::Early
    } else if elapsed < timeout * 3 / 2 {
        Took::AboutTimeout
    } else {
        Took::MuchLater
    };
    (value, bucket)
}

/// A plain thread's blocking `accept` on a listener with `SO_RCVTIMEO` of
/// 200 ms, nobody connecting, while the other party splices into an
/// unrelated socket: it fails with EAGAIN at its timeout.
#[test]
fn plain_thread_accept_timeout_beside_holds_elsewhere() {
    let got = differential_exclusive("accept timeout beside holds elsewhere", |side| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let l = listener.as_raw_fd();
        let timeout = Duration::from_millis(200);
        set_timeout_opt(l, libc::SO_RCVTIMEO, timeout);
        let stop = Arc::new(AtomicBool::new(false));
        let party = side.spawn({
            let stop = stop.clone();
            move || splice_elsewhere(stop)
        });
        thread::sleep(Duration::from_millis(20));
        let results = thread::spawn(move || {
            (0..3)
                .map(|_| {
                    took(timeout, || {
                        // SAFETY: null address arguments are allowed.
                        let fd =
                            unsafe { libc::accept(l, std::ptr::null_mut(), std::ptr::null_mut()) };
                        c_outcome(fd)
                    })
                })
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap();
        stop.store(true, Ordering::SeqCst);
        party.join();
        drop(listener);
        results
    });
    assert_eq!(got[0], (Err(Errno(EAGAIN)), Took::AboutTimeout));
}

/// A coroutine's `recv` with MSG_WAITALL on a Unix stream with
/// `SO_RCVTIMEO` of 200 ms runs as made on a helper thread (through
/// `thread_call`); nobody sends, and another party splices into an
/// unrelated socket meanwhile: EAGAIN at the timeout.
#[test]
fn waitall_recv_timeout_on_a_helper_beside_holds_elsewhere() {
    let got = differential_exclusive("waitall recv timeout beside holds elsewhere", |side| {
        let (a, b) = socket_pair(Pair::Unix);
        let timeout = Duration::from_millis(200);
        set_timeout_opt(a, libc::SO_RCVTIMEO, timeout);
        let stop = Arc::new(AtomicBool::new(false));
        let party = side.spawn({
            let stop = stop.clone();
            move || splice_elsewhere(stop)
        });
        thread::sleep(Duration::from_millis(20));
        let results: Vec<_> = (0..3)
            .map(|_| {
                took(timeout, || {
                    support::raw::recv_len(a, 16, libc::MSG_WAITALL).map(|b| b.0.len())
                })
            })
            .collect();
        stop.store(true, Ordering::SeqCst);
        party.join();
        close_all([a, b]);
        results
    });
    assert_eq!(got[0], (Err(Errno(EAGAIN)), Took::AboutTimeout));
}

// ---------------------------------------------------------------------------
// A listener shared by plain threads and coroutines
// ---------------------------------------------------------------------------

/// Three plain threads and three parties of the side (on two workers)
/// accept on one blocking listener while a plain thread makes 300
/// connections: every connection is accepted exactly once, no accept
/// fails before the listener is shut down, and the shutdown ends them all.
#[test]
fn listener_shared_by_threads_and_coroutines_accepts_each_connection_once() {
    differential_on(2, "shared listener", |side| {
        const N: usize = 300;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let l = listener.as_raw_fd();
        let seen = Arc::new(Mutex::new(Vec::<u16>::new()));
        let acceptor = {
            let seen = seen.clone();
            move || {
                let mut errors = Vec::new();
                loop {
                    // SAFETY: a zeroed sockaddr_in of the given size.
                    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                    // SAFETY: live address and length.
                    let fd = unsafe {
                        libc::accept(l, (&mut addr as *mut libc::sockaddr_in).cast(), &mut len)
                    };
                    if fd >= 0 {
                        seen.lock().unwrap().push(u16::from_be(addr.sin_port));
                        close(fd);
                        continue;
                    }
                    match errno() {
                        libc::EINVAL => break,
                        e => errors.push(e),
                    }
                    if errors.len() > 1000 {
                        break;
                    }
                }
                errors
            }
        };
        let threads: Vec<_> = (0..3).map(|_| thread::spawn(acceptor.clone())).collect();
        let parties: Vec<_> = (0..3).map(|_| side.spawn(acceptor.clone())).collect();
        let connector = thread::spawn(move || {
            let mut ports = Vec::new();
            let mut streams = Vec::new();
            for i in 0..N {
                let s = TcpStream::connect(addr).unwrap();
                ports.push(s.local_addr().unwrap().port());
                streams.push(s);
                if i % 16 == 0 {
                    thread::sleep(Duration::from_micros(200));
                }
            }
            ports
        });
        let ports = connector.join().unwrap();
        let start = Instant::now();
        while seen.lock().unwrap().len() < N && start.elapsed() < Duration::from_secs(3) {
            thread::sleep(Duration::from_millis(5));
        }
        shut(l, libc::SHUT_RD);
        let mut errors: Vec<i32> = Vec::new();
        for t in threads {
            errors.extend(t.join().unwrap());
        }
        for p in parties {
            errors.extend(p.join());
        }
        drop(listener);
        let seen = seen.lock().unwrap().clone();
        let unique: HashSet<u16> = seen.iter().copied().collect();
        let expected: HashSet<u16> = ports.into_iter().collect();
        (
            seen.len(),
            unique == expected,
            errors.iter().map(|&e| Errno(e)).collect::<Vec<_>>(),
        )
    });
}

// ---------------------------------------------------------------------------
// The user's mode changed by a plain thread while coroutines hold
// ---------------------------------------------------------------------------

/// A plain thread sets O_NONBLOCK on and off (F_SETFL, then FIONBIO) on a
/// socket many times while the other party splices into it (a coroutine's
/// attempts hold it), checking each time that F_GETFL gives what it just
/// set; it ends on `last`. Afterwards the kernel has the user's last mode.
fn toggler_beside_splicer(side: Side, last: bool, fionbio: bool) -> (u64, bool) {
    let (c, s) = socket_pair(Pair::Tcp);
    let drain = thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        // SAFETY: `buf` is live.
        while unsafe { libc::recv(s, buf.as_mut_ptr().cast(), buf.len(), 0) } > 0 {}
    });
    let stop = Arc::new(AtomicBool::new(false));
    let party = side.spawn({
        let stop = stop.clone();
        move || splice_into(c, stop)
    });
    let mismatches = thread::spawn(move || {
        let base = flags(c) & !libc::O_NONBLOCK;
        let mut mismatches = 0u64;
        let start = Instant::now();
        let mut on = false;
        while start.elapsed() < RUN || on != last {
            on = !on;
            if fionbio {
                let mut arg: libc::c_int = on as libc::c_int;
                // SAFETY: FIONBIO with a live int.
                unsafe { libc::ioctl(c, libc::FIONBIO, &mut arg) };
            } else {
                let wanted = if on { base | libc::O_NONBLOCK } else { base };
                // SAFETY: F_SETFL on a live descriptor.
                unsafe { libc::fcntl(c, libc::F_SETFL, wanted) };
            }
            if (flags(c) & libc::O_NONBLOCK != 0) != on {
                mismatches += 1;
            }
        }
        mismatches
    })
    .join()
    .unwrap();
    // Let the party finish as the user left the mode; EAGAIN from a
    // splice into a non-blocking socket is expected: stop first.
    stop.store(true, Ordering::SeqCst);
    party.join();
    let final_nonblock = kernel_flags(c) & libc::O_NONBLOCK != 0;
    shut(c, libc::SHUT_WR);
    drain.join().unwrap();
    close_all([c, s]);
    (mismatches, final_nonblock == last)
}

#[test]
fn f_setfl_toggled_by_a_thread_during_holds_ends_blocking() {
    differential("F_SETFL toggles during holds, last off", |side| {
        toggler_beside_splicer(side, false, false)
    });
}

#[test]
fn f_setfl_toggled_by_a_thread_during_holds_ends_nonblocking() {
    differential("F_SETFL toggles during holds, last on", |side| {
        toggler_beside_splicer(side, true, false)
    });
}

#[test]
fn fionbio_toggled_by_a_thread_during_holds_ends_blocking() {
    differential("FIONBIO toggles during holds, last off", |side| {
        toggler_beside_splicer(side, false, true)
    });
}

#[test]
fn fionbio_toggled_by_a_thread_during_holds_ends_nonblocking() {
    differential("FIONBIO toggles during holds, last on", |side| {
        toggler_beside_splicer(side, true, true)
    });
}

// ---------------------------------------------------------------------------
// Descriptors passed between coroutines and threads
// ---------------------------------------------------------------------------

fn recv_one_fd(fd: RawFd) -> (Bytes, Vec<RawFd>) {
    let mut buf = [0u8; 16];
    let mut control = [0u64; 8];
    let (n, msg) = support::raw::recvmsg_into(fd, &mut buf, &mut control, libc::MSG_CMSG_CLOEXEC);
    assert!(n >= 0, "recvmsg: {}", std::io::Error::last_os_error());
    // SAFETY: recvmsg filled `msg`, whose control buffer is live.
    let fds = unsafe { support::raw::passed_fds(&msg) };
    (bytes(&buf[..n as usize]), fds)
}

/// A party of the side makes a pipe (and a socket pair), passes the
/// reading ends to a plain thread over a Unix socket and closes its own;
/// the thread reads them blocking (a late writer), passes them back and
/// closes its copies; the party reads them blocking again. Fifty rounds,
/// so numbers closed on one side come back on the other.
#[test]
fn descriptors_passed_between_a_party_and_a_plain_thread_block_on_both() {
    differential("SCM_RIGHTS round trips", |side| {
        let (ua, ub) = unix_socketpair(libc::SOCK_STREAM | libc::SOCK_CLOEXEC);
        let thread = thread::spawn(move || {
            let mut seen = Vec::new();
            loop {
                let (data, fds) = recv_one_fd(ub);
                if data.0 == b"end" {
                    break;
                }
                // The writer acts late: each read waits.
                let results: Vec<_> = fds
                    .iter()
                    .map(|&fd| timed(|| support::raw::read_len(fd, 64)))
                    .collect();
                seen.push(results);
                send_fds(ub, b"back", &fds);
                close_all(fds);
            }
            seen
        });
        let party = side.spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..50 {
                let (r, w) = pipe(0);
                let (sa, sb) = unix_socketpair(libc::SOCK_STREAM | libc::SOCK_CLOEXEC);
                send_fds(ua, b"fds", &[r, sa]);
                close_all([r, sa]);
                let first = thread::spawn(move || {
                    thread::sleep(Duration::from_millis(5));
                    write_once(w, b"one").unwrap();
                    write_once(sb, b"two").unwrap();
                });
                let (data, fds) = recv_one_fd(ua);
                assert_eq!(data.0, b"back");
                first.join().unwrap();
                let second = thread::spawn(move || {
                    thread::sleep(Duration::from_millis(5));
                    write_once(w, b"three").unwrap();
                    write_once(sb, b"four").unwrap();
                });
                let results: Vec<_> = fds
                    .iter()
                    .map(|&fd| timed(|| support::raw::read_len(fd, 64)).0)
                    .collect();
                seen.push(results);
                second.join().unwrap();
                close_all(fds);
                close_all([w, sb]);
            }
            send_fds(ua, b"end", &[]);
            seen
        });
        let mine = party.join();
        let theirs = thread.join().unwrap();
        close_all([ua, ub]);
        // The waits are about 5 ms: bucket them as waited or not.
        let theirs: Vec<Vec<_>> = theirs
            .into_iter()
            .map(|round| round.into_iter().map(|(r, _)| r).collect())
            .collect();
        (mine, theirs)
    });
}

// ---------------------------------------------------------------------------
// FIONBIO(0) from a plain thread while coroutines accept
// ---------------------------------------------------------------------------

/// Parties of the side accept on a blocking listener with `SO_RCVTIMEO`
/// of 150 ms, nobody connecting, while a plain thread keeps setting the
/// mode the user already has (`FIONBIO` 0). Every accept fails with
/// EAGAIN at about its timeout. (In a coroutine, `set_user_mode` lets the
/// kernel's flag go for an instant while a hold is on: an attempt that
/// starts then blocks the worker for the kernel's timeout.)
#[test]
fn fionbio_zero_from_a_thread_while_parties_accept() {
    let got = differential_exclusive("FIONBIO 0 while accepting", |side| {
        mode_hammer_beside_acceptors(side, true)
    });
    assert_eq!(got, (0, vec![], false));
}

/// The control of the case above: the same with `F_SETFL` of the flags the
/// user has (which keeps the kernel's O_NONBLOCK during a hold). Both run
/// alone: another test's holds make a plain thread's accept with a timeout
/// take three times it (`thread_call`, see the accept-timeout case), on
/// the thread side too.
#[test]
fn f_setfl_same_flags_from_a_thread_while_parties_accept() {
    let got = differential_exclusive("F_SETFL same while accepting", |side| {
        mode_hammer_beside_acceptors(side, false)
    });
    assert_eq!(got, (0, vec![], false));
}

fn mode_hammer_beside_acceptors(side: Side, fionbio: bool) -> (u64, Vec<i32>, bool) {
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let l = listener.as_raw_fd();
        // Long enough that a loaded machine's late wake-ups stay well
        // under a second timeout: a blocked worker adds a whole one.
        let timeout = Duration::from_millis(150);
        set_timeout_opt(l, libc::SO_RCVTIMEO, timeout);
        let stop = Arc::new(AtomicBool::new(false));
        let hammer = {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut n = 0u64;
                let base = flags(l) & !libc::O_NONBLOCK;
                while !stop.load(Ordering::Relaxed) {
                    let mut arg: libc::c_int = 0;
                    if fionbio {
                        // SAFETY: FIONBIO with a live int.
                        unsafe { libc::ioctl(l, libc::FIONBIO, &mut arg) };
                    } else {
                        // SAFETY: F_SETFL on a live descriptor.
                        unsafe { libc::fcntl(l, libc::F_SETFL, base) };
                    }
                    n += 1;
                }
                n
            })
        };
        // Up to four rounds, until one sees a late accept.
        let mut results = Vec::new();
        for _ in 0..4 {
            let parties: Vec<_> = (0..16)
                .map(|_| {
                    side.spawn(move || {
                        let mut late = 0u64;
                        let mut other = Vec::new();
                        for _ in 0..5 {
                            let start = Instant::now();
                            // SAFETY: null address arguments are allowed.
                            let fd = unsafe {
                                libc::accept(l, std::ptr::null_mut(), std::ptr::null_mut())
                            };
                            let elapsed = start.elapsed();
                            if fd >= 0 || errno() != EAGAIN {
                                other.push(fd);
                            } else if elapsed > timeout * 2 {
                                eprintln!("late accept: {elapsed:?}");
                                late += 1;
                            }
                        }
                        (late, other)
                    })
                })
                .collect();
            results.extend(parties.into_iter().map(|p| p.join()));
            if results.iter().any(|r: &(u64, Vec<i32>)| r.0 > 0) {
                break;
            }
        }
        stop.store(true, Ordering::SeqCst);
        let hammered = hammer.join().unwrap();
        eprintln!("mode calls (fionbio={fionbio}): {hammered}");
        let late: u64 = results.iter().map(|r| r.0).sum();
        let other: Vec<i32> = results.into_iter().flat_map(|r| r.1).collect();
        let final_nonblock = kernel_flags(l) & libc::O_NONBLOCK != 0;
        drop(listener);
        (late, other, final_nonblock)
    }
}

// ---------------------------------------------------------------------------
// Status flags other than O_NONBLOCK, set while a hold is on
// ---------------------------------------------------------------------------

/// A plain thread sets O_ASYNC on a socket with `ioctl(FIOASYNC)` (no
/// owner set, so no signal is ever sent) and clears it again, many times,
/// while the other party splices into the socket; after each change it
/// reads the flags back (by a raw system call: what the kernel has). On a
/// thread the flag is always what was just set, and stays so.
#[test]
fn fioasync_set_by_a_thread_during_holds_is_kept() {
    differential("FIOASYNC during holds", |side| {
        let (c, s) = socket_pair(Pair::Tcp);
        let drain = thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            // SAFETY: `buf` is live.
            while unsafe { libc::recv(s, buf.as_mut_ptr().cast(), buf.len(), 0) } > 0 {}
        });
        let stop = Arc::new(AtomicBool::new(false));
        let party = side.spawn({
            let stop = stop.clone();
            move || splice_into(c, stop)
        });
        let lost = thread::spawn(move || {
            let mut lost = 0u64;
            for round in 0..2000 {
                let on = round % 2 == 0;
                let mut arg: libc::c_int = on as libc::c_int;
                // SAFETY: FIOASYNC with a live int.
                unsafe { libc::ioctl(c, libc::FIOASYNC, &mut arg) };
                thread::sleep(Duration::from_micros(100));
                if (kernel_flags(c) & libc::O_ASYNC != 0) != on {
                    lost += 1;
                }
            }
            lost
        })
        .join()
        .unwrap();
        stop.store(true, Ordering::SeqCst);
        party.join();
        shut(c, libc::SHUT_WR);
        drain.join().unwrap();
        close_all([c, s]);
        lost
    });
}

// ---------------------------------------------------------------------------
// The mode changed by a plain thread while the side's call waits
// ---------------------------------------------------------------------------

fn set_nonblock(fd: RawFd, on: bool) {
    let mut arg: libc::c_int = on as libc::c_int;
    // SAFETY: FIONBIO with a live int.
    unsafe { libc::ioctl(fd, libc::FIONBIO, &mut arg) };
}

/// The case's blocking `recv` waits; 50 ms in, a plain thread makes the
/// socket non-blocking; 150 ms in, the peer sends. The kernel's call keeps
/// the mode it started with: it waits and returns the bytes.
#[test]
fn recv_waiting_when_a_thread_sets_o_nonblock() {
    let got = differential("recv, O_NONBLOCK set during the wait", |_| {
        let (c, s) = socket_pair(Pair::Tcp);
        let t1 = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            set_nonblock(c, true);
        });
        let t2 = thread::spawn(move || {
            thread::sleep(Duration::from_millis(150));
            write_once(s, b"late").unwrap();
        });
        let got = timed(|| support::raw::recv_len(c, 64, 0));
        t1.join().unwrap();
        t2.join().unwrap();
        close_all([c, s]);
        got
    });
    assert_eq!(got, (Ok(bytes(b"late")), Timing::Waited));
}

/// As above for `accept` on a listener shared with the thread that sets
/// O_NONBLOCK; a plain thread connects 150 ms in.
#[test]
fn accept_waiting_when_a_thread_sets_o_nonblock() {
    let got = differential("accept, O_NONBLOCK set during the wait", |_| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let l = listener.as_raw_fd();
        let t1 = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            set_nonblock(l, true);
        });
        let t2 = thread::spawn(move || {
            thread::sleep(Duration::from_millis(150));
            TcpStream::connect(addr).unwrap()
        });
        let got = timed(|| {
            // SAFETY: null address arguments are allowed.
            let fd = unsafe { libc::accept(l, std::ptr::null_mut(), std::ptr::null_mut()) };
            if fd >= 0 {
                close(fd);
            }
            c_outcome(fd).map(|_| ())
        });
        t1.join().unwrap();
        let _client = t2.join().unwrap();
        (got, kernel_flags(l) & libc::O_NONBLOCK != 0)
    });
    assert_eq!(got, ((Ok(()), Timing::Waited), true));
}

/// As above for a Unix `connect` to a listener whose backlog is full: the
/// thread sets O_NONBLOCK on the connecting socket 50 ms in, a plain
/// thread accepts 150 ms in. The kernel's call keeps waiting and connects.
#[test]
fn unix_connect_waiting_when_a_thread_sets_o_nonblock() {
    let got = differential("unix connect, O_NONBLOCK set during the wait", |_| {
        let path = TempPath::unique();
        let l = support::raw::unix_listener(&path);
        // Fill the backlog (0 means one pending connection fits; a second
        // to be sure).
        let fillers: Vec<RawFd> = (0..2)
            .map(|_| {
                let f = support::raw::unix_stream_socket();
                let mut nb: libc::c_int = 1;
                // SAFETY: FIONBIO with a live int.
                unsafe { libc::ioctl(f, libc::FIONBIO, &mut nb) };
                let _ = support::raw::unix_connect(f, &path);
                f
            })
            .collect();
        let fd = support::raw::unix_stream_socket();
        let t1 = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            set_nonblock(fd, true);
        });
        let t2 = thread::spawn(move || {
            thread::sleep(Duration::from_millis(150));
            let mut accepted = Vec::new();
            // The filler that got in, then the case's socket.
            for _ in 0..2 {
                // SAFETY: null address arguments are allowed.
                let a = unsafe { libc::accept(l, std::ptr::null_mut(), std::ptr::null_mut()) };
                accepted.push(a);
            }
            accepted
        });
        let got = timed(|| support::raw::unix_connect(fd, &path).map(|_| ()));
        t1.join().unwrap();
        let accepted = t2.join().unwrap();
        close_all(accepted);
        close_all(fillers);
        close_all([fd, l]);
        got
    });
    assert_eq!(got, (Ok(()), Timing::Waited));
}

// ---------------------------------------------------------------------------
// std's own calls on a plain thread
// ---------------------------------------------------------------------------

/// A plain thread copies a 32 KiB file into a TCP stream with
/// `std::io::copy` (sendfile or splice underneath) and reads an echo with
/// `read_exact`, 150 times, while the other party splices into the same
/// stream (a `try_clone`); a plain thread echoes what the peer receives.
/// On threads every call succeeds.
#[test]
#[ignore = "known limit (coroutines/docs/troubleshooting.md): a coroutine's splice holds the socket non-blocking for each attempt, which a plain thread's call on it at that instant sees"]
fn std_copy_and_read_exact_on_a_plain_thread_beside_a_splicer() {
    differential("io::copy and read_exact beside splice", |side| {
        use std::io::{Read, Seek, Write};
        let (client, server) = tcp_pair();
        let c = client.as_raw_fd();
        let spliced = client.try_clone().unwrap().into_raw_fd();
        // Both write into `client`; the echo sends back only the thread's
        // bytes, which the thread reads back.
        let echo = thread::spawn(move || {
            let mut server = server;
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            loop {
                match server.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        total += n as u64;
                        // Echo only 'f' bytes (the file's), not the
                        // party's 'x' bytes.
                        let mine: Vec<u8> =
                            buf[..n].iter().copied().filter(|&b| b == b'f').collect();
                        if server.write_all(&mine).is_err() {
                            break;
                        }
                    }
                }
            }
            total
        });
        let stop = Arc::new(AtomicBool::new(false));
        let party = side.spawn({
            let stop = stop.clone();
            move || splice_into_paced(spliced, stop, Duration::from_micros(100))
        });
        let mut mine = client.try_clone().unwrap();
        let errors = thread::spawn(move || {
            let client = &mut mine;
            let mut file = temp_file(&vec![b'f'; 32 * 1024]);
            let mut errors = Vec::new();
            let mut back = vec![0u8; 32 * 1024];
            for _ in 0..150 {
                file.seek(std::io::SeekFrom::Start(0)).unwrap();
                match std::io::copy(&mut file, client) {
                    Ok(n) if n == 32 * 1024 => {}
                    Ok(n) => errors.push(format!("copy: {n}")),
                    Err(e) => {
                        errors.push(format!("copy: {:?}", e.kind()));
                        break;
                    }
                }
                if let Err(e) = client.read_exact(&mut back) {
                    errors.push(format!("read_exact: {:?}", e.kind()));
                    break;
                }
            }
            errors
        })
        .join()
        .unwrap();
        stop.store(true, Ordering::SeqCst);
        party.join();
        shut(c, libc::SHUT_WR);
        echo.join().unwrap();
        close(spliced);
        drop(client);
        errors
    });
}
