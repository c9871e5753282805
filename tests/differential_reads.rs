//! Reads, differentially: each case runs on a plain thread (libc's answer)
//! and in a coroutine on one worker, and both must give the same bytes,
//! counts, errors and coarse timings.
//!
//! - Short reads with more data queued (issue item 1): a packet-mode pipe,
//!   a unix stream carrying SCM_RIGHTS and TCP urgent data each end a read
//!   early with more bytes queued and no new readiness edge to follow; the
//!   next read must return them at once.
//! - `MSG_WAITALL` (item 9): a datagram socket returns the first datagram,
//!   `recvmsg` on TCP collects the whole buffer, and `SO_RCVTIMEO` bounds
//!   the whole collection, not each chunk.
//! - `SO_RCVLOWAT` (item 10): a read waits for the low-water mark.
//!
//! Where a call must wait, a `Companion` ticks beside the case: that it
//! kept ticking is part of the result, so that a coroutine that waits by
//! blocking its worker differs from the thread too.

mod support;

use std::fs::File;
use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use support::differential::*;
use support::*;

/// The buffer every read here offers: larger than anything sent.
const BUF: usize = 64;

/// One `read(2)` of up to [`BUF`] bytes, as data.
fn read_once(fd: RawFd) -> Result<Bytes, Errno> {
    let mut buf = [0u8; BUF];
    // SAFETY: `buf` is valid for BUF bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), BUF) };
    c_outcome(n as i64).map(|n| bytes(&buf[..n as usize]))
}

/// What a reader saw of "one" (sent late), then of two messages queued
/// together whose first ends in a short read.
#[derive(Debug, PartialEq)]
struct ShortThenRest {
    /// Sent by a peer after [`WAIT`], so that in a coroutine the read parks
    /// and the descriptor joins the reactor: later data then comes with
    /// readiness edges, which the case lets the runtime see.
    first: Result<Bytes, Errno>,
    /// The first queued message: a short read.
    second: Result<Bytes, Errno>,
    /// The second queued message, already there: at once.
    third: (Result<Bytes, Errno>, Timing),
    /// Whether the third read needed a rescue write to return.
    rescued: bool,
}

/// The item-1 shape: reads `reader` once while `late` sends "one" after
/// [`WAIT`]; lets `queue` queue two messages; reads twice more. A rescue
/// write by `rescue` releases a third read that hangs.
fn short_then_rest(
    reader: RawFd,
    late: impl FnOnce() + Send + 'static,
    queue: impl FnOnce(),
    rescue: impl FnOnce() + Send + 'static,
) -> ShortThenRest {
    let late = after(WAIT, late);
    let first = read_once(reader);
    late.join().unwrap();
    queue();
    let rescue = Rescue::arm(rescue);
    let second = read_once(reader);
    let third = timed(|| read_once(reader));
    ShortThenRest {
        first,
        second,
        third,
        rescued: rescue.disarm(),
    }
}

/// What a thread reads in every item-1 case.
#[track_caller]
fn assert_reads_each_message(reads: &ShortThenRest) {
    assert_eq!(
        *reads,
        ShortThenRest {
            first: Ok(bytes(b"one")),
            second: Ok(bytes(b"abc")),
            third: (Ok(bytes(b"defgh")), Timing::AtOnce),
            rescued: false,
        }
    );
}

/// A pipe in packet mode (`O_DIRECT`): each write is one packet, each read
/// returns at most one.
fn packet_pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_DIRECT | libc::O_CLOEXEC) };
    assert_eq!(ret, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are new and owned here.
    unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
}

#[test]
fn packet_pipe_short_read_leaves_the_next_packet_readable() {
    let reads = differential("O_DIRECT pipe", |_| {
        let (reader, writer) = packet_pipe();
        let mut late = writer.try_clone().unwrap();
        let mut rescuer = writer.try_clone().unwrap();
        let mut writer = writer;
        short_then_rest(
            reader.as_raw_fd(),
            move || late.write_all(b"one").unwrap(),
            || {
                writer.write_all(b"abc").unwrap();
                writer.write_all(b"defgh").unwrap();
            },
            move || drop(rescuer.write_all(b"rescue")),
        )
    });
    assert_reads_each_message(&reads);
}

