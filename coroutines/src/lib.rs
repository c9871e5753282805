//! Make ordinary blocking Rust code massively concurrent.
//!
//! `coroutines` runs closures as stackful coroutines on a small pool of
//! worker threads, with the API of [`std::thread`]: replace
//! `std::thread::spawn` with [`coroutines::spawn`](spawn) and keep writing
//! blocking code.
//!
//! ```
//! let handles: Vec<_> = (0..1000u64)
//!     .map(|i| coroutines::spawn(move || i * 2))
//!     .collect();
//! let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
//! assert_eq!(sum, 999_000);
//! ```
//!
//! A program usually starts its runtime with [`#[coroutines::main]`](main),
//! which runs `main`'s body in the root coroutine; without it, the first
//! spawn from a plain thread starts a process-wide runtime with the default
//! configuration. Independent runtimes are built with [`Runtime::builder`].
//!
#![doc = include_str!("../docs/troubleshooting.md")]

mod builder;
mod coroutine;
mod join;
pub mod runtime;
mod scope;

pub use builder::Builder;
pub use coroutine::{current, try_current, Coroutine};
pub use coroutines_macros::{main, test};
pub use coroutines_runtime::{
    CoroutineDump, CoroutineId, CoroutineState, Dump, Stats, Wait, Waiting, WorkerStats,
};
pub use join::JoinHandle;
pub use runtime::Runtime;
pub use scope::{scope, Scope, ScopedJoinHandle};

/// Spawns a new coroutine, returning a [`JoinHandle`] for it.
///
/// Inside a coroutine the new one joins the caller's runtime; elsewhere it
/// goes to the process-wide runtime, which starts on first use. The join
/// handle detaches the coroutine when dropped, as with threads.
///
/// # Panics
/// If the process-wide runtime cannot start, or the runtime has shut down;
/// use [`Builder::spawn`] to handle such errors.
///
/// # Examples
/// ```
/// let handle = coroutines::spawn(|| "hello from a coroutine");
/// assert_eq!(handle.join().unwrap(), "hello from a coroutine");
/// ```
#[track_caller]
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match Builder::new().spawn(f) {
        Ok(handle) => handle,
        Err(error) => panic!("failed to spawn coroutine: {error}"),
    }
}

/// Runs `f` on a helper thread of the runtime's blocking pool, returning a
/// [`JoinHandle`] for its result.
///
/// For code the runtime cannot see waiting: long computations, and
/// blocking calls of C libraries that bypass the libc functions the
/// runtime hooks. While `f` runs, the workers go on running coroutines.
/// The handle can be joined from coroutines (which park) and threads
/// (which block); a panic of `f` is returned by [`JoinHandle::join`].
///
/// # Panics
/// As [`spawn`].
///
/// # Examples
/// ```
/// let handle = coroutines::spawn_blocking(|| (1..=20u64).product::<u64>());
/// assert_eq!(handle.join().unwrap(), 2_432_902_008_176_640_000);
/// ```
pub fn spawn_blocking<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    spawn(move || coroutines_runtime::blocking::run(f))
}

/// Cooperatively gives up the worker to other coroutines.
///
/// The caller goes to the back of its worker's run queue. Outside a
/// coroutine this yields the OS thread, like [`std::thread::yield_now`].
///
/// # Examples
/// ```
/// let handle = coroutines::spawn(|| {
///     for _ in 0..3 {
///         coroutines::yield_now();
///     }
/// });
/// handle.join().unwrap();
/// ```
pub fn yield_now() {
    coroutines_runtime::yield_now();
}

/// Returns whether the caller runs inside a coroutine.
///
/// # Examples
/// ```
/// assert!(!coroutines::in_coroutine());
/// assert!(coroutines::spawn(coroutines::in_coroutine).join().unwrap());
/// ```
pub fn in_coroutine() -> bool {
    coroutines_runtime::in_coroutine()
}

/// Returns the counters of the caller's runtime: the coroutine's runtime
/// inside a coroutine, else the process-wide one (all zero if it has not
/// started).
///
/// # Examples
/// ```
/// coroutines::spawn(|| ()).join().unwrap();
/// assert!(coroutines::stats().spawned >= 1);
/// ```
pub fn stats() -> Stats {
    coroutines_runtime::current_stats()
        .or_else(|| coroutines_runtime::started_default_runtime().map(|rt| rt.stats()))
        .unwrap_or_default()
}

/// Returns a snapshot of each worker of the caller's runtime (see
/// [`Runtime::worker_stats`]): the coroutine's runtime inside a coroutine,
/// else the process-wide one (empty if it has not started).
///
/// # Examples
/// ```
/// let workers = coroutines::spawn(coroutines::worker_stats).join().unwrap();
/// assert_eq!(workers.len(), coroutines::stats().workers);
/// // The coroutine that asked was running on one of them.
/// assert_eq!(workers.iter().filter(|w| w.running.is_some()).count(), 1);
/// ```
pub fn worker_stats() -> Vec<WorkerStats> {
    coroutines_runtime::current_worker_stats()
        .or_else(|| coroutines_runtime::started_default_runtime().map(|rt| rt.worker_stats()))
        .unwrap_or_default()
}

/// Returns every live coroutine of the caller's runtime and where it is:
/// running, runnable, or parked (and on what, for how long). The
/// coroutine's runtime inside a coroutine, else the process-wide one
/// (empty if it has not started). Print it to see a stuck program's
/// state; setting `COROUTINES_DUMP_SIGNAL=USR1` prints it on `kill -USR1`.
///
/// # Examples
/// ```
/// let runtime = coroutines::Runtime::builder().workers(1).build().unwrap();
/// let dump = runtime.block_on(|| {
///     let sleeper = coroutines::Builder::new()
///         .name("sleeper".into())
///         .spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)))
///         .unwrap();
///     std::thread::sleep(std::time::Duration::from_millis(20));
///     let dump = coroutines::dump();
///     sleeper.join().unwrap();
///     dump
/// });
/// let text = dump.to_string();
/// assert!(text.contains("'sleeper' on worker 0: parked"), "{text}");
/// assert!(text.contains("sleeping"), "{text}");
/// ```
pub fn dump() -> Dump {
    coroutines_runtime::current_dump()
        .or_else(|| coroutines_runtime::started_default_runtime().map(|rt| rt.dump()))
        .unwrap_or_else(Dump::empty)
}

#[doc(hidden)]
pub mod __private;
