//! Probes of the thread areas carved from `memory::Slots` (aa5a5c5: each
//! coroutine with thread identity gets its worker's static TLS and glibc
//! `struct pthread` in a packed slot, freed slots given back, empty chunks
//! unmapped, `Stacks::trim` when a runtime drops) and of the blocked-worker
//! monitor's "waiting for a CPU" exemption (9190b23), written against
//! b0e4380.
//!
//! Each probe asserts what a user expects from coroutines that behave as
//! threads (their thread-locals, `errno`, `pthread_self` and std's thread
//! info private and stable for their whole life, whatever other coroutines
//! and runtimes do meanwhile) or from the monitor (a worker held up by its
//! coroutine is reported, once), and fails if the runtime breaks it.
//! Probes whose effects are process-wide (locking memory, mount
//! namespaces, CPU hogs) run in a child process of their own.
//!
//! A thread-local aligned to 256 bytes is part of every probe: it makes the
//! static TLS alignment larger than the usual 64, so the areas' stride and
//! the thread pointers' alignment are exercised throughout.

mod support;

use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use coroutines::runtime::Builder;
use coroutines::Runtime;
use support::child::{child_case, rerun, run_child};
use support::memory::*;
use support::{errno, pin_to_cpu_0, raw_sleep, set_errno, watchdog_on};

/// A thread-local whose block needs 256-byte alignment.
#[repr(C, align(256))]
struct Aligned {
    tag: Cell<u64>,
}

thread_local! {
    static TAG: Cell<u64> = const { Cell::new(0) };
    static WIDE: Aligned = const { Aligned { tag: Cell::new(0) } };
}

/// Counts the drops of a thread-local set by a coroutine.
struct Goodbye(&'static AtomicUsize);

impl Drop for Goodbye {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

thread_local! {
    static GOODBYE: Cell<Option<Goodbye>> = const { Cell::new(None) };
}

/// `_dl_get_tls_static_info`: the bytes of one thread's static TLS area
/// (with its `struct pthread`) and its alignment.
fn static_tls() -> (usize, usize) {
    // SAFETY: dlsym with a NUL-terminated name; the symbol, if found, is
    // `void _dl_get_tls_static_info(size_t *, size_t *)`.
    unsafe {
        let f = libc::dlsym(libc::RTLD_DEFAULT, c"_dl_get_tls_static_info".as_ptr());
        assert!(!f.is_null(), "_dl_get_tls_static_info not found");
        let f: extern "C" fn(*mut usize, *mut usize) = std::mem::transmute(f);
        let (mut size, mut align) = (0, 0);
        f(&mut size, &mut align);
        (size, align)
    }
}

/// The calling coroutine's thread pointer (`pthread_self`, the start of its
/// `struct pthread`).
fn tp() -> usize {
    // SAFETY: no preconditions.
    unsafe { libc::pthread_self() as usize }
}

/// What makes a coroutine a thread of its own, as it sees itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Me {
    tp: usize,
    tag: u64,
    wide: u64,
    errno: i32,
    thread: thread::ThreadId,
}

/// Writes `value` everywhere [`Me`] looks.
fn adopt(value: u64) -> Me {
    TAG.with(|t| t.set(value));
    WIDE.with(|w| w.tag.set(!value));
    set_errno((value % 100_000) as i32 + 1);
    me()
}

fn me() -> Me {
    let wide_at = WIDE.with(|w| w as *const Aligned as usize);
    assert!(
        wide_at.is_multiple_of(256),
        "a 256-byte aligned thread-local at {wide_at:#x}"
    );
    Me {
        tp: tp(),
        tag: TAG.with(Cell::get),
        wide: !WIDE.with(|w| w.tag.get()),
        errno: errno(),
        thread: thread::current().id(),
    }
}

/// The thread pointers of the coroutines alive now: a new one must not be
/// the area of a live one, nor overlap it.
struct Live {
    tps: Mutex<BTreeSet<usize>>,
    size: usize,
}

impl Live {
    fn new() -> Arc<Live> {
        Arc::new(Live {
            tps: Mutex::new(BTreeSet::new()),
            size: static_tls().0,
        })
    }

    fn enter(&self, tp: usize) {
        let mut tps = self.tps.lock().unwrap();
        let below = tps.range(..=tp).next_back().copied();
        let above = tps.range(tp..).next().copied();
        if let Some(b) = below {
            assert!(
                tp - b >= self.size,
                "areas overlap: live thread pointers {b:#x} and {tp:#x}, {} bytes each",
                self.size
            );
        }
        if let Some(a) = above {
            assert!(
                a - tp >= self.size,
                "areas overlap: live thread pointers {tp:#x} and {a:#x}, {} bytes each",
                self.size
            );
        }
        tps.insert(tp);
    }

    fn leave(&self, tp: usize) {
        assert!(self.tps.lock().unwrap().remove(&tp));
    }
}

/// A coroutine body that takes the identity `value`, checks it keeps it
/// across `yields` switches (with `wait` in the middle, if any), and says
/// what it saw if not.
fn keeper(
    value: u64,
    yields: usize,
    live: Arc<Live>,
    wait: Option<Arc<Barrier>>,
) -> impl FnOnce() -> Result<(), String> + Send + 'static {
    move || {
        // The lock first: a contended lock may set `errno` (EAGAIN), as on
        // a thread.
        live.enter(tp());
        let first = adopt(value);
        for i in 0..yields {
            coroutines::yield_now();
            if i == yields / 2 {
                if let Some(wait) = &wait {
                    // A blocking call may set `errno`: it is the
                    // coroutine's to set again.
                    wait.wait();
                    set_errno(first.errno);
                }
            }
            let now = me();
            if now != first {
                live.leave(first.tp);
                return Err(format!("coroutine {value}: was {first:?}, now {now:?}"));
            }
        }
        live.leave(first.tp);
        Ok(())
    }
}

