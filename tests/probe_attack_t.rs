//! Attack probes (t): lingering closes on helper threads, select's clamp to
//! the descriptor table, and the sleep slack.

mod support;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::differential::*;
use support::raw::{recv_fd, set_linger};
use support::{fill_send_buffer, small_buffers, tcp_pair};

fn close_c(fd: RawFd) -> Result<i64, Errno> {
    // SAFETY: the case owns `fd`.
    c_outcome(unsafe { libc::close(fd) })
}

fn set_linger_raw(fd: RawFd, onoff: i32, secs: i32) -> Result<i64, Errno> {
    let l = libc::linger {
        l_onoff: onoff,
        l_linger: secs,
    };
    // SAFETY: a live linger.
    c_outcome(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    })
}

/// A drainer: after 300 ms, reads `peer` to EOF on a plain thread.
fn drain_later(mut peer: TcpStream) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        peer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut sink = vec![0u8; 64 * 1024];
        while let Ok(n) = peer.read(&mut sink) {
            if n == 0 {
                break;
            }
        }
    })
}

/// A TCP pair whose first socket has unsent data the peer does not read.
fn stuffed_pair() -> (TcpStream, TcpStream) {
    let (a, b) = tcp_pair();
    small_buffers(&a, &b);
    fill_send_buffer(&a);
    (a, b)
}

type CloseResult = (Result<i64, Errno>, Span, bool);

/// Closes `fd` beside a companion: result, span, worker kept free.
fn watched_close(side: Side, fd: RawFd) -> CloseResult {
    let companion = Companion::start(side);
    let ((ret, span), kept) = companion.during(|| timed_span(|| close_c(fd)));
    (ret, span, kept)
}

// ---------------------------------------------------------------- linger

/// Baseline: the lingering close through the hook parks.
#[test]
fn t01_lingering_close_baseline() {
    let got = differential_exclusive("linger baseline", |side| {
        let (a, b) = stuffed_pair();
        set_linger(a.as_raw_fd(), 5);
        let d = drain_later(b);
        let r = watched_close(side, a.into_raw_fd());
        d.join().unwrap();
        r
    });
    assert_eq!(got, (Ok(0), Span::Woken, true));
}

/// dup, close the original first (not last: at once), then the dup (last
/// reference: waits; the worker must stay free).
#[test]
fn t02_lingering_close_of_dup_last_reference() {
    let got = differential_exclusive("linger dup", |side| {
        let (a, b) = stuffed_pair();
        set_linger(a.as_raw_fd(), 5);
        let fd = a.into_raw_fd();
        // SAFETY: plain dup.
        let dup = unsafe { libc::dup(fd) };
        let d = drain_later(b);
        let first = watched_close(side, fd);
        let second = watched_close(side, dup);
        d.join().unwrap();
        (first.0, first.1, second)
    });
    assert_eq!(got, (Ok(0), Span::AtOnce, (Ok(0), Span::Woken, true)));
}

/// Linger set on the dup, the original closed last.
#[test]
#[ignore = "known limit (coroutines/docs/troubleshooting.md): a lingering close runs on a helper thread only on numbers that SO_LINGER was set through, or duplicated from one after"]
fn t03_linger_set_on_dup_original_closed_last() {
    let got = differential_exclusive("linger on dup", |side| {
        let (a, b) = stuffed_pair();
        let fd = a.into_raw_fd();
        // SAFETY: plain dup.
        let dup = unsafe { libc::dup(fd) };
        set_linger(dup, 5);
        let d = drain_later(b);
        let first = watched_close(side, dup);
        let second = watched_close(side, fd);
        d.join().unwrap();
        (first.0, first.1, second)
    });
    assert_eq!(got, (Ok(0), Span::AtOnce, (Ok(0), Span::Woken, true)));
}

