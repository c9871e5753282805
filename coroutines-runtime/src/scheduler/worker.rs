//! A worker thread: its queues, its loop, and how it sleeps.

use core::cell::{Cell, RefCell};
use core::ptr;
use core::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicPtr, AtomicU64, Ordering};
use std::io;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_deque::{Injector, Steal, Stealer, Worker};

use super::{admission, Mailbox, ReadyQueue, Shared};
use crate::coroutine::{self, switch, Gen, Identity, Lifecycle, StackPool, Suspend, Task};
use crate::identity::{Layout, ThreadBlock};
use crate::reactor::{self, Poller, Timers};
use crate::sync::SpinLock;

/// Every this many runs a busy worker polls its reactor, fires due timers
/// and takes from the injector first, so none of them starves. A prime, as
/// in Go's scheduler, so it does not beat in step with user loops.
const MAINTENANCE_INTERVAL: u32 = 61;

/// Looks for work at most this many times before an idle worker sleeps; a
/// few microseconds in all (see `Local::idle`).
const IDLE_SPINS: u32 = 64;

/// A sleep that a notification ends within this time is one the spin of
/// an idle worker would likely have caught: a full spin lasts ~5-10 us
/// here, and the kernel's wake-up alone can take ~25 us, which the sleep
/// includes.
const SPIN_WOULD_HAVE_CAUGHT: core::time::Duration = core::time::Duration::from_micros(50);

thread_local! {
    /// The worker whose scheduler code runs on this thread (null on other
    /// threads). Consulted only outside coroutines; see
    /// `Shared::current_local`.
    static WORKER: Cell<*const Local> = const { Cell::new(ptr::null()) };
}

/// A worker's shared run queue, made with its `WorkerShared` and handed to
/// its thread when it starts.
pub(crate) struct Queues {
    /// New coroutines (and, with work stealing, started ones): any worker
    /// may take them.
    pub(crate) queue: Worker<Arc<Task>>,
}

impl Queues {
    pub(crate) fn new() -> Queues {
        Queues {
            queue: Worker::new_fifo(),
        }
    }
}

/// Fails the join handles of the coroutines in `queue`, which nothing will
/// run any more.
pub(crate) fn abandon_queued(queue: &Injector<Arc<Task>>) {
    loop {
        match queue.steal() {
            Steal::Success(task) => task.abandon(),
            Steal::Empty => break,
            Steal::Retry => {}
        }
    }
}

/// The part of a worker that other threads see.
pub(crate) struct WorkerShared {
    pub(crate) stealer: Stealer<Arc<Task>>,
    /// Started coroutines pinned to this worker, in run order: yielded, or
    /// woken by the coroutines running here. The worker's, but the monitor
    /// takes them off a blocked worker (see `ready.rs`).
    pub(crate) ready: ReadyQueue,
    /// Started coroutines woken by other threads.
    pub(crate) inbox: Injector<Arc<Task>>,
    /// Coroutines woken by signal handlers, and by wakes that re-entered
    /// the worker's queue operations (see `mailbox.rs`).
    pub(crate) mailbox: Mailbox,
    /// The id of the coroutine running on the worker, 0 between runs; for
    /// the monitor and dumps.
    pub(crate) running: AtomicU64,
    /// Whether the worker takes work that is not its own (the injector,
    /// other workers' queues): always for the configured workers, only
    /// while the monitor needs it for spare ones.
    pub(crate) active: AtomicBool,
    pub(crate) poller: Poller,
    /// Deadlines of the coroutines parked on this worker. The worker's
    /// own, but locked: the monitor fires them while the worker is
    /// blocked (see `service`).
    pub(crate) timers: SpinLock<Timers>,
    /// The worker is about to sleep, or sleeps, in its poller. Set only by
    /// the worker, after it has cleared `notified`, and cleared when it
    /// wakes up.
    sleeping: AtomicBool,
    /// Some thread has written the wake-up since the worker last cleared
    /// this flag, so further notifications until then are redundant.
    ///
    /// Invariant: only the worker clears it, and only right before it sets
    /// `sleeping` (all `SeqCst`). A notifier that finds it set therefore
    /// performed its swap before that clear in the flag's modification
    /// order, and so before the worker's next check for work: that check
    /// sees the work the notifier published before its fence. Clearing it
    /// anywhere else (say, on waking up) breaks this: a notifier that read
    /// `sleeping` just before the worker woke would set it again, its write
    /// to the eventfd could be swallowed by a non-blocking poll while the
    /// worker is busy, and every later notifier would skip the worker's next
    /// sleep, which then lasts for ever.
    notified: AtomicBool,
    /// Event counts, each written by the worker only.
    pub(crate) counts: WorkerCounts,
    /// The kernel id of the worker's thread, 0 before it starts; for the
    /// monitor, which asks the kernel how the thread spends its time.
    pub(crate) thread: AtomicI32,
    /// The worker's local state while its thread runs.
    local: AtomicPtr<Local>,
}

