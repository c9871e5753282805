//! Echo servers side by side: this runtime (std::net in coroutines), OS
//! threads (a thread per connection), `may` (may::net) and `tokio`
//! (tokio::net), all driven by the SAME blocking client on plain OS threads.
//!
//! Workloads (the benchmark of issue 3):
//! - churn: per iteration 512 connections, each doing 4 lockstep round trips
//!   of 512 bytes and then closing; reported in ms per iteration.
//! - long: 100 persistent connections x 1000 lockstep round trips of 64
//!   bytes; reported in ms per run (connecting is not timed).
//!
//! The client: `ECHO_CLIENT_THREADS` threads (default 8), each owning an
//! equal share of the connections and driving them in lockstep (write one
//! message on each of its connections, then read each echo back and check
//! it), so every connection has one message in flight. All servers get a
//! listener made the same way (`SO_REUSEADDR`, backlog 1024, like tokio's
//! and may's `bind`; std's `bind` uses 128, which 512 simultaneous connects
//! can overflow) and set `TCP_NODELAY` on accepted sockets, as the client
//! does on its own.
//!
//! Each round runs every server once per workload, in a rotated order,
//! after one warm-up round; the table gives the median and range over the
//! rounds and the ratio of medians to tokio. A churn run is followed by a
//! pause (closing sockets finish their handshakes, TIME_WAIT entries pile up
//! less), and before every run the bench waits until the server has closed
//! every connection of the previous one. The CPU time other processes used
//! meanwhile is printed: on a 2-vCPU machine anything above a few percent
//! disturbs the numbers.
//!
//! Run with `cargo bench --bench echo` (needs the `[[bench]]` stanza with
//! `harness = false`); it takes about 35 s. Without a `--bench` argument (as
//! `cargo test --benches` runs it) it makes a smoke run of about a second:
//! one round, no warm-up, 1 churn iteration, 100 long round trips.
//! Environment knobs (ignored by the smoke run):
//! - `ECHO_ROUNDS` (default 7): measured rounds.
//! - `ECHO_SERVERS` (default all four): a comma-separated subset of
//!   `coroutines,threads,may,tokio`, e.g. to profile one server; may also
//!   name `coroutines-ws`, this runtime with `work_stealing(true)`.
//! - `ECHO_WORKLOADS` (default `churn,long`).
//! - `ECHO_CLIENT_THREADS` (default 8).
//! - `ECHO_CHURN_ITERS` (default 4): churn iterations per run.
//! - `ECHO_PAUSE_MS` (default 500): pause after each churn run.
//! - `ECHO_STATS=1`: also prints this runtime's context switches,
//!   migrations and reactor events per round trip, and the share of
//!   connections its busiest worker ran (medians over rounds).

#[path = "support/echo_client.rs"]
mod echo_client;
// Only its accept loop and handler are used here.
#[allow(dead_code)]
#[path = "support/echo_server.rs"]
mod echo_server;
#[path = "support/peer_servers.rs"]
mod peer_servers;
#[path = "support/stats.rs"]
mod stats;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use echo_client::{connect, env_or, listener, lockstep, shares, CHURN};
use echo_server::{accept_loop, Count};
use stats::{median, range, Machine};

/// Worker threads of every multi-worker runtime (this machine has 2 vCPUs).
const WORKERS: usize = 2;

const LONG_CONNECTIONS: usize = 100;
const LONG_ROUND_TRIPS: usize = 1000;
const LONG_MESSAGE: usize = 64;

/// How long to wait for a server to close the connections of a run.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

const SERVERS: [&str; 4] = ["coroutines", "threads", "may", "tokio"];
/// Servers that run only when `ECHO_SERVERS` names them.
const EXTRA_SERVERS: [&str; 1] = ["coroutines-ws"];
const WORKLOADS: [&str; 2] = ["churn", "long"];

/// Connections a server has accepted and finished; the bench waits for the
/// two to match between runs.
#[derive(Default)]
struct Tally {
    accepted: AtomicU64,
    finished: AtomicU64,
    /// Our runtime only: connections whose handler ran on each worker.
    per_worker: [AtomicU64; WORKERS],
}

