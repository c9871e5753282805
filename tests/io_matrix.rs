//! The hook layer's matrix, in the spirit of OpenJDK's virtual-thread socket
//! tests: each blocking operation std makes, in each situation it can meet,
//! inside a coroutine on ONE worker, with a "ticker" coroutine that proves
//! the worker kept running while the call waited.
//!
//! | operation      | ready at once | must wait | times out          | peer closes               | closed by another coroutine |
//! |----------------|---------------|-----------|--------------------|---------------------------|-----------------------------|
//! | accept         | yes           | yes       | SO_RCVTIMEO        | n/a (no peer)             | EBADF                       |
//! | connect        | yes           | yes (1)   | SO_SNDTIMEO, connect_timeout | refused, at once and while waiting | EBADF           |
//! | TCP read       | yes           | yes       | set_read_timeout   | EOF, reset                | EBADF                       |
//! | TCP write      | yes           | yes (2)   | set_write_timeout  | BrokenPipe/ConnectionReset | EBADF                      |
//! | UDP recv_from  | yes           | yes       | set_read_timeout   | ICMP unreachable (3)      | EBADF                       |
//! | pipe read      | yes           | yes       | n/a (no timeout)   | EOF                       | EBADF                       |
//! | pipe write     | yes           | yes (2)   | n/a (no timeout)   | BrokenPipe                | EBADF                       |
//! | poll           | yes           | yes       | poll's timeout     | POLLIN/POLLHUP            | POLLNVAL                    |
//! | sleep          | sleep(0)      | yes       | (is the wait)      | n/a                       | n/a                         |
//!
//! (1) The listener's accept queue is full, so the kernel drops the SYN and
//! retransmits it after about one second, once the queue has drained.
//! (2) The socket or pipe buffer is filled first.
//! (3) A connected UDP socket learns from ICMP that nobody listens.
//!
//! "Must wait" cells are woken by a plain OS thread after [`WAIT`]; "closed"
//! cells by another coroutine of the same worker after [`WAIT`]. Every test
//! runs under a watchdog, so a hook that blocks the worker fails instead of
//! hanging.

mod support;

use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::time::Duration;

use support::*;

/// The timeout set in "times out" cells.
const TIMEOUT: Duration = Duration::from_millis(150);

/// After a close from another coroutine, the waiter must wake within this
/// much of the close.
const CLOSE_SLACK: Duration = Duration::from_millis(200);

/// One cell of the matrix: a test running `$body` on one worker with a
/// ticker named `$ticker`; `exclusive` cells close descriptors in use and
/// run alone (see `support::on_one_worker_exclusive`).
macro_rules! cell {
    ($(#[$attr:meta])* fn $name:ident($ticker:ident) $body:block) => {
        $(#[$attr])*
        #[test]
        fn $name() {
            on_one_worker(stringify!($name), || {
                let $ticker = Ticker::start();
                $body
            });
        }
    };
    ($(#[$attr:meta])* exclusive fn $name:ident($ticker:ident) $body:block) => {
        $(#[$attr])*
        #[test]
        fn $name() {
            on_one_worker_exclusive(stringify!($name), || {
                let $ticker = Ticker::start();
                $body
            });
        }
    };
}

/// Asserts that a waiter closed by another coroutine after [`WAIT`] woke
/// promptly with EBADF while the worker kept running.
#[track_caller]
fn assert_closed<T: std::fmt::Debug>(
    what: &str,
    result: io::Result<T>,
    elapsed: Duration,
    ticks: u64,
) {
    assert_os_error(what, result, libc::EBADF);
    assert_parked(what, elapsed, ticks);
    assert!(
        elapsed < WAIT + CLOSE_SLACK,
        "{what}: woke {elapsed:?} after the wait began, the close came at {WAIT:?}"
    );
}

// ---------------------------------------------------------------- accept

cell! {
    fn accept_ready_at_once(ticker) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let ((_, peer), elapsed, _) = ticker.during(|| listener.accept().unwrap());
        assert_prompt("accept", elapsed);
        assert_eq!(peer, client.local_addr().unwrap());
    }
}

cell! {
    fn accept_must_wait(ticker) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = after(WAIT, move || TcpStream::connect(addr).unwrap());
        let ((_, peer), elapsed, ticks) = ticker.during(|| listener.accept().unwrap());
        assert_parked("accept", elapsed, ticks);
        assert_eq!(peer, client.join().unwrap().local_addr().unwrap());
    }
}

cell! {
    fn accept_times_out(ticker) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        set_timeout_opt(listener.as_raw_fd(), libc::SO_RCVTIMEO, TIMEOUT);
        let (result, elapsed, ticks) = ticker.during(|| listener.accept());
        let error = result.expect_err("accept with nobody connecting");
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock, "{error}");
        assert_about("accept", elapsed, TIMEOUT);
        assert_ticked(ticks);
        // The listener still works afterwards.
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
    }
}

