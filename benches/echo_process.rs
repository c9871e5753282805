//! Echo servers, each in a process of its own, driven by a client in this
//! process (issue 11): wall time, the server process's CPU time per round
//! trip and per connection, and round-trip latency at a fixed offered rate.
//!
//! Unlike `echo.rs`, where client and servers share one process (and so
//! its CPU time and our hook layer), here:
//! - this binary (driver and client) does not link `coroutines`: its calls
//!   go straight to glibc (check: `nm -D` shows `recv`, `send` undefined,
//!   and `nm` shows no `coroutines` symbol);
//! - every server runs in a child process started for one round and ended
//!   after it; the peers' servers are this same binary re-executed as
//!   `echo_process serve NAME FD`, ours is the `echo_server_coroutines`
//!   binary (the only one that links `coroutines`);
//! - the driver creates every listener the same way (`SO_REUSEADDR`,
//!   backlog 1024) and hands it to the server as an inherited descriptor;
//! - a server's CPU time is what it reports from
//!   `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)` (user + system, all
//!   threads) when asked on stdin, before and after each measured window;
//!   `wait4`'s rusage of the ended process cross-checks the sum.
//!
//! Servers: ours (std::net in coroutines, 2 workers, thread identity on,
//! the default; and off), a thread per connection, `may` (2 workers),
//! tokio multi-thread (2 workers) and current_thread, and a floor: raw
//! edge-triggered epoll on 2 threads, one `recv` and one `send` per
//! message. All set `TCP_NODELAY` on accepted sockets, as the client does.
//!
//! Workloads, all with blocking client threads:
//! - churn: per iteration 512 connections, each doing 4 lockstep round
//!   trips of 512 bytes and then closing (8 client threads); ms per
//!   iteration, server CPU per accepted connection (accept to close). The
//!   server process is new: its first connections also pay for what it
//!   keeps for later ones (stacks, pooled tasks, the kernel's socket
//!   caches).
//! - churn-warm: the same, measured on the same server process after it
//!   has served 8 more unmeasured iterations (4,096 connections): what a
//!   server in steady state pays per connection.
//! - long: 100 persistent connections x 1000 lockstep round trips of 64
//!   bytes (8 client threads); ms per run and server CPU per round trip,
//!   both without connecting and closing.
//! - paced: 100 persistent connections, 4 client threads, each sending one
//!   64-byte message at a time on its connections in turn at a fixed pace
//!   (20,000 round trips/s in all, far below every server's saturation);
//!   p50 and p99 of the round trip, timed from the `send` to the end of
//!   the echo, the achieved rate, and the server's CPU per round trip. The
//!   threads share one schedule, so messages arrive in bursts of up to 4.
//!
//! Each round starts every server once, in a rotated order, after one
//! unreported warm-up round; each column gives the median over rounds and
//! the ratio of medians to tokio multi-thread and to the epoll floor. The
//! share of the machine's CPU time that other processes used during each
//! run is recorded; the tables give the largest per server, and a
//! disturbed run is repeated (see the knobs).
//!
//! Run with `cargo bench --bench echo_process` (~2.5 min on a quiet
//! machine, longer when disturbed runs are repeated). Without a `--bench`
//! argument (as `cargo test --benches` runs it) it makes a smoke run of a
//! few seconds. Environment knobs (ignored by the smoke run):
//! - `ECHO_PROCESS_ROUNDS` (default 5): measured rounds.
//! - `ECHO_PROCESS_SERVERS`: a comma-separated subset of
//!   `coroutines,coroutines-noid,threads,may,tokio,tokio-ct,floor`.
//! - `ECHO_PROCESS_WORKLOADS` (default `churn,churn-warm,long,paced`).
//! - `ECHO_PROCESS_CHURN_WARM` (default 8): the unmeasured iterations
//!   before churn-warm's measured ones.
//! - `ECHO_PROCESS_RATE` (default 20000): paced round trips per second.
//! - `ECHO_PROCESS_PACED_MS` (default 2000): length of a paced run.
//! - `ECHO_PROCESS_MAX_OTHERS` (default 10) and `ECHO_PROCESS_RERUNS`
//!   (default 3): a server's run in which other processes used more than
//!   this percentage of the CPUs during a measured window is repeated, up
//!   to this many times (the last attempt is kept either way).

