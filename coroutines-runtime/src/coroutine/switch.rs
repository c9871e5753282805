//! The switch path: the only code that enters or leaves a coroutine.
//!
//! Entering is [`run`] (called by a worker), leaving is [`suspend`] (called
//! by the coroutine). Anything that must change with the running coroutine
//! (today the `CURRENT` pointer; later its own thread pointer) is switched
//! here and nowhere else.

use core::cell::Cell;
use core::ptr;
use std::sync::Arc;

use super::stack::Gen;
use super::task::{Suspend, Task};
use crate::identity::{self, ThreadBlock};

thread_local! {
    /// The coroutine running on this thread, or null on a plain thread, in
    /// the scheduler, in signal handlers and in [`as_worker_thread`]. A `const` thread-local
    /// without a destructor: reading it is one load, valid before `main`
    /// and inside signal handlers.
    static CURRENT: Cell<*const Task> = const { Cell::new(ptr::null()) };
    /// Signal handlers running on this thread (see `hooks::signal`).
    static HANDLERS: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f`, runtime code that may reach hooked calls, as the worker thread
/// itself: crossbeam's queues back off with `thread::yield_now`, and a
/// queue's resize pins crossbeam's epoch, whose collection runs other
/// crates' deferred drops, which may wait on a lock or a descriptor. Inside,
/// the caller is no coroutine, so every hook passes through as on a plain
/// thread: a coroutine must not switch away while it holds a runtime lock
/// that the worker's next coroutine would spin on, or while it is halfway
/// through its worker's queue, which that coroutine would change under it.
pub(crate) fn as_worker_thread<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(*const Task);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|current| current.set(self.0));
        }
    }
    let current = CURRENT.with(Cell::get);
    if current.is_null() {
        // The scheduler, or a plain thread: one load.
        return f();
    }
    CURRENT.with(|current| current.set(ptr::null()));
    let _restore = Restore(current);
    f()
}

/// Returns whether the caller runs inside a coroutine.
///
/// # Examples
/// ```
/// assert!(!coroutines_runtime::in_coroutine());
/// ```
#[inline]
pub fn in_coroutine() -> bool {
    !CURRENT.with(Cell::get).is_null()
}

/// Whether the caller runs in a coroutine whose switching away is invisible
/// to the worker's other coroutines: in a coroutine, unless a panic is in
/// flight there and it shares its worker's thread identity.
///
/// std keeps its panic count per thread (per coroutine with identities). A
/// coroutine that switched away while panicking would leave the count
/// raised for the other coroutines of its worker: the next one to panic
/// would abort the process ("panicked while processing panic"), and
/// `thread::panicking()` would tell them all they are panicking (poisoning
/// the locks they release). The budget's yield, which is optional, is then
/// skipped; waits on futexes and threads (std's panic machinery takes the
/// stderr lock) block the worker instead. Descriptor waits still park:
/// blocking the worker there would hang for good if the data is to come
/// from a coroutine parked on the same worker.
#[inline]
pub(crate) fn may_switch() -> bool {
    in_coroutine() && (identity::in_private_identity() || !std::thread::panicking())
}

/// The running coroutine's task. The reference is valid while the coroutine
/// runs: its worker holds an `Arc` to it across the switch.
#[inline]
pub(crate) fn current() -> Option<&'static Task> {
    let task = CURRENT.with(Cell::get);
    // SAFETY: non-null only between `run`'s enter and leave, while `run`'s
    // caller keeps the task alive.
    unsafe { task.as_ref() }
}

/// Address of `CURRENT` in the calling thread's TLS.
pub(crate) fn current_addr() -> usize {
    CURRENT.with(|current| current.as_ptr() as usize)
}

/// Runs `task` on this thread until it suspends or finishes.
pub(crate) fn run(task: &Arc<Task>, generator: &mut Gen) {
    CURRENT.with(|current| current.set(Arc::as_ptr(task)));
    generator.resume();
    CURRENT.with(|current| current.set(ptr::null()));
    // A handler that never returned (the stack overflow handler of the
    // `generator` crate leaves through a yield) ended with the coroutine.
    HANDLERS.with(|handlers| handlers.set(0));
}

