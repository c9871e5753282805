//! The identity of a coroutine.

use coroutines_runtime::{CoroutineId, TaskRef};

/// A handle to a coroutine's identity, like [`std::thread::Thread`].
///
/// # Examples
/// ```
/// let handle = coroutines::Builder::new()
///     .name("worker".into())
///     .spawn(|| coroutines::current().name().map(str::to_owned))
///     .unwrap();
/// assert_eq!(handle.coroutine().name(), Some("worker"));
/// assert_eq!(handle.join().unwrap().as_deref(), Some("worker"));
/// ```
#[derive(Clone, Debug)]
pub struct Coroutine {
    task: TaskRef,
}

impl Coroutine {
    pub(crate) fn new(task: TaskRef) -> Coroutine {
        Coroutine { task }
    }

    /// Returns the coroutine's unique identifier.
    ///
    /// # Examples
    /// ```
    /// let a = coroutines::spawn(|| coroutines::current().id());
    /// let b = coroutines::spawn(|| coroutines::current().id());
    /// assert_ne!(a.join().unwrap(), b.join().unwrap());
    /// ```
    pub fn id(&self) -> CoroutineId {
        self.task.id()
    }

    /// Returns the coroutine's name, if it was given one.
    ///
    /// # Examples
    /// ```
    /// let unnamed = coroutines::spawn(|| coroutines::current().name().is_none());
    /// assert!(unnamed.join().unwrap());
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.task.name()
    }

    /// Returns the most stack the coroutine used, in bytes, once it has
    /// ended, if it was spawned with
    /// [`Builder::measure_stack`](crate::Builder::measure_stack); `None`
    /// before, or if it was not measured.
    ///
    /// # Examples
    /// ```
    /// let handle = coroutines::Builder::new()
    ///     .measure_stack(true)
    ///     .spawn(|| ())
    ///     .unwrap();
    /// let coroutine = handle.coroutine().clone();
    /// handle.join().unwrap();
    /// assert!(coroutine.stack_used().unwrap() < 64 * 1024);
    /// assert_eq!(coroutines::spawn(|| ()).coroutine().stack_used(), None);
    /// ```
    pub fn stack_used(&self) -> Option<usize> {
        self.task.stack_used()
    }
}

/// Returns a handle to the running coroutine.
///
/// # Panics
/// Outside a coroutine; see [`try_current`].
///
/// # Examples
/// ```
/// let handle = coroutines::spawn(|| coroutines::current().id());
/// let id = handle.coroutine().id();
/// assert_eq!(handle.join().unwrap(), id);
/// ```
pub fn current() -> Coroutine {
    try_current().expect("coroutines::current() called outside a coroutine")
}

/// Returns a handle to the running coroutine, or `None` outside one.
///
/// # Examples
/// ```
/// assert!(coroutines::try_current().is_none());
/// assert!(coroutines::spawn(|| coroutines::try_current().is_some()).join().unwrap());
/// ```
pub fn try_current() -> Option<Coroutine> {
    coroutines_runtime::current_task().map(Coroutine::new)
}
