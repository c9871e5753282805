//! Spawn+join and yield costs: this runtime side by side with OS threads,
//! `may` and `tokio`, in one process, interleaved over rounds.
//!
//! Run with `cargo bench --bench spawn_yield` (needs a `[[bench]]` stanza
//! with `harness = false`). Environment knobs:
//! - `SPAWN_YIELD_ROUNDS` (default 9): measured rounds; each round runs every
//!   contender once, in a rotated order, after one unreported warm-up round.
//! - `SPAWN_YIELD_ONLY="coroutines;may"`: only the rows whose names contain
//!   one of these `;`-separated substrings (and their tokio reference rows).
//! - `SPAWN_YIELD_BREAKDOWN=1`: adds the batched spawn+join on 1 worker, and a
//!   table with the spawn-loop / join-loop split, the process's context
//!   switches and page faults per 1,000 operations, and our runtimes'
//!   counters.
//!
//! Without a `--bench` argument (`cargo test --benches` runs bench targets
//! that way) it makes a quick smoke run: one round, sizes divided by 10.
//!
//! `may` is configured once per process, so the 1-worker `may` yield
//! measurements run in a child process (this same binary, re-executed with
//! `SPAWN_YIELD_CHILD=may-yield` and the task count in
//! `SPAWN_YIELD_TASKS`); only its timed loop is reported.
//!
//! The yield is measured hot (2 tasks, everything in the cache) and cold
//! ([`MANY`] tasks taking turns, each switch to a task whose stack and
//! state the others pushed out of the cache, as in a server with many
//! connections).

use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Worker threads of the multi-worker runtimes (this machine has 2 vCPUs).
const WORKERS: usize = 2;
/// Tasks per spawn+join measurement for coroutine-like contenders.
const SPAWN_TASKS: u64 = 100_000;
/// Tasks spawned before they are joined in the batched variant. `may` maps
/// each stack when it spawns and caches 1,000 finished coroutines: 100,000
/// live `may` coroutines exceed `vm.max_map_count` (65530) and abort, and
/// batches beyond its cache measure `mmap`.
const BATCH: u64 = 1_000;
/// Threads per spawn+join measurement for OS threads.
const SPAWN_THREADS: u64 = 2_000;
/// Yields per task (two tasks) for coroutine-like contenders.
const YIELDS: u64 = 200_000;
/// Tasks of the cold yield rows.
const MANY: u64 = 4096;
/// Yields per thread (two threads) for OS threads.
const THREAD_YIELDS: u64 = 20_000;
/// The CPU both pinned yielding OS threads run on.
const PIN_CPU: usize = 0;

const CHILD_ENV: &str = "SPAWN_YIELD_CHILD";
const TASKS_ENV: &str = "SPAWN_YIELD_TASKS";

/// Divides the workload sizes: 1 under `cargo bench` (which passes
/// `--bench`), 10 for the smoke run that `cargo test --benches` makes.
static SCALE: AtomicU64 = AtomicU64::new(1);

fn spawn_tasks() -> u64 {
    SPAWN_TASKS / SCALE.load(Relaxed)
}

fn spawn_threads() -> u64 {
    SPAWN_THREADS / SCALE.load(Relaxed)
}

fn yields() -> u64 {
    YIELDS / SCALE.load(Relaxed)
}

/// Yields per task when `tasks` tasks take turns: every yield row makes
/// `2 * yields()` in all.
fn yields_each(tasks: u64) -> u64 {
    (2 * yields() / tasks).max(1)
}

fn thread_yields() -> u64 {
    THREAD_YIELDS / SCALE.load(Relaxed)
}

type Run<'a> = Box<dyn Fn() -> Sample + 'a>;

/// One row of the table.
struct Contender<'a> {
    workload: &'static str,
    name: &'static str,
    /// The row whose median the ratio column divides by.
    reference: &'static str,
    run: Run<'a>,
}

fn contender<'a>(
    workload: &'static str,
    name: &'static str,
    reference: &'static str,
    run: impl Fn() -> Sample + 'a,
) -> Contender<'a> {
    Contender {
        workload,
        name,
        reference,
        run: Box::new(run),
    }
}