cell! {
    exclusive fn accept_closed_by_another_coroutine(ticker) {
        let fd = TcpListener::bind("127.0.0.1:0").unwrap().into_raw_fd();
        let listener: ManuallyDrop<TcpListener> = borrowed(fd);
        let closer = close_later(fd, WAIT);
        let (result, elapsed, ticks) = ticker.during(|| listener.accept());
        assert_closed("accept", result, elapsed, ticks);
        closer.join().unwrap();
    }
}

// --------------------------------------------------------------- connect

cell! {
    fn connect_ready_at_once(ticker) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, elapsed, _) = ticker.during(|| TcpStream::connect(addr).unwrap());
        assert_prompt("connect", elapsed);
        assert_eq!(client.peer_addr().unwrap(), addr);
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
    }
}

cell! {
    fn connect_must_wait(ticker) {
        let (listener, queued) = full_listener();
        let addr = listener.local_addr().unwrap();
        // Drain the queue meanwhile; the SYN's retransmission then succeeds.
        let drainer = after(WAIT, move || {
            let first = listener.accept().unwrap();
            let second = listener.accept().unwrap();
            (listener, first, second)
        });
        let (client, elapsed, ticks) = ticker.during(|| TcpStream::connect(addr));
        let client = client.expect("connect once the queue drained");
        assert_parked("connect", elapsed, ticks);
        let (_listener, (_, first), (_, second)) = drainer.join().unwrap();
        assert_eq!(first, queued.local_addr().unwrap());
        assert_eq!(second, client.local_addr().unwrap());
    }
}

cell! {
    fn connect_times_out_with_so_sndtimeo(ticker) {
        let (listener, _queued) = full_listener();
        let fd = raw_tcp_socket();
        // SAFETY: `fd` is a new socket this test owns.
        let _owner = unsafe { TcpStream::from_raw_fd(fd) };
        set_timeout_opt(fd, libc::SO_SNDTIMEO, TIMEOUT);
        let addr = listener.local_addr().unwrap();
        let (result, elapsed, ticks) = ticker.during(|| raw_connect(fd, addr));
        // As the kernel does for a blocking connect that times out.
        assert_os_error("connect with SO_SNDTIMEO", result, libc::EINPROGRESS);
        assert_about("connect with SO_SNDTIMEO", elapsed, TIMEOUT);
        assert_ticked(ticks);
    }
}

cell! {
    fn connect_timeout_times_out(ticker) {
        // std's connect_timeout: non-blocking connect, then `poll`.
        let (listener, _queued) = full_listener();
        let addr = listener.local_addr().unwrap();
        let (result, elapsed, ticks) =
            ticker.during(|| TcpStream::connect_timeout(&addr, TIMEOUT));
        let error = result.expect_err("connect to a full queue");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert_about("connect_timeout", elapsed, TIMEOUT);
        assert_ticked(ticks);
    }
}

cell! {
    fn connect_peer_refuses_at_once(ticker) {
        let addr = refused_addr();
        let (result, elapsed, _) = ticker.during(|| TcpStream::connect(addr));
        let error = result.expect_err("connect to a closed port");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused, "{error}");
        assert_prompt("connect", elapsed);
    }
}

