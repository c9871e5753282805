//! Probes of the resume prefetch (`acf2e70`: a task's `resume_hint`, set by
//! `Local::start`, read by `Local::pop_ready` and `Local::run_task` to
//! prefetch its generator and thread block lines; `generator_address` in
//! `StackBounds::of_generator`).
//!
//! Prefetching must change nothing a coroutine can observe. Each probe runs
//! many coroutines taking turns (so the ready queue is long and the hints of
//! the ones after the current are read) in a configuration where a hint may
//! be zero or stale: new coroutines, recycled stacks and thread blocks,
//! identity on and off, custom and measured stacks, runtimes rebuilt,
//! coroutines migrating (work stealing, the blocked-worker monitor), a stack
//! overflow and a panic among them, a fork from inside one. What each
//! coroutine sees of itself (its thread-locals, `errno`, `pthread_self`, its
//! `ThreadId`) is compared with what plain threads doing the same see.

mod support;

use std::cell::Cell;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use coroutines::runtime::Builder;
use coroutines::Runtime;
use support::child::{child_case, rerun, run_child};
use support::identity::{joined, on_runtime, os_thread};
use support::{errno, recurse_deeply, set_errno};

thread_local! {
    static TAG: Cell<u64> = const { Cell::new(0) };
    static ROUNDS: Cell<u64> = const { Cell::new(0) };
}

/// What one party saw of itself over its turns.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Seen {
    /// The party's index.
    index: u64,
    /// Its thread-local started at its default (a fresh thread's).
    fresh_tls: bool,
    /// Its `errno` started at 0 (a fresh thread's).
    fresh_errno: bool,
    /// Turns after which its thread-locals were not its own.
    tls_lost: u32,
    /// Turns after which its `errno` was not its own.
    errno_lost: u32,
    /// Turns after which `pthread_self` or `ThreadId` changed.
    self_changed: u32,
    /// Turns after which a value on its own stack had changed.
    stack_lost: u32,
    /// Its thread-local's final value, from its own updates.
    rounds: u64,
}

/// Whether a party runs as a thread or a coroutine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Thread,
    Coroutine,
}

/// Gives up the processor: a yield of a coroutine, or a thread's.
fn turn(kind: Kind) {
    match kind {
        Kind::Coroutine => coroutines::yield_now(),
        Kind::Thread => thread::yield_now(),
    }
}

/// The life of one party: takes `turns` turns, each time checking that
/// its thread-locals, `errno` and thread identity are still its own;
/// `between` runs inside each turn (a sleep, a spin...).
fn party(kind: Kind, index: u64, turns: u32, between: &dyn Fn(u32)) -> Seen {
    let fresh_tls = TAG.with(Cell::get) == 0 && ROUNDS.with(Cell::get) == 0;
    let fresh_errno = errno() == 0;
    let id = thread::current().id();
    // SAFETY: no preconditions.
    let me = unsafe { libc::pthread_self() };
    let mine = 1000 + index;
    TAG.with(|t| t.set(mine));
    let mut seen = Seen {
        index,
        fresh_tls,
        fresh_errno,
        tls_lost: 0,
        errno_lost: 0,
        self_changed: 0,
        stack_lost: 0,
        rounds: 0,
    };
    let mut local = [0u64; 64];
    for round in 0..turns {
        local
            .iter_mut()
            .enumerate()
            .for_each(|(k, w)| *w = index ^ (k as u64) ^ (round as u64) << 32);
        let local = std::hint::black_box(&mut local);
        ROUNDS.with(|r| r.set(r.get() + 1));
        let code = (index as i32 * 7 + round as i32) % 4000 + 1;
        set_errno(code);
        between(round);
        turn(kind);
        if errno() != code {
            seen.errno_lost += 1;
        }
        let local = std::hint::black_box(local);
        if local
            .iter()
            .enumerate()
            .any(|(k, w)| *w != index ^ (k as u64) ^ (round as u64) << 32)
        {
            seen.stack_lost += 1;
        }
        if TAG.with(Cell::get) != mine {
            seen.tls_lost += 1;
        }
        // SAFETY: no preconditions.
        if thread::current().id() != id || unsafe { libc::pthread_self() } != me {
            seen.self_changed += 1;
        }
    }
    seen.rounds = ROUNDS.with(Cell::get);
    seen
}

