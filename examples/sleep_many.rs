//! 10,000 coroutines on ONE worker each call `std::thread::sleep(200 ms)`:
//! the hook parks them in the reactor, so all finish in about 200 ms.
//!
//! Run with `cargo run --release --example sleep_many`.

use std::time::{Duration, Instant};

#[coroutines::main(workers = 1)]
fn main() {
    let start = Instant::now();
    let handles: Vec<_> = (0..10_000)
        .map(|_| coroutines::spawn(|| std::thread::sleep(Duration::from_millis(200))))
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    println!(
        "10000 coroutines slept 200 ms each on 1 worker: done in {:?}",
        start.elapsed()
    );
}
