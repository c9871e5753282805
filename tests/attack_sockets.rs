//! Probes: socket calls compared between a plain thread and a coroutine.

mod attack_common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use attack_common::*;

fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s)
}

/// recv(MSG_PEEK | MSG_WAITALL) on TCP with half the data there: a thread
/// waits for the rest. The rest comes from another coroutine of the same
/// worker (thread case: another thread) after 200 ms.
#[test]
fn attack_peek_waitall_tcp_with_writer_on_same_worker() {
    let limit = Duration::from_secs(4);
    let probe = |spawn_writer: fn(TcpStream)| {
        move || {
            let (mut a, b) = tcp_pair();
            a.write_all(b"12345").unwrap();
            spawn_writer(a);
            let mut buf = [0u8; 10];
            let n = unsafe {
                libc::recv(
                    b.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    10,
                    libc::MSG_PEEK | libc::MSG_WAITALL,
                )
            };
            res(n)
        }
    };
    let t = on_thread(
        limit,
        probe(|mut a| {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                a.write_all(b"67890").unwrap();
                std::thread::sleep(Duration::from_millis(500));
            });
        }),
    );
    let c = in_coroutine(
        1,
        limit,
        probe(|mut a| {
            coroutines::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                a.write_all(b"67890").unwrap();
                std::thread::sleep(Duration::from_millis(500));
            });
        }),
    );
    compare("recv(MSG_PEEK|MSG_WAITALL) TCP", &t, &c);
}

/// Same, with the writer a plain thread: does the coroutine spin the worker
/// meanwhile? Counts how often a ticker coroutine got to run in 200 ms.
#[test]
fn attack_peek_waitall_tcp_spins_the_worker() {
    let limit = Duration::from_secs(4);
    let c = in_coroutine(1, limit, || {
        let ticks = Arc::new(AtomicU64::new(0));
        let t2 = ticks.clone();
        let ticker = coroutines::spawn(move || {
            for _ in 0..300 {
                std::thread::sleep(Duration::from_millis(1));
                t2.fetch_add(1, Ordering::Relaxed);
            }
        });
        let (mut a, b) = tcp_pair();
        a.write_all(b"12345").unwrap();
        let w = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            a.write_all(b"67890").unwrap();
            a
        });
        let mut buf = [0u8; 10];
        let (n, took) = timed(|| unsafe {
            libc::recv(
                b.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                10,
                libc::MSG_PEEK | libc::MSG_WAITALL,
            )
        });
        let during = ticks.load(Ordering::Relaxed);
        drop(w.join());
        ticker.join().unwrap();
        (n, took, during)
    });
    eprintln!("[peek waitall spin] coroutine: {c:?}");
    let (n, _took, during) = c.expect("hung");
    assert_eq!(n, 10);
    assert!(
        during > 50,
        "ticker ran {during} times in ~200 ms: the worker spun"
    );
}

/// SO_RCVLOWAT = 10 and a plain MSG_PEEK with 5 bytes there: a thread waits
/// for the low-water mark (peek obeys it).
#[test]
fn attack_peek_rcvlowat_tcp_with_writer_on_same_worker() {
    let limit = Duration::from_secs(4);
    fn body(spawn_writer: fn(TcpStream)) -> Result<isize, i32> {
        let (mut a, b) = tcp_pair();
        let v: libc::c_int = 10;
        unsafe {
            libc::setsockopt(
                b.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&v as *const libc::c_int).cast(),
                4,
            )
        };
        a.write_all(b"12345").unwrap();
        spawn_writer(a);
        let mut buf = [0u8; 64];
        res(unsafe { libc::recv(b.as_raw_fd(), buf.as_mut_ptr().cast(), 64, libc::MSG_PEEK) })
    }
    let t = on_thread(limit, || {
        body(|mut a| {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                a.write_all(b"67890").unwrap();
                std::thread::sleep(Duration::from_millis(500));
            });
        })
    });
    let c = in_coroutine(1, limit, || {
        body(|mut a| {
            coroutines::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                a.write_all(b"67890").unwrap();
                std::thread::sleep(Duration::from_millis(500));
            });
        })
    });
    compare("recv(MSG_PEEK) TCP with SO_RCVLOWAT", &t, &c);
}

/// recvmsg(MSG_ERRQUEUE) with an empty error queue never blocks: EAGAIN.
#[test]
fn attack_errqueue_empty_udp() {
    let limit = Duration::from_secs(2);
    let body = || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let on: libc::c_int = 1;
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_IP,
                libc::IP_RECVERR,
                (&on as *const libc::c_int).cast(),
                4,
            )
        };
        let mut buf = [0u8; 64];
        let mut ctl = [0u8; 256];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: 64,
        };
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl.as_mut_ptr().cast();
        msg.msg_controllen = ctl.len();
        res(unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_ERRQUEUE) })
    };
    let t = on_thread(limit, body);
    let c = in_coroutine(1, limit, body);
    compare("recvmsg(MSG_ERRQUEUE) UDP, empty", &t, &c);
}