#[path = "support/echo_client.rs"]
mod echo_client;
#[path = "support/echo_server.rs"]
mod echo_server;
#[path = "support/peer_servers.rs"]
mod peer_servers;
#[path = "support/stats.rs"]
mod stats;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use echo_client::{connect, env_or, listener, lockstep, shares, CHURN};
use echo_server::{control_loop, inherited_listener, Count, Tally, SERVER_BUFFER};
use stats::{median, range, Machine};

/// Our server: the one binary of the package that links `coroutines`.
const OUR_SERVER: &str = env!("CARGO_BIN_EXE_echo_server_coroutines");

/// Worker threads of every multi-worker server (the machine has 2 vCPUs).
const WORKERS: usize = 2;

const LONG_CONNECTIONS: usize = 100;
const LONG_ROUND_TRIPS: usize = 1000;
const LONG_MESSAGE: usize = 64;
const PACED_CONNECTIONS: usize = 100;
const PACED_THREADS: usize = 4;
const PACED_MESSAGE: usize = 64;
/// Client threads of the churn and long workloads.
const CLIENT_THREADS: usize = 8;

/// The pause before a disturbed run is repeated.
const RERUN_PAUSE: Duration = Duration::from_secs(2);
/// How long to wait for a server to close the connections of a run.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A server: the name in the tables, the name on the command line, and how
/// its process starts.
struct Kind {
    name: &'static str,
    id: &'static str,
    launch: Launch,
}

enum Launch {
    /// The `echo_server_coroutines` binary with these extra arguments.
    Ours(&'static [&'static str]),
    /// This binary, as `serve ID FD`.
    Peer,
}

const KINDS: [Kind; 7] = [
    Kind {
        name: "coroutines",
        id: "coroutines",
        launch: Launch::Ours(&[]),
    },
    Kind {
        name: "coroutines, identity off",
        id: "coroutines-noid",
        launch: Launch::Ours(&["identity-off"]),
    },
    Kind {
        name: "threads",
        id: "threads",
        launch: Launch::Peer,
    },
    Kind {
        name: "may",
        id: "may",
        launch: Launch::Peer,
    },
    Kind {
        name: "tokio",
        id: "tokio",
        launch: Launch::Peer,
    },
    Kind {
        name: "tokio current_thread",
        id: "tokio-ct",
        launch: Launch::Peer,
    },
    Kind {
        name: "epoll floor",
        id: "floor",
        launch: Launch::Peer,
    },
];
const TOKIO: &str = "tokio";
const FLOOR: &str = "floor";

#[derive(Clone, Copy, PartialEq)]
enum Workload {
    Churn,
    ChurnWarm,
    Long,
    Paced,
}

const WORKLOADS: [(&str, Workload); 4] = [
    ("churn", Workload::Churn),
    ("churn-warm", Workload::ChurnWarm),
    ("long", Workload::Long),
    ("paced", Workload::Paced),
];

struct Knobs {
    rounds: usize,
    warm_up: bool,
    churn_iters: usize,
    /// Unmeasured churn iterations before churn-warm's measured ones,
    /// against the same server process.
    churn_warm: usize,
    long_round_trips: usize,
    rate: f64,
    paced: Duration,
    pause: Duration,
    /// A server's run is repeated (up to `reruns` times) when other
    /// processes used more than this share of the CPUs during one of its
    /// measured windows.
    max_others: f64,
    reruns: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        serve(args.get(2).map_or("", String::as_str), args.get(3));
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // and gets a quick smoke run.
    let smoke = !args.iter().any(|arg| arg == "--bench");
    let knobs = if smoke {
        Knobs {
            rounds: 1,
            warm_up: false,
            churn_iters: 1,
            churn_warm: 1,
            long_round_trips: LONG_ROUND_TRIPS / 10,
            rate: 5_000.0,
            paced: Duration::from_millis(200),
            pause: Duration::from_millis(50),
            max_others: 1.0,
            reruns: 0,
        }
    } else {
        Knobs {
            rounds: env_or("ECHO_PROCESS_ROUNDS", 5),
            warm_up: true,
            churn_iters: 4,
            churn_warm: env_or("ECHO_PROCESS_CHURN_WARM", 8),
            long_round_trips: LONG_ROUND_TRIPS,
            rate: env_or("ECHO_PROCESS_RATE", 20_000.0),
            paced: Duration::from_millis(env_or("ECHO_PROCESS_PACED_MS", 2000)),
            pause: Duration::from_millis(500),
            max_others: env_or("ECHO_PROCESS_MAX_OTHERS", 10.0) / 100.0,
            reruns: env_or("ECHO_PROCESS_RERUNS", 3),
        }
    };
    let kinds: Vec<&Kind> = match std::env::var("ECHO_PROCESS_SERVERS") {
        Ok(list) if !smoke => list
            .split(',')
            .map(|id| {
                KINDS
                    .iter()
                    .find(|k| k.id == id.trim())
                    .unwrap_or_else(|| panic!("ECHO_PROCESS_SERVERS: unknown server {id:?}"))
            })
            .collect(),
        _ => KINDS.iter().collect(),
    };
    let workloads: Vec<(&str, Workload)> = match std::env::var("ECHO_PROCESS_WORKLOADS") {
        Ok(list) if !smoke => list
            .split(',')
            .map(|w| {
                *WORKLOADS
                    .iter()
                    .find(|(name, _)| *name == w.trim())
                    .unwrap_or_else(|| panic!("ECHO_PROCESS_WORKLOADS: unknown workload {w:?}"))
            })
            .collect(),
        _ => WORKLOADS.to_vec(),
    };
    if smoke {
        println!("echo_process: smoke run (no --bench argument): 1 round, reduced sizes");
    }
    print_config(&knobs, &kinds, &workloads);

