//! std `Mutex` among coroutines on one worker: a blocked `lock` parks the
//! coroutine, so the holder runs and releases it. Without the futex hook
//! the waiter blocks the worker, the holder never resumes, and the watchdog
//! fails the test.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{run, yield_until, Ticker, LIMIT};

#[test]
fn holder_sleeps_while_another_coroutine_on_the_worker_waits() {
    let log = run(1, LIMIT, || {
        let lock = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(AtomicBool::new(false));
        let holder = {
            let (lock, held) = (lock.clone(), held.clone());
            coroutines::spawn(move || {
                let mut log = lock.lock().unwrap();
                held.store(true, Ordering::SeqCst);
                log.push("holder took the lock");
                std::thread::sleep(Duration::from_millis(100));
                log.push("holder releases the lock");
            })
        };
        let waiter = {
            let (lock, held) = (lock.clone(), held.clone());
            coroutines::spawn(move || {
                yield_until(|| held.load(Ordering::SeqCst));
                let start = Instant::now();
                lock.lock().unwrap().push("waiter took the lock");
                start.elapsed()
            })
        };
        holder.join().unwrap();
        let waited = waiter.join().unwrap();
        assert!(
            waited >= Duration::from_millis(50),
            "waited only {waited:?}"
        );
        Arc::try_unwrap(lock).unwrap().into_inner().unwrap()
    });
    assert_eq!(
        log,
        [
            "holder took the lock",
            "holder releases the lock",
            "waiter took the lock"
        ]
    );
}

#[test]
fn hundred_coroutines_hand_a_mutex_around_while_yielding_inside() {
    const COROUTINES: usize = 100;
    const ROUNDS: usize = 100;
    let total = run(1, LIMIT, || {
        let counter = Arc::new(Mutex::new(0usize));
        let handles: Vec<_> = (0..COROUTINES)
            .map(|_| {
                let counter = counter.clone();
                coroutines::spawn(move || {
                    for _ in 0..ROUNDS {
                        let mut guard = counter.lock().unwrap();
                        let seen = *guard;
                        // Everyone else on the worker runs here, and finds
                        // the lock held.
                        coroutines::yield_now();
                        *guard = seen + 1;
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        let total = *counter.lock().unwrap();
        total
    });
    assert_eq!(total, COROUTINES * ROUNDS);
}

#[test]
fn unlock_on_an_os_thread_wakes_a_parked_coroutine() {
    run(1, LIMIT, || {
        let lock = Arc::new(Mutex::new(()));
        let held = Arc::new(AtomicBool::new(false));
        let thread = {
            let (lock, held) = (lock.clone(), held.clone());
            std::thread::spawn(move || {
                let _guard = lock.lock().unwrap();
                held.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(150));
            })
        };
        yield_until(|| held.load(Ordering::SeqCst));
        let ticker = Ticker::start();
        let ((), _, during) = ticker.during(|| drop(lock.lock().unwrap()));
        drop(ticker);
        thread.join().unwrap();
        assert!(
            during >= 10,
            "the ticker ticked {during} times during the wait"
        );
    });
}
