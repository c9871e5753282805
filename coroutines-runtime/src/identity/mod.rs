//! Thread identity: each coroutine its own thread pointer.
//!
//! std and libc tell threads apart by their thread pointer (`fs_base` on
//! x86-64): `thread::current()`, the mpsc waker's thread id, the parker,
//! `thread_local!` values, `errno`, the stdout lock's owner and the panic
//! count all live in the thread's static TLS or glibc's thread descriptor.
//! So each coroutine gets a copy of both ([`ThreadBlock`]), made at its
//! first run, and runs with `fs_base` pointing at it: to std and libc it is
//! a thread of its own, with its own `ThreadId`, parker, thread-locals
//! (destroyed when it ends), `errno`, lock ownership and panic count.
//!
//! # Where the thread pointer changes
//!
//! Only on the coroutine's side of the `generator` switch, so that the
//! generator crate's own code, which keeps its context stack in the
//! *worker's* thread-locals, always runs on the worker's thread pointer:
//!
//! ```text
//! worker (fs = worker)        coroutine stack
//! gen.resume() ─────────────▶ [first run]  run_body: enter(block) ─ body ...
//!                             [suspend]    switch_out: leave(block)
//!              ◀───────────── co_yield_with (reads worker TLS)
//! gen.resume() ─────────────▶ co_yield_with returns; enter(block) ─ body ...
//!                             [end]        thread exit (TLS destructors,
//!                                          block active); leave(block)
//!              ◀───────────── generator finishes (reads worker TLS)
//! ```
//!
//! A function that switches the thread pointer must not itself touch a
//! thread-local: LLVM assumes the thread pointer is constant within a
//! function and may reuse a TLS address computed before the switch.
//! [`run_body`], [`switch_out`] and [`on_worker`] are written that way.
//! Signal handlers run on the worker's thread pointer (`hooks::signal`).
//!
//! # Start-up
//!
//! [`layout`] verifies every assumption once per process
//! (`glibc::discover`), then runs a self-test: two coroutines on one
//! worker of a runtime of its own must see distinct thread ids and errno
//! values and pass a message over `sync_channel(0)`. On any failure the
//! process keeps shared identity and says so once on stderr. Setting
//! `COROUTINES_THREAD_IDENTITY=off` turns it off quietly.

mod block;
mod glibc;
mod selftest;

use core::cell::Cell;
use core::ptr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::OnceLock;

pub(crate) use block::{trim_areas, StackBounds, ThreadBlock};
pub(crate) use glibc::Layout;

/// The environment variable that turns thread identity off (`off` or `0`).
/// `force-failure` makes start-up fail verification, to test the fallback.
pub const THREAD_IDENTITY_ENV: &str = "COROUTINES_THREAD_IDENTITY";

thread_local! {
    /// The block whose copy this is: null in every real thread's own TLS,
    /// set in each copy by `ThreadBlock::new`. A `const` thread-local
    /// without destructor: one `%fs`-relative load, valid in signal
    /// handlers.
    static CURRENT_BLOCK: Cell<*const block::Inner> = const { Cell::new(ptr::null()) };
}

/// The active block, if the caller runs on a coroutine's copy.
#[inline(always)]
pub(crate) fn current_block() -> *const block::Inner {
    CURRENT_BLOCK.with(Cell::get)
}

/// Address of `CURRENT_BLOCK` in the calling thread's TLS.
fn current_block_addr() -> usize {
    CURRENT_BLOCK.with(|c| c as *const Cell<_> as usize)
}

/// A thread-exit destructor, as `__cxa_thread_atexit_impl` takes it.
pub(crate) type Destructor = unsafe extern "C" fn(*mut core::ffi::c_void);

/// Records a thread-local destructor for the coroutine whose identity is
/// active, to run when it ends; false outside one.
#[cfg(not(target_feature = "crt-static"))]
pub(crate) fn defer_destructor(func: Destructor, obj: *mut core::ffi::c_void) -> bool {
    let block = current_block();
    if block.is_null() {
        return false;
    }
    // SAFETY: a non-null block is live while its coroutine runs, and only
    // the coroutine itself (running now) touches its destructor list.
    unsafe { (*block).push_dtor(func, obj) };
    true
}

/// Whether the caller runs with a coroutine's own identity.
#[inline]
pub(crate) fn in_private_identity() -> bool {
    !current_block().is_null()
}

/// The thread pointer instructions, for this module. Only used once
/// `glibc::discover` has verified FSGSBASE.
pub(crate) mod fs {
    /// The calling thread's thread pointer.
    #[inline(always)]
    pub(crate) fn base() -> usize {
        // SAFETY: FSGSBASE is verified before anything here runs.
        unsafe { crate::sys::thread_pointer() }
    }

    /// Switches the thread pointer.
    ///
    /// # Safety
    /// `value` is a complete thread area (a worker's, or a live block's).
    #[inline(always)]
    pub(crate) unsafe fn set(value: usize) {
        // SAFETY: per the caller's contract.
        unsafe { crate::sys::set_thread_pointer(value) }
    }
}

/// Switches the calling thread to `block`'s identity.
///
/// # Safety
/// On the coroutine's own stack, right after the generator switched in, on
/// the worker `block` targets.
#[inline(always)]
unsafe fn enter(block: &ThreadBlock) {
    // SAFETY: per the caller's contract the block is live and complete.
    unsafe { fs::set(block.inner().tp) }
}

/// Switches the calling thread back to the worker's identity.
///
/// # Safety
/// Right before the coroutine switches out, while `block` is active.
#[inline(always)]
unsafe fn leave(block: &ThreadBlock) {
    // SAFETY: home is the live worker this coroutine runs on.
    unsafe { fs::set(block.inner().home()) }
}