    // samples[server][workload]: one per measured round.
    let mut samples: Vec<Vec<Vec<Sample>>> = vec![vec![Vec::new(); workloads.len()]; kinds.len()];
    // Per server and round: CPU of the whole process (rusage) minus the
    // measured windows, in ms: start-up, pauses, drains and exit.
    let mut outside: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    let started = Instant::now();
    let machine_before = Machine::now();
    let mut reruns = 0;
    for round in usize::from(!knobs.warm_up)..=knobs.rounds {
        let warm_up = round == 0;
        eprint!(
            "{}",
            if warm_up {
                "warm-up".into()
            } else {
                format!(" {round}")
            }
        );
        for k in 0..kinds.len() {
            let s = (k + round) % kinds.len();
            let mut attempt = 0;
            let (run, outside_ms) = loop {
                let (run, outside_ms) = run_server(kinds[s], &workloads, &knobs);
                let disturbed = run.iter().map(|x| x.others).fold(0.0, f64::max);
                if warm_up || disturbed <= knobs.max_others || attempt == knobs.reruns {
                    break (run, outside_ms);
                }
                attempt += 1;
                reruns += 1;
                eprint!(" [{} again: others {:.0}%]", kinds[s].id, disturbed * 100.0);
                thread::sleep(RERUN_PAUSE);
            };
            if !warm_up {
                for (w, sample) in run.into_iter().enumerate() {
                    samples[s][w].push(sample);
                }
                outside[s].push(outside_ms);
            }
        }
    }
    eprintln!("; {:.1?} in all", started.elapsed());
    let (own, others) = machine_before.shares_since(0.0);
    println!(
        "  CPU use during the bench: this process and its servers {:.0}%, other processes \
         {:.0}% of all CPUs; {reruns} server run(s) repeated because others used more than \
         {:.0}%",
        own * 100.0,
        others * 100.0,
        knobs.max_others * 100.0
    );
    report(&kinds, &workloads, &samples, &outside);
}

/// Starts `kind`'s server, runs every workload on it once, and stops it;
/// returns a sample per workload and the server's CPU time outside the
/// measured windows (start-up, pauses, drains, exit), in ms.
fn run_server(kind: &Kind, workloads: &[(&str, Workload)], knobs: &Knobs) -> (Vec<Sample>, f64) {
    let mut server = ServerProcess::start(kind);
    let mut run = Vec::new();
    for &(_, workload) in workloads {
        run.push(match workload {
            Workload::Churn => churn(&mut server, knobs, 0),
            Workload::ChurnWarm => churn(&mut server, knobs, knobs.churn_warm),
            Workload::Long => long(&mut server, knobs),
            Workload::Paced => paced(&mut server, knobs),
        });
        if matches!(workload, Workload::Churn | Workload::ChurnWarm) {
            thread::sleep(knobs.pause);
        }
    }
    let measured_ns: u64 = run.iter().map(|x| x.cpu_ns).sum();
    let total_ns = server.stop();
    (run, total_ns.saturating_sub(measured_ns) as f64 / 1e6)
}