/// Asserts that thread identity is on in this runtime: two coroutines are
/// two threads with two thread pointers.
fn assert_identity_on() {
    let other = coroutines::spawn(|| (tp(), thread::current().id()));
    let (tp2, id2) = other.join().unwrap();
    assert_ne!(tp(), tp2, "thread identity is off here: nothing to probe");
    assert_ne!(thread::current().id(), id2);
}

fn identity(workers: usize) -> Builder {
    Runtime::builder()
        .workers(workers)
        .thread_identity(true)
        .blocked_worker_warnings(false)
}

fn all_ok(results: Vec<Result<(), String>>) {
    let bad: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    assert!(
        bad.is_empty(),
        "{} coroutines saw their thread state change, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(3)]
    );
}

/// PROBE 1. A few hundred long-lived coroutines (on two workers, so some
/// move) keep their thread-locals, `errno`, thread id and thread pointer
/// while thousands of short ones come and go beside them, taking,
/// releasing and re-taking areas across chunk boundaries (chunks emptied
/// and unmapped, dirty slots given back): no live area is handed out
/// again or overlaps another.
#[test]
fn probe_areas_stay_private_under_churn() {
    watchdog_on("churn", Duration::from_secs(120), identity(2), || {
        assert_identity_on();
        let live = Live::new();
        const LONG: usize = 300;
        let gate = Arc::new(Barrier::new(LONG + 1));
        let long: Vec<_> = (0..LONG)
            .map(|i| {
                let body = keeper(1 << 40 | i as u64, 40, live.clone(), Some(gate.clone()));
                coroutines::spawn(body)
            })
            .collect();
        for round in 0..20u64 {
            let short: Vec<_> = (0..250u64)
                .map(|i| coroutines::spawn(keeper(round << 20 | i, 6, live.clone(), None)))
                .collect();
            all_ok(short.into_iter().map(|h| h.join().unwrap()).collect());
        }
        gate.wait();
        all_ok(long.into_iter().map(|h| h.join().unwrap()).collect());
    });
}

