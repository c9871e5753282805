//! `errno` inside coroutines is what libc would leave: a failed hooked call
//! returns -1 with the right errno (read by `io::Error::last_os_error`), and
//! a call that parks keeps the caller's errno even though other coroutines
//! of the same worker fail calls, and so set errno, on that thread meanwhile.

mod support;

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

/// A descriptor number that is not open.
const BAD_FD: i32 = 1_000_000;

/// Asserts that a libc call returned -1 and set errno to `expected`.
#[track_caller]
fn assert_failed(what: &str, ret: isize, expected: i32) {
    let error = io::Error::last_os_error();
    assert_eq!(ret, -1, "{what}: returned {ret}, want -1 ({error})");
    assert_eq!(
        error.raw_os_error(),
        Some(expected),
        "{what}: errno is {error}, want {}",
        io::Error::from_raw_os_error(expected)
    );
}

fn buf_ptr(buf: &mut [u8]) -> *mut libc::c_void {
    buf.as_mut_ptr() as *mut libc::c_void
}

#[test]
fn failed_calls_set_errno() {
    on_one_worker("failed calls", || {
        let mut buf = [0u8; 8];
        // SAFETY (all blocks): libc calls with live buffers of the stated
        // sizes, on descriptors that are invalid or owned here.
        unsafe {
            assert_failed(
                "recv(bad fd)",
                libc::recv(BAD_FD, buf_ptr(&mut buf), 8, 0),
                libc::EBADF,
            );
            assert_failed(
                "read(bad fd)",
                libc::read(BAD_FD, buf_ptr(&mut buf), 8),
                libc::EBADF,
            );
            assert_failed(
                "write(bad fd)",
                libc::write(BAD_FD, buf.as_ptr().cast(), 8),
                libc::EBADF,
            );
            assert_failed(
                "send(bad fd)",
                libc::send(BAD_FD, buf.as_ptr().cast(), 8, 0),
                libc::EBADF,
            );
            assert_failed(
                "accept(bad fd)",
                libc::accept(BAD_FD, std::ptr::null_mut(), std::ptr::null_mut()) as isize,
                libc::EBADF,
            );
            assert_failed("close(bad fd)", libc::close(BAD_FD) as isize, libc::EBADF);
            assert_failed("dup(bad fd)", libc::dup(BAD_FD) as isize, libc::EBADF);
            assert_failed(
                "fcntl(bad fd)",
                libc::fcntl(BAD_FD, libc::F_GETFL) as isize,
                libc::EBADF,
            );
        }
        // Wrong kind of descriptor.
        let (reader, writer) = io::pipe().unwrap();
        // SAFETY: as above.
        unsafe {
            assert_failed(
                "read(pipe write end)",
                libc::read(writer.as_raw_fd(), buf_ptr(&mut buf), 8),
                libc::EBADF,
            );
            assert_failed(
                "write(pipe read end)",
                libc::write(reader.as_raw_fd(), buf.as_ptr().cast(), 8),
                libc::EBADF,
            );
            assert_failed(
                "recv(pipe)",
                libc::recv(reader.as_raw_fd(), buf_ptr(&mut buf), 8, 0),
                libc::ENOTSOCK,
            );
        }
        // A pipe whose read end is closed.
        drop(reader);
        // SAFETY: as above.
        unsafe {
            assert_failed(
                "write(pipe, reader gone)",
                libc::write(writer.as_raw_fd(), buf.as_ptr().cast(), 8),
                libc::EPIPE,
            );
        }
        // Sockets in the wrong state.
        let (client, _server) = tcp_pair();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // SAFETY: as above.
        unsafe {
            assert_failed(
                "accept(connected socket)",
                libc::accept(
                    client.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                ) as isize,
                libc::EINVAL,
            );
            assert_failed(
                "recv(listener)",
                libc::recv(listener.as_raw_fd(), buf_ptr(&mut buf), 8, 0),
                libc::ENOTCONN,
            );
        }
        let fd = raw_tcp_socket();
        let refused = raw_connect(fd, refused_addr());
        assert_eq!(
            refused.unwrap_err().raw_os_error(),
            Some(libc::ECONNREFUSED)
        );
        assert_eq!(errno(), libc::ECONNREFUSED, "errno after a refused connect");
        // SAFETY: closing a socket owned here.
        unsafe { libc::close(fd) };
        // Bad arguments to the sleeps.
        let bad = libc::timespec {
            tv_sec: 0,
            tv_nsec: 2_000_000_000,
        };
        // SAFETY: a live timespec.
        unsafe {
            assert_failed(
                "nanosleep(bad)",
                libc::nanosleep(&bad, std::ptr::null_mut()) as isize,
                libc::EINVAL,
            );
        }
    });
}

