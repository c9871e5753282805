//! Probes, round J: whole programs written with std only (worker pools,
//! channel pipelines, servers and clients, child processes, files, phase
//! programs), run differentially: once on plain threads, then as
//! coroutines on several runtime configurations (one worker, two, two with
//! work stealing, thread identity off). Each returns plain data; the
//! coroutine runs must return what the threads returned. Most also check
//! descriptor hygiene: the number of open descriptors before and after the
//! program, and that the kernel shows no `O_NONBLOCK` left on fds 0-2 or
//! on a descriptor the program inherited.
//!
//! The tests of this file run one at a time (`serial`): descriptor counts
//! and CPU times are the whole process's.

mod support;

use support::serial;

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Condvar, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};
use support::child::{child_case, rerun};

use coroutines::Runtime;
use support::differential::{on_plain_thread_within, Side};
use support::{kernel_flags, watchdog_on, TempPath};

// ------------------------------------------------------------ the harness

/// A runtime configuration the coroutine side runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cfg {
    /// One worker.
    One,
    /// Two workers.
    Two,
    /// Two workers, work stealing on.
    TwoStealing,
    /// One worker, thread identity off.
    OneShared,
    /// Two workers, work stealing on, thread identity off.
    TwoStealingShared,
}

use Cfg::*;

/// Every configuration.
const ALL: &[Cfg] = &[One, Two, TwoStealing, OneShared, TwoStealingShared];
/// Those with thread identity: programs that use `mpsc` or `park` between
/// coroutines (a documented limit without it).
const IDENTITY: &[Cfg] = &[One, Two, TwoStealing];

fn builder(cfg: Cfg) -> coroutines::runtime::Builder {
    let b = Runtime::builder().blocked_worker_warnings(false);
    match cfg {
        One => b.workers(1),
        Two => b.workers(2),
        TwoStealing => b.workers(2).work_stealing(true),
        OneShared => b.workers(1).thread_identity(false),
        TwoStealingShared => b.workers(2).work_stealing(true).thread_identity(false),
    }
}

/// Runs `case` on a plain thread (its helper parties threads), then as the
/// root coroutine of a fresh runtime of each configuration in `cfgs`;
/// every coroutine run must return the thread's value within `limit`.
/// All configurations run; the failures are reported together.
#[track_caller]
fn across<T, F>(what: &str, cfgs: &[Cfg], limit: Duration, case: F) -> T
where
    T: PartialEq + std::fmt::Debug + Send + 'static,
    F: Fn(Side) -> T + Send + Sync + 'static,
{
    let case = Arc::new(case);
    // The process's first runtime opens the reactors' shared kick eventfd
    // (reactor/poller.rs), which stays open: count once it exists, or every
    // settle below waits its whole 3 s for a count it cannot reach.
    Runtime::builder()
        .workers(1)
        .build()
        .unwrap()
        .block_on(|| ());
    // A runtime's own descriptors (epoll, eventfd) close when it drops,
    // after its watchdog has the result: let the count settle between
    // runs, so that each program's own count is its own.
    let base = open_fds();
    let settle = || {
        for _ in 0..300 {
            if open_fds() <= base {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
    };
    let reference = on_plain_thread_within(what, limit, {
        let case = case.clone();
        move || case(Side::Thread)
    });
    settle();
    let mut failures = Vec::new();
    for &cfg in cfgs {
        let case = case.clone();
        let name = format!("{what} [{cfg:?}]");
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            watchdog_on(&name, limit, builder(cfg), move || case(Side::Coroutine))
        }));
        match got {
            Ok(value) if value == reference => {}
            Ok(value) => failures.push(format!("{cfg:?}: got {value:?}")),
            Err(payload) => failures.push(format!("{cfg:?}: panicked: {}", message(&payload))),
        }
        settle();
    }
    assert!(
        failures.is_empty(),
        "{what}: coroutines differ from threads (reference {reference:?}):\n  {}",
        failures.join("\n  ")
    );
    reference
}

fn message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string payload>".into()
    }
}

/// What a program left behind.
#[derive(Debug, PartialEq, Eq)]
struct Hygiene {
    /// Open descriptors after minus before.
    fd_delta: i64,
    /// fds 0, 1, 2 that the kernel shows `O_NONBLOCK` on after the program
    /// and did not before.
    std_nonblock: Vec<RawFd>,
}

fn open_fds() -> i64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as i64
}

fn nonblock(fd: RawFd) -> bool {
    kernel_flags(fd) & libc::O_NONBLOCK != 0
}

/// Runs `program` and reports its value with what it left behind.
fn hygienic<T>(program: impl FnOnce() -> T) -> (T, Hygiene) {
    let before_fds = open_fds();
    let before: Vec<bool> = (0..3).map(nonblock).collect();
    let value = program();
    // Descriptors closed by a party that has just ended: give a close on a
    // helper thread a moment.
    let mut fd_delta = open_fds() - before_fds;
    for _ in 0..50 {
        if fd_delta == 0 {
            break;
        }
        thread::sleep(Duration::from_millis(10));
        fd_delta = open_fds() - before_fds;
    }
    let std_nonblock = (0..3)
        .filter(|&fd| nonblock(fd) && !before[fd as usize])
        .collect();
    (
        value,
        Hygiene {
            fd_delta,
            std_nonblock,
        },
    )
}

fn clean() -> Hygiene {
    Hygiene {
        fd_delta: 0,
        std_nonblock: vec![],
    }
}

/// Runs `f` as `n` parties of `side` and joins them in order.
fn parties<T: Send + 'static>(
    side: Side,
    n: usize,
    f: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let f = Arc::new(f);
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let f = f.clone();
            side.spawn(move || f(i))
        })
        .collect();
    handles.into_iter().map(|h| h.join()).collect()
}

/// A `Side::spawn` that reports a panic as a value instead of resuming it.
fn spawn_catching<T: Send + 'static>(
    side: Side,
    f: impl FnOnce() -> T + Send + 'static,
) -> Box<dyn FnOnce() -> Result<T, String> + Send> {
    match side {
        Side::Thread => {
            let h = thread::spawn(f);
            Box::new(move || h.join().map_err(|p| message(&p)))
        }
        Side::Coroutine => {
            let h = coroutines::spawn(f);
            Box::new(move || h.join().map_err(|p| message(&p)))
        }
    }
}

/// A deterministic pattern of `len` bytes, and its checksum.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// A loopback listener whose backlog holds every client of a probe: with
/// std's 128, a burst of connects overflows the accept queue, and the
/// dropped handshakes complete on the kernel's SYN-ACK retransmissions,
/// seconds later (on threads and coroutines alike).
fn listener() -> TcpListener {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // SAFETY: listen on a bound socket this function owns.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 4096) }, 0);
    listener
}