const SPAWN: &str = "spawn+join";
const YIELD: &str = "yield";
const YIELD_MANY: &str = "yield, many tasks";
const TOKIO_SPAWN_ALL: &str = "tokio, 100k at once";
const TOKIO_SPAWN_BATCHED: &str = "tokio, 1k batches";
const TOKIO_YIELD: &str = "tokio, 1 worker";
const TOKIO_YIELD_MANY: &str = "tokio, 1 worker, 4096 tasks";
const TOKIO_SPAWN_BATCHED_1: &str = "tokio, 1k batches, 1 worker";

fn main() {
    let smoke = !std::env::args().any(|arg| arg == "--bench");
    if smoke {
        SCALE.store(10, Relaxed);
    }
    if std::env::var(CHILD_ENV).as_deref() == Ok("may-yield") {
        let tasks = std::env::var(TASKS_ENV).map_or(2, |t| t.parse().expect("a task count"));
        may_yield_child(tasks);
        return;
    }
    let rounds: usize = if smoke {
        1
    } else {
        std::env::var("SPAWN_YIELD_ROUNDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(9)
            .max(1)
    };
    let breakdown = std::env::var("SPAWN_YIELD_BREAKDOWN").is_ok_and(|v| v == "1");

    // may's runtime is process-global: configure it before its first use.
    may::config().set_workers(WORKERS);

    let ours = coroutines::Runtime::builder()
        .workers(WORKERS)
        .build()
        .expect("our runtime");
    let ours1 = coroutines::Runtime::builder()
        .workers(1)
        .build()
        .expect("our 1-worker runtime");
    // Coroutines sharing their worker's thread identity: what identity costs.
    let ours_shared = coroutines::Runtime::builder()
        .workers(WORKERS)
        .thread_identity(false)
        .build()
        .expect("our runtime, identity off");
    let ours1_shared = coroutines::Runtime::builder()
        .workers(1)
        .thread_identity(false)
        .build()
        .expect("our 1-worker runtime, identity off");
    let tokio_mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .build()
        .expect("tokio runtime");
    let tokio_mt1 = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("tokio 1-worker runtime");
    let tokio_ct = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio current_thread runtime");

    print_config(rounds);
    std::io::Write::flush(&mut std::io::stdout()).expect("flush stdout");

    let mut contenders = vec![
        contender(SPAWN, "coroutines, 100k at once", TOKIO_SPAWN_ALL, || {
            ours_spawn(&ours, spawn_tasks())
        }),
        contender(SPAWN, TOKIO_SPAWN_ALL, TOKIO_SPAWN_ALL, || {
            tokio_spawn_in_task(&tokio_mt, spawn_tasks())
        }),
        contender(
            SPAWN,
            "tokio, 100k at once, in block_on",
            TOKIO_SPAWN_ALL,
            || tokio_spawn_block_on(&tokio_mt, spawn_tasks()),
        ),
        contender(SPAWN, "coroutines, 1k batches", TOKIO_SPAWN_BATCHED, || {
            ours_spawn(&ours, BATCH)
        }),
        contender(
            SPAWN,
            "coroutines, identity off, 1k batches",
            TOKIO_SPAWN_BATCHED,
            || ours_spawn(&ours_shared, BATCH),
        ),
        contender(SPAWN, "may, 1k batches", TOKIO_SPAWN_BATCHED, || {
            may_spawn(BATCH)
        }),
        contender(SPAWN, TOKIO_SPAWN_BATCHED, TOKIO_SPAWN_BATCHED, || {
            tokio_spawn_in_task(&tokio_mt, BATCH)
        }),
        contender(
            SPAWN,
            "std::thread, 2k at once",
            TOKIO_SPAWN_ALL,
            threads_spawn,
        ),
    ];
    let runtimes = YieldRuntimes {
        ours: &ours1,
        ours_shared: &ours1_shared,
        tokio: &tokio_mt1,
        tokio_ct: &tokio_ct,
    };
    let hot = [
        "coroutines",
        "coroutines, identity off",
        "may",
        TOKIO_YIELD,
        "tokio, current_thread",
    ];
    let cold = [
        "coroutines, 4096 tasks",
        "coroutines, identity off, 4096 tasks",
        "may, 4096 tasks",
        TOKIO_YIELD_MANY,
        "tokio, current_thread, 4096 tasks",
    ];
    contenders.extend(yield_rows(YIELD, 2, hot, runtimes));
    contenders.extend([
        contender(YIELD, "std::thread, pinned to 1 CPU", TOKIO_YIELD, || {
            threads_yield(true)
        }),
        contender(YIELD, "std::thread, unpinned", TOKIO_YIELD, || {
            threads_yield(false)
        }),
    ]);
    contenders.extend(yield_rows(YIELD_MANY, MANY, cold, runtimes));

    if breakdown {
        // Diagnostic rows: the same batched workload on one worker.
        contenders.push(contender(
            SPAWN,
            "coroutines, 1k batches, 1 worker",
            TOKIO_SPAWN_BATCHED_1,
            || ours_spawn(&ours1, BATCH),
        ));
        contenders.push(contender(
            SPAWN,
            TOKIO_SPAWN_BATCHED_1,
            TOKIO_SPAWN_BATCHED_1,
            || tokio_spawn_in_task(&tokio_mt1, BATCH),
        ));
    }
    if let Ok(only) = std::env::var("SPAWN_YIELD_ONLY") {
        // Semicolon-separated substrings of row names; references are kept.
        let wanted: Vec<&str> = only.split(';').map(str::trim).collect();
        let keep = |name: &str| wanted.iter().any(|w| name.contains(w));
        let references: Vec<&str> = contenders
            .iter()
            .filter(|c| keep(c.name))
            .map(|c| c.reference)
            .collect();
        contenders.retain(|c| keep(c.name) || references.contains(&c.name));
    }
    // Spawn rows first, then yield rows, in the table.
    contenders.sort_by_key(|c| c.workload != SPAWN);

    let started = Instant::now();
    eprint!("warm-up");
    for c in &contenders {
        black_box((c.run)());
    }
    eprint!(" ({:.1?}),", started.elapsed());

    let n = contenders.len();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); n];
    for round in 0..rounds {
        // Rotate the order so no contender always follows the same one.
        for k in 0..n {
            let i = (k + round * 5) % n;
            let before = (thread_switches(), minor_faults());
            let mut sample = (contenders[i].run)();
            let after = (thread_switches(), minor_faults());
            sample.voluntary_switches = after.0 .0.saturating_sub(before.0 .0);
            sample.involuntary_switches = after.0 .1.saturating_sub(before.0 .1);
            sample.page_faults = after.1.saturating_sub(before.1);
            samples[i].push(sample);
            std::thread::sleep(Duration::from_millis(10));
        }
        eprint!(" {}", round + 1);
    }
    eprintln!(" rounds; {:.1?} in all", started.elapsed());

    let median_of = |name: &str| {
        let i = contenders
            .iter()
            .position(|c| c.name == name)
            .expect("reference row");
        median(&values(&samples[i], |s| s.per_op))
    };
    println!();
    println!("| workload | contender | median | min - max | median vs tokio |");
    println!("|---|---|---:|---:|---:|");
    for (c, s) in contenders.iter().zip(&samples) {
        let v = values(s, |s| s.per_op);
        let m = median(&v);
        let label = if c.workload == YIELD {
            "yield, 2 tasks on 1 worker (per yield)"
        } else if c.workload == YIELD_MANY {
            "yield, 4096 tasks on 1 worker (per yield)"
        } else if c.name.ends_with("1 worker") {
            "spawn+join, 1 worker (per task)"
        } else {
            "spawn+join, 2 workers (per task)"
        };
        let ratio = if c.name == c.reference {
            String::from("1.00x (ref)")
        } else {
            format!("{:.2}x", m / median_of(c.reference))
        };
        println!(
            "| {label} | {} | {} | {} - {} | {ratio} |",
            c.name,
            fmt_ns(m),
            fmt_ns(min(&v)),
            fmt_ns(max(&v)),
        );
    }
    println!();
    println!(
        "vs tokio: this median / the median of \"{TOKIO_SPAWN_ALL}\" (100k-at-once and \
         std::thread rows), \"{TOKIO_SPAWN_BATCHED}\" (batched rows), \"{TOKIO_YIELD}\" \
         (2-task yield rows) or \"{TOKIO_YIELD_MANY}\" (4096-task yield rows); below 1.00x is \
         faster than tokio"
    );

    if breakdown {
        println!();
        println!(
            "breakdown (medians over rounds): spawn+join split into the spawn loop and the join \
             loop, per task; thread context switches (sleeps = voluntary, preemptions = involuntary) and minor \
             page faults in the whole process per 1,000 operations (the may yield child is not \
             counted)"
        );
        println!(
            "| workload | contender | spawn loop | join loop | total | sleeps / 1k | \
             preemptions / 1k | page faults / 1k |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|");
        for (c, s) in contenders.iter().zip(&samples) {
            let ops = if c.workload == YIELD_MANY {
                yields_each(MANY) * MANY
            } else if c.workload == YIELD {
                2 * if c.name.starts_with("std::thread") {
                    thread_yields()
                } else {
                    yields()
                }
            } else if c.name.starts_with("std::thread") {
                spawn_threads()
            } else {
                spawn_tasks()
            } as f64;
            let per_k = |n: u64| format!("{:.1}", n as f64 * 1000.0 / ops);
            let (spawn_loop, join_loop) = if c.workload == SPAWN {
                (
                    fmt_ns(median(&values(s, |s| s.spawn_phase))),
                    fmt_ns(median(&values(s, |s| s.per_op - s.spawn_phase))),
                )
            } else {
                (String::from("-"), String::from("-"))
            };
            println!(
                "| {} | {} | {spawn_loop} | {join_loop} | {} | {} | {} | {} |",
                c.workload,
                c.name,
                fmt_ns(median(&values(s, |s| s.per_op))),
                per_k(median_u64(s, |s| s.voluntary_switches)),
                per_k(median_u64(s, |s| s.involuntary_switches)),
                per_k(median_u64(s, |s| s.page_faults)),
            );
        }
        let stats = ours.stats();
        println!();
        println!(
            "our {WORKERS}-worker runtime after all runs: spawned {}, context switches {} \
             ({:.2} per spawn), migrations {}",
            stats.spawned,
            stats.context_switches,
            stats.context_switches as f64 / stats.spawned.max(1) as f64,
            stats.migrations
        );
        let stats = ours1.stats();
        println!(
            "our 1-worker runtime after all runs: spawned {}, context switches {}",
            stats.spawned, stats.context_switches
        );
    }
}