/// Parks `count` coroutines of `runtime`, each with its own identity, until
/// the returned barrier is passed; their results say whether they kept it.
fn park_keepers(
    runtime: &Runtime,
    count: usize,
    base: u64,
    live: &Arc<Live>,
) -> (Vec<Keeper>, Arc<Barrier>, Vec<usize>) {
    let gate = Arc::new(Barrier::new(count + 1));
    let ready = Arc::new(Barrier::new(count + 1));
    let tps = Arc::new(Mutex::new(Vec::new()));
    let handles = (0..count)
        .map(|i| {
            let (gate, ready, live) = (gate.clone(), ready.clone(), live.clone());
            let tps = tps.clone();
            runtime.spawn(move || {
                live.enter(tp());
                tps.lock().unwrap().push(tp());
                let first = adopt(base + i as u64);
                ready.wait();
                gate.wait();
                // The waits may have set `errno`, as on a thread.
                set_errno(first.errno);
                // Allocates and switches after the wait: a freed area would
                // be re-used by now.
                let v: Vec<u64> = (0..64).collect();
                coroutines::yield_now();
                let now = me();
                live.leave(first.tp);
                match now == first && readable(first.tp) && v.len() == 64 {
                    true => Ok(()),
                    false => Err(format!("was {first:?}, now {now:?}")),
                }
            })
        })
        .collect();
    ready.wait();
    let tps = core::mem::take(&mut *tps.lock().unwrap());
    (handles, gate, tps)
}

/// The join handle of a coroutine parked by [`park_keepers`].
type Keeper = coroutines::JoinHandle<Result<(), String>>;

/// Runs a short-lived runtime with identity on a thread of its own: many
/// coroutines come and go, some ending, the rest abandoned (parked) at its
/// shutdown; it is dropped from outside (which trims the areas).
fn passing_runtime(base: u64, live: Arc<Live>) {
    thread::spawn(move || {
        let runtime = identity(2).build().unwrap();
        let (parked, _gate, tps) = park_keepers(&runtime, 70, base, &live);
        let inner = live.clone();
        runtime.block_on(move || {
            let live = inner;
            for round in 0..4 {
                let hs: Vec<_> = (0..200u64)
                    .map(|i| {
                        coroutines::spawn(keeper(
                            base + (round + 1) * 1000 + i,
                            3,
                            live.clone(),
                            None,
                        ))
                    })
                    .collect();
                all_ok(hs.into_iter().map(|h| h.join().unwrap()).collect());
            }
        });
        drop(runtime);
        // The abandoned ones never run again: their areas may be re-used
        // once their handles (the last owners of their tasks) are gone.
        tps.into_iter().for_each(|tp| live.leave(tp));
        for h in parked {
            assert!(h.join().is_err());
        }
    })
    .join()
    .unwrap();
}

/// PROBE 2. Two runtimes at once: runtimes that come and go on other
/// threads (each dropped from outside, which trims every chunk without a
/// live area, and shut down with parked coroutines) leave the parked
/// coroutines of a runtime that lives on untouched: their thread-locals,
/// `errno`, thread ids and areas are theirs when they resume.
#[test]
fn probe_other_runtimes_dropping_keep_live_areas() {
    let live = Live::new();
    let runtime = identity(2).build().unwrap();
    runtime.block_on(assert_identity_on);
    let (handles, gate, _) = park_keepers(&runtime, 150, 7 << 40, &live);
    for i in 0..4 {
        passing_runtime((i + 1) << 36, live.clone());
    }
    gate.wait();
    all_ok(handles.into_iter().map(|h| h.join().unwrap()).collect());
}