impl WorkerShared {
    pub(crate) fn new(queues: &Queues, poller: Poller, active: bool) -> WorkerShared {
        WorkerShared {
            stealer: queues.queue.stealer(),
            ready: ReadyQueue::new(),
            inbox: Injector::new(),
            mailbox: Mailbox::new(),
            running: AtomicU64::new(0),
            active: AtomicBool::new(active),
            poller,
            timers: SpinLock::new(Timers::new()),
            sleeping: AtomicBool::new(false),
            notified: AtomicBool::new(false),
            counts: WorkerCounts::default(),
            thread: AtomicI32::new(0),
            local: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Fails the join handles of the coroutines woken for this worker, once
    /// it will never run them: it has stopped, or is stopping.
    pub(crate) fn abandon_woken(&self) {
        abandon_queued(&self.inbox);
        self.mailbox.take_all().for_each(|task| task.abandon());
    }

    /// Whether it has coroutines queued.
    pub(crate) fn has_queued(&self) -> bool {
        !self.stealer.is_empty() || self.has_pinned()
    }

    /// Whether it has started coroutines queued, which no other worker
    /// takes by itself.
    pub(crate) fn has_pinned(&self) -> bool {
        self.ready.len() != 0 || !self.inbox.is_empty() || !self.mailbox.is_empty()
    }

    /// Wakes the worker if it sleeps and nobody has notified it yet. The
    /// caller has published its work and issued a `SeqCst` fence.
    pub(crate) fn try_notify(&self) -> bool {
        if self.sleeping.load(Ordering::SeqCst) && !self.notified.swap(true, Ordering::SeqCst) {
            self.poller.notify();
            return true;
        }
        false
    }

    /// Wakes the parks on this worker whose deadlines have passed.
    pub(crate) fn fire_timers(&self) {
        let mut timers = self.timers.lock();
        if !timers.is_empty() {
            timers.fire(Instant::now());
        }
    }

    /// Does the reactor's work of this worker while it is blocked (it runs
    /// one coroutine and does not switch): wakes the coroutines parked on
    /// it whose deadlines have passed or whose descriptors became ready,
    /// so that the monitor can move them to other workers.
    pub(crate) fn service(&self) {
        self.fire_timers();
        if self.poller.has_registrations() {
            self.poller
                .wait(Some(core::time::Duration::ZERO), reactor::dispatch);
        }
    }

    /// The worker's local state.
    ///
    /// # Safety
    /// Only on this worker's own thread.
    pub(crate) unsafe fn local(&self) -> &Local {
        // SAFETY: set before the worker runs any coroutine and cleared only
        // after its loop ends; the caller is on the worker's thread.
        unsafe { &*self.local.load(Ordering::Acquire) }
    }
}

/// The local state of the worker running on this thread, if it belongs to
/// `shared`.
pub(crate) fn current_local(shared: &Arc<Shared>) -> Option<&Local> {
    let local = WORKER.with(Cell::get);
    // SAFETY: non-null only on a worker thread while its loop runs.
    let local = unsafe { local.as_ref() }?;
    ptr::eq(local.shared, Arc::as_ptr(shared)).then_some(local)
}

/// Whether this thread is a worker of any runtime, running its scheduler
/// code (outside coroutines).
pub(crate) fn on_a_worker() -> bool {
    !WORKER.with(Cell::get).is_null()
}

/// Counters a worker keeps about itself. Each has one writer, so an
/// increment is a plain load and store, not a locked instruction.
#[derive(Default)]
pub(crate) struct WorkerCounts {
    /// Switches into coroutines.
    pub(crate) switches: AtomicU64,
    /// Descriptor events taken from the poller.
    pub(crate) reactor_events: AtomicU64,
    /// Waits that timed out (see `Stats::timeouts`).
    pub(crate) timeouts: AtomicU64,
    /// Sleeps that ran their time.
    pub(crate) sleeps: AtomicU64,
    /// Coroutines spawned by the coroutines running here.
    pub(crate) spawns: AtomicU64,
    /// When the worker's thread started (`coarse_now`), 0 until then.
    pub(crate) began: AtomicU64,
    /// Nanoseconds the worker has slept in its reactor, waiting for work.
    pub(crate) asleep: AtomicU64,
    /// Bytes of stack coroutines got here.
    pub(crate) stack_taken: AtomicU64,
    /// Bytes of stack coroutines gave up here (see `admission`).
    pub(crate) stack_freed: AtomicU64,
}

impl WorkerCounts {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
}

/// A worker's own state; touched only by its thread.
pub(crate) struct Local {
    pub(crate) index: usize,
    shared: *const Shared,
    /// Runnable coroutines any worker may take.
    pub(crate) queue: Worker<Arc<Task>>,
    stacks: RefCell<StackPool>,
    tick: Cell<u32>,
    /// How many times the next idle spin looks for work (see `idle`).
    idle_spins: Cell<u32>,
    /// An operation on `queue` or `ready` is under way (see [`Local::busy`]).
    busy: Cell<bool>,
}

impl Local {
    /// Queues a runnable coroutine on this worker. A push that re-enters
    /// an operation on the crossbeam queue leaves it in the mailbox (or,
    /// new, in the injector) instead: the queue is not re-entrant. (Wakes from signal handlers
    /// never come here: `scheduler::schedule`.)
    pub(crate) fn push(&self, task: Arc<Task>) {
        if self.busy.get() {
            match task.lifecycle() {
                // A spawn: any worker may run it, even while this one is
                // blocked and the monitor cannot move its mail.
                Lifecycle::New => self.shared().injector.push(task),
                _ => self.me().mailbox.push(task),
            }
            return;
        }
        self.enqueue(task);
    }

    /// [`push`](Self::push), where no re-entered operation can be the
    /// caller.
    fn enqueue(&self, task: Arc<Task>) {
        // SAFETY: `shared` outlives the worker loop.
        let stealing = unsafe { &*self.shared }.config.work_stealing;
        if stealing || task.lifecycle() == Lifecycle::New {
            // Called from a coroutine too (a spawn, a wake), which nothing
            // the push runs may park.
            self.busy(|| switch::as_worker_thread(|| self.queue.push(task)));
        } else {
            // A growing `push_back` calls the allocator, which may be any
            // code: marked busy and as the worker thread, as above.
            self.busy(|| {
                switch::as_worker_thread(|| {
                    // SAFETY: on this worker's thread, and not re-entered:
                    // `push` leaves a wake made inside in the mailbox.
                    unsafe { self.me().ready.with(|ready| ready.push_back(task)) }
                })
            });
        }
    }

    /// Runs `f`, an operation on this worker's crossbeam queue, marked
    /// busy. Inside, a full queue's resize (or a pop's shrink, or a steal
    /// into it) pins crossbeam's epoch, whose collection runs other crates'
    /// deferred drops: they may wake a coroutine of this worker, which must
    /// not re-enter the queue. The ready queue's pushes are marked too: a
    /// push that grows it calls the allocator.
    #[inline(always)]
    fn busy<T>(&self, f: impl FnOnce() -> T) -> T {
        struct Restore<'a>(&'a Cell<bool>, bool);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                self.0.set(self.1);
            }
        }
        let _restore = Restore(&self.busy, self.busy.replace(true));
        f()
    }

    /// The next coroutine of the ready queue. Starts loading what the two
    /// after it will read first, in steps: the one right after runs next,
    /// by which time its misses are done.
    fn pop_ready(&self) -> Option<Arc<Task>> {
        let tp_hot = self.tp_hot();
        // SAFETY: on this worker's thread, and not re-entered: a pop
        // neither allocates nor frees, and prefetches call nothing out.
        unsafe {
            self.me().ready.with(|ready| {
                let task = ready.pop_front()?;
                if let Some(next) = ready.front() {
                    next.prefetch_resume(tp_hot);
                }
                if let Some(after) = ready.get(1) {
                    after.prefetch_hint();
                }
                Some(task)
            })
        }
    }

    /// The hot offsets of thread blocks, where coroutines have them.
    fn tp_hot(&self) -> Option<&'static [isize; 4]> {
        self.shared().config.identity.map(|layout| &layout.tp_hot)
    }

    fn me(&self) -> &WorkerShared {
        &self.shared().workers[self.index]
    }
}

