//! Round Q probes: today's changes (splices attempted on helper threads once
//! both ends look ready, holds that release only O_NONBLOCK, FIONBIO under
//! a hold, select's pruning, semaphores on helper threads, nanosecond
//! worker timeouts, runtimes dropped on another runtime's worker). Each
//! case runs on a plain thread and in a coroutine (`support::differential`)
//! and compares plain data.
//!
//! At e61cb24, 17 of 23 fail: every splice probe (the attempt waits for
//! `poll` readiness before the kernel has had its say, and a helper's
//! attempt blocks with the kernel's own socket timeout), select with nfds
//! past the descriptor table (reads and writes nfds bits, the kernel only
//! its table's), FIOASYNC toggles lost to a hold's read-modify-write of
//! the flags, and 1 us sleeps that never sleep (a core at 99%).

mod support;

use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::differential::*;
use support::glibc::sem_clockwait;
use support::raw::{close, close_all, pipe, unix_socketpair, write_once};
use support::*;

fn shut(fd: RawFd, how: i32) {
    // SAFETY: shutdown of a live socket.
    unsafe { libc::shutdown(fd, how) };
}

fn raw_splice(
    from: RawFd,
    off_in: *mut libc::loff_t,
    to: RawFd,
    off_out: *mut libc::loff_t,
    len: usize,
    flags: u32,
) -> Result<i64, Errno> {
    // SAFETY: the kernel checks descriptors and offsets.
    c_outcome(unsafe { libc::splice(from, off_in, to, off_out, len, flags) } as i64)
}

