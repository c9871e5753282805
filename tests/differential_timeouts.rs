//! Socket timeouts, differentially: `SO_RCVTIMEO` and `SO_SNDTIMEO` bound
//! a blocking call as a whole, from its start, with the value the socket
//! had when the call began; a call that moved some bytes before its
//! timeout returns them. A coroutine's call is made of several attempts
//! and waits, so the runtime must keep one deadline across them, and read
//! the options however the user set them (`SO_RCVTIMEO_NEW`, a negative
//! `tv_sec`).
//!
//! Timings are compared coarsely (see `Against`): the kernel rounds
//! timeouts to its ticks, and a loaded machine adds tens of milliseconds.

mod support;

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use support::differential::*;
use support::*;

/// `recv(2)` into a buffer of `len` bytes with `flags`: the count, or the
/// error.
fn recv_len(fd: RawFd, len: usize, flags: i32) -> Result<i64, Errno> {
    let mut buf = vec![0u8; len];
    // SAFETY: `buf` is valid for `len` bytes.
    c_outcome(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), len, flags) } as i64)
}

/// Sets a timeout option from a raw `{seconds, microseconds}` pair, as a C
/// program may (the values `set_timeout_opt` cannot express); the result.
fn set_raw_timeout(fd: RawFd, name: i32, value: [i64; 2]) -> Result<i64, Errno> {
    // SAFETY: two 64-bit integers: a timeval on this ABI, and the
    // __kernel_sock_timeval of the *_NEW options.
    c_outcome(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            value.as_ptr().cast(),
            std::mem::size_of_val(&value) as libc::socklen_t,
        )
    })
}

/// A receive timeout of one microsecond fails at once with EAGAIN, as a
/// thread sees it.
#[test]
fn receive_timeout_of_one_microsecond_fails_at_once() {
    let got = differential("SO_RCVTIMEO 1 us", |_| {
        let (_writer, reader) = tcp_pair();
        set_timeout_opt(
            reader.as_raw_fd(),
            libc::SO_RCVTIMEO,
            Duration::from_micros(1),
        );
        timed(|| recv_len(reader.as_raw_fd(), 4, 0))
    });
    assert_eq!(got, (Err(Errno(libc::EAGAIN)), Timing::AtOnce));
}

/// A negative `tv_sec` is no timeout for Linux, but a zero one: a thread's
/// receive fails at once with EAGAIN.
#[test]
fn negative_receive_timeout_fails_at_once() {
    let got = differential("SO_RCVTIMEO {-1, 0}", |_| {
        let (_writer, reader) = tcp_pair();
        let set = set_raw_timeout(reader.as_raw_fd(), libc::SO_RCVTIMEO, [-1, 0]);
        (set, timed(|| recv_len(reader.as_raw_fd(), 8, 0)))
    });
    assert_eq!(got, (Ok(0), (Err(Errno(libc::EAGAIN)), Timing::AtOnce)));
}

const TIMEOUT: Duration = Duration::from_millis(200);

/// A thread's send of 8 MiB to a peer that does not read returns the part
/// that fitted when its send timeout runs out.
#[test]
fn send_timeout_ends_a_large_send_with_a_partial_count() {
    let got = differential("SO_SNDTIMEO, 8 MiB send", |_| {
        let (writer, _reader) = tcp_pair();
        set_timeout_opt(writer.as_raw_fd(), libc::SO_SNDTIMEO, TIMEOUT);
        let data = vec![0u8; 8 << 20];
        timed_against(TIMEOUT, || {
            // SAFETY: a send from a live buffer.
            let sent =
                unsafe { libc::send(writer.as_raw_fd(), data.as_ptr().cast(), data.len(), 0) };
            moved(sent, data.len())
        })
    });
    assert_eq!(got, (Ok(Moved::Part), Against::About));
}

/// A thread's `MSG_WAITALL` receive of 100 bytes with 10 there returns the
/// 10 when its receive timeout runs out.
#[test]
fn receive_timeout_ends_a_waitall_receive_with_what_came() {
    let got = differential("SO_RCVTIMEO, MSG_WAITALL", |_| {
        let (mut writer, reader) = tcp_pair();
        set_timeout_opt(reader.as_raw_fd(), libc::SO_RCVTIMEO, TIMEOUT);
        writer.write_all(&[1u8; 10]).unwrap();
        thread::sleep(Duration::from_millis(20));
        timed_against(TIMEOUT, || {
            recv_len(reader.as_raw_fd(), 100, libc::MSG_WAITALL)
        })
    });
    assert_eq!(got, (Ok(10), Against::About));
}

