//! glibc's fortified entry points, differentially: what C code built with
//! `_FORTIFY_SOURCE` calls for `read`, `recv`, `recvfrom`, `poll` and
//! `ppoll` into buffers of known size. Each waits for a late peer as the
//! plain call does (a neighbour keeps running in a coroutine), and a size
//! that does not fit aborts the process on both sides, as glibc's check
//! does.

mod support;

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::Duration;

use support::differential::*;
use support::glibc::*;
use support::*;

/// How long the peer waits before it sends.
const LATE: Duration = Duration::from_millis(100);

/// A UDP socket and a way to send it a late datagram.
struct Receiver {
    socket: UdpSocket,
}

impl Receiver {
    fn new() -> Receiver {
        Receiver {
            socket: UdpSocket::bind("127.0.0.1:0").unwrap(),
        }
    }

    /// Sends "late" to the socket after [`LATE`], from a plain thread.
    fn late(&self) -> std::thread::JoinHandle<()> {
        let to = self.socket.local_addr().unwrap();
        after(LATE, move || {
            UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .send_to(b"late", to)
                .map(drop)
                .unwrap()
        })
    }
}

/// Each fortified receive and poll waits for a late datagram.
#[test]
fn fortified_calls_wait_for_a_late_peer() {
    let got = differential("fortified calls", |side| {
        let receiver = Receiver::new();
        let fd = receiver.socket.as_raw_fd();
        let companion = Companion::start(side);
        let mut buf = [0u8; 16];
        let mut results = Vec::new();
        let mut wait = |call: &mut dyn FnMut() -> i64| {
            let peer = receiver.late();
            let result = companion.during(|| timed(|| c_outcome(call())));
            peer.join().unwrap();
            results.push(result);
        };
        let ptr = buf.as_mut_ptr().cast();
        // SAFETY (each call): `buf` and the pollfds are live for their
        // stated sizes; no address is asked for.
        wait(&mut || unsafe { __read_chk(fd, ptr, 16, 16) } as i64);
        wait(&mut || unsafe { __recv_chk(fd, ptr, 16, 16, 0) } as i64);
        wait(&mut || unsafe {
            __recvfrom_chk(
                fd,
                ptr,
                16,
                16,
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        } as i64);
        let mut fds = [libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }];
        let size = std::mem::size_of_val(&fds);
        wait(&mut || unsafe { __poll_chk(fds.as_mut_ptr(), 1, 5_000, size) } as i64);
        // The datagram the poll saw is still queued: take it.
        receiver.socket.recv(&mut buf).unwrap();
        let far = libc::timespec {
            tv_sec: 5,
            tv_nsec: 0,
        };
        wait(
            &mut || unsafe { __ppoll_chk(fds.as_mut_ptr(), 1, &far, std::ptr::null(), size) }
                as i64,
        );
        results
    });
    let waited = ((Ok(4), Timing::Waited), true);
    let polled = ((Ok(1), Timing::Waited), true);
    assert_eq!(got, vec![waited, waited, waited, polled, polled]);
}

/// A read of more bytes than the buffer holds aborts, as glibc's check
/// does, before anything is read.
#[test]
fn fortified_read_past_its_buffer_aborts() {
    let ended = isolated(|_side| {
        let receiver = Receiver::new();
        let mut buf = [0u8; 8];
        // SAFETY: the check fails before the buffer is touched.
        unsafe { __read_chk(receiver.socket.as_raw_fd(), buf.as_mut_ptr().cast(), 16, 8) }
    });
    assert_eq!(ended, Ended::Killed(libc::SIGABRT));
}

/// A poll of more descriptors than the array holds aborts too.
#[test]
fn fortified_poll_past_its_array_aborts() {
    let ended = isolated(|_side| {
        let mut fds = [libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        }];
        let size = std::mem::size_of_val(&fds);
        // SAFETY: the check fails before the array is touched.
        unsafe { __poll_chk(fds.as_mut_ptr(), 2, 0, size) }
    });
    assert_eq!(ended, Ended::Killed(libc::SIGABRT));
}
