//! A stack overflow in a coroutine that has its own thread identity. The
//! fault arrives while the thread pointer is the coroutine's; the
//! `generator` crate's handler, which reads the worker's thread-locals,
//! must run on the worker's identity and leave through the worker, after
//! which the worker carries on with ITS thread pointer. The overflowing
//! coroutine fails alone: its join handle gets an error naming it and its
//! stack size, its thread-locals are dropped once, and the other
//! coroutines of the worker keep their own identities.

mod support;

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use coroutines::Runtime;
use support::identity::{joined, on_runtime};
use support::*;

/// The message in a join error's payload.
#[track_caller]
fn message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => match payload.downcast::<&str>() {
            Ok(message) => (*message).to_owned(),
            Err(_) => panic!("the payload is not a message"),
        },
    }
}

fn with_identity(workers: usize) -> coroutines::runtime::Builder {
    Runtime::builder().workers(workers).thread_identity(true)
}

#[test]
fn an_overflow_is_reported_by_name_and_stack_size() {
    let (named, unnamed, id) = on_runtime(with_identity(1), WATCHDOG, |runtime| {
        runtime.block_on(|| {
            let named = coroutines::Builder::new()
                .name("deep".into())
                .stack_size(64 * 1024)
                .spawn(|| recurse_deeply(1_000_000))
                .unwrap()
                .join()
                .unwrap_err();
            let unnamed = coroutines::Builder::new()
                .stack_size(128 * 1024)
                .spawn(|| recurse_deeply(1_000_000))
                .unwrap();
            let id = unnamed.coroutine().id().as_u64();
            (message(named), message(unnamed.join().unwrap_err()), id)
        })
    });
    assert!(
        named.contains("coroutine 'deep' (") && named.contains(") overflowed its 64 KiB stack"),
        "{named}"
    );
    assert!(
        unnamed.contains(&format!(
            "coroutine '<unnamed>' ({id}) overflowed its 128 KiB stack"
        )),
        "{unnamed}"
    );
}

/// Drops of [`Owned`] thread-locals, per owner.
static OWNED_DROPS: [AtomicUsize; 3] = [const { AtomicUsize::new(0) }; 3];

struct Owned(Cell<Option<usize>>);

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(owner) = self.0.get() {
            OWNED_DROPS[owner].fetch_add(1, Ordering::SeqCst);
        }
    }
}

thread_local! {
    static OWNED: Owned = const { Owned(Cell::new(None)) };
    static MARK: Cell<u32> = const { Cell::new(0) };
}

#[test]
fn the_others_keep_their_identity_and_the_overflowing_ones_locals_drop_once() {
    let (ids, bystander_id) = on_runtime(with_identity(1), WATCHDOG, |runtime| {
        runtime.block_on(|| {
            let ticker = Ticker::start();
            let me = thread::current().id();
            MARK.with(|m| m.set(7));
            set_errno(77);
            // A bystander parked across the overflows.
            let bystander = coroutines::spawn(|| {
                let me = thread::current().id();
                MARK.with(|m| m.set(9));
                set_errno(99);
                thread::sleep(Duration::from_millis(50));
                assert_eq!(MARK.with(Cell::get), 9, "the bystander's thread-local");
                assert_eq!(errno(), 99, "the bystander's errno");
                assert_eq!(thread::current().id(), me);
                me
            });
            let mut ids = Vec::new();
            for (owner, drops) in OWNED_DROPS.iter().enumerate() {
                let deep = coroutines::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        OWNED.with(|o| o.0.set(Some(owner)));
                        MARK.with(|m| m.set(100 + owner as u32));
                        recurse_deeply(1_000_000)
                    })
                    .unwrap();
                assert!(deep.join().is_err(), "overflow {owner}");
                // The overflowed coroutine's thread-local destructors ran
                // when it was retired.
                assert_eq!(
                    drops.load(Ordering::SeqCst),
                    1,
                    "overflowed coroutine {owner}'s thread-local"
                );
                assert_eq!(
                    thread::current().id(),
                    me,
                    "the root after overflow {owner}"
                );
                assert_eq!(MARK.with(Cell::get), 7, "the root's thread-local");
                assert_eq!(errno(), 77, "the root's errno");
                ids.push(coroutines::spawn(|| thread::current().id()).join().unwrap());
            }
            let bystander_id = joined(bystander);
            let gap = ticker.take_max_gap();
            assert!(
                gap < Duration::from_millis(500),
                "the ticker was held up {gap:?}"
            );
            ids.push(me);
            (ids, bystander_id)
        })
    });
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");
    assert!(!ids.contains(&bystander_id));
    for (owner, drops) in OWNED_DROPS.iter().enumerate() {
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "coroutine {owner}'s thread-local after the runtime ended"
        );
    }
}

#[test]
fn overflows_on_two_workers_at_once() {
    on_runtime(with_identity(2), WATCHDOG, |runtime| {
        let start = Instant::now();
        let handles: Vec<_> = (0..8)
            .map(|i| {
                runtime.spawn(move || {
                    let deep = coroutines::Builder::new()
                        .stack_size(64 * 1024)
                        .spawn(move || {
                            // A wait first, so that the overflows of the
                            // two workers interleave with other switches.
                            thread::sleep(Duration::from_millis(i % 3));
                            recurse_deeply(1_000_000)
                        })
                        .unwrap();
                    message(deep.join().unwrap_err())
                })
            })
            .collect();
        for handle in handles {
            let message = handle.join().unwrap();
            assert!(message.contains("overflowed its 64 KiB stack"), "{message}");
        }
        // Afterwards both workers run coroutines with their own identities.
        let ids: Vec<_> = (0..20)
            .map(|_| runtime.spawn(|| thread::current().id()))
            .map(|h| h.join().unwrap())
            .collect();
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        assert!(start.elapsed() < WATCHDOG);
    });
}
