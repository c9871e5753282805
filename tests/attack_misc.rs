//! Probes: assorted descriptor kinds and calls, thread vs coroutine.

mod attack_common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use attack_common::*;

fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s)
}

macro_rules! both {
    ($name:literal, $limit:expr, $body:expr) => {{
        let t = on_thread($limit, $body);
        let c = in_coroutine(1, $limit, $body);
        compare($name, &t, &c);
    }};
}

#[test]
fn attack_shutdown_listener_unblocks_accept_tcp() {
    both!(
        "TCP accept, listener shut down by a thread",
        Duration::from_secs(3),
        || {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let fd = l.as_raw_fd();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            });
            let (r, took) = timed(|| l.accept().map(|_| ()).map_err(|e| e.raw_os_error()));
            (r, took < Duration::from_secs(1))
        }
    );
}

#[test]
fn attack_shutdown_listener_unblocks_accept_unix() {
    both!(
        "Unix accept, listener shut down by a thread",
        Duration::from_secs(3),
        || {
            let path = std::env::temp_dir().join(format!(
                "attack-ul-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_file(&path);
            let l = UnixListener::bind(&path).unwrap();
            let fd = l.as_raw_fd();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            });
            let (r, took) = timed(|| l.accept().map(|_| ()).map_err(|e| e.raw_os_error()));
            let _ = std::fs::remove_file(&path);
            (r, took < Duration::from_secs(1))
        }
    );
}

#[test]
fn attack_getaddrinfo() {
    both!("getaddrinfo", Duration::from_secs(10), || {
        use std::net::ToSocketAddrs;
        let f = |s: &str| -> Result<Vec<String>, String> {
            s.to_socket_addrs()
                .map(|a| {
                    let mut v: Vec<String> = a.map(|x| x.to_string()).collect();
                    v.sort();
                    v
                })
                .map_err(|e| format!("{:?}", e.kind()))
        };
        (
            f("localhost:80"),
            f("127.0.0.1:80"),
            f("[::1]:81"),
            f("no-such-host.invalid:80"),
            f("bad name with spaces:1"),
        )
    });
}

#[test]
fn attack_getaddrinfo_raw_errors() {
    both!(
        "getaddrinfo raw (return, errno)",
        Duration::from_secs(10),
        || {
            let mut res_: *mut libc::addrinfo = std::ptr::null_mut();
            let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
            hints.ai_flags = libc::AI_NUMERICHOST;
            let r1 = unsafe {
                libc::getaddrinfo(c"localhost".as_ptr(), std::ptr::null(), &hints, &mut res_)
            };
            let r2 = unsafe {
                libc::getaddrinfo(
                    std::ptr::null(),
                    std::ptr::null(),
                    std::ptr::null(),
                    &mut res_,
                )
            };
            let r3 = unsafe {
                libc::getaddrinfo(
                    c"127.0.0.1".as_ptr(),
                    c"notaservice".as_ptr(),
                    std::ptr::null(),
                    &mut res_,
                )
            };
            (r1, r2, r3)
        }
    );
}

#[test]
fn attack_eventfd_timerfd_waits() {
    both!("eventfd and timerfd waits", Duration::from_secs(3), || {
        let efd = unsafe { libc::eventfd(0, 0) };
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let v: u64 = 5;
            unsafe { libc::write(efd, (&v as *const u64).cast(), 8) };
        });
        let mut v = 0u64;
        let a = res(unsafe { libc::read(efd, (&mut v as *mut u64).cast(), 8) });
        let short = res(unsafe { libc::read(efd, (&mut v as *mut u64).cast(), 4) });
        let tfd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, 0) };
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: 0,
                tv_nsec: 50_000_000,
            },
        };
        unsafe { libc::timerfd_settime(tfd, 0, &spec, std::ptr::null_mut()) };
        let mut exp = 0u64;
        let b = res(unsafe { libc::read(tfd, (&mut exp as *mut u64).cast(), 8) });
        unsafe {
            libc::close(efd);
            libc::close(tfd);
        }
        (a, v, short, b, exp)
    });
}

