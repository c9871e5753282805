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
//! and wakers fence as before; if it is refused later, buckets stop being
//! disarmed from then on.

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

/// Whether [`all_threads`] works in this process: registered at load, and
/// never refused since.
pub(super) fn available() -> bool {
    REGISTERED.load(Ordering::Relaxed)
}

/// Runs a full barrier on every running thread of the process; returns
/// whether it did. Only called when [`available`].
///
/// A registered process's call fails only if the kernel refuses it later:
/// a seccomp filter installed at run time, or no memory for its CPU mask.
/// Then it is never made again (buckets stop disarming), and the caller
/// must make up for the barrier itself (see `wait.rs`).
pub(super) fn all_threads() -> bool {
    let done = call(libc::MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0;
    if !done {
        REGISTERED.store(false, Ordering::Relaxed);
    }
    done
}

fn call(command: c_int) -> isize {
    sys::raw(
        libc::SYS_membarrier as c_long,
        [command as usize, 0, 0, 0, 0, 0],
    )
}
