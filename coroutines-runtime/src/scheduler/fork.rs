//! `fork()` in a process with a running runtime.
//!
//! A forked child has one thread: a copy of the one that forked. Nothing
//! of the runtime runs there (its workers were not copied), and its state
//! (queues, the wait tables, the workers' epoll instances, which the child
//! shares with the parent) belongs to the parent. So the child gives it all
//! up: the forking coroutine, if any, goes on as a plain thread, every hook
//! behaves exactly as libc, spawning fails with an error, and a coroutine
//! body that returns in the child ends the child, as a thread that returns
//! ends a process whose last thread it is. What a child may use before it
//! calls `exec` is what POSIX allows after `fork` in a multi-threaded
//! process: async-signal-safe calls. `std::process::Command` (fork and
//! exec, or posix_spawn) works as ever.

use core::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use crate::coroutine::switch;

/// Set in a child forked from a process that had started a runtime.
static FORKED: AtomicBool = AtomicBool::new(false);

/// Whether this process is a child forked from one with a runtime.
#[inline]
pub(crate) fn in_forked_child() -> bool {
    FORKED.load(Ordering::Relaxed)
}

/// Makes every later `fork` give the child up as the module docs say.
pub(crate) fn watch_forks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a handler without preconditions; it runs in
        // the child, which has one thread, right after the fork.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
}

extern "C" fn in_child() {
    FORKED.store(true, Ordering::Relaxed);
    switch::forget_current();
}

/// A coroutine body returned in a forked child (the worker's loop got it
/// back): the child's last thread has ended.
pub(crate) fn end_of_child() -> ! {
    // SAFETY: exit runs the process's exit handlers, as the last thread's
    // return does.
    unsafe { libc::exit(0) }
}
