//! `splice` and `tee` in a coroutine, differentially: between pipes,
//! between a pipe and a Unix stream or TCP socket (both ways), with the
//! user's `SPLICE_F_NONBLOCK`, a user-non-blocking end, socket timeouts,
//! end of file and a closed reader. Such a call that waits parks in the
//! reactor (the companion keeps ticking) and returns what the blocking call
//! returns on a thread. Then the reviewer's case (round J): a chain of more
//! `io::copy` relays between pipes than the runtime has helper threads,
//! started from its last stage back, must flow.

mod support;

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::thread;
use std::time::{Duration, Instant};

use support::differential::*;
use support::raw::{
    close, close_all, pipe, read_len, recv_len, send_flags, splice, tee, unix_socketpair,
    write_once,
};
use support::*;

/// When a late peer acts.
const WAIT: Duration = Duration::from_millis(100);
/// A socket timeout the cases set.
const TIMEOUT: Duration = Duration::from_millis(200);

/// Sets the user's O_NONBLOCK on `fd` (through the hook).
fn set_nonblocking(fd: RawFd) {
    // SAFETY: F_GETFL/F_SETFL on a live descriptor.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags(fd) | libc::O_NONBLOCK) };
}

/// Clears the user's O_NONBLOCK on `fd`.
fn set_blocking(fd: RawFd) {
    // SAFETY: F_GETFL/F_SETFL on a live descriptor.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags(fd) & !libc::O_NONBLOCK) };
}

/// Fills a Unix stream socket's send buffer (the peer does not read).
fn fill_unix(fd: RawFd) {
    let chunk = vec![0u8; 64 * 1024];
    while send_flags(fd, &chunk, libc::MSG_DONTWAIT).is_ok() {}
}

const NB: u32 = libc::SPLICE_F_NONBLOCK;
const EAGAIN: Errno = Errno(libc::EAGAIN);

/// Between pipes: what is there moves at once (a part of what was asked
/// for); an empty input or a full output with SPLICE_F_NONBLOCK, or with
/// either end user-non-blocking, fails with EAGAIN at once; without, the
/// call waits for a late write or drain while the companion runs; at the
/// end of the input it returns 0, and with the output's reader gone EPIPE.
#[test]
fn splice_between_pipes_waits_moves_and_fails_as_on_a_thread() {
    let got = differential("splice pipe -> pipe", |side| {
        let companion = Companion::start(side);
        let (r1, w1) = pipe(0);
        let (r2, w2) = pipe(0);
        write_once(w1, b"hello").unwrap();
        let part = timed(|| splice(r1, w2, 4096, 0));
        let moved = read_len(r2, 64);
        let empty_flag = timed(|| splice(r1, w2, 64, NB));
        let late = after(WAIT, move || write_once(w1, b"late"));
        let waited = companion.during(|| timed(|| splice(r1, w2, 64, 0)));
        late.join().unwrap().unwrap();
        let moved_late = read_len(r2, 64);

        fill_pipe(w2);
        write_once(w1, b"x").unwrap();
        let full_flag = timed(|| splice(r1, w2, 64, NB));
        let drain = after(WAIT, move || read_len(r2, 1 << 20).map(|b| !b.0.is_empty()));
        let drained = companion.during(|| timed(|| splice(r1, w2, 64, 0)));
        drain.join().unwrap().unwrap();
        close_all([r1, w1, r2, w2]);

        // The user's O_NONBLOCK on either end makes the whole call
        // non-blocking.
        let (r1, w1) = pipe(0);
        let (r2, w2) = pipe(0);
        set_nonblocking(r1);
        let input_nonblocking = timed(|| splice(r1, w2, 64, 0));
        close_all([r1, w1, r2, w2]);
        let (r1, w1) = pipe(0);
        let (r2, w2) = pipe(0);
        set_nonblocking(w2);
        let output_nonblocking = timed(|| splice(r1, w2, 64, 0));

        close_all([r1, w1, r2, w2]);

        // End of file: the input's writer is gone.
        let (r1, w1) = pipe(0);
        let (r2, w2) = pipe(0);
        close(w1);
        let eof = timed(|| splice(r1, w2, 64, 0));
        close_all([r1, r2, w2]);

        let (r1, w1) = pipe(0);
        let (r2, w2) = pipe(0);
        write_once(w1, b"lost").unwrap();
        close(r2);
        let epipe = splice(r1, w2, 64, 0);
        close_all([r1, w1, w2]);
        drop(companion);
        (
            (part, moved, empty_flag),
            (waited, moved_late),
            (full_flag, drained),
            (input_nonblocking, output_nonblocking, eof, epipe),
        )
    });
    assert_eq!(
        got,
        (
            (
                (Ok(5), Timing::AtOnce),
                Ok(bytes(b"hello")),
                (Err(EAGAIN), Timing::AtOnce)
            ),
            (((Ok(4), Timing::Waited), true), Ok(bytes(b"late"))),
            (
                (Err(EAGAIN), Timing::AtOnce),
                ((Ok(1), Timing::Waited), true)
            ),
            (
                (Err(EAGAIN), Timing::AtOnce),
                (Err(EAGAIN), Timing::AtOnce),
                (Ok(0), Timing::AtOnce),
                Err(Errno(libc::EPIPE)),
            ),
        )
    );
}