/// PROBE 3. A runtime dropped from inside one of its own coroutines (no
/// trim then) while it has parked coroutines with thread-local destructors,
/// followed by one dropped from outside (trim): a third runtime's parked
/// coroutines keep their identities, and each abandoned coroutine's
/// thread-local destructor runs at most once.
#[test]
fn probe_runtime_dropped_from_inside_keeps_other_areas() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    let live = Live::new();
    let keeper_rt = identity(1).build().unwrap();
    let (handles, gate, _) = park_keepers(&keeper_rt, 100, 9 << 40, &live);

    let doomed = identity(2).build().unwrap();
    let abandoned: Vec<_> = (0..50)
        .map(|i| {
            doomed.spawn(move || {
                adopt(i);
                GOODBYE.with(|g| g.set(Some(Goodbye(&DROPS))));
                let (_keep, wait) = mpsc::channel::<()>();
                let _ = wait.recv();
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(50));
    let holder = Arc::new(Mutex::new(Some(doomed)));
    let (dropped, wait) = mpsc::channel();
    let inner = holder.clone();
    let killer = holder.lock().unwrap().as_ref().unwrap().spawn(move || {
        let runtime = inner.lock().unwrap().take();
        drop(runtime);
        dropped.send(()).unwrap();
    });
    wait.recv_timeout(Duration::from_secs(10))
        .expect("a runtime dropped from inside its coroutine");
    drop(killer);
    passing_runtime(11 << 36, live.clone());
    drop(abandoned);
    gate.wait();
    all_ok(handles.into_iter().map(|h| h.join().unwrap()).collect());
    let drops = DROPS.load(Ordering::SeqCst);
    assert!(drops <= 50, "{drops} destructor runs for 50 thread-locals");
}

/// PROBE 4. Coroutines that move between workers (the monitor moves those
/// queued behind a computing one; with identity on, started ones too)
/// keep their own thread-locals and `errno` across the move, and the
/// area stays theirs: the worker's thread pointer changes nothing.
#[test]
fn probe_migrated_coroutines_keep_their_areas() {
    let results = watchdog_on(
        "migration",
        Duration::from_secs(60),
        identity(2).blocked_worker_threshold(Duration::from_millis(5)),
        || {
            assert_identity_on();
            let live = Live::new();
            let stop = Arc::new(AtomicBool::new(false));
            // Computes without switching, now and then, on whichever worker.
            let hogs: Vec<_> = (0..2)
                .map(|_| {
                    let stop = stop.clone();
                    coroutines::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            let start = Instant::now();
                            while start.elapsed() < Duration::from_millis(15) {
                                std::hint::spin_loop();
                            }
                            thread::sleep(Duration::from_millis(1));
                        }
                    })
                })
                .collect();
            let mut moved = 0;
            let handles: Vec<_> = (0..200u64)
                .map(|i| {
                    let live = live.clone();
                    coroutines::spawn(move || {
                        live.enter(tp());
                        let first = adopt(3 << 40 | i);
                        let mut workers = BTreeSet::new();
                        for _ in 0..30 {
                            workers.insert(support::identity::os_thread());
                            thread::sleep(Duration::from_micros(300));
                            set_errno(first.errno);
                            coroutines::yield_now();
                            let now = me();
                            if now != first {
                                live.leave(first.tp);
                                return (Err(format!("was {first:?}, now {now:?}")), 0);
                            }
                        }
                        live.leave(first.tp);
                        (Ok(()), workers.len())
                    })
                })
                .collect();
            let mut results = Vec::new();
            for h in handles {
                let (result, workers) = h.join().unwrap();
                moved += usize::from(workers > 1);
                results.push(result);
            }
            stop.store(true, Ordering::Relaxed);
            hogs.into_iter().for_each(|h| h.join().unwrap());
            println!("{moved} of 200 coroutines ran on more than one worker");
            results
        },
    );
    all_ok(results);
}

