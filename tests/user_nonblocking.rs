//! Descriptors the user made non-blocking behave as on a thread inside a
//! coroutine: calls return WouldBlock at once, and `F_GETFL` shows
//! O_NONBLOCK exactly when the user set it, including while another
//! coroutine is parked in `accept` on the same listener (the runtime holds
//! the listener in O_NONBLOCK meanwhile and must hide it, and must neither
//! lose nor override what the user sets in the meantime).

mod support;

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

/// Runs `f`, asserting that it fails at once with WouldBlock.
#[track_caller]
fn assert_would_block_at_once<T: std::fmt::Debug>(what: &str, f: impl FnOnce() -> io::Result<T>) {
    let start = Instant::now();
    let result = f();
    let elapsed = start.elapsed();
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        other => panic!("{what}: got {other:?}, want WouldBlock"),
    }
    assert_prompt(what, elapsed);
}

#[test]
fn tcp_read_would_block_at_once_and_blocks_again_when_cleared() {
    on_one_worker("tcp read", || {
        let ticker = Ticker::start();
        let (mut client, server) = tcp_pair();
        let fd = client.as_raw_fd();
        assert!(!shows_nonblock(fd));
        client.set_nonblocking(true).unwrap();
        assert!(shows_nonblock(fd), "F_GETFL after set_nonblocking(true)");
        assert_would_block_at_once("read", || client.read(&mut [0u8; 4]));
        assert_would_block_at_once("peek", || client.peek(&mut [0u8; 4]));
        client.set_nonblocking(false).unwrap();
        assert!(!shows_nonblock(fd), "F_GETFL after set_nonblocking(false)");
        // Blocking again: the read parks until the peer writes.
        assert_read_parks_until_late_write("read", &ticker, &mut client, server);
    });
}

#[test]
fn tcp_write_to_full_buffer_would_block_at_once() {
    on_one_worker("tcp write", || {
        let (mut client, server) = tcp_pair();
        small_buffers(&client, &server);
        fill_send_buffer(&client);
        client.set_nonblocking(true).unwrap();
        assert_would_block_at_once("write", || client.write(&[1u8; 4096]));
    });
}

#[test]
fn accept_would_block_at_once() {
    on_one_worker("accept", || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        assert!(shows_nonblock(listener.as_raw_fd()));
        assert_would_block_at_once("accept", || listener.accept());
        // A connection is then accepted at once, as on a thread.
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
    });
}

#[test]
fn udp_recv_from_would_block_at_once() {
    on_one_worker("udp", || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        assert!(shows_nonblock(socket.as_raw_fd()));
        assert_would_block_at_once("recv_from", || socket.recv_from(&mut [0u8; 4]));
        assert_would_block_at_once("recv", || socket.recv(&mut [0u8; 4]));
    });
}

#[test]
fn pipe_made_nonblocking_with_fcntl_would_block_at_once() {
    on_one_worker("pipe", || {
        let (mut reader, _writer) = io::pipe().unwrap();
        let fd = reader.as_raw_fd();
        let blocking = flags(fd);
        assert_eq!(blocking & libc::O_NONBLOCK, 0);
        // SAFETY: setting flags on a descriptor owned here.
        assert_eq!(
            unsafe { libc::fcntl(fd, libc::F_SETFL, blocking | libc::O_NONBLOCK) },
            0
        );
        assert_eq!(flags(fd), blocking | libc::O_NONBLOCK);
        assert_would_block_at_once("pipe read", || reader.read(&mut [0u8; 4]));
        // SAFETY: as above.
        assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFL, blocking) }, 0);
        assert_eq!(flags(fd), blocking);
    });
}

#[test]
fn created_nonblocking_would_block_at_once() {
    on_one_worker("created non-blocking", || {
        // SOCK_NONBLOCK at creation.
        let mut sv = [0; 2];
        // SAFETY: `sv` has room for two descriptors.
        let ret = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
                sv.as_mut_ptr(),
            )
        };
        assert_eq!(ret, 0);
        // SAFETY: both descriptors are new and owned here.
        let (mut a, _b) = unsafe {
            use std::os::fd::FromRawFd;
            (
                std::os::unix::net::UnixStream::from_raw_fd(sv[0]),
                std::os::unix::net::UnixStream::from_raw_fd(sv[1]),
            )
        };
        assert!(shows_nonblock(a.as_raw_fd()));
        assert_would_block_at_once("socketpair read", || a.read(&mut [0u8; 4]));
        // O_NONBLOCK at pipe2.
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for two descriptors.
        assert_eq!(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) },
            0
        );
        // SAFETY: both descriptors are new and owned here.
        let (mut reader, _writer) = unsafe {
            use std::os::fd::FromRawFd;
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        };
        assert!(shows_nonblock(reader.as_raw_fd()));
        assert_would_block_at_once("pipe2 read", || reader.read(&mut [0u8; 4]));
    });
}

