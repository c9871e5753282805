//! Probes: sigaction round trips against glibc's own `__sigaction`, signal
//! handlers that touch descriptors, SIGPIPE after partial writes, and fork.
//! Run with --test-threads=1 (signal dispositions are process-wide).

mod attack_common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::Duration;

use attack_common::*;

unsafe extern "C" {
    /// glibc's sigaction under its exported alias: what libc gives without
    /// the hooks.
    fn __sigaction(
        signal: libc::c_int,
        act: *const libc::sigaction,
        old: *mut libc::sigaction,
    ) -> libc::c_int;
}

extern "C" fn plain_handler(_: libc::c_int) {}

fn query_hooked(sig: i32) -> libc::sigaction {
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
    old
}

fn query_glibc(sig: i32) -> libc::sigaction {
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    unsafe { __sigaction(sig, std::ptr::null(), &mut old) };
    old
}

/// A plain handler with SA_RESETHAND, installed and fired once: what a query
/// reports afterwards, hooked vs glibc (different signals).
#[test]
fn attack_sigaction_resethand_report() {
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = plain_handler as *const () as usize;
    act.sa_flags = libc::SA_RESETHAND;
    let (hooked_sig, glibc_sig) = (libc::SIGRTMIN() + 3, libc::SIGRTMIN() + 4);
    unsafe {
        libc::sigaction(hooked_sig, &act, std::ptr::null_mut());
        __sigaction(glibc_sig, &act, std::ptr::null_mut());
    }
    let before = (
        query_hooked(hooked_sig).sa_flags,
        query_glibc(glibc_sig).sa_flags,
    );
    unsafe {
        libc::raise(hooked_sig);
        libc::raise(glibc_sig);
    }
    let h = query_hooked(hooked_sig);
    let g = query_glibc(glibc_sig);
    eprintln!(
        "[SA_RESETHAND] before: hooked {:#x} glibc {:#x}; after: hooked handler {:#x} flags {:#x}, glibc handler {:#x} flags {:#x}",
        before.0, before.1, h.sa_sigaction, h.sa_flags, g.sa_sigaction, g.sa_flags
    );
    assert_eq!(before.0, before.1, "flags reported before firing");
    assert_eq!(
        (h.sa_sigaction, h.sa_flags),
        (g.sa_sigaction, g.sa_flags),
        "after firing"
    );
}

static CLOSE_FD: AtomicI32 = AtomicI32::new(-1);
extern "C" fn closing_handler(_: libc::c_int) {
    let fd = CLOSE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        unsafe { libc::close(fd) };
    }
}

/// A handler closes the descriptor a coroutine is parked reading: the
/// coroutine must wake (EBADF) rather than sleep for ever.
#[test]
fn attack_handler_closes_parked_descriptor() {
    let sig = libc::SIGRTMIN() + 5;
    unsafe { libc::signal(sig, closing_handler as *const () as usize) };
    let c = in_coroutine(1, Duration::from_secs(3), move || {
        let mut p = [0; 2];
        unsafe { libc::pipe(p.as_mut_ptr()) };
        CLOSE_FD.store(p[0], Ordering::SeqCst);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            unsafe { libc::kill(libc::getpid(), sig) };
        });
        let mut b = [0u8; 4];
        let (r, took) = timed(|| res(unsafe { libc::read(p[0], b.as_mut_ptr().cast(), 4) }));
        unsafe { libc::close(p[1]) };
        (r, took < Duration::from_secs(1))
    });
    eprintln!("[handler closes parked fd] coroutine: {c:?}");
    assert_eq!(c, Some((Err(libc::EBADF), true)));
}

static SIGPIPES: AtomicUsize = AtomicUsize::new(0);
extern "C" fn count_sigpipe(_: libc::c_int) {
    SIGPIPES.fetch_add(1, Ordering::SeqCst);
}

/// write(2) of 4 MiB to a Unix stream whose peer reads 64 KiB then shuts
/// down reading: the first write returns a partial count; how many
/// SIGPIPEs did that one call raise?
#[test]
fn attack_sigpipe_after_partial_unix_write() {
    unsafe { libc::signal(libc::SIGPIPE, count_sigpipe as *const () as usize) };
    let body = || {
        let (a, mut b) = UnixStream::pair().unwrap();
        let peer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let mut buf = vec![0u8; 65536];
            let _ = b.read(&mut buf);
            b.shutdown(std::net::Shutdown::Read).unwrap();
            // The peer stays open a while longer, then closes.
            std::thread::sleep(Duration::from_millis(1500));
            drop(b);
        });
        let data = vec![1u8; 4 << 20];
        let before = SIGPIPES.load(Ordering::SeqCst);
        let (r, took) =
            timed(|| unsafe { libc::write(a.as_raw_fd(), data.as_ptr().cast(), data.len()) });
        let during = SIGPIPES.load(Ordering::SeqCst) - before;
        drop(peer.join());
        (
            r > 0 && (r as usize) < data.len(),
            during,
            took < Duration::from_millis(1000),
        )
    };
    let t = on_thread(Duration::from_secs(3), body);
    let c = in_coroutine(1, Duration::from_secs(3), body);
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    compare("SIGPIPEs raised by a partial unix write(2)", &t, &c);
}

