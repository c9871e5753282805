//! `std::thread::JoinHandle::join` from a coroutine parks the coroutine, not
//! the worker. Without the `pthread_join` hook the joining coroutine blocks
//! its worker and nothing else runs until the thread ends.

mod support;

use std::time::{Duration, Instant};

use support::{run, Pace, Ticker, LIMIT};

#[test]
fn coroutine_joins_a_sleeping_thread_while_a_ticker_ticks() {
    let (value, elapsed, ticks) = run(1, LIMIT, || {
        let ticker = Ticker::with_pace(Pace::Sleep(Duration::from_millis(5)));
        let start = Instant::now();
        let thread = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(200));
            7
        });
        let (value, _, during) = ticker.during(|| thread.join().unwrap());
        (value, start.elapsed(), during)
    });
    assert_eq!(value, 7);
    assert!(
        elapsed >= Duration::from_millis(200),
        "joined after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(700),
        "joined after {elapsed:?}"
    );
    assert!(
        ticks >= 10,
        "the ticker ticked {ticks} times during the join"
    );
}

#[test]
fn join_reports_the_threads_panic() {
    let outcome = run(1, LIMIT, || {
        let thread = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            panic!("the thread failed");
        });
        thread
            .join()
            .map_err(|payload| *payload.downcast::<&str>().unwrap())
    });
    assert_eq!(outcome, Err("the thread failed"));
}

#[test]
fn join_of_a_finished_thread_returns_at_once() {
    let value = run(1, LIMIT, || {
        let thread = std::thread::spawn(|| 11);
        while !thread.is_finished() {
            coroutines::yield_now();
        }
        thread.join().unwrap()
    });
    assert_eq!(value, 11);
}

#[test]
fn twenty_coroutines_each_join_a_thread_on_one_worker() {
    let values = run(1, LIMIT, || {
        let handles: Vec<_> = (0..20u64)
            .map(|i| {
                coroutines::spawn(move || {
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(100));
                        i
                    })
                    .join()
                    .unwrap()
                })
            })
            .collect();
        let start = Instant::now();
        let values: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        // Joined concurrently, not one after the other.
        assert!(start.elapsed() < Duration::from_millis(1500));
        values
    });
    assert_eq!(values, (0..20).collect::<Vec<_>>());
}

#[test]
fn join_outside_coroutines_is_unchanged() {
    let thread = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(20));
        "plain"
    });
    assert_eq!(thread.join().unwrap(), "plain");
}

#[test]
fn scoped_threads_in_a_coroutine_let_the_worker_run() {
    let (sum, ticks) = run(1, LIMIT, || {
        let ticker = Ticker::with_pace(Pace::Sleep(Duration::from_millis(5)));
        let data = [1u64, 2, 3, 4];
        // The scope waits for its threads by parking (a futex) and then
        // joins them: both park the coroutine.
        let (sum, _, during) = ticker.during(|| {
            std::thread::scope(|scope| {
                let handles: Vec<_> = data
                    .iter()
                    .map(|&x| {
                        scope.spawn(move || {
                            std::thread::sleep(Duration::from_millis(100));
                            x * 10
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
            })
        });
        (sum, during)
    });
    assert_eq!(sum, 100);
    assert!(
        ticks >= 5,
        "the ticker ticked {ticks} times during the scope"
    );
}