fn kind(e: &io::Error) -> String {
    format!("{:?}", e.kind())
}

const LONG: Duration = Duration::from_secs(30);

// ------------------------------------------------------------ worker pools

#[derive(Default)]
struct Pool {
    queue: VecDeque<u64>,
    shutdown: bool,
}

/// A classic pool: `Arc<(Mutex<queue>, Condvar)>`, 200 workers, a producer
/// pushing 20,000 jobs in bursts with `notify_one` per job, a shutdown flag
/// with `notify_all`, results through `mpsc`.
#[test]
fn worker_pool_with_condvar_and_mpsc_results() {
    let _serial = serial();
    across("condvar pool, 200 workers, mpsc", IDENTITY, LONG, |side| {
        hygienic(|| {
            let shared = Arc::new((Mutex::new(Pool::default()), Condvar::new()));
            let (results, collected) = mpsc::channel::<(usize, u64)>();
            let workers: Vec<_> = (0..200)
                .map(|w| {
                    let shared = shared.clone();
                    let results = results.clone();
                    side.spawn(move || {
                        let (lock, cv) = &*shared;
                        let mut done = 0usize;
                        loop {
                            let job = {
                                let mut pool = lock.lock().unwrap();
                                loop {
                                    if let Some(job) = pool.queue.pop_front() {
                                        break Some(job);
                                    }
                                    if pool.shutdown {
                                        break None;
                                    }
                                    pool = cv.wait(pool).unwrap();
                                }
                            };
                            let Some(job) = job else { break };
                            let value = (0..(job % 50)).fold(job, |a, b| a.wrapping_mul(31) ^ b);
                            results.send((w, value)).unwrap();
                            done += 1;
                        }
                        done
                    })
                })
                .collect();
            drop(results);
            let (lock, cv) = &*shared;
            for burst in 0..200u64 {
                for j in 0..100u64 {
                    lock.lock().unwrap().queue.push_back(burst * 100 + j);
                    cv.notify_one();
                }
                if burst % 20 == 0 {
                    thread::sleep(Duration::from_millis(1));
                }
            }
            lock.lock().unwrap().shutdown = true;
            cv.notify_all();
            let done: usize = workers.into_iter().map(|w| w.join()).sum();
            let mut n = 0;
            let mut x = 0u64;
            for (_, v) in collected {
                n += 1;
                x ^= v;
            }
            (done, n, x)
        })
    });
}

/// The same pool with `wait_timeout` (workers that also wake every 2 ms
/// to look for work), results in a `Mutex<Vec>`, on every configuration;
/// the jobs must all be done soon after the last is pushed.
#[test]
fn worker_pool_with_wait_timeout_on_every_configuration() {
    let _serial = serial();
    across("wait_timeout pool, 300 workers", ALL, LONG, |side| {
        hygienic(|| {
            let shared = Arc::new((Mutex::new(Pool::default()), Condvar::new()));
            let results = Arc::new(Mutex::new(Vec::new()));
            let workers: Vec<_> = (0..300)
                .map(|w| {
                    let shared = shared.clone();
                    let results = results.clone();
                    side.spawn(move || {
                        let (lock, cv) = &*shared;
                        let timeout = Duration::from_millis(if w % 2 == 0 { 2 } else { 10_000 });
                        let mut pool = lock.lock().unwrap();
                        loop {
                            if let Some(job) = pool.queue.pop_front() {
                                drop(pool);
                                results.lock().unwrap().push(job * 3);
                                pool = lock.lock().unwrap();
                                continue;
                            }
                            if pool.shutdown {
                                break;
                            }
                            pool = cv.wait_timeout(pool, timeout).unwrap().0;
                        }
                    })
                })
                .collect();
            let (lock, cv) = &*shared;
            for j in 0..10_000u64 {
                lock.lock().unwrap().queue.push_back(j);
                cv.notify_one();
            }
            // Every job taken within a bound, without the shutdown's
            // notify_all: a lost wake-up leaves jobs to the 2 ms pollers,
            // so this only fails if the pollers were lost too.
            let start = Instant::now();
            while !lock.lock().unwrap().queue.is_empty() && start.elapsed() < Duration::from_secs(5)
            {
                thread::sleep(Duration::from_millis(5));
            }
            let drained = lock.lock().unwrap().queue.is_empty();
            lock.lock().unwrap().shutdown = true;
            cv.notify_all();
            for w in workers {
                w.join();
            }
            let mut r = results.lock().unwrap().clone();
            r.sort();
            (drained, r.len(), r.iter().sum::<u64>())
        })
    });
}

// ---------------------------------------------------------- mpsc pipelines

/// 40 pipelines of 4 stages: source -> sync_channel(0) -> double ->
/// sync_channel(3) -> stage that panics at its 500th item ->
/// sync_channel(1) -> sink. The panic must propagate as disconnects both
/// ways: the sink sees 500 items then the end, the doubler's and the
/// source's sends fail.
#[test]
fn mpsc_pipelines_with_a_stage_that_panics() {
    let _serial = serial();
    across("mpsc pipelines, panicking stage", IDENTITY, LONG, |side| {
        let lines: Vec<_> = (0..40)
            .map(|p| {
                let (s0, r0) = mpsc::sync_channel::<u64>(0);
                let (s1, r1) = mpsc::sync_channel::<u64>(3);
                let (s2, r2) = mpsc::sync_channel::<u64>(1);
                let source = spawn_catching(side, move || {
                    for i in 0.. {
                        if s0.send(i + p).is_err() {
                            return true;
                        }
                    }
                    false
                });
                let double = spawn_catching(side, move || {
                    for x in r0 {
                        if s1.send(x * 2).is_err() {
                            return true;
                        }
                    }
                    false
                });
                let crash = spawn_catching(side, move || {
                    for (n, x) in r1.into_iter().enumerate() {
                        if n == 500 {
                            panic!("stage panics at item {n}");
                        }
                        s2.send(x + 1).unwrap();
                    }
                });
                let sink = spawn_catching(side, move || {
                    let mut n = 0u64;
                    let mut sum = 0u64;
                    while let Ok(x) = r2.recv() {
                        n += 1;
                        sum += x;
                    }
                    (n, sum)
                });
                (source, double, crash, sink)
            })
            .collect();
        lines
            .into_iter()
            .map(|(a, b, c, d)| (a(), b(), c(), d()))
            .collect::<Vec<_>>()
    });
}

