//! The task record: everything the runtime knows about one coroutine.

use core::cell::{Cell, UnsafeCell};
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use super::id::CoroutineId;
use super::park::Waker;
use super::stack::Gen;
use super::wait::WaitRecord;
use crate::identity::ThreadBlock;
use crate::scheduler::{Shared, SpawnOptions, WorkerCounts};

/// Where a coroutine is in its life. Stored in [`Task::lifecycle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Lifecycle {
    /// Spawned, never run, holds no stack. Any worker may take it: that is
    /// how new work spreads over idle workers.
    New = 0,
    /// Has run at least once and owns a stack. Runs only on its `home`
    /// worker, because code on its stack may hold addresses of that thread's
    /// thread-locals; only a runtime built with work stealing moves it.
    Started = 1,
    /// The body returned, panicked or could not start; the stack is gone.
    /// Final.
    Done = 2,
}

/// What a coroutine asks its worker to do once the switch away from it has
/// completed. Written by the coroutine right before it leaves, taken by the
/// worker right after.
pub(crate) enum Suspend {
    /// Nothing: the coroutine finished.
    Nothing,
    /// Put it at the back of the run queue.
    Yield,
    /// Park it: hand a [`Waker`] to `register` and, with a deadline, arm a
    /// timer that wakes it with `TimedOut`.
    Park {
        deadline: Option<Instant>,
        /// Lives in the parked coroutine's frame, which stays valid while it
        /// is suspended.
        register: *mut (dyn FnMut(Waker) + 'static),
    },
}

/// What a coroutine runs, and where it reports an end it could not reach by
/// itself. One allocation can hold the user's closure and the slot its
/// result goes to.
pub trait Body: Send + Sync {
    /// Runs the coroutine's code, on its stack, and keeps its outcome.
    /// Called at most once.
    fn run(&self);
    /// Hands the outcome `run` kept to whoever waits for it. Called once
    /// after `run`, by the worker, when the coroutine has ended: its
    /// thread-local destructors have run and its stack is measured.
    fn deliver(&self);
    /// Delivers `payload` as the coroutine's panic when `run` could not end
    /// normally: its stack could not be allocated, it overflowed its stack,
    /// or its runtime shut down before it finished. May be called after
    /// `run` has completed: the outcome it kept is then delivered instead.
    fn fail(&self, payload: Box<dyn Any + Send>);
}

/// The runtime's record of one coroutine.
pub(crate) struct Task {
    pub(crate) id: CoroutineId,
    pub(crate) name: Option<Box<str>>,
    pub(crate) shared: Arc<Shared>,
    /// Index of the worker that runs it once started.
    pub(crate) home: AtomicUsize,
    lifecycle: AtomicU8,
    /// The park word; see `park.rs`.
    pub(crate) park: AtomicU64,
    /// What its last park waits for, for dumps.
    pub(crate) waiting: WaitRecord,
    /// Its place in the runtime's registry while started.
    pub(crate) slot: AtomicU64,
    /// The next older task in a worker's mailbox while it waits there (see
    /// `scheduler/mailbox.rs`).
    pub(crate) mailbox_next: AtomicPtr<Task>,
    /// Requested stack size in bytes.
    pub(crate) stack_bytes: usize,
    /// Whether it is the coroutine `block_on` runs (see `SpawnOptions`).
    pub(crate) root: bool,
    /// Whether its stack usage is measured (see `SpawnOptions`).
    pub(crate) measured: bool,
    /// The most stack it used, in bytes, once it has ended measured; 0
    /// before.
    stack_used: AtomicUsize,
    /// What it runs, and where its result goes.
    pub(crate) body: Arc<dyn Body>,
    /// The generator, from the first run until the coroutine is done.
    generator: UnsafeCell<Option<Gen>>,
    /// Its own thread identity, from the first run until it is done; `None`
    /// where coroutines share their worker's.
    identity: UnsafeCell<Option<ThreadBlock>>,
    suspend: UnsafeCell<Suspend>,
    /// Hooked calls made since it last switched (see `switch::spend_budget`).
    pub(crate) calls: Cell<u32>,
    /// Where resuming it reads first: its generator object and its thread
    /// block's thread pointer (0 without one). Set before the first run.
    resume_hint: Cell<[usize; 2]>,
}

// SAFETY: `generator`, `suspend`, `calls` and `resume_hint` are touched
// only by the thread that currently runs or schedules the coroutine; a task
// reaches another thread only through a run queue, whose push/pop pair
// orders the accesses. Everything else is atomic or immutable.
unsafe impl Sync for Task {}
// SAFETY: as above; the body is `Send`, and a started generator moves
// between threads only with work stealing, which the user opted into.
unsafe impl Send for Task {}

impl Task {
    pub(crate) fn new(
        shared: Arc<Shared>,
        name: Option<Box<str>>,
        stack_bytes: usize,
        options: &SpawnOptions,
        body: Arc<dyn Body>,
    ) -> Task {
        Task {
            id: CoroutineId::next(),
            name,
            shared,
            home: AtomicUsize::new(0),
            lifecycle: AtomicU8::new(Lifecycle::New as u8),
            park: AtomicU64::new(0),
            waiting: WaitRecord::default(),
            slot: AtomicU64::new(0),
            mailbox_next: AtomicPtr::new(core::ptr::null_mut()),
            stack_bytes,
            root: options.root,
            measured: options.measure_stack,
            stack_used: AtomicUsize::new(0),
            body,
            generator: UnsafeCell::new(None),
            identity: UnsafeCell::new(None),
            suspend: UnsafeCell::new(Suspend::Nothing),
            calls: Cell::new(0),
            resume_hint: Cell::new([0; 2]),
        }
    }

