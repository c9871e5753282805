//! Descriptors closed or replaced under a reader, differentially.
//!
//! - close racing a read (issue item 2): a read that starts while another
//!   thread closes its descriptor must end. On a thread it does: a read
//!   that got in first holds the file and returns the next data, the next
//!   read fails with EBADF. In a coroutine the runtime promises EBADF, as
//!   for readers already parked; a read that registers between the
//!   runtime's reset of the entry and the real close must not park for
//!   ever.
//! - dup2 onto a descriptor being read ("also examine"): the number stays
//!   valid throughout, so no read may fail with EBADF. On a thread a read
//!   in flight keeps reading the file it started on; the next one reads the
//!   new file.
//!
//! The stress loops run for up to [`BUDGET`] per side (the close race's
//! coroutine side longer), in batches of [`BATCH`] descriptors, with three
//! persistent plain threads: a feeder that keeps the readers busy with
//! bytes, a striker that closes or replaces the batch's descriptors one
//! after the other, and an interrupter that sends the striker a signal as
//! each strike begins, whose handler holds the striker up for [`HOLD_UP`]
//! wherever it lands (see [`Striker`]). All run alone
//! (`differential_exclusive`): descriptors are closed under a reader, and
//! no other test may take the freed numbers.
//!
//! Also: parked reads whose number is reused at once, on two workers, and
//! numbers closed and reused by calls the hooks do not see (`close_range`,
//! glibc's `fclose`, `eventfd`).

mod support;

