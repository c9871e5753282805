//! `SO_RCVTIMEO`/`SO_SNDTIMEO` (`set_read_timeout`/`set_write_timeout`)
//! inside a coroutine: calls time out after the right duration with
//! WouldBlock (EAGAIN, as the kernel gives it), the getters read back what
//! was set, data arriving in time wins, and the timeout is a property of the
//! socket, shared with its clones.

mod support;

use std::io::{self, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use support::*;

/// A whole number of jiffies for every common HZ (100, 250, 300, 1000):
/// the kernel stores socket timeouts in jiffies, so `read_timeout()` reads
/// 150 ms back as 152 ms with HZ=250, on a plain thread too.
const TIMEOUT: Duration = Duration::from_millis(200);

/// Asserts a WouldBlock after about [`TIMEOUT`] while the worker ran.
#[track_caller]
fn assert_timed_out<T: std::fmt::Debug>(
    what: &str,
    result: io::Result<T>,
    elapsed: Duration,
    ticks: u64,
) {
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        other => panic!("{what}: got {other:?}, want a WouldBlock timeout"),
    }
    assert_about(what, elapsed, TIMEOUT);
    assert!(
        ticks >= MIN_TICKS,
        "{what}: the ticker ticked {ticks} times while it waited: the worker was blocked"
    );
}

#[test]
fn read_timeout_times_out_and_reads_back() {
    on_one_worker("read timeout", || {
        let ticker = Ticker::start();
        let (mut client, _server) = tcp_pair();
        assert_eq!(client.read_timeout().unwrap(), None);
        client.set_read_timeout(Some(TIMEOUT)).unwrap();
        assert_eq!(client.read_timeout().unwrap(), Some(TIMEOUT));
        let mut buf = [0u8; 16];
        let (result, elapsed, ticks) = ticker.during(|| client.read(&mut buf));
        assert_timed_out("read", result, elapsed, ticks);
        // Each call gets the full timeout again.
        let (result, elapsed, ticks) = ticker.during(|| client.read(&mut buf));
        assert_timed_out("second read", result, elapsed, ticks);
        // The errno behind it is EAGAIN.
        let (result, _, _) = ticker.during(|| client.read(&mut buf));
        assert_os_error("read", result, libc::EAGAIN);
    });
}

#[test]
fn write_timeout_times_out_and_reads_back() {
    on_one_worker("write timeout", || {
        let ticker = Ticker::start();
        let (mut client, server) = tcp_pair();
        small_buffers(&client, &server);
        fill_send_buffer(&client);
        assert_eq!(client.write_timeout().unwrap(), None);
        client.set_write_timeout(Some(TIMEOUT)).unwrap();
        assert_eq!(client.write_timeout().unwrap(), Some(TIMEOUT));
        let (result, elapsed, ticks) = ticker.during(|| client.write(&[1u8; 4096]));
        assert_timed_out("write", result, elapsed, ticks);
        drop(server);
    });
}

#[test]
fn udp_read_timeout_times_out_and_reads_back() {
    on_one_worker("udp read timeout", || {
        let ticker = Ticker::start();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        assert_eq!(socket.read_timeout().unwrap(), Some(TIMEOUT));
        let mut buf = [0u8; 16];
        let (result, elapsed, ticks) = ticker.during(|| socket.recv_from(&mut buf));
        assert_timed_out("recv_from", result, elapsed, ticks);
    });
}

#[test]
fn data_arriving_before_the_timeout_is_returned() {
    on_one_worker("data in time", || {
        let ticker = Ticker::start();
        let (mut client, mut server) = tcp_pair();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let writer = after(WAIT, move || {
            server.write_all(b"in time").unwrap();
            server
        });
        let mut buf = [0u8; 16];
        let (n, elapsed, ticks) = ticker.during(|| client.read(&mut buf).unwrap());
        assert_parked("read", elapsed, ticks);
        assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
        assert_eq!(&buf[..n], b"in time");
        drop(writer.join().unwrap());
    });
}