cell! {
    fn connect_peer_closes_while_waiting(ticker) {
        // The listener closes while the SYN waits for its retransmission,
        // which then meets a closed port.
        let (listener, queued) = full_listener();
        let addr = listener.local_addr().unwrap();
        let closer = after(WAIT, move || drop((listener, queued)));
        let (result, elapsed, ticks) = ticker.during(|| TcpStream::connect(addr));
        closer.join().unwrap();
        let error = result.expect_err("connect to a listener that closed");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused, "{error}");
        assert_parked("connect", elapsed, ticks);
    }
}

cell! {
    exclusive fn connect_closed_by_another_coroutine(ticker) {
        let (listener, _queued) = full_listener();
        let addr = listener.local_addr().unwrap();
        let fd = raw_tcp_socket();
        let closer = close_later(fd, WAIT);
        let (result, elapsed, ticks) = ticker.during(|| raw_connect(fd, addr));
        assert_closed("connect", result, elapsed, ticks);
        closer.join().unwrap();
    }
}

// -------------------------------------------------------------- TCP read

cell! {
    fn read_ready_at_once(ticker) {
        let (mut client, mut server) = tcp_pair();
        server.write_all(b"ready").unwrap();
        let mut buf = [0u8; 16];
        let (n, elapsed, _) = ticker.during(|| client.read(&mut buf).unwrap());
        assert_prompt("read", elapsed);
        assert_eq!(&buf[..n], b"ready");
    }
}

cell! {
    fn read_must_wait(ticker) {
        let (mut client, server) = tcp_pair();
        assert_read_parks_until_late_write("read", &ticker, &mut client, server);
    }
}

cell! {
    fn read_times_out(ticker) {
        let (mut client, _server) = tcp_pair();
        client.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buf = [0u8; 16];
        let (result, elapsed, ticks) = ticker.during(|| client.read(&mut buf));
        let error = result.expect_err("read with nothing sent");
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock, "{error}");
        assert_about("read", elapsed, TIMEOUT);
        assert_ticked(ticks);
    }
}

cell! {
    fn read_peer_closes(ticker) {
        let (mut client, server) = tcp_pair();
        let closer = after(WAIT, move || drop(server));
        let mut buf = [0u8; 16];
        let (n, elapsed, ticks) = ticker.during(|| client.read(&mut buf).unwrap());
        assert_eq!(n, 0, "end of file");
        assert_parked("read", elapsed, ticks);
        closer.join().unwrap();
    }
}

cell! {
    fn read_peer_half_closes(ticker) {
        let (mut client, server) = tcp_pair();
        let closer = after(WAIT, move || {
            server.shutdown(Shutdown::Write).unwrap();
            server
        });
        let mut buf = [0u8; 16];
        let (n, elapsed, ticks) = ticker.during(|| client.read(&mut buf).unwrap());
        assert_eq!(n, 0, "end of file");
        assert_parked("read", elapsed, ticks);
        // The other direction still works.
        let mut server = closer.join().unwrap();
        client.write_all(b"still open").unwrap();
        let mut buf = [0u8; 10];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"still open");
    }
}

cell! {
    fn read_peer_resets(ticker) {
        let (mut client, server) = tcp_pair();
        // SO_LINGER 0: closing sends a reset.
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: `linger` is a live struct of the given size.
        let ret = unsafe {
            libc::setsockopt(
                server.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &linger as *const libc::linger as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(ret, 0);
        let closer = after(WAIT, move || drop(server));
        let mut buf = [0u8; 16];
        let (result, elapsed, ticks) = ticker.during(|| client.read(&mut buf));
        let error = result.expect_err("read from a reset connection");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}");
        assert_parked("read", elapsed, ticks);
        closer.join().unwrap();
    }
}

cell! {
    exclusive fn read_closed_by_another_coroutine(ticker) {
        let (client, _server) = tcp_pair();
        let fd = client.into_raw_fd();
        let mut client: ManuallyDrop<TcpStream> = borrowed(fd);
        let closer = close_later(fd, WAIT);
        let mut buf = [0u8; 16];
        let (result, elapsed, ticks) = ticker.during(|| client.read(&mut buf));
        assert_closed("read", result, elapsed, ticks);
        closer.join().unwrap();
    }
}

// ------------------------------------------------------------- TCP write

cell! {
    fn write_ready_at_once(ticker) {
        let (mut client, mut server) = tcp_pair();
        let (n, elapsed, _) = ticker.during(|| client.write(b"at once").unwrap());
        assert_prompt("write", elapsed);
        assert_eq!(n, 7);
        let mut buf = [0u8; 7];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"at once");
    }
}

