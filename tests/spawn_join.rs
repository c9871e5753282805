//! Spawning and joining: the 100,000-coroutine program on 1 and 2
//! workers, spawning from plain threads into the process-wide runtime,
//! joining from threads and from coroutines, `is_finished`, detaching,
//! names, ids, `in_coroutine`, and stack sizes.

use std::collections::HashSet;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coroutines::{Builder, JoinHandle, Runtime};

/// The program, run as the root coroutine of a fresh runtime.
fn sum_of_doubles(workers: usize) -> u64 {
    let runtime = Runtime::builder().workers(workers).build().unwrap();
    assert_eq!(runtime.workers(), workers);
    let sum = runtime.block_on(|| {
        let hs: Vec<_> = (0..100_000u64)
            .map(|i| coroutines::spawn(move || i * 2))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    // Every one of them (and the root) ran in this runtime and finishes; a
    // result is delivered just before the worker retires the coroutine, so
    // `alive` may lag the last join by a moment.
    assert_eq!(runtime.stats().spawned, 100_001);
    wait_until("no coroutine is alive", || runtime.stats().alive == 0);
    sum
}

#[test]
fn hundred_thousand_spawns_on_one_worker() {
    assert_eq!(sum_of_doubles(1), 9_999_900_000);
}

#[test]
fn hundred_thousand_spawns_on_two_workers() {
    assert_eq!(sum_of_doubles(2), 9_999_900_000);
}

/// Waits for `cond`, failing the test after a generous deadline.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn spawn_from_plain_thread_without_attribute_uses_process_wide_runtime() {
    // No `#[coroutines::main]`, no runtime built: the first spawn starts the
    // process-wide one, which `stats()` outside a coroutine reports.
    let handle = coroutines::spawn(|| (coroutines::in_coroutine(), 6 * 7));
    assert_eq!(handle.join().unwrap(), (true, 42));
    let stats = coroutines::stats();
    assert!(stats.workers >= 1, "{stats:?}");
    assert!(stats.spawned >= 1, "{stats:?}");
}

#[test]
fn spawn_and_join_from_several_plain_threads() {
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let hs: Vec<_> = (0..250u64)
                    .map(|i| coroutines::spawn(move || t * 1000 + i))
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let expected: u64 = (0..4u64)
        .flat_map(|t| (0..250u64).map(move |i| t * 1000 + i))
        .sum();
    assert_eq!(total, expected);
}

#[test]
fn join_from_plain_thread_waits_for_a_coroutine_that_parks() {
    // The joined coroutine itself waits (parked on another coroutine's join)
    // while the plain thread blocks in `join`.
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let release = Arc::new(AtomicBool::new(false));
    let inner = {
        let release = release.clone();
        runtime.spawn(move || {
            while !release.load(Ordering::Acquire) {
                coroutines::yield_now();
            }
            "inner"
        })
    };
    let outer = runtime.spawn(move || format!("outer saw {}", inner.join().unwrap()));
    std::thread::sleep(Duration::from_millis(20));
    assert!(!outer.is_finished());
    release.store(true, Ordering::Release);
    assert_eq!(outer.join().unwrap(), "outer saw inner");
}

#[test]
fn join_from_coroutine_parks_instead_of_blocking_the_worker() {
    // On one worker, a coroutine joining one that has not run yet must park:
    // if `join` blocked the worker thread, the joined coroutine could never
    // run and this would hang.
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let value = runtime.block_on(|| {
        let child = coroutines::spawn(|| {
            coroutines::yield_now();
            coroutines::yield_now();
            21
        });
        let grandchild_sum = coroutines::spawn(|| {
            let a = coroutines::spawn(|| 1);
            let b = coroutines::spawn(|| 2);
            a.join().unwrap() + b.join().unwrap()
        });
        child.join().unwrap() * 2 + grandchild_sum.join().unwrap() - 3
    });
    assert_eq!(value, 42);
}

#[test]
fn is_finished_turns_true_only_when_the_coroutine_ends() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let release = Arc::new(AtomicBool::new(false));
    let handle = {
        let release = release.clone();
        runtime.spawn(move || {
            while !release.load(Ordering::Acquire) {
                coroutines::yield_now();
            }
            5
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    assert!(!handle.is_finished());
    release.store(true, Ordering::Release);
    wait_until("the coroutine has finished", || handle.is_finished());
    assert_eq!(handle.join().unwrap(), 5);
}

#[test]
fn dropping_the_handle_detaches_but_the_coroutine_still_runs() {
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..100 {
        let ran = ran.clone();
        let handle = runtime.spawn(move || {
            coroutines::yield_now();
            ran.fetch_add(1, Ordering::SeqCst);
        });
        drop(handle);
    }
    // Detached from inside a coroutine too.
    {
        let ran = ran.clone();
        runtime.block_on(move || {
            drop(coroutines::spawn(move || {
                ran.fetch_add(1, Ordering::SeqCst);
            }));
        });
    }
    wait_until("every detached coroutine has run", || {
        ran.load(Ordering::SeqCst) == 101
    });
    wait_until("no coroutine is alive", || runtime.stats().alive == 0);
}

#[test]
fn builder_name_is_visible_inside_and_on_the_handle() {
    let handle = Builder::new()
        .name("alice".into())
        .spawn(|| coroutines::current().name().map(str::to_owned))
        .unwrap();
    assert_eq!(handle.coroutine().name(), Some("alice"));
    assert_eq!(handle.join().unwrap().as_deref(), Some("alice"));

    let unnamed = coroutines::spawn(|| coroutines::current().name().is_none());
    assert_eq!(unnamed.coroutine().name(), None);
    assert!(unnamed.join().unwrap());
}

#[test]
fn ids_are_unique_and_match_the_handle() {
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let pairs = runtime.block_on(|| {
        let hs: Vec<JoinHandle<_>> = (0..1000)
            .map(|_| coroutines::spawn(|| coroutines::current().id()))
            .collect();
        hs.into_iter()
            .map(|h| {
                let from_handle = h.coroutine().id();
                (from_handle, h.join().unwrap())
            })
            .collect::<Vec<_>>()
    });
    // Ids from another runtime never collide with these either.
    let other = coroutines::spawn(|| coroutines::current().id())
        .join()
        .unwrap();
    let mut seen = HashSet::new();
    for (from_handle, from_inside) in &pairs {
        assert_eq!(from_handle, from_inside);
        assert!(seen.insert(*from_inside), "duplicate id {from_inside:?}");
    }
    assert!(seen.insert(other), "duplicate id {other:?}");
    assert_eq!(seen.len(), 1001);
}

#[test]
fn current_outside_a_coroutine() {
    assert!(coroutines::try_current().is_none());
    let result = std::panic::catch_unwind(coroutines::current);
    assert!(result.is_err(), "current() outside a coroutine must panic");
}

#[test]
fn in_coroutine_is_true_only_inside() {
    assert!(!coroutines::in_coroutine());
    assert!(coroutines::spawn(coroutines::in_coroutine).join().unwrap());
    let runtime = Runtime::builder().workers(1).build().unwrap();
    assert!(runtime.block_on(coroutines::in_coroutine));
    // Worker threads are not coroutines: the flag follows the coroutine, not
    // the thread, so it is still false here afterwards.
    assert!(!coroutines::in_coroutine());
}

#[test]
fn one_mib_stack_holds_a_512_kib_array() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let result = runtime.block_on(|| {
        Builder::new()
            .stack_size(1024 * 1024)
            .spawn(|| {
                let mut array = [0u8; 512 * 1024];
                // Touch every page so the stack really is used.
                for (i, byte) in array.iter_mut().enumerate().step_by(4096) {
                    *byte = (i / 4096) as u8;
                }
                let array = std::hint::black_box(&array);
                (
                    array.len(),
                    array.iter().map(|&b| b as usize).sum::<usize>(),
                )
            })
            .unwrap()
            .join()
    });
    let expected_sum: usize = (0..128usize).sum();
    assert_eq!(result.unwrap(), (512 * 1024, expected_sum));
}

#[test]
fn zero_stack_size_is_invalid_input() {
    let error = Builder::new().stack_size(0).spawn(|| ()).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert!(
        error.to_string().contains("stack"),
        "the message should say what is wrong: {error}"
    );
    // Also inside a coroutine, and for a runtime's default.
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let kind = runtime.block_on(|| {
        Builder::new()
            .stack_size(0)
            .spawn(|| ())
            .unwrap_err()
            .kind()
    });
    assert_eq!(kind, io::ErrorKind::InvalidInput);
    let error = Runtime::builder().stack_size(0).build().err().unwrap();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
}
