//! `std::sync::mpsc` and `thread::park` between coroutines of ONE worker.
//!
//! std's channels record a waiting receiver (or rendezvous sender) by its
//! thread and wake it through that thread's parker; with shared identity
//! two coroutines of one worker were one thread to std, so a wake-up meant
//! for one could be consumed by the other, or a sender could see "its own"
//! thread waiting and skip the wake: ping-pong hung. Each test here runs
//! under a watchdog, so a lost wake-up fails instead of hanging.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::identity::joined;
use support::*;

/// Ping-pong rounds.
const ROUNDS: u64 = 10_000;

/// The watchdog's limit for the ping-pong and wake-all tests: they take
/// well under a second when wake-ups work.
const LIMIT: Duration = Duration::from_secs(20);

/// The two ends of a one-way channel, whatever its kind.
trait Channel: Send + 'static {
    type Tx: Clone + Send + 'static;
    fn pair() -> (Self::Tx, Receiver<u64>);
    fn send(tx: &Self::Tx, value: u64);
}

struct Unbounded;
impl Channel for Unbounded {
    type Tx = mpsc::Sender<u64>;
    fn pair() -> (Self::Tx, Receiver<u64>) {
        mpsc::channel()
    }
    fn send(tx: &Self::Tx, value: u64) {
        tx.send(value).unwrap();
    }
}

struct Rendezvous;
impl Channel for Rendezvous {
    type Tx = mpsc::SyncSender<u64>;
    fn pair() -> (Self::Tx, Receiver<u64>) {
        mpsc::sync_channel(0)
    }
    fn send(tx: &Self::Tx, value: u64) {
        tx.send(value).unwrap();
    }
}

struct Bounded4;
impl Channel for Bounded4 {
    type Tx = mpsc::SyncSender<u64>;
    fn pair() -> (Self::Tx, Receiver<u64>) {
        mpsc::sync_channel(4)
    }
    fn send(tx: &Self::Tx, value: u64) {
        tx.send(value).unwrap();
    }
}

/// Plays [`ROUNDS`] rounds of ping-pong between two coroutines of one
/// worker over two channels of kind `C`, each side holding a clone of its
/// own sender too (so no channel ever disconnects: every wait must end by
/// a wake-up). Returns how long the rounds took.
fn ping_pong<C: Channel>() -> Duration {
    run(1, LIMIT, || {
        let (to_pong, pong_rx) = C::pair();
        let (to_ping, ping_rx) = C::pair();
        let keep_pong = to_pong.clone();
        let keep_ping = to_ping.clone();
        let start = Instant::now();
        let pong = coroutines::spawn(move || {
            let _keep = keep_ping;
            for round in 0..ROUNDS {
                let value = pong_rx.recv().unwrap();
                assert_eq!(value, round * 2, "pong's round {round}");
                C::send(&to_ping, value + 1);
            }
        });
        let ping = coroutines::spawn(move || {
            let _keep = keep_pong;
            for round in 0..ROUNDS {
                C::send(&to_pong, round * 2);
                let value = ping_rx.recv().unwrap();
                assert_eq!(value, round * 2 + 1, "ping's round {round}");
            }
        });
        joined(ping);
        joined(pong);
        start.elapsed()
    })
}

#[test]
fn ping_pong_over_unbounded_channels_on_one_worker() {
    let elapsed = ping_pong::<Unbounded>();
    assert!(
        elapsed < Duration::from_secs(10),
        "{ROUNDS} rounds took {elapsed:?}"
    );
}

#[test]
fn ping_pong_over_rendezvous_channels_on_one_worker() {
    let elapsed = ping_pong::<Rendezvous>();
    assert!(
        elapsed < Duration::from_secs(10),
        "{ROUNDS} rounds took {elapsed:?}"
    );
}

#[test]
fn ping_pong_over_bounded_channels_on_one_worker() {
    let elapsed = ping_pong::<Bounded4>();
    assert!(
        elapsed < Duration::from_secs(10),
        "{ROUNDS} rounds took {elapsed:?}"
    );
}