cell! {
    fn write_must_wait(ticker) {
        let (mut client, server) = tcp_pair();
        small_buffers(&client, &server);
        let filled = fill_send_buffer(&client);
        let reader = after(WAIT, move || drain(server));
        let chunk = [1u8; 4096];
        let (n, elapsed, ticks) = ticker.during(|| client.write(&chunk).unwrap());
        assert!(n > 0);
        assert_parked("write", elapsed, ticks);
        drop(client);
        assert_eq!(reader.join().unwrap(), filled + n, "bytes the reader got");
    }
}

cell! {
    fn write_times_out(ticker) {
        let (mut client, server) = tcp_pair();
        small_buffers(&client, &server);
        fill_send_buffer(&client);
        client.set_write_timeout(Some(TIMEOUT)).unwrap();
        let chunk = [1u8; 4096];
        let (result, elapsed, ticks) = ticker.during(|| client.write(&chunk));
        let error = result.expect_err("write to a full socket");
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock, "{error}");
        assert_about("write", elapsed, TIMEOUT);
        assert_ticked(ticks);
    }
}

cell! {
    fn write_peer_closes(ticker) {
        let (mut client, server) = tcp_pair();
        small_buffers(&client, &server);
        fill_send_buffer(&client);
        // Closing with unread data sends a reset.
        let closer = after(WAIT, move || drop(server));
        let chunk = [1u8; 4096];
        let (result, elapsed, ticks) = ticker.during(|| loop {
            // A write may still fit before the reset arrives; it must fail
            // soon after.
            if let Err(error) = client.write(&chunk) {
                break error;
            }
        });
        assert!(
            matches!(
                result.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ),
            "write to a closed peer: {result}"
        );
        assert_parked("write", elapsed, ticks);
        closer.join().unwrap();
    }
}

cell! {
    exclusive fn write_closed_by_another_coroutine(ticker) {
        let (client, server) = tcp_pair();
        small_buffers(&client, &server);
        fill_send_buffer(&client);
        let fd = client.into_raw_fd();
        let mut client: ManuallyDrop<TcpStream> = borrowed(fd);
        let closer = close_later(fd, WAIT);
        let chunk = [1u8; 4096];
        let (result, elapsed, ticks) = ticker.during(|| client.write(&chunk));
        assert_closed("write", result, elapsed, ticks);
        closer.join().unwrap();
    }
}

// --------------------------------------------------------- UDP recv_from

fn udp_pair() -> (UdpSocket, UdpSocket) {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    (a, b)
}

cell! {
    fn udp_recv_from_ready_at_once(ticker) {
        let (a, b) = udp_pair();
        b.send_to(b"dgram", a.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 16];
        let ((n, from), elapsed, _) = ticker.during(|| a.recv_from(&mut buf).unwrap());
        assert_prompt("recv_from", elapsed);
        assert_eq!((&buf[..n], from), (&b"dgram"[..], b.local_addr().unwrap()));
    }
}

cell! {
    fn udp_recv_from_must_wait(ticker) {
        let (a, b) = udp_pair();
        let to = a.local_addr().unwrap();
        let from_addr = b.local_addr().unwrap();
        let sender = after(WAIT, move || b.send_to(b"late", to).unwrap());
        let mut buf = [0u8; 16];
        let ((n, from), elapsed, ticks) = ticker.during(|| a.recv_from(&mut buf).unwrap());
        assert_parked("recv_from", elapsed, ticks);
        assert_eq!((&buf[..n], from), (&b"late"[..], from_addr));
        sender.join().unwrap();
    }
}