#[test]
fn cleared_timeout_waits_for_data() {
    on_one_worker("cleared timeout", || {
        let ticker = Ticker::start();
        let (mut client, mut server) = tcp_pair();
        client
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        client.set_read_timeout(None).unwrap();
        assert_eq!(client.read_timeout().unwrap(), None);
        let late = Duration::from_millis(300);
        let writer = after(late, move || {
            server.write_all(b"late").unwrap();
            server
        });
        let mut buf = [0u8; 16];
        let (n, elapsed, _) = ticker.during(|| client.read(&mut buf).unwrap());
        assert!(
            elapsed >= late - Duration::from_millis(10),
            "took {elapsed:?}"
        );
        assert_eq!(&buf[..n], b"late");
        drop(writer.join().unwrap());
    });
}

#[test]
fn timeout_set_on_plain_thread_applies_in_coroutine() {
    let (client, server) = tcp_pair();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    on_one_worker("timeout set outside", move || {
        let ticker = Ticker::start();
        let mut client = client;
        assert_eq!(client.read_timeout().unwrap(), Some(TIMEOUT));
        let (result, elapsed, ticks) = ticker.during(|| client.read(&mut [0u8; 16]));
        assert_timed_out("read", result, elapsed, ticks);
        drop(server);
    });
}

#[test]
fn timeout_set_before_a_clone_applies_to_the_clone() {
    on_one_worker("timeout then clone", || {
        let ticker = Ticker::start();
        let (client, _server) = tcp_pair();
        client.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut clone = client.try_clone().unwrap();
        assert_eq!(clone.read_timeout().unwrap(), Some(TIMEOUT));
        let (result, elapsed, ticks) = ticker.during(|| clone.read(&mut [0u8; 16]));
        assert_timed_out("read on the clone", result, elapsed, ticks);
    });
}

#[test]
fn timeout_set_through_a_clone_applies_to_the_original() {
    // The timeout belongs to the socket, which a clone (dup) shares: a
    // thread reading the original times out.
    on_one_worker("clone then timeout", || {
        let ticker = Ticker::start();
        let (mut client, mut server) = tcp_pair();
        // The runtime has seen the original in use.
        server.write_all(b"x").unwrap();
        client.read_exact(&mut [0u8; 1]).unwrap();
        let clone = client.try_clone().unwrap();
        clone.set_read_timeout(Some(TIMEOUT)).unwrap();
        assert_eq!(client.read_timeout().unwrap(), Some(TIMEOUT));
        let (result, elapsed, ticks) = ticker.during(|| client.read(&mut [0u8; 16]));
        assert_timed_out("read on the original", result, elapsed, ticks);
    });
}

#[test]
fn connect_respects_send_timeout_then_works() {
    // SO_SNDTIMEO bounds a blocking connect (EINPROGRESS, as Linux gives);
    // a later connect on a fresh socket with a timeout succeeds normally.
    on_one_worker("connect timeout", || {
        let ticker = Ticker::start();
        let (listener, _queued) = full_listener();
        let fd = raw_tcp_socket();
        // SAFETY: `fd` is a new socket this test owns.
        let _owner = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        set_timeout_opt(fd, libc::SO_SNDTIMEO, TIMEOUT);
        let addr = listener.local_addr().unwrap();
        let (result, elapsed, ticks) = ticker.during(|| raw_connect(fd, addr));
        assert_os_error("connect", result, libc::EINPROGRESS);
        assert_about("connect", elapsed, TIMEOUT);
        assert!(ticks >= MIN_TICKS);
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = raw_tcp_socket();
        // SAFETY: as above.
        let _owner = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        set_timeout_opt(fd, libc::SO_SNDTIMEO, TIMEOUT);
        raw_connect(fd, open.local_addr().unwrap()).unwrap();
    });
}