/// PROBE 5. With all memory locked (`mlockall(MCL_CURRENT | MCL_FUTURE)`)
/// coroutines with thread identity start and run as before (no failure),
/// and their areas (`struct pthread` and thread-locals) are resident;
/// ended ones make room for new ones; `munlockall` changes nothing for
/// them.
#[test]
fn probe_locked_memory_with_identity() {
    if child_case().is_none() {
        let out = run_child("mlockall", rerun("mlockall"), Duration::from_secs(120));
        println!("{}", String::from_utf8_lossy(&out.stdout));
        return;
    }
    let runtime = identity(2).build().unwrap();
    runtime.block_on(assert_identity_on);
    // SAFETY: locks this (child) process's memory.
    let locked = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if locked != 0 {
        println!("mlockall failed: {}", std::io::Error::last_os_error());
        return;
    }
    let live = Live::new();
    for round in 0..3u64 {
        let (handles, gate, _) = park_keepers(&runtime, 200, round << 32, &live);
        let areas: Vec<(usize, usize)> = runtime.block_on(|| {
            (0..100)
                .map(|_| {
                    coroutines::spawn(|| (tp(), TAG.with(|t| t as *const Cell<u64> as usize)))
                        .join()
                        .unwrap()
                })
                .collect()
        });
        let missing = areas
            .iter()
            .filter(|&&(tp, tls)| !resident(tp) || !resident(tls))
            .count();
        assert_eq!(missing, 0, "round {round}: areas with pages not resident");
        gate.wait();
        all_ok(handles.into_iter().map(|h| h.join().unwrap()).collect());
        if round == 0 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let lck = status.lines().find(|l| l.starts_with("VmLck")).unwrap();
            println!("locked: {lck}");
            assert!(!lck.ends_with(" 0 kB"), "nothing locked: {lck}");
        }
        if round == 1 {
            // SAFETY: unlocks this (child) process's memory.
            assert_eq!(unsafe { libc::munlockall() }, 0);
        }
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let lck = status.lines().find(|l| l.starts_with("VmLck")).unwrap();
    println!("{lck}");
}

/// PROBE 6. `fork` in a coroutine with thread identity while other
/// coroutines churn areas: the child goes on with the coroutine's own
/// thread-locals and `errno` (its area is intact in the child), and the
/// parent's coroutine keeps them too.
#[test]
fn probe_fork_keeps_the_coroutines_area() {
    watchdog_on("fork", Duration::from_secs(60), identity(2), || {
        assert_identity_on();
        let stop = Arc::new(AtomicBool::new(false));
        let churn = {
            let stop = stop.clone();
            coroutines::spawn(move || {
                let live = Live::new();
                while !stop.load(Ordering::Relaxed) {
                    let hs: Vec<_> = (0..100u64)
                        .map(|i| coroutines::spawn(keeper(i, 2, live.clone(), None)))
                        .collect();
                    all_ok(hs.into_iter().map(|h| h.join().unwrap()).collect());
                }
            })
        };
        for round in 0..20u64 {
            let first = adopt(5 << 40 | round);
            // SAFETY: the child only checks memory and calls _exit.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let now = Me {
                    tp: tp(),
                    tag: TAG.with(Cell::get),
                    wide: !WIDE.with(|w| w.tag.get()),
                    errno: errno(),
                    thread: first.thread,
                };
                // SAFETY: _exit is async-signal-safe.
                unsafe { libc::_exit(if now == first { 0 } else { 3 }) };
            }
            assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
            let after = me();
            let mut status = 0;
            // SAFETY: waits for the child just forked.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "round {round}: the child saw another thread state (status {status:#x})"
            );
            assert_eq!(
                Me {
                    errno: first.errno,
                    ..after
                },
                first,
                "the parent's coroutine after fork"
            );
        }
        stop.store(true, Ordering::Relaxed);
        churn.join().unwrap();
    });
}

/// What a one-worker monitor scenario saw: the incidents counted, and when
/// the queued coroutines ran (from the start).
#[derive(Debug)]
struct Incident {
    blocked: u64,
    moved: u64,
    followers_ran: Duration,
    took: Duration,
}

/// On one worker, a coroutine queues 50 followers and then runs `hold`
/// without switching.
fn held(hold: fn()) -> Incident {
    watchdog_on(
        "held",
        Duration::from_secs(30),
        Runtime::builder().workers(1).blocked_worker_warnings(false),
        move || {
            let start = Instant::now();
            let holder = coroutines::spawn(move || {
                let followers: Vec<_> = (0..50)
                    .map(|_| coroutines::spawn(move || start.elapsed()))
                    .collect();
                hold();
                (start.elapsed(), followers)
            });
            let (took, followers) = holder.join().unwrap();
            let followers_ran = followers
                .into_iter()
                .map(|f| f.join().unwrap())
                .max()
                .unwrap();
            let stats = coroutines::stats();
            Incident {
                blocked: stats.blocked_workers,
                moved: stats.moved_off_blocked,
                followers_ran,
                took,
            }
        },
    )
}