    pub(crate) fn lifecycle(&self) -> Lifecycle {
        match self.lifecycle.load(Ordering::Acquire) {
            0 => Lifecycle::New,
            1 => Lifecycle::Started,
            _ => Lifecycle::Done,
        }
    }

    pub(crate) fn set_lifecycle(&self, state: Lifecycle) {
        self.lifecycle.store(state as u8, Ordering::Release);
    }

    /// # Safety
    /// Only the thread that runs (or is about to run) the task.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn generator(&self) -> &mut Option<Gen> {
        // SAFETY: exclusive per the contract.
        unsafe { &mut *self.generator.get() }
    }

    /// The coroutine's own thread identity, if it has one. Set by its worker
    /// before the first run and taken once it is done; in between, read by
    /// the coroutine and the worker running it.
    pub(crate) fn identity(&self) -> Option<&ThreadBlock> {
        // SAFETY: written only while the coroutine neither runs nor is
        // queued (before its first run, after its end), per the setters'
        // contracts.
        unsafe { (*self.identity.get()).as_ref() }
    }

    /// # Safety
    /// Only the worker about to run the coroutine for the first time.
    pub(crate) unsafe fn set_identity(&self, block: ThreadBlock) {
        // SAFETY: exclusive per the contract.
        unsafe { *self.identity.get() = Some(block) };
    }

    /// Takes the coroutine's identity out, to be recycled or dropped (which
    /// runs the destructors of thread-locals it left). Its `CURRENT` is
    /// cleared first: code that runs on it from now on (those
    /// destructors) is no coroutine's, and blocks as a thread would.
    ///
    /// # Safety
    /// Only once the coroutine will never run again.
    pub(crate) unsafe fn take_identity(&self) -> Option<ThreadBlock> {
        // SAFETY: exclusive per the contract.
        let block = unsafe { (*self.identity.get()).take() }?;
        super::switch::unseed_current(&block);
        Some(block)
    }

    /// Records where resuming the coroutine reads first (see
    /// [`Task::prefetch_resume`]). Only its worker, before the first run.
    pub(crate) fn set_resume_hint(&self, generator: usize, thread_pointer: usize) {
        self.resume_hint.set([generator, thread_pointer]);
    }