/// One measurement: ns per operation, and for spawn+join the ns per task of
/// the spawn loop alone (0 otherwise).
#[derive(Clone, Copy, Default)]
struct Sample {
    per_op: f64,
    spawn_phase: f64,
    /// Context switches of this process's threads during the run: a thread
    /// blocking in the kernel (voluntary), or being preempted (involuntary).
    voluntary_switches: u64,
    involuntary_switches: u64,
    /// Minor page faults of the process during the run.
    page_faults: u64,
}

fn sample(total: Duration, spawning: Duration, ops: u64) -> Sample {
    Sample {
        per_op: total.as_nanos() as f64 / ops as f64,
        spawn_phase: spawning.as_nanos() as f64 / ops as f64,
        ..Sample::default()
    }
}

/// The process's minor page faults so far, from /proc (0 where unavailable).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; minflt is field 10.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after_name
        .split_whitespace()
        .nth(7)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Sums the voluntary and involuntary context switches of every thread of
/// this process, from /proc (0 where unavailable).
fn thread_switches() -> (u64, u64) {
    let mut total = (0, 0);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return total;
    };
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            let mut fields = line.split_whitespace();
            let (Some(key), Some(value)) = (fields.next(), fields.next()) else {
                continue;
            };
            let value: u64 = value.parse().unwrap_or(0);
            match key {
                "voluntary_ctxt_switches:" => total.0 += value,
                "nonvoluntary_ctxt_switches:" => total.1 += value,
                _ => {}
            }
        }
    }
    total
}