#[test]
fn unix_stream_read_stopped_by_scm_rights_leaves_the_rest_readable() {
    // The kernel ends a stream read after a message that carried
    // descriptors, with the next message already queued.
    let reads = differential("SCM_RIGHTS", |_| {
        let (reader, writer) = UnixStream::pair().unwrap();
        let mut late = writer.try_clone().unwrap();
        let mut rescuer = writer.try_clone().unwrap();
        let passed = File::open("/dev/null").unwrap();
        short_then_rest(
            reader.as_raw_fd(),
            move || late.write_all(b"one").unwrap(),
            || {
                send_with_fd(&writer, b"abc", passed.as_raw_fd());
                (&writer).write_all(b"defgh").unwrap();
            },
            move || drop(rescuer.write_all(b"rescue")),
        )
    });
    assert_reads_each_message(&reads);
}

#[test]
fn tcp_read_stopped_by_urgent_data_leaves_the_rest_readable() {
    // Without SO_OOBINLINE a read stops before the urgent byte; the next
    // one skips it and returns what follows, already queued.
    let reads = differential("TCP urgent data", |_| {
        let (writer, reader) = tcp_pair();
        writer.set_nodelay(true).unwrap();
        let mut late = writer.try_clone().unwrap();
        let mut rescuer = writer.try_clone().unwrap();
        short_then_rest(
            reader.as_raw_fd(),
            move || late.write_all(b"one").unwrap(),
            || {
                (&writer).write_all(b"abc").unwrap();
                // SAFETY: one byte from a live buffer.
                let sent = unsafe {
                    libc::send(writer.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB)
                };
                assert_eq!(
                    sent,
                    1,
                    "send(MSG_OOB): {}",
                    std::io::Error::last_os_error()
                );
                (&writer).write_all(b"defgh").unwrap();
                // Loopback delivers at once; leave no doubt that all of it
                // is queued at the reader before it reads.
                thread::sleep(Duration::from_millis(20));
            },
            move || drop(rescuer.write_all(b"rescue")),
        )
    });
    assert_reads_each_message(&reads);
}

/// `recv(2)` of up to [`BUF`] bytes with `flags`, as data.
fn recv_once(fd: RawFd, flags: i32) -> Result<Bytes, Errno> {
    let mut buf = [0u8; BUF];
    // SAFETY: `buf` is valid for BUF bytes.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), BUF, flags) };
    c_outcome(n as i64).map(|n| bytes(&buf[..n as usize]))
}

#[test]
fn udp_recv_waitall_returns_the_first_datagram() {
    // MSG_WAITALL means nothing for datagrams: the kernel returns one.
    let got = differential("recv(MSG_WAITALL) on UDP", |_| {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        sender.send_to(b"abc", to).unwrap();
        sender.send_to(b"defgh", to).unwrap();
        // A datagram that fills the buffer releases a receive that keeps
        // collecting.
        let rescue = Rescue::arm(move || drop(sender.send_to(&[b'.'; BUF], to)));
        let got = timed(|| recv_once(receiver.as_raw_fd(), libc::MSG_WAITALL));
        (got, rescue.disarm())
    });
    assert_eq!(got, ((Ok(bytes(b"abc")), Timing::AtOnce), false));
}

#[test]
fn tcp_recvmsg_waitall_collects_the_whole_buffer() {
    let got = differential("recvmsg(MSG_WAITALL) on TCP", |side| {
        let companion = Companion::start(side);
        let (mut writer, reader) = tcp_pair();
        writer.write_all(b"ab").unwrap();
        let late = after(WAIT, move || {
            writer.write_all(b"cd").unwrap();
            writer
        });
        let mut buf = [0u8; 4];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: a zeroed msghdr is valid; `iov` and `buf` outlive the call.
        let ((n, timing), others_kept_running) = companion.during(|| {
            timed(|| unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                c_outcome(libc::recvmsg(reader.as_raw_fd(), &mut msg, libc::MSG_WAITALL) as i64)
            })
        });
        drop(late.join().unwrap());
        (
            n.map(|n| bytes(&buf[..n as usize])),
            timing,
            others_kept_running,
        )
    });
    assert_eq!(got, (Ok(bytes(b"abcd")), Timing::Waited, true));
}

