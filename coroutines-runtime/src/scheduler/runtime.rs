//! A runtime instance: its workers, spawning into it, and shutting it down.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::io;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_deque::Injector;

use super::{
    worker, Config, Counters, Dump, Queues, Registry, Shared, Stats, WorkerShared, WorkerStats,
};
use crate::coroutine::{switch, Body, CoroutineId, Lifecycle, Task, TaskRef, PARKED};
use crate::reactor::Poller;
use crate::sync::SpinLock;

/// A set of worker threads running coroutines.
///
/// Dropping it shuts the workers down: coroutines that have not finished are
/// abandoned (their stacks are leaked, never unwound) and their join handles
/// report an error.
pub struct Runtime {
    shared: Arc<Shared>,
    threads: SpinLock<Vec<JoinHandle<()>>>,
}

/// Options for one spawn.
#[derive(Clone, Debug, Default)]
pub struct SpawnOptions {
    /// The coroutine's name.
    pub name: Option<String>,
    /// Its stack size in bytes; the runtime's default if `None`.
    pub stack_size: Option<usize>,
    /// It is the coroutine `block_on` runs, which stands in for the calling
    /// thread: its default stack is the runtime's main stack size.
    pub root: bool,
    /// Measure how much of its stack it uses (see `TaskRef::stack_used`):
    /// its stack is filled with a pattern when mapped, touching every page,
    /// and never re-used.
    pub measure_stack: bool,
}

impl Runtime {
    /// Starts a runtime with `config`.
    pub fn new(config: &Config) -> io::Result<Runtime> {
        let identity = match config.thread_identity {
            Some(false) => None,
            _ => crate::identity::layout(),
        };
        Runtime::with_identity(config, identity)
    }

    /// Starts a runtime with `config` whose coroutines get their own thread
    /// identities with `identity`'s layout, or share their workers'.
    pub(crate) fn with_identity(
        config: &Config,
        identity: Option<&'static crate::identity::Layout>,
    ) -> io::Result<Runtime> {
        // Set before any coroutine parks: a park that found another
        // initialising it would wait on std's `Once` in the coroutine,
        // whose futex wait may leave EAGAIN in the caller's errno.
        crate::coroutine::init_epoch();
        let config = config.resolve(identity)?;
        super::fork::watch_forks();
        // The configured workers, then as many spares for the monitor.
        let slots = 2 * config.workers;
        let mut queues: Vec<Queues> = (0..slots).map(|_| Queues::new()).collect();
        let workers = queues
            .iter()
            .enumerate()
            .map(|(index, queues)| {
                let active = index < config.workers;
                let poller = Poller::new().map_err(|error| {
                    startup_error(config.workers, &format!("worker {index}'s poller"), error)
                })?;
                Ok(WorkerShared::new(queues, poller, active))
            })
            .collect::<io::Result<Box<[_]>>>()?;
        let spares = queues
            .split_off(config.workers)
            .into_iter()
            .map(Some)
            .collect();
        let shared = Arc::new(Shared {
            registry: Registry::new(slots),
            blocking: crate::blocking::Pool::new(config.blocking_threads),
            stack_waiters: Default::default(),
            config,
            workers,
            injector: Injector::new(),
            shutdown: AtomicBool::new(false),
            counters: Counters::default(),
            monitor: Default::default(),
            spares: SpinLock::new(super::Spares {
                queues: spares,
                threads: Vec::new(),
                refused: false,
            }),
        });
        super::dump::register(&shared);
        let mut threads = Vec::with_capacity(queues.len() + 1);
        let monitor = shared.clone();
        let started = std::thread::Builder::new()
            .name("coroutines-monitor".into())
            .spawn(move || super::monitor::run(monitor));
        match started {
            Ok(thread) => threads.push(thread),
            Err(error) => {
                return Err(io::Error::new(
                    error.kind(),
                    format!("could not start the runtime's monitor thread: {error}"),
                ))
            }
        }
        for (index, queues) in queues.into_iter().enumerate() {
            let worker_shared = shared.clone();
            let thread = std::thread::Builder::new()
                .name(format!("coroutines-worker-{index}"))
                .spawn(move || worker::run(worker_shared, index, queues));
            match thread {
                Ok(thread) => threads.push(thread),
                Err(error) => {
                    let runtime = Runtime {
                        shared,
                        threads: SpinLock::new(threads),
                    };
                    let workers = runtime.workers();
                    drop(runtime);
                    return Err(startup_error(
                        workers,
                        &format!("worker thread {index}"),
                        error,
                    ));
                }
            }
        }
        Ok(Runtime {
            shared,
            threads: SpinLock::new(threads),
        })
    }