/// Runs worker `index` of `shared` on the calling thread until shutdown.
pub(crate) fn run(shared: Arc<Shared>, index: usize, queues: Queues) {
    let local = Local {
        index,
        shared: Arc::as_ptr(&shared),
        queue: queues.queue,
        stacks: RefCell::new(StackPool::new(
            shared.config.stack_size,
            shared.config.identity.is_some_and(Layout::fits_floor),
            super::STACK_POOL_CAPACITY,
        )),
        tick: Cell::new(0),
        idle_spins: Cell::new(IDLE_SPINS),
        busy: Cell::new(false),
    };
    let me = &shared.workers[index];
    me.thread.store(crate::sys::gettid(), Ordering::Relaxed);
    me.local
        .store(&local as *const Local as *mut Local, Ordering::Release);
    WORKER.with(|worker| worker.set(&local));
    me.counts
        .began
        .store(coroutine::coarse_now(), Ordering::Relaxed);
    shared.monitor.worker_wakes();

    while !shared.shutdown.load(Ordering::Acquire) {
        match local.next_task(&shared) {
            Some(task) => local.run_task(&shared, task),
            None => local.idle(&shared),
        }
    }

    shared.monitor.worker_sleeps();
    // Pairs with the fence of a waker that pushed to this worker before it
    // saw the shutdown (`schedule`): either this drain sees its push, or it
    // sees the shutdown and fails the task itself.
    fence(Ordering::SeqCst);
    WORKER.with(|worker| worker.set(ptr::null()));
    me.local.store(ptr::null_mut(), Ordering::Release);
    // Nothing will run what is still queued: fail their join handles.
    while let Some(task) = local
        .busy(|| local.queue.pop())
        .or_else(|| local.pop_ready())
    {
        task.abandon();
    }
    me.abandon_woken();
    me.timers.lock().drain().for_each(drop);
}

