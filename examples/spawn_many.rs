//! Spawns 100,000 coroutines that each double their index, then joins them
//! all: the program from the runtime-core issue.
//!
//! Run with `cargo run --release --example spawn_many`; set
//! `COROUTINES_WORKERS=1` to see it on one worker.

#[coroutines::main]
fn main() {
    let start = std::time::Instant::now();
    let handles: Vec<_> = (0..100_000u64)
        .map(|i| coroutines::spawn(move || i * 2))
        .collect();
    let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let stats = coroutines::stats();
    println!("{sum}");
    eprintln!(
        "100000 spawns + joins on {} workers in {:?} ({} context switches)",
        stats.workers,
        start.elapsed(),
        stats.context_switches
    );
}
