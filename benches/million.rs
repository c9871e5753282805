//! A million coroutines (issue 11): spawn N coroutines that each park on
//! one shared `std::sync::Condvar`, then wake them all.
//!
//! Each measurement runs in a fresh child process (this binary, re-executed
//! as `million child N IDENTITY WORKERS`) so that its resident memory,
//! memory maps and counters are its own. The child builds a runtime of 2
//! workers with thread identity on or off and warms it up; a coroutine of
//! the runtime then spawns N detached coroutines, each of which locks one
//! shared `Mutex`, counts itself and waits on one shared `Condvar` until
//! told to go; the main thread (not a coroutine) waits until all N have
//! counted themselves (all are then parked in `Condvar::wait`), sets the
//! flag, calls `notify_all` and waits until all have ended.
//!
//! Reported per coroutine, medians over rounds: the time to spawn and park
//! (from the first spawn until the main thread sees the count reach N), the
//! time to wake and end, resident memory added while parked (`VmRSS` of
//! /proc/self/status), the memory maps added (lines of /proc/self/maps),
//! minor page faults and CPU time (user and system, from `getrusage`)
//! while spawning and parking, and the process's threads.
//!
//! On kernels before 6.13 (no guard markers) each stack takes 2 memory maps,
//! so above ~30,000 parked coroutines the default `vm.max_map_count` (65530)
//! is too small; since 6.13 stacks share mappings. The bench raises it
//! with `sysctl -w vm.max_map_count=4194304` when a size needs more (this
//! works as root); if that fails it skips the size and says so.
//!
//! Run with `cargo bench --bench million` (~2-3 min, 10+ GB of memory at
//! 1M). Without `--bench` (as `cargo test --benches` runs it) it makes a
//! smoke run of 10,000 coroutines, which needs no sysctl. Knobs:
//! - `MILLION_SIZES` (default `10000,100000,1000000`);
//! - `MILLION_ROUNDS` (default 3; sizes of 1M and more run once);
//! - `MILLION_WORKERS` (default 2);
//! - `MILLION_MAX_OTHERS` (default 10): a measurement during which other
//!   processes used more than this percentage of the CPUs is repeated, up
//!   to 2 times (the last attempt is kept either way).
//!
//! For profiling, run a child directly, e.g.
//! `perf record -g BENCH_BINARY child 1000000 on 2`; a last argument
//! `exit-parked` ends the child once all are parked (no wake-up, no
//! unmapping), to profile spawning and parking alone.

#[path = "support/stats.rs"]
mod stats;

use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use stats::{median, range, Machine};

