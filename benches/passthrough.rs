//! What the hook layer costs code that runs OUTSIDE coroutines (issue 11):
//! the same libc calls in two binaries that differ only in whether they
//! link `coroutines`.
//!
//! - unhooked: this binary, re-executed as `passthrough child ...`; it does
//!   not link `coroutines`, so `read`, `write`, `send`, `recv`, `syscall`
//!   and `clock_nanosleep` are glibc's;
//! - hooked: the `passthrough_hooked` binary, which links `coroutines` (and
//!   so defines those symbols itself) but never starts a runtime: every
//!   call takes the hooks' pass-through path.
//!
//! Both run `support/passthrough.rs`, which declares the libc functions
//! itself, so the calls are the same machine code. Each child prints which
//! file its `read` comes from (`dladdr`), as a check. Operations: a 1-byte
//! write + read on a pipe, a 1-byte send + recv on a unix socket pair, a
//! read of an empty non-blocking pipe (EAGAIN: the cheapest real system
//! call here), `syscall(SYS_futex, FUTEX_WAKE_PRIVATE)` with no waiters,
//! and `clock_nanosleep` of 0 ns. Each child measures every operation in
//! batches and reports its fastest batch's ns per operation; the two
//! children run alternately, pinned to the same CPU, for several rounds,
//! and the table gives the median over rounds, the difference per hooked
//! call, and the ratio. The children set their timer slack to 1 ns, so
//! that a 0 ns sleep is not 50 us of slack.
//!
//! Run with `cargo bench --bench passthrough` (~40 s). Without `--bench`
//! (as `cargo test --benches` runs it) it makes a smoke run of a second.
//! `PASSTHROUGH_ROUNDS` (default 15) sets the rounds; a round in which
//! other processes used more than `PASSTHROUGH_MAX_OTHERS` percent (default
//! 10) of the CPUs is repeated, up to 3 times. To profile one operation,
//! run a child alone, e.g. `PASSTHROUGH_OP=EAGAIN perf record
//! target/release/passthrough_hooked 400 5000`.

#[path = "support/passthrough.rs"]
mod passthrough;
#[path = "support/stats.rs"]
mod stats;

use std::os::unix::process::CommandExt;
use std::process::Command;

use stats::{median, range, Machine};

const HOOKED: &str = env!("CARGO_BIN_EXE_passthrough_hooked");
/// How many times a disturbed round is repeated at most.
const RERUNS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let number = |i: usize| {
            args[i]
                .parse::<u64>()
                .expect("usage: child BATCHES PER_BATCH")
        };
        passthrough::child(number(2) as usize, number(3) as u32);
        return;
    }
    let smoke = !args.iter().any(|a| a == "--bench");
    let (rounds, batches, per_batch, max_others) = if smoke {
        (1, 3, 2_000, 1.0)
    } else {
        let rounds = std::env::var("PASSTHROUGH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(15);
        let max_others = std::env::var("PASSTHROUGH_MAX_OTHERS")
            .ok()
            .and_then(|r| r.parse::<f64>().ok())
            .unwrap_or(10.0);
        (rounds, 41, 5_000, max_others / 100.0)
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = cpus - 1;
    if smoke {
        println!("passthrough: smoke run (no --bench argument)");
    }
    println!(
        "passthrough: {rounds} round(s), each running the unhooked and the hooked binary once \
         (alternating which goes first), pinned to CPU {pin}; each child: {batches} batches of \
         {per_batch} operations per operation after a warm-up batch, fastest batch reported"
    );
    let unhooked = std::env::current_exe().expect("current_exe");
    let children = [
        ("unhooked", {
            let mut c = Command::new(&unhooked);
            c.arg("child");
            c
        }),
        ("hooked", Command::new(HOOKED)),
    ];
    // results[child][op] = ns per operation, one per round.
    let mut results: Vec<Vec<Vec<f64>>> = vec![Vec::new(); 2];
    let mut names: Vec<(String, u32)> = Vec::new();
    let mut sources = [String::new(), String::new()];
    // Runs child `c`; returns its ns per operation.
    let mut run = |c: usize| -> Vec<f64> {
        let (_, template) = &children[c];
        let mut command = Command::new(template.get_program());
        command
            .args(template.get_args())
            .args([batches.to_string(), per_batch.to_string()]);
        // SAFETY: sched_setaffinity is async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                let mut set = std::mem::zeroed::<libc::cpu_set_t>();
                libc::CPU_SET(pin, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
                Ok(())
            });
        }
        let output = command.output().expect("run a child");
        assert!(output.status.success(), "child failed: {output:?}");
        let text = String::from_utf8(output.stdout).expect("utf-8");
        let mut values = Vec::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.splitn(3, '\t').collect();
            match fields[..] {
                ["from", file] => sources[c] = file.to_owned(),
                [ns, calls, name] => {
                    values.push(ns.parse::<f64>().expect("ns"));
                    if c == 0 && names.len() < values.len() {
                        names.push((name.to_owned(), calls.parse().expect("calls")));
                    }
                }
                _ => panic!("child output: {line:?}"),
            }
        }
        values
    };
    let machine_before = Machine::now();
    let mut reruns = 0;
    for round in 0..rounds {
        let mut attempt = 0;
        let pair = loop {
            let machine = Machine::now();
            let mut pair = [Vec::new(), Vec::new()];
            for k in 0..2 {
                let c = (k + round) % 2;
                pair[c] = run(c);
            }
            let (_, others) = machine.shares_since(0.0);
            if others <= max_others || attempt == RERUNS {
                break pair;
            }
            attempt += 1;
            reruns += 1;
            eprint!(" [round {round} again: others {:.0}%]", others * 100.0);
            std::thread::sleep(std::time::Duration::from_secs(1));
        };
        for (c, values) in pair.into_iter().enumerate() {
            results[c].push(values);
        }
    }
    eprintln!();
    let (own, others) = machine_before.shares_since(0.0);
    println!(
        "  `read` resolves to: unhooked {}, hooked {}; CPU use: this bench {:.0}%, other \
         processes {:.0}% of all CPUs; {reruns} round(s) repeated because others used more \
         than {:.0}%",
        sources[0],
        sources[1],
        own * 100.0,
        others * 100.0,
        max_others * 100.0
    );
    println!();
    println!(
        "Medians over rounds [min - max]; the extra ns per hooked call is the median of the \
         rounds' differences (the two children ran back to back) and, after the slash, the \
         difference of the minima; the ratio is of the medians."
    );
    println!();
    println!("| operation | unhooked (ns) | hooked (ns) | extra per hooked call (ns) | ratio |");
    println!("|---|---:|---:|---:|---:|");
    for (i, (name, calls)) in names.iter().enumerate() {
        let column = |c: usize| -> Vec<f64> { results[c].iter().map(|r| r[i]).collect() };
        let (plain, hooked) = (column(0), column(1));
        let (m0, m1) = (median(plain.clone()), median(hooked.clone()));
        let ((lo0, hi0), (lo1, hi1)) = (range(plain.clone()), range(hooked.clone()));
        let diffs = plain.iter().zip(&hooked).map(|(a, b)| b - a);
        let per_call = f64::from(*calls);
        println!(
            "| {name} | {m0:.1} [{lo0:.1} - {hi0:.1}] | {m1:.1} [{lo1:.1} - {hi1:.1}] | \
             {:+.1} / {:+.1} | {:.3}x |",
            median(diffs) / per_call,
            (lo1 - lo0) / per_call,
            m1 / m0
        );
    }
}