fn print_config(knobs: &Knobs, kinds: &[&Kind], workloads: &[(&str, Workload)]) {
    println!(
        "echo_process: {} round(s) after {} warm-up round; each round starts every server \
         process once, in a rotated order, and runs the workloads on it",
        knobs.rounds,
        usize::from(knobs.warm_up)
    );
    println!(
        "  machine: {} CPUs; servers ({WORKERS} workers where configurable): {}",
        thread::available_parallelism().map_or(0, |n| n.get()),
        kinds.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
    );
    for (name, workload) in workloads {
        match workload {
            Workload::Churn | Workload::ChurnWarm => println!(
                "  {name}: {} iteration(s) of {} connections x {} lockstep round trips of {} \
                 B, then close, after {} unmeasured; {CLIENT_THREADS} client threads; {:?} \
                 pause after",
                knobs.churn_iters,
                CHURN.connections,
                CHURN.round_trips,
                CHURN.message,
                match workload {
                    Workload::ChurnWarm => knobs.churn_warm,
                    _ => 0,
                },
                knobs.pause
            ),
            Workload::Long => println!(
                "  {name}: {LONG_CONNECTIONS} connections x {} lockstep round trips of \
                 {LONG_MESSAGE} B; {CLIENT_THREADS} client threads; connecting not measured",
                knobs.long_round_trips
            ),
            Workload::Paced => println!(
                "  {name}: {PACED_CONNECTIONS} connections, {PACED_THREADS} client threads \
                 sending one {PACED_MESSAGE} B message at a time, {} round trips/s in all, \
                 for {:?}",
                knobs.rate, knobs.paced
            ),
        }
    }
}

// ------------------------------------------------------------ measuring

/// One workload run on one server.
#[derive(Clone, Default)]
struct Sample {
    /// ms per churn iteration or per long run; for paced runs, the achieved
    /// rate in round trips/s.
    wall: f64,
    /// Server CPU in the measured window.
    cpu_ns: u64,
    /// Round trips and connections in the window.
    round_trips: u64,
    connections: u64,
    /// Paced runs: round-trip percentiles, in us.
    p50: f64,
    p99: f64,
    /// Share of the machine's CPU time used by processes other than this
    /// one and the server.
    others: f64,
}

/// A server's counters as it reported them.
#[derive(Clone, Copy)]
struct Counters {
    accepted: u64,
    finished: u64,
    cpu_ns: u64,
}

/// A running server process.
struct ServerProcess {
    name: &'static str,
    child: Child,
    control: ChildStdin,
    replies: BufReader<ChildStdout>,
    address: SocketAddr,
    /// Connections the client has made to it so far.
    connections: u64,
}

impl ServerProcess {
    fn start(kind: &Kind) -> ServerProcess {
        let listener = listener();
        let address = listener.local_addr().expect("listener address");
        let fd = listener.as_raw_fd();
        let mut command = match kind.launch {
            Launch::Ours(extra) => {
                let mut c = Command::new(OUR_SERVER);
                c.arg(fd.to_string()).args(extra);
                c
            }
            Launch::Peer => {
                let mut c = Command::new(std::env::current_exe().expect("current_exe"));
                c.args(["serve", kind.id, &fd.to_string()]);
                c
            }
        };
        command.stdin(Stdio::piped()).stdout(Stdio::piped());
        // SAFETY: between fork and exec the closure only makes one fcntl
        // call, which is async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                // Keep the listener across exec in the child only.
                if libc::fcntl(fd, libc::F_SETFD, 0) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start the server: {e}", kind.name));
        drop(listener);
        let control = child.stdin.take().unwrap();
        let mut replies = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        replies.read_line(&mut line).expect("server: ready line");
        assert_eq!(
            line.trim(),
            echo_server::READY,
            "{}: no ready line",
            kind.name
        );
        ServerProcess {
            name: kind.name,
            child,
            control,
            replies,
            address,
            connections: 0,
        }
    }

    fn counters(&mut self) -> Counters {
        writeln!(self.control, "{}", echo_server::STATS).expect("server: write stats");
        self.control.flush().expect("server: flush stats");
        let mut line = String::new();
        self.replies
            .read_line(&mut line)
            .expect("server: read stats");
        let values: Vec<u64> = line
            .split_whitespace()
            .map(|v| v.parse().expect("server: stats value"))
            .collect();
        assert_eq!(values.len(), 3, "{}: bad stats line {line:?}", self.name);
        Counters {
            accepted: values[0],
            finished: values[1],
            cpu_ns: values[2],
        }
    }