/// Same on TCP.
#[test]
fn attack_errqueue_empty_tcp() {
    let limit = Duration::from_secs(2);
    let body = || {
        let (_a, b) = tcp_pair();
        let mut buf = [0u8; 64];
        res(unsafe {
            libc::recv(
                b.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                64,
                libc::MSG_ERRQUEUE,
            )
        })
    };
    let t = on_thread(limit, body);
    let c = in_coroutine(1, limit, body);
    compare("recv(MSG_ERRQUEUE) TCP, empty", &t, &c);
}

/// An unconnected Unix datagram socket sends to a receiver whose queue
/// another socket filled; a plain thread reads one datagram after 200 ms.
#[test]
fn attack_unix_dgram_sendto_full_queue_filled_by_other() {
    let limit = Duration::from_secs(3);
    let body = || {
        let dir = std::env::temp_dir().join(format!(
            "attack-dgram-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let r = UnixDatagram::bind(&dir).unwrap();
        let filler = UnixDatagram::unbound().unwrap();
        filler.set_nonblocking(true).unwrap();
        let mut filled = 0;
        while filler.send_to(b"fill", &dir).is_ok() {
            filled += 1;
        }
        let sender = UnixDatagram::unbound().unwrap();
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let mut b = [0u8; 16];
            r.recv(&mut b).unwrap();
            std::thread::sleep(Duration::from_millis(1500));
            r
        });
        let (sent, took) = timed(|| sender.send_to(b"late", &dir).map_err(|e| e.raw_os_error()));
        let _ = std::fs::remove_file(&dir);
        drop(reader);
        (filled > 0, sent, took < Duration::from_millis(1000))
    };
    let t = on_thread(limit, body);
    let c = in_coroutine(1, limit, body);
    compare(
        "unconnected unix dgram sendto, queue filled by another",
        &t,
        &c,
    );
}

/// Receives up to `len` bytes with MSG_WAITALL and room for 4 descriptors:
/// (bytes, descriptors received, MSG_CTRUNC).
fn recv_with_fds(fd: i32, len: usize) -> (isize, usize, bool) {
    let mut buf = vec![0u8; len];
    let mut ctl = [0u64; 32];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&ctl);
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_WAITALL) };
    let mut fds = 0;
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let count = bytes / 4;
                let data = libc::CMSG_DATA(c) as *const i32;
                for i in 0..count {
                    libc::close(*data.add(i));
                }
                fds += count;
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    (n, fds, msg.msg_flags & libc::MSG_CTRUNC != 0)
}

/// Sends `data` with one descriptor (a dup of stdin's number 0... a pipe
/// end) as SCM_RIGHTS.
fn send_with_fd(fd: i32, data: &[u8]) {
    let mut p = [0; 2];
    unsafe { libc::pipe(p.as_mut_ptr()) };
    let mut ctl = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut _,
        iov_len: data.len(),
    };
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.as_mut_ptr().cast();
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as usize;
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
        *(libc::CMSG_DATA(c) as *mut i32) = p[0];
        assert_eq!(libc::sendmsg(fd, &msg, 0), data.len() as isize);
        libc::close(p[0]);
        libc::close(p[1]);
    }
}

/// Unix stream: 10 bytes with a descriptor, then 10 plain bytes; the
/// reader asks for 20 with MSG_WAITALL. The kernel stops after the message
/// that carried descriptors.
#[test]
fn attack_scm_rights_then_data_waitall() {
    let limit = Duration::from_secs(3);
    let body = || {
        let (a, b) = UnixStream::pair().unwrap();
        send_with_fd(a.as_raw_fd(), b"0123456789");
        (&a).write_all(b"abcdefghij").unwrap();
        let r = recv_with_fds(b.as_raw_fd(), 20);
        drop(a);
        r
    };
    let t = on_thread(limit, body);
    let c = in_coroutine(1, limit, body);
    compare(
        "unix stream: fd message then data, recvmsg WAITALL 20",
        &t,
        &c,
    );
}