/// `tee`: copies what is there and leaves it in the input; with an empty
/// input, EAGAIN at once with SPLICE_F_NONBLOCK or a user-non-blocking
/// output, else it waits for a late write; 0 at the end of the input.
#[test]
fn tee_between_pipes_waits_copies_and_fails_as_on_a_thread() {
    let got = differential("tee", |side| {
        let companion = Companion::start(side);
        let (r1, w1) = pipe(0);
        let (r2, w2) = pipe(0);
        write_once(w1, b"copy").unwrap();
        let copied = timed(|| tee(r1, w2, 64, 0));
        let both = (read_len(r2, 64), read_len(r1, 64));
        let empty_flag = timed(|| tee(r1, w2, 64, NB));
        let late = after(WAIT, move || write_once(w1, b"late"));
        let waited = companion.during(|| timed(|| tee(r1, w2, 64, 0)));
        late.join().unwrap().unwrap();
        let teed = read_len(r2, 64);
        let _ = read_len(r1, 64);
        set_nonblocking(w2);
        let output_nonblocking = timed(|| tee(r1, w2, 64, 0));
        close(w1);
        let eof = timed(|| tee(r1, w2, 64, 0));
        close_all([r1, r2, w2]);
        drop(companion);
        (
            copied,
            both,
            empty_flag,
            waited,
            teed,
            output_nonblocking,
            eof,
        )
    });
    assert_eq!(
        got,
        (
            (Ok(4), Timing::AtOnce),
            (Ok(bytes(b"copy")), Ok(bytes(b"copy"))),
            (Err(EAGAIN), Timing::AtOnce),
            ((Ok(4), Timing::Waited), true),
            Ok(bytes(b"late")),
            (Err(EAGAIN), Timing::AtOnce),
            (Ok(0), Timing::AtOnce),
        )
    );
}