impl Local {
    fn shared(&self) -> &Shared {
        // SAFETY: the worker loop holds an `Arc<Shared>`.
        unsafe { &*self.shared }
    }

    fn next_task(&self, shared: &Shared) -> Option<Arc<Task>> {
        let tick = self.tick.get().wrapping_add(1);
        self.tick.set(tick);
        let me = &shared.workers[self.index];
        let active = me.active.load(Ordering::Relaxed);
        if tick.is_multiple_of(MAINTENANCE_INTERVAL) {
            self.poll_reactor(false, None);
            if active {
                if let Some(task) =
                    self.steal_into_queue(|queue| shared.injector.steal_batch_and_pop(queue))
                {
                    return Some(task);
                }
            }
        }
        // `is_empty` is plain loads; `steal` on an empty injector costs a
        // locked fence, and this runs before every coroutine switch.
        if !me.inbox.is_empty() {
            while let Steal::Success(task) = me.inbox.steal() {
                self.enqueue(task);
            }
        }
        if !me.mailbox.is_empty() {
            me.mailbox.take_all().for_each(|task| self.enqueue(task));
        }
        let fairness = tick % MAINTENANCE_INTERVAL == 1;
        let ready = || self.pop_ready();
        // New coroutines before woken ones keeps run order FIFO for
        // coroutines that yield to each other; every interval the ready
        // queue goes first, so a stream of spawns cannot starve it.
        let pop = || self.busy(|| self.queue.pop());
        let local = if fairness {
            ready().or_else(pop)
        } else {
            pop().or_else(ready)
        };
        if !active {
            return local;
        }
        local
            .or_else(|| self.steal_into_queue(|queue| shared.injector.steal_batch_and_pop(queue)))
            .or_else(|| self.steal_from_others(shared))
    }

    /// One task from `steal`, which moves a batch into this worker's queue
    /// and pops one (see [`busy`](Self::busy)).
    fn steal_into_queue(
        &self,
        mut steal: impl FnMut(&Worker<Arc<Task>>) -> Steal<Arc<Task>>,
    ) -> Option<Arc<Task>> {
        self.busy(|| steal_one(|| steal(&self.queue)))
    }