/// Negative l_linger: Linux takes it as unsigned, i.e. linger for ever.
#[test]
fn t04_negative_linger_time() {
    let got = differential_exclusive("linger -1", |side| {
        let (a, b) = stuffed_pair();
        let set = set_linger_raw(a.as_raw_fd(), 1, -1);
        let d = drain_later(b);
        let r = watched_close(side, a.into_raw_fd());
        d.join().unwrap();
        (set, r)
    });
    assert_eq!(got, (Ok(0), (Ok(0), Span::Woken, true)));
}

/// Set then cleared (l_onoff 0): immediate.
#[test]
fn t05_linger_set_then_cleared() {
    let got = differential_exclusive("linger cleared", |side| {
        let (a, b) = stuffed_pair();
        set_linger(a.as_raw_fd(), 5);
        let c = set_linger_raw(a.as_raw_fd(), 0, 5);
        let r = watched_close(side, a.into_raw_fd());
        drop(b);
        (c, r)
    });
    assert_eq!(got, (Ok(0), (Ok(0), Span::AtOnce, true)));
}

/// Set then l_linger 0 (reset): immediate.
#[test]
fn t06_linger_zero_resets_at_once() {
    let got = differential_exclusive("linger zero", |side| {
        let (a, b) = stuffed_pair();
        set_linger(a.as_raw_fd(), 5);
        set_linger(a.as_raw_fd(), 0);
        let r = watched_close(side, a.into_raw_fd());
        drop(b);
        r
    });
    assert_eq!(got, (Ok(0), Span::AtOnce, true));
}

/// A lingering socket passed through SCM_RIGHTS: the received number is
/// the last reference.
#[test]
#[ignore = "known limit (coroutines/docs/troubleshooting.md): a lingering close runs on a helper thread only on numbers that SO_LINGER was set through, or duplicated from one after"]
fn t07_lingering_socket_passed_by_scm_rights() {
    let got = differential_exclusive("linger scm_rights", |side| {
        let (a, b) = stuffed_pair();
        set_linger(a.as_raw_fd(), 5);
        let (s, r) = UnixStream::pair().unwrap();
        support::send_with_fd(&s, &[1], a.as_raw_fd());
        let received = recv_fd(r.as_raw_fd());
        let first = close_c(a.into_raw_fd());
        let d = drain_later(b);
        let res = watched_close(side, received);
        d.join().unwrap();
        (first, res)
    });
    assert_eq!(got, (Ok(0), (Ok(0), Span::Woken, true)));
}

/// Accepted from a lingering listener, the connection already pending.
fn accepted_case(
    side: Side,
    wait_first: bool,
    poke_epoch: bool,
) -> (Result<i64, Errno>, CloseResult) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    set_linger(listener.as_raw_fd(), 5);
    let addr = listener.local_addr().unwrap();
    if poke_epoch {
        // An unrelated setting change anywhere in the process.
        let (x, _y) = tcp_pair();
        support::set_timeout_opt(x.as_raw_fd(), libc::SO_RCVTIMEO, Duration::from_secs(7));
    }
    let client = if wait_first {
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            TcpStream::connect(addr).unwrap()
        });
        let (server, _) = listener.accept().unwrap();
        let c = t.join().unwrap();
        (server, c)
    } else {
        let c = TcpStream::connect(addr).unwrap();
        thread::sleep(Duration::from_millis(20));
        let (server, _) = listener.accept().unwrap();
        (server, c)
    };
    let (server, c) = client;
    small_buffers(&server, &c);
    fill_send_buffer(&server);
    let lin = support::raw::int_opt(server.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER);
    let d = drain_later(c);
    let r = watched_close(side, server.into_raw_fd());
    d.join().unwrap();
    (lin.map(|v| v as i64), r)
}

#[test]
fn t08_accepted_from_lingering_listener_pending() {
    let got = differential_exclusive("accepted pending", |side| accepted_case(side, false, false));
    assert_eq!(got.1, (Ok(0), Span::Woken, true));
}

#[test]
fn t09_accepted_from_lingering_listener_waited() {
    let got = differential_exclusive("accepted waited", |side| accepted_case(side, true, false));
    assert_eq!(got.1, (Ok(0), Span::Woken, true));
}

