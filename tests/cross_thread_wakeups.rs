//! Wake-ups that come from other threads always reach the worker, however
//! they interleave with the worker going to sleep and waking up: a worker
//! never sleeps with a runnable coroutine in its queues.
//!
//! The stress: hundreds of coroutines on ONE worker park reading pipes;
//! two plain threads close the read ends concurrently, which wakes each
//! reader from outside the runtime (EBADF). Each woken reader then keeps the
//! worker busy for a few runs, so the worker keeps alternating between
//! sleeping in its poller, being woken, and polling it without blocking
//! while it is busy. Every reader must finish; one that does not within
//! seconds was left queued on a sleeping worker.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use coroutines::Runtime;

/// Readers per round.
const READERS: usize = 300;
/// The stress runs at least this many rounds, and for at least `BUDGET`.
const MIN_ROUNDS: usize = 8;
const BUDGET: Duration = Duration::from_secs(4);
/// A round whose readers have not all finished by then lost a wake-up: a
/// round takes a few milliseconds.
const ROUND_LIMIT: Duration = Duration::from_secs(10);

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(ret, 0, "pipe2: {}", io::Error::last_os_error());
    (fds[0], fds[1])
}

/// One round: park `READERS` readers, close their pipes from two threads,
/// and wait for every reader. Returns how long the round took.
fn round(runtime: &Runtime) -> Duration {
    let pipes: Vec<(RawFd, RawFd)> = (0..READERS).map(|_| pipe()).collect();
    let parked = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = pipes
        .iter()
        .map(|&(read_end, _)| {
            let parked = parked.clone();
            runtime.spawn(move || {
                parked.fetch_add(1, Ordering::SeqCst);
                let mut byte = 0u8;
                // SAFETY: reads one byte into a live local.
                let n = unsafe { libc::read(read_end, (&mut byte as *mut u8).cast(), 1) };
                let error = io::Error::last_os_error().raw_os_error();
                // Keep the worker busy for a few runs after each wake-up,
                // so that it polls its reactor without blocking as well.
                for _ in 0..3 {
                    coroutines::yield_now();
                }
                (n, error)
            })
        })
        .collect();
    while parked.load(Ordering::SeqCst) < READERS {
        thread::yield_now();
    }
    // The last reader may still be on its way into `read`.
    thread::sleep(Duration::from_millis(5));

    let start = Instant::now();
    let read_ends: Vec<RawFd> = pipes.iter().map(|&(read_end, _)| read_end).collect();
    let closers: Vec<_> = [0, 1]
        .into_iter()
        .map(|parity| {
            let mine: Vec<RawFd> = read_ends.iter().copied().skip(parity).step_by(2).collect();
            thread::spawn(move || {
                for (i, fd) in mine.into_iter().enumerate() {
                    // SAFETY: each read end is closed once, here; its reader
                    // only borrows the number.
                    assert_eq!(unsafe { libc::close(fd) }, 0);
                    // Uneven pauses, so the two closers drift against the
                    // worker's sleep and wake-up.
                    let pause =
                        Instant::now() + Duration::from_nanos(((i * 7919) % 13) as u64 * 500);
                    while Instant::now() < pause {
                        std::hint::spin_loop();
                    }
                }
            })
        })
        .collect();
    closers.into_iter().for_each(|c| c.join().unwrap());

    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let results: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        let _ = done.send(results);
    });
    let results = finished.recv_timeout(ROUND_LIMIT).unwrap_or_else(|_| {
        panic!(
            "lost wake-up: readers woken from other threads were still queued \
             {ROUND_LIMIT:?} after their descriptors were closed"
        )
    });
    for (n, error) in results {
        assert_eq!((n, error), (-1, Some(libc::EBADF)));
    }
    for (_, write_end) in pipes {
        // SAFETY: the write ends are owned here and closed once.
        unsafe { libc::close(write_end) };
    }
    start.elapsed()
}

#[test]
fn closes_from_plain_threads_wake_every_parked_reader() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let start = Instant::now();
    let mut rounds = 0;
    while rounds < MIN_ROUNDS || start.elapsed() < BUDGET {
        round(&runtime);
        rounds += 1;
    }
}
