//! std `Mutex` and `Condvar` among coroutines vs among OS threads, side by
//! side in one run.
//!
//! - uncontended: one task locks and unlocks a `Mutex` (no futex call at
//!   all: the hook's cost here must be nil);
//! - contended: 4 tasks increment one counter under a `Mutex` (coroutines
//!   on 2 workers vs 4 threads on the machine's cores);
//! - hand-off: 4 tasks each hold the `Mutex` across a yield, so every lock
//!   finds it held and waits (coroutines on 1 worker park in the futex
//!   table; threads sleep in the kernel);
//! - ping-pong: two tasks alternate turns through a `Mutex` + `Condvar`
//!   (coroutines on 1 worker vs 2 threads); the figure is one hop.
//!
//! Each figure is the median and range, in nanoseconds per operation, over
//! rounds that alternate between the two sides.
//!
//! Run with `cargo bench --bench locks`.

use std::hint::black_box;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const ROUNDS: usize = 11;
const UNCONTENDED_OPS: u64 = 2_000_000;
const TASKS: u64 = 4;
const CONTENDED_OPS_PER_TASK: u64 = 100_000;
const HANDOFF_OPS_PER_TASK: u64 = 5_000;
const PING_PONG_ROUNDS: u64 = 10_000;

/// How to run `tasks` copies of a body concurrently: as coroutines of a
/// runtime or as OS threads.
enum Side<'a> {
    Coroutines(&'a coroutines::Runtime),
    Threads,
}

impl Side<'_> {
    /// Runs `tasks` copies of `body(i)` to completion; returns the elapsed
    /// time from the first start to the last end.
    fn run(&self, tasks: u64, body: impl Fn(u64) + Send + Sync + Clone + 'static) -> Duration {
        match self {
            Side::Coroutines(runtime) => runtime.block_on(move || {
                let start = Instant::now();
                let handles: Vec<_> = (0..tasks)
                    .map(|i| {
                        let body = body.clone();
                        coroutines::spawn(move || body(i))
                    })
                    .collect();
                handles.into_iter().for_each(|h| h.join().unwrap());
                start.elapsed()
            }),
            Side::Threads => {
                let start = Instant::now();
                let handles: Vec<_> = (0..tasks)
                    .map(|i| {
                        let body = body.clone();
                        std::thread::spawn(move || body(i))
                    })
                    .collect();
                handles.into_iter().for_each(|h| h.join().unwrap());
                start.elapsed()
            }
        }
    }

    fn yield_now(coroutine: bool) {
        if coroutine {
            coroutines::yield_now();
        } else {
            std::thread::yield_now();
        }
    }
}

fn uncontended(side: &Side) -> f64 {
    let lock = Arc::new(Mutex::new(0u64));
    side.run(1, move |_| {
        for _ in 0..UNCONTENDED_OPS {
            *black_box(&lock).lock().unwrap() += 1;
        }
    })
    .as_secs_f64()
        * 1e9
        / UNCONTENDED_OPS as f64
}

fn contended(side: &Side) -> f64 {
    let lock = Arc::new(Mutex::new(0u64));
    side.run(TASKS, move |_| {
        for _ in 0..CONTENDED_OPS_PER_TASK {
            *lock.lock().unwrap() += 1;
        }
    })
    .as_secs_f64()
        * 1e9
        / (TASKS * CONTENDED_OPS_PER_TASK) as f64
}

fn handoff(side: &Side) -> f64 {
    let lock = Arc::new(Mutex::new(0u64));
    let coroutine = matches!(side, Side::Coroutines(_));
    side.run(TASKS, move |_| {
        for _ in 0..HANDOFF_OPS_PER_TASK {
            let mut guard = lock.lock().unwrap();
            Side::yield_now(coroutine);
            *guard += 1;
        }
    })
    .as_secs_f64()
        * 1e9
        / (TASKS * HANDOFF_OPS_PER_TASK) as f64
}

fn ping_pong(side: &Side) -> f64 {
    let state = Arc::new((Mutex::new(0u64), Condvar::new()));
    side.run(2, move |me| {
        let (turn, changed) = &*state;
        for _ in 0..PING_PONG_ROUNDS {
            let mut turn = changed
                .wait_while(turn.lock().unwrap(), |turn| *turn % 2 != me)
                .unwrap();
            *turn += 1;
            changed.notify_one();
        }
    })
    .as_secs_f64()
        * 1e9
        / (2 * PING_PONG_ROUNDS) as f64
}

/// Median [minimum-maximum] of nanosecond figures.
fn summary(mut samples: Vec<f64>) -> String {
    samples.sort_by(f64::total_cmp);
    let (median, min, max) = (
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
    );
    format!("{median:>9.1} [{min:.1}-{max:.1}]")
}

fn main() {
    let one = coroutines::Runtime::builder().workers(1).build().unwrap();
    let two = coroutines::Runtime::builder().workers(2).build().unwrap();
    type Bench = fn(&Side) -> f64;
    let benches: [(&str, Bench, &coroutines::Runtime, &str); 4] = [
        (
            "uncontended lock+unlock",
            uncontended,
            &one,
            "1 worker / 1 thread",
        ),
        (
            "contended lock+unlock",
            contended,
            &two,
            "4 on 2 workers / 4 threads",
        ),
        (
            "hand-off across a yield",
            handoff,
            &one,
            "4 on 1 worker / 4 threads",
        ),
        (
            "condvar ping-pong hop",
            ping_pong,
            &one,
            "2 on 1 worker / 2 threads",
        ),
    ];
    println!(
        "ns per operation, median [min-max] of {ROUNDS} rounds, on {} CPUs",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<26} {:<28} {:>26} {:>26}",
        "benchmark", "setup", "coroutines", "threads"
    );
    for (name, bench, runtime, setup) in benches {
        let coroutines_side = Side::Coroutines(runtime);
        // Warm up both sides (stacks, thread caches) before measuring.
        bench(&coroutines_side);
        bench(&Side::Threads);
        let (mut on_coroutines, mut on_threads) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            on_coroutines.push(bench(&coroutines_side));
            on_threads.push(bench(&Side::Threads));
        }
        println!(
            "{name:<26} {setup:<28} {:>26} {:>26}",
            summary(on_coroutines),
            summary(on_threads)
        );
    }
}