/// From a pipe into a Unix stream socket: what the pipe holds moves at
/// once; an empty pipe waits for a late write (EAGAIN at once with
/// SPLICE_F_NONBLOCK or the pipe's own O_NONBLOCK, not the socket's); a full
/// socket fails with EAGAIN at once if the user made it non-blocking, at
/// its `SO_SNDTIMEO`, or waits for a late drain; a gone peer is EPIPE. The
/// socket never shows the runtime's O_NONBLOCK meanwhile.
#[test]
fn splice_from_a_pipe_into_a_unix_stream_as_on_a_thread() {
    let got = differential("splice pipe -> unix stream", |side| {
        let companion = Companion::start(side);
        let (r, w) = pipe(0);
        let (a, b) = unix_socketpair(libc::SOCK_STREAM | libc::SOCK_CLOEXEC);
        write_once(w, b"abc").unwrap();
        let at_once = timed(|| splice(r, a, 64, 0));
        let got = recv_len(b, 64, 0);
        let empty_flag = timed(|| splice(r, a, 64, NB));
        let late = after(WAIT, move || {
            let shown = kernel_flags(a) & libc::O_NONBLOCK != 0;
            (write_once(w, b"late"), shown)
        });
        let waited = companion.during(|| timed(|| splice(r, a, 64, 0)));
        let (late, shown_while_waiting) = late.join().unwrap();
        let got_late = recv_len(b, 64, 0);

        // The pipe's own O_NONBLOCK is SPLICE_F_NONBLOCK; the socket's
        // does not make the wait for the pipe non-blocking.
        set_nonblocking(r);
        let own_flag = timed(|| splice(r, a, 64, 0));
        set_blocking(r);
        set_nonblocking(a);
        let other = after(WAIT, move || write_once(w, b"other"));
        let other_flag = companion.during(|| timed(|| splice(r, a, 64, 0)));
        other.join().unwrap().unwrap();
        let _ = recv_len(b, 64, 0);
        set_blocking(a);

        fill_unix(a);
        write_once(w, b"x").unwrap();
        set_timeout_opt(a, libc::SO_SNDTIMEO, TIMEOUT);
        let timed_out = timed_against(TIMEOUT, || splice(r, a, 64, 0));
        set_timeout_opt(a, libc::SO_SNDTIMEO, Duration::ZERO);
        let drain = after(WAIT, move || {
            recv_len(b, 1 << 20, 0).map(|b| !b.0.is_empty())
        });
        let drained = companion.during(|| timed(|| splice(r, a, 64, 0)));
        drain.join().unwrap().unwrap();
        fill_unix(a);
        write_once(w, b"y").unwrap();
        set_nonblocking(a);
        let socket_nonblocking = timed(|| splice(r, a, 64, 0));
        close(b);
        let epipe = splice(r, a, 64, 0);
        close_all([r, w, a]);
        drop(companion);
        (
            (at_once, got, empty_flag),
            (waited, late, shown_while_waiting, got_late),
            (own_flag, other_flag),
            (timed_out, drained, socket_nonblocking, epipe),
        )
    });
    assert_eq!(
        got,
        (
            (
                (Ok(3), Timing::AtOnce),
                Ok(bytes(b"abc")),
                (Err(EAGAIN), Timing::AtOnce)
            ),
            (
                ((Ok(4), Timing::Waited), true),
                Ok(4),
                false,
                Ok(bytes(b"late")),
            ),
            (
                (Err(EAGAIN), Timing::AtOnce),
                ((Ok(5), Timing::Waited), true)
            ),
            (
                (Err(EAGAIN), Against::About),
                ((Ok(1), Timing::Waited), true),
                (Err(EAGAIN), Timing::AtOnce),
                Err(Errno(libc::EPIPE)),
            ),
        )
    );
}

/// From a Unix stream socket into a pipe: what is queued moves at once; an
/// empty socket fails with EAGAIN at once with SPLICE_F_NONBLOCK (Unix
/// sockets honour it, also as the pipe's O_NONBLOCK) or the user's
/// O_NONBLOCK, at its `SO_RCVTIMEO`, or
/// waits for a late send; a full pipe fails with EAGAIN at once with
/// SPLICE_F_NONBLOCK, or waits for a late drain; the peer's shutdown is 0.
#[test]
fn splice_from_a_unix_stream_into_a_pipe_as_on_a_thread() {
    let got = differential("splice unix stream -> pipe", |side| {
        let companion = Companion::start(side);
        let (r, w) = pipe(0);
        let (a, b) = unix_socketpair(libc::SOCK_STREAM | libc::SOCK_CLOEXEC);
        send_flags(b, b"queued", 0).unwrap();
        let at_once = timed(|| splice(a, w, 64, 0));
        let got = read_len(r, 64);
        let empty_flag = timed(|| splice(a, w, 64, NB));
        let late = after(WAIT, move || send_flags(b, b"late", 0));
        let waited = companion.during(|| timed(|| splice(a, w, 64, 0)));
        late.join().unwrap().unwrap();
        let got_late = read_len(r, 64);
        set_timeout_opt(a, libc::SO_RCVTIMEO, TIMEOUT);
        let timed_out = timed_against(TIMEOUT, || splice(a, w, 64, 0));
        set_timeout_opt(a, libc::SO_RCVTIMEO, Duration::ZERO);
        // The pipe's O_NONBLOCK is SPLICE_F_NONBLOCK, which a Unix socket
        // honours.
        set_nonblocking(w);
        let pipe_nonblocking = timed(|| splice(a, w, 64, 0));
        set_blocking(w);

        fill_pipe(w);
        send_flags(b, b"z", 0).unwrap();
        let full_flag = timed(|| splice(a, w, 64, NB));
        let drain = after(WAIT, move || read_len(r, 1 << 20).map(|b| !b.0.is_empty()));
        let drained = companion.during(|| timed(|| splice(a, w, 64, 0)));
        drain.join().unwrap().unwrap();
        let _ = read_len(r, 64);

        libc_shutdown(b, libc::SHUT_WR);
        let eof = timed(|| splice(a, w, 64, 0));
        close_all([a, b]);
        let (a, b) = unix_socketpair(libc::SOCK_STREAM | libc::SOCK_CLOEXEC);
        set_nonblocking(a);
        let socket_nonblocking = timed(|| splice(a, w, 64, 0));
        close_all([r, w, a, b]);
        drop(companion);
        (
            (at_once, got, empty_flag),
            (waited, got_late, timed_out, pipe_nonblocking),
            (full_flag, drained, eof, socket_nonblocking),
        )
    });
    assert_eq!(
        got,
        (
            (
                (Ok(6), Timing::AtOnce),
                Ok(bytes(b"queued")),
                (Err(EAGAIN), Timing::AtOnce)
            ),
            (
                ((Ok(4), Timing::Waited), true),
                Ok(bytes(b"late")),
                (Err(EAGAIN), Against::About),
                (Err(EAGAIN), Timing::AtOnce),
            ),
            (
                (Err(EAGAIN), Timing::AtOnce),
                ((Ok(1), Timing::Waited), true),
                (Ok(0), Timing::AtOnce),
                (Err(EAGAIN), Timing::AtOnce),
            ),
        )
    );
}

