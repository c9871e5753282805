//! The heavy side of an asymmetric fence: `membarrier(2)`.
//!
//! A waker stores to the futex word and then looks for parked coroutines;
//! a waiter counts itself in and then reads the word. Each side needs a
//! full fence between its store and its load, or both can miss the other
//! (`bucket.rs`). Wakes are far more common than first waiters: every
//! private `FUTEX_WAKE` of the process passes through the hook, most with
//! no coroutine to find. `MEMBARRIER_CMD_PRIVATE_EXPEDITED` lets the rare
//! side pay for both: it returns only after every running thread of the
//! process has executed a full barrier (a thread that is not running is
//! past one already). So a waker that reads a bucket's `armed` flag as
//! false, with only a compiler fence after its store, read it before that
//! barrier on its CPU, and its store is visible to the waiter once the
//! call returns.
//!
//! The command needs a registration per process, which is cheap while the
//! process has one thread and takes milliseconds (an RCU grace period)
//! once it has more. It is made from a constructor, before `main`. Where
//! the kernel lacks the command or refuses it (seccomp), buckets stay armed
//! and wakers fence as before.

use core::sync::atomic::{AtomicBool, Ordering};

use libc::{c_int, c_long};

use crate::sys;

static REGISTERED: AtomicBool = AtomicBool::new(false);

/// Registers the process for the expedited command at load time, while it
/// is most likely single-threaded.
#[used]
#[unsafe(link_section = ".init_array")]
static REGISTER_AT_LOAD: extern "C" fn() = register;

extern "C" fn register() {
    let supported = call(libc::MEMBARRIER_CMD_QUERY);
    let expedited = libc::MEMBARRIER_CMD_PRIVATE_EXPEDITED as isize;
    if supported >= 0
        && supported & expedited != 0
        && call(libc::MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0
    {
        REGISTERED.store(true, Ordering::Relaxed);
    }
}

/// Whether [`all_threads`] works in this process. Never changes after the
/// constructor ran.
pub(super) fn available() -> bool {
    REGISTERED.load(Ordering::Relaxed)
}

/// Runs a full barrier on every running thread of the process. Only called
/// when [`available`].
///
/// The kernel fails a registered process's call only for an unknown
/// command or flags, which this is not; if it failed anyway, a waker could
/// miss the caller, so the process stops rather than lose a wake-up.
pub(super) fn all_threads() {
    if call(libc::MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0 {
        let _ = sys::write_all(
            2,
            b"coroutines: membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) failed\n",
        );
        std::process::abort();
    }
}

fn call(command: c_int) -> isize {
    sys::raw(
        libc::SYS_membarrier as c_long,
        [command as usize, 0, 0, 0, 0, 0],
    )
}
