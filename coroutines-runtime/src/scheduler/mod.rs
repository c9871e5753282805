//! The M:N scheduler: worker threads, their run queues, and placement.
//!
//! Each worker has a local deque of coroutines any worker may take (new ones,
//! and with work stealing also started ones), a ready queue of started
//! coroutines pinned to it, an inbox where other threads put the pinned
//! coroutines they wake, and a mailbox for wakes that may not touch those
//! queues (from signal handlers, or re-entering the worker's own queue
//! operations). Spawns from outside the runtime go to a global
//! injector. Idle workers sleep in their reactor and are woken through it.

mod admission;
mod config;
mod dump;
mod fork;
mod mailbox;
mod monitor;
mod ready;
mod registry;
mod runtime;
mod stats;
mod worker;

use core::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_deque::Injector;

pub use config::{Config, DEFAULT_BLOCKED_THRESHOLD, DEFAULT_STACK_SIZE, WORKERS_ENV};
pub(crate) use config::{Resolved, STACK_POOL_CAPACITY};
pub use dump::{CoroutineDump, CoroutineState, Dump, DUMP_SIGNAL_ENV};
pub(crate) use fork::in_forked_child;
pub(crate) use mailbox::Mailbox;
pub(crate) use ready::ReadyQueue;
pub(crate) use registry::Registry;
pub use runtime::{
    current_dump, current_stats, current_task, current_worker_stats, default_runtime,
    init_default_runtime, spawn, started_default_runtime, Runtime, SpawnOptions,
};
pub(crate) use stats::Counters;
pub use stats::{Stats, WorkerStats};
pub(crate) use worker::{Local, Queues, WorkerCounts, WorkerShared};

use crate::coroutine::{switch, Task};
use crate::reactor::Poller;
use crate::sync::SpinLock;

/// State shared by a runtime's workers and handles.
pub(crate) struct Shared {
    pub(crate) config: Resolved,
    pub(crate) workers: Box<[WorkerShared]>,
    /// Spawns from threads that are not this runtime's workers.
    pub(crate) injector: Injector<Arc<Task>>,
    pub(crate) shutdown: AtomicBool,
    pub(crate) registry: Registry,
    pub(crate) counters: Counters,
    /// Helper threads for calls that block inside libc.
    pub(crate) blocking: Arc<crate::blocking::Pool>,
    /// New coroutines waiting for a stack.
    pub(crate) stack_waiters: admission::StackWaiters,
    /// What the workers tell the blocked-worker monitor.
    pub(crate) monitor: monitor::Monitor,
    /// The queues of the spare workers (after the configured ones in
    /// `workers`) that have not started, and the threads of those that
    /// have.
    pub(crate) spares: SpinLock<Spares>,
}

/// The spare workers' queues until they start, and their threads after.
#[derive(Default)]
pub(crate) struct Spares {
    pub(crate) queues: Vec<Option<Queues>>,
    pub(crate) threads: Vec<std::thread::JoinHandle<()>>,
    /// The last attempt to start one failed (and said so once).
    pub(crate) refused: bool,
}

/// Starts spare worker `index` of `shared`, or wakes it if it has started.
pub(crate) fn start_spare(shared: &Arc<Shared>, index: usize) {
    let mut spares = shared.spares.lock();
    let Some(queues) = spares.queues[index - shared.config.workers].take() else {
        shared.workers[index].try_notify();
        return;
    };
    let worker_shared = shared.clone();
    // Counted before the spare runs anything: what it runs may read the
    // statistics.
    let started = &shared.counters.spares_started;
    started.fetch_add(1, Ordering::Relaxed);
    // The thread takes the queues from here: a spawn that fails drops its
    // closure, and the queues must outlive it for the next attempt.
    let slot = Arc::new(SpinLock::new(Some(queues)));
    let handed = slot.clone();
    let thread = std::thread::Builder::new()
        .name(format!("coroutines-spare-{index}"))
        .spawn(move || {
            let queues = handed.lock().take().expect("the spare's queues");
            worker::run(worker_shared, index, queues)
        });
    match thread {
        Ok(thread) => {
            spares.threads.push(thread);
            spares.refused = false;
        }
        // The workers that are blocked stay so; the monitor tries again
        // at its next look.
        Err(error) => {
            let first = !core::mem::replace(&mut spares.refused, true);
            started.fetch_sub(1, Ordering::Relaxed);
            spares.queues[index - shared.config.workers] = slot.lock().take();
            shared.workers[index].active.store(false, Ordering::Relaxed);
            drop(spares);
            if first && shared.config.blocked_warnings {
                eprintln!(
                    "coroutines: could not start a spare worker thread ({error}); coroutines \
                     queued behind blocked workers wait until a worker is free. (Silence this \
                     with Runtime::builder().blocked_worker_warnings(false).)"
                );
            }
        }
    }
}