/// Starts `count` threads that spin on CPU 0 (normal priority) until the
/// flag is set.
fn hogs(count: usize) -> (Arc<AtomicBool>, Vec<thread::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let threads = (0..count)
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || {
                pin_to_cpu_0();
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    (stop, threads)
}

/// PROBE 7. A coroutine blocked in a system call no hook sees (a raw
/// `nanosleep` of 400 ms) is reported, once, and what is queued behind it
/// moves, also on an overloaded machine (four threads spinning on the
/// worker's CPU): its thread sleeps, it is not waiting for a CPU.
#[test]
fn probe_raw_blocking_call_is_reported_under_overload() {
    if child_case().is_none() {
        run_child("raw", rerun("raw"), Duration::from_secs(60));
        return;
    }
    let idle = held(|| raw_sleep(Duration::from_millis(400)));
    println!("idle machine: {idle:?}");
    assert_eq!(idle.blocked, 1, "{idle:?}");
    let (stop, threads) = hogs(4);
    let loaded = held(|| {
        pin_to_cpu_0();
        raw_sleep(Duration::from_millis(400));
    });
    stop.store(true, Ordering::Relaxed);
    threads.into_iter().for_each(|t| t.join().unwrap());
    println!("overloaded machine: {loaded:?}");
    assert_eq!(loaded.blocked, 1, "{loaded:?}");
    assert!(loaded.moved >= 1, "{loaded:?}");
    assert!(loaded.followers_ran < loaded.took, "{loaded:?}");
}

/// PROBE 8. A coroutine that computes for a second without switching on an
/// overloaded machine (three threads spinning on the worker's CPU, so it
/// gets about a quarter of it, ~250 ms of CPU, far past the 20 ms
/// threshold) is its own doing: it is reported once.
#[test]
fn probe_long_computation_is_reported_under_overload() {
    if child_case().is_none() {
        run_child("compute", rerun("compute"), Duration::from_secs(60));
        return;
    }
    let (stop, threads) = hogs(3);
    let seen = held(|| {
        pin_to_cpu_0();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(1) {
            std::hint::spin_loop();
        }
    });
    stop.store(true, Ordering::Relaxed);
    threads.into_iter().for_each(|t| t.join().unwrap());
    println!("{seen:?}");
    assert_eq!(seen.blocked, 1, "{seen:?}");
}

/// PROBE 9. Without /proc (a private mount namespace with an empty tmpfs
/// on it, as in some sandboxes) the monitor still works: a raw blocking
/// call is reported and the queued coroutines move. Needs root for the
/// mount; says so and passes without it.
#[test]
fn probe_monitor_without_proc() {
    if child_case().is_none() {
        run_child("noproc", rerun("noproc"), Duration::from_secs(60));
        return;
    }
    // SAFETY: unshare and mount with valid, NUL-terminated arguments; they
    // change only this (child) process's view.
    let hidden = unsafe {
        libc::unshare(libc::CLONE_NEWNS) == 0
            && libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) == 0
            && libc::mount(
                c"tmpfs".as_ptr(),
                c"/proc".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            ) == 0
    };
    if !hidden {
        println!("could not hide /proc: {}", std::io::Error::last_os_error());
        return;
    }
    assert!(std::fs::read_to_string("/proc/self/stat").is_err());
    let seen = held(|| raw_sleep(Duration::from_millis(300)));
    println!("{seen:?}");
    assert_eq!(seen.blocked, 1, "{seen:?}");
    assert!(seen.followers_ran < seen.took, "{seen:?}");
}

/// PROBE 10. On an idle machine, a coroutine that first blocks for 18 ms in
/// a call no hook sees and then computes for a second without switching
/// holds its worker for a second: it is reported once. (At the first look
/// past the threshold its thread has just woken: runnable, and it has used
/// less than half of the time since the monitor's first sample.)
#[test]
fn probe_block_then_compute_is_reported() {
    let seen = held(|| {
        raw_sleep(Duration::from_millis(18));
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(1) {
            std::hint::spin_loop();
        }
    });
    println!("{seen:?}");
    assert_eq!(seen.blocked, 1, "{seen:?}");
}
