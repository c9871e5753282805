//! Shutdowns, differentially: `shutdown(2)` by another thread ends a call
//! blocked on the socket, and the peer going away cuts a blocking write
//! short. Neither raises the readiness a coroutine might be waiting for
//! (a listener shut down is not readable; a Unix peer's `SHUT_RD` makes
//! the writer neither writable nor hung up), so the runtime must notice
//! them some other way, as the kernel does for a thread.

mod support;

use std::io::Read;
use std::net::{Shutdown, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::sync::mpsc;
use std::thread;

use support::differential::*;
use support::*;

/// Shuts `fd` down as `how` from a plain thread after [`WAIT`]; the caller
/// keeps the socket open until it joins the thread.
fn shut_down_later(fd: RawFd, how: i32) -> thread::JoinHandle<()> {
    after(WAIT, move || {
        // Unchecked: an unconnected UDP socket says ENOTCONN, and is shut
        // down all the same.
        // SAFETY: the caller keeps `fd` open until the join.
        unsafe { libc::shutdown(fd, how) };
    })
}

/// What a call ended by a shutdown returned, and how long it waited.
fn ended_by_shutdown<T>(fd: RawFd, how: i32, call: impl FnOnce() -> T) -> (T, Span) {
    let shutter = shut_down_later(fd, how);
    let got = timed_span(call);
    shutter.join().unwrap();
    got
}

/// A thread blocked in `accept` gets EINVAL when the listener is shut down.
#[test]
fn tcp_accept_ended_by_listener_shutdown_fails_with_einval() {
    let got = differential("TCP accept, listener shut down", |_| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        ended_by_shutdown(listener.as_raw_fd(), libc::SHUT_RDWR, || {
            outcome(listener.accept().map(drop))
        })
    });
    assert_eq!(got, (Err(Errno(libc::EINVAL)), Span::Woken));
}

/// A thread blocked in `accept` on a Unix listener gets EINVAL when the
/// listener is shut down.
#[test]
fn unix_accept_ended_by_listener_shutdown_fails_with_einval() {
    let got = differential("Unix accept, listener shut down", |_| {
        let path = TempPath::unique();
        let listener = UnixListener::bind(&*path).unwrap();
        ended_by_shutdown(listener.as_raw_fd(), libc::SHUT_RDWR, || {
            outcome(listener.accept().map(drop))
        })
    });
    assert_eq!(got, (Err(Errno(libc::EINVAL)), Span::Woken));
}

/// A thread blocked in `recv` on a UDP socket gets 0 (end of file) when
/// another thread shuts it down for reading.
#[test]
fn udp_recv_ended_by_shutdown_returns_zero() {
    let got = differential("UDP recv, SHUT_RD", |_| {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut buf = [0u8; 8];
        ended_by_shutdown(socket.as_raw_fd(), libc::SHUT_RD, || {
            outcome(socket.recv(&mut buf))
        })
    });
    assert_eq!(got, (Ok(0), Span::Woken));
}

/// A thread blocked in `recv` on a Unix datagram socket gets 0 when another
/// thread shuts it down for reading.
#[test]
fn unix_datagram_recv_ended_by_shutdown_returns_zero() {
    let got = differential("Unix datagram recv, SHUT_RD", |_| {
        let (socket, _peer) = UnixDatagram::pair().unwrap();
        let mut buf = [0u8; 8];
        ended_by_shutdown(socket.as_raw_fd(), libc::SHUT_RD, || {
            outcome(socket.recv(&mut buf))
        })
    });
    assert_eq!(got, (Ok(0), Span::Woken));
}

/// Far more than a Unix stream or pipe buffers: the write blocks.
const LARGE: usize = 4 << 20;

/// One blocking `write(2)` of [`LARGE`] bytes to `fd` while `cut` runs on a
/// plain thread after [`WAIT`]; whatever `cut` returns stays alive until
/// the write has returned.
fn write_cut_short<K: Send + 'static>(
    fd: RawFd,
    cut: impl FnOnce() -> K + Send + 'static,
) -> (Result<Moved, Errno>, Span) {
    let (release, released) = mpsc::channel::<()>();
    let cutter = after(WAIT, move || {
        let kept = cut();
        let _ = released.recv();
        kept
    });
    let data = vec![1u8; LARGE];
    // SAFETY: a write from a live buffer of LARGE bytes.
    let got = timed_span(|| {
        moved(
            unsafe { libc::write(fd, data.as_ptr().cast(), LARGE) },
            LARGE,
        )
    });
    let _ = release.send(());
    drop(cutter.join().unwrap());
    got
}

/// A thread's blocking write to a Unix stream returns the partial count
/// when the peer shuts down reading.
#[test]
fn unix_write_cut_by_peer_shutdown_returns_partial_count() {
    let got = differential("Unix write, peer SHUT_RD", |_| {
        let (writer, peer) = UnixStream::pair().unwrap();
        write_cut_short(writer.as_raw_fd(), move || {
            peer.shutdown(Shutdown::Read).unwrap();
            peer
        })
    });
    assert_eq!(got, (Ok(Moved::Part), Span::Woken));
}

/// A thread's blocking write to a Unix stream returns the partial count
/// when another thread shuts down the writer's own side for writing.
#[test]
fn unix_write_cut_by_own_shutdown_returns_partial_count() {
    let got = differential("Unix write, own SHUT_WR", |_| {
        let (writer, peer) = UnixStream::pair().unwrap();
        let clone = writer.try_clone().unwrap();
        write_cut_short(writer.as_raw_fd(), move || {
            clone.shutdown(Shutdown::Write).unwrap();
            (clone, peer)
        })
    });
    assert_eq!(got, (Ok(Moved::Part), Span::Woken));
}

/// A thread's blocking write to a pipe returns the partial count when the
/// reader reads a little and closes (the control case: this one raises an
/// event).
#[test]
fn pipe_write_cut_by_reader_close_returns_partial_count() {
    let got = differential("pipe write, reader closes", |_| {
        let (mut reader, writer) = std::io::pipe().unwrap();
        write_cut_short(writer.as_raw_fd(), move || {
            let mut buf = vec![0u8; 4096];
            let _ = reader.read(&mut buf);
        })
    });
    assert_eq!(got, (Ok(Moved::Part), Span::Woken));
}