use std::os::fd::{IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use support::differential::*;
use support::{after, alone, WAIT};

/// How long each side of a stress loop runs, unless it fails first.
const BUDGET: Duration = Duration::from_secs(1);

/// How long the coroutine side of the close race runs, unless it fails
/// first: a hang shows in about half the runs of one second here; in three,
/// in about three runs of four.
/// (The thread side, which cannot hang, runs [`BUDGET`].)
const CLOSE_RACE_BUDGET: Duration = Duration::from_secs(3);

/// Descriptors per batch.
const BATCH: usize = 8;

/// Readers per descriptor, in the close race.
const READERS_PER_FD: usize = 8;

/// How long a batch's readers may take to end once the striker is done
/// before one counts as hung: the feeder sends every few microseconds.
const HUNG_AFTER: Duration = Duration::from_secs(1);

/// How long the striker's signal handler holds it up: time enough for a
/// reader to make a read.
const HOLD_UP: Duration = Duration::from_micros(200);

/// The longest wait of the striker between announcing a strike (the
/// interrupter then sends its signal) and striking.
const LEAD: Duration = Duration::from_micros(2);

/// Creates a connected unix stream pair as raw descriptors.
fn raw_pair() -> (RawFd, RawFd) {
    let (a, b) = UnixStream::pair().unwrap();
    (a.into_raw_fd(), b.into_raw_fd())
}

/// Closes descriptors this test owns.
fn close_all(fds: impl IntoIterator<Item = RawFd>) {
    for fd in fds {
        // SAFETY: each descriptor is owned by the caller and closed once.
        unsafe { libc::close(fd) };
    }
}

/// Receives from `rx`, yielding meanwhile rather than parking: the case's
/// worker then never sleeps while the case waits, so that these tests do
/// not depend on how a sleeping worker is woken (issue item 0).
fn recv_yielding<T>(rx: &mpsc::Receiver<T>) -> T {
    loop {
        match rx.try_recv() {
            Ok(value) => return value,
            Err(mpsc::TryRecvError::Empty) => coroutines::yield_now(),
            Err(mpsc::TryRecvError::Disconnected) => panic!("the helper thread ended"),
        }
    }
}

/// Reads one byte from `fd`: the byte, or the error.
fn read_byte(fd: RawFd) -> Result<u8, Errno> {
    let mut byte = [0u8];
    // SAFETY: one byte of a live buffer.
    let n = unsafe { libc::read(fd, byte.as_mut_ptr().cast(), 1) };
    c_outcome(n as i64).map(|_| byte[0])
}

/// What a [`Feeder`] is told.
enum Feed {
    /// Feed each descriptor its byte.
    These(Vec<(RawFd, u8)>),
    /// Stop feeding, and say so.
    Pause(mpsc::Sender<()>),
}

/// A plain thread that keeps sending one byte at a time to each of the
/// descriptors it is given, in turn, ignoring errors; it blocks while it
/// has none, so that it takes no processor from the others.
struct Feeder {
    orders: Option<mpsc::Sender<Feed>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Feeder {
    fn start() -> Feeder {
        let (orders, received) = mpsc::channel();
        let handle = thread::spawn(move || {
            let mut fed: Vec<(RawFd, u8)> = Vec::new();
            loop {
                let order = if fed.is_empty() {
                    match received.recv() {
                        Ok(order) => Some(order),
                        Err(_) => return,
                    }
                } else {
                    received.try_recv().ok()
                };
                match order {
                    Some(Feed::These(these)) => fed = these,
                    Some(Feed::Pause(done)) => {
                        fed.clear();
                        done.send(()).unwrap();
                    }
                    None => {}
                }
                for (fd, byte) in &fed {
                    // SAFETY: one byte of a live buffer; the descriptor
                    // stays open until `pause` returns.
                    unsafe {
                        libc::send(
                            *fd,
                            (byte as *const u8).cast(),
                            1,
                            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                        )
                    };
                }
            }
        });
        Feeder {
            orders: Some(orders),
            handle: Some(handle),
        }
    }

    fn order(&self, order: Feed) {
        self.orders.as_ref().unwrap().send(order).unwrap();
    }

    /// Starts feeding each descriptor its byte.
    fn feed(&self, fed: Vec<(RawFd, u8)>) {
        self.order(Feed::These(fed));
    }

    /// Stops feeding; on return the feeder no longer uses the descriptors,
    /// which may be closed.
    fn pause(&self) {
        let (done, paused) = mpsc::channel();
        self.order(Feed::Pause(done));
        recv_yielding(&paused);
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        drop(self.orders.take());
        if let Some(handle) = self.handle.take() {
            handle.join().unwrap();
        }
    }
}

/// The striker's SIGUSR2 handler: holds the striker up wherever the signal
/// lands, as any handler that takes a while does.
extern "C" fn hold_up(_: libc::c_int) {
    let pause = libc::timespec {
        tv_sec: 0,
        tv_nsec: HOLD_UP.as_nanos() as libc::c_long,
    };
    // SAFETY: a raw nanosleep (async-signal-safe, and no hook) on a live
    // timespec; it leaves errno alone when it succeeds.
    unsafe {
        libc::syscall(
            libc::SYS_nanosleep,
            &pause,
            std::ptr::null_mut::<libc::timespec>(),
        )
    };
}

/// Two plain threads: a striker that, on order, does `action(target,
/// other)` for each pair of a batch (the close or dup2 that the readers
/// race), and an interrupter that sends the striker a signal as each
/// strike begins, the striker striking up to [`LEAD`] later. A signal thus
/// lands anywhere in a strike; when it lands inside the hooked close (or
/// dup2) after the runtime's reset of the entry and before the real call,
/// the descriptor stays open with its entry reset for [`HOLD_UP`], and a
/// read that starts then registers for a file about to die. Without the
/// signals that window is a few instructions wide: only a thread switch at
/// that very instant opens it, once in many thousands of strikes.
struct Striker {
    orders: Option<mpsc::Sender<Vec<(RawFd, RawFd)>>>,
    struck: mpsc::Receiver<()>,
    handles: Vec<thread::JoinHandle<()>>,
}

impl Striker {
    fn start(action: fn(RawFd, RawFd)) -> Striker {
        // SAFETY: a zeroed sigaction is valid; the handler only sleeps.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = hold_up as extern "C" fn(libc::c_int) as usize;
            act.sa_flags = libc::SA_RESTART;
            assert_eq!(
                libc::sigaction(libc::SIGUSR2, &act, std::ptr::null_mut()),
                0
            );
        }
        let (orders, received) = mpsc::channel::<Vec<(RawFd, RawFd)>>();
        let (done, struck) = mpsc::channel();
        let (me, striker) = mpsc::channel();
        let (starts, started) = mpsc::channel::<()>();
        // Strikes announced, and batches finished: the interrupter signals
        // once per announcement, and stops when the batch is done.
        let announced = Arc::new(AtomicU64::new(0));
        let finished = Arc::new(AtomicU64::new(0));
        let strikes = {
            let (done, announced, finished) = (done.clone(), announced.clone(), finished.clone());
            thread::spawn(move || {
                // SAFETY: pthread_self has no preconditions.
                me.send(unsafe { libc::pthread_self() }).unwrap();
                let mut random = 1u64;
                for batch in received {
                    starts.send(()).unwrap();
                    for (target, other) in batch {
                        announced.fetch_add(1, Ordering::SeqCst);
                        // The signal takes a few microseconds to arrive:
                        // strike a random while later, so that it lands at
                        // every point of the strike.
                        random = random
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let lead = Duration::from_nanos((random >> 33) % LEAD.as_nanos() as u64);
                        let start = Instant::now();
                        while start.elapsed() < lead {
                            std::hint::spin_loop();
                        }
                        action(target, other);
                    }
                    finished.fetch_add(1, Ordering::SeqCst);
                    done.send(()).unwrap();
                }
            })
        };
        let striker = recv_yielding(&striker);
        let interrupter = thread::spawn(move || {
            let (mut batches, mut signalled) = (0, 0);
            for () in started {
                batches += 1;
                while finished.load(Ordering::SeqCst) < batches {
                    if announced.load(Ordering::SeqCst) > signalled {
                        signalled += 1;
                        // SAFETY: the striker thread lives until the case
                        // has seen this batch's `done` from both threads
                        // (see `wait_struck` and Drop).
                        unsafe { libc::pthread_kill(striker, libc::SIGUSR2) };
                    }
                    std::hint::spin_loop();
                }
                signalled = announced.load(Ordering::SeqCst);
                done.send(()).unwrap();
            }
        });
        Striker {
            orders: Some(orders),
            struck,
            handles: vec![strikes, interrupter],
        }
    }

    /// Strikes each pair of `batch`.
    fn strike(&self, batch: Vec<(RawFd, RawFd)>) {
        self.orders.as_ref().unwrap().send(batch).unwrap();
    }

    /// Waits until the batch is struck and the signals have stopped,
    /// yielding: a reader then shares its worker with a busy coroutine,
    /// runs in bursts and is often in the middle of a read, not parked,
    /// when its strike lands.
    fn wait_struck(&self) {
        for _ in 0..2 {
            recv_yielding(&self.struck);
        }
    }
}

impl Drop for Striker {
    fn drop(&mut self) {
        // The striker ends, then the interrupter (its channel closes).
        drop(self.orders.take());
        for handle in self.handles.drain(..) {
            handle.join().unwrap();
        }
    }
}

/// How a stress loop ended.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Every reader ended as it must.
    AllAsExpected,
    /// A reader ended otherwise, with this result.
    Unexpected(Result<u8, Errno>),
    /// A reader was still blocked [`HUNG_AFTER`] after the strikes.
    Hung,
}