const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];
const SMOKE_SIZE: usize = 10_000;
const WORKERS: usize = 2;
/// Memory maps each parked coroutine's stack takes where the kernel has no
/// guard markers (stack + guard page); with them, stacks share mappings.
const MAPS_PER_COROUTINE_WITHOUT_MARKERS: usize = 2;
/// Maps left for everything else; as the runtime's own headroom.
const MAP_HEADROOM: usize = 8192;
/// What the bench raises `vm.max_map_count` to when a size needs it.
const RAISED_MAP_COUNT: usize = 4_194_304;
/// How many times a disturbed measurement is repeated at most.
const RERUNS: usize = 2;
/// Sizes at or above this run once per identity setting.
const ONCE_FROM: usize = 1_000_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let n: usize = args[2].parse().expect("usage: child N on|off WORKERS");
        let identity = match args[3].as_str() {
            "on" => true,
            "off" => false,
            other => panic!("identity must be on or off, not {other:?}"),
        };
        let workers: usize = args[4].parse().expect("usage: child N on|off WORKERS");
        let exit_parked = match args.get(5).map(String::as_str) {
            None => false,
            Some("exit-parked") => true,
            Some(other) => panic!("unknown option {other:?}; known: exit-parked"),
        };
        child(n, identity, workers, exit_parked);
        return;
    }
    let smoke = !args.iter().any(|a| a == "--bench");
    let env_or = |name: &str, default: &str| std::env::var(name).unwrap_or(default.to_owned());
    let (sizes, rounds, workers, max_others): (Vec<usize>, usize, usize, f64) = if smoke {
        println!("million: smoke run (no --bench argument): {SMOKE_SIZE} coroutines, 1 round");
        (vec![SMOKE_SIZE], 1, WORKERS, 1.0)
    } else {
        let default_sizes = SIZES.map(|s| s.to_string()).join(",");
        (
            env_or("MILLION_SIZES", &default_sizes)
                .split(',')
                .map(|s| s.trim().parse().expect("MILLION_SIZES"))
                .collect(),
            env_or("MILLION_ROUNDS", "3")
                .parse()
                .expect("MILLION_ROUNDS"),
            env_or("MILLION_WORKERS", "2")
                .parse()
                .expect("MILLION_WORKERS"),
            env_or("MILLION_MAX_OTHERS", "10")
                .parse::<f64>()
                .expect("MILLION_MAX_OTHERS")
                / 100.0,
        )
    };
    println!(
        "million: each size and identity setting in a fresh process with {workers} workers; \
         {rounds} round(s) per size ({} or more: 1), identity on and off alternating",
        ONCE_FROM
    );
    let exe = std::env::current_exe().expect("current_exe");
    let mut rows = Vec::new();
    for &n in &sizes {
        if !enough_maps(n) {
            continue;
        }
        let rounds = if n >= ONCE_FROM { 1 } else { rounds };
        let mut results: [Vec<Measure>; 2] = [Vec::new(), Vec::new()];
        for round in 0..rounds {
            for k in 0..2 {
                let on = (k + round) % 2 == 0;
                let identity = if on { "on" } else { "off" };
                eprint!(" {n}/{identity}");
                let mut attempt = 0;
                let measure = loop {
                    let machine = Machine::now();
                    let output = Command::new(&exe)
                        .args(["child", &n.to_string(), identity, &workers.to_string()])
                        .output()
                        .expect("run a child");
                    assert!(output.status.success(), "child failed: {output:?}");
                    let mut measure = Measure::parse(&String::from_utf8_lossy(&output.stdout));
                    measure.others = machine.shares_since(0.0).1;
                    if measure.others <= max_others || attempt == RERUNS {
                        break measure;
                    }
                    attempt += 1;
                    eprint!(" [again: others {:.0}%]", measure.others * 100.0);
                };
                results[usize::from(!on)].push(measure);
            }
        }
        for (i, identity) in ["on", "off"].into_iter().enumerate() {
            rows.push((n, identity, std::mem::take(&mut results[i])));
        }
    }
    eprintln!();
    println!();
    println!(
        "| coroutines | identity | spawn+park (us each, median [min - max]) | wake+end (us \
         each) | RSS parked (KiB each) | maps each | minor faults each | CPU user + sys (us \
         each) | threads (spare workers) | moved off the spawner's worker | others' CPU |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (n, identity, measures) in &rows {
        let m = |f: fn(&Measure) -> f64| median(measures.iter().map(f));
        let each = |f: fn(&Measure) -> f64| m(f) / *n as f64;
        let (lo, hi) = range(measures.iter().map(|x| x.park_us / *n as f64));
        println!(
            "| {n} | {identity} | {:.2} [{lo:.2} - {hi:.2}] | {:.2} | {:.2} | {:.2} | {:.2} | \
             {:.2} + {:.2} | {:.0} ({:.0}) | {:.0}% | {:.0}% |",
            each(|x| x.park_us),
            each(|x| x.wake_us),
            each(|x| x.rss_kib),
            each(|x| x.maps),
            each(|x| x.minflt),
            each(|x| x.user_us),
            each(|x| x.sys_us),
            m(|x| x.threads),
            m(|x| x.spares),
            each(|x| x.moved) * 100.0,
            measures.iter().map(|x| x.others).fold(0.0, f64::max) * 100.0
        );
    }
}

/// Whether `vm.max_map_count` lets `n` coroutines park, raising it if it
/// does not and that is allowed.
fn enough_maps(n: usize) -> bool {
    let per_coroutine = match guard_markers() {
        true => 0,
        false => MAPS_PER_COROUTINE_WITHOUT_MARKERS,
    };
    let needed = n * per_coroutine + MAP_HEADROOM;
    let current = || -> usize {
        std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(65530)
    };
    if current() >= needed {
        return true;
    }
    let setting = format!("vm.max_map_count={}", RAISED_MAP_COUNT.max(needed));
    println!("  {n} coroutines need {needed} memory maps: running sysctl -w {setting}");
    let raised = Command::new("sysctl")
        .args(["-w", &setting])
        .output()
        .is_ok_and(|o| o.status.success());
    if raised && current() >= needed {
        return true;
    }
    println!(
        "  skipping {n} coroutines: vm.max_map_count is {} and could not be raised (run \
         `sysctl -w {setting}` as root)",
        current()
    );
    false
}

/// Whether the kernel makes guard pages without mappings
/// (`MADV_GUARD_INSTALL`, Linux 6.13+), as the runtime's stacks then do.
fn guard_markers() -> bool {
    const MADV_GUARD_INSTALL: libc::c_int = 102;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    // SAFETY: a fresh anonymous page, advised and unmapped here only.
    unsafe {
        let page = libc::mmap(core::ptr::null_mut(), 4096, libc::PROT_READ, flags, -1, 0);
        assert_ne!(page, libc::MAP_FAILED);
        let supported = libc::madvise(page, 4096, MADV_GUARD_INSTALL) == 0;
        libc::munmap(page, 4096);
        supported
    }
}

