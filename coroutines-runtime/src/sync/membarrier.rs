//! The heavy side of an asymmetric fence: `membarrier(2)`.
//!
//! Two threads that each store and then load what the other stored need a
//! full fence each between the two, or both can miss the other. Where one
//! side runs all the time and the other rarely, the rare side can pay for
//! both: `MEMBARRIER_CMD_PRIVATE_EXPEDITED` returns only after every
//! running thread of the process has executed a full barrier (a thread
//! that is not running is past one already). So a frequent side that read
//! the rare side's flag as clear, with only a compiler fence after its own
//! store, read it before that barrier on its CPU, and its store is visible
//! to the rare side once the call returns.
//!
//! Two users:
//! - futex wakes (`futex/bucket.rs`): a waker stores to the futex word and
//!   then looks for parked coroutines; a waiter counts itself in and then
//!   reads the word. Every private `FUTEX_WAKE` of the process passes
//!   through the hook, most with no coroutine to find, so the first waiter
//!   of a bucket pays;
//! - a worker's ready queue (`scheduler/ready.rs`), which the worker
//!   touches on every switch and the blocked-worker monitor seizes.
//!
//! The command needs a registration per process, which is cheap while the
//! process has one thread and takes milliseconds (an RCU grace period)
//! once it has more. It is made from a constructor, before `main`. Where
//! the kernel lacks the command or refuses it (seccomp), futex buckets stay
//! armed and wakers fence as before, and the monitor leaves ready queues
//! alone; if it is refused later, the same holds from then on.

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
pub(crate) fn available() -> bool {
    REGISTERED.load(Ordering::Relaxed)
}

/// Runs a full barrier on every running thread of the process; returns
/// whether it did. Only called when [`available`].
///
/// A registered process's call fails only if the kernel refuses it later:
/// a seccomp filter installed at run time, or no memory for its CPU mask.
/// Then it is never made again (buckets stop disarming), and the caller
/// must make up for the barrier itself (see `futex/wait.rs`).
pub(crate) fn all_threads() -> bool {
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
