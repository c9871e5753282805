//! Probes: sockets other than plain TCP streams, and unusual per-call
//! flags, differentially (a plain thread against a coroutine on one
//! worker). UDP (`MSG_TRUNC`, `recvmmsg` and the error it leaves for the
//! next call), Unix streams, datagrams and seqpackets (message boundaries,
//! descriptors and credentials passed along, `SO_RCVLOWAT`, accepted
//! sockets), `socketpair` flags, `connect` errors, `SIGPIPE`, a mode
//! change while another party waits, and glibc's fortified entry points.

mod support;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;
use std::time::Duration;

use support::differential::*;
use support::glibc::{__read_chk, __recv_chk, __recvfrom_chk};
use support::raw::*;
use support::*;

// ------------------------------------------------------------------ helpers

/// What a `recvmsg` with room for descriptors got.
#[derive(Debug, PartialEq)]
struct Received {
    data: Result<Bytes, Errno>,
    /// Descriptors received (closed here).
    descriptors: usize,
    /// `msg_flags & (MSG_TRUNC | MSG_CTRUNC)`.
    flags: i32,
}

/// A `recvmsg` of up to `len` bytes with `flags` and room for several
/// descriptors; closes those received.
fn recvmsg_with_room(fd: RawFd, len: usize, flags: i32) -> Received {
    let mut buf = vec![0u8; len];
    let mut control = [0u64; 32];
    let (n, msg) = recvmsg_into(fd, &mut buf, &mut control, flags);
    let data = c_outcome(n as i64).map(|n| bytes(&buf[..(n as usize).min(len)]));
    let mut descriptors = 0;
    if n >= 0 {
        // SAFETY: the header `recvmsg` filled; `control` is live.
        for fd in unsafe { passed_fds(&msg) } {
            close(fd);
            descriptors += 1;
        }
    }
    Received {
        data,
        descriptors,
        flags: if n >= 0 {
            msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC)
        } else {
            0
        },
    }
}

// ------------------------------------------------ Unix streams: descriptors

/// `recv(MSG_WAITALL)` (no control buffer) on a Unix stream stops after a
/// message that carried a descriptor, as `recvmsg(MSG_WAITALL)` does: the
/// kernel ends every stream read there. A thread gets "abc" at once.
#[test]
fn recv_waitall_on_a_unix_stream_stops_after_a_message_with_descriptors() {
    let got = differential("recv(MSG_WAITALL) after SCM_RIGHTS", |_| {
        let (writer, reader) = UnixStream::pair().unwrap();
        let passed = File::open("/dev/null").unwrap();
        send_with_fd(&writer, b"abc", passed.as_raw_fd());
        (&writer).write_all(b"defgh").unwrap();
        let rescue = Rescue::arm(move || {
            let _ = (&writer).write_all(b"0123456789");
            drop(writer);
        });
        let got = timed(|| recv_len(reader.as_raw_fd(), 10, libc::MSG_WAITALL));
        (got, rescue.disarm())
    });
    assert_eq!(got, ((Ok(bytes(b"abc")), Timing::AtOnce), false));
}

/// `read(2)` on a Unix stream with `SO_RCVLOWAT` 10 stops after a message
/// that carried a descriptor, below the mark: the kernel ends the read
/// there whatever the mark.
#[test]
fn read_below_rcvlowat_on_a_unix_stream_stops_after_a_message_with_descriptors() {
    let got = differential("read(SO_RCVLOWAT=10) after SCM_RIGHTS", |_| {
        let (writer, reader) = UnixStream::pair().unwrap();
        set_int_opt(reader.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVLOWAT, 10);
        let passed = File::open("/dev/null").unwrap();
        send_with_fd(&writer, b"abc", passed.as_raw_fd());
        (&writer).write_all(b"defgh").unwrap();
        let rescue = Rescue::arm(move || {
            let _ = (&writer).write_all(b"0123456789");
            drop(writer);
        });
        let got = timed(|| read_once(reader.as_raw_fd()));
        (got, rescue.disarm())
    });
    assert_eq!(got, ((Ok(bytes(b"abc")), Timing::AtOnce), false));
}