#[test]
fn set_on_plain_thread_would_block_at_once_in_coroutine() {
    let (client, _server) = tcp_pair();
    client.set_nonblocking(true).unwrap();
    on_one_worker("set outside", move || {
        let mut client = client;
        assert!(shows_nonblock(client.as_raw_fd()));
        assert_would_block_at_once("read", || client.read(&mut [0u8; 4]));
        drop(_server);
    });
}

#[test]
fn nonblocking_set_through_a_clone_applies_to_the_original() {
    // A clone (dup) shares the open file description, hence O_NONBLOCK.
    on_one_worker("set through a clone", || {
        let (mut client, _server) = tcp_pair();
        // The runtime has seen the original in blocking use.
        client.write_all(b"x").unwrap();
        let clone = client.try_clone().unwrap();
        clone.set_nonblocking(true).unwrap();
        assert!(
            shows_nonblock(client.as_raw_fd()),
            "F_GETFL of the original"
        );
        assert_would_block_at_once("read on the original", || client.read(&mut [0u8; 4]));
    });
}

/// Starts a coroutine parked in `accept` on `listener` (the same
/// descriptor, on this worker) and returns its handle once it is parked.
fn parked_acceptor(listener: &Arc<TcpListener>) -> coroutines::JoinHandle<io::Result<TcpStream>> {
    let listener = listener.clone();
    let handle = coroutines::spawn(move || listener.accept().map(|(s, _)| s));
    std::thread::sleep(Duration::from_millis(20));
    assert!(!handle.is_finished(), "the acceptor should be parked");
    handle
}

#[test]
fn getfl_hides_runtime_nonblock_while_another_coroutine_accepts() {
    on_one_worker("hidden during accept", || {
        let ticker = Ticker::start();
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let fd = listener.as_raw_fd();
        let before = flags(fd);
        assert_eq!(before & libc::O_NONBLOCK, 0);
        let acceptor = parked_acceptor(&listener);
        assert_eq!(flags(fd), before, "F_GETFL while another coroutine accepts");
        // The user's own blocking accept still parks rather than failing.
        let addr = listener.local_addr().unwrap();
        let clients = after(WAIT, move || {
            (
                TcpStream::connect(addr).unwrap(),
                TcpStream::connect(addr).unwrap(),
            )
        });
        let (result, elapsed, ticks) = ticker.during(|| listener.accept());
        result.expect("a blocking accept must not see the runtime's O_NONBLOCK");
        assert_parked("accept", elapsed, ticks);
        acceptor.join().unwrap().unwrap();
        drop(clients.join().unwrap());
        assert_eq!(flags(fd), before, "F_GETFL after the accepts");
        assert_eq!(
            kernel_flags(fd),
            before,
            "the kernel's flags after the accepts"
        );
    });
}

/// Sets O_NONBLOCK on a listener with `set_nonblock` (given the flags read
/// before anyone accepted; `how` names the way) while another coroutine is
/// parked in accept on it, and checks that the user sees the flag at once
/// and keeps it after the other accept ended.
fn nonblock_set_during_accept_is_shown_and_kept(
    how: &str,
    set_nonblock: impl FnOnce(&TcpListener, i32),
) {
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
    let fd = listener.as_raw_fd();
    let before = flags(fd);
    let acceptor = parked_acceptor(&listener);
    set_nonblock(&listener, before);
    assert!(shows_nonblock(fd), "F_GETFL right after {how}");
    assert_would_block_at_once("the user's accept", || listener.accept());
    // The parked acceptor, which began blocking, finishes its accept.
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let accepted = acceptor.join().unwrap().unwrap();
    assert_eq!(accepted.peer_addr().unwrap(), client.local_addr().unwrap());
    // The user's O_NONBLOCK outlives the runtime's hold.
    assert!(shows_nonblock(fd), "F_GETFL after the other accept ended");
    assert!(kernel_flags(fd) & libc::O_NONBLOCK != 0, "kernel flags");
    assert_would_block_at_once("the user's accept", || listener.accept());
}

#[test]
fn fcntl_nonblock_set_while_another_coroutine_accepts_is_shown_and_kept() {
    on_one_worker("fcntl during accept", || {
        nonblock_set_during_accept_is_shown_and_kept(
            "the user set O_NONBLOCK",
            |listener, before| {
                // SAFETY: setting flags on a descriptor owned here.
                assert_eq!(
                    unsafe {
                        libc::fcntl(
                            listener.as_raw_fd(),
                            libc::F_SETFL,
                            before | libc::O_NONBLOCK,
                        )
                    },
                    0
                );
            },
        );
    });
}