impl Count for Tally {
    fn accept(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }
    fn finish(&self) {
        self.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// A running server.
struct Server {
    name: &'static str,
    address: SocketAddr,
    tally: Arc<Tally>,
}

impl Server {
    /// Waits until every connection the server accepted has been closed.
    fn drain(&self) {
        let start = Instant::now();
        loop {
            let accepted = self.tally.accepted.load(Ordering::Relaxed);
            let finished = self.tally.finished.load(Ordering::Relaxed);
            if accepted == finished {
                return;
            }
            assert!(
                start.elapsed() < DRAIN_TIMEOUT,
                "{}: {} connection(s) still open after {DRAIN_TIMEOUT:?}",
                self.name,
                accepted - finished
            );
            thread::sleep(Duration::from_millis(1));
        }
    }
}

struct Knobs {
    rounds: usize,
    /// Whether an unreported warm-up round comes first.
    warm_up: bool,
    client_threads: usize,
    churn_iters: usize,
    long_round_trips: usize,
    pause: Duration,
    stats: bool,
}

/// The items of a comma-separated list in `name`, or `default`.
fn env_list(name: &str, known: &[&'static str]) -> Vec<&'static str> {
    match std::env::var(name) {
        Ok(value) => value
            .split(',')
            .map(|item| {
                *known
                    .iter()
                    .find(|k| **k == item.trim())
                    .unwrap_or_else(|| panic!("{name}: unknown item {item:?}; known: {known:?}"))
            })
            .collect(),
        Err(_) => known
            .iter()
            .copied()
            .filter(|k| !EXTRA_SERVERS.contains(k))
            .collect(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // and gets a quick smoke run.
    let smoke = !std::env::args().any(|arg| arg == "--bench");
    let knobs = if smoke {
        Knobs {
            rounds: 1,
            warm_up: false,
            client_threads: 8,
            churn_iters: 1,
            long_round_trips: LONG_ROUND_TRIPS / 10,
            pause: Duration::from_millis(50),
            stats: false,
        }
    } else {
        Knobs {
            rounds: env_or("ECHO_ROUNDS", 7),
            warm_up: true,
            client_threads: env_or("ECHO_CLIENT_THREADS", 8),
            churn_iters: env_or("ECHO_CHURN_ITERS", 4),
            long_round_trips: LONG_ROUND_TRIPS,
            pause: Duration::from_millis(env_or("ECHO_PAUSE_MS", 500)),
            stats: std::env::var("ECHO_STATS").is_ok_and(|v| v == "1"),
        }
    };
    if smoke {
        println!("echo: smoke run (no --bench argument): 1 round, reduced sizes");
    }
    let all_servers: Vec<&'static str> = SERVERS.iter().chain(&EXTRA_SERVERS).copied().collect();
    let servers_wanted = env_list("ECHO_SERVERS", &all_servers);
    let workloads = env_list("ECHO_WORKLOADS", &WORKLOADS);
    print_config(&knobs, &servers_wanted, &workloads);

    // may's runtime is process-global: configure it before its first use.
    may::config().set_workers(WORKERS);
    let ours = coroutines::Runtime::builder()
        .workers(WORKERS)
        .build()
        .expect("our runtime");
    let ours_stealing = servers_wanted.contains(&"coroutines-ws").then(|| {
        coroutines::Runtime::builder()
            .workers(WORKERS)
            .work_stealing(true)
            .build()
            .expect("our work-stealing runtime")
    });
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_io()
        .build()
        .expect("tokio runtime");

    let servers: Vec<Server> = servers_wanted
        .iter()
        .map(|&name| match name {
            "coroutines" => start_coroutines("coroutines", &ours),
            "coroutines-ws" => start_coroutines("coroutines-ws", ours_stealing.as_ref().unwrap()),
            "threads" => start_threads(),
            "may" => start_may(),
            "tokio" => start_tokio(&tokio_rt),
            _ => unreachable!(),
        })
        .collect();

    // samples[workload][server] = one value per measured round.
    let mut samples = vec![vec![Vec::new(); servers.len()]; workloads.len()];
    // counters[workload] = our runtime's counters per round trip, per round.
    let mut counters: Vec<Vec<[f64; 4]>> = vec![Vec::new(); workloads.len()];
    let started = Instant::now();
    let cpu_before = Machine::now();
    let first_round = usize::from(!knobs.warm_up);
    for round in first_round..=knobs.rounds {
        let warm_up = round == 0;
        eprint!(
            "{}",
            if warm_up {
                "warm-up".to_owned()
            } else {
                format!(" {round}")
            }
        );
        for (w, &workload) in workloads.iter().enumerate() {
            for k in 0..servers.len() {
                let s = (k + round) % servers.len();
                let server = &servers[s];
                server.drain();
                let before = ours.stats();
                let before_workers = worker_counts(&server.tally);
                let value = match workload {
                    "churn" => churn(server.address, &knobs),
                    _ => long(server.address, &knobs),
                };
                if server.name == "coroutines" && !warm_up {
                    let [switches, migrations, events] =
                        per_round_trip(workload, &before, &ours.stats(), &knobs);
                    let after_workers = worker_counts(&server.tally);
                    let handled: Vec<u64> = (0..WORKERS)
                        .map(|i| after_workers[i] - before_workers[i])
                        .collect();
                    let busiest = *handled.iter().max().unwrap() as f64
                        / handled.iter().sum::<u64>().max(1) as f64;
                    counters[w].push([switches, migrations, events, busiest]);
                }
                if workload == "churn" {
                    thread::sleep(knobs.pause);
                }
                if !warm_up {
                    samples[w][s].push(value);
                }
            }
        }
    }
    eprintln!("; {:.1?} in all", started.elapsed());
    let (ours_busy, others_busy) = cpu_before.shares_since(0.0);
    println!(
        "  CPU use during the bench: this process {:.0}%, other processes {:.0}% of all CPUs \
         (others' share should be near 0 for a clean measurement)",
        ours_busy * 100.0,
        others_busy * 100.0
    );

    println!();
    println!("| workload | server | median | min - max | median vs tokio |");
    println!("|---|---|---:|---:|---:|");
    for (w, &workload) in workloads.iter().enumerate() {
        let unit = if workload == "churn" {
            "ms/iteration"
        } else {
            "ms/run"
        };
        let tokio_median = servers
            .iter()
            .position(|s| s.name == "tokio")
            .map(|t| median(samples[w][t].iter().copied()));
        for (s, server) in servers.iter().enumerate() {
            let values = &samples[w][s];
            let m = median(values.iter().copied());
            let (lo, hi) = range(values.iter().copied());
            let ratio = tokio_median.map_or("-".to_owned(), |t| format!("{:.2}x", m / t));
            println!(
                "| {workload} ({unit}) | {} | {m:.1} | {lo:.1} - {hi:.1} | {ratio} |",
                server.name
            );
        }
    }
    if knobs.stats {
        println!();
        println!("coroutines counters per round trip (median over rounds):");
        for (w, &workload) in workloads.iter().enumerate() {
            let column = |i: usize| median(counters[w].iter().map(|c| c[i]));
            println!(
                "  {workload}: {:.2} context switches, {:.3} migrations, {:.2} reactor events; \
                 the busiest worker ran {:.0}% of the connections",
                column(0),
                column(1),
                column(2),
                column(3) * 100.0
            );
        }
    }
}

fn print_config(knobs: &Knobs, servers: &[&str], workloads: &[&str]) {
    println!(
        "echo: {} round(s) after {} warm-up round; each round runs every server once per \
         workload, in a rotated order",
        knobs.rounds,
        usize::from(knobs.warm_up)
    );
    println!(
        "  machine: {} CPUs available; servers: {} ({WORKERS} workers each where configurable)",
        thread::available_parallelism().map_or(0, |n| n.get()),
        servers.join(", ")
    );
    println!(
        "  client: {} blocking OS threads, connections split evenly, lockstep",
        knobs.client_threads
    );
    if workloads.contains(&"churn") {
        println!(
            "  churn: {} iteration(s) per run of {} connections x {} round trips of {} B, then \
             close; {:?} pause after each run",
            knobs.churn_iters, CHURN.connections, CHURN.round_trips, CHURN.message, knobs.pause
        );
    }
    if workloads.contains(&"long") {
        println!(
            "  long: {LONG_CONNECTIONS} connections x {} round trips of {LONG_MESSAGE} B \
             (connecting not timed)",
            knobs.long_round_trips
        );
    }
}

/// Our runtime's context switches, migrations and reactor events per round
/// trip in one run.
fn per_round_trip(
    workload: &str,
    before: &coroutines::Stats,
    after: &coroutines::Stats,
    knobs: &Knobs,
) -> [f64; 3] {
    let round_trips = match workload {
        "churn" => knobs.churn_iters * CHURN.connections * CHURN.round_trips,
        _ => LONG_CONNECTIONS * (knobs.long_round_trips + 1),
    } as f64;
    [
        (after.context_switches - before.context_switches) as f64 / round_trips,
        (after.migrations - before.migrations) as f64 / round_trips,
        (after.reactor_events - before.reactor_events) as f64 / round_trips,
    ]
}

fn worker_counts(tally: &Tally) -> [u64; WORKERS] {
    std::array::from_fn(|i| tally.per_worker[i].load(Ordering::Relaxed))
}

// ---------------------------------------------------------------- client

/// One churn run; returns ms per iteration.
fn churn(address: SocketAddr, knobs: &Knobs) -> f64 {
    let elapsed = echo_client::churn(address, &CHURN, knobs.client_threads, knobs.churn_iters);
    elapsed.as_secs_f64() * 1e3 / knobs.churn_iters as f64
}

/// One long run; returns ms for the round trips.
fn long(address: SocketAddr, knobs: &Knobs) -> f64 {
    let shares = shares(LONG_CONNECTIONS, knobs.client_threads);
    let round_trips = knobs.long_round_trips;
    let start_line = Arc::new(Barrier::new(shares.len() + 1));
    let finish_line = Arc::new(Barrier::new(shares.len() + 1));
    let clients: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let (start_line, finish_line) = (start_line.clone(), finish_line.clone());
            thread::spawn(move || {
                let message = [0xa5; LONG_MESSAGE];
                let mut echo = [0; LONG_MESSAGE];
                let mut streams: Vec<_> = (0..share).map(|_| connect(address)).collect();
                // One round trip each so that every connection is accepted
                // and its handler runs before the clock starts.
                lockstep(&mut streams, &message, &mut echo, 1);
                start_line.wait();
                lockstep(&mut streams, &message, &mut echo, round_trips);
                finish_line.wait();
            })
        })
        .collect();
    start_line.wait();
    let start = Instant::now();
    finish_line.wait();
    let elapsed = start.elapsed();
    for client in clients {
        client.join().expect("client thread panicked");
    }
    elapsed.as_secs_f64() * 1e3
}

// --------------------------------------------------------------- servers

fn start_coroutines(name: &'static str, runtime: &coroutines::Runtime) -> Server {
    let listener = listener();
    let address = listener.local_addr().unwrap();
    let tally = Arc::new(Tally::default());
    let server_tally = tally.clone();
    runtime.spawn(move || {
        let counts = server_tally.clone();
        accept_loop("coroutines", listener, server_tally, move |handler| {
            let counts = counts.clone();
            coroutines::spawn(move || {
                let worker = thread::current()
                    .name()
                    .and_then(|name| name.rsplit('-').next()?.parse::<usize>().ok());
                if let Some(counter) = worker.and_then(|w| counts.per_worker.get(w)) {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                handler();
            });
        })
    });
    Server {
        name,
        address,
        tally,
    }
}

fn start_threads() -> Server {
    let listener = listener();
    let address = listener.local_addr().unwrap();
    let tally = Arc::new(Tally::default());
    peer_servers::threads(listener, tally.clone());
    Server {
        name: "threads",
        address,
        tally,
    }
}

fn start_may() -> Server {
    let listener = listener();
    let address = listener.local_addr().unwrap();
    let tally = Arc::new(Tally::default());
    peer_servers::may(listener, tally.clone());
    Server {
        name: "may",
        address,
        tally,
    }
}

fn start_tokio(runtime: &tokio::runtime::Runtime) -> Server {
    let listener = listener();
    let address = listener.local_addr().unwrap();
    let tally = Arc::new(Tally::default());
    runtime.spawn(peer_servers::tokio(listener, tally.clone()));
    Server {
        name: "tokio",
        address,
        tally,
    }
}
