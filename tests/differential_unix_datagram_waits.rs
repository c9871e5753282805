//! Unix datagram sends that wait for room in a receiver's queue, as data
//! (round J, finding 1): the coroutine's call returns what the thread's
//! returns, and waits without spinning. The CPU the whole process used
//! during the wait is part of each case's value: a thread sleeps in the
//! kernel (`unix_wait_for_peer`); a coroutine whose wait ended at every
//! readiness edge would spin, since each failed attempt on an unconnected
//! sender frees its buffer and so marks the sender writable itself.
//!
//! The cases run alone (`differential_exclusive`): the CPU is the
//! process's, and no other test of the binary may add to it meanwhile.

mod support;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use support::differential::*;
use support::raw;
use support::*;

/// How long the receiver stays full before a plain thread drains it.
const HOLD: Duration = Duration::from_millis(400);

/// The most CPU the process may use while a send waits [`HOLD`]: a thread
/// uses next to none, a spinning coroutine about all of it.
const CPU_BOUND: Duration = Duration::from_millis(100);

/// The process's CPU time so far (every thread: workers, helpers, peers).
fn cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a live timespec for the call to fill.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    assert_eq!(ret, 0);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Runs `f`; its value, and whether the process used less than
/// [`CPU_BOUND`] meanwhile.
fn frugal<T>(f: impl FnOnce() -> T) -> (T, bool) {
    let before = cpu_time();
    let value = f();
    let used = cpu_time() - before;
    if used >= CPU_BOUND {
        eprintln!(
            "in_coroutine={}: {} ms of CPU",
            coroutines::in_coroutine(),
            used.as_millis()
        );
    }
    (value, used < CPU_BOUND)
}

/// Sends with `send` on `sender`, made non-blocking meanwhile, until the
/// receiver's queue is full; returns how many datagrams it took.
fn fill(sender: &UnixDatagram, send: impl Fn(&UnixDatagram) -> io::Result<usize>) -> usize {
    sender.set_nonblocking(true).unwrap();
    let mut queued = 0;
    loop {
        match send(sender) {
            Ok(_) => queued += 1,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling: {e}"),
        }
    }
    sender.set_nonblocking(false).unwrap();
    queued
}

/// After `delay`, on a plain thread, takes every datagram `receiver` gets
/// until none came for 200 ms; returns how many.
fn drain_after(delay: Duration, receiver: UnixDatagram) -> thread::JoinHandle<usize> {
    after(delay, move || {
        receiver
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 64];
        std::iter::from_fn(|| receiver.recv(&mut buf).ok()).count()
    })
}

/// A fresh directory for the sockets of one case; removed when dropped.
fn socket_dir() -> TempPath {
    let dir = TempPath::unique();
    std::fs::create_dir(&*dir).unwrap();
    dir
}

/// What a case's waiting send gave: its result, how long it took, whether
/// the receiver then got every datagram, and whether the process used
/// little CPU during the wait.
#[derive(Debug, PartialEq)]
struct Waited {
    result: Result<i64, Errno>,
    span: Span,
    all_received: bool,
    frugal: bool,
}

/// Fills the receiver at `path` from `filler` with `send`, then makes
/// `call` (the blocking send under test) while a plain thread drains the
/// receiver [`HOLD`] later.
fn waits_for_room(
    receiver: UnixDatagram,
    filler: &UnixDatagram,
    send: impl Fn(&UnixDatagram) -> io::Result<usize>,
    call: impl FnOnce() -> Result<i64, Errno>,
) -> Waited {
    let filled = fill(filler, send);
    assert!(filled > 0);
    let drainer = drain_after(HOLD, receiver);
    let ((result, span), frugal) = frugal(|| timed_span(call));
    let drained = drainer.join().unwrap();
    let sent = result.map_or(0, |n| (n > 0) as usize);
    Waited {
        result,
        span,
        all_received: drained == filled + sent,
        frugal,
    }
}

fn send_to(sender: &UnixDatagram, data: &[u8], path: &Path) -> Result<i64, Errno> {
    outcome(sender.send_to(data, path)).map(|n| n as i64)
}

