//! Signal handlers run on the worker's thread identity, whatever the
//! interrupted coroutine was doing: a storm of signals aimed at the worker
//! threads while coroutines switch, sleep and spin must never show in a
//! coroutine's `errno`, thread-locals or `ThreadId`, even though the
//! handler scribbles on `errno` and on a thread-local (the worker's).

mod support;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::identity::{joined, os_thread};
use support::*;

/// How long the storm lasts.
const STORM: Duration = Duration::from_secs(1);

/// Signals the handler has handled.
static HANDLED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Incremented by the handler: on the identity it runs on.
    static TOUCHED_BY_HANDLER: Cell<u64> = const { Cell::new(0) };
    /// Set by each coroutine to its own number.
    static MINE: Cell<u64> = const { Cell::new(0) };
}

/// A badly behaved handler: it leaves `errno` changed, and writes a
/// thread-local.
extern "C" fn handler(_: libc::c_int) {
    HANDLED.fetch_add(1, Ordering::Relaxed);
    TOUCHED_BY_HANDLER.with(|t| t.set(t.get() + 1));
    set_errno(7777);
}

/// SIGUSR1 is used by this binary only.
fn install() {
    install_handler(libc::SIGUSR1, handler);
}

#[test]
fn a_signal_storm_never_touches_a_coroutines_errno_or_thread_locals() {
    install();
    let (checks, handled) = run(2, Duration::from_secs(20), || {
        let stop = Arc::new(AtomicBool::new(false));
        let kernel_threads = Arc::new(Mutex::new(Vec::<libc::pid_t>::new()));
        let checks = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (1..=16u64)
            .map(|i| {
                let (stop, kernel_threads, checks) =
                    (stop.clone(), kernel_threads.clone(), checks.clone());
                coroutines::spawn(move || {
                    let me = thread::current().id();
                    {
                        let mut known = kernel_threads.lock().unwrap();
                        if !known.contains(&os_thread()) {
                            known.push(os_thread());
                        }
                    }
                    MINE.with(|m| m.set(i));
                    while !stop.load(Ordering::Relaxed) {
                        set_errno(i as i32);
                        match i % 4 {
                            0 => coroutines::yield_now(),
                            1 => thread::sleep(Duration::from_micros(100)),
                            2 => {
                                let until = Instant::now() + Duration::from_micros(200);
                                while Instant::now() < until {
                                    std::hint::spin_loop();
                                }
                                // Signals land mid-spin; the yield keeps the
                                // four spinners from holding all four threads
                                // the runtime may use (2 workers, 2 spares)
                                // while the coroutine the storm thread waits
                                // for is queued: nothing preempts a coroutine.
                                coroutines::yield_now();
                            }
                            _ => {
                                // A system call the signals interrupt.
                                // SAFETY: getppid has no preconditions.
                                unsafe { libc::getppid() };
                                coroutines::yield_now();
                            }
                        }
                        assert_eq!(errno(), i as i32, "coroutine {i}'s errno");
                        assert_eq!(MINE.with(Cell::get), i, "coroutine {i}'s thread-local");
                        assert_eq!(thread::current().id(), me, "coroutine {i}'s ThreadId");
                        assert_eq!(
                            TOUCHED_BY_HANDLER.with(Cell::get),
                            0,
                            "the handler ran on coroutine {i}'s identity"
                        );
                        checks.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        // The storm: a plain thread signals every worker thread seen.
        let storm = {
            let (stop, kernel_threads) = (stop.clone(), kernel_threads.clone());
            thread::spawn(move || {
                let start = Instant::now();
                let mut sent = 0u64;
                while start.elapsed() < STORM {
                    for &tid in kernel_threads.lock().unwrap().iter() {
                        // SAFETY: signals a thread of this process with a
                        // signal whose handler is installed.
                        unsafe {
                            libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR1)
                        };
                        sent += 1;
                    }
                    thread::sleep(Duration::from_micros(50));
                }
                stop.store(true, Ordering::Relaxed);
                sent
            })
        };
        let sent = storm.join().unwrap();
        for handle in handles {
            joined(handle);
        }
        assert!(sent > 0, "no worker thread was signalled");
        (
            checks.load(Ordering::Relaxed),
            HANDLED.load(Ordering::Relaxed),
        )
    });
    assert!(handled >= 1000, "only {handled} signals were handled");
    assert!(checks >= 1000, "only {checks} checks were made");
}
