//! The hook layer: `#[no_mangle]` definitions of the libc functions that
//! libstd calls to block, so that a blocking call made inside a coroutine
//! parks the coroutine instead of its worker, with the result the call
//! gives a thread.
//!
//! Every hook has the same shape: outside a coroutine (one thread-local
//! load) it makes the system call exactly as libc would; inside one it goes
//! through [`driver::blocking_io`], which tries the call without blocking
//! and, if it would block, waits in the reactor before trying again, until
//! the call is complete as the blocking call would complete it; the calls
//! that move bytes through a pipe between two descriptors (`splice`,
//! `tee`, and `vmsplice`) go through its counterpart [`relay::relay_io`].
//! What the
//! driver needs to know of a descriptor (its kind, the user's settings, the
//! runtime's holds) comes from [`descriptor`]. The real operations are raw
//! system calls: no loader lookups, no recursion, and they work in static
//! builds. Signal handlers run outside coroutines ([`signal`]), and a
//! forked child gives the runtime up (`scheduler::fork`). The one family of
//! another shape is [`memory`]: `mmap`, `mprotect` and `munmap` are the
//! kernel's except when the runtime, outside any coroutine, creates or drops
//! a stack, whose calls the stack arena answers; `mlockall` and
//! `munlockall` are the kernel's, and the arena follows them.
//!
//! Known limits: writes to stdout and stderr block the worker in coroutines
//! that share their worker's thread identity (std's stdout lock is
//! re-entrant per thread, so parking inside it would let another coroutine
//! on the same worker into it); descriptors closed by
//! paths the hooks do not see (e.g. `fclose`) keep their record until the
//! number is created again through a hook.

mod descriptor;
mod driver;
mod epoll;
mod fd;
mod fortify;
mod futex;
#[cfg(not(target_feature = "crt-static"))]
mod glibc_signals;
mod io;
mod iov;
mod lock;
mod memory;
#[cfg(not(target_feature = "crt-static"))]
mod on_helper;
mod poll;
mod process;
mod relay;
#[cfg(not(target_feature = "crt-static"))]
mod resolve;
#[cfg(not(target_feature = "crt-static"))]
mod semaphore;
mod signal;
mod socket;
mod splice;
mod thread;
#[cfg(not(target_feature = "crt-static"))]
mod thread_exit;
mod time;
mod timespec;

pub(crate) use descriptor::Facts;
pub(crate) use process::release_runtime as release_child_waits;

/// Checks that the hooks thread identity relies on are in effect; the
/// `identity` module calls it at start-up.
pub(crate) fn verify_identity_hooks() -> Result<(), String> {
    #[cfg(target_feature = "crt-static")]
    return Err("thread identity needs a dynamically linked program".into());
    #[cfg(not(target_feature = "crt-static"))]
    {
        thread_exit::verify()?;
        // The `generator` crate installs its stack-overflow handler with
        // the first generator.
        drop(generator::Gn::<()>::new_opt(2048, || {}));
        glibc_signals::verify_fault_handlers()?;
        glibc_signals::wrap_glibc_signals()
    }
}
