//! Runtime instances and their configuration.

use std::io;

use coroutines_runtime::Config;

use crate::{Builder as CoroutineBuilder, JoinHandle, Stats, WorkerStats};

/// A set of worker threads that run coroutines.
///
/// Most programs use the process-wide runtime (through [`crate::spawn`] or
/// [`#[coroutines::main]`](crate::main)); independent runtimes are for
/// libraries and tests that need their own configuration. Dropping a runtime
/// shuts its workers down; coroutines still running are abandoned and their
/// join handles return an error. Dropped from a plain thread, the drop
/// returns once the workers have stopped; dropped from a coroutine (its own
/// or another runtime's) or from a worker thread, it returns at once, and a
/// thread of the runtime finishes the stop once the workers have let go of
/// the coroutines they run.
///
/// # Examples
/// ```
/// let runtime = coroutines::Runtime::builder().workers(2).build().unwrap();
/// let sum = runtime.block_on(|| {
///     let handles: Vec<_> = (0..10u32).map(|i| coroutines::spawn(move || i)).collect();
///     handles.into_iter().map(|h| h.join().unwrap()).sum::<u32>()
/// });
/// assert_eq!(sum, 45);
/// ```
pub struct Runtime {
    inner: coroutines_runtime::Runtime,
}

impl Runtime {
    /// Starts a runtime with the default configuration.
    ///
    /// # Errors
    /// If `COROUTINES_WORKERS` is invalid or a worker thread cannot start.
    ///
    /// # Examples
    /// ```
    /// let runtime = coroutines::Runtime::new().unwrap();
    /// assert!(runtime.workers() >= 1);
    /// ```
    pub fn new() -> io::Result<Runtime> {
        Runtime::builder().build()
    }

    /// Returns a builder to configure a runtime.
    ///
    /// # Examples
    /// ```
    /// let runtime = coroutines::Runtime::builder().workers(1).build().unwrap();
    /// assert_eq!(runtime.workers(), 1);
    /// ```
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Runs `f` in a new coroutine of this runtime and waits for its result.
    ///
    /// Called from a coroutine, the caller is parked meanwhile; from a
    /// thread, the thread blocks.
    ///
    /// # Panics
    /// If `f` panics, the panic is resumed in the caller. If the runtime
    /// cannot run `f` (see [`JoinHandle::join`]).
    ///
    /// # Examples
    /// ```
    /// let runtime = coroutines::Runtime::builder().workers(1).build().unwrap();
    /// assert!(runtime.block_on(coroutines::in_coroutine));
    /// ```
    #[track_caller]
    pub fn block_on<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        block_on(&self.inner, f)
    }

    /// Spawns a coroutine into this runtime.
    ///
    /// # Panics
    /// If the runtime has shut down.
    ///
    /// # Examples
    /// ```
    /// let runtime = coroutines::Runtime::builder().workers(1).build().unwrap();
    /// assert_eq!(runtime.spawn(|| 3).join().unwrap(), 3);
    /// ```
    #[track_caller]
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match CoroutineBuilder::new().spawn_on(Some(&self.inner), f) {
            Ok(handle) => handle,
            Err(error) => panic!("failed to spawn coroutine: {error}"),
        }
    }

    /// Returns the number of worker threads.
    ///
    /// # Examples
    /// ```
    /// let runtime = coroutines::Runtime::builder().workers(3).build().unwrap();
    /// assert_eq!(runtime.workers(), 3);
    /// ```
    pub fn workers(&self) -> usize {
        self.inner.workers()
    }

    /// Returns every live coroutine of this runtime and where it is; see
    /// [`crate::dump`].
    ///
    /// # Examples
    /// ```
    /// let runtime = coroutines::Runtime::builder().workers(1).build().unwrap();
    /// assert!(runtime.dump().coroutines.is_empty());
    /// ```
    pub fn dump(&self) -> crate::Dump {
        self.inner.dump()
    }

    /// Returns a snapshot of this runtime's counters.
    ///
    /// # Examples
    /// ```
    /// let runtime = coroutines::Runtime::builder().workers(1).build().unwrap();
    /// runtime.spawn(|| ()).join().unwrap();
    /// assert_eq!(runtime.stats().spawned, 1);
    /// ```
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// Returns a snapshot of each worker: coroutines queued on it and
    /// parked on it, the one it runs, its busy time. Costs a pass over
    /// every live coroutine.
    ///
    /// # Examples
    /// ```
    /// let runtime = coroutines::Runtime::builder().workers(2).build().unwrap();
    /// let workers = runtime.worker_stats();
    /// assert_eq!(workers.len(), 2);
    /// assert!(workers.iter().all(|w| w.queued == 0 && !w.spare));
    /// ```
    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        self.inner.worker_stats()
    }
}