#[test]
fn t10_accepted_after_settings_epoch_bump() {
    let got = differential_exclusive("accepted epoch", |side| accepted_case(side, true, true));
    assert_eq!(got.1, (Ok(0), Span::Woken, true));
}

/// dup2 onto a lingering socket's last number: the replaced socket's
/// close lingers inside dup2.
#[test]
fn t11_dup2_onto_lingering_socket() {
    let got = differential_exclusive("dup2 onto linger", |side| {
        let (a, b) = stuffed_pair();
        set_linger(a.as_raw_fd(), 5);
        let fd = a.into_raw_fd();
        // SAFETY: a path.
        let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
        let d = drain_later(b);
        let companion = Companion::start(side);
        // SAFETY: replacing our own number.
        let ((ret, span), kept) =
            companion.during(|| timed_span(|| c_outcome(unsafe { libc::dup2(null, fd) })));
        drop(companion);
        d.join().unwrap();
        close_c(null).unwrap();
        close_c(fd).unwrap();
        (ret.map(|r| r == fd as i64), span, kept)
    });
    assert_eq!(got, (Ok(true), Span::Woken, true));
}

/// Many lingering closes at once, one blocking thread.
#[test]
fn t12_many_lingering_closes_one_blocking_thread() {
    let what = "many lingering closes";
    let runtime = coroutines::Runtime::builder()
        .workers(1)
        .blocking_threads(1)
        .blocked_worker_threshold(Duration::MAX);
    let got = support::alone(|| {
        support::watchdog_on(what, Duration::from_secs(10), runtime, || {
            let mut fds = Vec::new();
            let mut drains = Vec::new();
            for _ in 0..6 {
                let (a, b) = stuffed_pair();
                set_linger(a.as_raw_fd(), 5);
                fds.push(a.into_raw_fd());
                drains.push(drain_later(b));
            }
            let companion = Companion::start(Side::Coroutine);
            let (rets, kept) = companion.during(|| {
                let start = Instant::now();
                let hs: Vec<_> = fds
                    .into_iter()
                    .map(|fd| coroutines::spawn(move || close_c(fd)))
                    .collect();
                let r: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
                (r, Span::since(start))
            });
            for d in drains {
                d.join().unwrap();
            }
            (rets, kept)
        })
    });
    assert_eq!(got, ((vec![Ok(0); 6], Span::Woken), true));
}

/// errno is untouched by a successful lingering close; close(-1) and a
/// closed number give EBADF.
#[test]
fn t13_errno_after_closes() {
    let got = differential_exclusive("errno after close", |side| {
        let _ = side;
        let (a, b) = stuffed_pair();
        set_linger(a.as_raw_fd(), 1);
        let d = drain_later(b);
        let fd = a.into_raw_fd();
        support::set_errno(libc::EDOM);
        let r = close_c(fd);
        let after = support::errno();
        d.join().unwrap();
        let bad = close_c(-1);
        let again = close_c(fd);
        (r, after, bad, again)
    });
    assert_eq!(
        got,
        (
            Ok(0),
            libc::EDOM,
            Err(Errno(libc::EBADF)),
            Err(Errno(libc::EBADF))
        )
    );
}

/// A coroutine waits to read on a lingering socket while another closes
/// it: what the reader gets, and whether closing blocks.
#[test]
fn t14_close_while_other_waits_on_lingering() {
    let got = differential_exclusive("close while waiting lingering", |side| {
        let (a, b) = stuffed_pair();
        set_linger(a.as_raw_fd(), 5);
        let fd = a.into_raw_fd();
        let reader = side.spawn(move || {
            let mut byte = [0u8; 1];
            // SAFETY: live buffer.
            let n = unsafe { libc::read(fd, byte.as_mut_ptr().cast(), 1) };
            c_outcome(n as i64)
        });
        thread::sleep(Duration::from_millis(50));
        let d = drain_later(b);
        let r = watched_close(side, fd);
        d.join().unwrap();
        // Read returns on the thread when the peer closes (EOF).
        let got = reader.join();
        (r.0, r.2, got.is_ok() || got == Err(Errno(libc::EBADF)))
    });
    assert_eq!(got, (Ok(0), true, true));
}

