//! Helpers for the thread identity tests: running a body on a runtime of a
//! given configuration from a plain OS thread under a watchdog, re-running
//! the test binary as a child process, and asking which kernel thread and
//! which worker identity a coroutine runs on.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::thread::{self, ThreadId};
use std::time::Duration;

use coroutines::Runtime;

/// Runs `body` on a fresh OS thread that owns a runtime built by `builder`,
/// and returns its value. `body` gets the runtime, so it can spawn from a
/// plain thread (the coroutines' "spawning thread" is then an OS thread,
/// not the root coroutine of [`super::watchdog`]). A panic is resumed; a
/// body that does not finish within `limit` fails the test instead of
/// hanging it.
#[track_caller]
pub fn on_runtime<T: Send + 'static>(
    builder: coroutines::runtime::Builder,
    limit: Duration,
    body: impl FnOnce(&Runtime) -> T + Send + 'static,
) -> T {
    let what = thread::current().name().unwrap_or("test").to_owned();
    let (done, finished) = mpsc::channel();
    thread::Builder::new()
        .name(format!("owner: {what}"))
        .spawn(move || {
            let runtime = builder.build().unwrap();
            let result = panic::catch_unwind(AssertUnwindSafe(|| body(&runtime)));
            let _ = done.send(result);
            // Dropped after the result is delivered, so a stuck worker
            // cannot turn a failure into a hang.
            drop(runtime);
        })
        .unwrap();
    match finished.recv_timeout(limit) {
        Ok(Ok(value)) => value,
        Ok(Err(payload)) => panic::resume_unwind(payload),
        Err(_) => panic!(
            "watchdog: `{what}` did not finish within {limit:?}: a coroutine was never \
             woken, or a call blocked its worker thread"
        ),
    }
}

/// A builder for a runtime of `workers` workers with thread identity as
/// the process decides (on unless turned off by the environment).
pub fn workers(workers: usize) -> coroutines::runtime::Builder {
    Runtime::builder().workers(workers)
}

/// What glibc reports of the caller's stack, and its thread pointer:
/// `(lowest usable byte, size, guard size, thread pointer)`.
pub fn stack_and_thread_pointer() -> (usize, usize, usize, usize) {
    // SAFETY: pthread_getattr_np on the calling thread's own descriptor,
    // with a local attribute object destroyed after use.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        assert_eq!(libc::pthread_getattr_np(libc::pthread_self(), &mut attr), 0);
        let (mut addr, mut size, mut guard) = (std::ptr::null_mut(), 0, 0);
        assert_eq!(libc::pthread_attr_getstack(&attr, &mut addr, &mut size), 0);
        assert_eq!(libc::pthread_attr_getguardsize(&attr, &mut guard), 0);
        libc::pthread_attr_destroy(&mut attr);
        (addr as usize, size, guard, libc::pthread_self() as usize)
    }
}

/// The kernel thread running the caller: which worker a coroutine is on
/// (`thread::current()` names the coroutine, not the worker).
pub fn os_thread() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// What a signal handler on the caller's kernel thread sees as the current
/// thread: handlers run on the worker's identity, so inside a coroutine
/// this is its worker thread's id and name.
///
/// The handler is installed once per process on `SIGUSR2` (no other test
/// uses it) and the signal is raised on the calling kernel thread, so it is
/// delivered synchronously, when `raise` returns: nothing the handler does
/// (allocating, locking an uncontended mutex) can interrupt the same
/// operation in the caller.
pub fn identity_seen_by_a_signal_handler() -> (ThreadId, Option<String>) {
    static SEEN: Mutex<Option<(ThreadId, Option<String>)>> = Mutex::new(None);
    static INSTALLED: AtomicUsize = AtomicUsize::new(0);
    static CALLS: Mutex<()> = Mutex::new(());

    extern "C" fn handler(_: libc::c_int) {
        let me = thread::current();
        let seen = (me.id(), me.name().map(str::to_owned));
        *SEEN.lock().unwrap_or_else(|e| e.into_inner()) = Some(seen);
    }

    // One caller at a time owns SEEN between the raise and the read.
    let _one = CALLS.lock().unwrap_or_else(|e| e.into_inner());
    if INSTALLED.swap(1, Ordering::SeqCst) == 0 {
        // SIGUSR2 is reserved for this helper.
        super::install_handler(libc::SIGUSR2, handler);
    }
    // SAFETY: raises a signal whose handler is installed above.
    assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0, "raise(SIGUSR2)");
    let seen = SEEN.lock().unwrap_or_else(|e| e.into_inner()).take();
    seen.expect("the SIGUSR2 handler ran before raise returned")
}

/// Joins `handle`, resuming the coroutine's panic (so that a failed
/// assertion inside it fails the test with its own message).
#[track_caller]
pub fn joined<T>(handle: coroutines::JoinHandle<T>) -> T {
    handle
        .join()
        .unwrap_or_else(|payload| panic::resume_unwind(payload))
}

/// What new plain threads and new coroutines of `runtime` (one after the
/// other, 10 rounds) read through a library's `get` (expecting `want`),
/// each writing 7 through its `set` afterwards, as a recycled stack's
/// next coroutine would find it: one line per round that differs.
pub fn compare_thread_locals(runtime: &Runtime, get: usize, set: usize, want: i32) -> Vec<String> {
    let observe = move || {
        // SAFETY: functions of loaded libraries with these signatures.
        unsafe {
            let get: extern "C" fn() -> i32 = std::mem::transmute(get);
            let set: extern "C" fn(i32) = std::mem::transmute(set);
            let seen = get();
            set(7);
            seen
        }
    };
    let mut failures = Vec::new();
    for round in 0..10 {
        let thread = thread::spawn(observe).join().unwrap();
        let coroutine = joined(runtime.spawn(observe));
        if coroutine != thread || thread != want {
            failures.push(format!(
                "round {round}: a new thread sees {thread:#x}, a new coroutine {coroutine:#x} \
                 (want {want:#x})"
            ));
        }
    }
    failures
}

/// Asserts that coroutines of `runtime` have identities of their own: two
/// live coroutines see different `pthread_self`.
pub fn assert_identity_on(runtime: &Runtime) {
    let (tx, rx) = mpsc::channel::<()>();
    let a = runtime.spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() } as usize;
        rx.recv().unwrap();
        me
    });
    // SAFETY: as above.
    let b = joined(runtime.spawn(|| unsafe { libc::pthread_self() } as usize));
    tx.send(()).unwrap();
    let a = joined(a);
    assert_ne!(a, b, "coroutines share pthread_self: identity is off");
}

/// [`compare_thread_locals`] through a test library's `get_marker` and
/// `set_marker` (in the library `handle`), whose marker starts at 0x5eed.
pub fn compare_marker(runtime: &Runtime, handle: *mut libc::c_void) -> Vec<String> {
    let get = super::library::sym(handle, c"get_marker");
    let set = super::library::sym(handle, c"set_marker");
    compare_thread_locals(runtime, get, set, 0x5eed)
}
