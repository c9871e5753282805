//! Probes for the adaptive idle spin of a worker (`Local::idle`): each spin
//! that finds nothing halves the next one (down to none), and a sleep that a
//! notification ends within 50 us restores it. The spin is meant to be a
//! pure optimisation: the check for work after `sleeping` and the fence is
//! what keeps wake-ups from being lost.
//!
//! Each probe first *decays* the spin of every worker (a dozen paced
//! rounds: a 1 ms sleep, then one exchange, so that every worker goes to
//! sleep with a spin that finds nothing, and wakes up by a timer or by a
//! notification long after it fell asleep), then runs a pattern that the
//! spin used to serve: cross-worker ping-pong through `std::sync::mpsc` and
//! `Condvar`, a coroutine woken by a plain thread, spawn and join bursts
//! after idle periods, timers, spare workers of the blocked-worker monitor,
//! and shutdown. Every pattern must complete, with the same results as
//! plain threads where that applies, within generous bounds.

mod support;

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use coroutines::{JoinHandle, Runtime};
use support::compute;

/// Round trips of each ping-pong.
const ROUND_TRIPS: u64 = 2_000;
/// How long the round trips of one ping-pong may take in all: ~100 us
/// each even if every hop sleeps in the kernel, so this is 25x that.
const PING_PONG_LIMIT: Duration = Duration::from_secs(5);
/// Paced rounds that decay the spin: 64 halves to 0 in 7.
const DECAY_ROUNDS: usize = 12;

/// A kernel thread id: which worker runs the caller.
fn os_thread() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// A 2-worker runtime whose started coroutines stay on their worker, so
/// that a ping-pong stays across workers; the monitor stays out of it.
fn pinned_builder() -> coroutines::runtime::Builder {
    Runtime::builder()
        .workers(2)
        .work_stealing(false)
        .blocked_worker_threshold(Duration::MAX)
}

fn on_pinned<T: Send + 'static>(what: &str, body: impl FnOnce() -> T + Send + 'static) -> T {
    support::watchdog_on(what, Duration::from_secs(30), pinned_builder(), body)
}

/// Spawns `body` so that it starts on the other worker: the caller holds
/// its own worker (no switch) until the idle one has taken the new
/// coroutine. Without work stealing it stays there.
fn spawn_on_other_worker<T: Send + 'static>(
    body: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let started = Arc::new(AtomicI32::new(0));
    let handle = {
        let started = started.clone();
        coroutines::spawn(move || {
            started.store(os_thread(), Ordering::SeqCst);
            body()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while started.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the idle worker did not take a new coroutine"
        );
        std::hint::spin_loop();
    }
    assert_ne!(
        started.load(Ordering::SeqCst),
        os_thread(),
        "the peer must run on the other worker"
    );
    handle
}

/// A peer on the other worker that answers each number `n` with `n + 1`
/// until its channel closes; returns how many it answered.
fn echo_peer() -> (mpsc::Sender<u64>, mpsc::Receiver<u64>, JoinHandle<u64>) {
    let (to_peer, peer_in) = mpsc::channel::<u64>();
    let (peer_out, from_peer) = mpsc::channel::<u64>();
    let peer = spawn_on_other_worker(move || {
        let mut answered = 0;
        for n in peer_in {
            peer_out.send(n + 1).unwrap();
            answered += 1;
        }
        answered
    });
    (to_peer, from_peer, peer)
}

/// Paced exchanges with the peer: each worker sleeps with nothing to find
/// for about a millisecond per round, which decays its spin to nothing.
fn decay(to_peer: &mpsc::Sender<u64>, from_peer: &mpsc::Receiver<u64>) {
    for i in 0..DECAY_ROUNDS as u64 {
        thread::sleep(Duration::from_millis(1));
        to_peer.send(i).unwrap();
        assert_eq!(from_peer.recv().unwrap(), i + 1);
    }
}

/// `ROUND_TRIPS` round trips with the peer; returns how long they took and
/// the sum of the answers.
fn ping_pong(to_peer: &mpsc::Sender<u64>, from_peer: &mpsc::Receiver<u64>) -> (Duration, u64) {
    let start = Instant::now();
    let mut sum = 0;
    for i in 0..ROUND_TRIPS {
        to_peer.send(i).unwrap();
        sum += from_peer.recv().unwrap();
    }
    (start.elapsed(), sum)
}

/// The answers' sum, as plain threads compute it.
fn thread_ping_pong_sum() -> u64 {
    let (to_peer, peer_in) = mpsc::channel::<u64>();
    let (peer_out, from_peer) = mpsc::channel::<u64>();
    let peer = thread::spawn(move || {
        for n in peer_in {
            peer_out.send(n + 1).unwrap();
        }
    });
    let mut sum = 0;
    for i in 0..ROUND_TRIPS {
        to_peer.send(i).unwrap();
        sum += from_peer.recv().unwrap();
    }
    drop(to_peer);
    peer.join().unwrap();
    sum
}

