//! The blocked-worker monitor: notices a worker that keeps running one
//! coroutine while others wait behind it, says so once, and keeps the
//! program going.
//!
//! A thread per runtime looks at every worker each `TICK` while any worker
//! is awake, and sleeps (on a futex, no periodic wake-ups) while all of
//! them sleep, after lingering a few looks where workers wake up more often
//! than it looks (`PARK_AFTER`). A worker that has run the
//! same coroutine, without switching, for the threshold (20 ms by default)
//! while coroutines are queued behind it is *blocked*: it computes, or a
//! call the hooks cannot see blocks it. Then the monitor
//! - does the worker's reactor work: wakes the coroutines parked on it
//!   whose deadlines passed or whose descriptors became ready;
//! - moves the coroutines of its queues that never ran to the runtime's
//!   injector, where other workers take them; started ones too (woken by
//!   other threads, or by the blocked worker before it blocked), where
//!   moving them is sound (each coroutine has its own thread identity, or
//!   the runtime steals work);
//! - if every worker is blocked, wakes a spare worker (one per configured
//!   worker at most, started on first need) to run them, and lets it rest
//!   again once no worker is blocked: Go's hand-off of a blocked thread's
//!   work;
//! - prints one warning per incident on stderr, naming the coroutine, its
//!   worker and how long, and counts it in `Stats`; not for a coroutine
//!   that keeps spawning coroutines, which is busy, not stuck, nor while
//!   the worker's thread mostly waits for a CPU (an overloaded machine),
//!   which is not the coroutine's doing.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_deque::{Steal, Stealer};

use super::{worker, Shared};
use crate::coroutine::Task;
use crate::sys;

/// How often the monitor looks while workers are awake.
const TICK: Duration = Duration::from_millis(5);

/// Looks that find every worker asleep before the monitor parks, where
/// its last park was shorter than a `TICK`. A parked monitor must be woken
/// by the next worker that wakes, with a system call and a switch: a server
/// whose workers sleep between requests would pay for both on every
/// request, more often than the looks a lingering monitor makes. Where
/// workers wake less often than it looks, it parks at once.
const PARK_AFTER: u32 = 10;

/// What the workers tell the monitor.
#[derive(Default)]
pub(crate) struct Monitor {
    /// Workers not asleep in their poller; the monitor parks while none is.
    awake: AtomicUsize,
    /// The monitor is parked, or about to park, on `bell`: the next worker
    /// to wake rings it.
    parked: AtomicBool,
    /// The monitor parks on this word; waking it bumps it first.
    bell: AtomicU32,
}

impl Monitor {
    /// A worker comes out of its sleep.
    pub(crate) fn worker_wakes(&self) {
        // Pairs with `park`: either this load sees `parked`, or the
        // monitor's check sees this worker awake.
        self.awake.fetch_add(1, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            self.ring();
        }
    }

    /// A worker goes to sleep.
    pub(crate) fn worker_sleeps(&self) {
        self.awake.fetch_sub(1, Ordering::SeqCst);
    }

    /// Wakes the monitor (to look, or at shutdown to leave).
    pub(crate) fn ring(&self) {
        self.bell.fetch_add(1, Ordering::SeqCst);
        sys::futex_wake(&self.bell, 1);
    }

    /// Sleeps until a worker wakes or the monitor is rung; at once if a
    /// worker is awake or `shutdown` is set. Returns how long it slept.
    fn park(&self, shutdown: &AtomicBool) -> Duration {
        let bell = self.bell.load(Ordering::SeqCst);
        self.parked.store(true, Ordering::SeqCst);
        // A shutdown that rang before the load above is seen here: it set
        // the flag before it rang.
        let start = Instant::now();
        if self.awake.load(Ordering::SeqCst) == 0 && !shutdown.load(Ordering::SeqCst) {
            sys::futex_wait(&self.bell, bell);
        }
        self.parked.store(false, Ordering::SeqCst);
        start.elapsed()
    }
}

