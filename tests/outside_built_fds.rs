//! Descriptors created outside any coroutine work inside one without
//! blocking the worker: a listener, a stream, a UDP socket and a pipe built
//! on a plain thread before the test's runtime exists; descriptors made by
//! raw system calls the hooks never see; and afterwards, the same
//! descriptors still block as usual on a plain thread (the runtime left no
//! O_NONBLOCK behind).

mod support;

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use support::*;

#[test]
fn listener_built_on_plain_thread_accepts_without_blocking_the_worker() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // Used blocking on this thread first.
    let first = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    assert_eq!(listener.accept().unwrap().1, first.local_addr().unwrap());
    on_one_worker("outside-built listener", move || {
        let ticker = Ticker::start();
        let addr = listener.local_addr().unwrap();
        let client = after(WAIT, move || TcpStream::connect(addr).unwrap());
        let ((_, peer), elapsed, ticks) = ticker.during(|| listener.accept().unwrap());
        assert_parked("accept", elapsed, ticks);
        assert_eq!(peer, client.join().unwrap().local_addr().unwrap());
    });
}

#[test]
fn stream_built_on_plain_thread_reads_and_writes_without_blocking_the_worker() {
    let (mut client, mut server) = tcp_pair();
    client.write_all(b"from the thread").unwrap();
    let mut buf = [0u8; 15];
    server.read_exact(&mut buf).unwrap();
    small_buffers(&client, &server);
    on_one_worker("outside-built stream", move || {
        let ticker = Ticker::start();
        // Read: the peer writes later.
        let server = assert_read_parks_until_late_write("read", &ticker, &mut client, server);
        // Write: the buffer is full until the peer reads.
        let filled = fill_send_buffer(&client);
        let reader = after(WAIT, move || drain(server));
        let (n, elapsed, ticks) = ticker.during(|| client.write(&[1u8; 4096]).unwrap());
        assert_parked("write", elapsed, ticks);
        drop(client);
        assert_eq!(reader.join().unwrap(), filled + n);
    });
}

#[test]
fn udp_socket_built_on_plain_thread_receives_without_blocking_the_worker() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    on_one_worker("outside-built UDP socket", move || {
        let ticker = Ticker::start();
        let to = socket.local_addr().unwrap();
        let sender = after(WAIT, move || {
            let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
            peer.send_to(b"late", to).unwrap();
        });
        let mut buf = [0u8; 16];
        let ((n, _), elapsed, ticks) = ticker.during(|| socket.recv_from(&mut buf).unwrap());
        assert_parked("recv_from", elapsed, ticks);
        assert_eq!(&buf[..n], b"late");
        sender.join().unwrap();
    });
}

#[test]
fn pipe_built_on_plain_thread_reads_without_blocking_the_worker() {
    let (mut reader, mut writer) = io::pipe().unwrap();
    writer.write_all(b"x").unwrap();
    reader.read_exact(&mut [0u8; 1]).unwrap();
    on_one_worker("outside-built pipe", move || {
        let ticker = Ticker::start();
        assert_read_parks_until_late_write("pipe read", &ticker, &mut reader, writer);
    });
}

/// A socket pair made by the raw system call, which no hook sees.
fn raw_socketpair() -> (UnixStream, UnixStream) {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for two descriptors.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_socketpair,
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(ret, 0, "socketpair: {}", io::Error::last_os_error());
    // SAFETY: both descriptors are new and owned here.
    unsafe {
        (
            UnixStream::from_raw_fd(fds[0]),
            UnixStream::from_raw_fd(fds[1]),
        )
    }
}