    /// Waits until the server has accepted and closed every connection the
    /// client made; returns its counters then.
    fn drain(&mut self) -> Counters {
        let start = Instant::now();
        loop {
            let c = self.counters();
            if c.accepted == self.connections && c.finished == self.connections {
                return c;
            }
            assert!(
                start.elapsed() < DRAIN_TIMEOUT,
                "{}: {} of {} connections accepted and {} closed after {DRAIN_TIMEOUT:?}",
                self.name,
                c.accepted,
                self.connections,
                c.finished
            );
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Closes the server's stdin, which ends it, and returns the CPU time
    /// of the whole process from `wait4`.
    fn stop(self) -> u64 {
        let ServerProcess {
            name,
            child,
            control,
            ..
        } = self;
        drop(control);
        let mut status = 0;
        // SAFETY: waits for our own child and fills the struct.
        let usage = unsafe {
            let mut usage = std::mem::zeroed::<libc::rusage>();
            let pid = libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage);
            assert_eq!(pid, child.id() as libc::pid_t, "{name}: wait4");
            usage
        };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{name}: the server ended with status {status:#x}"
        );
        stats::cpu_ns(&usage) as u64
    }
}

// --------------------------------------------------------------- client

/// Measures the server between two points of a run: counters and machine
/// time at the start, and a sample at the end.
struct Window {
    counters: Counters,
    machine: Machine,
}

impl Window {
    fn open(server: &mut ServerProcess) -> Window {
        Window {
            counters: server.counters(),
            machine: Machine::now(),
        }
    }

    fn close(self, end: Counters, round_trips: usize, connections: usize) -> Sample {
        let cpu_ns = end.cpu_ns - self.counters.cpu_ns;
        let (_, others) = self.machine.shares_since(cpu_ns as f64);
        Sample {
            cpu_ns,
            round_trips: round_trips as u64,
            connections: connections as u64,
            others,
            ..Sample::default()
        }
    }
}

/// One churn run after `warm` unmeasured iterations: connections opened,
/// used and closed; the window runs until the server has closed them all.
fn churn(server: &mut ServerProcess, knobs: &Knobs, warm: usize) -> Sample {
    if warm > 0 {
        echo_client::churn(server.address, &CHURN, CLIENT_THREADS, warm);
        server.connections += (warm * CHURN.connections) as u64;
        server.drain();
        thread::sleep(knobs.pause);
    }
    let iters = knobs.churn_iters;
    let window = Window::open(server);
    let elapsed = echo_client::churn(server.address, &CHURN, CLIENT_THREADS, iters);
    let connections = iters * CHURN.connections;
    server.connections += connections as u64;
    let end = server.drain();
    let mut sample = window.close(end, connections * CHURN.round_trips, connections);
    sample.wall = elapsed.as_secs_f64() * 1e3 / iters as f64;
    sample
}

/// Client threads on persistent connections, each connected and warmed up
/// by one round trip per connection before the window opens, released
/// together, and closing their connections after the window closes.
struct Persistent<T> {
    go: Arc<Barrier>,
    done: Arc<Barrier>,
    threads: Vec<thread::JoinHandle<T>>,
}

impl<T: Send + 'static> Persistent<T> {
    /// Starts a thread per share running `body(streams)` once released.
    fn start(
        address: SocketAddr,
        connections: usize,
        threads: usize,
        message: usize,
        body: impl Fn(&mut [TcpStream]) -> T + Send + Sync + 'static,
    ) -> Persistent<T> {
        let shares = shares(connections, threads);
        let ready = Arc::new(Barrier::new(shares.len() + 1));
        let go = Arc::new(Barrier::new(shares.len() + 1));
        let done = Arc::new(Barrier::new(shares.len() + 1));
        let body = Arc::new(body);
        let threads = shares
            .into_iter()
            .map(|share| {
                let (ready, go, done, body) =
                    (ready.clone(), go.clone(), done.clone(), body.clone());
                thread::spawn(move || {
                    let mut streams: Vec<_> = (0..share).map(|_| connect(address)).collect();
                    let warm = vec![0x33; message];
                    lockstep(&mut streams, &warm, &mut vec![0; message], 1);
                    ready.wait();
                    go.wait();
                    let result = body(&mut streams);
                    done.wait();
                    result
                })
            })
            .collect();
        ready.wait();
        Persistent { go, done, threads }
    }

    fn release(&self) {
        self.go.wait();
    }