fn print_config(rounds: usize) {
    if SCALE.load(Relaxed) > 1 {
        println!(
            "spawn_yield: SMOKE RUN (no --bench argument, e.g. cargo test): sizes / {}, \
             1 round, numbers are not meaningful",
            SCALE.load(Relaxed)
        );
    }
    println!(
        "spawn_yield: {rounds} rounds after 1 warm-up round; each round runs every contender \
         once, in a rotated order"
    );
    println!(
        "  machine: {} CPUs available",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  spawn+join: {} tasks per run, each returns a u64; spawned from inside the runtime, \
         then joined in spawn order; {WORKERS} workers",
        spawn_tasks()
    );
    println!(
        "    at once: all {} spawned, then all joined",
        spawn_tasks()
    );
    println!(
        "    batches: {BATCH} spawned, then those joined, {} times",
        spawn_tasks() / BATCH
    );
    println!(
        "    coroutines: Runtime::builder().workers({WORKERS}) (default stack, no work \
         stealing); the spawner is block_on's coroutine"
    );
    println!(
        "    tokio: new_multi_thread().worker_threads({WORKERS}); the spawner is a task \
         (block_on(tokio::spawn(..))) or, \"in block_on\", block_on's future on the calling thread"
    );
    println!(
        "    may: config().set_workers({WORKERS}) (may pins workers to CPUs; 1,000-coroutine \
         cache); the spawner is a go! coroutine"
    );
    println!(
        "    std::thread: {} threads spawned, then joined, from the main thread",
        spawn_threads()
    );
    println!(
        "  yield: 2 tasks x {} yields on 1 worker (std::thread: 2 threads x {})",
        yields(),
        thread_yields()
    );
    println!(
        "    and cold: {MANY} tasks x {} yields on 1 worker, taking turns (the spawns are timed \
         too: one per {} yields)",
        yields_each(MANY),
        yields_each(MANY)
    );
    println!(
        "    coroutines: workers(1), coroutines::yield_now; may: set_workers(1) in a child \
         process, may::coroutine::yield_now"
    );
    println!(
        "    tokio: new_multi_thread().worker_threads(1) or new_current_thread(), \
         tokio::task::yield_now().await"
    );
    println!(
        "    std::thread: std::thread::yield_now (sched_yield), both threads pinned to CPU \
         {PIN_CPU}, or unpinned"
    );
}