// ---------------------------------------------------------------- select

fn fdsize() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("FDSize:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn set_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

fn bits_rel(bits: &[u64], base: usize) -> Vec<i64> {
    let mut v = Vec::new();
    for i in 0..bits.len() * 64 {
        if bits[i / 64] & (1 << (i % 64)) != 0 {
            v.push(i as i64 - base as i64);
        }
    }
    v
}

/// select with `nfds` relative to FDSize (`rel`, or absolute if `abs`),
/// a ready or not-ready pipe, and junk bits past the table.
fn select_case(
    nfds_of: impl Fn(usize) -> usize,
    ready: bool,
    pselect: bool,
) -> (i64, Vec<i64>, Vec<i64>, Span) {
    let table = fdsize();
    let mut p = [0; 2];
    // SAFETY: pipe.
    assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
    if ready {
        // SAFETY: write 1 byte.
        unsafe { libc::write(p[1], b"x".as_ptr().cast(), 1) };
    }
    let nfds = nfds_of(table);
    let mut rd = vec![0u64; 64];
    let mut wr = vec![0u64; 64];
    set_bit(&mut rd, p[0] as usize);
    // Junk bits past the table, within and past nfds.
    for extra in [table, table + 1, table + 63, table + 64, table + 200] {
        if extra < 64 * 64 {
            set_bit(&mut rd, extra);
            set_bit(&mut wr, extra);
        }
    }
    // Junk past nfds.
    for extra in [nfds, nfds + 1, nfds + 70] {
        if extra < 64 * 64 {
            set_bit(&mut rd, extra);
        }
    }
    let start = Instant::now();
    let ret = if pselect {
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 30_000_000,
        };
        // SAFETY: sets of 4096 bits.
        unsafe {
            libc::pselect(
                nfds as i32,
                rd.as_mut_ptr().cast(),
                wr.as_mut_ptr().cast(),
                std::ptr::null_mut(),
                &ts,
                std::ptr::null(),
            )
        }
    } else {
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 30_000,
        };
        // SAFETY: sets of 4096 bits.
        unsafe {
            libc::select(
                nfds as i32,
                rd.as_mut_ptr().cast(),
                wr.as_mut_ptr().cast(),
                std::ptr::null_mut(),
                &mut tv,
            )
        }
    };
    let span = Span::since(start);
    let ret = c_outcome(ret).unwrap_or_else(|e| -(e.0 as i64));
    let rel = |b: &[u64]| {
        bits_rel(b, table)
            .into_iter()
            .map(|i| {
                if i == p[0] as i64 - table as i64 {
                    -10_000
                } else {
                    i
                }
            })
            .collect::<Vec<_>>()
    };
    let out = (ret, rel(&rd), rel(&wr), span);
    close_c(p[0]).unwrap();
    close_c(p[1]).unwrap();
    out
}