/// A `recvmsg` with room for descriptors on a Unix stream with
/// `SO_RCVLOWAT` 10: "abc" is queued, below the mark; "defghij" comes later
/// with a descriptor. The thread's one call gets all ten bytes *and* the
/// descriptor.
#[test]
fn recvmsg_with_rcvlowat_keeps_the_descriptor_of_a_later_message() {
    let got = differential("recvmsg(SO_RCVLOWAT=10), descriptor later", |_| {
        let (writer, reader) = UnixStream::pair().unwrap();
        set_int_opt(reader.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVLOWAT, 10);
        (&writer).write_all(b"abc").unwrap();
        let late = after(WAIT, move || {
            let passed = File::open("/dev/null").unwrap();
            send_with_fd(&writer, b"defghij", passed.as_raw_fd());
            writer
        });
        let got = recvmsg_with_room(reader.as_raw_fd(), 64, 0);
        drop(late.join().unwrap());
        got
    });
    assert_eq!(
        got,
        Received {
            data: Ok(bytes(b"abcdefghij")),
            descriptors: 1,
            flags: 0,
        }
    );
}

/// A pipe's read end passed with `MSG_CMSG_CLOEXEC`: the received
/// descriptor is close-on-exec, blocking (as the sender's description is),
/// and a read on it waits for a late write while the neighbours run.
#[test]
fn descriptor_received_with_cmsg_cloexec_is_blocking_and_waits() {
    let got = differential("SCM_RIGHTS pipe, MSG_CMSG_CLOEXEC", |side| {
        let (a, b) = UnixStream::pair().unwrap();
        let (pipe_reader, mut pipe_writer) = std::io::pipe().unwrap();
        send_with_fd(&a, b"fd", pipe_reader.as_raw_fd());
        drop(pipe_reader);
        let mut buf = [0u8; 8];
        let mut control = [0u64; 4];
        let (n, msg) = recvmsg_into(
            b.as_raw_fd(),
            &mut buf,
            &mut control,
            libc::MSG_CMSG_CLOEXEC,
        );
        assert_eq!(n, 2);
        // SAFETY: the header `recvmsg` filled; `control` is live.
        let received = unsafe { passed_fds(&msg) }[0];
        // SAFETY: F_GETFD takes no argument.
        let cloexec = unsafe { libc::fcntl(received, libc::F_GETFD) } & libc::FD_CLOEXEC != 0;
        let nonblocking = shows_nonblock(received);
        let companion = Companion::start(side);
        let late = after(WAIT, move || {
            pipe_writer.write_all(b"late").unwrap();
            pipe_writer
        });
        let (read, ticking) = companion.during(|| timed(|| read_once(received)));
        drop(late.join().unwrap());
        close(received);
        (cloexec, nonblocking, read, ticking)
    });
    assert_eq!(
        got,
        (true, false, (Ok(bytes(b"late")), Timing::Waited), true)
    );
}

/// `SO_PASSCRED`: a read that waits for a late message gets the sender's
/// credentials with it.
#[test]
fn credentials_come_with_a_late_message() {
    let got = differential("SCM_CREDENTIALS", |_| {
        let (writer, reader) = UnixStream::pair().unwrap();
        set_int_opt(reader.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, 1);
        let late = after(WAIT, move || {
            (&writer).write_all(b"hi").unwrap();
            writer
        });
        let mut buf = [0u8; 8];
        let mut control = [0u64; 8];
        let (n, msg) = recvmsg_into(reader.as_raw_fd(), &mut buf, &mut control, 0);
        let n = c_outcome(n as i64);
        // SAFETY: the header `recvmsg` filled; `control` is live.
        let got = unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            let creds =
                (!cmsg.is_null() && (*cmsg).cmsg_type == libc::SCM_CREDENTIALS).then(|| {
                    let creds = libc::CMSG_DATA(cmsg).cast::<libc::ucred>().read_unaligned();
                    (
                        creds.pid == libc::getpid(),
                        creds.uid == libc::getuid(),
                        creds.gid == libc::getgid(),
                    )
                });
            (n, creds)
        };
        drop(late.join().unwrap());
        got
    });
    assert_eq!(got, (Ok(2), Some((true, true, true))));
}