// --- spawn+join -----------------------------------------------------------

fn ours_spawn(rt: &coroutines::Runtime, batch: u64) -> Sample {
    rt.block_on(move || {
        let mut spawning = Duration::ZERO;
        let mut sum = 0;
        let start = Instant::now();
        for b in 0..spawn_tasks() / batch {
            let t = Instant::now();
            let handles: Vec<_> = (b * batch..(b + 1) * batch)
                .map(|i| coroutines::spawn(move || black_box(i) * 2))
                .collect();
            spawning += t.elapsed();
            sum += handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>();
        }
        let total = start.elapsed();
        assert_eq!(sum, spawn_tasks() * (spawn_tasks() - 1));
        sample(total, spawning, spawn_tasks())
    })
}

fn threads_spawn() -> Sample {
    let start = Instant::now();
    let handles: Vec<_> = (0..spawn_threads())
        .map(|i| std::thread::spawn(move || black_box(i) * 2))
        .collect();
    let spawning = start.elapsed();
    let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let total = start.elapsed();
    assert_eq!(sum, spawn_threads() * (spawn_threads() - 1));
    sample(total, spawning, spawn_threads())
}

fn may_spawn(batch: u64) -> Sample {
    may::go!(move || {
        let mut spawning = Duration::ZERO;
        let mut sum = 0;
        let start = Instant::now();
        for b in 0..spawn_tasks() / batch {
            let t = Instant::now();
            let handles: Vec<_> = (b * batch..(b + 1) * batch)
                .map(|i| may::go!(move || black_box(i) * 2))
                .collect();
            spawning += t.elapsed();
            sum += handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>();
        }
        let total = start.elapsed();
        assert_eq!(sum, spawn_tasks() * (spawn_tasks() - 1));
        sample(total, spawning, spawn_tasks())
    })
    .join()
    .unwrap()
}

async fn tokio_spawn_join(batch: u64) -> Sample {
    let mut spawning = Duration::ZERO;
    let mut sum = 0;
    let start = Instant::now();
    for b in 0..spawn_tasks() / batch {
        let t = Instant::now();
        let handles: Vec<_> = (b * batch..(b + 1) * batch)
            .map(|i| tokio::spawn(async move { black_box(i) * 2 }))
            .collect();
        spawning += t.elapsed();
        for h in handles {
            sum += h.await.unwrap();
        }
    }
    let total = start.elapsed();
    assert_eq!(sum, spawn_tasks() * (spawn_tasks() - 1));
    sample(total, spawning, spawn_tasks())
}

fn tokio_spawn_block_on(rt: &tokio::runtime::Runtime, batch: u64) -> Sample {
    rt.block_on(tokio_spawn_join(batch))
}

fn tokio_spawn_in_task(rt: &tokio::runtime::Runtime, batch: u64) -> Sample {
    rt.block_on(async move { tokio::spawn(tokio_spawn_join(batch)).await.unwrap() })
}

// --- yield -----------------------------------------------------------------

/// The one-worker runtimes the yield rows run on.
#[derive(Clone, Copy)]
struct YieldRuntimes<'a> {
    ours: &'a coroutines::Runtime,
    ours_shared: &'a coroutines::Runtime,
    tokio: &'a tokio::runtime::Runtime,
    tokio_ct: &'a tokio::runtime::Runtime,
}