#[test]
fn attack_inotify_wait() {
    both!("inotify wait", Duration::from_secs(3), || {
        let dir = std::env::temp_dir().join(format!(
            "attack-ino-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::create_dir(&dir);
        let fd = unsafe { libc::inotify_init1(0) };
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_CREATE) };
        let d2 = dir.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            std::fs::write(d2.join("f"), b"x").unwrap();
        });
        let mut buf = [0u8; 4096];
        let r = res(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) }).map(|n| n > 0);
        unsafe { libc::close(fd) };
        let _ = std::fs::remove_dir_all(&dir);
        r
    });
}

#[test]
fn attack_signalfd_wait() {
    // SIGRTMIN+9 blocked in every thread (set before any thread starts in
    // this test: blocked here, inherited by the runtime's threads).
    let sig = libc::SIGRTMIN() + 9;
    let body = move || {
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        let fd = unsafe { libc::signalfd(-1, &set, 0) };
        // Directed at this thread (the worker, in a coroutine).
        let tid = unsafe { libc::gettid() };
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, sig) };
        });
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let r = res(unsafe {
            libc::read(
                fd,
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                std::mem::size_of::<libc::signalfd_siginfo>(),
            )
        });
        unsafe { libc::close(fd) };
        (r, info.ssi_signo as i32 == sig)
    };
    let limit = Duration::from_secs(3);
    let t = on_thread(limit, body);
    let c = in_coroutine(1, limit, body);
    compare("signalfd wait", &t, &c);
}

#[test]
fn attack_dev_files_and_directories() {
    both!(
        "/dev/null, /dev/zero, a directory",
        Duration::from_secs(3),
        || {
            let open = |p: &std::ffi::CStr, f| unsafe { libc::open(p.as_ptr(), f) };
            let null = open(c"/dev/null", libc::O_RDWR);
            let zero = open(c"/dev/zero", libc::O_RDONLY);
            let dir = open(c"/tmp", libc::O_RDONLY | libc::O_DIRECTORY);
            let mut buf = vec![1u8; 1 << 20];
            let a = res(unsafe { libc::read(null, buf.as_mut_ptr().cast(), 10) });
            let b = res(unsafe { libc::write(null, buf.as_ptr().cast(), buf.len()) });
            let c = res(unsafe { libc::read(zero, buf.as_mut_ptr().cast(), buf.len()) });
            let d = res(unsafe { libc::read(dir, buf.as_mut_ptr().cast(), 10) });
            let e = res(unsafe { libc::write(dir, buf.as_ptr().cast(), 10) });
            // (poll with events 0 on /dev/null: see attack_poll_regular_file_no_events)
            let mut p = [libc::pollfd {
                fd: null,
                events: libc::POLLIN,
                revents: 0,
            }];
            let f = (unsafe { libc::poll(p.as_mut_ptr(), 1, 100) }, p[0].revents);
            unsafe {
                libc::close(null);
                libc::close(zero);
                libc::close(dir);
            }
            (a, b, c, d, e, f)
        }
    );
}

#[test]
fn attack_zero_length_transfers() {
    both!("zero-length transfers", Duration::from_secs(3), || {
        let (a, b) = tcp_pair();
        let mut p = [0; 2];
        unsafe { libc::pipe(p.as_mut_ptr()) };
        // Fill the pipe.
        let chunk = vec![0u8; 65536];
        unsafe {
            let fl = libc::fcntl(p[1], libc::F_GETFL);
            libc::fcntl(p[1], libc::F_SETFL, fl | libc::O_NONBLOCK);
            while libc::write(p[1], chunk.as_ptr().cast(), chunk.len()) > 0 {}
            libc::fcntl(p[1], libc::F_SETFL, fl);
        }
        let mut buf = [0u8; 8];
        let r1 = res(unsafe { libc::write(p[1], buf.as_ptr().cast(), 0) });
        let r2 = res(unsafe { libc::read(b.as_raw_fd(), buf.as_mut_ptr().cast(), 0) });
        let r3 = res(unsafe {
            libc::recv(b.as_raw_fd(), buf.as_mut_ptr().cast(), 0, libc::MSG_WAITALL)
        });
        let r4 = res(unsafe { libc::readv(b.as_raw_fd(), std::ptr::null(), 0) });
        let r5 = res(unsafe { libc::send(a.as_raw_fd(), buf.as_ptr().cast(), 0, 0) });
        let empty = [0; 2];
        let mut q = [0; 2];
        unsafe { libc::pipe(q.as_mut_ptr()) };
        let r6 = res(unsafe { libc::read(q[0], buf.as_mut_ptr().cast(), 0) });
        let _ = empty;
        unsafe {
            for fd in [p[0], p[1], q[0], q[1]] {
                libc::close(fd);
            }
        }
        (r1, r2, r3, r4, r5, r6)
    });
}

