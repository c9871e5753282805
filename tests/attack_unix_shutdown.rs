//! Probes: a blocking write on a Unix stream, cut short by a shutdown
//! (the peer's SHUT_RD, or our own SHUT_WR from another thread), which
//! epoll does not report as any readiness.

mod attack_common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use attack_common::*;

fn blocked_write(
    shut: fn(&UnixStream, &UnixStream),
) -> impl FnOnce() -> (Result<isize, i32>, bool) + Send + 'static {
    move || {
        let (a, b) = UnixStream::pair().unwrap();
        let a2 = a.try_clone().unwrap();
        let cutter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            shut(&a2, &b);
            // Both stay open well past the probe's bound.
            std::thread::sleep(Duration::from_secs(5));
            (a2, b)
        });
        let data = vec![1u8; 4 << 20];
        let (r, took) =
            timed(|| res(unsafe { libc::write(a.as_raw_fd(), data.as_ptr().cast(), data.len()) }));
        std::mem::forget(cutter);
        (
            r.map(|n| (n > 0 && (n as usize) < data.len()) as isize),
            took < Duration::from_millis(1000),
        )
    }
}

#[test]
fn attack_unix_write_cut_by_peer_shut_rd() {
    let limit = Duration::from_secs(2);
    let t = on_thread(
        limit,
        blocked_write(|_, b| b.shutdown(std::net::Shutdown::Read).unwrap()),
    );
    let c = in_coroutine(
        1,
        limit,
        blocked_write(|_, b| b.shutdown(std::net::Shutdown::Read).unwrap()),
    );
    compare("unix write(4 MiB), peer shutdown(SHUT_RD)", &t, &c);
}

#[test]
fn attack_unix_write_cut_by_own_shut_wr() {
    let limit = Duration::from_secs(2);
    let t = on_thread(
        limit,
        blocked_write(|a, _| a.shutdown(std::net::Shutdown::Write).unwrap()),
    );
    let c = in_coroutine(
        1,
        limit,
        blocked_write(|a, _| a.shutdown(std::net::Shutdown::Write).unwrap()),
    );
    compare(
        "unix write(4 MiB), own shutdown(SHUT_WR) from a thread",
        &t,
        &c,
    );
}

/// Control: the same with a pipe whose reader closes.
#[test]
fn attack_pipe_write_cut_by_reader_close() {
    let limit = Duration::from_secs(2);
    let body = || {
        let mut p = [0; 2];
        unsafe { libc::pipe(p.as_mut_ptr()) };
        let r = p[0];
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(r) };
            let mut buf = vec![0u8; 4096];
            let _ = f.read(&mut buf);
        });
        let data = vec![1u8; 4 << 20];
        let (r, took) =
            timed(|| res(unsafe { libc::write(p[1], data.as_ptr().cast(), data.len()) }));
        unsafe { libc::close(p[1]) };
        (
            r.map(|n| (n > 0) as isize),
            took < Duration::from_millis(1000),
        )
    };
    let t = on_thread(limit, body);
    let c = in_coroutine(1, limit, body);
    compare("pipe write(4 MiB), reader closes", &t, &c);
}