#[test]
fn clock_nanosleep_returns_its_error_and_leaves_errno() {
    on_one_worker("clock_nanosleep errors", || {
        let bad = libc::timespec {
            tv_sec: 0,
            tv_nsec: -1,
        };
        set_errno(libc::E2BIG);
        // SAFETY: a live timespec.
        let ret =
            unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &bad, std::ptr::null_mut()) };
        assert_eq!(
            ret,
            libc::EINVAL,
            "clock_nanosleep returns the error number"
        );
        assert_eq!(errno(), libc::E2BIG, "clock_nanosleep does not set errno");
    });
}

#[test]
fn timed_out_read_sets_eagain() {
    on_one_worker("timeout errno", || {
        let (client, _server) = tcp_pair();
        client
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut buf = [0u8; 8];
        set_errno(0);
        // SAFETY: a live buffer.
        let ret = unsafe { libc::recv(client.as_raw_fd(), buf_ptr(&mut buf), 8, 0) };
        assert_failed("recv with SO_RCVTIMEO", ret, libc::EAGAIN);
    });
}

/// Spawns a coroutine that keeps failing a hooked call (setting errno to
/// EBADF on this worker's thread) until `stop`; returns its failure count.
fn errno_clobberer(stop: Arc<AtomicBool>) -> (coroutines::JoinHandle<()>, Arc<AtomicU64>) {
    let failures = Arc::new(AtomicU64::new(0));
    let counter = failures.clone();
    let handle = coroutines::spawn(move || {
        let mut buf = [0u8; 8];
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: a live buffer; the descriptor is invalid on purpose.
            let ret = unsafe { libc::read(BAD_FD, buf_ptr(&mut buf), 8) };
            assert_eq!(ret, -1);
            assert_eq!(errno(), libc::EBADF);
            counter.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    (handle, failures)
}

#[test]
fn errno_survives_a_parked_successful_read() {
    on_one_worker("errno across a read", || {
        let stop = Arc::new(AtomicBool::new(false));
        let (clobberer, failures) = errno_clobberer(stop.clone());
        let (mut client, mut server) = tcp_pair();
        let writer = after(WAIT, move || {
            server.write_all(b"late").unwrap();
            server
        });
        let mut buf = [0u8; 8];
        set_errno(libc::E2BIG);
        let before = failures.load(Ordering::Relaxed);
        // SAFETY: a live buffer.
        let n = unsafe { libc::read(client.as_raw_fd(), buf_ptr(&mut buf), 8) };
        let after_read = errno();
        let clobbers = failures.load(Ordering::Relaxed) - before;
        assert_eq!(&buf[..n as usize], b"late");
        assert!(
            clobbers >= 10,
            "other coroutines failed calls {clobbers} times meanwhile"
        );
        assert_eq!(
            after_read,
            libc::E2BIG,
            "errno after a parked read that succeeded"
        );
        // Same through std's Read and a pipe.
        let (mut reader, mut pipe_writer) = io::pipe().unwrap();
        let late = after(WAIT, move || pipe_writer.write_all(b"pipe").unwrap());
        set_errno(libc::ERANGE);
        reader.read_exact(&mut buf[..4]).unwrap();
        assert_eq!(errno(), libc::ERANGE, "errno after a parked pipe read");
        late.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        clobberer.join().unwrap();
        drop(writer.join().unwrap());
        drop(client.read(&mut buf));
    });
}

#[test]
fn errno_survives_a_parked_sleep_and_poll() {
    on_one_worker("errno across sleep and poll", || {
        let stop = Arc::new(AtomicBool::new(false));
        let (clobberer, failures) = errno_clobberer(stop.clone());
        set_errno(libc::E2BIG);
        let before = failures.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(errno(), libc::E2BIG, "errno after thread::sleep");
        set_errno(libc::ERANGE);
        // SAFETY: a live timespec.
        let ret = unsafe {
            libc::nanosleep(
                &libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 50_000_000,
                },
                std::ptr::null_mut(),
            )
        };
        assert_eq!(ret, 0);
        assert_eq!(errno(), libc::ERANGE, "errno after nanosleep");
        let (client, _server) = tcp_pair();
        let mut pollfd = libc::pollfd {
            fd: client.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        set_errno(libc::EDOM);
        // SAFETY: one live pollfd.
        let ret = unsafe { libc::poll(&mut pollfd, 1, 50) };
        assert_eq!(ret, 0);
        assert_eq!(errno(), libc::EDOM, "errno after a poll that timed out");
        assert!(
            failures.load(Ordering::Relaxed) - before >= 10,
            "the clobberer ran"
        );
        stop.store(true, Ordering::Relaxed);
        clobberer.join().unwrap();
    });
}

#[test]
fn errno_of_a_parked_call_that_fails_is_its_own() {
    // The waiter's failure (EBADF from a close, EAGAIN from a timeout) is
    // what it sees, not what other coroutines left on the thread.
    on_one_worker_exclusive("errno of a failed parked call", || {
        let (client, _server) = tcp_pair();
        let fd = client.into_raw_fd();
        let closer = coroutines::spawn(move || {
            std::thread::sleep(WAIT);
            // Fail something else first, then close.
            set_errno(0);
            // SAFETY: an invalid descriptor on purpose, then the waiter's.
            unsafe {
                assert_eq!(libc::dup(BAD_FD), -1);
                assert_eq!(libc::close(fd), 0);
            }
            set_errno(libc::ENOSPC);
        });
        let mut buf = [0u8; 8];
        // SAFETY: a live buffer; `fd` is closed only by `closer`.
        let ret = unsafe { libc::recv(fd, buf_ptr(&mut buf), 8, 0) };
        assert_failed("recv closed meanwhile", ret, libc::EBADF);
        closer.join().unwrap();

        let (client, _server) = tcp_pair();
        set_timeout_opt(client.as_raw_fd(), libc::SO_RCVTIMEO, WAIT);
        let stop = Arc::new(AtomicBool::new(false));
        let (clobberer, _) = errno_clobberer(stop.clone());
        // SAFETY: a live buffer.
        let ret = unsafe { libc::recv(client.as_raw_fd(), buf_ptr(&mut buf), 8, 0) };
        assert_failed("recv timed out", ret, libc::EAGAIN);
        stop.store(true, Ordering::Relaxed);
        clobberer.join().unwrap();
    });
}

/// A yield keeps errno, as `std::thread::yield_now` does on a thread, also
/// where coroutines share their worker's identity, and so its errno, with
/// the neighbour that runs meanwhile and sets it.
#[test]
fn errno_survives_a_yield_with_identity_on_and_off() {
    let on_thread = std::thread::spawn(|| {
        set_errno(libc::E2BIG);
        std::thread::yield_now();
        errno()
    });
    assert_eq!(on_thread.join().unwrap(), libc::E2BIG);
    for identity in [true, false] {
        let runtime = coroutines::Runtime::builder()
            .workers(1)
            .thread_identity(identity)
            .build()
            .unwrap();
        let seen = runtime.block_on(|| {
            let ran = Arc::new(AtomicU64::new(0));
            let neighbour = coroutines::spawn({
                let ran = ran.clone();
                move || {
                    for _ in 0..10 {
                        set_errno(libc::EDOM);
                        ran.fetch_add(1, Ordering::Relaxed);
                        coroutines::yield_now();
                    }
                }
            });
            let mut seen = Vec::new();
            for _ in 0..10 {
                set_errno(libc::E2BIG);
                coroutines::yield_now();
                seen.push(errno());
            }
            neighbour.join().unwrap();
            assert_eq!(ran.load(Ordering::Relaxed), 10, "the neighbour ran");
            seen
        });
        assert_eq!(
            seen,
            vec![libc::E2BIG; 10],
            "errno after yields, identity {identity}"
        );
    }
}
