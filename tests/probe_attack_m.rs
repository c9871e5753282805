//! Round M probes against `hooks/relay.rs` (splice, tee and vmsplice in a
//! coroutine park in the reactor): each case runs on a plain thread and in
//! a coroutine and compares results, error numbers and coarse timings.
//!
//! Cases that count process-wide things (CPU time) run one at a time
//! (`serial`).

mod support;

use support::serial;

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::differential::*;
use support::raw::{
    close, close_all, counting_sigpipes, pipe, read_len, recv_len, send_flags, splice, tee,
    unix_socketpair, write_once,
};
use support::*;

/// When a late peer acts.
const LATE: Duration = Duration::from_millis(100);

const NB: u32 = libc::SPLICE_F_NONBLOCK;
const EAGAIN: Errno = Errno(libc::EAGAIN);

fn splice_off(
    from: RawFd,
    off_in: Option<&mut i64>,
    to: RawFd,
    off_out: Option<&mut i64>,
    len: usize,
) -> Result<i64, Errno> {
    let off_in = off_in.map_or(std::ptr::null_mut(), |o| o as *mut i64);
    let off_out = off_out.map_or(std::ptr::null_mut(), |o| o as *mut i64);
    // SAFETY: the offsets are live or null.
    c_outcome(unsafe { libc::splice(from, off_in, to, off_out, len, 0) } as i64)
}

/// Bytes a vmsplice into a pipe hands over: never freed nor changed (the
/// pipe keeps references to the pages).
static GIFT: [u8; 4096] = [0x47; 4096];

fn vmsplice_in(fd: RawFd, data: &'static [u8], flags: u32) -> Result<i64, Errno> {
    let iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: one live iovec over static memory.
    c_outcome(unsafe { libc::vmsplice(fd, &iov, 1, flags) } as i64)
}

fn vmsplice_out(fd: RawFd, len: usize, flags: u32) -> Result<Bytes, Errno> {
    let mut buf = vec![0u8; len];
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    // SAFETY: one live iovec over `buf`.
    let n = c_outcome(unsafe { libc::vmsplice(fd, &iov, 1, flags) } as i64)?;
    buf.truncate(n as usize);
    Ok(Bytes(buf))
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: F_GETFL/F_SETFL on a live descriptor.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags(fd) | libc::O_NONBLOCK) };
}

fn position(fd: RawFd) -> i64 {
    // SAFETY: lseek on a live descriptor.
    unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) }
}