/// Runs a signal handler outside the coroutine it interrupted: its hooked
/// calls block like a thread's instead of parking inside the handler.
pub(crate) fn in_handler<R>(handler: impl FnOnce() -> R) -> R {
    let interrupted = CURRENT.with(|current| current.replace(ptr::null()));
    HANDLERS.with(|handlers| handlers.set(handlers.get() + 1));
    let result = handler();
    HANDLERS.with(|handlers| handlers.set(handlers.get().saturating_sub(1)));
    CURRENT.with(|current| current.set(interrupted));
    result
}

/// Whether a signal handler runs on this thread, so that nothing may wait
/// for a lock or schedule a coroutine.
pub(crate) fn in_signal_handler() -> bool {
    HANDLERS.with(Cell::get) != 0
}

/// In a forked child: the forking coroutine goes on as the child's one
/// plain thread. Not inlined: callers switch thread pointers around it.
#[inline(never)]
pub(crate) fn forget_current() {
    CURRENT.with(|current| current.set(ptr::null()));
}

/// Hooked calls a coroutine may make without switching before it yields to
/// the others on its worker (tokio's cooperative budget is 128 too).
const BUDGET: u32 = 128;

/// Counts a hooked call of the running coroutine, and yields first if it
/// has made [`BUDGET`] since it last switched. Calls that never block (an
/// accept loop under a burst of connections, a reader whose data never runs
/// out) would otherwise keep the worker, and the coroutines queued behind
/// them, until the blocked-worker monitor moves those away.
#[inline]
pub(crate) fn spend_budget() {
    let Some(task) = current() else { return };
    let calls = task.calls.get() + 1;
    if calls < BUDGET {
        task.calls.set(calls);
        return;
    }
    if !may_switch() {
        return;
    }
    suspend(task, Suspend::Yield);
}

/// Leaves the current coroutine; its worker carries out `action`. The
/// caller's `errno` is kept: a coroutine with its own identity has its
/// own, and one that shares its worker's gets it back as it was.
pub(crate) fn suspend(task: &Task, action: Suspend) {
    task.calls.set(0);
    // SAFETY: we are the running coroutine, about to switch away.
    unsafe { task.set_suspend(action) };
    match task.identity() {
        // SAFETY: the running coroutine of this block.
        Some(block) => unsafe { identity::switch_out(block) },
        None => {
            // The worker's other coroutines run meanwhile, on its `errno`.
            let errno = crate::sys::errno();
            generator::co_yield_with(());
            crate::sys::set_errno(errno);
        }
    }
}

/// What a coroutine's generator runs: its body, in its own identity if it
/// has one (whose thread ends with it). The worker delivers the outcome
/// once the generator is done.
pub(crate) fn body(task: &Task) {
    let Some(block) = task.identity() else {
        task.body.run();
        return;
    };
    let mut run = || task.body.run();
    // SAFETY: the generator body of the coroutine that owns `block`, which
    // outlives the run.
    if let Err(payload) = unsafe { identity::run_body(block, &mut run) } {
        std::panic::resume_unwind(payload);
    }
}

/// Gives `block`, the identity of `task`'s coroutine, its `CURRENT`, on the
/// worker before the first run.
pub(crate) fn seed_current(block: &ThreadBlock, task: &Task) {
    let here = CURRENT.with(|current| current.as_ptr());
    // SAFETY: the copy's instance of this thread's `CURRENT`, in a block
    // that nothing runs on now.
    unsafe { *block.local_ptr(here) = task as *const Task };
}

/// Clears the `CURRENT` of `block`, whose coroutine has ended.
pub(crate) fn unseed_current(block: &ThreadBlock) {
    let here = CURRENT.with(|current| current.as_ptr());
    // SAFETY: as in `seed_current`.
    unsafe { *block.local_ptr(here) = ptr::null() };
}

/// Cooperatively gives up the processor to other coroutines on this worker.
///
/// Outside a coroutine it yields the OS thread, like
/// [`std::thread::yield_now`].
///
/// # Examples
/// ```
/// coroutines_runtime::yield_now();
/// ```
pub fn yield_now() {
    match current() {
        Some(task) => suspend(task, Suspend::Yield),
        None => crate::sys::sched_yield(),
    }
}