#[test]
fn mpsc_ping_pong_across_workers_after_the_spin_decayed() {
    let expected = thread_ping_pong_sum();
    let (fresh, decayed) = on_pinned("mpsc ping-pong", move || {
        let (to_peer, from_peer, peer) = echo_peer();
        let (fresh, sum) = ping_pong(&to_peer, &from_peer);
        assert_eq!(sum, expected, "fresh ping-pong");
        let mut decayed = Vec::new();
        // Several bursts, each after its own paced phase: a burst that
        // restored the spin is decayed again before the next.
        for _ in 0..3 {
            decay(&to_peer, &from_peer);
            let (elapsed, sum) = ping_pong(&to_peer, &from_peer);
            assert_eq!(sum, expected, "ping-pong after a decay");
            decayed.push(elapsed);
        }
        drop(to_peer);
        let answered = peer.join().unwrap();
        assert_eq!(answered, ROUND_TRIPS * 4 + 3 * DECAY_ROUNDS as u64);
        (fresh, decayed)
    });
    eprintln!("mpsc ping-pong of {ROUND_TRIPS}: fresh {fresh:?}, after decay {decayed:?}");
    for elapsed in decayed.iter().chain([&fresh]) {
        assert!(
            *elapsed < PING_PONG_LIMIT,
            "{ROUND_TRIPS} round trips took {elapsed:?} (fresh {fresh:?}, decayed {decayed:?})"
        );
    }
}

/// A turn-taking counter: the peer adds on odd values, the root on even.
struct Turns {
    value: Mutex<u64>,
    changed: Condvar,
}

impl Turns {
    /// Waits until the value has `parity`, then adds one; returns the
    /// value seen. Stops (returning `None`) once the value reaches `end`.
    fn take(&self, parity: u64, end: u64) -> Option<u64> {
        let mut value = self.value.lock().unwrap();
        while *value % 2 != parity && *value < end {
            value = self.changed.wait(value).unwrap();
        }
        if *value >= end {
            return None;
        }
        let seen = *value;
        *value += 1;
        self.changed.notify_all();
        Some(seen)
    }
}

/// Starts a side on another thread or coroutine; the returned closure
/// joins it.
type Side = Box<dyn FnOnce() -> Vec<u64> + Send>;
type Joiner = Box<dyn FnOnce() -> Vec<u64>>;

/// `2 * rounds` alternating increments by two sides; returns the values
/// each side saw (the caller's evens, the peer's odds).
fn condvar_turns(
    turns: &Arc<Turns>,
    rounds: u64,
    spawn: impl FnOnce(Side) -> Joiner,
) -> (Vec<u64>, Vec<u64>) {
    let end = 2 * rounds;
    let peer = {
        let turns = turns.clone();
        spawn(Box::new(move || {
            let mut seen = Vec::new();
            while let Some(v) = turns.take(1, end) {
                seen.push(v);
            }
            seen
        }))
    };
    let mut mine = Vec::new();
    while let Some(v) = turns.take(0, end) {
        mine.push(v);
    }
    (mine, peer())
}

#[test]
fn condvar_ping_pong_across_workers_after_the_spin_decayed() {
    let rounds = ROUND_TRIPS;
    let threads = {
        let turns = Arc::new(Turns {
            value: Mutex::new(0),
            changed: Condvar::new(),
        });
        condvar_turns(&turns, rounds, |body| {
            let handle = thread::spawn(body);
            Box::new(move || handle.join().unwrap())
        })
    };
    let (coroutines, elapsed) = on_pinned("condvar ping-pong", move || {
        // Decay first, with an echo peer on the other worker.
        let (to_peer, from_peer, echo) = echo_peer();
        decay(&to_peer, &from_peer);
        drop(to_peer);
        echo.join().unwrap();
        let turns = Arc::new(Turns {
            value: Mutex::new(0),
            changed: Condvar::new(),
        });
        let start = Instant::now();
        let seen = condvar_turns(&turns, rounds, |body| {
            let handle = spawn_on_other_worker(body);
            Box::new(move || handle.join().unwrap())
        });
        (seen, start.elapsed())
    });
    eprintln!("condvar ping-pong of {rounds} after decay: {elapsed:?}");
    assert_eq!(
        coroutines, threads,
        "coroutines and threads saw different turns"
    );
    assert_eq!(coroutines.0.len() as u64, rounds);
    assert!(elapsed < PING_PONG_LIMIT, "{rounds} turns took {elapsed:?}");
}

