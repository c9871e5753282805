//! mpsc channels and `thread::park` with a coroutine on one side. They work
//! through the futex hook when the other side is an OS thread or a
//! coroutine on ANOTHER worker; between two coroutines of the SAME worker
//! they do not work yet (std identifies the waiting thread by OS thread:
//! see the limitations in hooks/futex.rs), so that case is not tested here.
//! Without the hook the receiving coroutine blocks its worker: the ticker
//! stops and the tests fail.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use support::{run, Ticker, LIMIT};

/// Runs `body` while a ticker coroutine ticks on the same worker; returns
/// its result and the ticks counted meanwhile.
fn with_ticker<T>(body: impl FnOnce() -> T) -> (T, u64) {
    let (result, _, during) = Ticker::start().during(body);
    (result, during)
}

#[test]
fn coroutine_receives_from_an_os_thread() {
    let (sum, ticks) = run(1, LIMIT, || {
        with_ticker(|| {
            let (tx, rx) = mpsc::channel();
            let sender = std::thread::spawn(move || {
                for i in 1..=10u64 {
                    std::thread::sleep(Duration::from_millis(10));
                    tx.send(i).unwrap();
                }
            });
            let sum: u64 = rx.iter().sum();
            sender.join().unwrap();
            sum
        })
    });
    assert_eq!(sum, 55);
    assert!(
        ticks >= 20,
        "the ticker ticked {ticks} times while receiving"
    );
}

#[test]
fn rendezvous_channel_between_a_coroutine_and_an_os_thread() {
    let (echoed, ticks) = run(1, LIMIT, || {
        with_ticker(|| {
            let (to_thread, from_coroutine) = mpsc::sync_channel::<u32>(0);
            let (to_coroutine, from_thread) = mpsc::sync_channel::<u32>(0);
            let echo = std::thread::spawn(move || {
                for value in from_coroutine {
                    std::thread::sleep(Duration::from_millis(5));
                    to_coroutine.send(value * 2).unwrap();
                }
            });
            let echoed: Vec<u32> = (0..10)
                .map(|i| {
                    to_thread.send(i).unwrap();
                    from_thread.recv().unwrap()
                })
                .collect();
            drop(to_thread);
            echo.join().unwrap();
            echoed
        })
    });
    assert_eq!(echoed, (0..10).map(|i| i * 2).collect::<Vec<_>>());
    assert!(
        ticks >= 20,
        "the ticker ticked {ticks} times during the exchange"
    );
}

#[test]
fn channel_between_coroutines_of_two_runtimes() {
    let (tx, rx) = mpsc::channel::<u64>();
    let sender = std::thread::spawn(move || {
        run(1, LIMIT, move || {
            for i in 1..=100 {
                if i % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
                tx.send(i).unwrap();
            }
        })
    });
    let (sum, ticks) = run(1, LIMIT, move || {
        with_ticker(move || rx.iter().sum::<u64>())
    });
    sender.join().unwrap();
    assert_eq!(sum, 5050);
    assert!(
        ticks >= 10,
        "the ticker ticked {ticks} times while receiving"
    );
}

#[test]
fn os_thread_unparks_a_parked_coroutine() {
    let ((), ticks) = run(1, LIMIT, || {
        with_ticker(|| {
            let me = std::thread::current();
            let go = Arc::new(AtomicBool::new(false));
            let unparker = {
                let go = go.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(100));
                    go.store(true, Ordering::SeqCst);
                    me.unpark();
                })
            };
            while !go.load(Ordering::SeqCst) {
                std::thread::park();
            }
            unparker.join().unwrap();
        })
    });
    assert!(ticks >= 20, "the ticker ticked {ticks} times while parked");
}