/// Waits for `readers`, up to [`HUNG_AFTER`] after `striker` is done; their
/// results, or `None` if one is still blocked.
fn wait_for<T>(readers: Vec<Party<T>>, striker: &Striker) -> Option<Vec<T>> {
    striker.wait_struck();
    let struck = Instant::now();
    while !readers.iter().all(Party::is_finished) {
        if struck.elapsed() > HUNG_AFTER {
            return None;
        }
        coroutines::yield_now();
    }
    Some(readers.into_iter().map(Party::join).collect())
}

#[test]
fn close_racing_a_read_ends_the_read() {
    let verdict = differential_exclusive("close racing a read", |side| {
        let feeder = Feeder::start();
        // SAFETY: the striker closes each descriptor it is given, once.
        let striker = Striker::start(|fd, _| unsafe {
            libc::close(fd);
        });
        let budget = match side {
            Side::Coroutine => CLOSE_RACE_BUDGET,
            Side::Thread => BUDGET,
        };
        let start = Instant::now();
        while start.elapsed() < budget {
            let pairs: Vec<(RawFd, RawFd)> = (0..BATCH).map(|_| raw_pair()).collect();
            feeder.feed(pairs.iter().map(|&(_, peer)| (peer, b'a')).collect());
            // Each reads until an error: bytes keep coming until the close.
            // Several read each descriptor: while one takes a byte, the
            // others are between reads, not parked, when the close comes.
            let readers = pairs
                .iter()
                .flat_map(|&(fd, _)| {
                    (0..READERS_PER_FD).map(move |_| {
                        side.spawn(move || loop {
                            if let Err(error) = read_byte(fd) {
                                return error;
                            }
                        })
                    })
                })
                .collect();
            striker.strike(pairs.iter().map(|&(fd, _)| (fd, -1)).collect());
            let ended = wait_for(readers, &striker);
            feeder.pause();
            close_all(pairs.iter().map(|&(_, peer)| peer));
            let Some(ended) = ended else {
                return Verdict::Hung;
            };
            if let Some(&error) = ended.iter().find(|&&e| e != Errno(libc::EBADF)) {
                return Verdict::Unexpected(Err(error));
            }
        }
        Verdict::AllAsExpected
    });
    assert_eq!(verdict, Verdict::AllAsExpected);
}