fn libc_shutdown(fd: RawFd, how: i32) {
    // SAFETY: a plain descriptor.
    assert_eq!(unsafe { libc::shutdown(fd, how) }, 0);
}

/// TCP both ways: into a full socket the call waits for a late drain, or
/// fails with EAGAIN at once if the user made it non-blocking; out of an
/// empty one it waits for a late send even with SPLICE_F_NONBLOCK (TCP
/// reads ignore the flag), and fails at its `SO_RCVTIMEO`.
#[test]
fn splice_between_a_pipe_and_tcp_as_on_a_thread() {
    let got = differential("splice pipe <-> TCP", |side| {
        let companion = Companion::start(side);
        let (r, w) = pipe(0);
        let (client, server) = tcp_pair();
        let (c, s) = (client.as_raw_fd(), server.as_raw_fd());
        write_once(w, b"to tcp").unwrap();
        let at_once = timed(|| splice(r, c, 64, 0));
        let got = recv_len(s, 64, 0);
        let late = after(WAIT, move || send_flags(s, b"late", 0));
        let waited = companion.during(|| timed(|| splice(c, w, 64, NB)));
        late.join().unwrap().unwrap();
        let got_late = read_len(r, 64);
        set_timeout_opt(c, libc::SO_RCVTIMEO, TIMEOUT);
        let timed_out = timed_against(TIMEOUT, || splice(c, w, 64, 0));

        small_buffers(&client, &server);
        fill_send_buffer(&client);
        write_once(w, b"x").unwrap();
        // The peer reads everything for a while, from a little after the
        // call starts.
        let drain = after(WAIT, move || {
            let until = Instant::now() + Duration::from_millis(300);
            let mut total = 0;
            while Instant::now() < until {
                if let Ok(got) = recv_len(s, 1 << 20, libc::MSG_DONTWAIT) {
                    total += got.0.len();
                }
                thread::sleep(Duration::from_millis(5));
            }
            total > 0
        });
        let drained = companion.during(|| timed(|| splice(r, c, 64, 0)));
        let drain = drain.join().unwrap();
        close_all([r, w]);
        drop((client, server, companion));
        (
            (at_once, got),
            (waited, got_late, timed_out),
            (drained, drain),
        )
    });
    assert_eq!(
        got,
        (
            ((Ok(6), Timing::AtOnce), Ok(bytes(b"to tcp"))),
            (
                ((Ok(4), Timing::Waited), true),
                Ok(bytes(b"late")),
                (Err(EAGAIN), Against::About)
            ),
            (((Ok(1), Timing::Waited), true), true),
        )
    );
}

/// A full TCP socket the user made non-blocking: a splice into it fails
/// with EAGAIN at once, and so does one out of an empty one.
#[test]
fn splice_with_a_user_non_blocking_tcp_end_fails_at_once() {
    let got = differential("splice, non-blocking TCP", |_| {
        let (r, w) = pipe(0);
        let (client, server) = tcp_pair();
        small_buffers(&client, &server);
        fill_send_buffer(&client);
        client.set_nonblocking(true).unwrap();
        write_once(w, b"x").unwrap();
        let into = timed(|| splice(r, client.as_raw_fd(), 64, 0));
        server.set_nonblocking(true).unwrap();
        let (r2, w2) = pipe(0);
        let (other, _peer) = tcp_pair();
        other.set_nonblocking(true).unwrap();
        let out_of = timed(|| splice(other.as_raw_fd(), w2, 64, 0));
        let shown = (shows_nonblock(client.as_raw_fd()), shows_nonblock(w2));
        close_all([r, w, r2, w2]);
        (into, out_of, shown)
    });
    assert_eq!(
        got,
        (
            (Err(EAGAIN), Timing::AtOnce),
            (Err(EAGAIN), Timing::AtOnce),
            (true, false)
        )
    );
}

