//! Spawning with options.

use std::io;
use std::sync::Arc;

use coroutines_runtime::SpawnOptions;

use crate::join::{JoinHandle, Spawned};
use crate::Coroutine;

/// Coroutine factory, which can configure the properties of a new
/// coroutine, like [`std::thread::Builder`].
///
/// # Examples
/// ```
/// let handle = coroutines::Builder::new()
///     .name("parser".into())
///     .stack_size(256 * 1024)
///     .spawn(|| 2 + 2)
///     .unwrap();
/// assert_eq!(handle.join().unwrap(), 4);
/// ```
#[derive(Debug, Default)]
#[must_use = "must eventually spawn the coroutine"]
pub struct Builder {
    options: SpawnOptions,
}

impl Builder {
    /// Generates the base configuration for spawning a coroutine, from which
    /// configuration methods can be chained.
    ///
    /// # Examples
    /// ```
    /// let handle = coroutines::Builder::new().spawn(|| 1).unwrap();
    /// assert_eq!(handle.join().unwrap(), 1);
    /// ```
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the coroutine-to-be, for identification in panic messages,
    /// [`current`](crate::current) and diagnostics.
    ///
    /// # Examples
    /// ```
    /// let handle = coroutines::Builder::new()
    ///     .name("named coroutine".into())
    ///     .spawn(|| coroutines::current().name().unwrap().to_owned())
    ///     .unwrap();
    /// assert_eq!(handle.join().unwrap(), "named coroutine");
    /// ```
    pub fn name(mut self, name: String) -> Builder {
        self.options.name = Some(name);
        self
    }

    /// Sets the size of the stack, in bytes, for the new coroutine. The
    /// runtime's default is 64 KiB; only the pages a coroutine touches use
    /// memory.
    ///
    /// # Examples
    /// ```
    /// let handle = coroutines::Builder::new()
    ///     .stack_size(1024 * 1024)
    ///     .spawn(|| [0u8; 512 * 1024].len())
    ///     .unwrap();
    /// assert_eq!(handle.join().unwrap(), 512 * 1024);
    /// ```
    pub fn stack_size(mut self, size: usize) -> Builder {
        self.options.stack_size = Some(size);
        self
    }

    /// Spawns a new coroutine with this configuration, returning a
    /// [`JoinHandle`] for it.
    ///
    /// Inside a coroutine it joins the caller's runtime; elsewhere the
    /// process-wide one.
    ///
    /// # Errors
    /// If the stack size is invalid, the runtime has shut down, or the
    /// process is at its memory-map limit (on kernels before 6.13; the
    /// message names `vm.max_map_count`). A stack is allocated when the coroutine first
    /// runs; if that fails, [`JoinHandle::join`] reports it.
    ///
    /// # Examples
    /// ```
    /// let error = coroutines::Builder::new().stack_size(0).spawn(|| ()).unwrap_err();
    /// assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    /// ```
    pub fn spawn<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn_on(None, f)
    }

    /// Measures how much stack the coroutine uses, so that `stack_size`
    /// can be chosen from evidence: once it has ended,
    /// [`Coroutine::stack_used`](crate::Coroutine::stack_used) says. For
    /// diagnosis, not production: its whole stack is written when mapped
    /// (every page becomes resident) and is not re-used.
    ///
    /// # Examples
    /// ```
    /// let handle = coroutines::Builder::new()
    ///     .measure_stack(true)
    ///     .spawn(|| std::hint::black_box([1u8; 16 * 1024]).len())
    ///     .unwrap();
    /// let coroutine = handle.coroutine().clone();
    /// assert_eq!(handle.join().unwrap(), 16 * 1024);
    /// let used = coroutine.stack_used().unwrap();
    /// assert!(used >= 16 * 1024 && used < 64 * 1024, "{used}");
    /// ```
    pub fn measure_stack(mut self, measure: bool) -> Builder {
        self.options.measure_stack = measure;
        self
    }

    /// Makes it the coroutine `block_on` runs (see `SpawnOptions::root`).
    pub(crate) fn root(mut self) -> Builder {
        self.options.root = true;
        self
    }

    /// The options of this configuration, for spawning with a body of its
    /// own (scoped coroutines).
    pub(crate) fn into_options(self) -> SpawnOptions {
        self.options
    }

    /// Spawns `f` into `runtime`, or where [`spawn`](Self::spawn) would.
    pub(crate) fn spawn_on<F, T>(
        self,
        runtime: Option<&coroutines_runtime::Runtime>,
        f: F,
    ) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let spawned = Arc::new(Spawned::new(f));
        let task = match runtime {
            Some(runtime) => runtime.spawn_raw(self.options, spawned.clone())?,
            None => coroutines_runtime::spawn(self.options, spawned.clone())?,
        };
        Ok(JoinHandle::new(spawned, Coroutine::new(task)))
    }
}
