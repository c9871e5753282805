//! The blocking pool: name lookups from coroutines run on its helper
//! threads (so slow DNS answers overlap and the worker keeps running), and
//! `spawn_blocking` runs jobs there for coroutines and plain threads alike.
//!
//! The lookups ask a fake DNS server of the test's own, which answers after
//! [`DNS_DELAY`]: the test re-runs itself in a child process with a mount
//! namespace of its own, where `/etc/resolv.conf` names that server.

mod support;

use std::ffi::CString;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use support::child::*;
use support::*;

/// How long the fake DNS server takes to answer each query.
const DNS_DELAY: Duration = Duration::from_millis(300);

/// The name the fake server knows, and the address it gives for it.
const SLOW_HOST: &str = "slowhost.test";
const SLOW_HOST_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);

/// A name the fake server answers NXDOMAIN for.
const UNKNOWN_HOST: &str = "nosuchhost.test";

/// Concurrent lookups: one after the other they would take
/// `LOOKUPS * DNS_DELAY` = 6 s.
const LOOKUPS: usize = 20;

/// Tells the child process the server's address, to check that its
/// namespace shows the right `resolv.conf`.
const NAMESERVER_ENV: &str = "COROUTINES_TEST_NAMESERVER";

/// A DNS server on a loopback address of its own that answers A queries
/// for [`SLOW_HOST`] (AAAA with no records, anything else NXDOMAIN), each
/// after [`DNS_DELAY`], and counts the A queries for [`SLOW_HOST`].
struct FakeDns {
    address: Ipv4Addr,
    slow_host_queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl FakeDns {
    fn start() -> FakeDns {
        // `resolv.conf` cannot name a port, so the server needs port 53 on
        // an address nothing else uses: one of 127/8 picked by process id.
        let pid = std::process::id();
        let address = Ipv4Addr::new(127, 53, (pid >> 8) as u8, pid as u8 | 1);
        let socket = UdpSocket::bind((address, 53)).expect("bind the fake DNS server");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let sender = socket.try_clone().unwrap();
        let slow_host_queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        // The receiver stamps each query; the sender answers them in order,
        // each once its delay has passed, so that queries overlap.
        let (queue, queued) = mpsc::channel::<(Instant, Vec<u8>, SocketAddr)>();
        let receiver = {
            let (stop, counter) = (stop.clone(), slow_host_queries.clone());
            thread::spawn(move || {
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    if let Some((reply, slow_host_a)) = dns_reply(&buf[..n]) {
                        if slow_host_a {
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                        let _ = queue.send((Instant::now() + DNS_DELAY, reply, from));
                    }
                }
            })
        };
        let answerer = thread::spawn(move || {
            for (at, reply, to) in queued {
                thread::sleep(at.saturating_duration_since(Instant::now()));
                let _ = sender.send_to(&reply, to);
            }
        });
        FakeDns {
            address,
            slow_host_queries,
            stop,
            threads: vec![receiver, answerer],
        }
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The reply to a DNS query, and whether it is an A query for
/// [`SLOW_HOST`]; `None` for what is not a query.
fn dns_reply(query: &[u8]) -> Option<(Vec<u8>, bool)> {
    const A: u16 = 1;
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question_end = at + 4;
    let question = query.get(12..question_end)?;
    let known = labels.join(".") == SLOW_HOST;
    let answer = (known && qtype == A).then_some(SLOW_HOST_ADDRESS);
    // NXDOMAIN for unknown names; "no records" for a known name's AAAA.
    let rcode = if known { 0 } else { 3 };
    let mut reply = vec![
        query[0],
        query[1],
        0x80 | (query[2] & 0x01), // a response, echoing "recursion desired"
        0x80 | rcode,             // "recursion available"
        0,
        1, // one question
        0,
        answer.is_some() as u8,
        0,
        0,
        0,
        0,
    ];
    reply.extend_from_slice(question);
    if let Some(address) = answer {
        // A pointer to the question's name, type A, class IN, TTL 60, 4 bytes.
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        reply.extend_from_slice(&address.octets());
    }
    Some((reply, known && qtype == A))
}

/// Re-runs the calling test in a child process whose `/etc/resolv.conf`
/// names `dns`; `None` (after saying why) if this process may not make a
/// mount namespace.
fn in_resolver_namespace(dns: &FakeDns) -> Option<std::process::Output> {
    let dir = std::env::temp_dir().join(format!("coroutines-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let resolv_conf = dir.join("resolv.conf");
    std::fs::write(&resolv_conf, format!("nameserver {}\n", dns.address)).unwrap();
    let source = CString::new(resolv_conf.to_str().unwrap()).unwrap();
    let target = CString::new("/etc/resolv.conf").unwrap();
    let root = CString::new("/").unwrap();
    let mut command = rerun("dns");
    command.env(NAMESERVER_ENV, dns.address.to_string());
    // SAFETY: the closure runs in the forked child before exec and only
    // makes system calls on strings prepared beforehand.
    unsafe {
        command.pre_exec(move || {
            let check = |ret: libc::c_int| match ret {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            };
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Private, so that the bind mount below stays in the namespace.
            let private = libc::MS_REC | libc::MS_PRIVATE;
            let none = std::ptr::null();
            check(libc::mount(none, root.as_ptr(), none, private, none.cast()))?;
            let bind = libc::MS_BIND;
            check(libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                none,
                bind,
                none.cast(),
            ))
        });
    }
    let result = command.spawn();
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(child) => Some(wait_bounded(child, Duration::from_secs(60)).0),
        Err(error) if error.raw_os_error() == Some(libc::EPERM) => {
            println!(
                "skipped: this process may not make a mount namespace ({error}); \
                 it needs root or CAP_SYS_ADMIN"
            );
            None
        }
        Err(error) => panic!("starting the child in a namespace of its own: {error}"),
    }
}

/// `host:80` looked up as `ToSocketAddrs` does (`getaddrinfo`).
fn lookup(host: &str) -> io::Result<Vec<SocketAddr>> {
    (host, 80).to_socket_addrs().map(Iterator::collect)
}

/// Slow DNS answers overlap: 20 lookups from coroutines of one worker take
/// about one answer's delay, the worker keeps running meanwhile, and an
/// unknown name fails as on a thread.
#[test]
fn name_lookups_from_coroutines_overlap() {
    if child_case().as_deref() == Some("dns") {
        return lookups_in_the_namespace();
    }
    let dns = FakeDns::start();
    let Some(output) = in_resolver_namespace(&dns) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the child failed ({}); stdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    print!("{stdout}");
    // Every lookup asked the server: none was answered from a file.
    let queries = dns.slow_host_queries.load(Ordering::SeqCst);
    assert!(
        queries >= 3 * LOOKUPS,
        "the fake server saw {queries} A queries for {SLOW_HOST}, want >= {}",
        3 * LOOKUPS
    );
}

/// The child's side of [`name_lookups_from_coroutines_overlap`].
fn lookups_in_the_namespace() {
    let nameserver = std::env::var(NAMESERVER_ENV).unwrap();
    let resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap();
    assert!(
        resolv_conf.contains(&nameserver),
        "the namespace's resolv.conf does not name the fake server: {resolv_conf}"
    );
    // The reference: a plain thread's answers.
    let expected = vec![SocketAddr::from((SLOW_HOST_ADDRESS, 80))];
    assert_eq!(lookup(SLOW_HOST).unwrap(), expected);
    let unknown = lookup(UNKNOWN_HOST).unwrap_err().to_string();
    let unknown_legacy = legacy_lookup(UNKNOWN_HOST);
    // HOST_NOT_FOUND
    assert_eq!(unknown_legacy, Err(1));

    watchdog("lookups", Duration::from_secs(30), 1, move || {
        let ticker = Ticker::start();
        // Several rounds: each result is freed (`freeaddrinfo`) before the
        // next round allocates again.
        for round in 0..3 {
            let (results, elapsed, ticks) = ticker.during(|| {
                let lookups: Vec<_> = (0..LOOKUPS)
                    .map(|_| coroutines::spawn(|| lookup(SLOW_HOST)))
                    .collect();
                let results: Vec<_> = lookups.into_iter().map(|h| h.join().unwrap()).collect();
                results
            });
            println!("round {round}: {LOOKUPS} lookups of {DNS_DELAY:?} each took {elapsed:?}, {ticks} ticks");
            for result in results {
                assert_eq!(result.unwrap(), expected);
            }
            assert!(
                elapsed >= DNS_DELAY - Duration::from_millis(10),
                "the lookups returned before the server answered: {elapsed:?}"
            );
            // One after the other they take 6 s.
            assert!(
                elapsed < Duration::from_secs(2),
                "{LOOKUPS} lookups took {elapsed:?}: they did not overlap"
            );
            assert_ticked(ticks);
        }
        let (result, elapsed, ticks) = ticker.during(|| lookup(UNKNOWN_HOST));
        assert_eq!(result.unwrap_err().to_string(), unknown);
        assert!(
            elapsed >= DNS_DELAY - Duration::from_millis(10),
            "{elapsed:?}"
        );
        assert_ticked(ticks);
        // A lookup after a failed one works as before.
        assert_eq!(lookup(SLOW_HOST).unwrap(), expected);

        // The legacy lookup too, with its `h_errno` carried back.
        let (found, elapsed, ticks) = ticker.during(|| legacy_lookup(SLOW_HOST));
        assert_eq!(found, Ok(SLOW_HOST_ADDRESS));
        assert!(
            elapsed >= DNS_DELAY - Duration::from_millis(10),
            "{elapsed:?}"
        );
        assert_ticked(ticks);
        assert_eq!(legacy_lookup(UNKNOWN_HOST), unknown_legacy);
    });
}

unsafe extern "C" {
    fn __h_errno_location() -> *mut libc::c_int;
    fn gethostbyname(name: *const libc::c_char) -> *mut libc::hostent;
}

/// `gethostbyname(name)`: the first IPv4 address, or `h_errno`.
fn legacy_lookup(name: &str) -> Result<Ipv4Addr, libc::c_int> {
    let name = CString::new(name).unwrap();
    // SAFETY: a NUL-terminated name; the result points into glibc's static
    // buffer, read before any other lookup of this test.
    unsafe {
        *__h_errno_location() = 0;
        let host = gethostbyname(name.as_ptr());
        if host.is_null() {
            return Err(*__h_errno_location());
        }
        let first = *(*host).h_addr_list;
        let octets = std::slice::from_raw_parts(first as *const u8, 4);
        Ok(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))
    }
}

/// A job of `spawn_blocking` that blocks its thread (a raw `nanosleep`,
/// which no hook sees) parks the joining coroutine: the worker keeps
/// running the ticker, and the job's value comes back.
#[test]
fn spawn_blocking_parks_the_joining_coroutine() {
    on_one_worker("spawn_blocking", || {
        let ticker = Ticker::start();
        let (value, elapsed, ticks) = ticker.during(|| {
            coroutines::spawn_blocking(|| {
                raw_sleep(Duration::from_millis(300));
                (coroutines::in_coroutine(), 42)
            })
            .join()
            .unwrap()
        });
        assert_eq!(value, (false, 42), "the job runs on a helper thread");
        assert!(elapsed >= Duration::from_millis(290), "{elapsed:?}");
        assert_ticked(ticks);
    });
}

/// Ten blocking jobs of 300 ms from one worker run side by side: together
/// in well under the 3 s they take one after the other.
#[test]
fn blocking_jobs_run_side_by_side() {
    on_one_worker("spawn_blocking x10", || {
        let ticker = Ticker::start();
        let (sum, elapsed, ticks) = ticker.during(|| {
            let jobs: Vec<_> = (0..10u64)
                .map(|i| {
                    coroutines::spawn_blocking(move || {
                        raw_sleep(Duration::from_millis(300));
                        i
                    })
                })
                .collect();
            jobs.into_iter().map(|j| j.join().unwrap()).sum::<u64>()
        });
        println!("ten 300 ms jobs: {elapsed:?}, {ticks} ticks");
        assert_eq!(sum, 45);
        assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
        assert_ticked(ticks);
    });
}

/// `blocking_threads(2)` runs at most two jobs at once; the rest queue.
#[test]
fn blocking_threads_bounds_the_jobs_running_at_once() {
    let builder = coroutines::Runtime::builder()
        .workers(1)
        .blocking_threads(2);
    let (most, elapsed) = watchdog_on("blocking_threads(2)", WATCHDOG, builder, || {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let jobs: Vec<_> = (0..6)
            .map(|_| {
                let (running, most) = (running.clone(), most.clone());
                coroutines::spawn_blocking(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    raw_sleep(Duration::from_millis(100));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for job in jobs {
            job.join().unwrap();
        }
        (most.load(Ordering::SeqCst), start.elapsed())
    });
    assert_eq!(most, 2, "jobs running at once");
    // Three rounds of two.
    assert!(elapsed >= Duration::from_millis(290), "{elapsed:?}");
}

/// The macro's `blocking_threads = 1` is the builder's: two jobs take
/// turns.
#[coroutines::test(workers = 1, blocking_threads = 1)]
fn blocking_threads_macro_argument() {
    let start = Instant::now();
    let jobs: Vec<_> = (0..2)
        .map(|_| coroutines::spawn_blocking(|| raw_sleep(Duration::from_millis(150))))
        .collect();
    for job in jobs {
        job.join().unwrap();
    }
    assert!(
        start.elapsed() >= Duration::from_millis(290),
        "{:?}",
        start.elapsed()
    );
}

/// From a plain thread, `spawn_blocking` returns the job's value, and a
/// job's panic comes back from `join` as an error, as a thread's does.
#[test]
fn spawn_blocking_from_a_plain_thread() {
    let job = coroutines::spawn_blocking(|| {
        raw_sleep(Duration::from_millis(50));
        (coroutines::in_coroutine(), "done")
    });
    assert_eq!(job.join().unwrap(), (false, "done"));

    let panicked = coroutines::spawn_blocking(|| -> u32 { panic!("job failed") });
    let payload = panicked.join().unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"job failed"));
}

/// A job's panic comes back from `join` in a coroutine too, and the pool
/// goes on running jobs afterwards.
#[test]
fn spawn_blocking_panics_reach_the_joining_coroutine() {
    on_one_worker("spawn_blocking panic", || {
        let panicked =
            coroutines::spawn_blocking(|| -> u32 { std::panic::panic_any(String::from("boom")) });
        let payload = panicked.join().unwrap_err();
        assert_eq!(
            payload.downcast_ref::<String>().map(String::as_str),
            Some("boom")
        );
        assert_eq!(coroutines::spawn_blocking(|| 5).join().unwrap(), 5);
    });
}