#[test]
fn waitall_receive_timeout_bounds_the_whole_receive() {
    // SO_RCVTIMEO bounds a MSG_WAITALL receive as a whole: the kernel
    // returns what it has when the timeout runs out, although more keeps
    // coming, each piece well within the timeout of the previous one.
    const PIECES: usize = 16;
    let got = differential("recv(MSG_WAITALL) with SO_RCVTIMEO", |side| {
        let companion = Companion::start(side);
        let (mut writer, reader) = tcp_pair();
        writer.set_nodelay(true).unwrap();
        set_timeout_opt(
            reader.as_raw_fd(),
            libc::SO_RCVTIMEO,
            Duration::from_millis(150),
        );
        let trickle = thread::spawn(move || {
            for _ in 0..PIECES {
                thread::sleep(Duration::from_millis(50));
                writer.write_all(b"x").unwrap();
            }
            writer
        });
        let start = Instant::now();
        let (got, others_kept_running) =
            companion.during(|| recv_once(reader.as_raw_fd(), libc::MSG_WAITALL));
        let elapsed = start.elapsed();
        drop(trickle.join().unwrap());
        Collected {
            ended_before_the_trickle: elapsed < Duration::from_millis(50 * PIECES as u64 / 2),
            got_every_piece: got.map(|got| got.0.len() == PIECES),
            others_kept_running,
        }
    });
    assert_eq!(
        got,
        Collected {
            ended_before_the_trickle: true,
            got_every_piece: Ok(false),
            others_kept_running: true,
        }
    );
}

/// Coarsely, how a receive that collects pieces ended.
#[derive(Debug, PartialEq)]
struct Collected {
    /// Long before the last piece came.
    ended_before_the_trickle: bool,
    /// With all the pieces.
    got_every_piece: Result<bool, Errno>,
    /// The case's companion kept running meanwhile (see `Companion`).
    others_kept_running: bool,
}

#[test]
fn read_waits_for_the_receive_low_water_mark() {
    // With 5 bytes queued and SO_RCVLOWAT 10, a blocking read waits. (On
    // this kernel it takes the 5 bytes in and then waits for 10 *more*:
    // 5 late bytes would leave a thread blocked for ever, so 10 come.)
    let got = differential("SO_RCVLOWAT", |side| {
        let companion = Companion::start(side);
        let (mut writer, reader) = tcp_pair();
        set_int_opt(reader.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVLOWAT, 10);
        writer.write_all(b"12345").unwrap();
        let late = after(WAIT, move || {
            writer.write_all(b"67890abcde").unwrap();
            writer
        });
        let ((got, timing), others_kept_running) =
            companion.during(|| timed(|| read_once(reader.as_raw_fd())));
        drop(late.join().unwrap());
        (got, timing, others_kept_running)
    });
    assert_eq!(got, (Ok(bytes(b"1234567890abcde")), Timing::Waited, true));
}

/// A sanity check of the shape itself: a read that must wait for a peer
/// gives the same bytes and timing on both sides (it passes today).
#[test]
fn read_that_waits_for_a_peer_is_the_same() {
    let got = differential("pipe read", |_| {
        let (reader, mut writer) = std::io::pipe().unwrap();
        let late = after(WAIT, move || writer.write_all(b"late").unwrap());
        let got = timed(|| read_once(reader.as_raw_fd()));
        late.join().unwrap();
        got
    });
    assert_eq!(got, (Ok(bytes(b"late")), Timing::Waited));
}

/// Zero-length transfers return 0 at once, whatever the other side holds
/// (a full pipe, an empty socket), except a TCP `recv(MSG_WAITALL)` of
/// nothing, which waits for a byte (its low-water mark is one).
#[test]
fn zero_length_transfers_return_zero_as_on_a_thread() {
    let got = differential("zero-length transfers", |_| {
        let (mut writer, reader) = tcp_pair();
        let (full_reader, full_writer) = std::io::pipe().unwrap();
        fill_pipe(full_writer.as_raw_fd());
        let (empty_reader, _empty_writer) = std::io::pipe().unwrap();
        let (fd, mut buf) = (reader.as_raw_fd(), [0u8; 8]);
        // SAFETY: each call moves nothing, from or into a live buffer.
        let at_once = unsafe {
            [
                libc::write(full_writer.as_raw_fd(), buf.as_ptr().cast(), 0),
                libc::read(fd, buf.as_mut_ptr().cast(), 0),
                libc::readv(fd, std::ptr::null(), 0),
                libc::send(writer.as_raw_fd(), buf.as_ptr().cast(), 0, 0),
                libc::read(empty_reader.as_raw_fd(), buf.as_mut_ptr().cast(), 0),
            ]
        }
        .map(|ret| c_outcome(ret as i64));
        let late = after(WAIT, move || writer.write_all(b"x").unwrap());
        // SAFETY: as above.
        let waitall = timed(|| {
            c_outcome(
                unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), 0, libc::MSG_WAITALL) } as i64,
            )
        });
        late.join().unwrap();
        drop(full_reader);
        (at_once, waitall)
    });
    assert_eq!(got, ([Ok(0); 5], (Ok(0), Timing::Waited)));
}

