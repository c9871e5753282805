//! A worker's ready queue: started coroutines pinned to it, in run order
//! (yielded, or woken by the coroutines running there), which the
//! blocked-worker monitor can still take.
//!
//! A switch takes a coroutine from this queue and often puts one back, so
//! the worker's side is plain memory: a queue other threads take from
//! with locked instructions would cost two per switch. The monitor's side
//! is rare (a worker blocked with coroutines behind it), so it pays for
//! both with an asymmetric fence (`sync::membarrier`):
//!
//! - the worker marks itself `busy`, then, with only a compiler fence
//!   between, checks `seized`; it backs off while the monitor holds the
//!   queue;
//! - the monitor sets `seized`, runs the barrier on every thread, then
//!   waits for `busy` to clear before it takes the queue.
//!
//! After the barrier, either the worker's check saw `seized` set, or its
//! `busy` is visible to the monitor: never both sides inside. An operation
//! is a few instructions, but a push that grows the queue calls the
//! allocator, which may block the worker's thread; the monitor waits for
//! `busy` only briefly, and otherwise leaves the queue for its next look.
//! Where the barrier is not available the monitor leaves the queue alone,
//! as it did before it could take from it.

use core::cell::UnsafeCell;
use core::sync::atomic::{compiler_fence, AtomicBool, AtomicUsize, Ordering};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::coroutine::Task;
use crate::sync::membarrier;

/// How long the monitor waits for the worker to leave an operation on its
/// queue: far longer than one takes, unless the worker's thread was
/// descheduled in it or blocks in the allocator.
const PATIENCE: Duration = Duration::from_micros(50);

pub(crate) struct ReadyQueue {
    tasks: UnsafeCell<VecDeque<Arc<Task>>>,
    /// The queue's length, for other threads (the monitor, statistics).
    len: AtomicUsize,
    /// The worker is inside an operation on `tasks`.
    busy: AtomicBool,
    /// The monitor takes, or is about to take, `tasks`.
    seized: AtomicBool,
}

// SAFETY: `tasks` is touched by the worker inside `with`, and by the
// monitor inside `seize` only once the worker is out and kept out (see the
// module docs); everything else is atomic.
unsafe impl Sync for ReadyQueue {}

impl ReadyQueue {
    pub(crate) fn new() -> ReadyQueue {
        ReadyQueue {
            tasks: UnsafeCell::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            seized: AtomicBool::new(false),
        }
    }

    /// How many coroutines are queued, as last published.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Runs `f` on the queue.
    ///
    /// # Safety
    /// Only on the worker's own thread, and not from inside `f` (nor from a
    /// signal handler that interrupts it).
    #[inline(always)]
    pub(crate) unsafe fn with<T>(&self, f: impl FnOnce(&mut VecDeque<Arc<Task>>) -> T) -> T {
        loop {
            self.busy.store(true, Ordering::Relaxed);
            // The CPU's side of this fence is the monitor's barrier.
            compiler_fence(Ordering::SeqCst);
            if !self.seized.load(Ordering::Acquire) {
                break;
            }
            self.busy.store(false, Ordering::Release);
            while self.seized.load(Ordering::Acquire) {
                core::hint::spin_loop();
            }
        }
        // SAFETY: the worker is the only other user, and it is kept out
        // until `busy` clears (see the module docs).
        let tasks = unsafe { &mut *self.tasks.get() };
        let result = f(tasks);
        self.len.store(tasks.len(), Ordering::Relaxed);
        self.busy.store(false, Ordering::Release);
        result
    }

    /// Takes every queued coroutine, in order, from another thread than
    /// the worker's; none if the barrier is not available, or if the
    /// worker stays inside an operation for more than [`PATIENCE`]. One
    /// caller at a time (the runtime's monitor).
    pub(crate) fn seize(&self) -> VecDeque<Arc<Task>> {
        if self.len() == 0 || !membarrier::available() {
            return VecDeque::new();
        }
        self.seized.store(true, Ordering::SeqCst);
        if !membarrier::all_threads() || !self.worker_leaves() {
            self.seized.store(false, Ordering::Release);
            return VecDeque::new();
        }
        // SAFETY: the worker is out of `with` and stays out while `seized`
        // is set.
        let tasks = core::mem::take(unsafe { &mut *self.tasks.get() });
        self.len.store(0, Ordering::Relaxed);
        self.seized.store(false, Ordering::Release);
        tasks
    }

    /// Waits up to [`PATIENCE`] for the worker to leave the operation it
    /// may be inside; whether it did.
    fn worker_leaves(&self) -> bool {
        let mut since = None;
        while self.busy.load(Ordering::Acquire) {
            let start = *since.get_or_insert_with(Instant::now);
            if start.elapsed() > PATIENCE {
                return false;
            }
            core::hint::spin_loop();
        }
        true
    }
}