    fn steal_from_others(&self, shared: &Shared) -> Option<Arc<Task>> {
        let n = shared.workers.len();
        (1..n)
            .map(|offset| &shared.workers[(self.index + offset) % n])
            .find_map(|victim| {
                self.steal_into_queue(|queue| victim.stealer.steal_batch_and_pop(queue))
                    .or_else(|| {
                        if shared.config.work_stealing {
                            self.steal_into_queue(|queue| victim.inbox.steal_batch_and_pop(queue))
                        } else {
                            None
                        }
                    })
            })
    }

    fn has_work(&self, shared: &Shared) -> bool {
        let me = &shared.workers[self.index];
        if !self.queue.is_empty()
            || me.ready.len() != 0
            || !me.inbox.is_empty()
            || !me.mailbox.is_empty()
        {
            return true;
        }
        me.active.load(Ordering::Relaxed)
            && (!shared.injector.is_empty()
                || shared.workers.iter().any(|w| {
                    !w.stealer.is_empty() || (shared.config.work_stealing && !w.inbox.is_empty())
                }))
    }

    fn run_task(&self, shared: &Shared, task: Arc<Task>) {
        match task.lifecycle() {
            Lifecycle::New => {
                if !self.start(shared, &task) {
                    return;
                }
            }
            Lifecycle::Started => {
                if task.home.load(Ordering::Relaxed) != self.index {
                    if let Some(block) = task.identity() {
                        block
                            .migrate()
                            .expect("a worker thread can run any coroutine's identity");
                    }
                    task.home.store(self.index, Ordering::Relaxed);
                    shared.counters.migrations.fetch_add(1, Ordering::Relaxed);
                }
            }
            Lifecycle::Done => return,
        }

        // SAFETY: this worker owns the task while it runs it.
        let slot = unsafe { task.generator() };
        let generator = slot.as_mut().expect("a started coroutine has a generator");
        // A parked coroutine's stack and thread block are likely cold: start
        // their misses together, before the switch waits on each in turn.
        // The stack's comes last: its address is read from the generator
        // object (loaded a step ahead for coroutines of the ready queue).
        task.prefetch_resume(self.tp_hot());
        generator.prefetch();
        let me = &shared.workers[self.index];
        me.running.store(task.id.as_u64().get(), Ordering::Relaxed);
        switch::run(&task, generator);
        if super::in_forked_child() {
            super::fork::end_of_child();
        }
        me.running.store(0, Ordering::Relaxed);
        WorkerCounts::add(&me.counts.switches, 1);

        // SAFETY: the coroutine has switched away; this worker owns it.
        match unsafe { task.take_suspend() } {
            Suspend::Yield => self.push(task),
            Suspend::Park { deadline, register } => {
                // SAFETY: `register` lives in the parked coroutine's frame,
                // which stays valid while it is suspended (see `park`).
                let register = unsafe { &mut *register };
                match coroutine::begin_park(&task, register) {
                    None => self.push(task),
                    Some(waker) => {
                        if let Some(deadline) = deadline {
                            me.timers.lock().insert(deadline, waker);
                        }
                    }
                }
            }
            Suspend::Nothing => self.finish(shared, &task),
        }
    }

    /// Gives a new coroutine its stack. Returns false if it could not start.
    fn start(&self, shared: &Shared, task: &Arc<Task>) -> bool {
        let this = TaskPtr(Arc::as_ptr(task));
        let mut stacks = self.stacks.borrow_mut();
        let stack = stacks.get(task.stack_bytes, task.measured, move || {
            let this = this;
            // SAFETY: a task outlives its generator: the registry holds it
            // from its spawn until the generator is done.
            switch::body(unsafe { &*this.0 })
        });
        let generator = stack.and_then(|(generator, identity)| {
            give_identity(shared, &stacks, task, generator, identity)
        });
        drop(stacks);
        match generator {
            Ok(generator) => {
                let (mut generator, address) = coroutine::generator_address(generator);
                let tp = task.identity().map_or(0, |block| block.inner().tp);
                task.set_resume_hint(address, tp);
                generator.set_local_data(Arc::as_ptr(task) as *mut u8);
                task.home.store(self.index, Ordering::Relaxed);
                let counts = &shared.workers[self.index].counts;
                WorkerCounts::add(&counts.stack_taken, task.stack_bytes as u64);
                // SAFETY: as above.
                *unsafe { task.generator() } = Some(generator);
                task.set_lifecycle(Lifecycle::Started);
                true
            }
            Err(error) => {
                for task in shared.stack_waiters.admit(shared, task.clone(), &error) {
                    fail_start(shared, &task, error.to_string());
                }
                false
            }
        }
    }