/// The expected value of a send of `len` bytes that waited for the drain.
fn woken(len: i64) -> Waited {
    Waited {
        result: Ok(len),
        span: Span::Woken,
        all_received: true,
        frugal: true,
    }
}

/// The reviewer's reproduction: an unbound, unconnected sender fills the
/// receiver, then `send_to` waits for the drain.
#[test]
fn unconnected_send_to_waits_for_a_full_receiver_without_spinning() {
    let got = differential_exclusive("unconnected send_to a full receiver", |_| {
        let dir = socket_dir();
        let path = dir.join("r.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        waits_for_room(
            receiver,
            &sender,
            |s| s.send_to(b"fill", &path),
            || send_to(&sender, b"late", &path),
        )
    });
    assert_eq!(got, woken(4));
}

/// The queue filled by another socket, so that the sender has nothing in
/// flight.
#[test]
fn send_to_a_queue_another_socket_filled_waits_without_spinning() {
    let got = differential_exclusive("send_to a queue another socket filled", |_| {
        let dir = socket_dir();
        let path = dir.join("r.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let filler = UnixDatagram::unbound().unwrap();
        let sender = UnixDatagram::bind(dir.join("s.sock")).unwrap();
        waits_for_room(
            receiver,
            &filler,
            |s| s.send_to(b"fill", &path),
            || send_to(&sender, b"late", &path),
        )
    });
    assert_eq!(got, woken(4));
}

/// An abstract address (no file), the receiver filled by the sender.
#[test]
fn send_to_an_abstract_address_waits_without_spinning() {
    let got = differential_exclusive("send_to a full abstract receiver", |side| {
        let name = format!("coroutines-dgram-{}-{side:?}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&addr).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        waits_for_room(
            receiver,
            &sender,
            |s| s.send_to_addr(b"fill", &addr),
            || outcome(sender.send_to_addr(b"late", &addr)).map(|n| n as i64),
        )
    });
    assert_eq!(got, woken(4));
}

/// A `msghdr` for `data` sent to `addr`; `iov` keeps the iovec.
fn named_header(addr: &mut libc::sockaddr_un, data: &[u8], iov: &mut libc::iovec) -> libc::msghdr {
    *iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (addr as *mut libc::sockaddr_un).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg
}

/// A sender whose own datagrams in the queue use over a quarter of its
/// send buffer reports no room, so the refused send raises no edge; the
/// receiver then takes one datagram and waits for the send: the first
/// free place in the queue is the one the send waits for (its buffer
/// stays too full to report room).
#[test]
fn a_sender_with_much_in_flight_goes_through_after_one_read() {
    let got = differential_exclusive("send_to after one read, much in flight", |_| {
        let dir = socket_dir();
        let path = dir.join("r.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        let big = vec![1u8; 8000];
        let filled = fill(&sender, |s| s.send_to(&big, &path));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let taker = after(HOLD, move || {
            let mut buf = vec![0u8; 8000];
            receiver.recv(&mut buf).unwrap();
            // Nothing more until the send has returned.
            let _ = released.recv();
            receiver.set_nonblocking(true).unwrap();
            1 + std::iter::from_fn(|| receiver.recv(&mut buf).ok()).count()
        });
        let ((result, span), frugal) = frugal(|| timed_span(|| send_to(&sender, &big, &path)));
        let _ = release.send(());
        let taken = taker.join().unwrap();
        (result, span, taken == filled + 1, frugal)
    });
    assert_eq!(got, (Ok(8000), Span::Woken, true, true));
}

/// `sendmsg` with a `msg_name` on an unconnected socket.
fn sendmsg_named(fd: RawFd, path: &Path, data: &[u8]) -> Result<i64, Errno> {
    let mut addr = raw::sockaddr_un(path);
    let mut iov = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let msg = named_header(&mut addr, data, &mut iov);
    // SAFETY: `msg` points at live memory: the address, the iovec, `data`.
    c_outcome(unsafe { libc::sendmsg(fd, &msg, 0) } as i64)
}

#[test]
fn sendmsg_with_a_name_waits_without_spinning() {
    let got = differential_exclusive("sendmsg with a name to a full receiver", |_| {
        let dir = socket_dir();
        let path = dir.join("r.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        waits_for_room(
            receiver,
            &sender,
            |s| s.send_to(b"fill", &path),
            || sendmsg_named(sender.as_raw_fd(), &path, b"by sendmsg"),
        )
    });
    assert_eq!(got, woken(10));
}

/// `sendmmsg` of two named datagrams: the first waits for the drain, the
/// second finds room.
#[test]
fn sendmmsg_with_names_waits_without_spinning() {
    let got = differential_exclusive("sendmmsg with names to a full receiver", |_| {
        let dir = socket_dir();
        let path = dir.join("r.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        let fd = sender.as_raw_fd();
        let sent = waits_for_room(
            receiver,
            &sender,
            |s| s.send_to(b"fill", &path),
            || {
                let mut addrs = [raw::sockaddr_un(&path), raw::sockaddr_un(&path)];
                let empty = libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                let mut iovs = [empty, empty];
                let [a0, a1] = &mut addrs;
                let [i0, i1] = &mut iovs;
                let mut messages = [
                    libc::mmsghdr {
                        msg_hdr: named_header(a0, b"one", i0),
                        msg_len: 0,
                    },
                    libc::mmsghdr {
                        msg_hdr: named_header(a1, b"two", i1),
                        msg_len: 0,
                    },
                ];
                // SAFETY: both headers point at live memory.
                c_outcome(unsafe { libc::sendmmsg(fd, messages.as_mut_ptr(), 2, 0) })
            },
        );
        // Both datagrams arrived: one counted by `waits_for_room`, and
        // the other beside it.
        (sent.result, sent.span, sent.frugal)
    });
    assert_eq!(got, (Ok(2), Span::Woken, true));
}

/// `SO_SNDTIMEO` ends the wait with EAGAIN, after the timeout, without
/// spinning meanwhile; nobody drains.
#[test]
fn a_send_timeout_ends_the_wait_with_eagain() {
    let got = differential_exclusive("send_to a full receiver with SO_SNDTIMEO", |_| {
        let dir = socket_dir();
        let path = dir.join("r.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        fill(&sender, |s| s.send_to(b"fill", &path));
        sender.set_write_timeout(Some(HOLD)).unwrap();
        let start = Instant::now();
        let ((result, span), frugal) = frugal(|| timed_span(|| send_to(&sender, b"late", &path)));
        let not_early = start.elapsed() >= HOLD;
        drop(receiver);
        (result, span, not_early, frugal)
    });
    assert_eq!(got, (Err(Errno(libc::EAGAIN)), Span::Woken, true, true));
}

/// A sender the user made non-blocking fails with EAGAIN at once.
#[test]
fn a_non_blocking_sender_fails_at_once() {
    let got = differential_exclusive("non-blocking send_to a full receiver", |_| {
        let dir = socket_dir();
        let path = dir.join("r.sock");
        let _receiver = UnixDatagram::bind(&path).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        fill(&sender, |s| s.send_to(b"fill", &path));
        sender.set_nonblocking(true).unwrap();
        let by_send_to = timed_span(|| send_to(&sender, b"late", &path));
        let by_sendmsg = timed_span(|| sendmsg_named(sender.as_raw_fd(), &path, b"late"));
        (by_send_to, by_sendmsg)
    });
    let eagain = (Err(Errno(libc::EAGAIN)), Span::AtOnce);
    assert_eq!(got, (eagain, eagain));
}

/// The receiver closes while the sender waits: the send fails with
/// ECONNREFUSED (its file is still there, with nobody bound to it).
#[test]
fn a_receiver_closed_during_the_wait_refuses_the_send() {
    let got = differential_exclusive("send_to a full receiver that closes", |_| {
        let dir = socket_dir();
        let path = dir.join("r.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        fill(&sender, |s| s.send_to(b"fill", &path));
        let closer = after(HOLD, move || drop(receiver));
        let ((result, span), frugal) = frugal(|| timed_span(|| send_to(&sender, b"late", &path)));
        closer.join().unwrap();
        (result, span, frugal)
    });
    assert_eq!(got, (Err(Errno(libc::ECONNREFUSED)), Span::Woken, true));
}

/// The control: a sender connected to the receiver waits on its own
/// readiness, which the receiver's queue drives.
#[test]
fn a_connected_sender_waits_without_spinning() {
    let got = differential_exclusive("connected send to a full receiver", |_| {
        let dir = socket_dir();
        let path = dir.join("r.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        sender.connect(&path).unwrap();
        waits_for_room(
            receiver,
            &sender,
            |s| s.send(b"fill"),
            || outcome(sender.send(b"late")).map(|n| n as i64),
        )
    });
    assert_eq!(got, woken(4));
}

/// A sender connected to one receiver, which has room, names another,
/// whose queue is full: its readiness is the first one's.
#[test]
fn a_connected_sender_naming_another_full_receiver_waits_without_spinning() {
    let got = differential_exclusive("connected sender naming a full receiver", |_| {
        let dir = socket_dir();
        let path = dir.join("r.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let peer = UnixDatagram::bind(dir.join("peer.sock")).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        sender.connect(dir.join("peer.sock")).unwrap();
        let waited = waits_for_room(
            receiver,
            &sender,
            |s| s.send_to(b"fill", &path),
            || send_to(&sender, b"late", &path),
        );
        drop(peer);
        waited
    });
    assert_eq!(got, woken(4));
}

/// A Unix seqpacket connection: its sends are bounded by the sender's
/// buffer, not by the receiver's queue (both ends are each other's peer),
/// so it waits on readiness that the peer's reads raise.
#[test]
fn a_seqpacket_send_waits_without_spinning() {
    let got = differential_exclusive("seqpacket send to a full peer", |_| {
        let (a, b) = raw::unix_socketpair(libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC);
        // SAFETY: the pair is this case's own; each end is owned once.
        let (a, b) = unsafe { (UnixDatagram::from_raw_fd(a), UnixDatagram::from_raw_fd(b)) };
        let chunk = [7u8; 4096];
        waits_for_room(
            b,
            &a,
            |s| s.send(&chunk),
            || outcome(a.send(&chunk)).map(|n| n as i64),
        )
    });
    assert_eq!(got, woken(4096));
}

/// Fifty senders (coroutines on one worker, or threads) each log ten
/// lines through unconnected `send_to` to one slow collector, which takes
/// a datagram every millisecond: every line arrives, and the senders
/// waiting for room leave the CPU to others.
#[test]
fn fifty_senders_to_a_slow_collector_wait_without_spinning() {
    let got = differential_exclusive("50 senders to a slow collector", |side| {
        let dir = socket_dir();
        let path = dir.join("log.sock");
        let collector = UnixDatagram::bind(&path).unwrap();
        collector
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let collector = thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut n = 0;
            while collector.recv(&mut buf).is_ok() {
                n += 1;
                thread::sleep(Duration::from_millis(1));
            }
            n
        });
        let before = cpu_time();
        let start = Instant::now();
        let senders: Vec<_> = (0..50)
            .map(|i| {
                let path = path.clone();
                side.spawn(move || {
                    let sender = UnixDatagram::unbound().unwrap();
                    (0..10)
                        .filter(|j| {
                            sender
                                .send_to(format!("{i}: {j}").as_bytes(), &path)
                                .is_ok()
                        })
                        .count()
                })
            })
            .collect();
        let sent: usize = senders.into_iter().map(|s| s.join()).sum();
        let (used, elapsed) = (cpu_time() - before, start.elapsed());
        let received = collector.join().unwrap();
        eprintln!(
            "in_coroutine={}: {} ms elapsed, {} ms of CPU",
            coroutines::in_coroutine(),
            elapsed.as_millis(),
            used.as_millis()
        );
        // Waiting senders sleep: the CPU is a small part of the time.
        (sent, received, used * 4 < elapsed)
    });
    assert_eq!(got, (500, 500, true));
}