/// What one child measured, as totals.
#[derive(Default)]
struct Measure {
    park_us: f64,
    wake_us: f64,
    rss_kib: f64,
    maps: f64,
    minflt: f64,
    user_us: f64,
    sys_us: f64,
    threads: f64,
    /// Coroutines the runtime moved off a worker held up by the spawner,
    /// and spare workers it started, while they spawned and parked.
    moved: f64,
    spares: f64,
    /// Share of the machine's CPU time others used during the child.
    others: f64,
}

impl Measure {
    fn parse(text: &str) -> Measure {
        let mut m = Measure::default();
        for pair in text.split_whitespace() {
            let (key, value) = pair.split_once('=').expect("key=value");
            let value: f64 = value.parse().expect("a number");
            match key {
                "park_us" => m.park_us = value,
                "wake_us" => m.wake_us = value,
                "rss_kib" => m.rss_kib = value,
                "maps" => m.maps = value,
                "minflt" => m.minflt = value,
                "user_us" => m.user_us = value,
                "sys_us" => m.sys_us = value,
                "threads" => m.threads = value,
                "moved" => m.moved = value,
                "spares" => m.spares = value,
                _ => panic!("unknown key {key}"),
            }
        }
        m
    }
}

/// User and system CPU time in us, and minor faults, of this process.
fn usage() -> (f64, f64, f64) {
    let usage = stats::rusage(libc::RUSAGE_SELF);
    (
        stats::timeval_ns(usage.ru_utime) / 1e3,
        stats::timeval_ns(usage.ru_stime) / 1e3,
        usage.ru_minflt as f64,
    )
}

/// A field of /proc/self/status, in its own unit.
fn status(field: &str) -> f64 {
    let text = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

fn maps() -> f64 {
    let text = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    text.lines().count() as f64
}

/// The shared state: counts, the go flag, and two condition variables.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Where the coroutines park.
    go: Condvar,
    /// Where the main thread waits for the counts.
    counted: Condvar,
}

#[derive(Default)]
struct State {
    parked: usize,
    ended: usize,
    go: bool,
}

/// One measurement; prints `key=value` pairs on stdout.
fn child(n: usize, identity: bool, workers: usize, exit_parked: bool) {
    // The spawning coroutine runs for longer than the runtime's blocked-
    // worker threshold, so the runtime moves the coroutines queued behind
    // it to the other worker (and may start a spare one): counted below
    // instead of warned about.
    let runtime = coroutines::Runtime::builder()
        .workers(workers)
        .thread_identity(identity)
        .blocked_worker_warnings(false)
        .build()
        .expect("runtime");
    // Warm up: every worker runs a coroutine.
    runtime.block_on(move || {
        let handles: Vec<_> = (0..workers * 4).map(|_| coroutines::spawn(|| ())).collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
    });
    let shared = Arc::new(Shared::default());
    let rss_before = status("VmRSS");
    let maps_before = maps();
    let (user_before, sys_before, minflt_before) = usage();

    let start = Instant::now();
    let spawner = shared.clone();
    runtime.spawn(move || {
        for _ in 0..n {
            let shared = spawner.clone();
            coroutines::spawn(move || {
                let mut state = shared.state.lock().unwrap();
                state.parked += 1;
                if state.parked == n {
                    shared.counted.notify_one();
                }
                while !state.go {
                    state = shared.go.wait(state).unwrap();
                }
                state.ended += 1;
                if state.ended == n {
                    shared.counted.notify_one();
                }
            });
        }
    });
    let mut state = shared.state.lock().unwrap();
    while state.parked < n {
        state = shared.counted.wait(state).unwrap();
    }
    let park = start.elapsed();
    drop(state);

    let (user_parked, sys_parked, minflt_parked) = usage();
    let rss_parked = status("VmRSS");
    if exit_parked {
        // For profiling spawning and parking alone.
        println!(
            "park_us={:.0} rss_kib={}",
            park.as_secs_f64() * 1e6,
            rss_parked - rss_before
        );
        std::process::exit(0);
    }
    let maps_parked = maps();
    let threads = status("Threads");
    let stats = runtime.stats();

    let start = Instant::now();
    let mut state = shared.state.lock().unwrap();
    state.go = true;
    shared.go.notify_all();
    while state.ended < n {
        state = shared.counted.wait(state).unwrap();
    }
    let wake = start.elapsed();
    drop(state);

    println!(
        "park_us={:.0} wake_us={:.0} rss_kib={} maps={} minflt={} user_us={:.0} sys_us={:.0} \
         threads={threads} moved={} spares={}",
        park.as_secs_f64() * 1e6,
        wake.as_secs_f64() * 1e6,
        rss_parked - rss_before,
        maps_parked - maps_before,
        minflt_parked - minflt_before,
        user_parked - user_before,
        sys_parked - sys_before,
        stats.moved_off_blocked,
        stats.spare_workers_started,
    );
}