    /// Retires a coroutine that left without suspending: it returned, or
    /// overflowed its stack.
    fn finish(&self, shared: &Shared, task: &Arc<Task>) {
        // SAFETY: the coroutine has switched away for good.
        let mut generator = unsafe { task.generator() }
            .take()
            .expect("a started coroutine has a generator");
        let failure = generator.get_panic_data();
        // Its thread-local destructors ran as its body ended, or run now
        // (after a stack overflow, when it is dropped), here on the worker.
        // SAFETY: the coroutine has ended.
        let identity = unsafe { task.take_identity() };
        task.set_lifecycle(Lifecycle::Done);
        shared.registry.remove(task.slot.load(Ordering::Relaxed));
        shared.counters.finished.fetch_add(1, Ordering::Relaxed);
        match failure {
            // The stack overflowed: its frames were never unwound, so the
            // stack can neither be re-used nor safely unmapped.
            Some(payload) => {
                drop(identity);
                crate::coroutine::Stacks::leak(generator);
                let overflow = matches!(
                    payload.downcast_ref::<generator::Error>(),
                    Some(generator::Error::StackErr)
                );
                if overflow {
                    let message = overflow_message(task);
                    // As a thread's overflow is reported, whether or not
                    // anyone joins: after the `generator` crate's line.
                    eprintln!("{message}");
                    task.body.fail(Box::new(message));
                } else {
                    task.body.fail(payload);
                }
            }
            None => {
                if task.measured {
                    task.set_stack_used(&generator);
                }
                task.body.deliver();
                self.stacks
                    .borrow_mut()
                    .put(task.stack_bytes, task.measured, generator, identity);
                let counts = &shared.workers[self.index].counts;
                if let Some(waiter) = shared.stack_waiters.freed(counts, task.stack_bytes) {
                    self.push(waiter);
                }
            }
        }
    }

    /// Polls the reactor (blocking until the next timer if `block`) and
    /// fires due timers. Returns whether a notification ended the wait:
    /// another thread queued work.
    fn poll_reactor(&self, block: bool, at_most: Option<core::time::Duration>) -> bool {
        let me = &self.shared().workers[self.index];
        let timeout = if block {
            let next = me.timers.lock().next_timeout(Instant::now());
            match (next, at_most) {
                (Some(next), Some(most)) => Some(next.min(most)),
                (next, most) => next.or(most),
            }
        } else if me.poller.has_registrations() {
            Some(core::time::Duration::ZERO)
        } else {
            None
        };
        let mut notified = false;
        if block || timeout.is_some() {
            let mut events = 0;
            notified = me.poller.wait(timeout, |token, bits| {
                events += 1;
                reactor::dispatch(token, bits);
            });
            WorkerCounts::add(&me.counts.reactor_events, events);
        }
        self.fire_timers();
        notified
    }

    fn fire_timers(&self) {
        self.shared().workers[self.index].fire_timers();
    }

    /// Sleeps in the reactor until work arrives, a timer is due or the
    /// runtime shuts down.
    fn idle(&self, shared: &Shared) {
        // Work from other threads often arrives within microseconds (a
        // join's result, a message from a coroutine on another worker), and
        // a wake-up through the kernel costs ~25 us across cores: look again
        // a few times before going to sleep. The spin cannot see this
        // worker's own descriptors and timers, so where work comes from
        // those (a server's connections) it only burns CPU: each spin that
        // finds nothing halves the next, and a sleep that a notification
        // soon ends restores it.
        let spins = self.idle_spins.get();
        for _ in 0..spins {
            if self.has_work(shared) {
                return;
            }
            core::hint::spin_loop();
        }
        self.idle_spins.set(spins / 2);
        if shared.stack_waiters.any() && self.free_cached_stacks(shared) {
            return;
        }
        let me = &shared.workers[self.index];
        // See `WorkerShared::notified` for why the clear comes first.
        me.notified.store(false, Ordering::SeqCst);
        me.sleeping.store(true, Ordering::SeqCst);
        // Pairs with the fence of whoever queues work: either it sees
        // `sleeping` and notifies, or this check sees its work.
        fence(Ordering::SeqCst);
        if !self.has_work(shared) && !shared.shutdown.load(Ordering::Acquire) {
            shared.monitor.worker_sleeps();
            let slept = coroutine::coarse_now();
            // Coroutines waiting for a stack must not wait on a runtime
            // that will never free one: look again after a while.
            let stalled = shared.stack_waiters.any();
            let asleep = Instant::now();
            if self.poll_reactor(true, stalled.then_some(admission::STALL))
                && asleep.elapsed() < SPIN_WOULD_HAVE_CAUGHT
            {
                self.idle_spins.set(IDLE_SPINS);
            }
            let slept = coroutine::coarse_now().saturating_sub(slept);
            WorkerCounts::add(&me.counts.asleep, slept);
            shared.monitor.worker_wakes();
            if stalled {
                let message = "no running coroutine freed a stack for it (they may all wait \
                               for coroutines that wait for stacks)";
                for task in shared.stack_waiters.fail_if_stalled(shared) {
                    fail_start(shared, &task, message.into());
                }
            }
        } else {
            self.fire_timers();
        }
        me.sleeping.store(false, Ordering::SeqCst);
    }
}