/// Fan-in over rendezvous channels: 2,000 producers each send 20 messages
/// through clones of one `sync_channel(0)`; a consumer that sleeps now and
/// then, and answers each producer's last message through a per-producer
/// `sync_channel(0)` back.
#[test]
fn rendezvous_fan_in_from_2000_producers() {
    let _serial = serial();
    across(
        "sync_channel(0) fan-in, 2000 producers",
        IDENTITY,
        LONG,
        |side| {
            hygienic(|| {
                let (tx, rx) = mpsc::sync_channel::<(usize, u32, Option<mpsc::SyncSender<u64>>)>(0);
                let producers: Vec<_> = (0..2000)
                    .map(|p| {
                        let tx = tx.clone();
                        side.spawn(move || {
                            for i in 0..19 {
                                tx.send((p, i, None)).unwrap();
                            }
                            let (back, answer) = mpsc::sync_channel(0);
                            tx.send((p, 19, Some(back))).unwrap();
                            answer.recv().unwrap()
                        })
                    })
                    .collect();
                drop(tx);
                let mut per = vec![0u64; 2000];
                let mut n = 0;
                for (p, i, back) in rx {
                    per[p] += i as u64;
                    n += 1;
                    if n % 5000 == 0 {
                        thread::sleep(Duration::from_millis(2));
                    }
                    if let Some(back) = back {
                        back.send(per[p] + p as u64).unwrap();
                    }
                }
                let answers: u64 = producers.into_iter().map(|p| p.join()).sum();
                (n, answers)
            })
        },
    );
}

// ------------------------------------------------------------- TCP server

/// A TCP server and 200 concurrent clients of four kinds: well-behaved
/// (request, `shutdown(Write)`, `read_to_end` of the answer), one that
/// disconnects mid-message, one that stays silent past the server's read
/// timeout, and one whose oversize request the server refuses by closing
/// with unread data (a reset). Counts of outcomes on both ends.
#[test]
fn tcp_server_with_200_clients_of_four_kinds() {
    let _serial = serial();
    across("tcp server, 200 clients", ALL, LONG, |side| {
        hygienic(|| {
            let listener = listener();
            let addr = listener.local_addr().unwrap();
            let server_log = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
            let server = {
                let log = server_log.clone();
                side.spawn(move || {
                    let mut handlers = Vec::new();
                    for _ in 0..200 {
                        let (mut stream, _) = listener.accept().unwrap();
                        let log = log.clone();
                        handlers.push(side.spawn(move || {
                            let note =
                                |what: String| *log.lock().unwrap().entry(what).or_default() += 1;
                            stream
                                .set_read_timeout(Some(Duration::from_millis(300)))
                                .unwrap();
                            let mut header = [0u8; 4];
                            if let Err(e) = stream.read_exact(&mut header) {
                                note(format!("header {}", kind(&e)));
                                return;
                            }
                            let len = u32::from_be_bytes(header) as usize;
                            if len > 1 << 20 {
                                note("refused".into());
                                return; // closes with unread data: a reset
                            }
                            let mut body = Vec::new();
                            match (&mut stream).take(len as u64).read_to_end(&mut body) {
                                Err(e) => {
                                    note(format!("body {}", kind(&e)));
                                    return;
                                }
                                Ok(n) if n < len => {
                                    note("short body".into());
                                    return;
                                }
                                Ok(_) => {}
                            }
                            let mut rest = Vec::new();
                            match stream.read_to_end(&mut rest) {
                                Ok(n) => note(format!("trailing {n}")),
                                Err(e) => note(format!("trailing {}", kind(&e))),
                            }
                            body.reverse();
                            stream.write_all(&body).unwrap();
                            stream.shutdown(Shutdown::Write).unwrap();
                            note("answered".into());
                        }));
                    }
                    for h in handlers {
                        h.join();
                    }
                })
            };
            let clients: Vec<_> = (0..200usize)
                .map(|i| {
                    side.spawn(move || -> String {
                        let mut s = TcpStream::connect(addr).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        let body = pattern(1000 + i * 37, i as u64);
                        match i % 4 {
                            0 | 1 => {
                                let mut message = (body.len() as u32).to_be_bytes().to_vec();
                                message.extend_from_slice(&body);
                                s.write_all(&message).unwrap();
                                s.shutdown(Shutdown::Write).unwrap();
                                let mut answer = Vec::new();
                                match s.read_to_end(&mut answer) {
                                    Ok(_) => {
                                        let mut expect = body.clone();
                                        expect.reverse();
                                        format!("answer ok {}", answer == expect)
                                    }
                                    Err(e) => format!("answer {}", kind(&e)),
                                }
                            }
                            2 => {
                                // Mid-message disconnect.
                                s.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
                                s.write_all(&body[..10]).unwrap();
                                drop(s);
                                "left".into()
                            }
                            _ if i % 8 == 3 => {
                                // Silent past the server's read timeout.
                                let mut buf = [0u8; 1];
                                match s.read(&mut buf) {
                                    Ok(n) => format!("silent read {n}"),
                                    Err(e) => format!("silent {}", kind(&e)),
                                }
                            }
                            _ => {
                                // Oversize: the server closes unread.
                                let mut message = (2u32 << 20).to_be_bytes().to_vec();
                                message.extend_from_slice(&body);
                                s.write_all(&message).unwrap();
                                thread::sleep(Duration::from_millis(100));
                                let mut buf = [0u8; 16];
                                match s.read(&mut buf) {
                                    Ok(n) => format!("oversize read {n}"),
                                    Err(e) => format!("oversize {}", kind(&e)),
                                }
                            }
                        }
                    })
                })
                .collect();
            let mut client_log = BTreeMap::<String, usize>::new();
            for c in clients {
                *client_log.entry(c.join()).or_default() += 1;
            }
            server.join();
            let server_log = server_log.lock().unwrap().clone();
            (client_log, server_log)
        })
    });
}

// ------------------------------------------------------- child processes

/// `cat` fed 8 MiB on its stdin by one party while another reads its
/// stdout; then `head -c 1000` fed the same, whose writer must see a
/// broken pipe. A pipe made before the program is the children's stderr:
/// it must not be left non-blocking.
#[test]
fn cat_and_head_fed_8_mib_through_pipes() {
    let _serial = serial();
    across("cat/head with 8 MiB", ALL, LONG, |side| {
        let (inherited_r, inherited_w) = io::pipe().unwrap();
        let got = hygienic(|| {
            let data = Arc::new(pattern(8 << 20, 7));
            let mut out = Vec::new();
            for program in [&["cat"][..], &["head", "-c", "1000"][..]] {
                let mut child = Command::new(program[0])
                    .args(&program[1..])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(inherited_w.try_clone().unwrap())
                    .spawn()
                    .unwrap();
                let mut stdin = child.stdin.take().unwrap();
                let feed = {
                    let data = data.clone();
                    side.spawn(move || match stdin.write_all(&data) {
                        Ok(()) => "fed all".to_string(),
                        Err(e) => kind(&e),
                    })
                };
                let mut got = Vec::new();
                child.stdout.take().unwrap().read_to_end(&mut got).unwrap();
                let fed = feed.join();
                let status = child.wait().unwrap();
                out.push((
                    fed,
                    got.len(),
                    checksum(&got) == checksum(&data[..got.len()]),
                    status.code(),
                ));
            }
            out
        });
        let flags = (
            nonblock(inherited_r.as_raw_fd()),
            nonblock(inherited_w.as_raw_fd()),
        );
        (got, flags)
    });
}