    /// Spawns a coroutine running `body`.
    pub fn spawn_raw(&self, options: SpawnOptions, body: Arc<dyn Body>) -> io::Result<TaskRef> {
        spawn_into(&self.shared, options, body)
    }

    /// The number of worker threads (spare workers not counted).
    pub fn workers(&self) -> usize {
        self.shared.config.workers
    }

    /// Whether work stealing of started coroutines is on.
    pub fn work_stealing(&self) -> bool {
        self.shared.config.work_stealing
    }

    /// The default stack size of its coroutines, in bytes.
    pub fn stack_size(&self) -> usize {
        self.shared.config.stack_size
    }

    /// The stack size of the coroutine `block_on` runs, in bytes.
    pub fn main_stack_size(&self) -> usize {
        self.shared.config.main_stack_size
    }

    /// A snapshot of its counters.
    pub fn stats(&self) -> Stats {
        stats_of(&self.shared)
    }

    /// A snapshot of each worker that has run: queue depth, parked
    /// coroutines, busy time. Costs a pass over every live coroutine.
    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        worker_stats_of(&self.shared)
    }

    /// Every live coroutine and where it is.
    pub fn dump(&self) -> Dump {
        super::dump::dump(&self.shared)
    }
}

/// The dump of the running coroutine's runtime, or `None` outside one.
pub fn current_dump() -> Option<Dump> {
    switch::current().map(|task| super::dump::dump(&task.shared))
}

/// Spawns into the running coroutine's runtime, or outside coroutines into
/// the process-wide runtime, which starts on first use.
///
/// # Panics
/// If the process-wide runtime cannot start.
pub fn spawn(options: SpawnOptions, body: Arc<dyn Body>) -> io::Result<TaskRef> {
    match switch::current() {
        Some(task) => {
            let shared = task.shared.clone();
            spawn_into(&shared, options, body)
        }
        None => default_runtime()?.spawn_raw(options, body),
    }
}

/// The counters of the running coroutine's runtime, or `None` outside one.
pub fn current_stats() -> Option<Stats> {
    switch::current().map(|task| stats_of(&task.shared))
}

/// The per-worker figures of the running coroutine's runtime, or `None`
/// outside one.
pub fn current_worker_stats() -> Option<Vec<WorkerStats>> {
    switch::current().map(|task| worker_stats_of(&task.shared))
}

/// The running coroutine's handle, or `None` outside one.
pub fn current_task() -> Option<TaskRef> {
    // SAFETY: see `switch::current`; the `Arc` is re-counted from the
    // reference the worker keeps alive for the duration of the run.
    switch::current().map(|task| unsafe {
        Arc::increment_strong_count(task as *const Task);
        TaskRef(Arc::from_raw(task as *const Task))
    })
}

fn spawn_into(
    shared: &Arc<Shared>,
    mut options: SpawnOptions,
    body: Arc<dyn Body>,
) -> io::Result<TaskRef> {
    if shared.shutdown.load(Ordering::Acquire) {
        return Err(io::Error::other("the runtime has shut down"));
    }
    if super::in_forked_child() {
        return Err(io::Error::other(
            "coroutines cannot run in a child forked from a process with a runtime \
             (only exec and async-signal-safe calls can be made there)",
        ));
    }
    let stack_bytes = match options.stack_size {
        Some(bytes) => {
            crate::coroutine::Stacks::validate(bytes)?;
            bytes
        }
        None if options.root => shared.config.main_stack_size,
        None => shared.config.stack_size,
    };
    let name = options.name.take().map(String::into_boxed_str);
    let task = Arc::new(Task::new(shared.clone(), name, stack_bytes, &options, body));
    let shard = shared.current_local().map_or(0, |local| local.index);
    let slot = shared.registry.insert(shard, task.clone());
    task.slot.store(slot, Ordering::Relaxed);
    shared.submit(task.clone());
    Ok(TaskRef(task))
}