// ------------------------------------------------------------ accepted Unix

/// A Unix listener's `SO_RCVTIMEO` is not the accepted connection's (the
/// kernel makes the connection's socket afresh, where TCP clones the
/// listener): a read on it waits past the listener's timeout for the
/// peer's late write, and `getsockopt` says no timeout.
#[test]
fn unix_accepted_socket_does_not_inherit_the_listener_read_timeout() {
    let got = differential_exclusive("accepted Unix socket, listener timeout", |_| {
        let path = TempPath::unique();
        let listener = UnixListener::bind(&*path).unwrap();
        set_timeout_opt(
            listener.as_raw_fd(),
            libc::SO_RCVTIMEO,
            Duration::from_millis(300),
        );
        let to = path.to_path_buf();
        let client = after(WAIT, move || {
            let client = UnixStream::connect(&to).unwrap();
            thread::sleep(Duration::from_millis(600));
            (&client).write_all(b"late").unwrap();
            client
        });
        // Waits (parks, in a coroutine) for the client.
        let (accepted, _) = listener.accept().unwrap();
        let timeout = timeout_opt_ms(accepted.as_raw_fd(), libc::SO_RCVTIMEO);
        let read = read_once(accepted.as_raw_fd());
        drop(client.join().unwrap());
        (timeout, read)
    });
    assert_eq!(got, (Ok(0), Ok(bytes(b"late"))));
}

/// The same for `SO_RCVLOWAT`: a Unix listener's mark is not the accepted
/// connection's, so a read returns the first byte.
#[test]
fn unix_accepted_socket_does_not_inherit_the_listener_rcvlowat() {
    let got = differential_exclusive("accepted Unix socket, listener rcvlowat", |_| {
        let path = TempPath::unique();
        let listener = UnixListener::bind(&*path).unwrap();
        set_int_opt(listener.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVLOWAT, 8);
        let to = path.to_path_buf();
        let client = after(WAIT, move || {
            let client = UnixStream::connect(&to).unwrap();
            thread::sleep(Duration::from_millis(100));
            (&client).write_all(b"x").unwrap();
            client
        });
        let (accepted, _) = listener.accept().unwrap();
        let lowat = int_opt(accepted.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVLOWAT);
        let rescue = Rescue::arm({
            let client = client;
            move || {
                let client = client.join().unwrap();
                let _ = (&client).write_all(b"rescue!!");
                thread::sleep(Duration::from_millis(100));
            }
        });
        let read = read_once(accepted.as_raw_fd());
        (lowat, read, rescue.disarm())
    });
    assert_eq!(got, (Ok(1), Ok(bytes(b"x")), false));
}

// ---------------------------------------------------------- Unix seqpacket

/// A seqpacket reader that waits for a late writer sees each message whole
/// or truncated (`MSG_TRUNC`), a zero-length message as 0, then the end.
#[test]
fn seqpacket_messages_keep_their_boundaries_and_end() {
    let got = differential("SOCK_SEQPACKET boundaries", |side| {
        let (reader, writer) = unix_socketpair(libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC);
        let writing = side.spawn(move || {
            thread::sleep(WAIT);
            let sent = [
                send_flags(writer, b"abcdef", 0),
                send_flags(writer, b"", 0),
                send_flags(writer, b"xyz", 0),
            ];
            close(writer);
            sent
        });
        let first = timed(|| recvmsg_with_room(reader, 2, 0));
        let rest = [
            recvmsg_with_room(reader, 64, 0),
            recvmsg_with_room(reader, 64, 0),
            recvmsg_with_room(reader, 64, 0),
        ];
        let sent = writing.join();
        close(reader);
        (sent, first, rest)
    });
    let ok = |data: &[u8], flags| Received {
        data: Ok(bytes(data)),
        descriptors: 0,
        flags,
    };
    assert_eq!(
        got,
        (
            [Ok(6), Ok(0), Ok(3)],
            (ok(b"ab", libc::MSG_TRUNC), Timing::Waited),
            [ok(b"", 0), ok(b"xyz", 0), ok(b"", 0)]
        )
    );
}