#[test]
fn set_nonblocking_while_another_coroutine_accepts_is_shown_and_kept() {
    // As above, through `set_nonblocking` (ioctl FIONBIO).
    on_one_worker("FIONBIO during accept", || {
        nonblock_set_during_accept_is_shown_and_kept("set_nonblocking(true)", |listener, _| {
            listener.set_nonblocking(true).unwrap();
        });
    });
}

/// Parks two coroutines in accept on a new listener, lets `confirm_blocking`
/// (given the listener and its flags read before anyone accepted) confirm
/// blocking mode, and checks that when one connection wakes both acceptors
/// the worker is not blocked. Returns the listener and the flags read at
/// first, for the caller's checks.
fn confirm_blocking_during_accept_keeps_the_worker_running(
    confirm_blocking: impl FnOnce(&TcpListener, i32),
) -> (Arc<TcpListener>, i32) {
    let ticker = Ticker::start();
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
    let fd = listener.as_raw_fd();
    let before = flags(fd);
    let first = parked_acceptor(&listener);
    let second = parked_acceptor(&listener);
    confirm_blocking(&listener, before);
    let addr = listener.local_addr().unwrap();
    ticker.take_max_gap();
    let clients = after(Duration::ZERO, move || {
        let one = TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let two = TcpStream::connect(addr).unwrap();
        (one, two)
    });
    first.join().unwrap().unwrap();
    second.join().unwrap().unwrap();
    let gap = ticker.take_max_gap();
    assert!(
        gap < Duration::from_millis(100),
        "the worker stopped running other coroutines for {gap:?}: an accept blocked it"
    );
    drop(clients.join().unwrap());
    (listener, before)
}

#[test]
fn set_nonblocking_false_while_others_accept_does_not_block_the_worker() {
    // The user confirms blocking mode (a no-op for them) while two
    // coroutines are parked in accept. One connection wakes both; the one
    // that loses the race must park again, not block the worker in a
    // blocking accept4.
    on_one_worker("FIONBIO off during accept", || {
        let (listener, _) =
            confirm_blocking_during_accept_keeps_the_worker_running(|listener, _| {
                listener.set_nonblocking(false).unwrap();
                assert!(!shows_nonblock(listener.as_raw_fd()));
            });
        let fd = listener.as_raw_fd();
        assert!(!shows_nonblock(fd));
        assert_eq!(kernel_flags(fd) & libc::O_NONBLOCK, 0, "kernel flags");
    });
}

#[test]
fn fcntl_clear_while_others_accept_does_not_block_the_worker() {
    // As above, through F_SETFL.
    on_one_worker("F_SETFL off during accept", || {
        let (listener, before) =
            confirm_blocking_during_accept_keeps_the_worker_running(|listener, before| {
                // SAFETY: setting flags on a descriptor owned here.
                assert_eq!(
                    unsafe { libc::fcntl(listener.as_raw_fd(), libc::F_SETFL, before) },
                    0
                );
            });
        let fd = listener.as_raw_fd();
        assert_eq!(flags(fd), before);
        assert_eq!(kernel_flags(fd), before, "kernel flags");
    });
}

#[test]
fn getfl_hides_runtime_nonblock_while_a_clone_accepts() {
    // Accepting on clones of one listener is the usual way to share it; a
    // clone shares the open file description, hence its flags.
    on_one_worker("hidden during accept on a clone", || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = listener.as_raw_fd();
        let before = flags(fd);
        let clone = listener.try_clone().unwrap();
        let acceptor = coroutines::spawn(move || clone.accept().map(|(s, _)| s));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            flags(fd),
            before,
            "F_GETFL of the original while a clone accepts"
        );
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let accepted = acceptor.join().unwrap().unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), client.local_addr().unwrap());
        assert_eq!(
            kernel_flags(fd),
            before,
            "the kernel's flags after the accept"
        );
    });
}

#[test]
fn plain_thread_accept_blocks_while_a_coroutine_accepts() {
    // A thread's blocking accept on a listener a coroutine is parked on
    // must wait for a connection, not fail with WouldBlock.
    on_one_worker("plain-thread accept", || {
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap();
        let acceptor = parked_acceptor(&listener);
        let on_thread = listener.clone();
        let thread_accept = std::thread::spawn(move || {
            let start = Instant::now();
            let result = on_thread.accept().map(drop);
            (result, start.elapsed())
        });
        let clients = after(WAIT, move || {
            (
                TcpStream::connect(addr).unwrap(),
                TcpStream::connect(addr).unwrap(),
            )
        });
        // Wait for the thread without blocking the worker.
        while !thread_accept.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (result, elapsed) = thread_accept.join().unwrap();
        acceptor.join().unwrap().unwrap();
        drop(clients.join().unwrap());
        result.expect("a plain thread's blocking accept");
        assert!(
            elapsed >= WAIT - Duration::from_millis(10),
            "returned after {elapsed:?}"
        );
    });
}