impl Shared {
    /// Queues a new coroutine: on the spawning worker if there is one (an
    /// idle worker may take it from there), else in the injector.
    pub(crate) fn submit(self: &Arc<Self>, task: Arc<Task>) {
        self.counters.spawned.fetch_add(1, Ordering::Relaxed);
        match self.current_local() {
            Some(local) => {
                local.push(task);
                WorkerCounts::add(&self.workers[local.index].counts.spawns, 1);
            }
            None => switch::as_worker_thread(|| self.injector.push(task)),
        }
        self.notify_idle();
    }

    /// The worker-local state of the calling thread, if it is one of this
    /// runtime's workers. Inside a coroutine the worker is found through the
    /// coroutine itself, not a thread-local, so this keeps working once each
    /// coroutine has its own thread pointer.
    pub(crate) fn current_local(self: &Arc<Self>) -> Option<&Local> {
        match switch::current() {
            Some(task) if Arc::ptr_eq(&task.shared, self) => {
                let home = task.home.load(Ordering::Relaxed);
                // SAFETY: a running coroutine runs on its home worker's thread.
                Some(unsafe { self.workers[home].local() })
            }
            Some(_) => None,
            None => worker::current_local(self),
        }
    }

    /// Wakes one sleeping worker so it can look for work anyone may take.
    pub(crate) fn notify_idle(&self) {
        fence(Ordering::SeqCst);
        for worker in self.workers.iter() {
            if worker.active.load(Ordering::Relaxed) && worker.try_notify() {
                return;
            }
        }
    }
}

/// The poller of the running coroutine's worker, or `None` outside
/// coroutines.
pub(crate) fn current_poller() -> Option<&'static Poller> {
    let task = switch::current()?;
    Some(&task.shared.workers[task.home.load(Ordering::Relaxed)].poller)
}

/// Makes a woken coroutine runnable on its worker.
///
/// Once the runtime shuts down nothing runs its queues any more: the task is
/// abandoned instead, which fails its join handle.
pub(crate) fn schedule(task: Arc<Task>) {
    let shared = task.shared.clone();
    // Failing a task allocates, which a signal handler may not: its wake
    // goes to the mailbox, which the stopping runtime drains.
    let in_handler = switch::in_signal_handler();
    if shared.shutdown.load(Ordering::Acquire) && !in_handler {
        task.abandon();
        return;
    }
    let home = task.home.load(Ordering::Relaxed);
    let worker = &shared.workers[home];
    if in_handler {
        // The handler may have interrupted any operation on the worker's
        // queues, or a push to its inbox, on this thread: the mailbox
        // alone takes a push from anywhere (`mailbox.rs`).
        worker.mailbox.push(task);
    } else {
        match shared.current_local() {
            Some(local) if local.index == home => return local.push(task),
            // The caller may hold a futex bucket's lock.
            _ => switch::as_worker_thread(|| worker.inbox.push(task)),
        }
    }
    fence(Ordering::SeqCst);
    if shared.shutdown.load(Ordering::Relaxed) && !in_handler {
        // The worker may have made its final drain before this push (see
        // the fence there): nothing else would fail the task, which, queued,
        // would keep the whole runtime alive.
        switch::as_worker_thread(|| worker.abandon_woken());
    }
    worker.try_notify();
}