/// Replaces `target` with a duplicate of `replacement`.
fn dup2_onto(target: RawFd, replacement: RawFd) {
    // SAFETY: both descriptors are live; `target` is replaced atomically.
    let ret = unsafe { libc::dup2(replacement, target) };
    assert_eq!(ret, target, "dup2: {}", std::io::Error::last_os_error());
}

#[test]
fn read_parked_across_dup2_onto_its_descriptor_keeps_reading() {
    // The reader waits on one pair's end; another pair's end replaces that
    // descriptor; then both pairs get data.
    let got = differential_exclusive("read parked across dup2", |side| {
        let ((old, old_peer), (new, new_peer)) = (raw_pair(), raw_pair());
        let reader = side.spawn(move || read_byte(old));
        thread::sleep(Duration::from_millis(50));
        dup2_onto(old, new);
        let feeder = Feeder::start();
        feeder.feed(vec![(old_peer, b'a'), (new_peer, b'b')]);
        let got = reader.join();
        feeder.pause();
        close_all([old, old_peer, new, new_peer]);
        // Which file's byte it gets is a race on a thread too (a read that
        // starts just after the dup2 reads the new file): only an error is
        // wrong.
        got.map(drop)
    });
    assert_eq!(got, Ok(()));
}

#[test]
fn read_racing_dup2_onto_its_descriptor_never_fails() {
    let verdict = differential_exclusive("read racing dup2", |side| {
        let feeder = Feeder::start();
        let striker = Striker::start(dup2_onto);
        let start = Instant::now();
        while start.elapsed() < BUDGET {
            // (reader's descriptor, its peer, replacement, its peer)
            let quads: Vec<[RawFd; 4]> = (0..BATCH)
                .map(|_| {
                    let ((old, old_peer), (new, new_peer)) = (raw_pair(), raw_pair());
                    [old, old_peer, new, new_peer]
                })
                .collect();
            feeder.feed(
                quads
                    .iter()
                    .flat_map(|q| [(q[1], b'a'), (q[3], b'b')])
                    .collect(),
            );
            // Each reads the old pair's bytes until one from the new pair
            // comes.
            let readers = quads
                .iter()
                .map(|&[old, ..]| {
                    side.spawn(move || loop {
                        match read_byte(old) {
                            Ok(b'a') => {}
                            other => return other,
                        }
                    })
                })
                .collect();
            striker.strike(quads.iter().map(|q| (q[0], q[2])).collect());
            let ended = wait_for(readers, &striker);
            feeder.pause();
            close_all(quads.iter().flatten().copied());
            let Some(ended) = ended else {
                return Verdict::Hung;
            };
            if let Some(&other) = ended.iter().find(|&&r| r != Ok(b'b')) {
                return Verdict::Unexpected(other);
            }
        }
        Verdict::AllAsExpected
    });
    assert_eq!(verdict, Verdict::AllAsExpected);
}