cell! {
    fn udp_recv_from_times_out(ticker) {
        let (a, _b) = udp_pair();
        a.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buf = [0u8; 16];
        let (result, elapsed, ticks) = ticker.during(|| a.recv_from(&mut buf));
        let error = result.expect_err("recv_from with nothing sent");
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock, "{error}");
        assert_about("recv_from", elapsed, TIMEOUT);
        assert_ticked(ticks);
    }
}

cell! {
    fn udp_recv_from_peer_unreachable(ticker) {
        // A connected UDP socket learns from ICMP that nobody listens: the
        // pending error wakes the receiver.
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let gone = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        socket.connect(gone).unwrap();
        let sender = socket.try_clone().unwrap();
        let sent = after(WAIT, move || sender.send(b"anyone?").unwrap());
        let mut buf = [0u8; 16];
        let (result, elapsed, ticks) = ticker.during(|| socket.recv_from(&mut buf));
        let error = result.expect_err("recv_from after ICMP port unreachable");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused, "{error}");
        assert_parked("recv_from", elapsed, ticks);
        sent.join().unwrap();
    }
}

cell! {
    exclusive fn udp_recv_from_closed_by_another_coroutine(ticker) {
        let fd = UdpSocket::bind("127.0.0.1:0").unwrap().into_raw_fd();
        let socket: ManuallyDrop<UdpSocket> = borrowed(fd);
        let closer = close_later(fd, WAIT);
        let mut buf = [0u8; 16];
        let (result, elapsed, ticks) = ticker.during(|| socket.recv_from(&mut buf));
        assert_closed("recv_from", result, elapsed, ticks);
        closer.join().unwrap();
    }
}

// ------------------------------------------------------------------ pipes

cell! {
    fn pipe_read_ready_at_once(ticker) {
        let (mut reader, mut writer) = io::pipe().unwrap();
        writer.write_all(b"piped").unwrap();
        let mut buf = [0u8; 16];
        let (n, elapsed, _) = ticker.during(|| reader.read(&mut buf).unwrap());
        assert_prompt("pipe read", elapsed);
        assert_eq!(&buf[..n], b"piped");
    }
}

cell! {
    fn pipe_read_must_wait(ticker) {
        let (mut reader, writer) = io::pipe().unwrap();
        assert_read_parks_until_late_write("pipe read", &ticker, &mut reader, writer);
    }
}

cell! {
    fn pipe_read_with_libc_pipe_must_wait(ticker) {
        // A pipe made by `libc::pipe` and read through `File`.
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors are new and owned here.
        let (mut reader, writer) =
            unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) };
        assert_read_parks_until_late_write("pipe read", &ticker, &mut reader, writer);
    }
}

cell! {
    fn pipe_read_peer_closes(ticker) {
        let (mut reader, writer) = io::pipe().unwrap();
        let closer = after(WAIT, move || drop(writer));
        let mut buf = [0u8; 16];
        let (n, elapsed, ticks) = ticker.during(|| reader.read(&mut buf).unwrap());
        assert_eq!(n, 0, "end of file");
        assert_parked("pipe read", elapsed, ticks);
        closer.join().unwrap();
    }
}

cell! {
    exclusive fn pipe_read_closed_by_another_coroutine(ticker) {
        let (reader, _writer) = io::pipe().unwrap();
        let fd = reader.into_raw_fd();
        let mut reader: ManuallyDrop<io::PipeReader> = borrowed(fd);
        let closer = close_later(fd, WAIT);
        let mut buf = [0u8; 16];
        let (result, elapsed, ticks) = ticker.during(|| reader.read(&mut buf));
        assert_closed("pipe read", result, elapsed, ticks);
        closer.join().unwrap();
    }
}