/// A waiting splice parks: another coroutine of the same worker (one
/// worker) runs meanwhile and is the one that feeds it.
#[test]
fn a_waiting_splice_lets_its_feeder_on_the_same_worker_run() {
    let got = differential("splice fed by a neighbour", |side| {
        let (r1, w1) = pipe(0);
        let (r2, w2) = pipe(0);
        let feeder = side.spawn(move || {
            thread::sleep(WAIT);
            write_once(w1, b"fed")
        });
        let spliced = splice(r1, w2, 64, 0);
        let fed = feeder.join();
        let got = read_len(r2, 64);
        close_all([r1, w1, r2, w2]);
        (spliced, fed, got)
    });
    assert_eq!(got, (Ok(3), Ok(3), Ok(bytes(b"fed"))));
}

/// The reviewer's reproduction (round J, finding 2): 513 coroutines on one
/// worker, each `io::copy` from one `io::pipe` into the next (std uses
/// `splice`), started from the last stage back to the first, then 256 KiB
/// written into the first pipe and read from the last. Each relay waits in
/// `splice` before the one upstream of it starts: with the waits taking
/// helper threads (512 by default), the 513th queued behind them and the
/// chain never flowed.
#[test]
fn a_chain_of_513_io_copy_relays_started_downstream_first_flows() {
    // Alone: 513 relays keep a core busy, which would slow the companions
    // of the cases beside it.
    let chain = || {
        watchdog("513 relays", Duration::from_secs(20), 1, || {
            let data: Vec<u8> = (0..256 << 10).map(|i: u32| (i * 7 % 251) as u8).collect();
            let (first_r, mut first_w) = io::pipe().unwrap();
            let mut reader = first_r;
            let mut stages = Vec::new();
            for _ in 0..513 {
                let (r, w) = io::pipe().unwrap();
                stages.push((std::mem::replace(&mut reader, r), w));
            }
            let start = Instant::now();
            let mut relays = Vec::new();
            for (mut input, mut output) in stages.into_iter().rev() {
                relays.push(coroutines::spawn(move || {
                    io::copy(&mut input, &mut output).unwrap()
                }));
                // Each relay reaches its splice before the next starts.
                thread::sleep(Duration::from_micros(200));
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
            (got.len(), got == data && copied, start.elapsed())
        })
    };
    let (len, same, elapsed) = alone(chain);
    assert_eq!((len, same), (256 << 10, true));
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

/// The waits park in the reactor, not on a helper thread: with the
/// runtime's only helper thread busy for the whole test, splices between
/// pipes (ends that earlier splices and writes used: Linux then refuses
/// `RWF_NOWAIT` on them), a tee, and splices between a pipe and a Unix
/// stream or TCP socket each wait for a late peer and return its bytes.
#[test]
fn waiting_splices_take_no_helper_thread() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let builder = coroutines::Runtime::builder()
        .workers(1)
        .blocking_threads(1);
    let spans = among_others(|| {
        watchdog_on("no helper", Duration::from_secs(20), builder, || {
            let timed_late = |late: Box<dyn FnOnce() + Send>,
                              call: &dyn Fn() -> Result<i64, Errno>| {
                let peer = after(WAIT, late);
                let start = Instant::now();
                let got = call();
                // Well under the 5 s the busy helper keeps its thread:
                // a call made on it would wait that long. Timed before the
                // join, which waits for the peer's thread on a helper if
                // it has not ended yet.
                let prompt = start.elapsed() < Duration::from_secs(3);
                peer.join().unwrap();
                (got, prompt)
            };
            let (r1, w1) = pipe(0);
            let (r2, w2) = pipe(0);
            // Splice and write through both ends first (before the helper
            // is taken: the write, refused `RWF_NOWAIT`, runs on it).
            write_once(w1, b"first").unwrap();
            splice(r1, w2, 64, 0).unwrap();
            write_once(w2, b"+").unwrap();
            let _ = read_len(r2, 64);
            let release = Arc::new(AtomicBool::new(false));
            let busy = {
                let release = release.clone();
                coroutines::spawn_blocking(move || {
                    let until = Instant::now() + Duration::from_secs(5);
                    while !release.load(Ordering::SeqCst) && Instant::now() < until {
                        thread::sleep(Duration::from_millis(5));
                    }
                })
            };
            thread::sleep(Duration::from_millis(20));
            let pipes = timed_late(
                Box::new(move || {
                    let _ = write_once(w1, b"late");
                }),
                &|| splice(r1, w2, 64, 0),
            );
            let _ = read_len(r2, 64);
            let teed = timed_late(
                Box::new(move || {
                    let _ = write_once(w1, b"tee");
                }),
                &|| tee(r1, w2, 64, 0),
            );
            // The tee left its bytes in `r1`, a spliced end (a read of it
            // would take the helper thread): splice them away.
            let (r3, w3) = pipe(0);
            splice(r1, w3, 64, 0).unwrap();
            close_all([r3, w3]);
            let _ = read_len(r2, 64);
            let (a, b) = unix_socketpair(libc::SOCK_STREAM | libc::SOCK_CLOEXEC);
            let into_unix = timed_late(
                Box::new(move || {
                    let _ = write_once(w1, b"unix");
                }),
                &|| splice(r1, a, 64, 0),
            );
            let _ = recv_len(b, 64, 0);
            let from_unix = timed_late(
                Box::new(move || {
                    let _ = send_flags(b, b"back", 0);
                }),
                &|| splice(a, w2, 64, 0),
            );
            let _ = read_len(r2, 64);
            let (client, server) = tcp_pair();
            let s = server.as_raw_fd();
            let from_tcp = timed_late(
                Box::new(move || {
                    let _ = send_flags(s, b"tcp", 0);
                }),
                &|| splice(client.as_raw_fd(), w2, 64, 0),
            );
            release.store(true, Ordering::SeqCst);
            busy.join().unwrap();
            close_all([r1, w1, r2, w2, a, b]);
            drop((client, server));
            (pipes, teed, into_unix, from_unix, from_tcp)
        })
    });
    assert_eq!(
        spans,
        (
            (Ok(4), true),
            (Ok(3), true),
            (Ok(4), true),
            (Ok(4), true),
            (Ok(3), true)
        )
    );
}

/// A splice from TCP and one into a full Unix stream socket wait in the
/// reactor: with one helper thread, the splice from TCP waits first, and
/// its peer sends only after the splice into the socket has returned. A
/// wait held on the helper would deadlock.
#[test]
fn waiting_socket_splices_hold_no_helper_thread() {
    let builder = coroutines::Runtime::builder()
        .workers(1)
        .blocking_threads(1);
    let got = among_others(|| {
        watchdog_on("socket splices", Duration::from_secs(20), builder, || {
            let (client, server) = tcp_pair();
            let (from_tcp_r, from_tcp_w) = pipe(0);
            let tcp = client.as_raw_fd();
            let from_tcp = coroutines::spawn(move || splice(tcp, from_tcp_w, 64, 0));
            let (a, b) = unix_socketpair(libc::SOCK_STREAM | libc::SOCK_CLOEXEC);
            set_int_opt(a, libc::SOL_SOCKET, libc::SO_SNDBUF, 4096);
            while send_flags(a, &[0u8; 4096], libc::MSG_DONTWAIT).is_ok() {}
            let (into_unix_r, into_unix_w) = pipe(0);
            write_once(into_unix_w, b"unix").unwrap();
            let into_unix = coroutines::spawn(move || splice(into_unix_r, a, 64, 0));
            // Both wait now; the Unix reader makes room first.
            thread::sleep(Duration::from_millis(50));
            let mut drained = 0;
            while drained < 64 << 10 {
                match recv_len(b, 64 << 10, libc::MSG_DONTWAIT) {
                    Ok(bytes) if !bytes.0.is_empty() => drained += bytes.0.len(),
                    _ => break,
                }
            }
            let into_unix = into_unix.join().unwrap();
            (&server).write_all(b"tcp").unwrap();
            let from_tcp = from_tcp.join().unwrap();
            let piped = read_len(from_tcp_r, 64);
            close_all([from_tcp_r, from_tcp_w, into_unix_r, into_unix_w, a, b]);
            (from_tcp, piped, into_unix)
        })
    });
    assert_eq!(got, (Ok(3), Ok(bytes(b"tcp")), Ok(4)));
}