/// The CPU time this process used so far.
fn process_cpu() -> Duration {
    // SAFETY: a zeroed timespec is valid; the clock id is a constant.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is live.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

// ---------------------------------------------------------------------------
// vmsplice and the user's O_NONBLOCK
// ---------------------------------------------------------------------------

/// Linux's vmsplice takes only SPLICE_F_NONBLOCK: the pipe's O_NONBLOCK
/// does not make it non-blocking (fs/splice.c, `vmsplice_to_pipe` and
/// `wait_for_space`; do_splice and do_tee turn O_NONBLOCK into the flag,
/// vmsplice does not). Into a full pipe whose writing end the user made
/// non-blocking, a thread's vmsplice waits for the reader.
#[test]
fn vmsplice_into_a_full_o_nonblock_pipe_waits_as_on_a_thread() {
    let got = differential("vmsplice into full O_NONBLOCK pipe", |side| {
        let companion = Companion::start(side);
        let (r, w) = pipe(0);
        fill_pipe(w);
        set_nonblocking(w);
        let drain = after(LATE, move || read_len(r, 1 << 20).map(|b| !b.0.is_empty()));
        let got = companion.during(|| timed(|| vmsplice_in(w, &GIFT, 0)));
        let drained = drain.join().unwrap();
        close_all([r, w]);
        (got, drained)
    });
    assert_eq!(got, (((Ok(4096), Timing::Waited), true), Ok(true)));
}

/// The same, out of an empty pipe whose reading end is O_NONBLOCK: a
/// thread's vmsplice waits for the late write.
#[test]
fn vmsplice_out_of_an_empty_o_nonblock_pipe_waits_as_on_a_thread() {
    let got = differential("vmsplice out of empty O_NONBLOCK pipe", |side| {
        let companion = Companion::start(side);
        let (r, w) = pipe(0);
        set_nonblocking(r);
        let late = after(LATE, move || write_once(w, b"late"));
        let got = companion.during(|| timed(|| vmsplice_out(r, 64, 0)));
        let wrote = late.join().unwrap();
        close_all([r, w]);
        (got, wrote)
    });
    assert_eq!(got, (((Ok(bytes(b"late")), Timing::Waited), true), Ok(4)));
}

/// With SPLICE_F_GIFT into a full (blocking) pipe: waits for the drain,
/// then moves the page; with SPLICE_F_NONBLOCK: EAGAIN at once.
#[test]
fn vmsplice_gift_into_a_full_pipe_as_on_a_thread() {
    let got = differential("vmsplice gift into full pipe", |side| {
        let companion = Companion::start(side);
        let (r, w) = pipe(0);
        fill_pipe(w);
        let refused = timed(|| vmsplice_in(w, &GIFT, libc::SPLICE_F_GIFT | NB));
        let drain = after(LATE, move || {
            let mut total = 0;
            while let Ok(b) = read_len(r, 1 << 20) {
                if b.0.is_empty() {
                    break;
                }
                total += b.0.len();
                if total > 64 * 1024 {
                    break;
                }
            }
            total
        });
        let got = companion.during(|| timed(|| vmsplice_in(w, &GIFT, libc::SPLICE_F_GIFT)));
        let drained = drain.join().unwrap();
        close_all([r, w]);
        (refused, got, drained)
    });
    assert_eq!(
        got,
        (
            (Err(EAGAIN), Timing::AtOnce),
            ((Ok(4096), Timing::Waited), true),
            64 * 1024 + 4096
        )
    );
}

// ---------------------------------------------------------------------------
// TCP urgent data
// ---------------------------------------------------------------------------

/// A TCP splice read stops at the urgent mark (`tcp_read_sock`). At the
/// mark, the blocking call finds nothing to move while the receive queue
/// holds bytes and returns 0 at once ("we do not want to loop", in
/// `tcp_splice_read`); the non-blocking attempt says EAGAIN there, and
/// poll shows POLLIN. A thread's splice returns 0 at once. In a coroutine
/// the attempt says EAGAIN, `relay::blocked` finds both ends ready, and
/// the call re-tries on the Recheck timer (5 ms up to 200 ms) for ever:
/// only the rescue (the peer's FIN) ends it, with 0.
#[test]
fn splice_from_tcp_at_the_urgent_mark_returns_0_at_once_as_on_a_thread() {
    let got = differential("splice TCP at urgent mark", |_| {
        let (client, server) = tcp_pair();
        let (c, s) = (client.as_raw_fd(), server.as_raw_fd());
        send_flags(c, b"ab", 0).unwrap();
        send_flags(c, b"X", libc::MSG_OOB).unwrap();
        send_flags(c, b"cd", 0).unwrap();
        thread::sleep(Duration::from_millis(50));
        let (r, w) = pipe(0);
        let first = splice(s, w, 100, 0);
        let moved = read_len(r, 100);
        // If the call hangs, the peer's end of file ends it.
        let rescue = Rescue::arm(move || {
            // SAFETY: shutdown of a live socket.
            unsafe { libc::shutdown(c, libc::SHUT_WR) };
        });
        let second = timed_span(|| splice(s, w, 100, 0));
        let rescued = rescue.disarm();
        close_all([r, w]);
        drop((client, server));
        (first, moved, second, rescued)
    });
    assert_eq!(got, (Ok(2), Ok(bytes(b"ab")), (Ok(0), Span::AtOnce), false));
}

// ---------------------------------------------------------------------------
// SO_SNDTIMEO: per send, not per call
// ---------------------------------------------------------------------------

/// Linux's splice into a socket sends in a loop, one `sock_sendmsg` per
/// batch of pipe buffers, each with the socket's whole SO_SNDTIMEO
/// (`splice_to_socket`): a send that timed out after a part is followed by
/// the next, with a new timeout, while the pipe holds bytes. Here (64 KiB
/// in the pipe, small socket buffers, nobody reading) the first send takes
/// 65482 bytes and times out, the next one times out with nothing: a
/// thread's call returns 65482 after two timeouts (about 400 ms, 4 runs of
/// 4). The coroutine's call has one deadline from its first wait on the
/// socket and returns after one.
#[test]
fn splice_into_tcp_with_sndtimeo_takes_as_long_as_on_a_thread() {
    const TIMEOUT: Duration = Duration::from_millis(200);
    let got = differential("splice into TCP with SO_SNDTIMEO", |_| {
        let (r, w) = pipe(0);
        fill_pipe(w);
        let (client, server) = tcp_pair();
        small_buffers(&client, &server);
        let c = client.as_raw_fd();
        set_timeout_opt(c, libc::SO_SNDTIMEO, TIMEOUT);
        let start = Instant::now();
        let (sent, against) = timed_against(TIMEOUT, || splice(r, c, 1 << 20, 0));
        let took = start.elapsed();
        close_all([r, w]);
        drop((client, server));
        // Timings of two timeouts and more count as one.
        let twice = took >= TIMEOUT * 2 - TICK_SLACK;
        (sent.map(|n| n > 0 && n < 64 << 10), against, twice)
    });
    assert_eq!(got, (Ok(true), Against::Late, true));
}

// ---------------------------------------------------------------------------
// Arguments: offsets, lengths, flags, bad descriptors
// ---------------------------------------------------------------------------

/// Offsets on file ends (the file position does not move; the offset
/// does), an offset on a pipe end (ESPIPE), length 0 (0 even with bad
/// descriptors), bad descriptors (EBADF), ends in the wrong direction
/// (EBADF), a pipe to itself (EINVAL), no pipe at all (EINVAL), unknown
/// flags (EINVAL), tee from a file (EINVAL), vmsplice on a file (EBADF),
/// a huge length (what is there).
#[test]
fn splice_arguments_and_errors_as_on_a_thread() {
    let got = differential("splice arguments", |_| {
        let file = temp_file(b"0123456789abcdef");
        let f = file.as_raw_fd();
        let (r, w) = pipe(0);
        let mut off = 4i64;
        let from_file = splice_off(f, Some(&mut off), w, None, 6);
        let after_in = (off, position(f), read_len(r, 64));
        write_once(w, b"XYZ").unwrap();
        let mut off = 10i64;
        let into_file = splice_off(r, None, f, Some(&mut off), 64);
        let mut contents = Vec::new();
        // SAFETY: lseek on a live descriptor.
        unsafe { libc::lseek(f, 0, libc::SEEK_SET) };
        (&file).read_to_end(&mut contents).unwrap();
        let after_out = (off, Bytes(contents));
        let mut off = 0i64;
        let pipe_offset_in = splice_off(r, Some(&mut off), f, None, 64);
        let pipe_offset_out = splice_off(f, None, w, Some(&mut off), 64);
        let zero_bad = splice(-1, 12345, 0, 0);
        let zero_pipe = splice(r, w, 0, 0);
        let bad_in = splice(9999, w, 64, 0);
        let bad_out = splice(r, 9999, 64, 0);
        let wrong_in = splice(w, f, 64, 0);
        let wrong_out = splice(f, r, 64, 0);
        let to_self = splice(r, w, 64, 0);
        let tee_self = tee(r, w, 64, 0);
        let file2 = temp_file(b"x");
        let no_pipe = splice(f, file2.as_raw_fd(), 64, 0);
        let bad_flags = splice(r, f, 64, 0x1000);
        let tee_file = tee(f, w, 64, 0);
        let vmsplice_file = vmsplice_in(f, &GIFT, 0);
        let vmsplice_closed = vmsplice_in(9999, &GIFT, 0);
        let (r2, w2) = pipe(0);
        write_once(w, b"huge").unwrap();
        let huge = splice(r, w2, usize::MAX >> 1, 0);
        let huge_tee_nb = tee(r, w2, usize::MAX >> 1, NB);
        close_all([r, w, r2, w2]);
        (
            (from_file, after_in, into_file, after_out),
            (pipe_offset_in, pipe_offset_out, zero_bad, zero_pipe),
            (bad_in, bad_out, wrong_in, wrong_out, to_self, tee_self),
            (no_pipe, bad_flags, tee_file, vmsplice_file, vmsplice_closed),
            (huge, huge_tee_nb),
        )
    });
    let ebadf = Err(Errno(libc::EBADF));
    let einval = Err(Errno(libc::EINVAL));
    assert_eq!(
        got,
        (
            (
                Ok(6),
                (10, 0, Ok(bytes(b"456789"))),
                Ok(3),
                (13, bytes(b"0123456789XYZdef"))
            ),
            (
                Err(Errno(libc::ESPIPE)),
                Err(Errno(libc::ESPIPE)),
                Ok(0),
                Ok(0)
            ),
            (ebadf, ebadf, ebadf, ebadf, einval, einval),
            (einval, einval, einval, ebadf, ebadf),
            (Ok(4), Err(EAGAIN)),
        )
    );
}

// ---------------------------------------------------------------------------
// Files and pipes
// ---------------------------------------------------------------------------

/// A file into a full pipe waits for room (even at the file's end), and a
/// pipe into a file waits for a late write; SPLICE_F_NONBLOCK: EAGAIN.
#[test]
fn splice_between_a_file_and_a_pipe_waits_as_on_a_thread() {
    let got = differential("splice file <-> pipe", |side| {
        let companion = Companion::start(side);
        let file = temp_file(b"file data");
        let f = file.as_raw_fd();
        let (r, w) = pipe(0);
        fill_pipe(w);
        let refused = timed(|| splice(f, w, 64, NB));
        let drain = after(LATE, move || read_len(r, 1 << 20).map(|b| b.0.len()));
        let into_full = companion.during(|| timed(|| splice(f, w, 64, 0)));
        let drained = drain.join().unwrap();
        while read_len(r, 1 << 20).is_ok_and(|b| b.0.len() == 1 << 16) {}
        // At the file's end, into a full pipe: a thread waits for room.
        fill_pipe(w);
        let drain = after(LATE, move || read_len(r, 1 << 20).map(|b| b.0.len()));
        let at_end_full = companion.during(|| timed(|| splice(f, w, 64, 0)));
        drain.join().unwrap().unwrap();
        let (r2, w2) = pipe(0);
        let out = temp_file(b"");
        let late = after(LATE, move || write_once(w2, b"late"));
        let from_empty = companion.during(|| timed(|| splice(r2, out.as_raw_fd(), 64, 0)));
        late.join().unwrap().unwrap();
        let empty_nb = timed(|| splice(r2, out.as_raw_fd(), 64, NB));
        close_all([r, w, r2, w2]);
        (
            refused,
            into_full,
            drained,
            at_end_full,
            from_empty,
            empty_nb,
        )
    });
    assert_eq!(
        got,
        (
            (Err(EAGAIN), Timing::AtOnce),
            ((Ok(9), Timing::Waited), true),
            Ok(65536),
            ((Ok(0), Timing::Waited), true),
            ((Ok(4), Timing::Waited), true),
            (Err(EAGAIN), Timing::AtOnce),
        )
    );
}

/// tee into a full pipe waits for the drain; with SPLICE_F_NONBLOCK it
/// fails at once; with the output's O_NONBLOCK too.
#[test]
fn tee_into_a_full_pipe_as_on_a_thread() {
    let got = differential("tee into full pipe", |side| {
        let companion = Companion::start(side);
        let (r1, w1) = pipe(0);
        let (r2, w2) = pipe(0);
        write_once(w1, b"teed").unwrap();
        fill_pipe(w2);
        let flag = timed(|| tee(r1, w2, 64, NB));
        set_nonblocking(w2);
        let user = timed(|| tee(r1, w2, 64, 0));
        // SAFETY: F_SETFL on a live descriptor.
        unsafe { libc::fcntl(w2, libc::F_SETFL, 0) };
        let drain = after(LATE, move || read_len(r2, 1 << 20).map(|b| b.0.len()));
        let waited = companion.during(|| timed(|| tee(r1, w2, 64, 0)));
        let drained = drain.join().unwrap();
        let left = read_len(r1, 64);
        close_all([r1, w1, r2, w2]);
        (flag, user, waited, drained, left)
    });
    assert_eq!(
        got,
        (
            (Err(EAGAIN), Timing::AtOnce),
            (Err(EAGAIN), Timing::AtOnce),
            ((Ok(4), Timing::Waited), true),
            Ok(65536),
            Ok(bytes(b"teed"))
        )
    );
}

// ---------------------------------------------------------------------------
// Peers that go away during the wait
// ---------------------------------------------------------------------------

/// Out of TCP and a Unix stream into a pipe, the peer shutting down while
/// the call waits: 0. Into a full pipe whose reader closes while the call
/// waits: EPIPE and one SIGPIPE.
#[test]
fn peers_going_away_during_the_wait_as_on_a_thread() {
    let got = differential_exclusive("peers going away", |side| {
        let companion = Companion::start(side);
        let (r, w) = pipe(0);
        let (client, server) = tcp_pair();
        let c = client.as_raw_fd();
        let shut = after(LATE, move || {
            // SAFETY: shutdown of a live socket.
            unsafe { libc::shutdown(c, libc::SHUT_WR) }
        });
        let tcp = companion.during(|| timed(|| splice(server.as_raw_fd(), w, 64, 0)));
        shut.join().unwrap();
        let (a, b) = unix_socketpair(libc::SOCK_STREAM | libc::SOCK_CLOEXEC);
        let shut = after(LATE, move || {
            // SAFETY: shutdown of a live socket.
            unsafe { libc::shutdown(b, libc::SHUT_WR) }
        });
        let unix = companion.during(|| timed(|| splice(a, w, 64, 0)));
        shut.join().unwrap();
        let (r1, w1) = pipe(0);
        write_once(w1, b"x").unwrap();
        fill_pipe(w);
        let closer = after(LATE, move || close(r));
        let (epipe, sigpipes) =
            counting_sigpipes(|| companion.during(|| timed(|| splice(r1, w, 64, 0))));
        closer.join().unwrap();
        close_all([w, a, b, r1, w1]);
        drop((client, server));
        (tcp, unix, epipe, sigpipes)
    });
    assert_eq!(
        got,
        (
            ((Ok(0), Timing::Waited), true),
            ((Ok(0), Timing::Waited), true),
            ((Err(Errno(libc::EPIPE)), Timing::Waited), true),
            1
        )
    );
}

// ---------------------------------------------------------------------------
// The user's flags during a wait
// ---------------------------------------------------------------------------

/// Another thread sets O_NONBLOCK on the input while the call waits: the
/// call keeps the mode it started with (the kernel reads it once), and
/// returns the late bytes; the same for TCP.
#[test]
fn o_nonblock_set_during_the_wait_as_on_a_thread() {
    let got = differential("O_NONBLOCK set during the wait", |_| {
        let (r1, w1) = pipe(0);
        let (r2, w2) = pipe(0);
        let peer = after(LATE, move || {
            set_nonblocking(r1);
            thread::sleep(LATE);
            write_once(w1, b"late")
        });
        let pipes = timed(|| splice(r1, w2, 64, 0));
        peer.join().unwrap().unwrap();
        let (client, server) = tcp_pair();
        let (c, s) = (client.as_raw_fd(), server.as_raw_fd());
        let peer = after(LATE, move || {
            set_nonblocking(s);
            thread::sleep(LATE);
            send_flags(c, b"tcp", 0)
        });
        let tcp = timed(|| splice(s, w2, 64, 0));
        peer.join().unwrap().unwrap();
        close_all([r1, w1, r2, w2]);
        drop((client, server));
        (pipes, tcp)
    });
    assert_eq!(got, ((Ok(4), Timing::Waited), (Ok(3), Timing::Waited)));
}

/// While coroutines splice out of and into TCP sockets over and over
/// (each attempt holds the socket O_NONBLOCK), a plain thread's F_GETFL of
/// those sockets (through the hook) never shows O_NONBLOCK.
#[test]
fn f_getfl_never_shows_the_hold_during_splices() {
    let (shown, rounds) = among_others(|| {
        watchdog("F_GETFL during splices", Duration::from_secs(20), 1, || {
            let (client, server) = tcp_pair();
            let (c, s) = (client.as_raw_fd(), server.as_raw_fd());
            let stop = Arc::new(AtomicBool::new(false));
            let shown = Arc::new(AtomicU64::new(0));
            let watcher = {
                let (stop, shown) = (stop.clone(), shown.clone());
                thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        for fd in [c, s] {
                            if flags(fd) & libc::O_NONBLOCK != 0 {
                                shown.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                })
            };
            let (r, w) = pipe(0);
            let (r2, w2) = pipe(0);
            let mut rounds = 0;
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(500) {
                write_once(w, b"ping").unwrap();
                splice(r, c, 64, 0).unwrap();
                splice(s, w2, 64, 0).unwrap();
                read_len(r2, 64).unwrap();
                rounds += 1;
            }
            stop.store(true, Ordering::SeqCst);
            watcher.join().unwrap();
            close_all([r, w, r2, w2]);
            drop((client, server));
            (shown.load(Ordering::SeqCst), rounds)
        })
    });
    assert!(rounds > 100, "only {rounds} rounds");
    assert_eq!(shown, 0, "F_GETFL showed O_NONBLOCK {shown} times");
}

// ---------------------------------------------------------------------------
// Pipe ends that were spliced (Kind::PipeWaitFirst)
// ---------------------------------------------------------------------------

/// After a splice out of a pipe and into another, plain reads and writes
/// on those ends: a read waits for a late write, a write into a full one
/// waits for a drain, a non-blocking read fails with EAGAIN, and another
/// coroutine runs meanwhile.
#[test]
fn reads_and_writes_of_spliced_pipe_ends_as_on_a_thread() {
    let got = differential("read/write spliced ends", |side| {
        let companion = Companion::start(side);
        let (r1, w1) = pipe(0);
        let (r2, w2) = pipe(0);
        write_once(w1, b"first").unwrap();
        splice(r1, w2, 64, 0).unwrap();
        let first = read_len(r2, 64);
        let late = after(LATE, move || write_once(w1, b"late"));
        let read = companion.during(|| timed(|| read_len(r1, 64)));
        late.join().unwrap().unwrap();
        fill_pipe(w2);
        let drain = after(LATE, move || read_len(r2, 1 << 20).map(|b| b.0.len()));
        let write = companion.during(|| timed(|| write_once(w2, b"more")));
        drain.join().unwrap().unwrap();
        set_nonblocking(r1);
        let nonblocking = timed(|| read_len(r1, 64));
        close_all([r1, w1, r2, w2]);
        (first, read, write, nonblocking)
    });
    assert_eq!(
        got,
        (
            Ok(bytes(b"first")),
            ((Ok(bytes(b"late")), Timing::Waited), true),
            ((Ok(4), Timing::Waited), true),
            (Err(EAGAIN), Timing::AtOnce)
        )
    );
}

// ---------------------------------------------------------------------------
// CPU while waiting
// ---------------------------------------------------------------------------

/// Coroutines parked in splices (out of an empty pipe, out of an empty TCP
/// socket, into a full TCP socket, tee out of an empty pipe, vmsplice
/// into a full pipe) for 600 ms use next to no CPU.
#[test]
fn waiting_relays_do_not_spin() {
    let _serial = serial();
    let used = alone(|| {
        watchdog("waiting relays", Duration::from_secs(10), 1, || {
            let (r1, w1) = pipe(0);
            let (r2, w2) = pipe(0);
            let (client, server) = tcp_pair();
            small_buffers(&client, &server);
            fill_send_buffer(&client);
            let (c, s) = (client.as_raw_fd(), server.as_raw_fd());
            let (r3, w3) = pipe(0);
            write_once(w3, b"x").unwrap();
            let (r4, w4) = pipe(0);
            fill_pipe(w4);
            let (client2, server2) = tcp_pair();
            let c2 = client2.as_raw_fd();
            let waiters = vec![
                coroutines::spawn(move || splice(r1, w2, 64, 0)),
                coroutines::spawn(move || splice(c2, w2, 64, 0)),
                coroutines::spawn(move || splice(r3, c, 64, 0)),
                coroutines::spawn(move || tee(r1, w2, 64, 0)),
                coroutines::spawn(move || vmsplice_in(w4, &GIFT, 0)),
            ];
            thread::sleep(Duration::from_millis(100));
            let before = process_cpu();
            thread::sleep(Duration::from_millis(600));
            let used = process_cpu() - before;
            // Release them all.
            close_all([w1]);
            drop(server2);
            let _ = read_len(r4, 1 << 20);
            let stop = Arc::new(AtomicBool::new(false));
            let drainer = {
                let stop = stop.clone();
                thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        drain_some(s);
                        thread::sleep(Duration::from_millis(5));
                    }
                })
            };
            for waiter in waiters {
                let _ = waiter.join();
            }
            stop.store(true, Ordering::SeqCst);
            drainer.join().unwrap();
            close_all([r1, r2, w2, r3, w3, r4, w4]);
            drop((client, server, client2));
            used
        })
    });
    assert!(
        used < Duration::from_millis(60),
        "used {used:?} of CPU in 600 ms"
    );
}