/// A seqpacket writer whose send buffer is full (600 small messages; the
/// peer reads nothing for 200 ms) waits until a neighbour reads, while the
/// other neighbours run, and every message arrives in order.
#[test]
fn seqpacket_writer_waits_for_room_in_the_peer_queue() {
    let got = differential("SOCK_SEQPACKET full queue", |side| {
        let (reader, writer) = unix_socketpair(libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC);
        let reading = side.spawn(move || {
            thread::sleep(Duration::from_millis(200));
            let mut got = Vec::new();
            loop {
                match recv_len(reader, 64, 0) {
                    Ok(b) if b.0.is_empty() => break,
                    Ok(b) => got.push(String::from_utf8(b.0).unwrap()),
                    Err(e) => panic!("reader: {e:?}"),
                }
            }
            close(reader);
            got
        });
        let companion = Companion::start(side);
        let (sent, ticking) = companion.during(|| {
            timed(|| {
                (0..600)
                    .map(|i| send_flags(writer, format!("m{i}").as_bytes(), 0))
                    .filter(|r| r.is_err())
                    .count()
            })
        });
        close(writer);
        let got = reading.join();
        (sent, ticking, got)
    });
    let expected: Vec<String> = (0..600).map(|i| format!("m{i}")).collect();
    assert_eq!(got, ((0, Timing::Waited), true, expected));
}

// ------------------------------------------------------------- socketpair

/// `socketpair(SOCK_NONBLOCK | SOCK_CLOEXEC)`: the flags show, a receive
/// would block at once; after `FIONBIO(0)` it waits for a neighbour.
#[test]
fn socketpair_flags_show_and_fionbio_makes_it_wait() {
    let got = differential("socketpair SOCK_NONBLOCK|SOCK_CLOEXEC", |side| {
        let kind = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        let (a, b) = unix_socketpair(kind);
        // SAFETY: F_GETFD takes no argument.
        let cloexec = unsafe { libc::fcntl(a, libc::F_GETFD) } & libc::FD_CLOEXEC != 0;
        let nonblock = shows_nonblock(a);
        let at_once = timed(|| recv_len(a, 16, 0));
        let off: libc::c_int = 0;
        // SAFETY: FIONBIO takes a pointer to an int.
        let cleared = c_outcome(unsafe { libc::ioctl(a, libc::FIONBIO, &off) });
        let writer = side.spawn(move || {
            thread::sleep(WAIT);
            send_flags(b, b"late", 0)
        });
        let waited = timed(|| recv_len(a, 16, 0));
        let sent = writer.join();
        let still_blocking = !shows_nonblock(a);
        close(a);
        close(b);
        (
            cloexec,
            nonblock,
            at_once,
            cleared,
            still_blocking,
            waited,
            sent,
        )
    });
    assert_eq!(
        got,
        (
            true,
            true,
            (Err(Errno(libc::EAGAIN)), Timing::AtOnce),
            Ok(0),
            true,
            (Ok(bytes(b"late")), Timing::Waited),
            Ok(4)
        )
    );
}

// -------------------------------------------- mode changes during a wait