/// Fills the send buffer of socket `fd` (MSG_DONTWAIT) until refused.
fn fill_raw(fd: RawFd) -> usize {
    let chunk = [0x5au8; 16 * 1024];
    let mut total = 0;
    for _ in 0..2 {
        loop {
            // SAFETY: a live buffer.
            let n = unsafe {
                libc::send(
                    fd,
                    chunk.as_ptr().cast(),
                    chunk.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n <= 0 {
                break;
            }
            total += n as usize;
        }
        thread::sleep(Duration::from_millis(20));
    }
    total
}

// ------------------------------------------------ splice: argument errors

/// A splice with a TCP end that is not ready, whose arguments the kernel
/// refuses before it looks at readiness: a zero length (0 at once), an
/// input offset on a socket (EINVAL), an unknown flag (EINVAL), a pipe's
/// read end as the output (EBADF). Into a TCP socket whose send buffer is
/// full: a zero length, an output offset, an unknown flag. A thread gets
/// each at once; a rescue makes the socket ready after 500 ms (a byte to
/// read, or the peer shut down) in case the call waits.
fn splice_argument_error(what: &'static str, from_tcp: bool) {
    let got = differential(what, move |_| {
        let (c, s) = tcp_pair();
        let (pr, pw) = pipe(0);
        let mut off: libc::loff_t = 0;
        if !from_tcp {
            small_buffers(&c, &s);
            fill_send_buffer(&c);
            write_once(pw, b"payload").unwrap();
        }
        let s_fd = s.as_raw_fd();
        let rescue = Rescue::arm(move || {
            // SAFETY: a send on a live socket / shutdown.
            unsafe {
                libc::send(s_fd, b"x".as_ptr().cast(), 1, libc::MSG_NOSIGNAL);
                libc::shutdown(s_fd, libc::SHUT_RDWR);
            }
        });
        let c_fd = c.as_raw_fd();
        let (ret, timing) = timed(|| match what {
            "len 0 from tcp" => raw_splice(c_fd, null_mut(), pw, null_mut(), 0, 0),
            "off_in on tcp" => raw_splice(c_fd, &mut off, pw, null_mut(), 16, 0),
            "unknown flag from tcp" => raw_splice(c_fd, null_mut(), pw, null_mut(), 16, 0x100),
            "tcp into a pipe's read end" => raw_splice(c_fd, null_mut(), pr, null_mut(), 16, 0),
            "len 0 into full tcp" => raw_splice(pr, null_mut(), c_fd, null_mut(), 0, 0),
            "off_out on full tcp" => raw_splice(pr, null_mut(), c_fd, &mut off, 7, 0),
            _ => raw_splice(pr, null_mut(), c_fd, null_mut(), 7, 0x100),
        });
        let rescued = rescue.disarm();
        close_all([pr, pw]);
        drop((c, s));
        (ret, timing, rescued)
    });
    assert_eq!(
        (got.1, got.2),
        (Timing::AtOnce, false),
        "{what}: {:?}",
        got.0
    );
}

#[test]
fn splice_len_0_from_tcp_not_ready() {
    splice_argument_error("len 0 from tcp", true);
}

#[test]
fn splice_off_in_on_tcp_not_ready() {
    splice_argument_error("off_in on tcp", true);
}

#[test]
fn splice_unknown_flag_from_tcp_not_ready() {
    splice_argument_error("unknown flag from tcp", true);
}

#[test]
fn splice_from_tcp_into_a_pipes_read_end() {
    splice_argument_error("tcp into a pipe's read end", true);
}

#[test]
fn splice_len_0_into_full_tcp() {
    splice_argument_error("len 0 into full tcp", false);
}

#[test]
fn splice_off_out_on_full_tcp() {
    splice_argument_error("off_out on full tcp", false);
}

#[test]
fn splice_unknown_flag_into_full_tcp() {
    splice_argument_error("unknown flag into full tcp", false);
}

// ------------------------------------- splice into a shut-down Unix socket

/// A splice from a pipe into a Unix stream socket whose send buffer is
/// full and whose writing side is shut down (by `shutdown(SHUT_WR)` on it,
/// or by the peer's `SHUT_RD`): the kernel fails it with EPIPE at once
/// (SIGPIPE is ignored). Blocking and non-blocking socket. A rescue closes
/// the peer after 500 ms in case the call waits.
#[test]
fn splice_into_a_shut_down_unix_socket_with_a_full_buffer() {
    let got = differential("splice into shut-down unix socket", |_| {
        let mut out = Vec::new();
        for (how, nonblocking) in [
            ("own SHUT_WR", false),
            ("peer SHUT_RD", false),
            ("own SHUT_WR", true),
            ("peer SHUT_RD", true),
        ] {
            let (c, s) = unix_socketpair(libc::SOCK_STREAM | libc::SOCK_CLOEXEC);
            fill_raw(c);
            if how == "own SHUT_WR" {
                shut(c, libc::SHUT_WR);
            } else {
                shut(s, libc::SHUT_RD);
            }
            if nonblocking {
                // SAFETY: F_SETFL on a live descriptor.
                unsafe { libc::fcntl(c, libc::F_SETFL, libc::O_NONBLOCK | libc::O_RDWR) };
            }
            let (pr, pw) = pipe(0);
            write_once(pw, b"payload").unwrap();
            let rescue = Rescue::arm(move || close(s));
            let (ret, timing) = timed(|| support::raw::splice(pr, c, 7, 0));
            let rescued = rescue.disarm();
            out.push((how, nonblocking, ret, timing, rescued));
            if !rescued {
                close(s);
            }
            close_all([c, pr, pw]);
        }
        out
    });
    for (how, nb, ret, timing, rescued) in got {
        assert_eq!(
            (ret, timing, rescued),
            (Err(Errno(libc::EPIPE)), Timing::AtOnce, false),
            "{how} nonblocking={nb}"
        );
    }
}

// ------------------------------------------ splice and the kernel's timeouts

/// A splice of 64 KiB from a pipe into a blocking TCP socket with small
/// buffers and an SO_SNDTIMEO of 300 ms, whose peer never reads: part goes
/// in, then the call ends at the timeout with the part. How long it took,
/// in timeouts (rounded), must be the same as a thread's.
#[test]
fn splice_into_tcp_ends_at_its_send_timeout_as_a_threads() {
    let got = differential("splice into tcp with SO_SNDTIMEO", |_| {
        let (c, s) = tcp_pair();
        small_buffers(&c, &s);
        set_timeout_opt(c.as_raw_fd(), libc::SO_SNDTIMEO, Duration::from_millis(300));
        let (pr, pw) = pipe(0);
        let data = vec![7u8; 64 * 1024];
        write_once(pw, &data).unwrap();
        let start = Instant::now();
        let ret = support::raw::splice(pr, c.as_raw_fd(), data.len(), 0);
        let elapsed = start.elapsed();
        eprintln!("splice into tcp with SO_SNDTIMEO: {ret:?} in {elapsed:?}");
        close_all([pr, pw]);
        drop((c, s));
        let timeouts = (elapsed.as_millis() as f64 / 300.0).round() as u64;
        (
            moved(ret.map(|n| n as isize).unwrap_or(-1), data.len()),
            timeouts,
        )
    });
    assert_eq!(got.0, Ok(Moved::Part));
}

/// Two parties of the side splice from one TCP socket with SO_RCVTIMEO
/// 300 ms into pipes of their own; one byte arrives 150 ms in, and one of
/// the two takes it. The other ends with EAGAIN at its timeout, about 300
/// ms after its start, as a thread's does. Four rounds: per round, the
/// sorted (result, timing against 300 ms) of the two.
#[test]
fn splice_from_tcp_that_loses_a_race_keeps_its_receive_timeout() {
    let got = differential("two splices from one tcp socket", |side| {
        let mut rounds = Vec::new();
        for _ in 0..4 {
            let (c, s) = tcp_pair();
            let c_fd = c.as_raw_fd();
            set_timeout_opt(c_fd, libc::SO_RCVTIMEO, Duration::from_millis(300));
            let parties: Vec<_> = (0..2)
                .map(|_| {
                    side.spawn(move || {
                        let (pr, pw) = pipe(0);
                        let got = timed_against(Duration::from_millis(300), || {
                            support::raw::splice(c_fd, pw, 16, 0)
                        });
                        close_all([pr, pw]);
                        got
                    })
                })
                .collect();
            let s_fd = s.as_raw_fd();
            let writer = after(Duration::from_millis(150), move || {
                // SAFETY: a send on a live socket.
                unsafe { libc::send(s_fd, b"x".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) };
            });
            let mut results: Vec<_> = parties.into_iter().map(|p| p.join()).collect();
            writer.join().unwrap();
            results.sort_by_key(|r| format!("{r:?}"));
            rounds.push(results);
            drop((c, s));
        }
        rounds
    });
    eprintln!("{got:?}");
}

// -------------------------------------------------------- semaphores

fn new_sem(value: u32) -> Box<libc::sem_t> {
    // SAFETY: an all-zero sem_t is initialised by sem_init before use.
    let mut sem: Box<libc::sem_t> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: a live sem_t.
    assert_eq!(unsafe { libc::sem_init(&mut *sem, 0, value) }, 0);
    sem
}

struct SemPtr(*mut libc::sem_t);
// SAFETY: semaphores are made to be shared between threads.
unsafe impl Send for SemPtr {}

fn realtime_in(d: Duration) -> libc::timespec {
    let mut now = ts(0, 0);
    // SAFETY: a live out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    let total = Duration::new(now.tv_sec as u64, now.tv_nsec as u32) + d;
    ts(total.as_secs() as i64, total.subsec_nanos() as i64)
}

fn monotonic_in(d: Duration) -> libc::timespec {
    let mut now = ts(0, 0);
    // SAFETY: a live out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let total = Duration::new(now.tv_sec as u64, now.tv_nsec as u32) + d;
    ts(total.as_secs() as i64, total.subsec_nanos() as i64)
}

/// Semaphore waits: the argument errors glibc gives first (even with the
/// semaphore available), timeouts in the past and near future, a wait a
/// neighbour (of the side) ends by a post 100 ms in, and errno after
/// each success left as it was; the neighbour kept running meanwhile.
#[test]
fn semaphore_waits_as_a_thread() {
    let got = differential("semaphores", |side| {
        let mut out: Vec<(&str, Result<i64, Errno>, i32, Span)> = Vec::new();
        let mut sem = new_sem(1);
        let p: *mut libc::sem_t = &mut *sem;
        let bad = ts(0, 1_000_000_000);
        let mut run = |what: &'static str, f: &dyn Fn() -> i32| {
            set_errno(4242);
            let start = Instant::now();
            let ret = c_outcome(f());
            let e = errno();
            out.push((what, ret, e, Span::since(start)));
        };
        // SAFETY (all below): a live semaphore and live timespecs.
        run("timedwait bad nsec, available", &|| unsafe {
            libc::sem_timedwait(p, &bad)
        });
        run("clockwait bad clock, available", &|| unsafe {
            sem_clockwait(p, libc::CLOCK_PROCESS_CPUTIME_ID, &ts(0, 0))
        });
        run("clockwait bad clock, null time", &|| unsafe {
            sem_clockwait(p, 42, null())
        });
        run("timedwait past, available", &|| unsafe {
            libc::sem_timedwait(p, &ts(0, 0))
        });
        run("timedwait past, taken", &|| unsafe {
            libc::sem_timedwait(p, &ts(0, 0))
        });
        run("clockwait monotonic 100 ms", &|| unsafe {
            sem_clockwait(
                p,
                libc::CLOCK_MONOTONIC,
                &monotonic_in(Duration::from_millis(100)),
            )
        });
        run("timedwait realtime 100 ms", &|| unsafe {
            libc::sem_timedwait(p, &realtime_in(Duration::from_millis(100)))
        });
        run("trywait taken", &|| unsafe { libc::sem_trywait(p) });
        let companion = Companion::start(side);
        let mut kept_all = Vec::new();
        for what in ["wait, posted 100 ms in", "timedwait, posted 100 ms in"] {
            let sp = SemPtr(p);
            let poster = side.spawn(move || {
                let sp = sp;
                thread::sleep(Duration::from_millis(100));
                // SAFETY: a live semaphore.
                unsafe { libc::sem_post(sp.0) };
            });
            let ((), kept) = companion.during(|| match what {
                "wait, posted 100 ms in" => run(what, &|| unsafe { libc::sem_wait(p) }),
                _ => run(what, &|| unsafe {
                    libc::sem_timedwait(p, &realtime_in(Duration::from_secs(2)))
                }),
            });
            poster.join();
            kept_all.push(kept);
        }
        drop(companion);
        // SAFETY: no waiter is left.
        unsafe { libc::sem_destroy(p) };
        (out, kept_all)
    });
    eprintln!("{got:?}");
}

/// A process-shared semaphore in shared memory: the case waits while a
/// forked child posts 100 ms in; then the child waits while the case
/// posts. Both waits end at the post; the child exits 0.
#[test]
fn process_shared_semaphore_with_a_forked_child() {
    let got = differential("process-shared semaphore", |side| {
        // SAFETY: an anonymous shared mapping for one sem_t.
        let map = unsafe {
            libc::mmap(
                null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        let a = map.cast::<libc::sem_t>();
        // SAFETY: inside the mapping.
        let b = unsafe { a.add(1) };
        // SAFETY: live sem_ts in shared memory.
        unsafe {
            assert_eq!(libc::sem_init(a, 1, 0), 0);
            assert_eq!(libc::sem_init(b, 1, 0), 0);
        }
        let companion = Companion::start(side);
        // SAFETY: fork; the child makes only async-signal-safe calls
        // (nanosleep, sem_post, sem_wait on futexes) and _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe {
                let t = ts(0, 100_000_000);
                libc::nanosleep(&t, null_mut());
                libc::sem_post(a);
                let r = libc::sem_wait(b);
                libc::_exit(if r == 0 { 0 } else { 3 });
            }
        }
        let start = Instant::now();
        // SAFETY: as above.
        let (r1, kept) = companion.during(|| c_outcome(unsafe { libc::sem_wait(a) }));
        let span = Span::since(start);
        thread::sleep(Duration::from_millis(50));
        // SAFETY: as above.
        unsafe { libc::sem_post(b) };
        let mut status = 0;
        // SAFETY: waits for our child.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        drop(companion);
        // SAFETY: unmaps what we mapped.
        unsafe { libc::munmap(map, 4096) };
        (r1, span, kept, waited == pid, status)
    });
    assert_eq!(got, (Ok(0), Span::Woken, true, true, 0));
}

/// Eight coroutines (threads) wait on one semaphore with a runtime of two
/// helper threads; the case posts eight times 100 ms later: every waiter
/// returns.
#[test]
fn more_semaphore_waiters_than_helpers() {
    let runtime = coroutines::Runtime::builder()
        .workers(1)
        .blocking_threads(2)
        .blocked_worker_threshold(Duration::MAX)
        .build()
        .unwrap();
    let done = runtime.block_on(|| {
        let mut sem = new_sem(0);
        let p: *mut libc::sem_t = &mut *sem;
        let finished = Arc::new(AtomicU64::new(0));
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let sp = SemPtr(p);
                let finished = finished.clone();
                coroutines::spawn(move || {
                    let sp = sp;
                    // SAFETY: a live semaphore.
                    let r =
                        unsafe { libc::sem_timedwait(sp.0, &realtime_in(Duration::from_secs(3))) };
                    if r == 0 {
                        finished.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(100));
        for _ in 0..8 {
            // SAFETY: a live semaphore.
            unsafe { libc::sem_post(p) };
        }
        let start = Instant::now();
        for w in waiters {
            w.join().unwrap();
        }
        let took = start.elapsed();
        drop(sem);
        (
            finished.load(Ordering::SeqCst),
            took < Duration::from_secs(1),
        )
    });
    assert_eq!(done, (8, true));
}

// ------------------------------------------------ holds and other threads

/// A plain thread toggles FIOASYNC on a listener 5000 times (each checked
/// by F_GETFL right after), while the side's party accepts connections a
/// plain thread keeps making (each coroutine attempt holds the listener
/// non-blocking and releases it): a toggle that a hold's start or release
/// undid shows as a wrong O_ASYNC.
#[test]
fn fioasync_toggles_beside_coroutine_accepts() {
    let got = differential("FIOASYNC beside accepts", |side| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let lfd = listener.as_raw_fd();
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = side.spawn({
            let stop = stop.clone();
            move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    // SAFETY: accept on a live listener.
                    let fd = unsafe { libc::accept(lfd, null_mut(), null_mut()) };
                    if fd >= 0 {
                        close(fd);
                        n += 1;
                    }
                }
                n
            }
        });
        let connector = thread::spawn({
            let stop = stop.clone();
            move || {
                while !stop.load(Ordering::SeqCst) {
                    let _ = TcpStream::connect(addr);
                }
            }
        });
        let toggler = thread::spawn(move || {
            let mut wrong = 0u64;
            for i in 0..5000 {
                let on: libc::c_int = (i % 2 == 0) as libc::c_int;
                // SAFETY: ioctl with a live int.
                unsafe { libc::ioctl(lfd, libc::FIOASYNC, &on) };
                let shown = flags(lfd) & libc::O_ASYNC != 0;
                if shown != (on != 0) {
                    wrong += 1;
                }
                thread::sleep(Duration::from_micros(20));
            }
            wrong
        });
        let wrong = toggler.join().unwrap();
        stop.store(true, Ordering::SeqCst);
        // Unblock the acceptor.
        let _ = TcpStream::connect(addr);
        connector.join().unwrap();
        let accepted = acceptor.join();
        eprintln!("{side:?}: {accepted} accepted, {wrong} wrong");
        (wrong, accepted > 100)
    });
    assert_eq!(got, (0, true));
}