fn drain_some(fd: RawFd) -> usize {
    let mut total = 0;
    while let Ok(b) = recv_len(fd, 1 << 16, libc::MSG_DONTWAIT) {
        if b.0.is_empty() {
            break;
        }
        total += b.0.len();
    }
    total
}

// ---------------------------------------------------------------------------
// Many relays, two workers
// ---------------------------------------------------------------------------

/// 300 relays, each `io::copy` out of a pipe into a TCP stream (splice)
/// and out of the TCP stream into a pipe, on two workers (work stealing):
/// every byte arrives, once.
#[test]
fn many_io_copy_relays_between_pipes_and_tcp_on_two_workers() {
    const RELAYS: usize = 300;
    const LEN: usize = 100_000;
    let ok = alone(|| {
        watchdog("300 relays", Duration::from_secs(60), 2, || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let mut handles = Vec::new();
            for i in 0..RELAYS {
                let client = std::net::TcpStream::connect(addr).unwrap();
                let (server, _) = listener.accept().unwrap();
                let (in_r, mut in_w) = io::pipe().unwrap();
                let (mut out_r, mut out_w) = io::pipe().unwrap();
                let data: Vec<u8> = (0..LEN).map(|j| ((i * 31 + j * 7) % 251) as u8).collect();
                let expect = data.clone();
                handles.push(coroutines::spawn(move || {
                    in_w.write_all(&data).unwrap();
                    0u64
                }));
                handles.push(coroutines::spawn(move || {
                    let mut in_r = in_r;
                    let mut client = client;
                    let n = io::copy(&mut in_r, &mut client).unwrap();
                    client.shutdown(Shutdown::Write).unwrap();
                    n
                }));
                handles.push(coroutines::spawn(move || {
                    let mut server = server;
                    io::copy(&mut server, &mut out_w).unwrap()
                }));
                handles.push(coroutines::spawn(move || {
                    let mut got = Vec::new();
                    out_r.read_to_end(&mut got).unwrap();
                    u64::from(got == expect)
                }));
            }
            let results: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            results
                .chunks(4)
                .all(|c| c[1] == LEN as u64 && c[2] == LEN as u64 && c[3] == 1)
        })
    });
    assert!(ok);
}