/// `Command::output()` of children that write 1 MiB to stdout and to
/// stderr at once, 10 of them concurrently; and `wait_with_output` of a
/// child fed on stdin.
#[test]
fn output_of_children_writing_1_mib_to_both_streams() {
    let _serial = serial();
    across("output() 1 MiB x2, 10 at once", ALL, LONG, |side| {
        hygienic(|| {
            let mut all = parties(side, 10, |i| {
                let out = Command::new("sh")
                    .arg("-c")
                    .arg("head -c 1048576 /dev/zero | tr '\\0' o & head -c 1048576 /dev/zero | tr '\\0' e >&2; wait; exit 3")
                    .output()
                    .unwrap();
                let ok_out = out.stdout.iter().all(|&b| b == b'o');
                let ok_err = out.stderr.iter().all(|&b| b == b'e');
                (
                    i,
                    out.stdout.len(),
                    out.stderr.len(),
                    ok_out,
                    ok_err,
                    out.status.code(),
                )
            });
            let mut child = Command::new("sh")
                .arg("-c")
                .arg("wc -c; echo done >&2")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            let feeder = side.spawn(move || stdin.write_all(&vec![b'x'; 3 << 20]).is_ok());
            let out = child.wait_with_output().unwrap();
            all.push((
                99,
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse::<usize>()
                    .unwrap_or(0),
                out.stderr.len(),
                feeder.join(),
                true,
                out.status.code(),
            ));
            all
        })
    });
}

/// 100 children `sleep 0.3`, spawned and waited (`status`,
/// `wait_with_output`, a `try_wait` loop) in parallel parties: they must
/// overlap (well under 100 x 0.3 s).
#[test]
fn a_hundred_sleeping_children_waited_in_parallel() {
    let _serial = serial();
    across("100 x sleep 0.3 in parallel", ALL, LONG, |side| {
        hygienic(|| {
            let start = Instant::now();
            let codes = parties(side, 100, |i| {
                let mut cmd = Command::new("sh");
                cmd.arg("-c").arg(format!("sleep 0.3; exit {}", i % 7));
                match i % 3 {
                    0 => cmd.status().unwrap().code(),
                    1 => cmd
                        .stdout(Stdio::piped())
                        .spawn()
                        .unwrap()
                        .wait_with_output()
                        .unwrap()
                        .status
                        .code(),
                    _ => {
                        let mut child = cmd.spawn().unwrap();
                        loop {
                            if let Some(status) = child.try_wait().unwrap() {
                                break status.code();
                            }
                            thread::sleep(Duration::from_millis(5));
                        }
                    }
                }
            });
            (codes, start.elapsed() < Duration::from_secs(6))
        })
    });
}

// ------------------------------------------------------------ io::copy

/// A chain of `n` relays, each `io::copy` from one `io::pipe` into the
/// next (std uses `splice` between pipes); 256 KiB flow through it. With
/// `downstream_first`, the relays start from the last stage back to the
/// first (each waits for data from the one started after it).
fn splice_chain(side: Side, n: usize, downstream_first: bool) -> (usize, bool, bool) {
    let data = pattern(256 << 10, 3);
    let (first_r, mut first_w) = io::pipe().unwrap();
    let mut reader = first_r;
    let mut stages = Vec::new();
    for _ in 0..n {
        let (r, w) = io::pipe().unwrap();
        let input = std::mem::replace(&mut reader, r);
        stages.push((input, w));
    }
    if downstream_first {
        stages.reverse();
    }
    let mut relays = Vec::new();
    for (mut input, mut w) in stages {
        relays.push(side.spawn(move || io::copy(&mut input, &mut w).unwrap()));
        if downstream_first {
            // Each relay reaches its splice before the next starts.
            thread::sleep(Duration::from_micros(200));
        }
    }
    thread::sleep(Duration::from_millis(200));
    if std::env::var("PROBE_TASKS").is_ok() {
        eprintln!(
            "chain of {n}, coroutine={}: {} tasks in the process",
            coroutines::in_coroutine(),
            std::fs::read_dir("/proc/self/task").unwrap().count()
        );
    }
    let writer = {
        let data = data.clone();
        side.spawn(move || first_w.write_all(&data).unwrap())
    };
    let mut got = Vec::new();
    let start = Instant::now();
    reader.read_to_end(&mut got).unwrap();
    writer.join();
    let copied = relays.into_iter().all(|r| r.join() == data.len() as u64);
    (
        got.len(),
        got == data && copied,
        start.elapsed() < Duration::from_secs(10),
    )
}

#[test]
fn io_copy_chain_of_64_pipes() {
    let _serial = serial();
    across("io::copy chain of 64 pipes", ALL, LONG, |side| {
        hygienic(|| splice_chain(side, 64, false))
    });
}

/// More relays than the runtime's default helper threads (512), started
/// upstream first: every relay is parked in `splice`, a helper thread in
/// the kernel; each `splice` returns after a part, so the queued ones get
/// their turn.
#[test]
fn io_copy_chain_of_600_pipes() {
    let _serial = serial();
    across("io::copy chain of 600 pipes", &[One], LONG, |side| {
        hygienic(|| splice_chain(side, 600, false))
    });
}

/// The same 600 relays started downstream first: the first 512 `splice`
/// calls, which wait for data, hold every helper thread, and the relays
/// that would bring them data are queued behind them.
#[test]
fn io_copy_chain_of_600_pipes_started_downstream_first() {
    let _serial = serial();
    across(
        "io::copy chain of 600 pipes, downstream first",
        &[One],
        Duration::from_secs(20),
        |side| splice_chain(side, 600, true),
    );
}

/// Reduced: 513 relays downstream first (one more than the helpers).
#[test]
fn io_copy_chain_of_513_pipes_started_downstream_first() {
    let _serial = serial();
    across(
        "io::copy chain of 513 pipes, downstream first",
        &[One],
        Duration::from_secs(20),
        |side| splice_chain(side, 513, true),
    );
}

/// Control: 511 relays downstream first (fewer than the helpers).
#[test]
fn io_copy_chain_of_511_pipes_started_downstream_first() {
    let _serial = serial();
    across(
        "io::copy chain of 511 pipes, downstream first",
        &[One],
        Duration::from_secs(20),
        |side| splice_chain(side, 511, true),
    );
}

