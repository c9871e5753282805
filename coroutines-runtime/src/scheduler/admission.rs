//! Admission: a coroutine that cannot get a stack waits for one.
//!
//! Stacks take memory, and on kernels before 6.13 two memory mappings each,
//! which the kernel caps per process (`vm.max_map_count`, 65530 on a stock
//! kernel: ~32,000 live coroutines). Past the cap, or out of memory, a new
//! coroutine waits until a running one ends and frees a stack, like a job
//! waiting for a bounded pool, instead of failing. It fails only when the coroutines of its
//! runtime hold less stack than it asks for, so their ends cannot make room.
//! Each incident is reported once on stderr and counted in
//! `Stats::stack_waits`.

use core::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::worker::WorkerCounts;
use super::Shared;
use crate::coroutine::{coarse_now, Task, Wait};
use crate::sync::SpinLock;

/// How long coroutines wait for a stack while the whole runtime is idle
/// (nothing runs, nothing is queued, no deadline is pending) before they
/// fail: their runtime's coroutines may all be parked waiting for them
/// (parents joining children that wait for stacks), and then no stack
/// will ever come free, as a thread's spawn would fail at once.
pub(crate) const STALL: Duration = Duration::from_secs(1);

/// The coroutines of one runtime waiting for a stack, oldest first.
#[derive(Default)]
pub(crate) struct StackWaiters {
    queue: SpinLock<VecDeque<Arc<Task>>>,
    /// `queue.len()`, readable without the lock: every finishing coroutine
    /// looks.
    len: AtomicUsize,
    /// Whether this incident (waiters since the queue was last empty) has
    /// been reported.
    reported: AtomicBool,
    /// When a waiter last got a stack, or the incident began
    /// (`coarse_now`).
    progress: AtomicU64,
    /// Coroutines that ever waited.
    pub(crate) waited: AtomicU64,
}

impl StackWaiters {
    /// Handles a new coroutine whose stack could not be mapped (`error`):
    /// it waits for one, unless the runtime's coroutines hold less stack
    /// than it needs. Returns the coroutines that must fail instead: none,
    /// or this one with any others that would wait in vain.
    pub(crate) fn admit(
        &self,
        shared: &Shared,
        task: Arc<Task>,
        error: &io::Error,
    ) -> Vec<Arc<Task>> {
        if held(shared) < task.stack_bytes as u64 {
            return vec![task];
        }
        let id = task.id.as_u64();
        task.waiting.note(Wait::Stack, None);
        let mut queue = self.queue.lock();
        queue.push_back(task);
        self.len.store(queue.len(), Ordering::SeqCst);
        drop(queue);
        // Pairs with the fence of a coroutine's end (`freed`): either it
        // sees this waiter, or this check sees it gone.
        fence(Ordering::SeqCst);
        if held(shared) == 0 {
            return self.drain();
        }
        self.waited.fetch_add(1, Ordering::Relaxed);
        if !self.reported.swap(true, Ordering::Relaxed) {
            self.progress.store(coarse_now(), Ordering::Relaxed);
            eprintln!(
                "coroutines: coroutine {id} and those after it wait for running coroutines to \
                 end and free a stack (counted in Stats::stack_waits): {error}"
            );
        }
        // Stacks cached by idle workers can be freed for it.
        for worker in shared.workers.iter() {
            worker.try_notify();
        }
        Vec::new()
    }

    /// Records that a coroutine of the worker with `counts` has given up
    /// its stack of `bytes`, and returns the longest-waiting coroutine,
    /// which can have it.
    pub(crate) fn freed(&self, counts: &WorkerCounts, bytes: usize) -> Option<Arc<Task>> {
        WorkerCounts::add(&counts.stack_freed, bytes as u64);
        fence(Ordering::SeqCst);
        self.next()
    }

    /// The longest-waiting coroutine, once a stack has been freed.
    pub(crate) fn next(&self) -> Option<Arc<Task>> {
        if self.len.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let mut queue = self.queue.lock();
        let task = queue.pop_front();
        self.len.store(queue.len(), Ordering::SeqCst);
        if queue.is_empty() {
            self.reported.store(false, Ordering::Relaxed);
        }
        drop(queue);
        if let Some(task) = &task {
            task.waiting.note(Wait::Other, None);
            self.progress.store(coarse_now(), Ordering::Relaxed);
        }
        task
    }

    /// The waiting coroutines, to fail, if none got a stack for [`STALL`]
    /// while the runtime was idle; else none.
    pub(crate) fn fail_if_stalled(&self, shared: &Shared) -> Vec<Arc<Task>> {
        let since = coarse_now().saturating_sub(self.progress.load(Ordering::Relaxed));
        let now = std::time::Instant::now();
        let idle = shared.injector.is_empty()
            && shared.workers.iter().all(|worker| {
                worker.running.load(Ordering::Relaxed) == 0
                    && !worker.has_queued()
                    && worker.timers.lock().next_timeout(now).is_none()
            });
        match idle && since >= STALL.as_nanos() as u64 {
            true => self.drain(),
            false => Vec::new(),
        }
    }

    /// Whether coroutines wait, so idle workers free the stacks they cache.
    pub(crate) fn any(&self) -> bool {
        self.len.load(Ordering::Acquire) != 0
    }

    /// Every waiting coroutine, when nothing will free a stack any more
    /// (the runtime shuts down).
    pub(crate) fn drain(&self) -> Vec<Arc<Task>> {
        let mut queue = self.queue.lock();
        self.len.store(0, Ordering::SeqCst);
        self.reported.store(false, Ordering::Relaxed);
        queue.drain(..).collect()
    }
}

/// Bytes of stack the coroutines of `shared` hold: taken and not freed.
fn held(shared: &Shared) -> u64 {
    let (taken, freed) = shared.workers.iter().fold((0, 0), |(t, f), worker| {
        let counts = &worker.counts;
        (
            t + counts.stack_taken.load(Ordering::SeqCst),
            f + counts.stack_freed.load(Ordering::SeqCst),
        )
    });
    taken.saturating_sub(freed)
}