// ---------------------------------------------------------------------------
// More shapes
// ---------------------------------------------------------------------------

/// Two parties splice out of one pipe at once (both wait); two late writes
/// of one byte: each byte arrives once, one per party.
#[test]
fn two_splices_waiting_on_one_pipe_share_its_bytes_as_on_a_thread() {
    let got = differential("two splices on one pipe", |side| {
        let (r, w) = pipe(0);
        let outs: Vec<(RawFd, RawFd)> = (0..2).map(|_| pipe(0)).collect();
        let parties: Vec<_> = outs
            .iter()
            .map(|&(_, ow)| side.spawn(move || splice(r, ow, 64, 0)))
            .collect();
        thread::sleep(LATE);
        write_once(w, b"a").unwrap();
        thread::sleep(LATE);
        write_once(w, b"b").unwrap();
        let mut moved: Vec<Result<i64, Errno>> = parties.into_iter().map(|p| p.join()).collect();
        moved.sort_by_key(|m| format!("{m:?}"));
        let mut got: Vec<u8> = outs
            .iter()
            .flat_map(|&(or, _)| read_len(or, 64).unwrap().0)
            .collect();
        got.sort();
        close_all([r, w]);
        close_all(outs.iter().flat_map(|&(a, b)| [a, b]));
        (moved, Bytes(got))
    });
    assert_eq!(got, (vec![Ok(1), Ok(1)], bytes(b"ab")));
}

