//! std `Barrier` and `OnceLock` with 1,000 coroutines on one worker.
//! Without the futex hook the first coroutine to wait blocks the worker: the
//! others never arrive (or the initialiser never finishes), and the
//! watchdog fails the test.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::Duration;

use support::{run, LIMIT};

const COROUTINES: usize = 1_000;

#[test]
fn barrier_of_a_thousand_coroutines() {
    let (leaders, early) = run(1, LIMIT, || {
        let barrier = Arc::new(Barrier::new(COROUTINES));
        let arrived = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..COROUTINES)
            .map(|_| {
                let (barrier, arrived) = (barrier.clone(), arrived.clone());
                coroutines::spawn(move || {
                    arrived.fetch_add(1, Ordering::SeqCst);
                    let leader = barrier.wait().is_leader();
                    // Nobody passes before everyone has arrived.
                    let early = arrived.load(Ordering::SeqCst) != COROUTINES;
                    (leader, early)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (
            results.iter().filter(|(leader, _)| *leader).count(),
            results.iter().filter(|(_, early)| *early).count(),
        )
    });
    assert_eq!(leaders, 1);
    assert_eq!(early, 0);
}

#[test]
fn once_lock_initialised_by_one_of_a_thousand_racing_coroutines() {
    let (initialisations, values) = run(1, LIMIT, || {
        let cell = Arc::new(OnceLock::new());
        let initialisations = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..COROUTINES)
            .map(|i| {
                let (cell, initialisations) = (cell.clone(), initialisations.clone());
                coroutines::spawn(move || {
                    *cell.get_or_init(|| {
                        initialisations.fetch_add(1, Ordering::SeqCst);
                        // The others reach `get_or_init` meanwhile and wait.
                        std::thread::sleep(Duration::from_millis(100));
                        i
                    })
                })
            })
            .collect();
        let values: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (initialisations.load(Ordering::SeqCst), values)
    });
    assert_eq!(initialisations, 1);
    assert!(values.iter().all(|&value| value == values[0]));
}
