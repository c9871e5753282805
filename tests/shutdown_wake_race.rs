//! A wake that races a runtime's shutdown must not keep the runtime alive.
//!
//! A woken coroutine waits in its worker's queues, and each coroutine holds
//! its runtime; a wake queued after the worker's final drain therefore
//! held the whole runtime (its poller descriptors, its memory) for ever.
//! Plain threads here unpark coroutines as fast as they can while the
//! runtime is dropped, many times over, and the process's descriptors must
//! come back each time. A file of its own: it counts the process's
//! descriptors, which other tests would disturb.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use coroutines::Runtime;

const ROUNDS: usize = 300;
const PARKERS: usize = 8;
const WAKERS: usize = 2;

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// One runtime's life: coroutines park in a loop while plain threads unpark
/// them, and the runtime is dropped under the wakes.
fn drop_under_wakes() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let (tx, rx) = mpsc::channel();
    for _ in 0..PARKERS {
        let tx = tx.clone();
        // Never joined: the drop abandons them.
        let _parker = runtime.spawn(move || {
            tx.send(thread::current()).unwrap();
            loop {
                thread::park();
            }
        });
    }
    let parkers: Arc<Vec<thread::Thread>> = Arc::new(rx.iter().take(PARKERS).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let wakers: Vec<_> = (0..WAKERS)
        .map(|_| {
            let (parkers, stop) = (parkers.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    parkers.iter().for_each(thread::Thread::unpark);
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(1));
    drop(runtime);
    stop.store(true, Ordering::Relaxed);
    wakers.into_iter().for_each(|waker| waker.join().unwrap());
}

#[test]
fn wakes_racing_the_shutdown_do_not_keep_the_runtime_alive() {
    // The first runtime's life starts what lives on (the blocking pool's
    // and the identity layer's process-wide parts).
    drop_under_wakes();
    let before = open_descriptors();
    for _ in 0..ROUNDS {
        drop_under_wakes();
    }
    let after = open_descriptors();
    assert_eq!(
        after, before,
        "descriptors before and after {ROUNDS} runtimes dropped under wakes: \
         each runtime kept alive keeps its pollers' descriptors"
    );
}