/// Configures a [`Runtime`] or the process-wide runtime.
///
/// # Examples
/// ```
/// let runtime = coroutines::Runtime::builder()
///     .workers(2)
///     .work_stealing(true)
///     .stack_size(128 * 1024)
///     .build()
///     .unwrap();
/// assert_eq!(runtime.workers(), 2);
/// ```
#[derive(Clone, Debug, Default)]
#[must_use = "a builder does nothing until built"]
pub struct Builder {
    config: Config,
}

impl Builder {
    /// Sets the number of worker threads. Without it, the environment
    /// variable `COROUTINES_WORKERS` decides, else the number of CPUs.
    /// [`build`](Builder::build) fails for 0 or more than 4,096.
    ///
    /// # Examples
    /// ```
    /// let runtime = coroutines::Runtime::builder().workers(1).build().unwrap();
    /// assert_eq!(runtime.workers(), 1);
    /// ```
    pub fn workers(mut self, workers: usize) -> Builder {
        self.config.workers = Some(workers);
        self
    }

    /// Lets idle workers take coroutines that have already started from busy
    /// workers (off by default). A moved coroutine must not hold on to
    /// addresses of thread-locals across a wait; each move is counted in
    /// [`Stats::migrations`].
    ///
    /// # Examples
    /// ```
    /// let runtime = coroutines::Runtime::builder().work_stealing(true).build().unwrap();
    /// runtime.block_on(|| ());
    /// ```
    pub fn work_stealing(mut self, enabled: bool) -> Builder {
        self.config.work_stealing = Some(enabled);
        self
    }