fn stats_of(shared: &Shared) -> Stats {
    let load = Counters::load;
    let sum = |counter: fn(&WorkerShared) -> &AtomicU64| -> u64 {
        shared.workers.iter().map(|w| load(counter(w))).sum()
    };
    let spawned = load(&shared.counters.spawned);
    let ended = load(&shared.counters.finished) + load(&shared.counters.abandoned);
    Stats {
        workers: shared.config.workers,
        spawned,
        alive: spawned.saturating_sub(ended),
        context_switches: sum(|w| &w.counts.switches),
        migrations: load(&shared.counters.migrations),
        reactor_events: sum(|w| &w.counts.reactor_events),
        timeouts: sum(|w| &w.counts.timeouts),
        sleeps: sum(|w| &w.counts.sleeps),
        stack_waits: load(&shared.stack_waiters.waited),
        failed_to_start: load(&shared.counters.failed_to_start),
        abandoned: load(&shared.counters.abandoned),
        blocked_workers: load(&shared.counters.blocked_workers),
        moved_off_blocked: load(&shared.counters.moved),
        spare_workers_started: load(&shared.counters.spares_started),
    }
}

fn worker_stats_of(shared: &Shared) -> Vec<WorkerStats> {
    let mut parked = vec![0; shared.workers.len()];
    shared.registry.for_each(|task| {
        if task.lifecycle() == Lifecycle::Started && task.park.load(Ordering::Acquire) & PARKED != 0
        {
            parked[task.home.load(Ordering::Relaxed)] += 1;
        }
    });
    let now = crate::coroutine::coarse_now();
    let load = Counters::load;
    shared
        .workers
        .iter()
        .enumerate()
        .filter(|(index, worker)| *index < shared.config.workers || load(&worker.counts.began) != 0)
        .map(|(index, worker)| {
            let counts = &worker.counts;
            let began = load(&counts.began);
            let lived = match began {
                0 => 0,
                began => now.saturating_sub(began),
            };
            WorkerStats {
                index,
                spare: index >= shared.config.workers,
                queued: worker.stealer.len()
                    + worker.ready.len()
                    + worker.inbox.len()
                    + worker.mailbox.len(),
                parked: parked[index],
                running: CoroutineId::from_u64(load(&worker.running)),
                busy: Duration::from_nanos(lived.saturating_sub(load(&counts.asleep))),
                context_switches: load(&counts.switches),
                reactor_events: load(&counts.reactor_events),
            }
        })
        .collect()
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        for worker in self.shared.workers.iter() {
            worker.poller.notify();
        }
        self.shared.monitor.ring();
        let threads = core::mem::take(&mut *self.threads.lock());
        if switch::current().is_none() && !worker::on_a_worker() {
            return stop(&self.shared, threads);
        }
        // A thread of its own waits for the threads and stops the runtime.
        // From one of its coroutines (or its worker), this thread is one of
        // those to wait for: it goes on with the current coroutine until
        // that ends or suspends, and nothing else may be failed before (a
        // coroutine still running on another worker may be a scope's,
        // borrowing from a frame that its failure would let go). From a
        // coroutine of another runtime, the joins would park that
        // coroutine, whose own runtime may stop meanwhile and never resume
        // it, leaving this one half stopped; from another runtime's worker,
        // they would hold up every coroutine of that worker.
        let shared = self.shared.clone();
        let stopper = std::thread::Builder::new()
            .name("coroutines-stop".into())
            .spawn(move || stop(&shared, threads));
        if let Err(error) = stopper {
            eprintln!(
                "coroutines: could not start a thread to finish stopping a runtime dropped \
                 from a coroutine ({error}): the join handles of its unfinished \
                 coroutines will not return"
            );
        }
    }
}