/// A relay per connection, `io::copy` both ways between sockets (std's
/// plain read/write loop) and between a pipe and a Unix stream (splice),
/// with `shutdown(Write)` passing the end along; 100 connections.
#[test]
fn proxies_with_io_copy_between_sockets_and_pipes() {
    let _serial = serial();
    across("io::copy proxies", ALL, LONG, |side| {
        hygienic(|| {
            let backend = listener();
            let backend_addr = backend.local_addr().unwrap();
            // The backend: upper-cases what it gets until EOF.
            let backend = side.spawn(move || {
                for _ in 0..100 {
                    let (mut s, _) = backend.accept().unwrap();
                    let mut got = Vec::new();
                    s.read_to_end(&mut got).unwrap();
                    s.write_all(&got.to_ascii_uppercase()).unwrap();
                }
            });
            let results = parties(side, 100, move |i| {
                // client <-> (UnixStream) <-> proxy <-> (TCP) <-> backend,
                // the client's bytes entering through a pipe.
                let (client, proxy_end) = UnixStream::pair().unwrap();
                let upstream = TcpStream::connect(backend_addr).unwrap();
                let (mut down_r, mut up_w) = (
                    proxy_end.try_clone().unwrap(),
                    upstream.try_clone().unwrap(),
                );
                let up = coroutines_or_thread(move || {
                    let n = io::copy(&mut down_r, &mut up_w).unwrap();
                    up_w.shutdown(Shutdown::Write).unwrap();
                    n
                });
                let (mut up_r, mut down_w) = (upstream, proxy_end);
                let down = coroutines_or_thread(move || {
                    let n = io::copy(&mut up_r, &mut down_w).unwrap();
                    down_w.shutdown(Shutdown::Write).unwrap();
                    n
                });
                let text: Vec<u8> = format!("request {i} ").repeat(50 + i * 10).into_bytes();
                let (pipe_r, mut pipe_w) = io::pipe().unwrap();
                let mut client_w = client.try_clone().unwrap();
                let pump = coroutines_or_thread(move || {
                    let mut pipe_r = pipe_r;
                    let n = io::copy(&mut pipe_r, &mut client_w).unwrap();
                    client_w.shutdown(Shutdown::Write).unwrap();
                    n
                });
                pipe_w.write_all(&text).unwrap();
                drop(pipe_w);
                let mut answer = Vec::new();
                (&client).read_to_end(&mut answer).unwrap();
                let (a, b, c) = (up(), down(), pump());
                (answer == text.to_ascii_uppercase(), a, b, c)
            });
            backend.join();
            results
        })
    });
}

/// Spawns like the caller: a coroutine inside one, else a thread.
fn coroutines_or_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> impl FnOnce() -> T {
    let side = if coroutines::in_coroutine() {
        Side::Coroutine
    } else {
        Side::Thread
    };
    let party = side.spawn(f);
    move || party.join()
}

// ---------------------------------------------------------------- Unix

/// A Unix-socket line server: 150 clients, each sends 20 lines through a
/// `BufWriter` and reads 20 answers through `BufReader::lines`; the server
/// answers each line with its length. Then a `UnixDatagram` request/reply
/// round with bound client sockets and a read timeout for lost replies.
#[test]
fn unix_line_server_and_datagram_round() {
    let _serial = serial();
    across("unix line server + datagrams", ALL, LONG, |side| {
        hygienic(|| {
            let dir = TempPath::unique();
            std::fs::create_dir(&*dir).unwrap();
            let path = dir.join("server.sock");
            let listener = UnixListener::bind(&path).unwrap();
            let server = side.spawn(move || {
                let mut handlers = Vec::new();
                for _ in 0..150 {
                    let (stream, _) = listener.accept().unwrap();
                    handlers.push(coroutines_or_thread(move || {
                        let mut w = stream.try_clone().unwrap();
                        let mut n = 0;
                        for line in BufReader::new(stream).lines() {
                            writeln!(w, "{}", line.unwrap().len()).unwrap();
                            n += 1;
                        }
                        n
                    }));
                }
                handlers.into_iter().map(|h| h()).sum::<usize>()
            });
            let p = path.clone();
            let clients: usize = parties(side, 150, move |i| {
                let s = UnixStream::connect(&p).unwrap();
                let mut w = io::BufWriter::new(s.try_clone().unwrap());
                for j in 0..20 {
                    writeln!(w, "{}", "x".repeat(i + j)).unwrap();
                }
                w.flush().unwrap();
                s.shutdown(Shutdown::Write).unwrap();
                BufReader::new(s)
                    .lines()
                    .enumerate()
                    .filter(|(j, l)| l.as_ref().unwrap().parse::<usize>().unwrap() == i + j)
                    .count()
            })
            .into_iter()
            .sum();
            let lines = server.join();

            let dpath = dir.join("dgram.sock");
            let dserver = UnixDatagram::bind(&dpath).unwrap();
            dserver
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let dserver = side.spawn(move || {
                let mut buf = [0u8; 64];
                let mut served = 0;
                loop {
                    match dserver.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            let i: usize = std::str::from_utf8(&buf[..n]).unwrap().parse().unwrap();
                            if !i.is_multiple_of(5) {
                                dserver
                                    .send_to(&buf[..n], from.as_pathname().unwrap())
                                    .unwrap();
                            }
                            served += 1;
                        }
                        Err(e) => break (served, kind(&e)),
                    }
                }
            });
            let d = dir.to_path_buf();
            let mut replies = BTreeMap::<String, usize>::new();
            for r in parties(side, 60, move |i| {
                let me = UnixDatagram::bind(d.join(format!("c{i}.sock"))).unwrap();
                me.connect(d.join("dgram.sock")).unwrap();
                me.set_read_timeout(Some(Duration::from_millis(150)))
                    .unwrap();
                me.send(i.to_string().as_bytes()).unwrap();
                let mut buf = [0u8; 64];
                match me.recv(&mut buf) {
                    Ok(n) => format!("reply ok {}", &buf[..n] == i.to_string().as_bytes()),
                    Err(e) => kind(&e),
                }
            }) {
                *replies.entry(r).or_default() += 1;
            }
            let served = dserver.join();
            std::fs::remove_dir_all(&*dir).unwrap();
            (clients, lines, replies, served)
        })
    });
}