fn select_matrix(pselect: bool) {
    type Nfds = (&'static str, fn(usize) -> usize);
    let nfds_list: Vec<Nfds> = vec![
        ("64", |_| 64),
        ("65", |_| 65),
        ("fdsize", |t| t),
        ("fdsize+1", |t| t + 1),
        ("fdsize+63", |t| t + 63),
        ("fdsize+64", |t| t + 64),
        ("1000", |_| 1000),
        ("4096", |_| 4096),
    ];
    let mut failures = Vec::new();
    for (name, f) in nfds_list {
        for ready in [true, false] {
            let what = format!("select pselect={pselect} nfds={name} ready={ready}");
            let r = std::panic::catch_unwind(|| {
                differential_exclusive(&what, move |_side| select_case(f, ready, pselect))
            });
            if let Err(e) = r {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "?".into());
                failures.push(msg);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn t20_select_nfds_matrix() {
    select_matrix(false);
}

#[test]
fn t21_pselect_nfds_matrix() {
    select_matrix(true);
}

/// The table grows during the wait: a descriptor at FDSize+10 (asked for,
/// ignored at the start) becomes open and readable.
#[test]
fn t22_select_table_grows_during_wait() {
    let got = differential_exclusive("select grows", |side| {
        let table = fdsize();
        let mut p = [0; 2];
        let mut q = [0; 2];
        // SAFETY: pipes.
        unsafe {
            assert_eq!(libc::pipe(p.as_mut_ptr()), 0);
            assert_eq!(libc::pipe(q.as_mut_ptr()), 0);
            libc::write(q[1], b"x".as_ptr().cast(), 1);
        }
        let high = table + 10;
        let mut rd = vec![0u64; 64];
        set_bit(&mut rd, p[0] as usize);
        set_bit(&mut rd, high);
        let (q0, p1) = (q[0], p[1]);
        let grower = side.spawn(move || {
            thread::sleep(Duration::from_millis(50));
            // SAFETY: our numbers.
            let r = unsafe { libc::dup2(q0, high as i32) };
            thread::sleep(Duration::from_millis(100));
            unsafe { libc::write(p1, b"y".as_ptr().cast(), 1) };
            r == high as i32
        });
        let mut tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        let (ret, span) = timed_span(|| unsafe {
            libc::select(
                (high + 1) as i32,
                rd.as_mut_ptr().cast(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut tv,
            )
        });
        let grew = grower.join();
        let bits = bits_rel(&rd, table)
            .into_iter()
            .map(|i| {
                if i == p[0] as i64 - table as i64 {
                    -10_000
                } else {
                    i
                }
            })
            .collect::<Vec<_>>();
        for fd in [p[0], p[1], q[0], q[1], high as i32] {
            close_c(fd).unwrap();
        }
        (ret, bits, span, grew, fdsize() > table)
    });
    eprintln!("t22: {got:?}");
}

/// A select on 1000 descriptors (500 pipes), one written after 50 ms.
#[test]
fn t23_select_on_1000_descriptors() {
    let got = differential_exclusive("select 1000", |side| {
        let mut pipes = Vec::new();
        for _ in 0..500 {
            let mut p = [0; 2];
            // SAFETY: pipe.
            assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
            pipes.push(p);
        }
        let max = pipes.iter().flat_map(|p| [p[0], p[1]]).max().unwrap() as usize;
        let mut rd = vec![0u64; max / 64 + 1];
        for p in &pipes {
            set_bit(&mut rd, p[0] as usize);
        }
        let target = pipes[321][1];
        let writer = side.spawn(move || {
            thread::sleep(Duration::from_millis(150));
            // SAFETY: write.
            unsafe { libc::write(target, b"x".as_ptr().cast(), 1) };
        });
        let companion = Companion::start(side);
        let ((ret, span), kept) = companion.during(|| {
            timed_span(|| unsafe {
                libc::select(
                    (max + 1) as i32,
                    rd.as_mut_ptr().cast(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            })
        });
        drop(companion);
        writer.join();
        let which: Vec<usize> = (0..=max)
            .filter(|&i| rd[i / 64] & (1 << (i % 64)) != 0)
            .collect();
        let ok = which == vec![pipes[321][0] as usize];
        for p in pipes {
            close_c(p[0]).unwrap();
            close_c(p[1]).unwrap();
        }
        (ret, ok, span, kept)
    });
    assert_eq!(got, (1, true, Span::Woken, true));
}

// ---------------------------------------------------------------- sleeps

fn abs_sleep(offset_ns: i64) -> (i32, Duration) {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let total = now.tv_sec * 1_000_000_000 + now.tv_nsec + offset_ns;
    let req = libc::timespec {
        tv_sec: total.div_euclid(1_000_000_000),
        tv_nsec: total.rem_euclid(1_000_000_000),
    };
    let start = Instant::now();
    // SAFETY: valid timespec.
    let r = unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &req,
            std::ptr::null_mut(),
        )
    };
    (r, start.elapsed())
}

#[test]
fn t30_absolute_sleep_in_the_past_and_10us_ahead() {
    let got = differential("abs sleeps", |_side| {
        let (r1, e1) = abs_sleep(-1_000_000);
        let (r2, e2) = abs_sleep(10_000);
        eprintln!("abs past {e1:?}, abs +10us {e2:?}");
        (
            r1,
            e1 < Duration::from_millis(5),
            r2,
            e2 < Duration::from_millis(5),
            e2 >= Duration::from_micros(10),
        )
    });
    assert_eq!(got, (0, true, 0, true, true));
}

#[test]
fn t31_rem_untouched() {
    let got = differential("rem", |_side| {
        let req = libc::timespec {
            tv_sec: 0,
            tv_nsec: 1_000_000,
        };
        let mut rem = libc::timespec {
            tv_sec: 77,
            tv_nsec: 77,
        };
        // SAFETY: valid.
        let a = unsafe { libc::nanosleep(&req, &mut rem) };
        let r1 = (rem.tv_sec, rem.tv_nsec);
        let b = unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &req, &mut rem) };
        let r2 = (rem.tv_sec, rem.tv_nsec);
        (a, r1, b, r2)
    });
    assert_eq!(got, (0, (77, 77), 0, (77, 77)));
}

fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn zero_sleep(kind: u8) {
    let z = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid.
    unsafe {
        match kind {
            0 => {
                libc::nanosleep(&z, std::ptr::null_mut());
            }
            1 => {
                libc::usleep(0);
            }
            2 => {
                libc::sleep(0);
            }
            3 => {
                libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &z, std::ptr::null_mut());
            }
            _ => {
                libc::usleep(1);
            }
        }
    }
}

/// A loop of zero sleeps for 200 ms: count and CPU, thread vs coroutine.
#[test]
fn t32_zero_sleep_loop_counts_and_cpu() {
    let mut report = Vec::new();
    for kind in 0..5u8 {
        let run = move || {
            let cpu0 = thread_cpu();
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < Duration::from_millis(200) {
                zero_sleep(kind);
                n += 1;
            }
            (n, thread_cpu() - cpu0)
        };
        let t = on_plain_thread("zero sleep thread", run);
        let c = support::alone(|| {
            support::watchdog_on(
                "zero sleep coroutine",
                LIMIT,
                coroutines::Runtime::builder()
                    .workers(1)
                    .blocked_worker_threshold(Duration::MAX),
                run,
            )
        });
        // Spinning is the whole 200 ms. A coroutine's sleep costs more CPU
        // than a thread's (about 40 us against 5 us of its ~130 us, the
        // worker's wake-up and idle look included), so 1/2 of the loop's
        // time, not a multiple of the thread's, tells a spin.
        let spun = c.1 > t.1.max(Duration::from_millis(100));
        report.push(format!(
            "kind {kind}: thread {} iters cpu {:?}; coroutine {} iters cpu {:?}{}",
            t.0,
            t.1,
            c.0,
            c.1,
            if spun { "  <-- spins" } else { "" }
        ));
    }
    let text = report.join("\n");
    eprintln!("{text}");
    assert!(!text.contains("spins"), "{text}");
}

/// A coroutine that waits for a flag with nanosleep(0) in a loop: a
/// thread's nanosleep(0) gives up the CPU, so the flag setter runs.
#[test]
fn t33_zero_sleep_spin_lets_others_run() {
    let mut bad = Vec::new();
    for kind in 0..5u8 {
        let got = std::panic::catch_unwind(move || {
            differential(&format!("zero sleep spin kind {kind}"), move |side| {
                let flag = Arc::new(AtomicBool::new(false));
                let f2 = flag.clone();
                let setter = side.spawn(move || {
                    thread::sleep(Duration::from_millis(1));
                    f2.store(true, Ordering::SeqCst);
                });
                let start = Instant::now();
                while !flag.load(Ordering::SeqCst) && start.elapsed() < Duration::from_millis(500) {
                    zero_sleep(kind);
                }
                let seen = flag.load(Ordering::SeqCst);
                setter.join();
                (seen, start.elapsed() < Duration::from_millis(300))
            })
        });
        if got.is_err() {
            bad.push(kind);
        }
    }
    assert!(bad.is_empty(), "zero-sleep kinds (0 nanosleep,1 usleep(0),2 sleep(0),3 clock_nanosleep 0,4 usleep(1)) that starve: {bad:?}");
}

/// Same with an absolute clock_nanosleep to a past time.
#[test]
fn t34_abs_past_sleep_spin_lets_others_run() {
    let got = differential("abs past spin", move |side| {
        let flag = Arc::new(AtomicBool::new(false));
        let f2 = flag.clone();
        let setter = side.spawn(move || {
            thread::sleep(Duration::from_millis(1));
            f2.store(true, Ordering::SeqCst);
        });
        let start = Instant::now();
        while !flag.load(Ordering::SeqCst) && start.elapsed() < Duration::from_millis(500) {
            abs_sleep(-1000);
        }
        let seen = flag.load(Ordering::SeqCst);
        setter.join();
        (seen, start.elapsed() < Duration::from_millis(300))
    });
    assert_eq!(got, (true, true));
}

#[allow(dead_code)]
fn unused(_: UnixStream) -> Option<TcpStream> {
    // SAFETY: never called.
    Some(unsafe { TcpStream::from_raw_fd(-1) })
}

/// The table is full (every number below FDSize open): the hook's own
/// open of /proc/self/status takes number FDSize and doubles the table
/// before it reads FDSize, so the clamp lets the kernel see a bit the
/// thread's kernel ignores (a closed number past the old table).
#[test]
#[ignore = "known limit (coroutines/docs/troubleshooting.md): with every slot of the descriptor table open, a coroutine's select learns the size of the table as grown by its own look at it"]
fn t24_select_with_a_full_table() {
    let mut bad = Vec::new();
    for pselect in [false, true] {
        let got = std::panic::catch_unwind(move || {
            differential_exclusive("select full table", move |_side| {
                let table = fdsize();
                let mut p = [0; 2];
                // SAFETY: pipe.
                assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
                unsafe { libc::write(p[1], b"x".as_ptr().cast(), 1) };
                let mut fillers = Vec::new();
                loop {
                    // SAFETY: a path.
                    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
                    assert!(fd >= 0);
                    if fd as usize >= table {
                        close_c(fd).unwrap();
                        break;
                    }
                    fillers.push(fd);
                    if fd as usize == table - 1 {
                        break;
                    }
                }
                let full = fillers.last() == Some(&((table - 1) as i32));
                let mut rd = vec![0u64; 64];
                set_bit(&mut rd, p[0] as usize);
                set_bit(&mut rd, table + 1);
                let nfds = (table + 64) as i32;
                let ret = if pselect {
                    let ts = libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 10_000_000,
                    };
                    unsafe {
                        libc::pselect(
                            nfds,
                            rd.as_mut_ptr().cast(),
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            &ts,
                            std::ptr::null(),
                        )
                    }
                } else {
                    let mut tv = libc::timeval {
                        tv_sec: 0,
                        tv_usec: 10_000,
                    };
                    unsafe {
                        libc::select(
                            nfds,
                            rd.as_mut_ptr().cast(),
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            &mut tv,
                        )
                    }
                };
                let ret = c_outcome(ret);
                let bits = bits_rel(&rd, table);
                for fd in fillers.into_iter().chain([p[0], p[1]]) {
                    close_c(fd).unwrap();
                }
                (full, ret, bits.len())
            })
        });
        if got.is_err() {
            bad.push(pselect);
        }
    }
    assert!(bad.is_empty(), "full table differs for pselect in {bad:?}");
}
