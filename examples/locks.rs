//! Coroutines contending on std's `Mutex` and `Condvar` on ONE worker
//! thread.
//!
//! A bounded queue guarded by a `Mutex`, with `Condvar`s for "not empty" and
//! "not full", shared by producer and consumer coroutines; a `Mutex` held
//! across a yield, so that others find it locked. Each blocked `lock` or
//! `wait` parks its coroutine (the futex hook), and the worker runs the
//! others meanwhile; without the hook the first one to block would stop the
//! worker for good.
//!
//! Run with `cargo run --release --example locks`.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

const PRODUCERS: usize = 4;
const CONSUMERS: usize = 4;
const ITEMS_PER_PRODUCER: u64 = 25_000;
const CAPACITY: usize = 8;

/// A bounded multi-producer, multi-consumer queue on std's primitives.
struct Bounded {
    items: Mutex<VecDeque<Option<u64>>>,
    not_empty: Condvar,
    not_full: Condvar,
}

impl Bounded {
    fn push(&self, item: Option<u64>) {
        let mut items = self
            .not_full
            .wait_while(self.items.lock().unwrap(), |items| items.len() == CAPACITY)
            .unwrap();
        items.push_back(item);
        self.not_empty.notify_one();
    }

    fn pop(&self) -> Option<u64> {
        let mut items = self
            .not_empty
            .wait_while(self.items.lock().unwrap(), |items| items.is_empty())
            .unwrap();
        let item = items.pop_front().expect("not empty");
        self.not_full.notify_one();
        item
    }
}

#[coroutines::main(workers = 1)]
fn main() {
    let start = Instant::now();
    let queue = Arc::new(Bounded {
        items: Mutex::new(VecDeque::new()),
        not_empty: Condvar::new(),
        not_full: Condvar::new(),
    });
    // Locked across a yield by everyone: the others find it held and park.
    let hot = Arc::new(Mutex::new(0u64));

    let producers: Vec<_> = (0..PRODUCERS as u64)
        .map(|p| {
            let (queue, hot) = (queue.clone(), hot.clone());
            coroutines::spawn(move || {
                for i in 0..ITEMS_PER_PRODUCER {
                    queue.push(Some(p * ITEMS_PER_PRODUCER + i));
                    if i % 1_000 == 0 {
                        let mut hot = hot.lock().unwrap();
                        coroutines::yield_now();
                        *hot += 1;
                    }
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let queue = queue.clone();
            coroutines::spawn(move || {
                let (mut count, mut sum) = (0u64, 0u64);
                while let Some(item) = queue.pop() {
                    count += 1;
                    sum += item;
                    // "Processing" the item gives the worker to the
                    // others; without it, on one worker, the first consumer
                    // would find the queue refilled every time and take
                    // nearly everything.
                    coroutines::yield_now();
                }
                (count, sum)
            })
        })
        .collect();

    for producer in producers {
        producer.join().unwrap();
    }
    // One end-of-stream marker per consumer.
    for _ in 0..CONSUMERS {
        queue.push(None);
    }
    let mut total = (0, 0);
    for (i, consumer) in consumers.into_iter().enumerate() {
        let (count, sum) = consumer.join().unwrap();
        println!("consumer {i} took {count} items");
        total = (total.0 + count, total.1 + sum);
    }

    let items = PRODUCERS as u64 * ITEMS_PER_PRODUCER;
    assert_eq!(total, (items, items * (items - 1) / 2));
    let stats = coroutines::stats();
    println!(
        "{} producers and {} consumers moved {} items through a {}-slot queue \
         on {} worker thread in {:?}",
        PRODUCERS,
        CONSUMERS,
        items,
        CAPACITY,
        stats.workers,
        start.elapsed()
    );
    println!(
        "the hot mutex was taken {} times across a yield; {} context switches in all",
        *hot.lock().unwrap(),
        stats.context_switches
    );
}
