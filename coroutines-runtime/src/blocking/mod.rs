//! Calls that cannot become a reactor wait (a name lookup inside libc,
//! joining a thread, a C library's blocking call, long computations) run
//! on a runtime's pool of helper threads while the calling coroutine parks.

mod pool;

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

pub(crate) use pool::{Pool, DEFAULT_BLOCKING_THREADS};

use crate::coroutine::switch;
use crate::sync::{Latch, SpinLock};

/// Runs `f` on a helper thread of the running coroutine's runtime and
/// parks the coroutine until it returns; outside coroutines, runs it in
/// place. A panic of `f` is resumed in the caller.
///
/// `f` may borrow from the caller: the caller does not return before `f`
/// has finished.
pub fn run<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let Some(task) = switch::current() else {
        return f();
    };
    let pool = task.shared.blocking.clone();
    let outcome = Arc::new(Outcome::default());
    let job: Box<dyn FnOnce() + Send + '_> = {
        let outcome = outcome.clone();
        Box::new(move || {
            let result = panic::catch_unwind(AssertUnwindSafe(f));
            *outcome.value.lock() = Some(result);
            outcome.done.set();
        })
    };
    // SAFETY: only the lifetime is erased. The job runs before `wait`
    // below returns; a coroutine abandoned meanwhile (its runtime shut
    // down) never has its stack freed or unwound, so what the job borrows
    // stays valid until it has run.
    let job: pool::Job = unsafe { core::mem::transmute(job) };
    pool.submit(job);
    outcome.done.wait_for(crate::coroutine::Wait::Pool);
    let result = outcome.value.lock().take();
    match result.expect("the job set its result before the latch") {
        Ok(value) => value,
        Err(payload) => panic::resume_unwind(payload),
    }
}

/// As [`run`], for a call that is not `Send` (it holds the caller's raw
/// buffers): the calling coroutine is parked, touching nothing, until the
/// helper has run it.
pub(crate) fn run_borrowed<T: Send>(f: impl FnOnce() -> T) -> T {
    struct Parked<F>(F);
    // SAFETY: the caller waits, parked, while the helper thread runs the
    // closure; nothing it uses is touched from two threads at once.
    unsafe impl<F> Send for Parked<F> {}
    let parked = Parked(f);
    run(move || {
        let parked = parked;
        (parked.0)()
    })
}

/// Where a job's result waits for its caller.
struct Outcome<T> {
    value: SpinLock<Option<std::thread::Result<T>>>,
    done: Latch,
}

impl<T> Default for Outcome<T> {
    fn default() -> Self {
        Outcome {
            value: SpinLock::new(None),
            done: Latch::new(),
        }
    }
}