/// A pipe made by the raw system call, which no hook sees.
fn raw_pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for two descriptors.
    let ret = unsafe { libc::syscall(libc::SYS_pipe2, fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(ret, 0, "pipe2: {}", io::Error::last_os_error());
    // SAFETY: both descriptors are new and owned here.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

#[test]
fn socketpair_made_by_raw_syscall_reads_without_blocking_the_worker() {
    on_one_worker("raw socketpair", || {
        let ticker = Ticker::start();
        let (mut a, b) = raw_socketpair();
        assert_read_parks_until_late_write("read", &ticker, &mut a, b);
    });
}

#[test]
fn pipe_made_by_raw_syscall_reads_without_blocking_the_worker() {
    on_one_worker("raw pipe", || {
        let ticker = Ticker::start();
        let (mut reader, writer) = raw_pipe();
        assert_read_parks_until_late_write("pipe read", &ticker, &mut reader, writer);
    });
}

#[test]
fn raw_syscall_nonblocking_socket_still_returns_would_block() {
    // Made non-blocking by a raw fcntl no hook sees: the runtime must learn
    // the mode from the kernel, not assume blocking.
    on_one_worker("raw non-blocking", || {
        let (mut a, _b) = raw_socketpair();
        // SAFETY: plain flag changes on a descriptor owned here.
        unsafe {
            let flags = libc::syscall(libc::SYS_fcntl, a.as_raw_fd(), libc::F_GETFL);
            let ret = libc::syscall(
                libc::SYS_fcntl,
                a.as_raw_fd(),
                libc::F_SETFL,
                flags | libc::O_NONBLOCK as libc::c_long,
            );
            assert_eq!(ret, 0);
        }
        let start = Instant::now();
        let error = a.read(&mut [0u8; 4]).expect_err("nothing to read");
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock, "{error}");
        assert_prompt("read", start.elapsed());
    });
}

/// Returns after `f` has blocked the calling plain thread for ~`WAIT`.
fn assert_blocks_plain_thread<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) {
    let start = Instant::now();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(f()).unwrap());
    finished
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("{what}: the plain thread never finished"));
    assert!(
        start.elapsed() >= WAIT - Duration::from_millis(10),
        "{what}: returned after {:?} on a plain thread, before its peer acted: \
         the runtime left the descriptor non-blocking",
        start.elapsed()
    );
}

#[test]
fn descriptors_still_block_on_plain_threads_after_use_in_coroutines() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tcp_pair();
    let (reader, writer) = io::pipe().unwrap();
    let fds: Vec<OwnedFd> = vec![
        listener.try_clone().unwrap().into(),
        client.try_clone().unwrap().into(),
        reader.try_clone().unwrap().into(),
    ];
    let before: Vec<i32> = fds.iter().map(|fd| kernel_flags(fd.as_raw_fd())).collect();
    // Use each of them in coroutines, with waits.
    let (listener, client, server, reader, writer) = {
        let (tx, rx) = std::sync::mpsc::channel();
        on_one_worker("use in coroutines", move || {
            let connector = after(Duration::from_millis(20), move || TcpStream::connect(addr));
            listener.accept().unwrap();
            connector.join().unwrap().unwrap();
            let (mut client, mut server) = (client, server);
            let (mut reader, mut writer) = (reader, writer);
            let late = after(Duration::from_millis(20), move || {
                server.write_all(b"x").unwrap();
                writer.write_all(b"x").unwrap();
                (server, writer)
            });
            client.read_exact(&mut [0u8; 1]).unwrap();
            reader.read_exact(&mut [0u8; 1]).unwrap();
            let (server, writer) = late.join().unwrap();
            tx.send((listener, client, server, reader, writer)).unwrap();
        });
        rx.recv().unwrap()
    };
    let after_use: Vec<i32> = fds.iter().map(|fd| kernel_flags(fd.as_raw_fd())).collect();
    assert_eq!(
        before, after_use,
        "F_GETFL before and after use in coroutines"
    );
    // On a plain thread, each call waits for its peer again.
    let connector = after(WAIT, move || TcpStream::connect(addr).unwrap());
    assert_blocks_plain_thread("accept", move || listener.accept().unwrap());
    connector.join().unwrap();
    let (mut client, mut server) = (client, server);
    let late = after(WAIT, move || server.write_all(b"y").unwrap());
    assert_blocks_plain_thread("read", move || client.read_exact(&mut [0u8; 1]).unwrap());
    late.join().unwrap();
    let (mut reader, mut writer) = (reader, writer);
    let late = after(WAIT, move || writer.write_all(b"y").unwrap());
    assert_blocks_plain_thread("pipe read", move || {
        reader.read_exact(&mut [0u8; 1]).unwrap()
    });
    late.join().unwrap();
}