/// Ping-pong where the peer computes a few microseconds per reply: replies
/// that come just after a decayed spin gave up, the case where the spin
/// may never be restored (the sleep lasts the rest of the computation plus
/// a kernel wake-up).
#[test]
fn ping_pong_with_a_computing_peer_after_the_spin_decayed() {
    for micros in [2u64, 5, 10, 15] {
        let work = Duration::from_micros(micros);
        let (elapsed, sum) = on_pinned("computing ping-pong", move || {
            let (to_peer, peer_in) = mpsc::channel::<u64>();
            let (peer_out, from_peer) = mpsc::channel::<u64>();
            let peer = spawn_on_other_worker(move || {
                for n in peer_in {
                    compute(work);
                    peer_out.send(n + 1).unwrap();
                }
            });
            decay(&to_peer, &from_peer);
            let result = ping_pong(&to_peer, &from_peer);
            drop(to_peer);
            peer.join().unwrap();
            result
        });
        eprintln!(
            "ping-pong with {micros} us of work per reply: {:?} per round trip",
            elapsed / ROUND_TRIPS as u32
        );
        assert_eq!(sum, ROUND_TRIPS * (ROUND_TRIPS + 1) / 2);
        assert!(
            elapsed < PING_PONG_LIMIT + work * ROUND_TRIPS as u32,
            "{ROUND_TRIPS} round trips with {micros} us of work took {elapsed:?}"
        );
    }
}

/// A coroutine woken by a plain thread: the thread sends, the coroutine
/// (whose worker's spin decayed) answers; the same answers as between two
/// threads.
#[test]
fn a_plain_thread_ping_pongs_with_a_coroutine_after_the_spin_decayed() {
    let expected = thread_ping_pong_sum();
    let runtime = pinned_builder().build().unwrap();
    let (to_peer, peer_in) = mpsc::channel::<u64>();
    let (peer_out, from_peer) = mpsc::channel::<u64>();
    let peer = runtime.spawn(move || {
        let mut answered = 0u64;
        for n in peer_in {
            peer_out.send(n + 1).unwrap();
            answered += 1;
        }
        answered
    });
    // This test's thread is the plain thread.
    decay(&to_peer, &from_peer);
    let (elapsed, sum) = ping_pong(&to_peer, &from_peer);
    // Sparse wake-ups too: each after the worker fell asleep.
    for i in 0..50 {
        thread::sleep(Duration::from_micros(200));
        to_peer.send(i).unwrap();
        assert_eq!(
            from_peer.recv_timeout(Duration::from_secs(5)),
            Ok(i + 1),
            "a coroutine woken by a plain thread did not answer"
        );
    }
    drop(to_peer);
    assert_eq!(peer.join().unwrap(), ROUND_TRIPS + DECAY_ROUNDS as u64 + 50);
    eprintln!("thread-to-coroutine ping-pong of {ROUND_TRIPS} after decay: {elapsed:?}");
    assert_eq!(sum, expected);
    assert!(elapsed < PING_PONG_LIMIT, "took {elapsed:?}");
}