/// A zero-length `recv` on UDP waits for a datagram, and takes it.
#[test]
fn udp_zero_length_recv_waits_for_a_datagram_and_takes_it() {
    let got = differential("UDP recv of 0 bytes", |_| {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        let late = after(WAIT, move || {
            UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .send_to(b"abc", to)
                .unwrap()
        });
        let mut buf = [0u8; 8];
        // SAFETY: a receive of nothing into a live buffer.
        let got = timed(|| {
            c_outcome(
                unsafe { libc::recv(receiver.as_raw_fd(), buf.as_mut_ptr().cast(), 0, 0) } as i64,
            )
        });
        late.join().unwrap();
        receiver.set_nonblocking(true).unwrap();
        (got, outcome(receiver.recv(&mut buf)))
    });
    assert_eq!(got, ((Ok(0), Timing::Waited), Err(Errno(libc::EAGAIN))));
}

/// `recv(MSG_OOB)` takes the urgent byte, and the next `recv` the data
/// queued before it.
#[test]
fn urgent_byte_then_the_data_before_it() {
    let got = differential("recv(MSG_OOB), then recv", |_| {
        let (writer, reader) = tcp_pair();
        // SAFETY: sends from live buffers.
        unsafe {
            libc::send(writer.as_raw_fd(), b"hello".as_ptr().cast(), 5, 0);
            libc::send(writer.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB);
        }
        thread::sleep(Duration::from_millis(50));
        (
            recv_once(reader.as_raw_fd(), libc::MSG_OOB),
            recv_once(reader.as_raw_fd(), 0),
        )
    });
    assert_eq!(got, (Ok(bytes(b"!")), Ok(bytes(b"hello"))));
}

/// Reading a pipe to its end gets everything a plain thread wrote.
#[test]
fn pipe_read_to_end_gets_everything_written() {
    const LEN: usize = 200 << 10;
    let got = differential("pipe read to end", |_| {
        let (mut reader, mut writer) = std::io::pipe().unwrap();
        let feeder = thread::spawn(move || writer.write_all(&vec![9u8; LEN]).unwrap());
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut all).unwrap();
        feeder.join().unwrap();
        all.len()
    });
    assert_eq!(got, LEN);
}

/// Half of `recv`'s request is queued; a neighbour of the case's side
/// sends the rest ("67890") after 200 ms and keeps the stream open.
fn rest_from_a_neighbour(side: Side, mut writer: TcpStream) -> Party<TcpStream> {
    writer.write_all(b"12345").unwrap();
    side.spawn(move || {
        thread::sleep(Duration::from_millis(200));
        writer.write_all(b"67890").unwrap();
        writer
    })
}

/// A `recv(MSG_PEEK | MSG_WAITALL)` of 10 bytes with 5 queued waits for
/// the rest, which a neighbour sends.
#[test]
fn peek_waitall_waits_for_the_rest_from_a_neighbour() {
    let got = differential("recv(MSG_PEEK | MSG_WAITALL), neighbour", |side| {
        let (writer, reader) = tcp_pair();
        let rest = rest_from_a_neighbour(side, writer);
        let got = recv_len_once(reader.as_raw_fd(), 10, libc::MSG_PEEK | libc::MSG_WAITALL);
        rest.join();
        got
    });
    assert_eq!(got, Ok(bytes(b"1234567890")));
}