    /// Starts loading what switching to the parked coroutine reads first:
    /// its generator's saved registers and, with `tp_hot` (the thread
    /// block's hot offsets), its thread block. A coroutine that waited
    /// while many others ran finds these out of the cache; loading them
    /// ahead overlaps their misses. Only its worker.
    #[inline]
    pub(crate) fn prefetch_resume(&self, tp_hot: Option<&[isize; 4]>) {
        let [generator, tp] = self.resume_hint.get();
        crate::sys::prefetch(generator);
        crate::sys::prefetch(generator + 64);
        if let (Some(offsets), true) = (tp_hot, tp != 0) {
            for offset in offsets {
                crate::sys::prefetch((tp as isize + offset) as usize);
            }
        }
    }

    /// Starts loading the line [`Task::prefetch_resume`] reads, a step
    /// ahead of it.
    #[inline]
    pub(crate) fn prefetch_hint(&self) {
        crate::sys::prefetch(self.resume_hint.as_ptr() as usize);
    }

    /// # Safety
    /// Only the running coroutine itself, right before it switches away.
    pub(crate) unsafe fn set_suspend(&self, action: Suspend) {
        // SAFETY: exclusive per the contract.
        unsafe { *self.suspend.get() = action };
    }

    /// # Safety
    /// Only its worker, right after the switch away from it.
    pub(crate) unsafe fn take_suspend(&self) -> Suspend {
        // SAFETY: exclusive per the contract.
        unsafe { core::mem::replace(&mut *self.suspend.get(), Suspend::Nothing) }
    }
}

/// A shared handle to a coroutine's record: its identity and whether it has
/// finished.
#[derive(Clone)]
pub struct TaskRef(pub(crate) Arc<Task>);

impl TaskRef {
    /// The coroutine's unique id.
    pub fn id(&self) -> CoroutineId {
        self.0.id
    }

    /// The name given at spawn, if any.
    pub fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }

    /// Whether the coroutine has finished running.
    pub fn is_done(&self) -> bool {
        self.0.lifecycle() == Lifecycle::Done
    }

    /// The most stack the coroutine used, in bytes, once it has ended, if
    /// it was spawned with `SpawnOptions::measure_stack`.
    pub fn stack_used(&self) -> Option<usize> {
        match self.0.stack_used.load(Ordering::Acquire) {
            0 => None,
            bytes => Some(bytes),
        }
    }
}

impl core::fmt::Debug for TaskRef {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TaskRef")
            .field("id", &self.0.id)
            .field("name", &self.0.name)
            .finish()
    }
}

impl Task {
    /// Records how much of its measured stack the coroutine used.
    pub(crate) fn set_stack_used(&self, generator: &Gen) {
        let (_, used) = generator.stack_usage();
        let bytes = used * core::mem::size_of::<usize>();
        self.stack_used.store(bytes.max(1), Ordering::Release);
    }

    /// Counts a park of this coroutine that ended by its deadline: a
    /// sleep that ran its time, or a wait that timed out. Called by the
    /// coroutine, on its worker, the counts' one writer.
    pub(crate) fn count_timeout(&self, sleep: bool) {
        let counts = &self.shared.workers[self.home.load(Ordering::Relaxed)].counts;
        let counter = match sleep {
            true => &counts.sleeps,
            false => &counts.timeouts,
        };
        WorkerCounts::add(counter, 1);
    }

    /// Gives up on a coroutine that will never run again (its runtime shut
    /// down, or nothing is left that could wake it): its join handle gets an
    /// error. Does nothing once the coroutine is done.
    pub(crate) fn abandon(&self) {
        let was = self.lifecycle.swap(Lifecycle::Done as u8, Ordering::AcqRel);
        if was != Lifecycle::Done as u8 {
            self.shared
                .counters
                .abandoned
                .fetch_add(1, Ordering::Relaxed);
            self.body.fail(Box::new(String::from(
                "the coroutine was dropped before it finished: its runtime shut down, \
                 or nothing was left that could wake it",
            )));
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(generator) = self.generator.get_mut().take() {
            // Suspended and unreachable. Dropping the generator would unwind
            // its stack, which aborts under `panic = "abort"`; the stack is
            // leaked instead.
            super::Stacks::leak(generator);
        }
        // Its thread-local destructors run now, on this thread, as those
        // of a thread that ends; see `take_identity`.
        // SAFETY: the coroutine will never run again.
        drop(unsafe { self.take_identity() });
        self.abandon();
    }
}
