//! One `Mutex`/`Condvar` shared by OS threads and coroutines on two
//! workers. Every wake must reach the right kind of waiter: a wake-up lost
//! between the futex table and the kernel hangs the test (the watchdog
//! fails it), and a double grant of the lock loses increments.

mod support;

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use support::run;

const THREADS: usize = 4;
const COROUTINES: usize = 1_000;
const TOTAL: usize = 1_000_000;
const PER_THREAD: usize = 100_000;
const PER_COROUTINE: usize = (TOTAL - THREADS * PER_THREAD) / COROUTINES;

#[derive(Default)]
struct State {
    /// Set once every participant waits: they all start together.
    go: bool,
    waiting: usize,
    count: usize,
    finished: usize,
}

/// One participant: waits for the start, increments `n` times under the
/// lock, and reports that it finished.
fn participate(shared: &(Mutex<State>, Condvar), n: usize) {
    let (lock, changed) = shared;
    let mut state = lock.lock().unwrap();
    state.waiting += 1;
    changed.notify_all();
    state = changed.wait_while(state, |state| !state.go).unwrap();
    drop(state);
    for i in 0..n {
        let mut state = lock.lock().unwrap();
        // Not atomic on purpose: two holders at once would lose counts.
        let count = state.count;
        if i % 64 == 0 {
            // Hold the lock across a yield now and then, so that waiters
            // pile up on both sides.
            drop(state);
            coroutines::yield_now();
            state = lock.lock().unwrap();
            state.count += 1;
        } else {
            state.count = count + 1;
        }
    }
    lock.lock().unwrap().finished += 1;
    changed.notify_all();
}

#[test]
fn four_threads_and_a_thousand_coroutines_count_to_a_million() {
    assert_eq!(THREADS * PER_THREAD + COROUTINES * PER_COROUTINE, TOTAL);
    let count = run(2, Duration::from_secs(120), || {
        let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let shared = shared.clone();
                std::thread::spawn(move || participate(&shared, PER_THREAD))
            })
            .collect();
        let coroutines: Vec<_> = (0..COROUTINES)
            .map(|_| {
                let shared = shared.clone();
                coroutines::spawn(move || participate(&shared, PER_COROUTINE))
            })
            .collect();
        let (lock, changed) = &*shared;
        let mut state = changed
            .wait_while(lock.lock().unwrap(), |state| {
                state.waiting < THREADS + COROUTINES
            })
            .unwrap();
        state.go = true;
        changed.notify_all();
        state = changed
            .wait_while(state, |state| state.finished < THREADS + COROUTINES)
            .unwrap();
        let count = state.count;
        drop(state);
        for thread in threads {
            thread.join().unwrap();
        }
        for coroutine in coroutines {
            coroutine.join().unwrap();
        }
        count
    });
    assert_eq!(count, TOTAL);
}

/// What the waker and the waiter of
/// `wakes_after_idle_notifications_reach_a_coroutine_as_a_thread` share:
/// one lock over the round numbers (gate, waiter ready, turn,
/// acknowledged) and three condvars.
#[derive(Default)]
struct Rounds {
    lock: Mutex<(u32, u32, u32, u32)>,
    gate: Condvar,
    turn: Condvar,
    ack: Condvar,
}

/// The waiter's side: each round, waits at the gate, says it is ready,
/// waits for its turn (parking on `turn` after the waker's idle
/// notifications on it), then acknowledges. Returns the rounds it
/// acknowledged.
fn wait_rounds(shared: &Rounds, rounds: u32) -> Vec<u32> {
    let mut acked = Vec::new();
    for round in 1..=rounds {
        let state = shared.lock.lock().unwrap();
        let mut state = shared.gate.wait_while(state, |s| s.0 < round).unwrap();
        state.1 = round;
        shared.ack.notify_one();
        let mut state = shared.turn.wait_while(state, |s| s.2 < round).unwrap();
        state.3 = round;
        acked.push(round);
        shared.ack.notify_one();
    }
    acked
}

/// A plain thread notifies a condvar that nobody waits on hundreds of
/// times (the futex hook stops fencing for an idle bucket after a while),
/// then opens the gate and hands over the turn while the waiter is on its
/// way to wait on that condvar (the waiter's park arms the bucket again).
/// A coroutine waiter must see every round, as a thread waiter does; a
/// lost wake-up hangs the test.
#[test]
fn wakes_after_idle_notifications_reach_a_coroutine_as_a_thread() {
    const ROUNDS: u32 = 400;
    const IDLE: usize = 300;
    let acked = |coroutine: bool| {
        run(2, Duration::from_secs(60), move || {
            let shared = Arc::new(Rounds::default());
            let waker = {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    for round in 1..=ROUNDS {
                        (0..IDLE).for_each(|_| shared.turn.notify_one());
                        shared.lock.lock().unwrap().0 = round;
                        shared.gate.notify_one();
                        let state = shared.lock.lock().unwrap();
                        // The waiter is in `turn.wait` once it has released
                        // the lock: parked, or about to park.
                        let mut state = shared.ack.wait_while(state, |s| s.1 < round).unwrap();
                        state.2 = round;
                        drop(state);
                        shared.turn.notify_one();
                        let state = shared.lock.lock().unwrap();
                        drop(shared.ack.wait_while(state, |s| s.3 < round).unwrap());
                    }
                })
            };
            let waiter = {
                let shared = shared.clone();
                let rounds = move || wait_rounds(&shared, ROUNDS);
                if coroutine {
                    coroutines::spawn(rounds).join().unwrap()
                } else {
                    std::thread::spawn(rounds).join().unwrap()
                }
            };
            waker.join().unwrap();
            waiter
        })
    };
    let expected: Vec<u32> = (1..=ROUNDS).collect();
    assert_eq!(acked(false), expected, "a thread waiter");
    assert_eq!(acked(true), expected, "a coroutine waiter");
}