/// While the side's party waits in a blocking accept, a plain thread sets
/// the listener non-blocking by FIONBIO and its own accept fails with
/// EAGAIN at once; F_GETFL shows O_NONBLOCK; FIONBIO(0) then a connection
/// ends the party's accept. FIONBIO with a bad pointer: EFAULT.
#[test]
fn fionbio_from_a_thread_during_a_coroutine_accept() {
    let got = differential("FIONBIO during accept", |side| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let lfd = listener.as_raw_fd();
        let party = side.spawn(move || {
            // SAFETY: accept on a live listener.
            let fd = unsafe { libc::accept(lfd, null_mut(), null_mut()) };
            let r = c_outcome(fd);
            if fd >= 0 {
                close(fd);
            }
            r.map(|_| ())
        });
        thread::sleep(Duration::from_millis(50));
        let victim = thread::spawn(move || {
            let on: libc::c_int = 1;
            // SAFETY: ioctl with a live int / a bad pointer.
            let set = c_outcome(unsafe { libc::ioctl(lfd, libc::FIONBIO, &on) });
            let bad =
                c_outcome(unsafe { libc::ioctl(lfd, libc::FIONBIO, 8usize as *const libc::c_int) });
            let shown = shows_nonblock(lfd);
            let (acc, timing) = timed(|| {
                // SAFETY: accept on a live listener.
                c_outcome(unsafe { libc::accept(lfd, null_mut(), null_mut()) })
            });
            let off: libc::c_int = 0;
            // SAFETY: ioctl with a live int.
            let unset = c_outcome(unsafe { libc::ioctl(lfd, libc::FIONBIO, &off) });
            let shown_after = shows_nonblock(lfd);
            (set, bad, shown, acc, timing, unset, shown_after)
        })
        .join()
        .unwrap();
        thread::sleep(Duration::from_millis(50));
        let _conn = TcpStream::connect(addr).unwrap();
        let accepted = party.join();
        let kernel_nonblocking = kernel_flags(lfd) & libc::O_NONBLOCK != 0;
        (victim, accepted, kernel_nonblocking)
    });
    eprintln!("{got:?}");
}