impl Local {
    /// Unmaps the stacks this idle worker caches, for coroutines that wait
    /// for one (see `admission`), and takes as many of them to start here.
    /// Returns whether it took any.
    fn free_cached_stacks(&self, shared: &Shared) -> bool {
        let freed = self.stacks.borrow_mut().clear();
        crate::coroutine::Stacks::trim();
        let mut took = false;
        for _ in 0..freed {
            let Some(waiter) = shared.stack_waiters.next() else {
                break;
            };
            self.push(waiter);
            took = true;
        }
        took
    }
}

/// Ends a coroutine that could not be started, telling its join handle why.
fn fail_start(shared: &Shared, task: &Task, why: String) {
    task.set_lifecycle(Lifecycle::Done);
    shared.registry.remove(task.slot.load(Ordering::Relaxed));
    shared.counters.finished.fetch_add(1, Ordering::Relaxed);
    shared
        .counters
        .failed_to_start
        .fetch_add(1, Ordering::Relaxed);
    task.body.fail(Box::new(why));
}

/// A task pointer for a generator's body, which must be `Send`.
struct TaskPtr(*const Task);

// SAFETY: the pointer is only dereferenced by the coroutine's body, while
// the task is kept alive (see `Local::start`); `Task` is `Sync`.
unsafe impl Send for TaskPtr {}

/// Gives a new coroutine its own thread identity, where the runtime has
/// them, before its first run: the recycled block of its stack's last
/// coroutine, or a new one.
fn give_identity(
    shared: &Shared,
    stacks: &StackPool,
    task: &Task,
    generator: Gen,
    identity: Identity,
) -> io::Result<Gen> {
    let Some(layout) = shared.config.identity else {
        return Ok(generator);
    };
    let block = match identity {
        Identity::Recycled(block) => block.refill().map(|()| block),
        Identity::New { mapping, floor } => ThreadBlock::new(layout, mapping, floor),
    };
    match block {
        Ok(block) => {
            switch::seed_current(&block, task);
            // SAFETY: the coroutine has not run yet; only this worker holds
            // it.
            unsafe { task.set_identity(block) };
            Ok(generator)
        }
        Err(error) => {
            stacks.release(task.stack_bytes, task.measured, generator);
            Err(io::Error::new(
                error.kind(),
                format!("could not give the coroutine its own thread identity: {error}"),
            ))
        }
    }
}

/// Retries a steal until it succeeds or finds nothing.
fn steal_one(mut steal: impl FnMut() -> Steal<Arc<Task>>) -> Option<Arc<Task>> {
    loop {
        match steal() {
            Steal::Success(task) => return Some(task),
            Steal::Empty => return None,
            Steal::Retry => core::hint::spin_loop(),
        }
    }
}

/// What a coroutine whose stack overflowed is told, and how to avoid it.
fn overflow_message(task: &Task) -> String {
    let name = task.name.as_deref().unwrap_or("<unnamed>");
    let size = crate::coroutine::size_text(task.stack_bytes as u64);
    let advice = match task.root {
        true => "give it a larger one with `main_stack_size` (#[coroutines::main(main_stack_size = ...)] \
                 or runtime::Builder::main_stack_size)",
        false => "give it a larger one with Builder::stack_size, or every coroutine one with \
                  `stack_size` (#[coroutines::main(stack_size = ...)] or \
                  runtime::Builder::stack_size)",
    };
    format!(
        "coroutine '{name}' ({}) overflowed its {size} stack; {advice}",
        task.id.as_u64()
    )
}