/// Two readers wait on one blocking UDP socket; a third party makes it
/// non-blocking meanwhile. A thread's receive already waiting stays
/// blocking (the kernel reads the mode when the call starts), so each
/// reader gets one of the two datagrams sent later; none gets EAGAIN.
#[test]
fn waiting_receivers_stay_blocking_when_the_socket_is_made_nonblocking() {
    let got = differential("O_NONBLOCK set while two receivers wait", |side| {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = socket.local_addr().unwrap();
        let reader =
            |s: UdpSocket| side.spawn(move || format!("{:?}", recv_len(s.as_raw_fd(), 64, 0)));
        let first = reader(socket.try_clone().unwrap());
        let second = reader(socket.try_clone().unwrap());
        thread::sleep(Duration::from_millis(50));
        socket.set_nonblocking(true).unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"one", to).unwrap();
        thread::sleep(Duration::from_millis(50));
        sender.send_to(b"two", to).unwrap();
        let mut got = vec![first.join(), second.join()];
        got.sort();
        got
    });
    assert_eq!(got, vec![r#"Ok(b"one")"#, r#"Ok(b"two")"#]);
}

// ----------------------------------------------------------------- UDP

/// `MSG_TRUNC` on UDP returns the datagram's real length (a `recv` into 4
/// bytes of a 10-byte datagram that comes later), and `MSG_PEEK |
/// MSG_TRUNC` with no buffer sizes the next one.
#[test]
fn udp_msg_trunc_returns_the_real_length() {
    let got = differential("UDP MSG_TRUNC", |side| {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        let sender = side.spawn(move || {
            thread::sleep(WAIT);
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.send_to(b"0123456789", to).unwrap();
            thread::sleep(WAIT);
            s.send_to(b"abcdefghijklmnop", to).unwrap();
            s.send_to(b"", to).unwrap();
        });
        let fd = receiver.as_raw_fd();
        let mut buf = [0u8; 4];
        // SAFETY: `buf` is valid for 4 bytes.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), 4, libc::MSG_TRUNC) };
        let truncated = timed(|| (c_outcome(n as i64), bytes(&buf)));
        // SAFETY: no buffer, length 0.
        let sized = c_outcome(unsafe {
            libc::recv(
                fd,
                std::ptr::null_mut(),
                0,
                libc::MSG_PEEK | libc::MSG_TRUNC,
            )
        } as i64);
        let whole = recvmsg_with_room(fd, 8, 0);
        let empty = recvmsg_with_room(fd, 8, 0);
        sender.join();
        (truncated.0, sized, whole, empty)
    });
    assert_eq!(
        got,
        (
            (Ok(10), bytes(b"0123")),
            Ok(16),
            Received {
                data: Ok(bytes(b"abcdefgh")),
                descriptors: 0,
                flags: libc::MSG_TRUNC,
            },
            Received {
                data: Ok(bytes(b"")),
                descriptors: 0,
                flags: 0,
            }
        )
    );
}

/// `recvmmsg` of `count` messages of up to 16 bytes each with `flags`:
/// the count received and each message's length.
fn recvmmsg_n(fd: RawFd, count: usize, flags: i32) -> (Result<i64, Errno>, Vec<u32>) {
    let mut bufs = vec![[0u8; 16]; count];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: an all-zero mmsghdr is valid; each points at a live iovec.
    let mut messages: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| unsafe {
            let mut m: libc::mmsghdr = std::mem::zeroed();
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // SAFETY: `messages` holds `count` valid headers.
    let ret = unsafe {
        libc::recvmmsg(
            fd,
            messages.as_mut_ptr(),
            count as u32,
            flags,
            std::ptr::null_mut(),
        )
    };
    (c_outcome(ret), messages.iter().map(|m| m.msg_len).collect())
}

/// A blocking `recvmmsg` of two messages waits for both (one queued, one
/// later); with `MSG_WAITFORONE` it returns the one queued.
#[test]
fn recvmmsg_waits_for_every_message_unless_waitforone() {
    let got = differential("recvmmsg 2 messages", |side| {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"one", to).unwrap();
        let one = timed(|| recvmmsg_n(receiver.as_raw_fd(), 2, libc::MSG_WAITFORONE));
        sender.send_to(b"two", to).unwrap();
        let late = side.spawn(move || {
            thread::sleep(WAIT);
            sender.send_to(b"three!", to).unwrap();
        });
        let companion = Companion::start(side);
        let (both, ticking) = companion.during(|| timed(|| recvmmsg_n(receiver.as_raw_fd(), 2, 0)));
        late.join();
        (one, both, ticking)
    });
    assert_eq!(
        got,
        (
            ((Ok(1), vec![3, 0]), Timing::AtOnce),
            ((Ok(2), vec![3, 6]), Timing::Waited),
            true
        )
    );
}

/// A blocking `recvmmsg` of two messages with `SO_RCVTIMEO` (100 ms) and
/// one queued: the wait for the second ends at the timeout, and the call
/// returns the one it has; with none queued, EAGAIN at the timeout.
#[test]
fn recvmmsg_with_a_receive_timeout_returns_what_it_has() {
    let got = differential("recvmmsg, SO_RCVTIMEO", |_| {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let to = receiver.local_addr().unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"one", to).unwrap();
        let timeout = Duration::from_millis(100);
        let one = timed_against(timeout, || recvmmsg_n(receiver.as_raw_fd(), 2, 0));
        let none = timed_against(timeout, || recvmmsg_n(receiver.as_raw_fd(), 2, 0));
        (one, none)
    });
    assert_eq!(
        got,
        (
            ((Ok(1), vec![3, 0]), Against::About),
            ((Err(Errno(libc::EAGAIN)), vec![0, 0]), Against::About)
        )
    );
}