/// Fills a pipe so that the next write must wait; returns the byte count.
fn fill_pipe(writer: &io::PipeWriter) -> usize {
    let fd = writer.as_raw_fd();
    let blocking = flags(fd);
    // SAFETY: setting flags on a descriptor the caller owns.
    assert_eq!(
        unsafe { libc::fcntl(fd, libc::F_SETFL, blocking | libc::O_NONBLOCK) },
        0
    );
    let chunk = [7u8; 4096];
    let mut total = 0;
    loop {
        match (&*writer).write(&chunk) {
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the pipe: {e}"),
        }
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFL, blocking) }, 0);
    total
}

cell! {
    fn pipe_write_ready_at_once(ticker) {
        let (mut reader, mut writer) = io::pipe().unwrap();
        let (n, elapsed, _) = ticker.during(|| writer.write(b"piped").unwrap());
        assert_prompt("pipe write", elapsed);
        assert_eq!(n, 5);
        let mut buf = [0u8; 5];
        reader.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"piped");
    }
}

cell! {
    fn pipe_write_must_wait(ticker) {
        let (reader, mut writer) = io::pipe().unwrap();
        let filled = fill_pipe(&writer);
        let drainer = after(WAIT, move || drain(reader));
        let chunk = [1u8; 4096];
        let (n, elapsed, ticks) = ticker.during(|| writer.write(&chunk).unwrap());
        assert!(n > 0);
        assert_parked("pipe write", elapsed, ticks);
        drop(writer);
        assert_eq!(drainer.join().unwrap(), filled + n);
    }
}

cell! {
    fn pipe_write_peer_closes(ticker) {
        let (reader, mut writer) = io::pipe().unwrap();
        fill_pipe(&writer);
        let closer = after(WAIT, move || drop(reader));
        let chunk = [1u8; 4096];
        let (result, elapsed, ticks) = ticker.during(|| writer.write(&chunk));
        let error = result.expect_err("write to a pipe nobody reads");
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe, "{error}");
        assert_parked("pipe write", elapsed, ticks);
        closer.join().unwrap();
    }
}

cell! {
    exclusive fn pipe_write_closed_by_another_coroutine(ticker) {
        let (_reader, writer) = io::pipe().unwrap();
        fill_pipe(&writer);
        let fd = writer.into_raw_fd();
        let mut writer: ManuallyDrop<io::PipeWriter> = borrowed(fd);
        let closer = close_later(fd, WAIT);
        let chunk = [1u8; 4096];
        let (result, elapsed, ticks) = ticker.during(|| writer.write(&chunk));
        assert_closed("pipe write", result, elapsed, ticks);
        closer.join().unwrap();
    }
}

// ------------------------------------------------------------------- poll

/// `poll` on one descriptor; returns poll's result and the revents.
fn poll_one(fd: i32, events: i16, timeout_ms: i32) -> (i32, i16) {
    let mut pollfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one live pollfd.
    let ret = unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
    (ret, pollfd.revents)
}

cell! {
    fn poll_ready_at_once(ticker) {
        let (client, mut server) = tcp_pair();
        server.write_all(b"x").unwrap();
        let ((ret, revents), elapsed, _) =
            ticker.during(|| poll_one(client.as_raw_fd(), libc::POLLIN, 5000));
        assert_prompt("poll", elapsed);
        assert_eq!((ret, revents & libc::POLLIN), (1, libc::POLLIN));
    }
}

cell! {
    fn poll_must_wait(ticker) {
        let (client, mut server) = tcp_pair();
        let writer = after(WAIT, move || {
            server.write_all(b"x").unwrap();
            server
        });
        let ((ret, revents), elapsed, ticks) =
            ticker.during(|| poll_one(client.as_raw_fd(), libc::POLLIN, -1));
        assert_parked("poll", elapsed, ticks);
        assert_eq!((ret, revents), (1, libc::POLLIN));
        drop(writer.join().unwrap());
    }
}

cell! {
    fn poll_must_wait_for_writable(ticker) {
        let (client, server) = tcp_pair();
        small_buffers(&client, &server);
        fill_send_buffer(&client);
        let reader = after(WAIT, move || drain(server));
        let ((ret, revents), elapsed, ticks) =
            ticker.during(|| poll_one(client.as_raw_fd(), libc::POLLOUT, -1));
        assert_parked("poll", elapsed, ticks);
        assert_eq!((ret, revents), (1, libc::POLLOUT));
        drop(client);
        reader.join().unwrap();
    }
}

