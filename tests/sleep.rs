//! Sleeping parks the coroutine: 10,000 coroutines sleeping 200 ms on one
//! worker finish in about 200 ms; `nanosleep`, `usleep`, `sleep` and
//! `clock_nanosleep` (relative and `TIMER_ABSTIME`) called through libc park
//! too; sleepers wake in deadline order; and outside a coroutine the calls
//! still sleep the right time.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

#[test]
fn ten_thousand_sleepers_on_one_worker() {
    on_one_worker("10,000 sleepers", || {
        let start = Instant::now();
        let sleepers: Vec<_> = (0..10_000)
            .map(|_| coroutines::spawn(|| std::thread::sleep(Duration::from_millis(200))))
            .collect();
        for sleeper in sleepers {
            sleeper.join().unwrap();
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(200), "took {elapsed:?}");
        // A sleep that blocked the worker would take 10,000 x 200 ms; a
        // debug build on a loaded machine spends up to a second spawning.
        assert!(
            elapsed < Duration::from_secs(3),
            "10,000 coroutines sleeping 200 ms took {elapsed:?}"
        );
    });
}

/// Runs `f` (a sleep of about `expected`) with a ticker, asserting that it
/// slept about that long and parked.
#[track_caller]
fn assert_parked_sleep(what: &str, expected: Duration, f: impl FnOnce() -> i32) {
    let ticker = Ticker::start();
    let (ret, elapsed, ticks) = ticker.during(f);
    assert_eq!(ret, 0, "{what} returned {ret}");
    assert_about(what, elapsed, expected);
    let min_ticks = expected.as_millis() as u64 / 5;
    assert!(
        ticks >= min_ticks,
        "{what}: the ticker ticked {ticks} times in {elapsed:?}: the sleep blocked the worker"
    );
}

#[test]
fn libc_nanosleep_parks() {
    on_one_worker("nanosleep", || {
        assert_parked_sleep("nanosleep", WAIT, || {
            let mut rem = timespec(Duration::ZERO);
            // SAFETY: live timespecs.
            unsafe { libc::nanosleep(&timespec(WAIT), &mut rem) }
        });
    });
}

#[test]
fn libc_usleep_parks() {
    on_one_worker("usleep", || {
        assert_parked_sleep("usleep", WAIT, || {
            // SAFETY: plain call.
            unsafe { libc::usleep(WAIT.as_micros() as libc::useconds_t) }
        });
    });
}

#[test]
fn libc_sleep_parks() {
    on_one_worker("sleep", || {
        // SAFETY: plain call.
        let start = Instant::now();
        assert_eq!(unsafe { libc::sleep(0) }, 0, "sleep(0)");
        assert_prompt("sleep(0)", start.elapsed());
        assert_parked_sleep("sleep(1)", Duration::from_secs(1), || {
            // SAFETY: plain call.
            unsafe { libc::sleep(1) as i32 }
        });
    });
}

#[test]
fn libc_clock_nanosleep_relative_parks() {
    on_one_worker("clock_nanosleep", || {
        assert_parked_sleep("clock_nanosleep(MONOTONIC)", WAIT, || {
            // SAFETY: a live timespec.
            unsafe {
                libc::clock_nanosleep(
                    libc::CLOCK_MONOTONIC,
                    0,
                    &timespec(WAIT),
                    std::ptr::null_mut(),
                )
            }
        });
    });
}

/// Now on `clock`, plus `d`.
fn deadline(clock: libc::clockid_t, d: Duration) -> libc::timespec {
    let mut now = timespec(Duration::ZERO);
    // SAFETY: a live timespec.
    assert_eq!(unsafe { libc::clock_gettime(clock, &mut now) }, 0);
    let total = Duration::new(now.tv_sec as u64, now.tv_nsec as u32) + d;
    timespec(total)
}

#[test]
fn libc_clock_nanosleep_abstime_parks() {
    on_one_worker("clock_nanosleep(TIMER_ABSTIME)", || {
        for (name, clock) in [
            ("MONOTONIC", libc::CLOCK_MONOTONIC),
            ("REALTIME", libc::CLOCK_REALTIME),
        ] {
            assert_parked_sleep(
                &format!("clock_nanosleep({name}, TIMER_ABSTIME)"),
                WAIT,
                || {
                    let until = deadline(clock, WAIT);
                    // SAFETY: a live timespec.
                    unsafe {
                        libc::clock_nanosleep(
                            clock,
                            libc::TIMER_ABSTIME,
                            &until,
                            std::ptr::null_mut(),
                        )
                    }
                },
            );
        }
        // A deadline in the past returns at once.
        let past = timespec(Duration::from_secs(1));
        let start = Instant::now();
        // SAFETY: a live timespec.
        let ret = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &past,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(ret, 0);
        assert_prompt("clock_nanosleep in the past", start.elapsed());
    });
}

#[test]
fn sleepers_wake_in_deadline_order() {
    on_one_worker("order", || {
        let order = Arc::new(Mutex::new(Vec::new()));
        let sleepers: Vec<_> = [60u64, 20, 40, 0, 80]
            .into_iter()
            .map(|ms| {
                let order = order.clone();
                coroutines::spawn(move || {
                    std::thread::sleep(Duration::from_millis(ms));
                    order.lock().unwrap().push(ms);
                })
            })
            .collect();
        for sleeper in sleepers {
            sleeper.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 20, 40, 60, 80]);
    });
}

/// A named way to sleep for [`WAIT`].
type Case = (&'static str, Box<dyn Fn()>);

#[test]
fn sleeps_outside_coroutines_take_the_right_time() {
    // On a plain thread, even while a runtime runs elsewhere.
    let runtime = coroutines::Runtime::builder().workers(1).build().unwrap();
    let busy = runtime.spawn(|| std::thread::sleep(Duration::from_millis(300)));
    let cases: [Case; 4] = [
        ("thread::sleep", Box::new(|| std::thread::sleep(WAIT))),
        // SAFETY (all): live timespecs, plain calls.
        (
            "nanosleep",
            Box::new(|| unsafe {
                assert_eq!(libc::nanosleep(&timespec(WAIT), std::ptr::null_mut()), 0);
            }),
        ),
        (
            "usleep",
            Box::new(|| unsafe {
                assert_eq!(libc::usleep(WAIT.as_micros() as libc::useconds_t), 0);
            }),
        ),
        (
            "clock_nanosleep(TIMER_ABSTIME)",
            Box::new(|| unsafe {
                let until = deadline(libc::CLOCK_MONOTONIC, WAIT);
                assert_eq!(
                    libc::clock_nanosleep(
                        libc::CLOCK_MONOTONIC,
                        libc::TIMER_ABSTIME,
                        &until,
                        std::ptr::null_mut()
                    ),
                    0
                );
            }),
        ),
    ];
    for (what, sleep) in cases {
        let start = Instant::now();
        sleep();
        assert_about(what, start.elapsed(), WAIT);
    }
    busy.join().unwrap();
}