/// An abstract Unix datagram socket waits for a late datagram and learns
/// its sender's abstract address.
#[test]
fn abstract_unix_datagram_receives_a_late_datagram_with_its_address() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let got = differential("abstract UnixDatagram", |side| {
        let name =
            |what: &str| format!("coroutines-probe-{}-{what}-{:?}", std::process::id(), side);
        let here = SocketAddr::from_abstract_name(name("receiver")).unwrap();
        let there = SocketAddr::from_abstract_name(name("sender")).unwrap();
        let receiver = UnixDatagram::bind_addr(&here).unwrap();
        let sender = UnixDatagram::bind_addr(&there).unwrap();
        let late = side.spawn(move || {
            thread::sleep(WAIT);
            sender.send_to_addr(b"late", &here).unwrap()
        });
        let mut buf = [0u8; 16];
        let (got, timing) = timed(|| receiver.recv_from(&mut buf).unwrap());
        let from = got.1.as_abstract_name().map(|n| n.to_vec());
        let sent = late.join();
        (
            sent,
            bytes(&buf[..got.0]),
            timing,
            from == Some(name("sender").into_bytes()),
        )
    });
    assert_eq!(got, (4, bytes(b"late"), Timing::Waited, true));
}

/// A blocking `recvmmsg` of two messages on a connected UDP socket gets
/// one, then an ICMP "port unreachable" ends the wait for the second: the
/// kernel returns 1 and keeps the error for the next call (it puts it back
/// in `sk_err`), which a `MSG_DONTWAIT` receive then returns.
#[test]
fn recvmmsg_error_after_a_message_is_left_for_the_next_call() {
    let got = differential("recvmmsg, ICMP error after one message", |_| {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();
        b.send(b"one").unwrap();
        let clone = a.try_clone().unwrap();
        let peer = after(WAIT, move || {
            drop(b);
            // To a port nobody has any more: ICMP port unreachable.
            clone.send(b"ping").unwrap();
            clone
        });
        let got = recvmmsg_n(a.as_raw_fd(), 2, 0);
        drop(peer.join().unwrap());
        let next = recv_len(a.as_raw_fd(), 16, libc::MSG_DONTWAIT);
        (got, next)
    });
    assert_eq!(got, ((Ok(1), vec![3, 0]), Err(Errno(libc::ECONNREFUSED))));
}

// --------------------------------------------------------------- connect

