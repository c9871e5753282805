//! Hooked calls that never block still let the worker's other coroutines
//! run: after a budget of calls without a switch, the calling coroutine
//! yields. The monitor is off in these runtimes, so nothing else would
//! hand its worker over.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use coroutines::runtime::Builder;
use support::*;

/// How long the busy coroutine keeps making calls that do not block.
const BUSY: Duration = Duration::from_secs(1);

/// A one-worker runtime without the blocked-worker monitor.
fn one_worker() -> Builder {
    Builder::default()
        .workers(1)
        .blocked_worker_threshold(Duration::MAX)
}

/// Runs `busy` (which returns after `BUSY` of calls that do not block) in a
/// coroutine, and a second coroutine spawned right after it; returns when
/// the second one ran, from the start.
fn bystander_runs_beside(what: &str, busy: fn(Instant)) -> Duration {
    watchdog_on(what, Duration::from_secs(20), one_worker(), move || {
        let start = Instant::now();
        let busy = coroutines::spawn(move || busy(start));
        let bystander = coroutines::spawn(move || start.elapsed());
        let ran = bystander.join().unwrap();
        busy.join().unwrap();
        ran
    })
}

#[test]
fn a_reader_whose_data_never_runs_out_lets_others_run() {
    let ran = bystander_runs_beside("endless reader", |start| {
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        let mut buf = [0u8; 64];
        while start.elapsed() < BUSY {
            // Data is always queued: neither call ever parks.
            theirs.write_all(&buf).unwrap();
            ours.read_exact(&mut buf).unwrap();
        }
    });
    assert!(
        ran < BUSY / 2,
        "a coroutine queued behind an endless reader ran after {ran:?}"
    );
}

#[test]
fn an_accept_loop_under_a_burst_lets_its_handlers_run() {
    // Every connection is queued before the loop starts, so no accept
    // parks; the handlers the loop spawns must run while it goes on.
    const CONNECTIONS: usize = 512;
    let handled_during = watchdog_on(
        "accept burst",
        Duration::from_secs(20),
        one_worker(),
        || {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            // SAFETY: a listening socket this function owns; listening
            // again only raises its backlog.
            assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 1024) }, 0);
            let addr = listener.local_addr().unwrap();
            let clients = std::thread::spawn(move || {
                (0..CONNECTIONS)
                    .map(|_| TcpStream::connect(addr).unwrap())
                    .collect::<Vec<_>>()
            })
            .join()
            .unwrap();
            let (handled, first) = std::sync::mpsc::channel();
            let mut handled_during = None;
            for accepted in 1..=CONNECTIONS {
                let (stream, _) = listener.accept().unwrap();
                let handled = handled.clone();
                coroutines::spawn(move || {
                    drop(stream);
                    let _ = handled.send(());
                });
                if handled_during.is_none() && first.try_recv().is_ok() {
                    handled_during = Some(accepted);
                }
            }
            drop(clients);
            handled_during
        },
    );
    assert!(
        handled_during.is_some(),
        "no handler ran before the accept loop had accepted all {CONNECTIONS} connections"
    );
}