/// Waits for a stopping runtime's `threads` (the monitor first), then fails
/// the coroutines that will never run again and lets go of what holds them.
fn stop(shared: &Shared, threads: Vec<JoinHandle<()>>) {
    let mut threads = threads.into_iter();
    // The monitor starts no spare once it has seen the shutdown, which it
    // has once it is joined.
    if let Some(monitor) = threads.next() {
        let _ = monitor.join();
    }
    let spares = core::mem::take(&mut shared.spares.lock().threads);
    for thread in threads.chain(spares) {
        let _ = thread.join();
    }
    // The workers' cached stacks have gone back.
    crate::coroutine::Stacks::trim();
    // Wakes from signal handlers that came after a worker's final drain.
    shared.workers.iter().for_each(WorkerShared::abandon_woken);
    // Every coroutine left is suspended for good: started ones that never
    // finished, and new ones nobody took. A join handle keeps its task, so
    // they are failed here, not as they are dropped.
    for task in shared.registry.drain() {
        task.abandon();
    }
    worker::abandon_queued(&shared.injector);
    shared.stack_waiters.drain().into_iter().for_each(drop);
    // Parked coroutines are also held by what they wait on; letting go of
    // them drops them.
    crate::futex::release_runtime(shared);
    crate::reactor::fd_table::FD_TABLE.release_runtime(shared);
    crate::hooks::release_child_waits(shared);
    shared.blocking.close();
    // A suspended coroutine whose leaked stack holds a handle to a
    // coroutine keeps `Shared`, but not its descriptors.
    shared
        .workers
        .iter()
        .for_each(|worker| worker.poller.close());
}

/// "1 worker", "2 workers".
pub(crate) fn workers_text(workers: usize) -> String {
    match workers {
        1 => "1 worker".into(),
        n => format!("{n} workers"),
    }
}

/// Why a runtime of `workers` workers could not start: `what` failed with
/// `error`.
fn startup_error(workers: usize, what: &str, error: io::Error) -> io::Error {
    let advice = match error.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => {
            "; each worker slot (a worker and its spare) holds 4 descriptors: ask for \
             fewer workers or raise the descriptor limit (ulimit -n)"
        }
        Some(libc::EAGAIN | libc::ENOMEM) => {
            "; the system would not start more threads: ask for fewer workers"
        }
        _ => "",
    };
    io::Error::new(
        error.kind(),
        format!(
            "could not start a runtime of {}: {what}: {error}{advice}",
            workers_text(workers)
        ),
    )
}

static DEFAULT: OnceLock<Runtime> = OnceLock::new();
/// Serialises starting the process-wide runtime. A std mutex, whose wait
/// parks a coroutine of another runtime that starts it: starting waits
/// (the identity self-test runs coroutines), and a coroutine spinning
/// meanwhile would keep the starter's worker from it.
static DEFAULT_INIT: Mutex<()> = Mutex::new(());

/// The process-wide runtime if it has started.
pub fn started_default_runtime() -> Option<&'static Runtime> {
    DEFAULT.get()
}

/// The process-wide runtime that `spawn` uses outside coroutines, started
/// with the default configuration on first use.
///
/// # Errors
/// If it cannot be started (for example `COROUTINES_WORKERS` is invalid).
pub fn default_runtime() -> io::Result<&'static Runtime> {
    if let Some(runtime) = DEFAULT.get() {
        return Ok(runtime);
    }
    let _init = DEFAULT_INIT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(runtime) = DEFAULT.get() {
        return Ok(runtime);
    }
    match Runtime::new(&Config::default()) {
        Ok(runtime) => Ok(DEFAULT.get_or_init(|| runtime)),
        Err(error) => Err(io::Error::new(
            error.kind(),
            format!("could not start the coroutines runtime: {error}"),
        )),
    }
}

/// Starts the process-wide runtime with `config`.
///
/// # Errors
/// If it has already started (configuration must come before the first
/// spawn from outside a runtime), or it cannot be started.
pub fn init_default_runtime(config: &Config) -> io::Result<&'static Runtime> {
    let _init = DEFAULT_INIT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(running) = DEFAULT.get() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "the process-wide coroutines runtime has already started (with {}); \
                 configure it before anything spawns a coroutine outside a runtime, \
                 e.g. with #[coroutines::main(...)] on main",
                workers_text(running.workers())
            ),
        ));
    }
    let runtime = Runtime::new(config)?;
    Ok(DEFAULT.get_or_init(|| runtime))
}