#[test]
fn attack_udp_zero_length_recv_waits() {
    both!(
        "UDP recv(len 0) waits for a datagram",
        Duration::from_secs(3),
        || {
            let r = UdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = r.local_addr().unwrap();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                UdpSocket::bind("127.0.0.1:0")
                    .unwrap()
                    .send_to(b"abc", addr)
                    .unwrap();
            });
            let mut b = [0u8; 1];
            let (n, took) =
                timed(|| res(unsafe { libc::recv(r.as_raw_fd(), b.as_mut_ptr().cast(), 0, 0) }));
            let mut b2 = [0u8; 8];
            r.set_nonblocking(true).unwrap();
            let after = r.recv(&mut b2).map_err(|e| e.raw_os_error());
            (n, took > Duration::from_millis(50), after)
        }
    );
}

/// SO_RCVTIMEO set through SO_RCVTIMEO_NEW (which the hooks do not watch)
/// after a first wait cached the settings.
#[test]
fn attack_rcvtimeo_new_after_cached_view() {
    both!(
        "SO_RCVTIMEO_NEW after a first wait",
        Duration::from_secs(3),
        || {
            let (mut a, b) = tcp_pair();
            let bfd = b.as_raw_fd();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                a.write_all(b"x").unwrap();
                std::thread::sleep(Duration::from_secs(5));
            });
            let mut buf = [0u8; 8];
            let first = res(unsafe { libc::recv(bfd, buf.as_mut_ptr().cast(), 8, 0) });
            // struct __kernel_sock_timeval { s64 sec; s64 usec; }
            let tv: [i64; 2] = [0, 200_000];
            const SO_RCVTIMEO_NEW: i32 = 66;
            let set = unsafe {
                libc::setsockopt(
                    bfd,
                    libc::SOL_SOCKET,
                    SO_RCVTIMEO_NEW,
                    tv.as_ptr().cast(),
                    16,
                )
            };
            let (second, took) =
                timed(|| res(unsafe { libc::recv(bfd, buf.as_mut_ptr().cast(), 8, 0) }));
            drop(b);
            (first, set, second, took < Duration::from_secs(1))
        }
    );
}

/// select with only an exceptfds entry, on TCP urgent data sent by a thread.
#[test]
fn attack_select_exceptfds_oob() {
    both!(
        "select exceptfds on OOB data",
        Duration::from_secs(3),
        || {
            let (a, b) = tcp_pair();
            let bfd = b.as_raw_fd();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                unsafe { libc::send(a.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
                std::thread::sleep(Duration::from_secs(1));
            });
            let mut ex: libc::fd_set = unsafe { std::mem::zeroed() };
            unsafe { libc::FD_SET(bfd, &mut ex) };
            let mut tv = libc::timeval {
                tv_sec: 2,
                tv_usec: 0,
            };
            let (n, took) = timed(|| unsafe {
                libc::select(
                    bfd + 1,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    &mut ex,
                    &mut tv,
                )
            });
            (
                n,
                unsafe { libc::FD_ISSET(bfd, &ex) },
                took < Duration::from_secs(1),
            )
        }
    );
}