// ---------------------------------------------------------------- select

/// `select` with nfds 4096 and a 1024-bit read set that ends where an
/// unreadable page begins, naming a readable pipe: the kernel reads only
/// the bits of its descriptor table (at most 1024 here) and returns 1.
/// Also nfds 65536 (as `select(getdtablesize(), ...)`), and a 2 s timeout
/// so that the coroutine does not take the zero-timeout short cut.
#[test]
fn select_with_nfds_past_the_table_reads_only_the_tables_bits() {
    let got = differential("select nfds past the table", |_| {
        // SAFETY: two fresh anonymous pages, the second made inaccessible.
        let map = unsafe {
            libc::mmap(
                null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        // SAFETY: the second page of the mapping.
        unsafe { libc::mprotect(map.cast::<u8>().add(4096).cast(), 4096, libc::PROT_NONE) };
        let (r, w) = pipe(0);
        assert!(r < 1024);
        write_once(w, b"x").unwrap();
        let mut out = Vec::new();
        for nfds in [4096, 65536] {
            // SAFETY: the last 128 bytes of the first page.
            let set = unsafe { map.cast::<u8>().add(4096 - 128) }.cast::<libc::fd_set>();
            // SAFETY: a set inside the mapping.
            unsafe {
                libc::FD_ZERO(set);
                libc::FD_SET(r, set);
            }
            let mut tv = libc::timeval {
                tv_sec: 2,
                tv_usec: 0,
            };
            // SAFETY: as described.
            let ret =
                c_outcome(unsafe { libc::select(nfds, set, null_mut(), null_mut(), &mut tv) });
            // SAFETY: as above.
            let still = unsafe { libc::FD_ISSET(r, set) };
            out.push((nfds, ret, still));
        }
        close_all([r, w]);
        // SAFETY: unmaps what we mapped.
        unsafe { libc::munmap(map, 8192) };
        out
    });
    assert_eq!(got, vec![(4096, Ok(1), true), (65536, Ok(1), true)]);
}

/// `select` with nfds 4096 on a 1024-bit set at the start of a 512-byte
/// buffer whose other bytes belong to the program: a plain thread writes
/// a marker into them 50 ms into the select, which a pipe ends 150 ms in.
/// The kernel writes back only its table's bits: the marker stays.
#[test]
fn select_with_nfds_past_the_table_leaves_memory_past_the_set_alone() {
    let got = differential("select past the set", |_| {
        let buf: &'static mut [u64; 64] = Box::leak(Box::new([0u64; 64]));
        let base = buf.as_mut_ptr();
        let (r, w) = pipe(0);
        let set = base.cast::<libc::fd_set>();
        // SAFETY: the first 128 bytes of the buffer.
        unsafe {
            libc::FD_ZERO(set);
            libc::FD_SET(r, set);
        }
        let addr = base as usize;
        let marker = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            // SAFETY: word 40 of the leaked buffer, past the set.
            unsafe { std::ptr::write_volatile((addr as *mut u64).add(40), 0xfeed) };
            thread::sleep(Duration::from_millis(100));
            write_once(w, b"x").unwrap();
        });
        let mut tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: a set of 4096 bits fits the buffer.
        let ret = c_outcome(unsafe { libc::select(4096, set, null_mut(), null_mut(), &mut tv) });
        marker.join().unwrap();
        // SAFETY: as above.
        let word = unsafe { std::ptr::read_volatile(base.add(40)) };
        close_all([r, w]);
        (ret, format!("{word:#x}"))
    });
    assert_eq!(got, (Ok(1), "0xfeed".to_string()));
}