/// With `SO_RCVLOWAT` 50 and 10 bytes trickling in every 80 ms, a thread's
/// receive returns what came (below the mark) when the timeout, counted
/// from the call's start, runs out: each piece does not restart it.
#[test]
fn receive_timeout_counts_from_the_start_while_data_trickles_in() {
    const LOW_WATER: i64 = 50;
    let got = differential("SO_RCVTIMEO with a trickle below SO_RCVLOWAT", |_| {
        let (mut writer, reader) = tcp_pair();
        set_timeout_opt(reader.as_raw_fd(), libc::SO_RCVTIMEO, TIMEOUT);
        set_int_opt(
            reader.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            LOW_WATER as i32,
        );
        let trickle = thread::spawn(move || {
            for _ in 0..10 {
                thread::sleep(Duration::from_millis(80));
                let _ = writer.write_all(&[2u8; 10]);
            }
        });
        let (got, against) = timed_against(TIMEOUT, || recv_len(reader.as_raw_fd(), 100, 0));
        drop(reader);
        trickle.join().unwrap();
        (got.map(|n| n > 0 && n < LOW_WATER), against)
    });
    assert_eq!(got, (Ok(true), Against::About));
}

/// A blocking connect with a send timeout to a listener whose queue is
/// full (its SYN dropped) fails with EINPROGRESS at the timeout; a second
/// one, the first still in progress, waits as long again and fails with
/// EALREADY.
#[test]
fn send_timeout_ends_each_connect_to_a_full_listener() {
    const CONNECT_TIMEOUT: Duration = Duration::from_millis(150);
    let got = differential("connect with SO_SNDTIMEO to a full listener", |_| {
        let (listener, _queued) = full_listener();
        let addr = listener.local_addr().unwrap();
        let socket = raw_tcp_socket();
        set_timeout_opt(socket, libc::SO_SNDTIMEO, CONNECT_TIMEOUT);
        let connect = || timed_against(CONNECT_TIMEOUT, || outcome(raw_connect(socket, addr)));
        let got = (connect(), connect());
        // SAFETY: the socket is ours.
        unsafe { libc::close(socket) };
        got
    });
    assert_eq!(
        got,
        (
            (Err(Errno(libc::EINPROGRESS)), Against::About),
            (Err(Errno(libc::EALREADY)), Against::About)
        )
    );
}

/// A thread's receive keeps the timeout it started with when another
/// thread shortens it meanwhile.
#[test]
fn receive_timeout_changed_during_a_wait_does_not_apply_to_it() {
    const STARTED_WITH: Duration = Duration::from_millis(300);
    let got = differential("SO_RCVTIMEO changed during the wait", |_| {
        let (_writer, reader) = tcp_pair();
        let fd = reader.as_raw_fd();
        set_timeout_opt(fd, libc::SO_RCVTIMEO, STARTED_WITH);
        let changer = after(Duration::from_millis(20), move || {
            set_timeout_opt(fd, libc::SO_RCVTIMEO, Duration::from_millis(50))
        });
        let got = timed_against(STARTED_WITH, || recv_len(fd, 4, 0));
        changer.join().unwrap();
        got
    });
    assert_eq!(got, (Err(Errno(libc::EAGAIN)), Against::About));
}

/// A thread's receive that started blocking keeps blocking when another
/// thread sets O_NONBLOCK meanwhile (a socket call reads the mode as it
/// starts), and gets the data that comes later.
#[test]
fn receive_keeps_blocking_when_o_nonblock_is_set_during_the_wait() {
    let got = differential("O_NONBLOCK set during the wait", |_| {
        let (mut writer, reader) = tcp_pair();
        let fd = reader.as_raw_fd();
        let peer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            // SAFETY: F_GETFL/F_SETFL on a socket the case keeps open.
            unsafe {
                libc::fcntl(
                    fd,
                    libc::F_SETFL,
                    libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK,
                )
            };
            thread::sleep(Duration::from_millis(250));
            writer.write_all(b"data").unwrap();
            writer
        });
        let got = recv_len(fd, 4, 0);
        drop(peer.join().unwrap());
        got
    });
    assert_eq!(got, Ok(4));
}

/// `SO_RCVTIMEO_NEW` (what a program built with 64-bit `time_t` on a
/// 32-bit ABI sets) bounds a thread's receive as `SO_RCVTIMEO` does, also
/// on a socket that has already waited once.
#[test]
fn receive_timeout_set_as_so_rcvtimeo_new_after_a_wait_applies() {
    const SO_RCVTIMEO_NEW: i32 = 66;
    let got = differential("SO_RCVTIMEO_NEW after a first wait", |_| {
        let (mut writer, reader) = tcp_pair();
        let fd = reader.as_raw_fd();
        let (release, released) = mpsc::channel::<()>();
        let peer = after(Duration::from_millis(50), move || {
            writer.write_all(b"x").unwrap();
            // No end of file before the second receive has timed out.
            let _ = released.recv();
        });
        let first = recv_len(fd, 8, 0);
        let set = set_raw_timeout(fd, SO_RCVTIMEO_NEW, [0, TIMEOUT.as_micros() as i64]);
        let second = timed_against(TIMEOUT, || recv_len(fd, 8, 0));
        let _ = release.send(());
        peer.join().unwrap();
        (first, set, second)
    });
    assert_eq!(
        got,
        (Ok(1), Ok(0), (Err(Errno(libc::EAGAIN)), Against::About))
    );
}