/// A blocking `connect` that was refused leaves the socket unconnected: a
/// second `connect` to a live listener connects (the kernel's blocking
/// connect resets the socket's state when it reports the error).
#[test]
fn connect_after_a_refused_connect_connects() {
    let got = differential("connect after ECONNREFUSED", |_| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = raw_tcp_socket();
        let refused = outcome(raw_connect(fd, refused_addr()));
        let second = outcome(raw_connect(fd, listener.local_addr().unwrap()));
        close(fd);
        (refused, second)
    });
    assert_eq!(got, (Err(Errno(libc::ECONNREFUSED)), Ok(())));
}

/// A second `connect` on a socket whose blocking `connect` succeeded fails
/// with EISCONN.
#[test]
fn connect_after_a_connect_is_eisconn() {
    let got = differential("connect twice", |_| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let live = listener.local_addr().unwrap();
        let fd = raw_tcp_socket();
        let first = outcome(raw_connect(fd, live));
        let second = outcome(raw_connect(fd, live));
        let third = outcome(raw_connect(fd, refused_addr()));
        close(fd);
        (first, second, third)
    });
    assert_eq!(
        got,
        (Ok(()), Err(Errno(libc::EISCONN)), Err(Errno(libc::EISCONN)))
    );
}

/// Other `connect` errors as a thread sees them: a non-blocking socket's
/// EINPROGRESS and its `SO_ERROR`, then (the error taken) ECONNABORTED; a
/// listening socket; Unix paths that do not exist or whose listener is
/// gone; a Unix connect to a datagram socket.
#[test]
fn connect_errors_are_those_of_a_thread() {
    let got = differential("connect errors", |_| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let live = listener.local_addr().unwrap();
        // SAFETY: plain socket creation.
        let nb = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        let started = outcome(raw_connect(nb, refused_addr()));
        let mut pfd = libc::pollfd {
            fd: nb,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        unsafe { libc::poll(&mut pfd, 1, 1000) };
        let so_error = int_opt(nb, libc::SOL_SOCKET, libc::SO_ERROR);
        let after_error = outcome(raw_connect(nb, live));
        close(nb);

        let on_listener = outcome(raw_connect(listener.as_raw_fd(), live));

        let missing = TempPath::unique();
        let no_path = outcome(UnixStream::connect(&*missing).map(drop));
        let gone = TempPath::unique();
        drop(UnixListener::bind(&*gone).unwrap());
        let no_listener = outcome(UnixStream::connect(&*gone).map(drop));
        let dgram = TempPath::unique();
        let _bound = std::os::unix::net::UnixDatagram::bind(&*dgram).unwrap();
        let wrong_type = outcome(UnixStream::connect(&*dgram).map(drop));
        (
            started,
            so_error,
            after_error,
            on_listener,
            no_path,
            no_listener,
            wrong_type,
        )
    });
    assert_eq!(
        got,
        (
            Err(Errno(libc::EINPROGRESS)),
            Ok(libc::ECONNREFUSED),
            Err(Errno(libc::ECONNABORTED)),
            got.3,
            Err(Errno(libc::ENOENT)),
            Err(Errno(libc::ECONNREFUSED)),
            got.6,
        )
    );
}

// ----------------------------------------------------------------- SIGPIPE