/// The same, the rest sent by a plain thread: the wait parks, leaving the
/// neighbours running, rather than retrying the peek in a loop.
#[test]
fn peek_waitall_leaves_the_neighbours_running() {
    let got = differential("recv(MSG_PEEK | MSG_WAITALL), companion", |side| {
        let companion = Companion::start(side);
        let (writer, reader) = tcp_pair();
        let rest = rest_from_a_neighbour(Side::Thread, writer);
        let got = companion
            .during(|| recv_len_once(reader.as_raw_fd(), 10, libc::MSG_PEEK | libc::MSG_WAITALL));
        rest.join();
        got
    });
    assert_eq!(got, (Ok(bytes(b"1234567890")), true));
}

/// With `SO_RCVLOWAT` 10 and 5 bytes queued, a `recv(MSG_PEEK)` waits for
/// the mark, which a neighbour's 5 bytes reach.
#[test]
fn peek_waits_for_the_low_water_mark_from_a_neighbour() {
    let got = differential("recv(MSG_PEEK) with SO_RCVLOWAT, neighbour", |side| {
        let (writer, reader) = tcp_pair();
        set_int_opt(reader.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVLOWAT, 10);
        let rest = rest_from_a_neighbour(side, writer);
        let got = recv_once(reader.as_raw_fd(), libc::MSG_PEEK);
        rest.join();
        got
    });
    assert_eq!(got, Ok(bytes(b"1234567890")));
}

/// `recv(2)` of up to `len` bytes with `flags`, as data.
fn recv_len_once(fd: RawFd, len: usize, flags: i32) -> Result<Bytes, Errno> {
    let mut buf = vec![0u8; len];
    // SAFETY: `buf` is valid for `len` bytes.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), len, flags) };
    c_outcome(n as i64).map(|n| bytes(&buf[..n as usize]))
}

/// What a `recvmsg(MSG_WAITALL)` with room for descriptors got.
#[derive(Debug, PartialEq)]
struct WithDescriptors {
    received: Result<i64, Errno>,
    descriptors: usize,
    control_truncated: bool,
}

/// A `recvmsg(MSG_WAITALL)` of `len` bytes with room for several
/// descriptors; closes those received.
fn recv_with_descriptors(fd: RawFd, len: usize) -> WithDescriptors {
    let mut buf = vec![0u8; len];
    let mut control = [0u64; 32];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    // SAFETY: an all-zero msghdr is valid; every pointer set outlives the
    // call, and the control messages read are the kernel's.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let received = c_outcome(libc::recvmsg(fd, &mut msg, libc::MSG_WAITALL) as i64);
        let mut descriptors = 0;
        for fd in support::raw::passed_fds(&msg) {
            libc::close(fd);
            descriptors += 1;
        }
        WithDescriptors {
            received,
            descriptors,
            control_truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
        }
    }
}

/// A `MSG_WAITALL` receive of 20 bytes stops after 10 that carried a
/// descriptor, with 10 more queued behind them.
#[test]
fn waitall_receive_stops_after_a_message_with_descriptors() {
    let got = differential("SCM_RIGHTS, then data; MSG_WAITALL", |_| {
        let (writer, reader) = UnixStream::pair().unwrap();
        let passed = File::open("/dev/null").unwrap();
        send_with_fd(&writer, b"0123456789", passed.as_raw_fd());
        (&writer).write_all(b"abcdefghij").unwrap();
        recv_with_descriptors(reader.as_raw_fd(), 20)
    });
    assert_eq!(
        got,
        WithDescriptors {
            received: Ok(10),
            descriptors: 1,
            control_truncated: false,
        }
    );
}

/// A `MSG_WAITALL` receive of 20 bytes with 10 queued waits for 10 more
/// that come later with a descriptor, and gets all 20 and the descriptor.
#[test]
fn waitall_receive_collects_a_later_message_with_descriptors() {
    let got = differential("data, then SCM_RIGHTS; MSG_WAITALL", |_| {
        let (writer, reader) = UnixStream::pair().unwrap();
        (&writer).write_all(b"abcdefghij").unwrap();
        let late = after(WAIT, move || {
            let passed = File::open("/dev/null").unwrap();
            send_with_fd(&writer, b"0123456789", passed.as_raw_fd());
            writer
        });
        let got = recv_with_descriptors(reader.as_raw_fd(), 20);
        drop(late.join().unwrap());
        got
    });
    assert_eq!(
        got,
        WithDescriptors {
            received: Ok(20),
            descriptors: 1,
            control_truncated: false,
        }
    );
}