#[test]
fn a_full_bounded_channel_parks_its_sender_until_the_receiver_drains_it() {
    run(1, LIMIT, || {
        let ticker = Ticker::start();
        let (tx, rx) = mpsc::sync_channel::<u64>(4);
        let keep = tx.clone();
        let sender = coroutines::spawn(move || {
            let start = Instant::now();
            for i in 0..100 {
                tx.send(i).unwrap();
            }
            start.elapsed()
        });
        // The sender fills the buffer and parks; the receiver starts late.
        thread::sleep(WAIT);
        let received: Vec<u64> = (0..100).map(|_| rx.recv().unwrap()).collect();
        let (elapsed, _, _) = ticker.during(|| joined(sender));
        drop(keep);
        assert_eq!(received, (0..100).collect::<Vec<_>>());
        let gap = ticker.take_max_gap();
        assert!(
            gap < WAIT / 2,
            "the ticker was held up {gap:?} (sender took {elapsed:?})"
        );
    });
}

#[test]
fn many_senders_and_one_receiver_on_one_worker() {
    const SENDERS: u64 = 50;
    const EACH: u64 = 200;
    let sum = run(1, LIMIT, || {
        let (tx, rx) = mpsc::sync_channel::<u64>(1);
        let senders: Vec<_> = (0..SENDERS)
            .map(|s| {
                let tx = tx.clone();
                coroutines::spawn(move || {
                    for i in 0..EACH {
                        tx.send(s * EACH + i).unwrap();
                        if i % 7 == 0 {
                            coroutines::yield_now();
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let sum: u64 = rx.iter().sum();
        for sender in senders {
            joined(sender);
        }
        sum
    });
    let n = SENDERS * EACH;
    assert_eq!(sum, n * (n - 1) / 2);
}

// ---------------------------------------------------------------------------
// Many parked receivers

/// Receivers parked at once.
const PARKED: usize = 20_000;

/// Held by each test that parks [`PARKED`] coroutines: two such tests at
/// once would map 80,000 stacks and guard pages, more than the default
/// `vm.max_map_count` (65,530) allows on kernels before 6.13.
static MANY_STACKS: Mutex<()> = Mutex::new(());

/// Spawns [`PARKED`] coroutines on the caller's worker, each waiting on
/// its own channel; returns the senders, the join handles, and a counter
/// of coroutines that reached their `recv`.
fn park_receivers() -> (
    Vec<mpsc::Sender<usize>>,
    Vec<coroutines::JoinHandle<usize>>,
    Arc<AtomicUsize>,
) {
    let waiting = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::with_capacity(PARKED);
    let mut handles = Vec::with_capacity(PARKED);
    for i in 0..PARKED {
        let (tx, rx) = mpsc::channel::<usize>();
        let waiting = waiting.clone();
        senders.push(tx);
        handles.push(coroutines::spawn(move || {
            waiting.fetch_add(1, Ordering::SeqCst);
            let value = rx.recv().unwrap();
            assert_eq!(value, i * 3, "receiver {i} got another's message");
            value
        }));
    }
    (senders, handles, waiting)
}

/// Joins every receiver and checks what each got.
fn join_receivers(handles: Vec<coroutines::JoinHandle<usize>>) {
    for (i, handle) in handles.into_iter().enumerate() {
        assert_eq!(joined(handle), i * 3);
    }
}

#[test]
fn twenty_thousand_parked_receivers_woken_by_a_coroutine() {
    let _alone = MANY_STACKS.lock().unwrap_or_else(|e| e.into_inner());
    let elapsed = run(1, LIMIT, || {
        let start = Instant::now();
        let (senders, handles, waiting) = park_receivers();
        let sender = coroutines::spawn(move || {
            yield_until(|| waiting.load(Ordering::SeqCst) == PARKED);
            // Let the last ones get into their waits.
            coroutines::yield_now();
            for (i, tx) in senders.iter().enumerate() {
                tx.send(i * 3).unwrap();
            }
            // The senders stay alive: each receiver must be woken by its
            // message, not by a disconnect.
            senders
        });
        join_receivers(handles);
        drop(joined(sender));
        start.elapsed()
    });
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
}

#[test]
fn twenty_thousand_parked_receivers_woken_by_a_plain_thread() {
    let _alone = MANY_STACKS.lock().unwrap_or_else(|e| e.into_inner());
    let elapsed = run(1, LIMIT, || {
        let start = Instant::now();
        let (senders, handles, waiting) = park_receivers();
        let sender = thread::spawn(move || {
            while waiting.load(Ordering::SeqCst) != PARKED {
                thread::sleep(Duration::from_millis(1));
            }
            thread::sleep(Duration::from_millis(10));
            for (i, tx) in senders.iter().enumerate() {
                tx.send(i * 3).unwrap();
            }
            senders
        });
        join_receivers(handles);
        drop(sender.join().unwrap());
        start.elapsed()
    });
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
}

// ---------------------------------------------------------------------------
// Timed waits overlap

/// Coroutines waiting at once.
const WAITERS: usize = 100;

/// Each waiter's timeout.
const TIMEOUT: Duration = Duration::from_millis(200);

/// A one-shot slot filled by a background thread, waited for as
/// `reqwest::blocking` waits for its runtime thread: check, then
/// `park_timeout` for what is left of the deadline, in a loop.
struct Slot {
    value: Mutex<Option<u32>>,
    waiter: thread::Thread,
}

impl Slot {
    fn wait(&self, deadline: Instant) -> Option<u32> {
        loop {
            if let Some(value) = *self.value.lock().unwrap() {
                return Some(value);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            thread::park_timeout(deadline - now);
        }
    }

    fn fill(&self, value: u32) {
        *self.value.lock().unwrap() = Some(value);
        self.waiter.unpark();
    }
}

#[test]
fn a_hundred_park_timeouts_that_expire_overlap() {
    let (elapsed, timeouts) = run(1, LIMIT, || {
        let ticker = Ticker::start();
        let start = Instant::now();
        let handles: Vec<_> = (0..WAITERS)
            .map(|_| {
                coroutines::spawn(|| {
                    let slot = Slot {
                        value: Mutex::new(None),
                        waiter: thread::current(),
                    };
                    let waited = Instant::now();
                    let got = slot.wait(Instant::now() + TIMEOUT);
                    (got, waited.elapsed())
                })
            })
            .collect();
        let timeouts: Vec<_> = handles.into_iter().map(joined).collect();
        let elapsed = start.elapsed();
        assert!(
            ticker.take_max_gap() < TIMEOUT / 2,
            "the worker was blocked"
        );
        (elapsed, timeouts)
    });
    for (got, waited) in timeouts {
        assert_eq!(got, None);
        assert_about("a waiter's park_timeout", waited, TIMEOUT);
    }
    assert!(
        elapsed < TIMEOUT * 3,
        "{WAITERS} overlapping {TIMEOUT:?} waits took {elapsed:?}"
    );
}

#[test]
fn a_hundred_park_timeouts_answered_by_a_thread_overlap() {
    const ANSWER_AFTER: Duration = Duration::from_millis(100);
    let (elapsed, answers) = run(1, LIMIT, || {
        let start = Instant::now();
        let (register, slots) = mpsc::channel::<(u32, Arc<Slot>)>();
        // The "runtime thread": answers every request once, after a delay.
        let answerer = thread::spawn(move || {
            let mut pending = Vec::new();
            while pending.len() < WAITERS {
                pending.push(slots.recv().unwrap());
            }
            thread::sleep(ANSWER_AFTER);
            for (i, slot) in pending {
                slot.fill(i * 10);
            }
        });
        let handles: Vec<_> = (0..WAITERS as u32)
            .map(|i| {
                let register = register.clone();
                coroutines::spawn(move || {
                    let slot = Arc::new(Slot {
                        value: Mutex::new(None),
                        waiter: thread::current(),
                    });
                    register.send((i, slot.clone())).unwrap();
                    slot.wait(Instant::now() + Duration::from_secs(5))
                })
            })
            .collect();
        let answers: Vec<_> = handles.into_iter().map(joined).collect();
        answerer.join().unwrap();
        (start.elapsed(), answers)
    });
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer, Some(i as u32 * 10), "waiter {i}");
    }
    assert!(
        elapsed < ANSWER_AFTER * 4,
        "{WAITERS} waits answered after {ANSWER_AFTER:?} took {elapsed:?}"
    );
}

#[test]
fn a_hundred_recv_timeouts_overlap() {
    let (elapsed, results) = run(1, LIMIT, || {
        let start = Instant::now();
        let mut keep = Vec::new();
        let handles: Vec<_> = (0..WAITERS)
            .map(|_| {
                let (tx, rx) = mpsc::channel::<()>();
                keep.push(tx);
                coroutines::spawn(move || {
                    let waited = Instant::now();
                    (rx.recv_timeout(TIMEOUT), waited.elapsed())
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(joined).collect();
        (start.elapsed(), results)
    });
    for (result, waited) in results {
        assert_eq!(result, Err(RecvTimeoutError::Timeout));
        assert_about("recv_timeout", waited, TIMEOUT);
    }
    assert!(
        elapsed < TIMEOUT * 3,
        "{WAITERS} overlapping {TIMEOUT:?} recv_timeouts took {elapsed:?}"
    );
}
