//! What a short sleep costs in CPU: one task sleeps `SLEEPS` times in a
//! row, for 100 us and for 1 ms, as a coroutine, a plain thread, a `may`
//! coroutine and a tokio task; wall time and the process's CPU time (user +
//! system, `getrusage`) per sleep. A server between requests pays this: a
//! worker that goes to sleep and wakes up again.
//!
//! Each round runs every contender once, in an order rotated each round,
//! after one unreported warm-up round; medians over the rounds. tokio's
//! timer counts whole milliseconds, so its 100 us sleeps last a
//! millisecond: it runs the 1 ms sleeps only.
//!
//! Run with `cargo bench --bench sleep_cpu`; without `--bench` (as
//! `cargo test --benches` runs it) it makes a short smoke run.

#[path = "support/stats.rs"]
mod stats;

use std::time::{Duration, Instant};

/// One contender: its name, and how it runs `n` sleeps of `d` in one task.
struct Contender {
    name: &'static str,
    run: fn(u32, Duration),
    /// Sleeps shorter than a millisecond are not what they say.
    millisecond_timer: bool,
}

fn sleeps(n: u32, d: Duration) {
    for _ in 0..n {
        std::thread::sleep(d);
    }
}

fn on_coroutines(builder: coroutines::runtime::Builder, n: u32, d: Duration) {
    let runtime = builder.build().expect("a runtime");
    runtime.block_on(move || sleeps(n, d));
}

const CONTENDERS: &[Contender] = &[
    Contender {
        name: "std::thread",
        run: |n, d| std::thread::spawn(move || sleeps(n, d)).join().unwrap(),
        millisecond_timer: false,
    },
    Contender {
        name: "coroutines, 1 worker",
        run: |n, d| on_coroutines(coroutines::Runtime::builder().workers(1), n, d),
        millisecond_timer: false,
    },
    Contender {
        name: "coroutines, 1 worker, identity off",
        run: |n, d| {
            let builder = coroutines::Runtime::builder().workers(1);
            on_coroutines(builder.thread_identity(false), n, d)
        },
        millisecond_timer: false,
    },
    Contender {
        name: "coroutines, 2 workers",
        run: |n, d| on_coroutines(coroutines::Runtime::builder().workers(2), n, d),
        millisecond_timer: false,
    },
    Contender {
        name: "may, 2 workers",
        run: |n, d| {
            // SAFETY: the body is plain Rust; may's requirements for `go!`
            // (no thread-local misuse across yields) hold.
            let task = unsafe {
                may::coroutine::spawn(move || {
                    for _ in 0..n {
                        may::coroutine::sleep(d);
                    }
                })
            };
            task.join().unwrap();
        },
        millisecond_timer: false,
    },
    Contender {
        name: "tokio, current_thread",
        run: |n, d| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(async move {
                for _ in 0..n {
                    tokio::time::sleep(d).await;
                }
            });
        },
        millisecond_timer: true,
    },
];

/// Wall and CPU time per sleep, in us, and the share of all CPUs that
/// other processes used meanwhile.
fn measure(contender: &Contender, n: u32, d: Duration) -> (f64, f64, f64) {
    let machine = stats::Machine::now();
    let cpu = stats::cpu_ns(&stats::rusage(libc::RUSAGE_SELF));
    let start = Instant::now();
    (contender.run)(n, d);
    let wall = start.elapsed().as_nanos() as f64;
    let cpu = stats::cpu_ns(&stats::rusage(libc::RUSAGE_SELF)) - cpu;
    let (_, others) = machine.shares_since(0.0);
    (wall / n as f64 / 1e3, cpu / n as f64 / 1e3, others)
}

fn main() {
    let smoke = !std::env::args().any(|arg| arg == "--bench");
    let (rounds, n) = match smoke {
        true => (1, 50),
        false => (5, 2_000),
    };
    may::config().set_workers(2);
    println!(
        "sleep_cpu: {rounds} round(s) after a warm-up, {n} sleeps per contender and size, \
         one task; CPU is the process's (user + system)\n"
    );
    let sizes = [Duration::from_micros(100), Duration::from_millis(1)];
    for d in sizes {
        let contenders: Vec<&Contender> = CONTENDERS
            .iter()
            .filter(|c| !c.millisecond_timer || d >= Duration::from_millis(1))
            .collect();
        let mut seen = vec![Vec::new(); contenders.len()];
        for round in 0..=rounds {
            for k in 0..contenders.len() {
                let index = (k + round) % contenders.len();
                let figures = measure(contenders[index], n, d);
                if round > 0 {
                    seen[index].push(figures);
                }
            }
        }
        let reference = stats::median(seen[0].iter().map(|f| f.1));
        println!("sleeps of {d:?}: wall and CPU per sleep (us), median [min - max] over rounds\n");
        println!("| contender | wall | CPU | CPU vs std::thread | others' CPU, most |");
        println!("|---|---:|---:|---:|---:|");
        for (contender, figures) in contenders.iter().zip(&seen) {
            let wall = stats::median(figures.iter().map(|f| f.0));
            let cpu = stats::median(figures.iter().map(|f| f.1));
            let (lo, hi) = stats::range(figures.iter().map(|f| f.1));
            let (_, others) = stats::range(figures.iter().map(|f| f.2));
            println!(
                "| {} | {wall:.1} | {cpu:.1} [{lo:.1} - {hi:.1}] | {:.2}x | {:.0}% |",
                contender.name,
                cpu / reference,
                others * 100.0
            );
        }
        println!();
    }
}