/// What the monitor last saw of one worker.
#[derive(Clone, Copy)]
struct Seen {
    switches: u64,
    running: u64,
    since: Instant,
    /// Spawns by the running coroutine when the monitor last looked: one
    /// that keeps spawning is busy, not stuck, and is not reported.
    spawns: u64,
    /// It spawned since the monitor's previous look.
    spawning: bool,
    /// The current incident was reported.
    reported: bool,
    /// The worker thread's CPU time, and the time, when the monitor first
    /// saw this run go on past a look.
    cpu_at: Option<(Duration, Instant)>,
    /// The run is past the threshold but was not reported yet because its
    /// worker waited for a CPU; it is looked at again until that resolves.
    deferred: bool,
}

/// The monitor thread of `shared`'s runtime, until it shuts down.
pub(crate) fn run(shared: Arc<Shared>) {
    let now = Instant::now();
    let mut seen = vec![
        Seen {
            switches: 0,
            running: 0,
            since: now,
            spawns: 0,
            spawning: false,
            reported: false,
            cpu_at: None,
            deferred: false,
        };
        shared.workers.len()
    ];
    let monitor = &shared.monitor;
    let (mut idle_looks, mut linger) = (0, 0);
    while !shared.shutdown.load(Ordering::Acquire) {
        match monitor.awake.load(Ordering::SeqCst) {
            0 => idle_looks += 1,
            _ => idle_looks = 0,
        }
        if idle_looks > linger {
            let parked = monitor.park(&shared.shutdown);
            linger = match parked < TICK {
                true => PARK_AFTER,
                false => 0,
            };
            idle_looks = 0;
            continue;
        }
        std::thread::sleep(TICK);
        look(&shared, &mut seen);
    }
}

/// One look at every worker.
fn look(shared: &Arc<Shared>, seen: &mut [Seen]) {
    let now = Instant::now();
    let threshold = shared.config.blocked_threshold;
    let mut blocked = Vec::new();
    for (index, (worker, seen)) in shared.workers.iter().zip(seen.iter_mut()).enumerate() {
        let switches = worker.counts.switches.load(Ordering::Relaxed);
        let running = worker.running.load(Ordering::Relaxed);
        let spawns = worker.counts.spawns.load(Ordering::Relaxed);
        if running == 0 || switches != seen.switches || running != seen.running {
            *seen = Seen {
                switches,
                running,
                since: now,
                spawns,
                spawning: false,
                reported: false,
                cpu_at: None,
                deferred: false,
            };
        } else {
            seen.spawning = spawns != seen.spawns;
            seen.spawns = spawns;
            if seen.cpu_at.is_none() {
                let thread = worker.thread.load(Ordering::Relaxed);
                seen.cpu_at = sys::thread_cpu_time(thread).map(|cpu| (cpu, now));
            }
            if now - seen.since >= threshold {
                blocked.push(index);
            }
        }
    }
    let active = |w: &worker::WorkerShared| w.active.load(Ordering::Relaxed);
    let all_blocked = shared
        .workers
        .iter()
        .enumerate()
        .filter(|(_, w)| active(w))
        .all(|(index, _)| blocked.contains(&index));
    let mut moved = 0;
    for &index in &blocked {
        let worker = &shared.workers[index];
        worker.service();
        // New coroutines wait for it only if no other worker is free to
        // take them; started ones only it runs.
        let waiting = worker.has_pinned()
            || (all_blocked && (worker.has_queued() || !shared.injector.is_empty()));
        let seen = &mut seen[index];
        if !waiting && !seen.deferred {
            continue;
        }
        let here = if waiting {
            move_queued(shared, worker)
        } else {
            0
        };
        // Counted before anything runs them: a moved coroutine may read
        // the statistics.
        shared.counters.moved.fetch_add(here, Ordering::Relaxed);
        moved += here;
        if seen.reported || seen.spawning {
            continue;
        }
        seen.deferred = preempted(worker, seen, threshold);
        if !seen.deferred {
            seen.reported = true;
            shared
                .counters
                .blocked_workers
                .fetch_add(1, Ordering::Relaxed);
            if shared.config.blocked_warnings {
                warn(shared, index, seen.running, now - seen.since, here);
            }
        }
    }
    if blocked.is_empty() {
        rest_spares(shared);
        return;
    }
    if moved == 0 && shared.injector.is_empty() {
        return;
    }
    if all_blocked {
        wake_spare(shared);
    }
    shared.notify_idle();
}