/// write(2) of 16 MiB to TCP; another thread shuts down writing meanwhile.
#[test]
fn attack_sigpipe_after_partial_tcp_write_local_shutdown() {
    unsafe { libc::signal(libc::SIGPIPE, count_sigpipe as *const () as usize) };
    let body = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        let a2 = a.try_clone().unwrap();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            a2.shutdown(std::net::Shutdown::Write).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            (a2, b)
        });
        let data = vec![1u8; 16 << 20];
        let before = SIGPIPES.load(Ordering::SeqCst);
        let r = unsafe { libc::write(a.as_raw_fd(), data.as_ptr().cast(), data.len()) };
        let during = SIGPIPES.load(Ordering::SeqCst) - before;
        drop(killer.join());
        (r > 0 && (r as usize) < data.len(), during)
    };
    let t = on_thread(Duration::from_secs(3), body);
    let c = in_coroutine(1, Duration::from_secs(3), body);
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    compare(
        "SIGPIPEs raised by a partial TCP write(2) cut by shutdown",
        &t,
        &c,
    );
}

/// fork() from a coroutine (and from a plain thread): the child reads a
/// pipe a thread of its own writes late, sleeps, locks, joins, resolves
/// localhost, and exits with a code that sums the checks.
#[test]
fn attack_fork_child_behaves_like_a_process() {
    fn child_work() -> i32 {
        let mut code = 0;
        let mut p = [0; 2];
        unsafe { libc::pipe(p.as_mut_ptr()) };
        let w = p[1];
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            unsafe { libc::write(w, b"hi".as_ptr().cast(), 2) };
        });
        let mut b = [0u8; 4];
        if unsafe { libc::read(p[0], b.as_mut_ptr().cast(), 4) } == 2 {
            code |= 1;
        }
        if h.join().is_ok() {
            code |= 2;
        }
        let m = std::sync::Arc::new(std::sync::Mutex::new(0));
        let m2 = m.clone();
        let g = m.lock().unwrap();
        let h = std::thread::spawn(move || *m2.lock().unwrap() += 1);
        std::thread::sleep(Duration::from_millis(20));
        drop(g);
        if h.join().is_ok() && *m.lock().unwrap() == 1 {
            code |= 4;
        }
        use std::net::ToSocketAddrs;
        if ("localhost", 80)
            .to_socket_addrs()
            .map(|a| a.count() > 0)
            .unwrap_or(false)
        {
            code |= 8;
        }
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            std::net::TcpStream::connect(addr).map(|mut s| s.write_all(b"x"))
        });
        if let Ok((mut s, _)) = l.accept() {
            let mut one = [0u8; 1];
            if s.read(&mut one).is_ok() {
                code |= 16;
            }
        }
        let _ = h.join();
        code
    }
    fn fork_and_wait() -> i32 {
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = child_work();
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -libc::WTERMSIG(status)
        }
    }
    let t = on_thread(Duration::from_secs(8), fork_and_wait);
    let c = in_coroutine(2, Duration::from_secs(8), fork_and_wait);
    compare("fork child's checks", &t, &c);
}

/// A coroutine body that returns in a forked child ends the child with 0;
/// what a thread would do is end the child's only thread (status 0 too).
/// With a spawned coroutine rather than the root one.
#[test]
fn attack_fork_in_spawned_coroutine_child_returns() {
    let c = in_coroutine(2, Duration::from_secs(5), || {
        let h = coroutines::spawn(|| {
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // Child: sleep a bit, then return from the body.
                std::thread::sleep(Duration::from_millis(20));
                return -1;
            }
            pid
        });
        let pid = h.join().unwrap();
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        (libc::WIFEXITED(status), libc::WEXITSTATUS(status))
    });
    eprintln!("[fork in spawned coroutine] {c:?}");
    assert_eq!(c, Some((true, 0)));
}
