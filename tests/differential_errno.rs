//! errno across waits, differentially: a call that succeeds leaves errno
//! as it was, on a thread. A coroutine that parks in the call lets other
//! coroutines of its worker run, and they set errno too (it is the
//! worker thread's); so the runtime must keep each coroutine's errno
//! across every park, including those that do not go through the reactor
//! (timers, joins, retried connects). Each case sets errno to 0, makes a
//! call that succeeds after a wait while a neighbour keeps setting errno
//! to EDOM, and reads errno back.

mod support;

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use support::differential::*;
use support::*;

/// Runs `call` with errno 0 while a neighbour of the case's side sets its
/// own errno to EDOM every millisecond; the call's value and errno after.
fn errno_after(side: Side, call: impl FnOnce() -> i64) -> (i64, Errno) {
    let stop = Arc::new(AtomicBool::new(false));
    let clobberer = {
        let stop = stop.clone();
        side.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                set_errno(libc::EDOM);
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    thread::sleep(Duration::from_millis(3));
    set_errno(0);
    let value = call();
    let after = Errno(errno());
    stop.store(true, Ordering::Relaxed);
    clobberer.join();
    (value, after)
}

/// `poll` with no descriptors and a timeout leaves errno alone.
#[test]
fn poll_without_descriptors_leaves_errno_alone() {
    let got = differential("errno after poll(NULL, 0, 50)", |side| {
        errno_after(side, || {
            // SAFETY: no descriptors: a plain sleep.
            (unsafe { libc::poll(std::ptr::null_mut(), 0, 50) }).into()
        })
    });
    assert_eq!(got, (0, Errno(0)));
}

/// `select` with no descriptors and a timeout leaves errno alone.
#[test]
fn select_without_descriptors_leaves_errno_alone() {
    let got = differential("errno after select(0, .., 50 ms)", |side| {
        errno_after(side, || {
            let mut timeout = libc::timeval {
                tv_sec: 0,
                tv_usec: 50_000,
            };
            let null = std::ptr::null_mut();
            // SAFETY: no sets and a valid timeout: a plain sleep.
            (unsafe { libc::select(0, null, null, null, &mut timeout) }).into()
        })
    });
    assert_eq!(got, (0, Errno(0)));
}

/// Joining a thread that takes a while leaves errno alone.
#[test]
fn thread_join_leaves_errno_alone() {
    let got = differential("errno after JoinHandle::join", |side| {
        errno_after(side, || {
            let joined = thread::spawn(|| thread::sleep(Duration::from_millis(50))).join();
            if joined.is_ok() {
                0
            } else {
                -1
            }
        })
    });
    assert_eq!(got, (0, Errno(0)));
}

/// A non-blocking Unix stream connect to `path`, as raw calls: the socket
/// if it connected (or is queued).
fn connect_nonblocking(path: &TempPath) -> Option<RawFd> {
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let name = path.as_os_str().as_encoded_bytes();
    for (to, &from) in addr.sun_path.iter_mut().zip(name) {
        *to = from as libc::c_char;
    }
    // SAFETY: `addr` is a live sockaddr_un of the given size.
    let ret = unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if ret == 0 {
        return Some(fd);
    }
    // SAFETY: the socket is ours.
    unsafe { libc::close(fd) };
    None
}

/// A Unix connect that waits for room in a full backlog leaves errno
/// alone, although its first attempts fail with EAGAIN.
#[test]
fn unix_connect_to_a_full_backlog_leaves_errno_alone() {
    let got = differential("errno after a Unix connect to a full backlog", |side| {
        let path = TempPath::unique();
        let listener = UnixListener::bind(&*path).unwrap();
        // SAFETY: listen again on a listening socket, to shrink its queue.
        unsafe { libc::listen(listener.as_raw_fd(), 0) };
        let queued: Vec<RawFd> = std::iter::from_fn(|| connect_nonblocking(&path)).collect();
        let acceptor = after(Duration::from_millis(50), move || {
            let accepted = listener.accept();
            // The connect below gets in and returns meanwhile.
            thread::sleep(Duration::from_millis(300));
            drop(accepted);
            listener
        });
        let got = errno_after(side, || match UnixStream::connect(&*path) {
            Ok(_) => 0,
            Err(_) => -1,
        });
        for fd in queued {
            // SAFETY: the queued sockets are ours.
            unsafe { libc::close(fd) };
        }
        drop(acceptor.join().unwrap());
        got
    });
    assert_eq!(got, (0, Errno(0)));
}