/// Runs a coroutine body with `block` as its identity: the first entry, the
/// body, thread exit (TLS and key destructors, with the block active), and
/// the final exit. Call it as the whole body of the generator; re-raise a
/// panic it returns outside it.
///
/// # Safety
/// `block` outlives the generator's run and targets the worker that
/// resumes the generator.
#[inline(never)]
pub(crate) unsafe fn run_body(block: &ThreadBlock, f: &mut dyn FnMut()) -> std::thread::Result<()> {
    // SAFETY: first entry on the coroutine stack, fs = worker.
    unsafe { enter(block) };
    // A panic is caught on the copy, counted in its own panic count.
    let result = catching(f);
    block.thread_exit();
    // SAFETY: final exit; what follows is generator code reading worker TLS.
    unsafe { leave(block) };
    result
}

/// `catch_unwind`, in a function of its own: the thread-locals it touches
/// are looked up after the caller's switch.
#[inline(never)]
fn catching(f: &mut dyn FnMut()) -> std::thread::Result<()> {
    panic::catch_unwind(AssertUnwindSafe(f))
}

/// Suspends the running coroutine (`co_yield_with(())`) around a switch to
/// the worker's identity and back. The runtime never drops a started
/// generator (which would unwind it from inside this call, on the worker's
/// identity): it leaks it, or finishes it with its own cancellation.
///
/// # Safety
/// Only inside the coroutine whose body runs in [`run_body`] with `block`.
#[inline(never)]
pub(crate) unsafe fn switch_out(block: &ThreadBlock) {
    // SAFETY: the coroutine is about to switch out.
    unsafe { leave(block) };
    yield_to_worker();
    // SAFETY: resumed on the (possibly new) worker the block targets.
    unsafe { enter(block) };
}

/// The generator switch, in a function of its own: it reads the worker's
/// thread-locals, which must be looked up after the caller's switch.
#[inline(never)]
fn yield_to_worker() {
    generator::co_yield_with(());
}

/// Runs `f` on the worker's identity if the caller runs on a coroutine's
/// copy (a signal handler that interrupted it), else as is.
#[inline(never)]
pub(crate) fn on_worker(f: &mut dyn FnMut()) {
    let block = current_block();
    if block.is_null() {
        f();
        return;
    }
    // SAFETY: a non-null block is live while its coroutine runs, and its
    // home is the live worker running it; `f` is called through a pointer,
    // so the thread-locals it touches are looked up after the switch.
    unsafe {
        let copy = fs::base();
        fs::set((*block).home());
        f();
        fs::set(copy);
    }
}

/// Makes `fork` on the worker's identity, which glibc knows (its child
/// handling rebuilds its thread list around the caller's descriptor). The
/// parent goes back to the coroutine's identity; so does the child, once
/// the copy names the child's kernel thread: it goes on as the coroutine's
/// thread, the child's only one, outside any runtime (`scheduler::fork`).
#[inline(never)]
pub(crate) fn fork_on_worker(fork: &mut dyn FnMut() -> libc::pid_t) -> libc::pid_t {
    let block = current_block();
    if block.is_null() {
        return fork();
    }
    // SAFETY: as in `on_worker`; in the child, the copy (memory the child
    // inherited) is made to name the child's thread before it is entered.
    unsafe {
        let copy = fs::base();
        fs::set((*block).home());
        let pid = fork();
        // A failed fork set the worker's errno: the caller's is the copy's.
        let error = crate::sys::errno();
        if pid == 0 {
            (*block).adopt_thread_id();
        }
        fs::set(copy);
        if pid < 0 {
            crate::sys::set_errno(error);
        }
        if pid == 0 {
            // The child's atfork handler ran on the worker's identity.
            crate::coroutine::switch::forget_current();
        }
        pid
    }
}

/// The outcome of start-up verification.
#[derive(Debug)]
enum Mode {
    /// Verified: coroutines get their own identity.
    On(&'static Layout),
    /// Shared identity, and why.
    Off,
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// The verified layout if coroutines may have their own identity in this
/// process; verifies and self-tests on the first call. On failure, says
/// once on stderr what failed and what will not work.
pub(crate) fn layout() -> Option<&'static Layout> {
    if cfg!(target_feature = "crt-static") {
        // No loader to ask for glibc's private symbols.
        return None;
    }
    let mode = MODE.get_or_init(|| {
        let setting = std::env::var(THREAD_IDENTITY_ENV).unwrap_or_default();
        if matches!(setting.as_str(), "off" | "0") {
            return Mode::Off;
        }
        match decide(setting == "force-failure") {
            Ok(layout) => Mode::On(layout),
            Err(why) => {
                eprintln!(
                    "coroutines: thread identity is off ({why}); coroutines share their \
                     worker's thread identity, so std::sync::mpsc and thread::park between \
                     coroutines of one worker, thread_local! values, errno and the stdout lock \
                     are shared per worker, and writes to stdout/stderr block the worker"
                );
                Mode::Off
            }
        }
    });
    match mode {
        Mode::On(layout) => Some(layout),
        Mode::Off => None,
    }
}

fn decide(force_failure: bool) -> Result<&'static Layout, String> {
    if force_failure {
        return Err(format!("{THREAD_IDENTITY_ENV}=force-failure"));
    }
    let layout = glibc::discover().map_err(|failure| failure.0)?;
    crate::hooks::verify_identity_hooks()?;
    let layout: &'static Layout = Box::leak(Box::new(layout));
    selftest::run(layout).map_err(|why| format!("self-test failed: {why}"))?;
    Ok(layout)
}
