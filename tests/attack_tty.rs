//! Probes: ttys (a pty pair) read and written from a plain thread and from a
//! coroutine on a one-worker runtime.

mod attack_common;

use std::time::Duration;

use attack_common::*;

/// A pty pair (master, slave), both blocking, the slave in raw mode with
/// the given VMIN and VTIME.
fn pty(vmin: u8, vtime: u8) -> (i32, i32) {
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(master >= 0);
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        let slave = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        assert!(slave >= 0);
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(slave, &mut t), 0);
        libc::cfmakeraw(&mut t);
        t.c_cc[libc::VMIN] = vmin;
        t.c_cc[libc::VTIME] = vtime;
        assert_eq!(libc::tcsetattr(slave, libc::TCSANOW, &t), 0);
        (master, slave)
    }
}

fn close(fd: i32) {
    unsafe { libc::close(fd) };
}

fn read_once(fd: i32, len: usize) -> (Result<isize, i32>, Duration) {
    let mut buf = vec![0u8; len.max(1)];
    timed(|| res(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), len) }))
}

/// Raw mode, VMIN=0 VTIME=0: a read with nothing queued returns 0 at once.
#[test]
fn attack_tty_vmin0_vtime0_read_returns_zero_at_once() {
    let limit = Duration::from_secs(3);
    let t = on_thread(limit, || {
        let (m, s) = pty(0, 0);
        let r = read_once(s, 16).0;
        close(s);
        close(m);
        r
    });
    let c = in_coroutine(1, limit, || {
        let (m, s) = pty(0, 0);
        let r = read_once(s, 16).0;
        close(s);
        close(m);
        r
    });
    compare("tty VMIN=0 VTIME=0 read", &t, &c);
}

/// Raw mode, VMIN=0 VTIME=3: a read with nothing queued returns 0 after
/// 0.3 s.
#[test]
fn attack_tty_vmin0_vtime3_read_times_out_with_zero() {
    let limit = Duration::from_secs(3);
    let body = || {
        let (m, s) = pty(0, 3);
        let (r, took) = read_once(s, 16);
        close(s);
        close(m);
        (r, took >= Duration::from_millis(250))
    };
    let t = on_thread(limit, body);
    let c = in_coroutine(1, limit, body);
    compare("tty VMIN=0 VTIME=3 read", &t, &c);
}

/// A zero-length read on a tty (canonical mode, nothing queued) returns 0 at
/// once.
#[test]
fn attack_tty_zero_length_read() {
    let limit = Duration::from_secs(3);
    let body = || unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        libc::grantpt(master);
        libc::unlockpt(master);
        let mut name = [0 as libc::c_char; 128];
        libc::ptsname_r(master, name.as_mut_ptr(), name.len());
        let slave = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        let r = read_once(slave, 0).0;
        close(slave);
        close(master);
        r
    };
    let t = on_thread(limit, body);
    let c = in_coroutine(1, limit, body);
    compare("tty zero-length read", &t, &c);
}

/// A writer of 1 MiB to the slave and a reader of the master: two threads,
/// or two coroutines of one worker.
#[test]
fn attack_tty_big_write_with_reader_on_same_worker() {
    let limit = Duration::from_secs(5);
    const TOTAL: usize = 1 << 20;
    let reader = |m: i32| {
        let mut got = 0;
        let mut buf = vec![0u8; 4096];
        while got < TOTAL {
            let n = unsafe { libc::read(m, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            got += n as usize;
        }
        got
    };
    let writer = |s: i32| {
        let data = vec![b'x'; TOTAL];
        let mut put = 0;
        while put < TOTAL {
            let n = unsafe { libc::write(s, data[put..].as_ptr().cast(), TOTAL - put) };
            if n <= 0 {
                break;
            }
            put += n as usize;
        }
        put
    };
    let t = on_thread(limit, move || {
        let (m, s) = pty(1, 0);
        let r = std::thread::spawn(move || reader(m));
        let w = writer(s);
        let got = r.join().unwrap();
        (w, got)
    });
    let c = in_coroutine(1, limit, move || {
        let (m, s) = pty(1, 0);
        let r = coroutines::spawn(move || reader(m));
        let w = writer(s);
        let got = r.join().unwrap();
        (w, got)
    });
    compare("tty 1 MiB write, reader on the same worker", &t, &c);
}

/// A coroutine reads the slave (VMIN=1) while a plain thread and the
/// coroutine race for the same input: the coroutine's wait-then-read must
/// not block the worker when the thread took the byte.
#[test]
fn attack_tty_read_race_with_thread_blocks_worker() {
    let limit = Duration::from_secs(4);
    let c = in_coroutine(1, limit, move || {
        let (m, s) = pty(1, 0);
        // A plain thread reads one byte at a time from the slave too.
        let thief = std::thread::spawn(move || {
            let mut got = 0;
            let mut b = [0u8; 1];
            while got < 50 {
                if unsafe { libc::read(s, b.as_mut_ptr().cast(), 1) } != 1 {
                    break;
                }
                got += 1;
            }
            got
        });
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let t2 = ticks.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let ticker = coroutines::spawn(move || {
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
                t2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let reader = coroutines::spawn(move || {
            let mut b = [0u8; 1];
            let mut got = 0;
            for _ in 0..50 {
                if unsafe { libc::read(s, b.as_mut_ptr().cast(), 1) } != 1 {
                    break;
                }
                got += 1;
            }
            got
        });
        // Feed 60 bytes slowly.
        for _ in 0..60 {
            unsafe { libc::write(m, b"a".as_ptr().cast(), 1) };
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(100));
        let before = ticks.load(std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(100));
        let after = ticks.load(std::sync::atomic::Ordering::Relaxed);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Unblock everyone.
        for _ in 0..200 {
            unsafe { libc::write(m, b"b".as_ptr().cast(), 1) };
        }
        let _ = thief.join();
        let r = reader.join().unwrap();
        ticker.join().unwrap();
        (r, after - before)
    });
    eprintln!("[tty read race] coroutine: {c:?}");
    let (_, ticks) = c.expect("hung");
    assert!(
        ticks > 20,
        "worker blocked: ticker ticked {ticks} in 100 ms"
    );
}