    /// Waits until every thread's body has ended.
    fn wait_done(&self) {
        self.done.wait();
    }

    /// The threads' results, once they have closed their connections.
    fn join(self) -> Vec<T> {
        self.threads
            .into_iter()
            .map(|t| t.join().expect("client thread panicked"))
            .collect()
    }
}

/// One long run: lockstep round trips on persistent connections; the
/// window covers the round trips only.
fn long(server: &mut ServerProcess, knobs: &Knobs) -> Sample {
    let round_trips = knobs.long_round_trips;
    let clients = Persistent::start(
        server.address,
        LONG_CONNECTIONS,
        CLIENT_THREADS,
        LONG_MESSAGE,
        move |streams| {
            let message = [0xa5; LONG_MESSAGE];
            lockstep(streams, &message, &mut [0; LONG_MESSAGE], round_trips);
        },
    );
    let window = Window::open(server);
    let start = Instant::now();
    clients.release();
    clients.wait_done();
    let elapsed = start.elapsed();
    let end = server.counters();
    clients.join();
    let mut sample = window.close(end, LONG_CONNECTIONS * round_trips, 0);
    sample.wall = elapsed.as_secs_f64() * 1e3;
    server.connections += LONG_CONNECTIONS as u64;
    server.drain();
    sample
}

/// One paced run: every client thread sends one message at a time, on its
/// connections in turn, at a fixed pace; round trips are timed from the
/// `send` to the end of the echo.
fn paced(server: &mut ServerProcess, knobs: &Knobs) -> Sample {
    let interval = Duration::from_secs_f64(PACED_THREADS as f64 / knobs.rate);
    let length = knobs.paced;
    let clients = Persistent::start(
        server.address,
        PACED_CONNECTIONS,
        PACED_THREADS,
        PACED_MESSAGE,
        move |streams| {
            // Sleep to the next send time as precisely as the kernel can
            // (the default timer slack is 50 us).
            // SAFETY: sets this thread's timer slack to 1 ns.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1) };
            let message = [0x5a; PACED_MESSAGE];
            let mut echo = [0; PACED_MESSAGE];
            let mut latencies =
                Vec::with_capacity((length.as_secs_f64() / interval.as_secs_f64()) as usize + 1);
            let start = Instant::now();
            let mut next = start;
            let mut i = 0;
            while next - start < length {
                let now = Instant::now();
                if next > now {
                    thread::sleep(next - now);
                }
                let stream = &mut streams[i % streams.len()];
                let sent = Instant::now();
                stream.write_all(&message).expect("client: write");
                stream.read_exact(&mut echo).expect("client: read");
                latencies.push(sent.elapsed().as_nanos() as u64);
                i += 1;
                next += interval;
            }
            latencies
        },
    );
    let window = Window::open(server);
    let start = Instant::now();
    clients.release();
    clients.wait_done();
    let elapsed = start.elapsed();
    let end = server.counters();
    let mut latencies: Vec<u64> = clients.join().into_iter().flatten().collect();
    let mut sample = window.close(end, latencies.len(), 0);
    latencies.sort_unstable();
    let percentile =
        |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)] as f64 / 1e3;
    sample.p50 = percentile(50);
    sample.p99 = percentile(99);
    sample.wall = latencies.len() as f64 / elapsed.as_secs_f64();
    server.connections += PACED_CONNECTIONS as u64;
    server.drain();
    sample
}

// -------------------------------------------------------------- report

/// A figure taken from a sample.
type Metric = dyn Fn(&Sample) -> f64;