/// Sends to a Unix stream whose peer is gone: EPIPE with a SIGPIPE, none
/// with `MSG_NOSIGNAL`. A blocking send that waits on a full buffer when
/// the peer goes, leaving data unread: the waiting kernel call checks the
/// socket's error first, so it returns ECONNRESET (and takes the error),
/// with no SIGPIPE.
#[test]
fn epipe_raises_sigpipe_unless_msg_nosignal() {
    let got = differential_exclusive("EPIPE and SIGPIPE", |_| {
        let (a, b) = unix_socketpair(libc::SOCK_STREAM | libc::SOCK_CLOEXEC);
        close(b);
        let plain = counting_sigpipes(|| send_flags(a, b"x", 0));
        let nosignal = counting_sigpipes(|| send_flags(a, b"x", libc::MSG_NOSIGNAL));
        // SAFETY: a live buffer.
        let write = counting_sigpipes(|| {
            c_outcome(unsafe { libc::write(a, b"x".as_ptr().cast(), 1) } as i64)
        });
        close(a);

        let (a, b) = unix_socketpair(libc::SOCK_STREAM | libc::SOCK_CLOEXEC);
        while send_flags(a, &[0u8; 4096], libc::MSG_DONTWAIT).is_ok() {}
        let peer = after(WAIT, move || close(b));
        let waited = counting_sigpipes(|| timed(|| send_flags(a, &[1u8; 4096], 0)));
        peer.join().unwrap();
        let so_error = int_opt(a, libc::SOL_SOCKET, libc::SO_ERROR);
        close(a);
        (plain, nosignal, write, waited, so_error)
    });
    assert_eq!(
        got,
        (
            (Err(Errno(libc::EPIPE)), 1),
            (Err(Errno(libc::EPIPE)), 0),
            (Err(Errno(libc::EPIPE)), 1),
            ((Err(Errno(libc::ECONNRESET)), Timing::Waited), 0),
            Ok(0)
        )
    );
}

// --------------------------------------------------------------- vectored

/// A blocking `sendmsg` of three iovecs (768 KiB) on a Unix stream sends
/// everything, in order, while a neighbour drains it late.
#[test]
fn sendmsg_of_several_iovecs_sends_everything_in_order() {
    let got = differential("sendmsg 3 iovecs", |side| {
        let (writer, reader) = UnixStream::pair().unwrap();
        let reading = side.spawn(move || {
            thread::sleep(WAIT);
            let mut all = Vec::new();
            (&reader).read_to_end(&mut all).unwrap();
            all
        });
        let parts: Vec<Vec<u8>> = (0..3u8).map(|i| vec![b'a' + i; 256 * 1024]).collect();
        let iovs: Vec<libc::iovec> = parts
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        // SAFETY: an all-zero msghdr is valid; the iovecs outlive the call.
        let sent = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = iovs.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = iovs.len();
            c_outcome(libc::sendmsg(writer.as_raw_fd(), &msg, 0) as i64)
        };
        drop(writer);
        let all = reading.join();
        (sent, all == parts.concat())
    });
    assert_eq!(got, (Ok(768 * 1024), true));
}

// ---------------------------------------------------- fortified entry points

/// C code built with `_FORTIFY_SOURCE` (Ubuntu's compilers default to it)
/// calls `__recv_chk`, `__recvfrom_chk` and `__read_chk` for `recv`,
/// `recvfrom` and `read` into a
/// buffer of known size. A receive that waits for a late datagram must let
/// the neighbours run, as `recv` does.
#[test]
fn fortified_receives_let_the_neighbours_run() {
    let got = differential("__recv_chk / __recvfrom_chk", |side| {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        let fd = receiver.as_raw_fd();
        let late = || {
            after(WAIT, move || {
                UdpSocket::bind("127.0.0.1:0")
                    .unwrap()
                    .send_to(b"late", to)
                    .unwrap()
            })
        };
        let companion = Companion::start(side);
        let mut buf = [0u8; 16];
        let sender = late();
        // SAFETY: `buf` is valid for its length.
        let recv = companion.during(|| {
            c_outcome(unsafe { __recv_chk(fd, buf.as_mut_ptr().cast(), 16, 16, 0) } as i64)
        });
        sender.join().unwrap();
        let sender = late();
        // SAFETY: as above; no address wanted.
        let recvfrom = companion.during(|| {
            c_outcome(unsafe {
                __recvfrom_chk(
                    fd,
                    buf.as_mut_ptr().cast(),
                    16,
                    16,
                    0,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            } as i64)
        });
        sender.join().unwrap();
        let sender = late();
        // SAFETY: as above.
        let read = companion.during(|| {
            c_outcome(unsafe { __read_chk(fd, buf.as_mut_ptr().cast(), 16, 16) } as i64)
        });
        sender.join().unwrap();
        (recv, recvfrom, read)
    });
    assert_eq!(got, ((Ok(4), true), (Ok(4), true), (Ok(4), true)));
}
