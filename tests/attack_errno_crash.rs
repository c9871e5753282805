//! Probes: errno across parks that do not go through the reactor, and
//! invalid pointers that the kernel would reject with EFAULT.

mod attack_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use attack_common::*;

fn set_errno(v: i32) {
    unsafe { *libc::__errno_location() = v };
}
fn errno() -> i32 {
    unsafe { *libc::__errno_location() }
}

/// A coroutine that keeps setting errno to EDOM on its worker.
fn clobberer(stop: Arc<AtomicBool>) -> coroutines::JoinHandle<()> {
    coroutines::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            set_errno(libc::EDOM);
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

/// errno after `call` (errno set to 0 before), on a thread and in a
/// coroutine with a clobbering neighbour.
fn errno_after(call: fn() -> isize) -> Both<(isize, i32)> {
    let limit = Duration::from_secs(3);
    let t = on_thread(limit, move || {
        set_errno(0);
        let r = call();
        (r, errno())
    });
    let c = in_coroutine(1, limit, move || {
        let stop = Arc::new(AtomicBool::new(false));
        let h = clobberer(stop.clone());
        std::thread::sleep(Duration::from_millis(3));
        set_errno(0);
        let r = call();
        let e = errno();
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
        (r, e)
    });
    (t, c)
}

#[test]
fn attack_errno_poll_without_fds() {
    let (t, c) = errno_after(|| unsafe { libc::poll(std::ptr::null_mut(), 0, 50) } as isize);
    compare("errno after poll(NULL, 0, 50)", &t, &c);
}

#[test]
fn attack_errno_select_without_fds() {
    let (t, c) = errno_after(|| {
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        let r = unsafe {
            libc::select(
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut tv,
            )
        };
        r as isize
    });
    compare("errno after select(0, .., 50 ms)", &t, &c);
}

#[test]
fn attack_errno_thread_join() {
    let (t, c) = errno_after(|| {
        let h = std::thread::spawn(|| std::thread::sleep(Duration::from_millis(50)));
        h.join().map(|_| 0).unwrap_or(-1)
    });
    compare("errno after JoinHandle::join", &t, &c);
}

#[test]
fn attack_errno_unix_connect_full_backlog() {
    let (t, c) = errno_after(|| {
        use std::os::unix::net::{UnixListener, UnixStream};
        let path = std::env::temp_dir().join(format!(
            "attack-uc-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_file(&path);
        // Backlog 0 through libc: bind with std then listen again.
        let l = UnixListener::bind(&path).unwrap();
        unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&l), 0) };
        let mut queued = Vec::new();
        loop {
            let s =
                unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0) };
            let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
            addr.sun_family = libc::AF_UNIX as u16;
            let p = path.as_os_str().as_encoded_bytes();
            for (i, b) in p.iter().enumerate() {
                addr.sun_path[i] = *b as i8;
            }
            let r = unsafe { libc::connect(s, (&addr as *const libc::sockaddr_un).cast(), 110) };
            if r != 0 {
                unsafe { libc::close(s) };
                break;
            }
            queued.push(s);
        }
        let acceptor = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let a = l.accept();
            std::thread::sleep(Duration::from_millis(300));
            drop(a);
            l
        });
        set_errno(0);
        let r = match UnixStream::connect(&path) {
            Ok(_) => 0,
            Err(_) => -1,
        };
        let _ = std::fs::remove_file(&path);
        for s in queued {
            unsafe { libc::close(s) };
        }
        drop(acceptor.join());
        r
    });
    compare("errno after UnixStream::connect to a full backlog", &t, &c);
}

// ---- invalid pointers: run in a child process, which may crash ----

fn crash_probe(name: &str, call: fn() -> (isize, i32)) {
    if is_child() {
        let limit = Duration::from_secs(3);
        let where_ = std::env::var("ATTACK_WHERE").unwrap_or_default();
        let r = if where_ == "thread" {
            on_thread(limit, call)
        } else {
            in_coroutine(1, limit, call)
        };
        println!("RESULT {r:?}");
        return;
    }
    let run = |where_: &str| {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env("ATTACK_CHILD", "1")
            .env("ATTACK_WHERE", where_)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let result = text
            .lines()
            .find_map(|l| l.find("RESULT").map(|i| l[i..].to_owned()))
            .unwrap_or_else(|| format!("no result; status {:?}", out.status));
        result
    };
    let t = Some(run("thread"));
    let c = Some(run("coroutine"));
    compare(name, &t, &c);
}

const BAD: usize = 8;

#[test]
fn attack_select_bad_set_pointer() {
    crash_probe("attack_select_bad_set_pointer", || {
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        let r = unsafe {
            libc::select(
                1,
                BAD as *mut libc::fd_set,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut tv,
            )
        };
        (r as isize, errno())
    });
}

#[test]
fn attack_nanosleep_bad_pointer() {
    crash_probe("attack_nanosleep_bad_pointer", || {
        let r = unsafe { libc::nanosleep(BAD as *const libc::timespec, std::ptr::null_mut()) };
        (r as isize, errno())
    });
}

#[test]
fn attack_clock_nanosleep_bad_pointer() {
    crash_probe("attack_clock_nanosleep_bad_pointer", || {
        let r = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                0,
                BAD as *const libc::timespec,
                std::ptr::null_mut(),
            )
        };
        (r as isize, 0)
    });
}

#[test]
fn attack_poll_bad_pointer() {
    crash_probe("attack_poll_bad_pointer", || {
        let r = unsafe { libc::poll(BAD as *mut libc::pollfd, 1, 100) };
        (r as isize, errno())
    });
}

#[test]
fn attack_recvmsg_bad_iov_after_partial() {
    // readv with a first valid iovec and a second pointing nowhere, on a
    // pipe with 4 bytes now and more later.
    crash_probe("attack_recvmsg_bad_iov_after_partial", || {
        let mut p = [0; 2];
        unsafe { libc::pipe(p.as_mut_ptr()) };
        unsafe { libc::write(p[1], b"abcd".as_ptr().cast(), 4) };
        let mut a = [0u8; 4];
        let iov = [
            libc::iovec {
                iov_base: a.as_mut_ptr().cast(),
                iov_len: 4,
            },
            libc::iovec {
                iov_base: BAD as *mut _,
                iov_len: 4,
            },
        ];
        let r = unsafe { libc::writev(p[1], iov.as_ptr(), 2) };
        let e = errno();
        (r as isize, e)
    });
}