fn report(
    kinds: &[&Kind],
    workloads: &[(&str, Workload)],
    samples: &[Vec<Vec<Sample>>],
    outside: &[Vec<f64>],
) {
    let position = |id: &str| kinds.iter().position(|k| k.id == id);
    let (tokio, floor) = (position(TOKIO), position(FLOOR));
    // "a / b" for the medians of `metric` of server `s` and a reference.
    let ratio = |w: usize, s: usize, reference: Option<usize>, metric: &Metric| {
        reference.map_or("-".to_owned(), |r| {
            let of = |i: usize| median(samples[i][w].iter().map(metric));
            format!("{:.2}x", of(s) / of(r))
        })
    };
    let others = |w: usize, s: usize| {
        let most = samples[s][w].iter().map(|x| x.others).fold(0.0, f64::max);
        format!("{:.0}%", most * 100.0)
    };
    for (w, &(name, workload)) in workloads.iter().enumerate() {
        println!();
        let cpu_per_rt = |x: &Sample| x.cpu_ns as f64 / x.round_trips as f64 / 1e3;
        let cpu_per_conn = |x: &Sample| x.cpu_ns as f64 / x.connections as f64 / 1e3;
        let wall = |x: &Sample| x.wall;
        match workload {
            Workload::Churn | Workload::ChurnWarm | Workload::Long => {
                let (unit, cpu_unit, cpu): (&str, &str, &Metric) = if workload != Workload::Long {
                    ("ms/iteration", "us/connection", &cpu_per_conn)
                } else {
                    ("ms/run", "us/round trip", &cpu_per_rt)
                };
                println!(
                    "{name}: wall ({unit}) and server CPU ({cpu_unit}); median [min - max] over \
                     rounds, ratios of medians"
                );
                println!();
                println!(
                    "| server | wall | vs tokio | vs floor | server CPU | vs tokio | vs floor | \
                     others' CPU |"
                );
                println!("|---|---:|---:|---:|---:|---:|---:|---:|");
                for (s, kind) in kinds.iter().enumerate() {
                    println!(
                        "| {} | {} | {} | {} | {} | {} | {} | {} |",
                        kind.name,
                        spread(&samples[s][w], &wall, 1),
                        ratio(w, s, tokio, &wall),
                        ratio(w, s, floor, &wall),
                        spread(&samples[s][w], cpu, 2),
                        ratio(w, s, tokio, cpu),
                        ratio(w, s, floor, cpu),
                        others(w, s),
                    );
                }
            }
            Workload::Paced => {
                let p50 = |x: &Sample| x.p50;
                let p99 = |x: &Sample| x.p99;
                println!(
                    "{name}: round trip p50 and p99 (us), achieved rate (round trips/s), server \
                     CPU (us/round trip); medians over rounds, ratios of medians"
                );
                println!();
                println!(
                    "| server | p50 | p99 | p50, p99 vs tokio | p50, p99 vs floor | rate | \
                     server CPU | vs tokio | vs floor | others' CPU |"
                );
                println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
                for (s, kind) in kinds.iter().enumerate() {
                    let m = |f: &Metric| median(samples[s][w].iter().map(f));
                    println!(
                        "| {} | {:.1} | {:.1} | {}, {} | {}, {} | {:.0} | {} | {} | {} | {} |",
                        kind.name,
                        m(&p50),
                        m(&p99),
                        ratio(w, s, tokio, &p50),
                        ratio(w, s, tokio, &p99),
                        ratio(w, s, floor, &p50),
                        ratio(w, s, floor, &p99),
                        m(&wall),
                        spread(&samples[s][w], &cpu_per_rt, 2),
                        ratio(w, s, tokio, &cpu_per_rt),
                        ratio(w, s, floor, &cpu_per_rt),
                        others(w, s),
                    );
                }
            }
        }
    }
    println!();
    println!(
        "Server CPU outside the measured windows (start-up, drains, pauses, exit; rusage of the \
         ended process minus the windows), ms per process, median: {}",
        kinds
            .iter()
            .enumerate()
            .map(|(s, k)| format!("{} {:.1}", k.name, median(outside[s].iter().copied())))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// "median [min - max]" of `metric` over `samples`.
fn spread(samples: &[Sample], metric: &Metric, decimals: usize) -> String {
    let (lo, hi) = range(samples.iter().map(metric));
    let m = median(samples.iter().map(metric));
    format!("{m:.decimals$} [{lo:.decimals$} - {hi:.decimals$}]")
}

// -------------------------------------------------------------- servers

/// Runs the peer server `id` on the inherited listener `fd` until stdin
/// closes.
fn serve(id: &str, fd: Option<&String>) -> ! {
    let listener = inherited_listener(fd.map(String::as_str));
    let tally = Arc::new(Tally::default());
    let server_tally = tally.clone();
    // Runtimes live until the process exits.
    let _tokio: Option<tokio::runtime::Runtime>;
    match id {
        "threads" => {
            _tokio = None;
            peer_servers::threads(listener, server_tally);
        }
        "may" => {
            _tokio = None;
            may::config().set_workers(WORKERS);
            peer_servers::may(listener, server_tally);
        }
        "tokio" => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(WORKERS)
                .enable_io()
                .build()
                .expect("tokio runtime");
            runtime.spawn(peer_servers::tokio(listener, server_tally));
            _tokio = Some(runtime);
        }
        "tokio-ct" => {
            _tokio = None;
            thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                    .expect("tokio current_thread runtime")
                    .block_on(peer_servers::tokio(listener, server_tally));
            });
        }
        "floor" => {
            _tokio = None;
            floor::start(listener, server_tally);
        }
        _ => panic!("unknown server {id:?}"),
    }
    control_loop(&tally)
}