/// `parties` threads each living [`party`].
fn threads(parties: u64, turns: u32, between: fn(u32)) -> Vec<Seen> {
    let handles: Vec<_> = (0..parties)
        .map(|i| thread::spawn(move || party(Kind::Thread, i, turns, &between)))
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// `parties` coroutines each living [`party`], spawned from a plain thread
/// on a runtime from `builder`.
fn coroutines_on(builder: Builder, parties: u64, turns: u32, between: fn(u32)) -> Vec<Seen> {
    on_runtime(builder, Duration::from_secs(60), move |runtime| {
        let handles: Vec<_> = (0..parties)
            .map(|i| runtime.spawn(move || party(Kind::Coroutine, i, turns, &between)))
            .collect();
        handles.into_iter().map(joined).collect()
    })
}

fn nothing(_: u32) {}

/// What a thread sees: every check holds.
fn expected(parties: u64, turns: u32) -> Vec<Seen> {
    (0..parties)
        .map(|index| Seen {
            index,
            fresh_tls: true,
            fresh_errno: true,
            tls_lost: 0,
            errno_lost: 0,
            self_changed: 0,
            stack_lost: 0,
            rounds: turns as u64,
        })
        .collect()
}

/// What a coroutine can promise of [`Seen`]: all of it with its own thread
/// identity; without one (it shares its worker's thread-locals, `errno`
/// and thread), only its own stack.
fn promised(seen: &Seen, identity: bool) -> Seen {
    if identity {
        return seen.clone();
    }
    Seen {
        index: seen.index,
        fresh_tls: true,
        fresh_errno: true,
        tls_lost: 0,
        errno_lost: 0,
        self_changed: 0,
        stack_lost: seen.stack_lost,
        rounds: 0,
    }
}

#[track_caller]
fn compare(
    what: &str,
    identity: bool,
    coroutine: Vec<Seen>,
    parties: u64,
    turns: u32,
    between: fn(u32),
) {
    let mut reference = threads(parties, turns, between);
    // A new std thread may find errno already set by its start-up: glibc's
    // `calloc` (std registering the thread's first TLS destructor) waits on
    // a contended arena lock, and the futex wait's EAGAIN stays in errno.
    // Seen with `strace -f -k` in a binary without this crate too, so not
    // something to compare against. A new coroutine's identity starts at 0,
    // which the expectation keeps.
    reference.iter_mut().for_each(|s| s.fresh_errno = true);
    assert_eq!(reference, expected(parties, turns), "{what}: the threads");
    let coroutine: Vec<_> = coroutine.iter().map(|s| promised(s, identity)).collect();
    let reference: Vec<_> = reference.iter().map(|s| promised(s, identity)).collect();
    let wrong: Vec<_> = coroutine
        .iter()
        .zip(&reference)
        .filter(|(c, r)| c != r)
        .take(5)
        .collect();
    assert!(
        wrong.is_empty(),
        "{what}: coroutines (left) differ from threads (right): {wrong:?}"
    );
    assert_eq!(coroutine.len(), reference.len(), "{what}");
}

/// Many coroutines taking turns on one worker, with the ready queue long
/// enough that `pop_ready` reads the hints of the two after the current,
/// identity on (the default) and off.
#[test]
fn many_coroutines_taking_turns_keep_their_own_state_identity_on_and_off() {
    for identity in [true, false] {
        let builder = Runtime::builder().workers(1).thread_identity(identity);
        let seen = coroutines_on(builder, 256, 30, nothing);
        compare(
            &format!("identity {identity}"),
            identity,
            seen,
            256,
            30,
            nothing,
        );
    }
}

/// On one worker, coroutines that yield to each other run in FIFO order,
/// as before the prefetching: the ready queue's order is untouched.
#[test]
fn turns_are_taken_round_robin() {
    const N: usize = 64;
    const TURNS: usize = 20;
    let log = on_runtime(
        Runtime::builder().workers(1),
        Duration::from_secs(30),
        |runtime| {
            runtime.block_on(|| {
                let log = Arc::new(Mutex::new(Vec::new()));
                let handles: Vec<_> = (0..N)
                    .map(|i| {
                        let log = log.clone();
                        coroutines::spawn(move || {
                            for _ in 0..TURNS {
                                log.lock().unwrap().push(i);
                                coroutines::yield_now();
                            }
                        })
                    })
                    .collect();
                handles.into_iter().for_each(joined);
                let log = log.lock().unwrap().clone();
                log
            })
        },
    );
    assert_eq!(log.len(), N * TURNS);
    // Once all have started (the scheduler's fairness tick may let the
    // first run twice before the last starts), they take turns in a fixed
    // cycle, each once per cycle, as long as all are alive.
    let started = log.iter().position(|&i| i == N - 1).unwrap() + 1;
    let rest = &log[started..];
    let mut cycle = rest[..N].to_vec();
    cycle.sort_unstable();
    assert_eq!(
        cycle,
        (0..N).collect::<Vec<_>>(),
        "a cycle: {:?}",
        &rest[..N]
    );
    for k in 0..(TURNS - 3) * N {
        assert_eq!(rest[k], rest[k % N], "turn {k} after all started: {log:?}");
    }
}

/// Waves of coroutines on one worker: each wave's coroutines get the
/// stacks (and thread blocks) the last wave's gave back, and must start
/// as fresh as a new thread, while an older cohort keeps taking turns
/// (its hints read between the newcomers').
#[test]
fn recycled_stacks_start_fresh_beside_a_cohort_taking_turns() {
    for identity in [true, false] {
        let builder = Runtime::builder().workers(1).thread_identity(identity);
        let (cohort, waves) = on_runtime(builder, Duration::from_secs(60), |runtime| {
            runtime.block_on(|| {
                let cohort: Vec<_> = (0..32)
                    .map(|i| coroutines::spawn(move || party(Kind::Coroutine, i, 200, &nothing)))
                    .collect();
                let mut waves = Vec::new();
                for wave in 0..8u64 {
                    let handles: Vec<_> = (0..40)
                        .map(|i| {
                            coroutines::spawn(move || {
                                party(Kind::Coroutine, wave * 100 + i, 5, &nothing)
                            })
                        })
                        .collect();
                    waves.extend(handles.into_iter().map(joined));
                }
                (cohort.into_iter().map(joined).collect::<Vec<_>>(), waves)
            })
        });
        compare(
            &format!("cohort, identity {identity}"),
            identity,
            cohort,
            32,
            200,
            nothing,
        );
        for seen in &waves {
            let want = Seen {
                index: seen.index,
                ..expected(1, 5)[0].clone()
            };
            assert_eq!(
                promised(seen, identity),
                promised(&want, identity),
                "a wave's coroutine, identity {identity}"
            );
        }
        assert_eq!(waves.len(), 320);
    }
}

/// Custom stack sizes (tiny, odd, large), measured stacks, and runtimes
/// dropped and built again between rounds.
#[test]
fn custom_and_measured_stacks_across_rebuilt_runtimes() {
    for (size, identity) in [
        (16 * 1024, true),
        (100_001, true),
        (4 << 20, false),
        (100_001, false),
        (16 * 1024, true),
    ] {
        let builder = Runtime::builder()
            .workers(1)
            .stack_size(size)
            .thread_identity(identity);
        let (seen, used) = on_runtime(builder, Duration::from_secs(60), |runtime| {
            runtime.block_on(|| {
                let measured: Vec<_> = (0..16)
                    .map(|i| {
                        coroutines::Builder::new()
                            .measure_stack(true)
                            .spawn(move || party(Kind::Coroutine, i, 20, &nothing))
                            .unwrap()
                    })
                    .collect();
                let plain: Vec<_> = (16..64)
                    .map(|i| coroutines::spawn(move || party(Kind::Coroutine, i, 20, &nothing)))
                    .collect();
                let used: Vec<_> = measured
                    .iter()
                    .map(|h| {
                        while !h.is_finished() {
                            coroutines::yield_now();
                        }
                        h.coroutine().stack_used()
                    })
                    .collect();
                let mut seen: Vec<_> = measured.into_iter().map(joined).collect();
                seen.extend(plain.into_iter().map(joined));
                (seen, used)
            })
        });
        compare(
            &format!("stack {size}, identity {identity}"),
            identity,
            seen,
            64,
            20,
            nothing,
        );
        for u in used {
            let u = u.expect("a measured coroutine reports its stack use");
            assert!(
                u > 0 && u <= size.max(16 * 1024) + 8192,
                "stack {size}: used {u}"
            );
        }
    }
}

/// A coroutine that overflows its stack and one that panics, among
/// others taking turns: both fail alone, the others keep their state, and
/// coroutines started afterwards (not on the leaked stack) are fresh.
#[test]
fn an_overflow_and_a_panic_among_coroutines_taking_turns() {
    for identity in [true, false] {
        let builder = Runtime::builder().workers(1).thread_identity(identity);
        let (overflow, panic, cohort, after) =
            on_runtime(builder, Duration::from_secs(60), |runtime| {
                runtime.block_on(|| {
                    let cohort: Vec<_> = (0..48)
                        .map(|i| coroutines::spawn(move || party(Kind::Coroutine, i, 40, &nothing)))
                        .collect();
                    coroutines::yield_now();
                    let deep = coroutines::Builder::new()
                        .stack_size(64 * 1024)
                        .spawn(|| {
                            coroutines::yield_now();
                            recurse_deeply(1_000_000)
                        })
                        .unwrap();
                    let panicky = coroutines::spawn(|| {
                        TAG.with(|t| t.set(5));
                        coroutines::yield_now();
                        panic!("on purpose");
                    });
                    let overflow = deep.join().is_err();
                    let panic = panicky.join().is_err();
                    let cohort: Vec<_> = cohort.into_iter().map(joined).collect();
                    let after: Vec<_> = (0..48)
                        .map(|i| coroutines::spawn(move || party(Kind::Coroutine, i, 10, &nothing)))
                        .map(joined)
                        .collect();
                    (overflow, panic, cohort, after)
                })
            });
        assert!(
            overflow,
            "the overflow fails its join (identity {identity})"
        );
        assert!(panic, "the panic fails its join (identity {identity})");
        compare(
            &format!("cohort, identity {identity}"),
            identity,
            cohort,
            48,
            40,
            nothing,
        );
        compare(
            &format!("after, identity {identity}"),
            identity,
            after,
            48,
            10,
            nothing,
        );
    }
}

/// A wait after which a coroutine may resume on the other worker.
fn wait_and_hog(_: u32) {
    thread::sleep(Duration::from_micros(200));
    let until = Instant::now() + Duration::from_micros(300);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Work stealing moves started coroutines between two workers: a task's
/// hint was set by the worker that started it and is read by the other.
#[test]
fn coroutines_moved_by_work_stealing_keep_their_own_state() {
    for identity in [true, false] {
        // Stealing needs both workers to get a CPU; under a loaded test run
        // a round may see none: up to five rounds, each checked.
        let mut migrations = 0;
        for _ in 0..5 {
            let builder = Runtime::builder()
                .workers(2)
                .work_stealing(true)
                .thread_identity(identity);
            let (seen, moved) = on_runtime(builder, Duration::from_secs(60), |runtime| {
                let handles: Vec<_> = (0..40)
                    .map(|i| {
                        runtime.spawn(move || {
                            let first = os_thread();
                            let seen = party(Kind::Coroutine, i, 40, &wait_and_hog);
                            (seen, os_thread() != first)
                        })
                    })
                    .collect();
                let results: Vec<_> = handles.into_iter().map(joined).collect();
                let moved = runtime.stats().migrations;
                (
                    results.into_iter().map(|(s, _)| s).collect::<Vec<_>>(),
                    moved,
                )
            });
            compare(
                &format!("stealing, identity {identity}"),
                identity,
                seen,
                40,
                40,
                wait_and_hog,
            );
            migrations += moved;
            if migrations > 0 {
                break;
            }
        }
        assert!(
            migrations > 0,
            "identity {identity}: no migration, the probe tested nothing"
        );
    }
}

/// The blocked-worker monitor moves coroutines off a worker held by one
/// that computes: started coroutines parked in a sleep there are woken and
/// resumed elsewhere, with hints set on the blocked worker.
#[test]
fn coroutines_moved_off_a_blocked_worker_keep_their_own_state() {
    fn sleep_a_little(round: u32) {
        if round == 1 {
            thread::sleep(Duration::from_millis(50));
        }
    }
    for identity in [true, false] {
        let builder = Runtime::builder()
            .workers(1)
            .blocked_worker_warnings(false)
            .thread_identity(identity);
        let (seen, stats) = on_runtime(builder, Duration::from_secs(60), |runtime| {
            runtime.block_on(|| {
                let cruncher = coroutines::spawn(|| {
                    let followers: Vec<_> = (0..64)
                        .map(|i| {
                            coroutines::spawn(move || party(Kind::Coroutine, i, 6, &sleep_a_little))
                        })
                        .collect();
                    // Let them start and park in their sleep, then hold the
                    // worker.
                    coroutines::yield_now();
                    coroutines::yield_now();
                    let start = Instant::now();
                    let mut spins = 0u64;
                    while start.elapsed() < Duration::from_millis(800) {
                        spins = std::hint::black_box(spins + 1);
                    }
                    followers
                });
                let followers = joined(cruncher);
                let seen: Vec<_> = followers.into_iter().map(joined).collect();
                (seen, coroutines::stats())
            })
        });
        // Without identity (nor work stealing) started coroutines stay on
        // their worker by design (`monitor.rs`: `movable`).
        assert!(
            !identity || (stats.moved_off_blocked >= 1 && stats.migrations >= 1),
            "identity {identity}: nothing moved, the probe tested nothing: {stats:?}"
        );
        compare(
            &format!("monitor, identity {identity}"),
            identity,
            seen,
            64,
            6,
            sleep_a_little,
        );
    }
}

/// A coroutine forks while many others wait in the ready queue: the child
/// is a single-threaded process whose thread-locals and `errno` are the
/// forking party's, as with a thread; the parent's coroutines go on.
#[test]
fn a_fork_among_coroutines_taking_turns() {
    fn fork_case(kind: Kind) -> (i32, Vec<Seen>) {
        let spawn = |i: u64| -> Box<dyn FnOnce() -> Seen + Send> {
            match kind {
                Kind::Thread => {
                    let h = thread::spawn(move || party(kind, i, 30, &nothing));
                    Box::new(move || h.join().unwrap())
                }
                Kind::Coroutine => {
                    let h = coroutines::spawn(move || party(kind, i, 30, &nothing));
                    Box::new(move || joined(h))
                }
            }
        };
        let others: Vec<_> = (0..32).map(spawn).collect();
        turn(kind);
        TAG.with(|t| t.set(77));
        set_errno(42);
        // SAFETY: the child only reads its thread-locals and errno, then
        // _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let mut code = 64;
            if TAG.with(Cell::get) == 77 {
                code |= 1;
            }
            if errno() == 42 {
                code |= 2;
            }
            turn(kind);
            if TAG.with(Cell::get) == 77 {
                code |= 4;
            }
            // SAFETY: ends the child without running the parent's exit.
            unsafe { libc::_exit(code) };
        }
        assert!(pid > 0, "fork");
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -libc::WTERMSIG(status)
        };
        (code, others.into_iter().map(|j| j()).collect())
    }
    let reference = support::differential::on_plain_thread("fork", || fork_case(Kind::Thread));
    assert_eq!(reference.0, 64 | 7, "the thread's child");
    for identity in [true, false] {
        let builder = Runtime::builder().workers(1).thread_identity(identity);
        let coroutine = on_runtime(builder, Duration::from_secs(60), |runtime| {
            runtime.block_on(|| fork_case(Kind::Coroutine))
        });
        assert_eq!(coroutine.0, reference.0, "the child, identity {identity}");
        let mask = |v: &Vec<Seen>| v.iter().map(|s| promised(s, identity)).collect::<Vec<_>>();
        assert_eq!(
            mask(&coroutine.1),
            mask(&reference.1),
            "the others, identity {identity}"
        );
    }
}

/// `COROUTINES_THREAD_IDENTITY=off` (the process-wide switch) in a child
/// process: coroutines taking turns keep their own state.
#[test]
fn identity_off_from_the_environment() {
    if child_case().is_some() {
        let seen = coroutines_on(Runtime::builder().workers(1), 128, 20, nothing);
        compare("identity off by env", false, seen, 128, 20, nothing);
        return;
    }
    let mut command = rerun("env-off");
    command.env("COROUTINES_THREAD_IDENTITY", "off");
    run_child("identity off by env", command, Duration::from_secs(60));
}
