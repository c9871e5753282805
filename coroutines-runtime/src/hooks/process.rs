//! Child processes: `fork`.

use libc::pid_t;

use crate::identity;

unsafe extern "C" {
    /// glibc's `fork`, under its exported alias: runs the atfork handlers
    /// (the runtime's among them, see `scheduler::fork`).
    fn __fork() -> pid_t;
}

/// Hooked: a coroutine with its own thread identity forks on its worker's
/// identity, which glibc knows (see `identity::fork_on_worker`).
///
/// # Safety
/// As `fork(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork() -> pid_t {
    // SAFETY: glibc's fork, called as the caller called it.
    identity::fork_on_worker(&mut || unsafe { __fork() })
}