/// The floor: what an echo server costs at the least with epoll. Two
/// threads, each with its own epoll instance; the first also accepts, and
/// deals the connections out to both in turn, registered edge-triggered.
/// An event costs one `recv` and one `send` for a message: a `recv` that
/// returns less than the buffer has drained the socket, and new data makes
/// a new edge.
mod floor {
    use super::*;

    const THREADS: usize = 2;
    /// The listener's event tag (connections are tagged with their fd).
    const LISTENER: u64 = u64::MAX;

    pub fn start(listener: TcpListener, tally: Arc<Tally>) {
        listener.set_nonblocking(true).expect("floor: non-blocking");
        let listener = listener.into_raw_fd();
        let epolls: [RawFd; THREADS] = std::array::from_fn(|_| {
            // SAFETY: creates a descriptor this server owns for good.
            let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            assert!(
                epoll >= 0,
                "epoll_create1: {}",
                std::io::Error::last_os_error()
            );
            epoll
        });
        add(epolls[0], listener, libc::EPOLLIN as u32, LISTENER);
        for me in 0..THREADS {
            let tally = tally.clone();
            thread::spawn(move || run(me, epolls, listener, &tally));
        }
    }

    fn add(epoll: RawFd, fd: RawFd, events: u32, tag: u64) {
        let mut event = libc::epoll_event { events, u64: tag };
        // SAFETY: registers a descriptor this server owns.
        let ret = unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) };
        assert_eq!(ret, 0, "epoll_ctl: {}", std::io::Error::last_os_error());
    }

    fn run(me: usize, epolls: [RawFd; THREADS], listener: RawFd, tally: &Tally) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        let mut buf = [0u8; SERVER_BUFFER];
        let mut next = 0;
        loop {
            // SAFETY: `events` has room for its length of events.
            let n = unsafe {
                libc::epoll_wait(epolls[me], events.as_mut_ptr(), events.len() as i32, -1)
            };
            if n < 0 {
                continue; // EINTR
            }
            for event in &events[..n as usize] {
                let tag = event.u64;
                if tag == LISTENER {
                    next = accept_all(listener, &epolls, next, tally);
                } else {
                    echo(tag as RawFd, &mut buf, tally);
                }
            }
        }
    }

    /// Accepts every pending connection; returns the next thread's index.
    fn accept_all(
        listener: RawFd,
        epolls: &[RawFd; THREADS],
        mut next: usize,
        tally: &Tally,
    ) -> usize {
        loop {
            let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
            // SAFETY: accepts on the listener this server owns.
            let fd = unsafe {
                libc::accept4(listener, std::ptr::null_mut(), std::ptr::null_mut(), flags)
            };
            if fd < 0 {
                return next;
            }
            let one: libc::c_int = 1;
            // SAFETY: sets an option on the new connection.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    &one as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            tally.accept();
            add(
                epolls[next],
                fd,
                (libc::EPOLLIN | libc::EPOLLET) as u32,
                fd as u64,
            );
            next = (next + 1) % THREADS;
        }
    }

    /// Echoes what `fd` has; closes it at EOF or on an error.
    fn echo(fd: RawFd, buf: &mut [u8], tally: &Tally) {
        loop {
            // SAFETY: receives into `buf`.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                let n = n as usize;
                if !send_all(fd, &buf[..n]) {
                    break;
                }
                if n < buf.len() {
                    return; // drained
                }
            } else if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN)
            {
                return;
            } else {
                break; // EOF or error
            }
        }
        // SAFETY: closes the connection, which also unregisters it.
        unsafe { libc::close(fd) };
        tally.finish();
    }

    /// Sends all of `data`, waiting for room if the socket is full.
    fn send_all(fd: RawFd, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            // SAFETY: sends from `data`.
            let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
            if n > 0 {
                data = &data[n as usize..];
            } else if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN)
            {
                let mut pollfd = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: waits on one descriptor.
                unsafe { libc::poll(&mut pollfd, 1, -1) };
            } else {
                return false;
            }
        }
        true
    }
}
