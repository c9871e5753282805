//! The seed's example: a plain `fn main` (no attribute) spawns five
//! coroutines that each sleep with `std::thread::sleep`, then sleeps itself.
//! The coroutines sleep concurrently, so all five finish after about one
//! second, not five.
//!
//! Run with `cargo run --release --example sleep`.

use std::thread;
use std::time::{Duration, Instant};

fn main() {
    let start = Instant::now();
    for i in 0..5 {
        coroutines::spawn(move || {
            thread::sleep(Duration::from_secs(1));
            println!("coroutine {i} woke after {:?}", start.elapsed());
        });
    }
    thread::sleep(Duration::from_millis(1500));
    println!("main done after {:?}", start.elapsed());
}