/// A sender on an unconnected `UnixDatagram` whose receiver's queue is
/// full: `send_to` blocks until the receiver reads (300 ms later). A
/// thread sleeps in the kernel meanwhile; the process's CPU time over the
/// wait shows whether the coroutine spun.
#[test]
fn unconnected_unix_datagram_sender_waits_for_a_full_receiver() {
    let _serial = serial();
    across(
        "unconnected dgram send_to a full receiver",
        &[One, Two],
        LONG,
        |side| {
            let dir = TempPath::unique();
            std::fs::create_dir(&*dir).unwrap();
            let rpath = dir.join("r.sock");
            let receiver = UnixDatagram::bind(&rpath).unwrap();
            let sender = UnixDatagram::unbound().unwrap();
            let mut queued = 0;
            sender.set_nonblocking(true).unwrap();
            while sender.send_to(b"0123456789abcdef", &rpath).is_ok() {
                queued += 1;
            }
            sender.set_nonblocking(false).unwrap();
            let drainer = side.spawn(move || {
                thread::sleep(Duration::from_millis(300));
                let mut buf = [0u8; 64];
                let mut n = 0;
                receiver
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                while receiver.recv(&mut buf).is_ok() {
                    n += 1;
                }
                n
            });
            let cpu0 = cpu_time();
            let start = Instant::now();
            let sent = sender.send_to(b"the last one", &rpath).is_ok();
            let waited = start.elapsed() > Duration::from_millis(200);
            let cpu = cpu_time() - cpu0;
            let drained = drainer.join();
            std::fs::remove_dir_all(&*dir).unwrap();
            (
                sent,
                waited,
                drained == queued + 1,
                cpu < Duration::from_millis(100),
            )
        },
    );
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(u.ru_utime) + tv(u.ru_stime)
}

// ------------------------------------------------------------------ UDP

/// UDP ping-pong: 100 clients `connect()` to a server socket, ping with a
/// read timeout; the server ignores every tenth and stops after 300 ms of
/// silence; a client connected to a closed port gets a refusal.
#[test]
fn udp_ping_pong_with_timeouts_and_refusals() {
    let _serial = serial();
    across("udp ping-pong", ALL, LONG, |side| {
        hygienic(|| {
            let server = UdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = server.local_addr().unwrap();
            server
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let server = side.spawn(move || {
                let mut buf = [0u8; 64];
                let mut n = 0;
                loop {
                    match server.recv_from(&mut buf) {
                        Ok((len, from)) => {
                            n += 1;
                            let i: usize =
                                std::str::from_utf8(&buf[..len]).unwrap().parse().unwrap();
                            if !i.is_multiple_of(10) {
                                server.send_to(&buf[..len], from).unwrap();
                            }
                        }
                        Err(e) => break (n, kind(&e)),
                    }
                }
            });
            let mut outcomes = BTreeMap::<String, usize>::new();
            for o in parties(side, 100, move |i| {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(150)))
                    .unwrap();
                s.send(i.to_string().as_bytes()).unwrap();
                let mut buf = [0u8; 64];
                match s.recv(&mut buf) {
                    Ok(n) => format!("pong {}", &buf[..n] == i.to_string().as_bytes()),
                    Err(e) => kind(&e),
                }
            }) {
                *outcomes.entry(o).or_default() += 1;
            }
            let served = server.join();
            // A closed port: the ICMP error comes back as a refusal.
            let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
            let closed_addr = closed.local_addr().unwrap();
            drop(closed);
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.connect(closed_addr).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            s.send(b"anyone?").unwrap();
            let mut buf = [0u8; 8];
            let refused = match s.recv(&mut buf) {
                Ok(n) => format!("got {n}"),
                Err(e) => kind(&e),
            };
            (outcomes, served, refused)
        })
    });
}

// ----------------------------------------------------------------- files

/// 1,000 parties append 50 lines each to one `O_APPEND` file, one
/// `write_all` per line; the file read back has every line whole and each
/// party's lines in order; `fs::copy` copies it exactly.
#[test]
fn a_thousand_appenders_to_one_file() {
    let _serial = serial();
    across("1000 O_APPEND writers", ALL, LONG, |side| {
        hygienic(|| {
            let path = TempPath::unique();
            let file = Arc::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&*path)
                    .unwrap(),
            );
            parties(side, 1000, move |i| {
                for j in 0..50 {
                    (&*file)
                        .write_all(format!("{i}:{j}:{}\n", "y".repeat(i % 100)).as_bytes())
                        .unwrap();
                    if j % 10 == 0 {
                        thread::yield_now();
                    }
                }
            });
            let text = std::fs::read_to_string(&*path).unwrap();
            let mut next = vec![0usize; 1000];
            let mut ok = 0;
            for line in text.lines() {
                let mut parts = line.split(':');
                let i: usize = parts.next().unwrap().parse().unwrap();
                let j: usize = parts.next().unwrap().parse().unwrap();
                if j == next[i] && parts.next().unwrap().len() == i % 100 {
                    ok += 1;
                }
                next[i] = j + 1;
            }
            let copy = TempPath::unique();
            let copied = std::fs::copy(&*path, &*copy).unwrap();
            let same = std::fs::read(&*copy).unwrap() == text.as_bytes();
            (ok, copied == text.len() as u64, same)
        })
    });
}

// ------------------------------------------------ phases: Barrier, RwLock

/// 500 parties, 30 phases: a `Barrier` per phase whose leader writes the
/// phase into an `RwLock`ed table that all others then read, and a
/// `Condvar` count of arrivals per phase.
#[test]
fn barrier_rwlock_condvar_phases_with_500_parties() {
    let _serial = serial();
    across("500 parties, 30 phases", ALL, LONG, |side| {
        hygienic(|| {
            const N: usize = 500;
            let barrier = Arc::new(Barrier::new(N));
            let table = Arc::new(RwLock::new(vec![0u64; 64]));
            let arrivals = Arc::new((Mutex::new(vec![0usize; 30]), Condvar::new()));
            let leaders = Arc::new(AtomicUsize::new(0));
            let sums = parties(side, N, move |i| {
                let mut seen = 0u64;
                for phase in 0..30u64 {
                    if barrier.wait().is_leader() {
                        leaders.fetch_add(1, Ordering::Relaxed);
                        let mut t = table.write().unwrap();
                        for (k, v) in t.iter_mut().enumerate() {
                            *v = phase * 1000 + k as u64;
                        }
                    }
                    barrier.wait();
                    seen += table.read().unwrap().iter().sum::<u64>();
                    // Every party waits until all arrived at this phase.
                    let (lock, cv) = &*arrivals;
                    let mut a = lock.lock().unwrap();
                    a[phase as usize] += 1;
                    if a[phase as usize] == N {
                        cv.notify_all();
                    }
                    while a[phase as usize] < N {
                        a = cv.wait(a).unwrap();
                    }
                    drop(a);
                    if i % 50 == 0 {
                        thread::sleep(Duration::from_micros(200));
                    }
                }
                (seen, leaders.load(Ordering::Relaxed) >= 30)
            });
            let total: u64 = sums.iter().map(|s| s.0).sum();
            let distinct = sums.iter().all(|s| s.0 == sums[0].0);
            (total, distinct)
        })
    });
}

// --------------------------------------------------------------- scopes