/// Sockets in odd states at one end: a listening and an unconnected TCP
/// socket, both ways, with and without SPLICE_F_NONBLOCK; vmsplice with
/// no iovecs and with more than IOV_MAX.
#[test]
fn splice_with_sockets_in_odd_states_as_on_a_thread() {
    let got = differential("odd sockets", |_| {
        let (r, w) = pipe(0);
        write_once(w, b"x").unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l = listener.as_raw_fd();
        let u = raw_tcp_socket();
        let from_listener = (
            timed(|| splice(l, w, 64, 0)),
            timed(|| splice(l, w, 64, NB)),
        );
        let into_listener = (
            timed(|| splice(r, l, 64, 0)),
            timed(|| splice(r, l, 64, NB)),
        );
        let from_unconnected = (
            timed(|| splice(u, w, 64, 0)),
            timed(|| splice(u, w, 64, NB)),
        );
        let into_unconnected = (
            timed(|| splice(r, u, 64, 0)),
            timed(|| splice(r, u, 64, NB)),
        );
        let iov = libc::iovec {
            iov_base: GIFT.as_ptr() as *mut libc::c_void,
            iov_len: 1,
        };
        let many = vec![iov; 2048];
        // SAFETY: live iovecs over static memory.
        let too_many = c_outcome(unsafe { libc::vmsplice(w, many.as_ptr(), many.len(), 0) } as i64);
        // SAFETY: no iovecs.
        let none = c_outcome(unsafe { libc::vmsplice(w, many.as_ptr(), 0, 0) } as i64);
        close_all([r, w, u]);
        (
            from_listener,
            into_listener,
            from_unconnected,
            into_unconnected,
            too_many,
            none,
        )
    });
    let enotconn = (Err(Errno(libc::ENOTCONN)), Timing::AtOnce);
    let epipe = (Err(Errno(libc::EPIPE)), Timing::AtOnce);
    assert_eq!(
        got,
        (
            (enotconn, enotconn),
            (epipe, epipe),
            (enotconn, enotconn),
            (epipe, epipe),
            Err(Errno(libc::EINVAL)),
            Ok(0)
        )
    );
}

