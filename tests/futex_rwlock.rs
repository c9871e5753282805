//! std `RwLock` among coroutines on one worker. Without the futex hook the
//! blocked side blocks the worker, the guards' holders never resume, and
//! the watchdog fails the test.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use support::{run, yield_until, LIMIT};

#[test]
fn writer_waits_for_readers_that_sleep_holding_read_guards() {
    const READERS: usize = 3;
    let log = run(1, LIMIT, || {
        let lock = Arc::new(RwLock::new(0u32));
        let log = Arc::new(Mutex::new(Vec::new()));
        let reading = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (0..READERS)
            .map(|i| {
                let (lock, log, reading) = (lock.clone(), log.clone(), reading.clone());
                coroutines::spawn(move || {
                    let value = lock.read().unwrap();
                    reading.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(50 + 25 * i as u64));
                    log.lock()
                        .unwrap()
                        .push(format!("reader {i} saw {}", *value));
                })
            })
            .collect();
        yield_until(|| reading.load(Ordering::SeqCst) == READERS);
        let writer = {
            let (lock, log) = (lock.clone(), log.clone());
            coroutines::spawn(move || {
                let mut value = lock.write().unwrap();
                *value += 1;
                log.lock().unwrap().push(format!("writer wrote {}", *value));
            })
        };
        writer.join().unwrap();
        for reader in readers {
            reader.join().unwrap();
        }
        let log = log.lock().unwrap().clone();
        log
    });
    assert_eq!(
        log,
        [
            "reader 0 saw 0",
            "reader 1 saw 0",
            "reader 2 saw 0",
            "writer wrote 1"
        ]
    );
}

#[test]
fn readers_wait_for_a_writer_that_sleeps_holding_the_write_guard() {
    const READERS: usize = 10;
    let seen = run(1, LIMIT, || {
        let lock = Arc::new(RwLock::new(0u32));
        let writing = Arc::new(AtomicUsize::new(0));
        let writer = {
            let (lock, writing) = (lock.clone(), writing.clone());
            coroutines::spawn(move || {
                let mut value = lock.write().unwrap();
                writing.store(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
                *value = 7;
            })
        };
        yield_until(|| writing.load(Ordering::SeqCst) == 1);
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                let lock = lock.clone();
                coroutines::spawn(move || *lock.read().unwrap())
            })
            .collect();
        writer.join().unwrap();
        readers
            .into_iter()
            .map(|reader| reader.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(seen, vec![7; READERS]);
}