// ----------------------------------------------------------------- timers

fn thread_cpu() -> Duration {
    let mut now = ts(0, 0);
    // SAFETY: a live out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Sleeping 1 us (then 20 us) in a loop for 300 ms: a thread sleeps at
/// least that long each time (plus the kernel's timer slack) and spends a
/// small part of the time on the CPU. The CPU the loop's kernel thread
/// spent (a coroutine's: its worker's), as a share of the time, must stay
/// under half.
#[test]
fn tiny_sleeps_in_a_loop_do_not_spin_a_core() {
    let got = isolated(|_| {
        let mut out = Vec::new();
        for us in [1u64, 20] {
            let cpu = thread_cpu();
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < Duration::from_millis(300) {
                thread::sleep(Duration::from_micros(us));
                n += 1;
            }
            let spent = thread_cpu() - cpu;
            let share = spent.as_secs_f64() / start.elapsed().as_secs_f64();
            eprintln!("{us} us sleeps: {n} in 300 ms, cpu share {share:.2}");
            out.push((us, share < 0.5));
            println!("share {us} us: {share:.2} over {n}");
        }
        out
    });
    assert_eq!(
        got,
        Ended::Value(format!("{:?}", vec![(1u64, true), (20u64, true)]))
    );
}

// ------------------------------------------------------------- runtimes

/// A runtime dropped on another runtime's worker thread (a detached
/// coroutine's result): the other runtime's next coroutine is not held up,
/// and the process's thread count returns to what it was within 3 s (the
/// dropped runtime's workers end).
#[test]
fn runtime_dropped_on_another_runtimes_worker_ends_its_threads() {
    let _serial = serial();
    let before = tasks();
    let outer = coroutines::Runtime::builder().workers(1).build().unwrap();
    let inner = coroutines::Runtime::builder().workers(2).build().unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    inner.spawn({
        let flag = flag.clone();
        move || {
            thread::sleep(Duration::from_millis(50));
            flag.store(true, Ordering::SeqCst);
        }
    });
    // Detached: its result, the runtime, is dropped on outer's worker.
    let handle = outer.spawn(move || inner);
    drop(handle);
    let start = Instant::now();
    let took = outer.block_on(move || {
        let t = Instant::now();
        thread::sleep(Duration::from_millis(10));
        t.elapsed()
    });
    drop(outer);
    let mut after = tasks();
    while after > before && start.elapsed() < Duration::from_secs(3) {
        thread::sleep(Duration::from_millis(20));
        after = tasks();
    }
    assert!(
        took < Duration::from_millis(300),
        "outer's coroutine took {took:?}"
    );
    assert!(after <= before, "threads: {before} before, {after} after");
}

// ---------------------------------- splice into a socket with some room

/// A Unix stream socket a quarter to half full (the peer reads nothing):
/// `poll` does not report it writable (Linux's unix_writable wants the
/// queued bytes under a quarter of the send buffer), yet a send of a few
/// bytes goes in at once (sendmsg waits only when the buffer is full). A
/// splice of 7 bytes from a pipe into it, blocking and non-blocking: a
/// thread's moves them at once. A rescue drains the peer after 500 ms.
#[test]
fn splice_into_a_unix_socket_with_room_but_not_writable() {
    let got = differential("splice into a half-full unix socket", |_| {
        let mut out = Vec::new();
        for nonblocking in [false, true] {
            let (c, s) = unix_socketpair(libc::SOCK_STREAM | libc::SOCK_CLOEXEC);
            let sndbuf = support::raw::int_opt(c, libc::SOL_SOCKET, libc::SO_SNDBUF).unwrap();
            // About 40% of the buffer, in one send.
            let chunk = vec![1u8; (sndbuf as usize) * 2 / 5];
            // SAFETY: a live buffer.
            let sent =
                unsafe { libc::send(c, chunk.as_ptr().cast(), chunk.len(), libc::MSG_DONTWAIT) };
            let mut p = libc::pollfd {
                fd: c,
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: a live pollfd.
            let writable = unsafe { libc::poll(&mut p, 1, 0) } == 1;
            if nonblocking {
                // SAFETY: F_SETFL on a live descriptor.
                unsafe { libc::fcntl(c, libc::F_SETFL, libc::O_NONBLOCK | libc::O_RDWR) };
            }
            let (pr, pw) = pipe(0);
            write_once(pw, b"payload").unwrap();
            let rescue = Rescue::arm(move || {
                let mut buf = vec![0u8; 1 << 20];
                // SAFETY: a live buffer.
                while unsafe {
                    libc::recv(s, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
                } > 0
                {}
            });
            let (ret, timing) = timed(|| support::raw::splice(pr, c, 7, 0));
            let rescued = rescue.disarm();
            out.push((nonblocking, sent > 0, writable, ret, timing, rescued));
            close_all([c, s, pr, pw]);
        }
        out
    });
    assert_eq!(
        got,
        vec![
            (false, true, false, Ok(7), Timing::AtOnce, false),
            (true, true, false, Ok(7), Timing::AtOnce, false),
        ]
    );
}

// -------------------------------------------- select and a growing table

/// The size of the process's descriptor table (FDSize in
/// /proc/self/status): `select` ignores numbers at or past it.
fn fd_table_size() -> i32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `select` on a pipe and a number 10 past the descriptor table when the
/// call starts (the kernel ignores it for the whole call); 50 ms in a
/// plain thread `dup2`s a readable pipe onto that number (the table
/// grows); 100 ms in the first pipe turns readable. A thread's select
/// reports the first pipe only (and leaves the other bit as it was).
#[test]
fn select_on_a_number_that_becomes_open_during_the_wait() {
    let got = differential_exclusive("select and a growing table", |_| {
        let high = fd_table_size() + 10;
        // SAFETY: F_GETFD on any number.
        assert_eq!(unsafe { libc::fcntl(high, libc::F_GETFD) }, -1);
        let (r, w) = pipe(0);
        let (r2, w2) = pipe(0);
        write_once(w2, b"y").unwrap();
        let mut bits = vec![0u64; 256];
        let set_bit = |bits: &mut Vec<u64>, fd: i32| bits[fd as usize / 64] |= 1 << (fd % 64);
        let has = |bits: &Vec<u64>, fd: i32| bits[fd as usize / 64] & (1 << (fd % 64)) != 0;
        set_bit(&mut bits, r);
        set_bit(&mut bits, high);
        let peer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            // SAFETY: dup2 onto a number nobody uses.
            unsafe { libc::dup2(r2, high) };
            thread::sleep(Duration::from_millis(50));
            write_once(w, b"x").unwrap();
        });
        let mut tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: a live set of 16384 bits and timeval.
        let ret = c_outcome(unsafe {
            libc::select(
                high + 1,
                bits.as_mut_ptr().cast(),
                null_mut(),
                null_mut(),
                &mut tv,
            )
        });
        peer.join().unwrap();
        let seen = (has(&bits, r), has(&bits, high));
        close_all([r, w, r2, w2, high]);
        (ret, seen)
    });
    assert_eq!(got, (Ok(1), (true, true)));
}

/// On a runtime of one helper thread: two coroutines splice from one TCP
/// socket (no timeout) into pipes of their own; one byte arrives 100 ms
/// in and one takes it. The docs say such a splice waits in the reactor,
/// not on a helper. Then a third coroutine waits on a semaphore a plain
/// thread posts 50 ms later: it returns within a second. (The loser is
/// released by a second byte 1.5 s in.)
#[test]
fn a_lost_splice_race_does_not_hold_a_helper() {
    let runtime = coroutines::Runtime::builder()
        .workers(1)
        .blocking_threads(1)
        .blocked_worker_threshold(Duration::MAX)
        .build()
        .unwrap();
    let got = runtime.block_on(|| {
        let (c, s) = tcp_pair();
        let c_fd = c.as_raw_fd();
        let splicers: Vec<_> = (0..2)
            .map(|_| {
                coroutines::spawn(move || {
                    let (pr, pw) = pipe(0);
                    let r = support::raw::splice(c_fd, pw, 16, 0);
                    close_all([pr, pw]);
                    r
                })
            })
            .collect();
        let s_fd = s.as_raw_fd();
        let writer = after(Duration::from_millis(100), move || {
            // SAFETY: a send on a live socket.
            unsafe { libc::send(s_fd, b"x".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) };
        });
        writer.join().unwrap();
        thread::sleep(Duration::from_millis(100));
        let mut sem = new_sem(0);
        let sp = SemPtr(&mut *sem);
        let poster = after(Duration::from_millis(50), move || {
            let sp = sp;
            // SAFETY: a live semaphore.
            unsafe { libc::sem_post(sp.0) };
        });
        let release = after(Duration::from_millis(1500), move || {
            // SAFETY: a send on a live socket.
            unsafe { libc::send(s_fd, b"y".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) };
        });
        let p: *mut libc::sem_t = &mut *sem;
        let start = Instant::now();
        // SAFETY: a live semaphore.
        let r = unsafe { libc::sem_wait(p) };
        let took = start.elapsed();
        poster.join().unwrap();
        release.join().unwrap();
        let spliced: Vec<_> = splicers.into_iter().map(|h| h.join().unwrap()).collect();
        drop((c, s));
        (r, took < Duration::from_secs(1), spliced)
    });
    assert_eq!((got.0, got.1), (0, true), "{:?}", got.2);
}

// ------------------------------------------------------------------ epoll

/// epoll waits' argument errors and short cases: maxevents 0 (EINVAL), a
/// descriptor that is not an epoll instance (EINVAL), a null event array
/// (EFAULT), all at once though nothing is ready; an empty instance with a
/// mask that blocks a pending SIGUSR2 times out at 100 ms with 0 (the
/// signal stays pending); a zero timeout with a readable pipe returns 1;
/// epoll_pwait2 of 500 us returns 0 within a few ms.
#[test]
fn epoll_waits_errors_and_short_cases() {
    let got = differential_exclusive("epoll cases", |_| {
        // SAFETY: plain calls on descriptors this case owns.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        let (r, w) = pipe(0);
        let mut ev = [libc::epoll_event { events: 0, u64: 0 }; 4];
        let mut out: Vec<(&str, Result<i64, Errno>, Timing)> = Vec::new();
        let mut one = |what: &'static str, f: &mut dyn FnMut() -> i32| {
            let (ret, timing) = timed(|| c_outcome(f()));
            out.push((what, ret, timing));
        };
        // SAFETY (below): live arrays, or the null pointer on purpose.
        one("maxevents 0", &mut || unsafe {
            libc::epoll_wait(ep, ev.as_mut_ptr(), 0, 100)
        });
        one("not epoll", &mut || unsafe {
            libc::epoll_wait(r, ev.as_mut_ptr(), 1, 100)
        });
        one("null events", &mut || unsafe {
            libc::epoll_wait(ep, null_mut(), 1, 100)
        });
        // SIGUSR2 blocked for the thread (the worker, in a coroutine),
        // pending, and kept blocked by the call's mask.
        let mut usr2: libc::sigset_t = unsafe { std::mem::zeroed() };
        unsafe {
            libc::sigemptyset(&mut usr2);
            libc::sigaddset(&mut usr2, libc::SIGUSR2);
            libc::pthread_sigmask(libc::SIG_BLOCK, &usr2, null_mut());
            libc::raise(libc::SIGUSR2);
        }
        let (ret, against) = timed_against(Duration::from_millis(100), || {
            // SAFETY: live arrays and mask.
            c_outcome(unsafe { libc::epoll_pwait(ep, ev.as_mut_ptr(), 4, 100, &usr2) })
        });
        let mut pending: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: live sets; consumes the pending signal.
        let still_pending = unsafe {
            libc::sigpending(&mut pending);
            let p = libc::sigismember(&pending, libc::SIGUSR2) == 1;
            let mut sig = 0;
            if p {
                libc::sigwait(&usr2, &mut sig);
            }
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &usr2, null_mut());
            p
        };
        let mut add = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 7,
        };
        // SAFETY: as above.
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, r, &mut add) };
        write_once(w, b"x").unwrap();
        let mut one = |what: &'static str, f: &mut dyn FnMut() -> i32| {
            let (ret, timing) = timed(|| c_outcome(f()));
            out.push((what, ret, timing));
        };
        one("zero timeout, readable", &mut || unsafe {
            libc::epoll_wait(ep, ev.as_mut_ptr(), 4, 0)
        });
        let _ = support::raw::read_len(r, 1);
        let half_ms = ts(0, 500_000);
        one("pwait2 500 us", &mut || unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                ep,
                ev.as_mut_ptr(),
                4,
                &half_ms,
                null::<libc::sigset_t>(),
                8,
            ) as i32
        });
        close_all([ep, r, w]);
        (out, ret, against, still_pending)
    });
    eprintln!("{got:?}");
}