/// `thread::scope` on the thread side, `coroutines::scope` on the
/// coroutine side: 1,000 scoped parties that borrow disjoint chunks
/// mutably and a shared text immutably, sleeping a little; then a scope
/// whose one party panics: the caller sees a panic, the others' work is
/// done.
#[test]
fn scopes_borrowing_the_callers_data() {
    let _serial = serial();
    across("scopes with borrowed data", ALL, LONG, |side| {
        let text = "the quick brown fox jumps over the lazy dog".repeat(10);
        let mut data = vec![0u64; 10_000];
        let work = |chunk: &mut [u64], k: usize, text: &str| {
            for (n, x) in chunk.iter_mut().enumerate() {
                *x = (k * 10 + n) as u64 + text.len() as u64;
            }
            thread::sleep(Duration::from_micros(100 * (k % 7) as u64));
        };
        match side {
            Side::Thread => thread::scope(|s| {
                for (k, chunk) in data.chunks_mut(10).enumerate() {
                    let text = &text;
                    s.spawn(move || work(chunk, k, text));
                }
            }),
            Side::Coroutine => coroutines::scope(|s| {
                for (k, chunk) in data.chunks_mut(10).enumerate() {
                    let text = &text;
                    s.spawn(move || work(chunk, k, text));
                }
            }),
        }
        let sum: u64 = data.iter().sum();
        let done = AtomicUsize::new(0);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match side {
            Side::Thread => thread::scope(|s| {
                for k in 0..100 {
                    let done = &done;
                    s.spawn(move || {
                        thread::sleep(Duration::from_millis(1));
                        if k == 50 {
                            panic!("party 50");
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    });
                }
            }),
            Side::Coroutine => coroutines::scope(|s| {
                for k in 0..100 {
                    let done = &done;
                    s.spawn(move || {
                        thread::sleep(Duration::from_millis(1));
                        if k == 50 {
                            panic!("party 50");
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    });
                }
            }),
        }))
        .is_err();
        (sum, panicked, done.load(Ordering::Relaxed))
    });
}

// ------------------------------------------------------ many at scale

/// 3,000 parties on a TCP echo server, each a few round trips with
/// `set_read_timeout` and `set_nodelay`; a server handler per connection.
#[test]
fn tcp_echo_with_3000_connections() {
    let _serial = serial();
    across(
        "tcp echo, 3000 connections",
        &[One, TwoStealing, OneShared],
        LONG,
        |side| {
            hygienic(|| {
                let listener = listener();
                let addr = listener.local_addr().unwrap();
                let server = side.spawn(move || {
                    let mut handlers = Vec::new();
                    for _ in 0..3000 {
                        let (mut s, _) = listener.accept().unwrap();
                        handlers.push(coroutines_or_thread(move || {
                            s.set_nodelay(true).unwrap();
                            let mut buf = [0u8; 512];
                            let mut total = 0;
                            loop {
                                match s.read(&mut buf) {
                                    Ok(0) => break total,
                                    Ok(n) => {
                                        s.write_all(&buf[..n]).unwrap();
                                        total += n;
                                    }
                                    Err(e) => panic!("server read: {e}"),
                                }
                            }
                        }));
                    }
                    handlers.into_iter().map(|h| h()).sum::<usize>()
                });
                let echoed: usize = parties(side, 3000, move |i| {
                    let mut s = TcpStream::connect(addr).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    s.set_nodelay(true).unwrap();
                    let mut ok = 0;
                    for r in 0..3 {
                        let msg = format!("{i}/{r}");
                        s.write_all(msg.as_bytes()).unwrap();
                        let mut buf = vec![0u8; msg.len()];
                        s.read_exact(&mut buf).unwrap();
                        ok += (buf == msg.as_bytes()) as usize;
                    }
                    ok
                })
                .into_iter()
                .sum();
                (echoed, server.join() > 0)
            })
        },
    );
}

#[test]
fn the_harness_reference_is_clean() {
    let _serial = serial();
    // The thread side of a trivial program leaves nothing behind.
    let (_, h) = hygienic(|| ());
    assert_eq!(h, clean());
}

// ------------------------------------------ unconnected datagram senders

/// The reduced case of the probe above, with numbers: one sender, one
/// worker, the receiver drained 300 ms later by a plain thread; the CPU
/// the process used meanwhile, bucketed. Beside it the same with the
/// sender `connect`ed to the receiver (the control: no spin).
#[test]
fn unix_datagram_send_to_a_full_receiver_cpu_minimal() {
    let _serial = serial();
    let got = across(
        "dgram send to a full receiver: CPU",
        &[One],
        LONG,
        |_side| {
            let mut out = Vec::new();
            for connected in [false, true] {
                let dir = TempPath::unique();
                std::fs::create_dir(&*dir).unwrap();
                let rpath = dir.join("r.sock");
                let receiver = UnixDatagram::bind(&rpath).unwrap();
                let sender = UnixDatagram::unbound().unwrap();
                if connected {
                    sender.connect(&rpath).unwrap();
                }
                sender.set_nonblocking(true).unwrap();
                while sender.send_to(b"x", &rpath).is_ok() {}
                sender.set_nonblocking(false).unwrap();
                let drainer = thread::spawn(move || {
                    thread::sleep(Duration::from_millis(300));
                    let mut buf = [0u8; 8];
                    receiver
                        .set_read_timeout(Some(Duration::from_millis(100)))
                        .unwrap();
                    while receiver.recv(&mut buf).is_ok() {}
                });
                let cpu0 = cpu_time();
                let sent = sender.send_to(b"y", &rpath).is_ok();
                let cpu = cpu_time() - cpu0;
                drainer.join().unwrap();
                eprintln!(
                    "connected={connected} in_coroutine={}: send_to waited with {} ms of CPU",
                    coroutines::in_coroutine(),
                    cpu.as_millis()
                );
                out.push((connected, sent, cpu < Duration::from_millis(60)));
            }
            out
        },
    );
    assert_eq!(got, vec![(false, true, true), (true, true, true)]);
}

/// A syslog-like program: 50 parties log through unconnected
/// `UnixDatagram::send_to` to one slow collector that reads a datagram
/// every 2 ms. The parties' CPU while they wait for room is the
/// difference.
#[test]
fn many_loggers_to_a_slow_datagram_collector() {
    let _serial = serial();
    across(
        "50 loggers, slow dgram collector",
        &[One, TwoStealing],
        LONG,
        |side| {
            let dir = TempPath::unique();
            std::fs::create_dir(&*dir).unwrap();
            let rpath = dir.join("log.sock");
            let collector = UnixDatagram::bind(&rpath).unwrap();
            collector
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let collector = thread::spawn(move || {
                let mut n = 0;
                let mut buf = [0u8; 128];
                while collector.recv(&mut buf).is_ok() {
                    n += 1;
                    thread::sleep(Duration::from_millis(2));
                }
                n
            });
            let cpu0 = cpu_time();
            let start = Instant::now();
            let p = rpath.clone();
            let sent: usize = parties(side, 50, move |i| {
                let s = UnixDatagram::unbound().unwrap();
                (0..10)
                    .filter(|j| {
                        s.send_to(format!("party {i} line {j}").as_bytes(), &p)
                            .is_ok()
                    })
                    .count()
            })
            .into_iter()
            .sum();
            let cpu = cpu_time() - cpu0;
            let elapsed = start.elapsed();
            let received = collector.join().unwrap();
            eprintln!(
                "loggers in_coroutine={}: {} ms elapsed, {} ms CPU",
                coroutines::in_coroutine(),
                elapsed.as_millis(),
                cpu.as_millis()
            );
            // Threads sleep in the kernel: CPU well under half the time.
            (sent, received, cpu * 2 < elapsed)
        },
    );
}