cell! {
    fn poll_times_out(ticker) {
        let (client, _server) = tcp_pair();
        let timeout = TIMEOUT.as_millis() as i32;
        let ((ret, revents), elapsed, ticks) =
            ticker.during(|| poll_one(client.as_raw_fd(), libc::POLLIN, timeout));
        assert_eq!((ret, revents), (0, 0));
        assert_about("poll", elapsed, TIMEOUT);
        assert_ticked(ticks);
    }
}

cell! {
    fn poll_no_fds_times_out(ticker) {
        // `poll(NULL, 0, ms)` is a sleep.
        let timeout = TIMEOUT.as_millis() as i32;
        // SAFETY: no descriptors.
        let (ret, elapsed, ticks) =
            ticker.during(|| unsafe { libc::poll(std::ptr::null_mut(), 0, timeout) });
        assert_eq!(ret, 0);
        assert_about("poll", elapsed, TIMEOUT);
        assert_ticked(ticks);
    }
}

cell! {
    fn poll_peer_closes(ticker) {
        let (client, server) = tcp_pair();
        let closer = after(WAIT, move || drop(server));
        let events = libc::POLLIN | libc::POLLRDHUP;
        let ((ret, revents), elapsed, ticks) =
            ticker.during(|| poll_one(client.as_raw_fd(), events, -1));
        assert_parked("poll", elapsed, ticks);
        assert_eq!(ret, 1);
        assert_eq!(revents & events, events, "revents {revents:#x}");
        closer.join().unwrap();
    }
}

cell! {
    exclusive fn poll_closed_by_another_coroutine(ticker) {
        let (client, _server) = tcp_pair();
        let fd = client.into_raw_fd();
        let closer = close_later(fd, WAIT);
        let ((ret, revents), elapsed, ticks) = ticker.during(|| poll_one(fd, libc::POLLIN, 5000));
        // As poll reports a descriptor that is not open.
        assert_eq!((ret, revents), (1, libc::POLLNVAL));
        assert_parked("poll", elapsed, ticks);
        assert!(elapsed < WAIT + CLOSE_SLACK, "woke {elapsed:?} after the wait began");
        closer.join().unwrap();
    }
}

// ------------------------------------------------------------------ sleep

cell! {
    fn sleep_zero_at_once(ticker) {
        let ((), elapsed, _) = ticker.during(|| std::thread::sleep(Duration::ZERO));
        assert_prompt("sleep(0)", elapsed);
    }
}

cell! {
    fn sleep_must_wait(ticker) {
        let ((), elapsed, ticks) = ticker.during(|| std::thread::sleep(WAIT));
        assert_parked("sleep", elapsed, ticks);
        assert_about("sleep", elapsed, WAIT);
    }
}

/// `MSG_WAITALL` still waits for the whole buffer in a coroutine, although
/// each attempt is made non-blocking, and the worker keeps running.
#[test]
fn recv_waitall_collects_the_whole_buffer() {
    use std::os::fd::AsRawFd;
    run(1, WATCHDOG, || {
        let (mut writer, reader) = tcp_pair();
        let ticker = Ticker::start();
        let late = after(Duration::from_millis(100), move || {
            writer.write_all(b"ab").unwrap();
            std::thread::sleep(Duration::from_millis(50));
            writer.write_all(b"cd").unwrap();
            writer
        });
        let mut buf = [0u8; 4];
        let (got, _elapsed, ticks) = ticker.during(|| {
            // SAFETY: `buf` is valid for 4 bytes.
            unsafe {
                libc::recv(
                    reader.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_WAITALL,
                )
            }
        });
        assert_eq!(got, 4, "recv(MSG_WAITALL) returned early");
        assert_eq!(&buf, b"abcd");
        assert_ticked(ticks);
        drop(late.join().unwrap());
    });
}
