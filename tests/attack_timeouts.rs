//! Probes: socket timeouts, thread vs coroutine.

mod attack_common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use attack_common::*;

fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s)
}

fn set_tv(fd: i32, name: i32, sec: i64, usec: i64) -> i32 {
    let tv = libc::timeval {
        tv_sec: sec,
        tv_usec: usec,
    };
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&tv as *const libc::timeval).cast(),
            16,
        )
    }
}

macro_rules! both {
    ($name:literal, $limit:expr, $body:expr) => {{
        let t = on_thread($limit, $body);
        let c = in_coroutine(1, $limit, $body);
        compare($name, &t, &c);
    }};
}

/// Rounds a duration to 10 ms buckets for comparison.
fn bucket(d: Duration) -> u128 {
    (d.as_millis() + 5) / 10
}

#[test]
fn attack_rcvtimeo_one_microsecond() {
    both!("SO_RCVTIMEO 1 us", Duration::from_secs(3), || {
        let (_a, b) = tcp_pair();
        set_tv(b.as_raw_fd(), libc::SO_RCVTIMEO, 0, 1);
        let mut buf = [0u8; 4];
        let (r, took) =
            timed(|| res(unsafe { libc::recv(b.as_raw_fd(), buf.as_mut_ptr().cast(), 4, 0) }));
        (r, took < Duration::from_millis(50))
    });
}

#[test]
fn attack_sndtimeo_partial_write() {
    both!(
        "SO_SNDTIMEO 200 ms, 8 MiB write, peer not reading",
        Duration::from_secs(4),
        || {
            let (a, b) = tcp_pair();
            set_tv(a.as_raw_fd(), libc::SO_SNDTIMEO, 0, 200_000);
            let data = vec![0u8; 8 << 20];
            let (r, took) = timed(|| {
                res(unsafe { libc::send(a.as_raw_fd(), data.as_ptr().cast(), data.len(), 0) })
            });
            drop(b);
            (
                r.map(|n| (n > 0 && (n as usize) < data.len()) as isize),
                bucket(took) >= 19 && bucket(took) <= 30,
            )
        }
    );
}

#[test]
fn attack_rcvtimeo_waitall_partial() {
    both!(
        "SO_RCVTIMEO 200 ms, MSG_WAITALL 100 with 10 there",
        Duration::from_secs(4),
        || {
            let (mut a, b) = tcp_pair();
            set_tv(b.as_raw_fd(), libc::SO_RCVTIMEO, 0, 200_000);
            a.write_all(&[1u8; 10]).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            let mut buf = [0u8; 100];
            let (r, took) = timed(|| {
                res(unsafe {
                    libc::recv(
                        b.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        100,
                        libc::MSG_WAITALL,
                    )
                })
            });
            (r, bucket(took) >= 19 && bucket(took) <= 30)
        }
    );
}

/// The timeout is per call on a thread, measured from its first wait;
/// data trickling in every 80 ms with SO_RCVLOWAT 50 and SO_RCVTIMEO 200 ms.
#[test]
fn attack_rcvtimeo_with_trickle_and_lowat() {
    both!(
        "SO_RCVTIMEO 200 ms with trickle and SO_RCVLOWAT 50",
        Duration::from_secs(4),
        || {
            let (mut a, b) = tcp_pair();
            set_tv(b.as_raw_fd(), libc::SO_RCVTIMEO, 0, 200_000);
            let v: libc::c_int = 50;
            unsafe {
                libc::setsockopt(
                    b.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVLOWAT,
                    (&v as *const libc::c_int).cast(),
                    4,
                )
            };
            let w = std::thread::spawn(move || {
                for _ in 0..10 {
                    std::thread::sleep(Duration::from_millis(80));
                    let _ = a.write_all(&[2u8; 10]);
                }
                a
            });
            let mut buf = [0u8; 100];
            let (r, took) = timed(|| {
                res(unsafe { libc::recv(b.as_raw_fd(), buf.as_mut_ptr().cast(), 100, 0) })
            });
            drop(w.join());
            (r, bucket(took))
        }
    );
}

/// connect with SO_SNDTIMEO to a full listener (SYN dropped), twice.
#[test]
fn attack_connect_sndtimeo_twice() {
    both!(
        "connect with SO_SNDTIMEO 150 ms to a full listener, twice",
        Duration::from_secs(5),
        || {
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sin.sin_family = libc::AF_INET as u16;
            sin.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            let mut len = 16u32;
            unsafe {
                libc::bind(fd, (&sin as *const libc::sockaddr_in).cast(), 16);
                libc::listen(fd, 0);
                libc::getsockname(fd, (&mut sin as *mut libc::sockaddr_in).cast(), &mut len);
            }
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], u16::from_be(sin.sin_port)));
            let _queued = TcpStream::connect(addr).unwrap();
            let c = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            set_tv(c, libc::SO_SNDTIMEO, 0, 150_000);
            let (r1, t1) = timed(|| {
                res(
                    unsafe { libc::connect(c, (&sin as *const libc::sockaddr_in).cast(), 16) }
                        as isize,
                )
            });
            let (r2, t2) = timed(|| {
                res(
                    unsafe { libc::connect(c, (&sin as *const libc::sockaddr_in).cast(), 16) }
                        as isize,
                )
            });
            unsafe {
                libc::close(c);
                libc::close(fd);
            }
            // The kernel rounds a timeout to its ticks: within 30 ms.
            let near = |t: Duration| t.as_millis().abs_diff(150) <= 30;
            (r1, near(t1), r2, near(t2))
        }
    );
}

/// Read timeout changed by another thread while a read waits: a thread's
/// read keeps the timeout it started with.
#[test]
fn attack_rcvtimeo_changed_during_wait() {
    both!(
        "SO_RCVTIMEO 300 ms, changed to 50 ms by a thread during the wait",
        Duration::from_secs(4),
        || {
            let (_a, b) = tcp_pair();
            set_tv(b.as_raw_fd(), libc::SO_RCVTIMEO, 0, 300_000);
            let fd = b.as_raw_fd();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                set_tv(fd, libc::SO_RCVTIMEO, 0, 50_000);
            });
            let mut buf = [0u8; 4];
            let (r, took) = timed(|| res(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), 4, 0) }));
            std::thread::sleep(Duration::from_millis(50));
            (r, bucket(took) >= 29)
        }
    );
}

/// A thread's read that started blocking keeps blocking when another thread
/// sets O_NONBLOCK meanwhile (sockets read the mode at the start of the
/// call); here data comes at 300 ms.
#[test]
fn attack_nonblock_set_during_wait() {
    both!(
        "recv blocking, O_NONBLOCK set by a thread at 50 ms, data at 300 ms",
        Duration::from_secs(4),
        || {
            let (mut a, b) = tcp_pair();
            let fd = b.as_raw_fd();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                let f = unsafe { libc::fcntl(fd, libc::F_GETFL) };
                unsafe { libc::fcntl(fd, libc::F_SETFL, f | libc::O_NONBLOCK) };
                std::thread::sleep(Duration::from_millis(250));
                a.write_all(b"data").unwrap();
                std::thread::sleep(Duration::from_millis(500));
            });
            let mut buf = [0u8; 4];
            let r = res(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), 4, 0) });
            std::thread::sleep(Duration::from_millis(500));
            r
        }
    );
}

#[allow(dead_code)]
fn _unused(mut s: TcpStream) {
    let _ = s.read(&mut []);
}
