//! std `Condvar` among coroutines on one worker. Without the futex hook the
//! first `wait` blocks the worker: the ping-pong deadlocks (caught by the
//! watchdog) and nothing else runs during a `wait_timeout`.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use support::{run, yield_until, Ticker, LIMIT};

#[test]
fn ping_pong_of_ten_thousand_rounds_between_two_coroutines() {
    const ROUNDS: u64 = 10_000;
    let turns = run(1, LIMIT, || {
        let state = Arc::new((Mutex::new(0u64), Condvar::new()));
        let players: Vec<_> = (0..2u64)
            .map(|me| {
                let state = state.clone();
                coroutines::spawn(move || {
                    let (turn, changed) = &*state;
                    for _ in 0..ROUNDS {
                        let mut turn = changed
                            .wait_while(turn.lock().unwrap(), |turn| *turn % 2 != me)
                            .unwrap();
                        *turn += 1;
                        changed.notify_one();
                    }
                })
            })
            .collect();
        for player in players {
            player.join().unwrap();
        }
        let turns = *state.0.lock().unwrap();
        turns
    });
    assert_eq!(turns, 2 * ROUNDS);
}

#[test]
fn wait_timeout_times_out_on_time_and_lets_others_run() {
    const TIMEOUT: Duration = Duration::from_millis(200);
    let (elapsed, timed_out, ticks) = run(1, LIMIT, || {
        let ticker = Ticker::start();
        let state = (Mutex::new(false), Condvar::new());
        let ((_guard, result), elapsed, ticks) = ticker.during(|| {
            state
                .1
                .wait_timeout_while(state.0.lock().unwrap(), TIMEOUT, |notified| !*notified)
                .unwrap()
        });
        (elapsed, result.timed_out(), ticks)
    });
    assert!(timed_out);
    assert!(elapsed >= TIMEOUT, "timed out early, after {elapsed:?}");
    assert!(
        elapsed < TIMEOUT + Duration::from_millis(300),
        "timed out late, after {elapsed:?}"
    );
    assert!(
        ticks >= 20,
        "the ticker ticked {ticks} times during the wait"
    );
}

#[test]
fn notify_all_wakes_a_hundred_waiting_coroutines() {
    const WAITERS: usize = 100;
    let woken = run(1, LIMIT, || {
        let state = Arc::new((Mutex::new((false, 0usize)), Condvar::new()));
        let waiting = Arc::new(AtomicUsize::new(0));
        let waiters: Vec<_> = (0..WAITERS)
            .map(|_| {
                let (state, waiting) = (state.clone(), waiting.clone());
                coroutines::spawn(move || {
                    let (lock, cvar) = &*state;
                    let mut guard = lock.lock().unwrap();
                    waiting.fetch_add(1, Ordering::SeqCst);
                    guard = cvar.wait_while(guard, |(go, _)| !*go).unwrap();
                    guard.1 += 1;
                })
            })
            .collect();
        yield_until(|| waiting.load(Ordering::SeqCst) == WAITERS);
        let (lock, cvar) = &*state;
        lock.lock().unwrap().0 = true;
        cvar.notify_all();
        for waiter in waiters {
            waiter.join().unwrap();
        }
        let woken = lock.lock().unwrap().1;
        woken
    });
    assert_eq!(woken, WAITERS);
}