/// Two hundred coroutines on two workers each close the pipe end a
/// neighbour is parked reading, and take its number again at once for a
/// new pipe with data in it: every read ends, with EBADF (or, one that
/// only got to start after the reuse, with the new pipe's data). Coroutine
/// only: a thread blocked in `read` keeps the file it started on and stays
/// blocked; the runtime promises EBADF.
#[test]
fn parked_reads_end_with_ebadf_when_their_number_is_reused_at_once() {
    const CLOSERS: u64 = 200;
    let ended = alone(|| {
        support::watchdog("close and reuse", support::LIMIT, 2, || {
            let closers: Vec<_> = (0..CLOSERS)
                .map(|i| {
                    coroutines::spawn(move || {
                        let (reader, writer) = raw_pipe();
                        let started = Arc::new(AtomicBool::new(false));
                        let parked = {
                            let started = started.clone();
                            coroutines::spawn(move || {
                                started.store(true, Ordering::SeqCst);
                                read_byte(reader)
                            })
                        };
                        while !started.load(Ordering::SeqCst) {
                            thread::sleep(Duration::from_micros(200));
                        }
                        // Varied, so that closes land at every stage of
                        // the reads' parking.
                        thread::sleep(Duration::from_micros(2000 + (i * 37) % 3000));
                        close_all([reader]);
                        let (new_reader, new_writer) = raw_pipe();
                        // SAFETY: a write from a live buffer.
                        unsafe { libc::write(new_writer, b"new".as_ptr().cast(), 3) };
                        let got = parked.join().unwrap();
                        close_all([writer, new_reader, new_writer]);
                        got
                    })
                })
                .collect();
            closers
                .into_iter()
                .map(|closer| closer.join().unwrap())
                .filter(|&got| got != Err(Errno(libc::EBADF)) && got != Ok(b'n'))
                .collect::<Vec<_>>()
        })
    });
    assert_eq!(ended, vec![]);
}

/// A new pipe, as raw descriptors (reader, writer).
fn raw_pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (fds[0], fds[1])
}

/// Parks a read on a pipe end until a plain thread writes to it, closes
/// the end with `close` (a way the hooks do not see), creates an eventfd
/// (likewise: it takes the freed number) and reads the eventfd while a
/// plain thread writes it after [`WAIT`]: what that read returned.
fn read_eventfd_on_a_reused_number(close: fn(RawFd)) -> Result<u8, Errno> {
    let (reader, writer) = raw_pipe();
    let poke = after(Duration::from_millis(50), move || {
        // SAFETY: a write from a live buffer.
        unsafe { libc::write(writer, b"x".as_ptr().cast(), 1) };
    });
    assert_eq!(read_byte(reader), Ok(b'x'));
    poke.join().unwrap();
    close(reader);
    // SAFETY: plain descriptor creation.
    let event = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    let poke = after(WAIT, move || {
        // SAFETY: a write from a live 8-byte buffer.
        unsafe { libc::write(event, 1u64.to_ne_bytes().as_ptr().cast(), 8) };
    });
    let mut count = [0u8; 8];
    // SAFETY: a read into a live 8-byte buffer.
    let got = c_outcome(unsafe { libc::read(event, count.as_mut_ptr().cast(), 8) } as i64);
    poke.join().unwrap();
    close_all([event, writer]);
    got.map(|n| n as u8)
}

/// A number closed by `close_range` and reused by an eventfd reads the
/// eventfd, as a thread does.
#[test]
fn number_closed_by_close_range_and_reused_reads_the_new_file() {
    let got = differential_exclusive("close_range, then an eventfd", |_| {
        read_eventfd_on_a_reused_number(|fd| {
            // SAFETY: closes the caller's descriptor, by a raw system call.
            unsafe { libc::syscall(libc::SYS_close_range, fd as u32, fd as u32, 0u32) };
        })
    });
    assert_eq!(got, Ok(8));
}

/// A number closed by `fclose` (glibc's own close, inside libc) and
/// reused by an eventfd reads the eventfd, as a thread does.
#[test]
fn number_closed_by_fclose_and_reused_reads_the_new_file() {
    let got = differential_exclusive("fclose, then an eventfd", |_| {
        read_eventfd_on_a_reused_number(|fd| {
            // SAFETY: the stream takes the descriptor over and closes it.
            unsafe { libc::fclose(libc::fdopen(fd, c"r".as_ptr())) };
        })
    });
    assert_eq!(got, Ok(8));
}