/// The yield rows of `tasks` tasks taking turns, named by `names`: ours
/// (identity on, off), may, tokio's 1-worker runtime (the reference) and
/// its current_thread one.
fn yield_rows<'a>(
    workload: &'static str,
    tasks: u64,
    names: [&'static str; 5],
    on: YieldRuntimes<'a>,
) -> Vec<Contender<'a>> {
    let reference = names[3];
    vec![
        contender(workload, names[0], reference, move || {
            ours_yield(on.ours, tasks)
        }),
        contender(workload, names[1], reference, move || {
            ours_yield(on.ours_shared, tasks)
        }),
        contender(workload, names[2], reference, move || {
            may_yield_via_child(tasks)
        }),
        contender(workload, names[3], reference, move || {
            tokio_yield(on.tokio, tasks)
        }),
        contender(workload, names[4], reference, move || {
            tokio_yield(on.tokio_ct, tasks)
        }),
    ]
}

fn ours_yield(rt: &coroutines::Runtime, tasks: u64) -> Sample {
    let each = yields_each(tasks);
    rt.block_on(move || {
        let start = Instant::now();
        let yielders: Vec<_> = (0..tasks)
            .map(|_| {
                coroutines::spawn(move || {
                    for _ in 0..each {
                        coroutines::yield_now();
                    }
                })
            })
            .collect();
        for h in yielders {
            h.join().unwrap();
        }
        sample(start.elapsed(), Duration::ZERO, tasks * each)
    })
}

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let ret = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            ret,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn threads_yield(pinned: bool) -> Sample {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(3));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                if pinned {
                    pin_to(PIN_CPU);
                }
                barrier.wait();
                for _ in 0..thread_yields() {
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for t in threads {
        t.join().unwrap();
    }
    sample(start.elapsed(), Duration::ZERO, 2 * thread_yields())
}

fn may_yield(tasks: u64, each: u64) -> Sample {
    may::go!(move || {
        let start = Instant::now();
        let yielders: Vec<_> = (0..tasks)
            .map(|_| {
                may::go!(move || {
                    for _ in 0..each {
                        may::coroutine::yield_now();
                    }
                })
            })
            .collect();
        for h in yielders {
            h.join().unwrap();
        }
        sample(start.elapsed(), Duration::ZERO, tasks * each)
    })
    .join()
    .unwrap()
}

/// In the child: a 1-worker may, a short warm-up, then one measurement
/// printed as ns per yield.
fn may_yield_child(tasks: u64) {
    may::config().set_workers(1);
    black_box(may_yield(tasks, (yields_each(tasks) / 10).max(1)));
    println!("{}", may_yield(tasks, yields_each(tasks)).per_op);
}

fn may_yield_via_child(tasks: u64) -> Sample {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe);
    if SCALE.load(Relaxed) == 1 {
        child.arg("--bench");
    }
    let out = child
        .env(CHILD_ENV, "may-yield")
        .env(TASKS_ENV, tasks.to_string())
        .output()
        .expect("run the may yield child");
    assert!(out.status.success(), "may yield child failed: {out:?}");
    let per_op: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the child prints ns per yield");
    Sample {
        per_op,
        ..Sample::default()
    }
}

fn tokio_yield(rt: &tokio::runtime::Runtime, tasks: u64) -> Sample {
    let each = yields_each(tasks);
    rt.block_on(async move {
        let start = Instant::now();
        let yielders: Vec<_> = (0..tasks)
            .map(|_| {
                tokio::spawn(async move {
                    for _ in 0..each {
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for h in yielders {
            h.await.unwrap();
        }
        sample(start.elapsed(), Duration::ZERO, tasks * each)
    })
}

// --- statistics --------------------------------------------------------------

fn values(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> Vec<f64> {
    let mut v: Vec<f64> = samples.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    v
}

fn median_u64(samples: &[Sample], f: impl Fn(&Sample) -> u64) -> u64 {
    let mut v: Vec<u64> = samples.iter().map(f).collect();
    v.sort_unstable();
    v[v.len() / 2]
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn min(sorted: &[f64]) -> f64 {
    sorted[0]
}

fn max(sorted: &[f64]) -> f64 {
    sorted[sorted.len() - 1]
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 10_000.0 {
        format!("{:.1} us", ns / 1000.0)
    } else if ns >= 100.0 {
        format!("{ns:.0} ns")
    } else {
        format!("{ns:.1} ns")
    }
}