    /// Sets the default stack size, in bytes, of the runtime's coroutines
    /// (64 KiB if unset).
    ///
    /// # Examples
    /// ```
    /// let runtime = coroutines::Runtime::builder().stack_size(1 << 20).build().unwrap();
    /// assert_eq!(runtime.block_on(|| [1u8; 256 * 1024].len()), 256 * 1024);
    /// ```
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.config.stack_size = Some(bytes);
        self
    }

    /// Sets the stack size, in bytes, of the coroutine that
    /// [`Runtime::block_on`] runs, which stands in for the calling thread
    /// (under [`#[coroutines::main]`](crate::main), `main`'s body). If
    /// unset, it is the size of the main thread's stack: the soft
    /// `RLIMIT_STACK` (`ulimit -s`), or 8 MiB if that is unlimited. Only the
    /// pages the coroutine touches use memory.
    ///
    /// # Examples
    /// ```
    /// let runtime = coroutines::Runtime::builder()
    ///     .main_stack_size(16 << 20)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(runtime.block_on(|| [1u8; 4 << 20].len()), 4 << 20);
    /// ```
    pub fn main_stack_size(mut self, bytes: usize) -> Builder {
        self.config.main_stack_size = Some(bytes);
        self
    }

    /// Sets the most helper threads the runtime runs blocking calls on at
    /// once (name lookups, joins of OS threads, [`spawn_blocking`]);
    /// 512 if unset. Helper threads start when needed and exit after 10 s
    /// without work.
    ///
    /// [`spawn_blocking`]: crate::spawn_blocking
    ///
    /// # Examples
    /// ```
    /// let runtime = coroutines::Runtime::builder().blocking_threads(8).build().unwrap();
    /// runtime.block_on(|| ());
    /// ```
    pub fn blocking_threads(mut self, threads: usize) -> Builder {
        self.config.blocking_threads = Some(threads);
        self
    }

    /// Gives every coroutine its own thread identity, as std and libc see
    /// it (on by default where the runtime could verify the C library's
    /// layout at start-up): its own `thread::current()`, thread-locals
    /// (destroyed when it ends), `errno`, parker and lock ownership. With it
    /// off, coroutines share their worker thread's: `std::sync::mpsc` and
    /// `thread::park` between coroutines of one worker can hang, and
    /// writes to stdout and stderr block the worker.
    ///
    /// # Examples
    /// ```
    /// let runtime = coroutines::Runtime::builder()
    ///     .workers(1)
    ///     .thread_identity(false)
    ///     .build()
    ///     .unwrap();
    /// let (a, b) = runtime.block_on(|| {
    ///     let other = coroutines::spawn(|| std::thread::current().id());
    ///     (std::thread::current().id(), other.join().unwrap())
    /// });
    /// // Both are the one worker thread's.
    /// assert_eq!(a, b);
    /// ```
    pub fn thread_identity(mut self, enabled: bool) -> Builder {
        self.config.thread_identity = Some(enabled);
        self
    }

    /// Sets how long a worker may run one coroutine without switching while
    /// others wait behind it (20 ms if unset). After that, the runtime
    /// moves the waiting coroutines to other workers (starting a spare
    /// worker if every worker is held up this way) and warns on stderr.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let runtime = coroutines::Runtime::builder()
    ///     .blocked_worker_threshold(Duration::from_millis(50))
    ///     .build()
    ///     .unwrap();
    /// runtime.block_on(|| ());
    /// ```
    pub fn blocked_worker_threshold(mut self, threshold: std::time::Duration) -> Builder {
        self.config.blocked_threshold = Some(threshold);
        self
    }

    /// Turns the warning of a blocked worker on stderr off (or on). The
    /// runtime still moves the waiting coroutines, and counts the incident
    /// in [`Stats::blocked_workers`].
    ///
    /// # Examples
    /// ```
    /// let runtime = coroutines::Runtime::builder()
    ///     .blocked_worker_warnings(false)
    ///     .build()
    ///     .unwrap();
    /// runtime.block_on(|| ());
    /// ```
    pub fn blocked_worker_warnings(mut self, enabled: bool) -> Builder {
        self.config.blocked_warnings = Some(enabled);
        self
    }

    /// Starts an independent runtime with this configuration.
    ///
    /// # Errors
    /// If the configuration is invalid (zero workers, zero or oversized
    /// stacks, a malformed `COROUTINES_WORKERS`) or a worker cannot start.
    ///
    /// # Examples
    /// ```
    /// let error = coroutines::Runtime::builder().workers(0).build().err().unwrap();
    /// assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    /// ```
    pub fn build(&self) -> io::Result<Runtime> {
        Ok(Runtime {
            inner: coroutines_runtime::Runtime::new(&self.config)?,
        })
    }

    /// Starts the process-wide runtime with this configuration; what
    /// [`#[coroutines::main]`](crate::main) does.
    ///
    /// # Errors
    /// If the process-wide runtime has already started (the message says
    /// so), or as [`build`](Self::build).
    ///
    /// # Examples
    /// ```
    /// coroutines::spawn(|| ()).join().unwrap(); // starts the default runtime
    /// let error = coroutines::Runtime::builder().workers(2).start_default().unwrap_err();
    /// assert!(error.to_string().contains("already started"));
    /// ```
    pub fn start_default(&self) -> io::Result<()> {
        coroutines_runtime::init_default_runtime(&self.config).map(drop)
    }

    pub(crate) fn start_default_runtime(&self) -> io::Result<&'static coroutines_runtime::Runtime> {
        coroutines_runtime::init_default_runtime(&self.config)
    }
}

/// Runs `f` in a coroutine of `runtime`, waits, and resumes its panic.
#[track_caller]
pub(crate) fn block_on<F, T>(runtime: &coroutines_runtime::Runtime, f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // Named like the thread it stands in for ("main" under
    // `#[coroutines::main]`, the test's name under `#[coroutines::test]`),
    // which its panic message then names.
    let mut builder = CoroutineBuilder::new().root();
    if !crate::in_coroutine() {
        if let Some(name) = std::thread::current().name() {
            builder = builder.name(name.to_owned());
        }
    }
    let handle = match builder.spawn_on(Some(runtime), f) {
        Ok(handle) => handle,
        Err(error) => panic!("failed to spawn coroutine: {error}"),
    };
    match handle.join() {
        Ok(value) => value,
        // Its message was printed where it happened, as a thread's is.
        Err(payload) => std::panic::resume_unwind(payload),
    }
}