/// Unix stream: 10 plain bytes now, 10 bytes with a descriptor after 100 ms;
/// the reader asks for 20 with MSG_WAITALL.
#[test]
fn attack_data_then_scm_rights_waitall() {
    let limit = Duration::from_secs(3);
    let body = || {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(b"abcdefghij").unwrap();
        let w = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            send_with_fd(a.as_raw_fd(), b"0123456789");
            a
        });
        let r = recv_with_fds(b.as_raw_fd(), 20);
        drop(w.join());
        r
    };
    let t = on_thread(limit, body);
    let c = in_coroutine(1, limit, body);
    compare(
        "unix stream: data then (later) fd message, recvmsg WAITALL 20",
        &t,
        &c,
    );
}

/// A blocking connect on a socket whose non-blocking connect is still in
/// progress (SYN dropped by a full listener): a thread waits for it.
#[test]
fn attack_blocking_connect_on_connect_in_progress() {
    let limit = Duration::from_secs(6);
    let body = || {
        // Listener with backlog 0 and one queued connection: full.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sin.sin_family = libc::AF_INET as u16;
        sin.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        unsafe {
            assert_eq!(
                libc::bind(fd, (&sin as *const libc::sockaddr_in).cast(), 16),
                0
            );
            assert_eq!(libc::listen(fd, 0), 0);
        }
        let listener = unsafe { <TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let addr = listener.local_addr().unwrap();
        let queued = TcpStream::connect(addr).unwrap();
        let c = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        let flags = unsafe { libc::fcntl(c, libc::F_GETFL) };
        unsafe { libc::fcntl(c, libc::F_SETFL, flags | libc::O_NONBLOCK) };
        let sin = match addr {
            std::net::SocketAddr::V4(v4) => {
                let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                s.sin_family = libc::AF_INET as u16;
                s.sin_port = v4.port().to_be();
                s.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
                s
            }
            _ => unreachable!(),
        };
        let first = res(
            unsafe { libc::connect(c, (&sin as *const libc::sockaddr_in).cast(), 16) } as isize,
        );
        unsafe { libc::fcntl(c, libc::F_SETFL, flags) };
        let acceptor = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let a = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(3000));
            (listener, a)
        });
        let (second, took) = timed(|| {
            res(unsafe { libc::connect(c, (&sin as *const libc::sockaddr_in).cast(), 16) } as isize)
        });
        unsafe { libc::close(c) };
        drop(queued);
        drop(acceptor);
        (first, second, took > Duration::from_millis(200))
    };
    let t = on_thread(limit, body);
    let c = in_coroutine(1, limit, body);
    compare("blocking connect while a connect is in progress", &t, &c);
}

/// SO_RCVTIMEO with a negative tv_sec: Linux treats it as a zero timeout
/// (EAGAIN at once).
#[test]
fn attack_negative_rcvtimeo() {
    let limit = Duration::from_secs(2);
    let body = || {
        let (_a, b) = tcp_pair();
        let tv = libc::timeval {
            tv_sec: -1,
            tv_usec: 0,
        };
        let set = unsafe {
            libc::setsockopt(
                b.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        let mut buf = [0u8; 8];
        (
            set,
            res(unsafe { libc::recv(b.as_raw_fd(), buf.as_mut_ptr().cast(), 8, 0) }),
        )
    };
    let t = on_thread(limit, body);
    let c = in_coroutine(1, limit, body);
    compare("recv with SO_RCVTIMEO {-1, 0}", &t, &c);
}

/// poll for POLLWRNORM only on a TCP socket with a full send buffer; a
/// plain thread drains the peer after 100 ms.
#[test]
fn attack_poll_wrnorm_only() {
    let limit = Duration::from_secs(4);
    let body = || {
        let (a, b) = tcp_pair();
        let chunk = vec![0u8; 65536];
        while unsafe {
            libc::send(
                a.as_raw_fd(),
                chunk.as_ptr().cast(),
                chunk.len(),
                libc::MSG_DONTWAIT,
            )
        } > 0
        {}
        let drainer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let mut b = b;
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0;
            b.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            while let Ok(n) = b.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n;
            }
            // Keep the peer open (no FIN) past the poll's timeout.
            std::thread::sleep(Duration::from_millis(2500));
            total
        });
        let mut p = libc::pollfd {
            fd: a.as_raw_fd(),
            events: libc::POLLWRNORM,
            revents: 0,
        };
        let (n, took) = timed(|| unsafe { libc::poll(&mut p, 1, 2000) });
        drop(drainer);
        (
            n,
            p.revents & libc::POLLWRNORM != 0,
            took < Duration::from_millis(1000),
        )
    };
    let t = on_thread(limit, body);
    let c = in_coroutine(1, limit, body);
    compare("poll(POLLWRNORM) on a full TCP socket", &t, &c);
}

/// Keep the unused import lint quiet.
#[allow(dead_code)]
fn _unused(s: TcpStream) -> i32 {
    s.into_raw_fd()
}