// ------------------------------------------------------ timeouts, timers

/// Timeouts never end early: `Condvar::wait_timeout` (1,000 waiters, none
/// notified, timeouts 1-40 ms), `TcpStream` and `UdpSocket` read timeouts
/// (200 each, 5-45 ms), and `thread::sleep` (1,000, 0.1-20 ms): how many
/// returned before their time, per kind.
#[test]
fn timeouts_never_end_early() {
    let _serial = serial();
    across("timeouts never early", ALL, LONG, |side| {
        let cv = Arc::new((Mutex::new(()), Condvar::new()));
        let condvar_early: usize = parties(side, 1000, move |i| {
            let timeout = Duration::from_micros(1000 + (i as u64 * 39_017) % 39_000);
            let (lock, cv) = &*cv;
            let guard = lock.lock().unwrap();
            let start = Instant::now();
            let (_g, result) = cv.wait_timeout(guard, timeout).unwrap();
            (result.timed_out() && start.elapsed() < timeout) as usize
        })
        .into_iter()
        .sum();
        let listener = listener();
        let addr = listener.local_addr().unwrap();
        let held = thread::spawn(move || {
            (0..200)
                .map(|_| listener.accept().unwrap().0)
                .collect::<Vec<_>>()
        });
        let tcp_early: usize = parties(side, 200, move |i| {
            let mut s = TcpStream::connect(addr).unwrap();
            let timeout = Duration::from_micros(5000 + (i as u64 * 7919) % 40_000);
            s.set_read_timeout(Some(timeout)).unwrap();
            let start = Instant::now();
            let r = s.read(&mut [0u8; 4]);
            (r.is_err() && start.elapsed() < timeout) as usize
        })
        .into_iter()
        .sum();
        drop(held.join().unwrap());
        let udp_early: usize = parties(side, 200, move |i| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let timeout = Duration::from_micros(5000 + (i as u64 * 7919) % 40_000);
            s.set_read_timeout(Some(timeout)).unwrap();
            let start = Instant::now();
            let r = s.recv(&mut [0u8; 4]);
            (r.is_err() && start.elapsed() < timeout) as usize
        })
        .into_iter()
        .sum();
        let sleep_early: usize = parties(side, 1000, move |i| {
            let d = Duration::from_micros(100 + (i as u64 * 104_729) % 20_000);
            let start = Instant::now();
            thread::sleep(d);
            (start.elapsed() < d) as usize
        })
        .into_iter()
        .sum();
        (condvar_early, tcp_early, udp_early, sleep_early)
    });
}

/// 5,000 sleepers of 0-500 ms: the latest wake-up is within 300 ms of its
/// time (a lost timer would be seconds late, or never).
#[test]
fn five_thousand_sleepers_wake_on_time() {
    let _serial = serial();
    across(
        "5000 sleepers",
        &[One, TwoStealing, OneShared],
        LONG,
        |side| {
            let late = parties(side, 5000, |i| {
                let d = Duration::from_millis((i as u64 * 7919) % 500);
                let start = Instant::now();
                thread::sleep(d);
                start.elapsed().saturating_sub(d)
            });
            let worst = late.into_iter().max().unwrap();
            worst < Duration::from_millis(300)
        },
    );
}

// --------------------------------------------------- stdout to a slow pipe

/// In a child process (this test re-run) whose stdout is a pipe the parent
/// leaves unread for 600 ms: one party floods `println!` (4 MiB), another
/// prints a short line now and then, a third ticks every millisecond. The
/// ticks counted over the first 400 ms, and whether the short printer got
/// its lines out, are printed to stderr. The parent compares the thread
/// child with the coroutine child.
#[test]
fn println_flood_to_a_slow_pipe() {
    let _serial = serial();
    if let Some(case) = child_case() {
        let program = move |side: Side| {
            let ticks = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let ticker = {
                let (ticks, stop) = (ticks.clone(), stop.clone());
                side.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        thread::sleep(Duration::from_millis(1));
                        ticks.fetch_add(1, Ordering::Relaxed);
                    }
                })
            };
            let flood = side.spawn(|| {
                let line = "f".repeat(1023);
                for _ in 0..4096 {
                    println!("{line}");
                }
            });
            let chatter = side.spawn(|| {
                for i in 0..5 {
                    thread::sleep(Duration::from_millis(20));
                    println!("chatter {i}");
                }
            });
            thread::sleep(Duration::from_millis(400));
            let counted = ticks.load(Ordering::Relaxed);
            let chatter_done = chatter.is_finished();
            flood.join();
            chatter.join();
            stop.store(true, Ordering::Relaxed);
            ticker.join();
            eprintln!(
                "RESULT ticks>=100:{} chatter_done_by_400ms:{}",
                counted >= 100,
                chatter_done
            );
        };
        match case.as_str() {
            "thread" => program(Side::Thread),
            _ => {
                let rt = Runtime::builder()
                    .workers(1)
                    .blocked_worker_warnings(false)
                    .build()
                    .unwrap();
                rt.block_on(move || program(Side::Coroutine));
            }
        }
        return;
    }
    let run = |case: &str| {
        let mut child = rerun(case).spawn().unwrap();
        thread::sleep(Duration::from_millis(600));
        let mut out = child.stdout.take().unwrap();
        let reader = thread::spawn(move || {
            let mut v = Vec::new();
            out.read_to_end(&mut v).unwrap();
            v
        });
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let out = reader.join().unwrap();
        child.wait().unwrap();
        let result = err
            .lines()
            .find(|l| l.starts_with("RESULT"))
            .unwrap_or("no result")
            .to_string();
        let chatter_lines = String::from_utf8_lossy(&out)
            .lines()
            .filter(|l| l.starts_with("chatter"))
            .count();
        (result, chatter_lines)
    };
    let thread_child = run("thread");
    let coroutine_child = run("coroutine");
    assert_eq!(
        coroutine_child, thread_child,
        "coroutine child (left) vs thread child (right)"
    );
}