/// Spawn and join bursts, each after an idle period: the results are the
/// plain computation's, and the bursts finish promptly.
#[test]
fn spawn_join_bursts_after_idle_periods() {
    let expected: u64 = (0..200u64).map(|i| i * i).sum();
    let elapsed = support::run(2, Duration::from_secs(30), move || {
        let mut busy = Duration::ZERO;
        for _ in 0..30 {
            thread::sleep(Duration::from_millis(2));
            let start = Instant::now();
            let handles: Vec<_> = (0..200u64)
                .map(|i| {
                    coroutines::spawn(move || {
                        coroutines::yield_now();
                        i * i
                    })
                })
                .collect();
            let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
            busy += start.elapsed();
            assert_eq!(sum, expected);
        }
        busy
    });
    eprintln!("30 bursts of 200 spawns and joins after idle periods: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

/// Timers on both workers after the spin decayed: every sleep ends, none
/// very late.
#[test]
fn timers_fire_after_the_spin_decayed() {
    let worst = on_pinned("timers", || {
        let (to_peer, from_peer, echo) = echo_peer();
        decay(&to_peer, &from_peer);
        drop(to_peer);
        echo.join().unwrap();
        let handles: Vec<_> = (0..200u64)
            .map(|i| {
                coroutines::spawn(move || {
                    let nap = Duration::from_millis(1 + i % 20);
                    let start = Instant::now();
                    thread::sleep(nap);
                    start.elapsed() - nap
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap()
    });
    eprintln!("latest timer after decay: {worst:?} late");
    assert!(
        worst < Duration::from_millis(500),
        "a sleep ended {worst:?} late"
    );
}

/// Lost wake-up hunt: with spins decayed every hand-off goes through the
/// sleep path. A token goes round a ring of coroutines on both workers
/// (work stealing on, the monitor on), with idle gaps, while a plain
/// thread spawns from outside; everything completes.
#[test]
fn token_ring_and_outside_spawns_with_idle_gaps_complete() {
    const HOPS: u64 = 20_000;
    const RING: usize = 4;
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let done = AtomicBool::new(false);
    let ran = Arc::new(AtomicU64::new(0));
    let (ring, spawned) = thread::scope(|scope| {
        let outsider = scope.spawn(|| {
            let mut spawned = 0u64;
            while !done.load(Ordering::SeqCst) {
                let ran = ran.clone();
                let h = runtime.spawn(move || {
                    ran.fetch_add(1, Ordering::SeqCst);
                });
                spawned += 1;
                let start = Instant::now();
                while !h.is_finished() {
                    assert!(
                        start.elapsed() < Duration::from_secs(5),
                        "a coroutine spawned from a plain thread never ran"
                    );
                    thread::yield_now();
                }
                h.join().unwrap();
                if spawned.is_multiple_of(8) {
                    thread::sleep(Duration::from_micros(300));
                }
            }
            spawned
        });
        let ring = runtime.block_on(move || {
            let (senders, receivers): (Vec<_>, Vec<_>) =
                (0..RING).map(|_| mpsc::channel::<u64>()).unzip();
            let handles: Vec<_> = receivers
                .into_iter()
                .enumerate()
                .map(|(i, rx)| {
                    let next = senders[(i + 1) % RING].clone();
                    coroutines::spawn(move || {
                        let mut seen = 0u64;
                        for hop in rx {
                            seen += 1;
                            if hop % 997 == 0 {
                                thread::sleep(Duration::from_micros(500));
                            }
                            if hop + 1 >= HOPS {
                                let _ = next.send(HOPS);
                                break;
                            }
                            let _ = next.send(hop + 1);
                        }
                        seen
                    })
                })
                .collect();
            senders[0].send(0).unwrap();
            drop(senders);
            handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
        });
        done.store(true, Ordering::SeqCst);
        (ring, outsider.join().unwrap())
    });
    let ran = ran.load(Ordering::SeqCst);
    // Each coroutine stops after the last hop, and the one after the last
    // sees the end marker: HOPS hops plus at most RING - 1 markers.
    assert!(
        (HOPS..HOPS + RING as u64).contains(&ring),
        "ring saw {ring} hops"
    );
    assert_eq!(spawned, ran, "outside spawns that never ran");
}

/// Spare workers of the blocked-worker monitor run `idle` too: coroutines
/// queued behind a computing one still run, in several incidents separated
/// by idle periods (which decay the spare's spin).
#[test]
fn spare_workers_take_queued_coroutines_after_idle_periods() {
    let builder = Runtime::builder()
        .workers(1)
        .blocked_worker_threshold(Duration::from_millis(20))
        .blocked_worker_warnings(false);
    support::watchdog_on("spares", Duration::from_secs(30), builder, || {
        for round in 0..4 {
            for _ in 0..DECAY_ROUNDS {
                thread::sleep(Duration::from_millis(1));
            }
            let start = Instant::now();
            let cruncher = coroutines::spawn(move || {
                let followers: Vec<_> = (0..20)
                    .map(|_| coroutines::spawn(move || start.elapsed()))
                    .collect();
                compute(Duration::from_millis(400));
                (start.elapsed(), followers)
            });
            let (crunched, followers) = cruncher.join().unwrap();
            let latest = followers
                .into_iter()
                .map(|f| f.join().unwrap())
                .max()
                .unwrap();
            assert!(
                latest < crunched,
                "round {round}: followers ran after {latest:?}, the cruncher ended at {crunched:?}"
            );
        }
    });
}

/// Shutdown of runtimes whose workers' spins decayed: dropping each ends
/// promptly, and a coroutine still parked then fails its join.
#[test]
fn shutdown_after_the_spin_decayed_is_prompt() {
    for _ in 0..10 {
        let runtime = pinned_builder().build().unwrap();
        let (stop, wait) = mpsc::channel::<()>();
        let parked = runtime.spawn(move || wait.recv().is_ok());
        runtime.block_on(|| {
            let (to_peer, from_peer, echo) = echo_peer();
            decay(&to_peer, &from_peer);
            drop(to_peer);
            echo.join().unwrap();
        });
        let start = Instant::now();
        let dropper = thread::spawn(move || drop(runtime));
        while !dropper.is_finished() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "dropping an idle runtime hangs"
            );
            thread::sleep(Duration::from_millis(1));
        }
        dropper.join().unwrap();
        assert!(
            parked.join().is_err(),
            "a coroutine parked at shutdown joined"
        );
        drop(stop);
    }
}