/// Whether the worker of a run that has lasted past the threshold was
/// mostly waiting for a CPU (the machine is overloaded) rather than
/// computing or blocked in the kernel: then its coroutine is not at fault,
/// and no incident is reported until it has computed a threshold's worth
/// or blocks. (What is queued behind it moves either way.)
fn preempted(worker: &worker::WorkerShared, seen: &Seen, threshold: Duration) -> bool {
    let thread = worker.thread.load(Ordering::Relaxed);
    let (computed, elapsed) = match (seen.cpu_at, sys::thread_cpu_time(thread)) {
        (Some((cpu, at)), Some(now)) => (now.saturating_sub(cpu), at.elapsed()),
        _ => return false,
    };
    computed < threshold && computed < elapsed / 2 && sys::thread_runnable(thread)
}

/// Moves what `worker` has queued and others may run to the injector;
/// returns how many coroutines moved.
fn move_queued(shared: &Shared, worker: &worker::WorkerShared) -> u64 {
    // Started coroutines may run elsewhere only with their own thread
    // identity (or where the user allowed moving them): code on their
    // stacks may hold addresses of their worker's thread-locals.
    let movable = shared.config.identity.is_some() || shared.config.work_stealing;
    let mut moved = drain(&worker.stealer, shared);
    if movable {
        loop {
            match worker.inbox.steal() {
                Steal::Success(task) => {
                    shared.injector.push(task);
                    moved += 1;
                }
                Steal::Empty => break,
                Steal::Retry => {}
            }
        }
        for task in worker.mailbox.take_all() {
            shared.injector.push(task);
            moved += 1;
        }
        for task in worker.ready.seize() {
            shared.injector.push(task);
            moved += 1;
        }
    }
    moved
}

fn drain(stealer: &Stealer<Arc<Task>>, shared: &Shared) -> u64 {
    let mut moved = 0;
    loop {
        match stealer.steal() {
            Steal::Success(task) => {
                shared.injector.push(task);
                moved += 1;
            }
            Steal::Empty => return moved,
            Steal::Retry => {}
        }
    }
}

/// Makes a spare worker take work: a resting one, or a new one while
/// there are fewer than configured workers.
fn wake_spare(shared: &Arc<Shared>) {
    let spares = &shared.workers[shared.config.workers..];
    if let Some(spare) = spares.iter().find(|w| !w.active.load(Ordering::Relaxed)) {
        let index = shared.config.workers
            + spares
                .iter()
                .position(|w| core::ptr::eq(w, spare))
                .expect("found among the spares");
        spare.active.store(true, Ordering::SeqCst);
        super::start_spare(shared, index);
    }
}

/// No worker is blocked: the spares stop taking new work. (They go on
/// running the coroutines that started on them, and sleep when idle.)
fn rest_spares(shared: &Shared) {
    for spare in &shared.workers[shared.config.workers..] {
        spare.active.store(false, Ordering::Relaxed);
    }
}

/// The warning of one incident.
fn warn(shared: &Shared, worker: usize, running: u64, how_long: Duration, moved: u64) {
    let mut who = format!("coroutine {running}");
    shared.registry.for_each(|task| {
        if task.id.as_u64().get() == running {
            if let Some(name) = &task.name {
                who = format!("coroutine {running} ('{name}')");
            }
        }
    });
    let moved = match moved {
        0 => String::new(),
        n => format!("; {n} coroutines queued behind it were moved to other workers"),
    };
    eprintln!(
        "coroutines: worker {worker} has been running {who} for {how_long:.0?} without \
         switching{moved}. A coroutine that computes for long should call \
         coroutines::yield_now() now and then, and a blocking call the runtime cannot \
         see (a C library's) belongs in coroutines::spawn_blocking. (Silence this with \
         Runtime::builder().blocked_worker_warnings(false).)"
    );
}