/// A chain of 300 `io::copy` relays between pipes on two workers (work
/// stealing moves relays between them), started upstream first, 1 MiB
/// through: every byte once, in order.
#[test]
fn a_chain_of_io_copy_relays_on_two_workers_flows() {
    let ok = alone(|| {
        watchdog("chain on two workers", Duration::from_secs(60), 2, || {
            let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 13 % 251) as u8).collect();
            let (first_r, mut first_w) = io::pipe().unwrap();
            let mut reader = first_r;
            let mut relays = Vec::new();
            for _ in 0..300 {
                let (r, w) = io::pipe().unwrap();
                let mut input = std::mem::replace(&mut reader, r);
                let mut output = w;
                relays.push(coroutines::spawn(move || {
                    io::copy(&mut input, &mut output).unwrap()
                }));
            }
            let writer = {
                let data = data.clone();
                coroutines::spawn(move || first_w.write_all(&data).unwrap())
            };
            let mut got = Vec::new();
            reader.read_to_end(&mut got).unwrap();
            writer.join().unwrap();
            let copied = relays
                .into_iter()
                .all(|r| r.join().unwrap() == data.len() as u64);
            got == data && copied
        })
    });
    assert!(ok);
}

/// A FIFO opened by name (Linux refuses RWF_NOWAIT on it): a splice into
/// it from a pipe and out of it into a pipe wait for the late peer; then
/// a plain read of it waits too.
#[test]
fn splice_through_a_fifo_opened_by_name_as_on_a_thread() {
    let got = differential("splice via FIFO", |side| {
        let companion = Companion::start(side);
        let fifo = TempPath::fifo();
        let path = fifo.c_path();
        // SAFETY: a NUL-terminated path.
        let fr = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        // SAFETY: a NUL-terminated path.
        let fw = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        assert!(fr >= 0 && fw >= 0);
        let (r, w) = pipe(0);
        let late = after(LATE, move || write_once(fw, b"fifo"));
        let out_of = companion.during(|| timed(|| splice(fr, w, 64, 0)));
        late.join().unwrap().unwrap();
        let moved = read_len(r, 64);
        let late = after(LATE, move || write_once(fw, b"read"));
        let read = companion.during(|| timed(|| read_len(fr, 64)));
        late.join().unwrap().unwrap();
        close_all([fr, fw, r, w]);
        (out_of, moved, read)
    });
    assert_eq!(
        got,
        (
            ((Ok(4), Timing::Waited), true),
            Ok(bytes(b"fifo")),
            ((Ok(bytes(b"read")), Timing::Waited), true)
        )
    );
}

/// While a coroutine waits at the TCP urgent mark (see above), it does not
/// spin: process CPU over 500 ms.
#[test]
fn a_splice_stuck_at_the_urgent_mark_does_not_spin() {
    let _serial = serial();
    let used = alone(|| {
        watchdog("urgent mark CPU", Duration::from_secs(10), 1, || {
            let (client, server) = tcp_pair();
            let (c, s) = (client.as_raw_fd(), server.as_raw_fd());
            send_flags(c, b"X", libc::MSG_OOB).unwrap();
            send_flags(c, b"cd", 0).unwrap();
            thread::sleep(Duration::from_millis(50));
            let (r, w) = pipe(0);
            let waiter = coroutines::spawn(move || splice(s, w, 100, 0));
            thread::sleep(Duration::from_millis(50));
            let before = process_cpu();
            thread::sleep(Duration::from_millis(500));
            let used = process_cpu() - before;
            // SAFETY: shutdown of a live socket.
            unsafe { libc::shutdown(c, libc::SHUT_WR) };
            let _ = waiter.join();
            close_all([r, w]);
            drop((client, server));
            used
        })
    });
    assert!(
        used < Duration::from_millis(60),
        "used {used:?} of CPU in 500 ms"
    );
}
