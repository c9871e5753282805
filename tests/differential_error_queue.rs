//! Socket error queues, differentially: `MSG_ERRQUEUE` reads never wait,
//! and what a socket queues there (zerocopy completions, transmit
//! timestamps) raises POLLERR without being an error: a blocking send on
//! such a socket completes on a thread, and with one zerocopy
//! notification per call, which a coroutine's send made of several
//! attempts must give too.

mod support;

use std::io::Read;
use std::net::{TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::thread;
use std::time::Duration;

use support::differential::*;
use support::*;

/// A `recvmsg(MSG_ERRQUEUE)` of an empty error queue on UDP fails at once
/// with EAGAIN.
#[test]
fn empty_error_queue_read_on_udp_fails_at_once() {
    let got = differential("recvmsg(MSG_ERRQUEUE), UDP", |_| {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        set_int_opt(socket.as_raw_fd(), libc::SOL_IP, libc::IP_RECVERR, 1);
        let mut buf = [0u8; 64];
        let mut control = [0u8; 256];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: an all-zero msghdr is valid; every pointer set outlives
        // the call.
        timed(|| unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = control.len();
            c_outcome(libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_ERRQUEUE) as i64)
        })
    });
    assert_eq!(got, (Err(Errno(libc::EAGAIN)), Timing::AtOnce));
}

/// A `recv(MSG_ERRQUEUE)` of an empty error queue on TCP fails at once with
/// EAGAIN.
#[test]
fn empty_error_queue_read_on_tcp_fails_at_once() {
    let got = differential("recv(MSG_ERRQUEUE), TCP", |_| {
        let (_writer, reader) = tcp_pair();
        let mut buf = [0u8; 64];
        // SAFETY: `buf` is valid for its length.
        timed(|| {
            c_outcome(unsafe {
                libc::recv(
                    reader.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_ERRQUEUE,
                )
            } as i64)
        })
    });
    assert_eq!(got, (Err(Errno(libc::EAGAIN)), Timing::AtOnce));
}

const SO_ZEROCOPY: i32 = 60;
const MSG_ZEROCOPY: i32 = 0x400_0000;
/// `SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE |
/// SOF_TIMESTAMPING_OPT_TSONLY`: a software timestamp per sent segment.
const TX_SOFTWARE_TIMESTAMPS: i32 = (1 << 1) | (1 << 4) | (1 << 11);

/// What a blocking send of 1 MiB returned, the option that set up the
/// error queue, and what the peer read.
#[derive(Debug, PartialEq)]
struct Sent {
    option_set: Result<i64, Errno>,
    sent: Result<i64, Errno>,
    read: usize,
}

const MIB: usize = 1 << 20;

/// Sets `option` to `value` on a TCP socket with a small send buffer, and
/// sends 1 MiB on it with `flags` in one blocking call while a plain
/// thread reads the other end.
fn send_with_error_queue(option: i32, value: i32, flags: i32) -> (Sent, TcpStream) {
    let (writer, mut reader) = tcp_pair();
    let fd = writer.as_raw_fd();
    // SAFETY: `value` is a live int of the given size.
    let option_set = c_outcome(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    });
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 16 * 1024);
    reader
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let peer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        let mut buf = vec![0u8; 8192];
        let mut total = 0;
        while total < MIB {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        total
    });
    let data = vec![3u8; MIB];
    // SAFETY: a send from a live buffer.
    let sent = c_outcome(unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), flags) } as i64);
    let read = peer.join().unwrap();
    (
        Sent {
            option_set,
            sent,
            read,
        },
        writer,
    )
}

/// The highest zerocopy notification ID on `fd`'s error queue, once the
/// notifications have come.
fn highest_zerocopy_id(fd: RawFd) -> Option<u32> {
    let mut ids = Vec::new();
    for _ in 0..200 {
        let mut control = [0u64; 16];
        // SAFETY: an all-zero msghdr is valid; the control buffer outlives
        // the call, and a control message read is an extended error.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control);
            let flags = libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT;
            if libc::recvmsg(fd, &mut msg, flags) < 0 {
                if !ids.is_empty() {
                    break;
                }
                // Not yet: the completions follow the peer's acks.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            if !cmsg.is_null() {
                let error = libc::CMSG_DATA(cmsg) as *const libc::sock_extended_err;
                ids.push((*error).ee_data);
            }
        }
    }
    ids.into_iter().max()
}

/// One blocking `send(MSG_ZEROCOPY)` of 1 MiB completes and is one
/// zerocopy notification (ID 0), however many times it had to wait.
#[test]
fn zerocopy_send_completes_as_one_notification() {
    let got = differential("send(MSG_ZEROCOPY) of 1 MiB", |_| {
        let (sent, writer) = send_with_error_queue(SO_ZEROCOPY, 1, MSG_ZEROCOPY);
        (sent, highest_zerocopy_id(writer.as_raw_fd()))
    });
    assert_eq!(
        got,
        (
            Sent {
                option_set: Ok(0),
                sent: Ok(MIB as i64),
                read: MIB,
            },
            Some(0)
        )
    );
}

/// A blocking send of 1 MiB with transmit timestamps on completes, the
/// timestamps queued meanwhile notwithstanding.
#[test]
fn send_with_transmit_timestamps_completes() {
    let got = differential("send of 1 MiB with TX timestamps", |_| {
        send_with_error_queue(libc::SO_TIMESTAMPING, TX_SOFTWARE_TIMESTAMPS, 0).0
    });
    assert_eq!(
        got,
        Sent {
            option_set: Ok(0),
            sent: Ok(MIB as i64),
            read: MIB,
        }
    );
}