/// MSG_OOB receive with a big buffer, then a normal read of data that was
/// queued before it.
#[test]
fn attack_oob_then_normal_read() {
    both!("recv(MSG_OOB) then recv", Duration::from_secs(3), || {
        let (a, b) = tcp_pair();
        unsafe {
            libc::send(a.as_raw_fd(), b"hello".as_ptr().cast(), 5, 0);
            libc::send(a.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB);
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut buf = [0u8; 64];
        let o =
            res(unsafe { libc::recv(b.as_raw_fd(), buf.as_mut_ptr().cast(), 64, libc::MSG_OOB) });
        let n = res(unsafe { libc::recv(b.as_raw_fd(), buf.as_mut_ptr().cast(), 64, 0) });
        let _keep = a;
        (o, n)
    });
}

/// poll on a regular file with events = 0 and a 100 ms timeout.
#[test]
fn attack_poll_regular_file_no_events() {
    both!(
        "poll(regular file, events 0, 100 ms)",
        Duration::from_secs(3),
        || {
            let f = std::fs::File::open("/etc/hostname").unwrap();
            let mut p = libc::pollfd {
                fd: f.as_raw_fd(),
                events: 0,
                revents: 0,
            };
            let (n, took) = timed(|| unsafe { libc::poll(&mut p, 1, 100) });
            (
                n,
                p.revents,
                took >= Duration::from_millis(90) && took < Duration::from_millis(500),
            )
        }
    );
}

/// A pipe's write end made non-blocking by the user via fcntl on a dup;
/// then a blocking-mode read of the read end (unrelated description).
#[test]
fn attack_pipe_read_large_then_eof() {
    both!(
        "pipe: write 200 KiB from a thread, read until EOF",
        Duration::from_secs(3),
        || {
            let mut p = [0; 2];
            unsafe { libc::pipe(p.as_mut_ptr()) };
            let w = p[1];
            std::thread::spawn(move || {
                let mut f = unsafe { std::fs::File::from_raw_fd(w) };
                f.write_all(&vec![9u8; 200 << 10]).unwrap();
            });
            let mut f = unsafe { std::fs::File::from_raw_fd(p[0]) };
            let mut all = Vec::new();
            f.read_to_end(&mut all).unwrap();
            all.len()
        }
    );
}

/// select with only exceptfds on a regular file, 100 ms timeout.
#[test]
fn attack_select_exceptfds_regular_file() {
    both!(
        "select(exceptfds = regular file, 100 ms)",
        Duration::from_secs(3),
        || {
            let f = std::fs::File::open("/etc/hostname").unwrap();
            let fd = f.as_raw_fd();
            let mut ex: libc::fd_set = unsafe { std::mem::zeroed() };
            unsafe { libc::FD_SET(fd, &mut ex) };
            let mut tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            let (n, took) = timed(|| unsafe {
                libc::select(
                    fd + 1,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    &mut ex,
                    &mut tv,
                )
            });
            (n, took < Duration::from_millis(500))
        }
    );
}

/// Another thread shuts down reading on a UDP socket a recv waits on.
#[test]
fn attack_udp_recv_unblocked_by_shutdown() {
    both!(
        "UDP recv, shutdown(SHUT_RD) by a thread",
        Duration::from_secs(3),
        || {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let fd = s.as_raw_fd();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                unsafe { libc::shutdown(fd, libc::SHUT_RD) };
            });
            let mut b = [0u8; 8];
            let (r, took) = timed(|| s.recv(&mut b).map_err(|e| e.raw_os_error()));
            (r, took < Duration::from_secs(1))
        }
    );
}

/// Same for a Unix datagram socket.
#[test]
fn attack_unix_dgram_recv_unblocked_by_shutdown() {
    both!(
        "Unix dgram recv, shutdown(SHUT_RD) by a thread",
        Duration::from_secs(3),
        || {
            let (s, _peer) = std::os::unix::net::UnixDatagram::pair().unwrap();
            let fd = s.as_raw_fd();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                unsafe { libc::shutdown(fd, libc::SHUT_RD) };
            });
            let mut b = [0u8; 8];
            let (r, took) = timed(|| s.recv(&mut b).map_err(|e| e.raw_os_error()));
            (r, took < Duration::from_secs(1))
        }
    );
}
