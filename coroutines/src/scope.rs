//! Scoped coroutines, which may borrow from the stack of whoever spawns them,
//! like [`std::thread::scope`].
//!
//! The runtime takes a coroutine's [`Body`] as `Arc<dyn Body + 'static>` and
//! may keep it after the coroutine has ended, so a scoped coroutine's body
//! has its lifetime erased. That is sound because of what `scope` waits for
//! and what the body still holds by then:
//!
//! - `scope` returns only once every scoped coroutine has reached
//!   [`Body::deliver`] (its closure has returned and, with thread identity,
//!   its thread-local destructors have run) or [`Body::fail`] (it never ran,
//!   or it was abandoned while suspended: its runtime shut down, or it
//!   overflowed its stack; its stack is then leaked, never resumed, unwound
//!   nor freed, so the borrows on it are never used again);
//! - by then the body has given up the closure (`run` consumed it, `fail`
//!   dropped it) and its result (taken by `join`, or dropped by the last of
//!   the coroutine and its handle to let go of it, before `scope` returns),
//!   so whatever the runtime does with the body later touches no borrow.

use std::any::Any;
use std::cell::UnsafeCell;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use coroutines_runtime::sync::Latch;
use coroutines_runtime::{Body, Wait};

use crate::{Builder, Coroutine};

/// A scope to spawn scoped coroutines in.
///
/// See [`scope`] for details.
///
/// # Examples
/// A scope can be passed to functions that spawn into it:
/// ```
/// use coroutines::{Scope, ScopedJoinHandle};
///
/// fn spawn_len<'scope>(s: &'scope Scope<'scope, '_>, word: &'scope str) -> ScopedJoinHandle<'scope, usize> {
///     s.spawn(move || word.len())
/// }
///
/// let words = [String::from("scoped"), String::from("coroutines")];
/// let total = coroutines::scope(|s| {
///     let handles: Vec<_> = words.iter().map(|w| spawn_len(s, w)).collect();
///     handles.into_iter().map(|h| h.join().unwrap()).sum::<usize>()
/// });
/// assert_eq!(total, 16);
/// ```
pub struct Scope<'scope, 'env: 'scope> {
    data: Arc<ScopeData>,
    /// Invariance over `'scope`, so that it cannot shrink: a coroutine could
    /// otherwise hand the scope a borrow of its own locals, as in
    /// `s.spawn(|| { let a = 1; s.spawn(|| a); })`.
    scope: PhantomData<&'scope mut &'scope ()>,
    env: PhantomData<&'env mut &'env ()>,
}

/// What a scope's coroutines share with the call to [`scope`] that waits
/// for them. Reference-counted: the last coroutine touches it after `scope`
/// may have returned.
struct ScopeData {
    /// Scoped coroutines that have not ended, plus one while `scope`'s
    /// closure runs. Only code holding the `Scope` (the closure or a running
    /// scoped coroutine, each counted) spawns, so zero is final.
    running: AtomicUsize,
    /// Whether a coroutine panicked and no join handle took the panic.
    a_coroutine_panicked: AtomicBool,
    /// Set when `running` reaches zero.
    all_done: Latch,
}

impl ScopeData {
    fn increment(&self) {
        self.running.fetch_add(1, Ordering::Relaxed);
    }

    fn decrement(&self) {
        // AcqRel: the last decrement carries every coroutine's writes to
        // the waiter of `all_done`.
        if self.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_done.set();
        }
    }

    /// Drops the result of a coroutine nobody joined, noting a panic.
    fn drop_unjoined<T>(&self, result: thread::Result<T>) {
        let panicked = result.is_err();
        // A result that panics as it drops counts as a panic of the
        // coroutine rather than unwinding into the runtime or the handle's
        // owner.
        let dropped = catch_unwind(AssertUnwindSafe(|| drop(result)));
        if panicked || dropped.is_err() {
            self.a_coroutine_panicked.store(true, Ordering::Relaxed);
        }
    }
}

/// Creates a scope for spawning scoped coroutines.
///
/// The function passed to `scope` is given a [`Scope`], through which
/// scoped coroutines can be [spawned](Scope::spawn). Unlike
/// [`spawn`](crate::spawn)ed ones, scoped coroutines can borrow
/// non-`'static` data, as the scope guarantees they have all ended before
/// it returns: those not joined by hand are joined after `f` returns (or
/// panics).
///
/// Called from a coroutine, the caller is parked while it waits, so its
/// worker runs the scoped coroutines and others meanwhile; from a plain
/// thread, the thread blocks and the coroutines run in the process-wide
/// runtime. Scoped coroutines join the runtime of whoever spawns them, as
/// with [`spawn`](crate::spawn).
///
/// # Panics
/// If `f` panics, `scope` resumes that panic once every scoped coroutine
/// has ended. Otherwise, if any coroutine whose handle was not joined
/// panicked, `scope` panics with "a scoped coroutine panicked"; to handle
/// such panics, [`join`](ScopedJoinHandle::join) the coroutines before the
/// end of the scope. A coroutine that could never finish (its runtime shut
/// down while it was suspended, or it overflowed its stack) counts as
/// panicked: its stack is leaked, never resumed, so the borrows it holds
/// are never used again.
///
/// # Examples
/// ```
/// let mut a = vec![1, 2, 3];
/// let mut x = 0;
///
/// coroutines::scope(|s| {
///     s.spawn(|| {
///         // We can borrow `a` here.
///         assert_eq!(a.len(), 3);
///     });
///     s.spawn(|| {
///         // We can even mutably borrow `x` here,
///         // because no other coroutine uses it.
///         x += a[0] + a[2];
///     });
/// });
///
/// // After the scope, we can modify and access our variables again:
/// a.push(4);
/// assert_eq!(x, a.len());
/// ```
///
/// # Lifetimes
///
/// As with [`std::thread::scope`], scoped coroutines involve two lifetimes:
/// `'scope`, during which new scoped coroutines may be spawned and may still
/// run (it ends after `f` returns and every scoped coroutine has ended, but
/// before `scope` returns), and `'env`, the lifetime of whatever the scoped
/// coroutines borrow, which must outlast the call to `scope`.
#[track_caller]
pub fn scope<'env, F, T>(f: F) -> T
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> T,
{
    let scope = Scope {
        data: Arc::new(ScopeData {
            running: AtomicUsize::new(1),
            a_coroutine_panicked: AtomicBool::new(false),
            all_done: Latch::new(),
        }),
        scope: PhantomData,
        env: PhantomData,
    };
    // Caught, so that the coroutines borrowing the caller's stack are waited
    // for before the panic unwinds it.
    let result = catch_unwind(AssertUnwindSafe(|| f(&scope)));
    scope.data.decrement();
    scope.data.all_done.wait_for(Wait::Scope);
    match result {
        Err(payload) => resume_unwind(payload),
        Ok(_) if scope.data.a_coroutine_panicked.load(Ordering::Relaxed) => {
            panic!("a scoped coroutine panicked")
        }
        Ok(result) => result,
    }
}

impl<'scope> Scope<'scope, '_> {
    /// Spawns a new coroutine within the scope, returning a
    /// [`ScopedJoinHandle`] for it.
    ///
    /// Unlike [`spawn`](crate::spawn), the coroutine may borrow non-`'static`
    /// data from outside the scope; see [`scope`]. If the join handle is
    /// dropped, the coroutine is joined implicitly at the end of the scope,
    /// and if it panicked, [`scope`] panics.
    ///
    /// The coroutine has the default settings of [`Builder`]; use
    /// [`Builder::spawn_scoped`] to name it or size its stack.
    ///
    /// # Panics
    /// If the coroutine cannot be spawned (the runtime has shut down, or the
    /// process-wide runtime cannot start); use [`Builder::spawn_scoped`] to
    /// handle such errors.
    ///
    /// # Examples
    /// ```
    /// let mut counts = [0u32; 4];
    /// coroutines::scope(|s| {
    ///     for (i, count) in counts.iter_mut().enumerate() {
    ///         s.spawn(move || *count = i as u32 * 10);
    ///     }
    /// });
    /// assert_eq!(counts, [0, 10, 20, 30]);
    /// ```
    pub fn spawn<F, T>(&'scope self, f: F) -> ScopedJoinHandle<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        Builder::new()
            .spawn_scoped(self, f)
            .unwrap_or_else(|error| panic!("failed to spawn coroutine: {error}"))
    }
}

impl Builder {
    /// Spawns a new scoped coroutine with this configuration, returning a
    /// [`ScopedJoinHandle`] for it.
    ///
    /// Unlike [`Scope::spawn`], this method yields an [`io::Result`] to
    /// report a failure to spawn.
    ///
    /// # Errors
    /// As [`Builder::spawn`].
    ///
    /// # Examples
    /// ```
    /// let mut a = vec![1, 2, 3];
    /// let mut x = 0;
    ///
    /// coroutines::scope(|s| {
    ///     coroutines::Builder::new()
    ///         .name("first".into())
    ///         .spawn_scoped(s, || {
    ///             assert_eq!(coroutines::current().name(), Some("first"));
    ///             // We can borrow `a` here.
    ///             assert_eq!(a.len(), 3);
    ///         })
    ///         .unwrap();
    ///     coroutines::Builder::new()
    ///         .name("second".into())
    ///         .spawn_scoped(s, || {
    ///             // We can even mutably borrow `x` here,
    ///             // because no other coroutine uses it.
    ///             x += a[0] + a[2];
    ///         })
    ///         .unwrap();
    /// });
    ///
    /// // After the scope, we can modify and access our variables again:
    /// a.push(4);
    /// assert_eq!(x, a.len());
    /// ```
    pub fn spawn_scoped<'scope, 'env, F, T>(
        self,
        scope: &'scope Scope<'scope, 'env>,
        f: F,
    ) -> io::Result<ScopedJoinHandle<'scope, T>>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        // Counted before the coroutine can end, and uncounted if it never
        // starts (an error, or a panic starting the process-wide runtime).
        scope.data.increment();
        let pending = Uncount(&scope.data);
        let spawned = Arc::new(ScopedSpawned::new(f, scope.data.clone()));
        let body: Arc<dyn Body + 'scope> = spawned.clone();
        // SAFETY: `scope` returns only after `deliver` or `fail` of this body, by which time the body holds no closure or result (see the module comment).
        let body = unsafe { std::mem::transmute::<Arc<dyn Body + 'scope>, Arc<dyn Body>>(body) };
        let task = coroutines_runtime::spawn(self.into_options(), body)?;
        std::mem::forget(pending);
        Ok(ScopedJoinHandle {
            spawned,
            coroutine: Coroutine::new(task),
        })
    }
}

/// Takes back a count of a coroutine that was never spawned.
struct Uncount<'a>(&'a ScopeData);

impl Drop for Uncount<'_> {
    fn drop(&mut self) {
        self.0.decrement();
    }
}

/// A scoped coroutine's closure and the slot its result goes to, in one
/// allocation that the runtime (as the coroutine's [`Body`]) and the join
/// handle share.
struct ScopedSpawned<F, T> {
    /// Set by whichever of `run` and `fail` takes the closure; guards `f`.
    taken: AtomicBool,
    f: UnsafeCell<Option<F>>,
    packet: Packet<T>,
}

/// Where a scoped coroutine's result waits for its join handle.
struct Packet<T> {
    /// Set by whoever keeps a result first; guards `result` with `holders`
    /// and `done`.
    kept: AtomicBool,
    result: UnsafeCell<Option<thread::Result<T>>>,
    /// The coroutine (until it keeps its result) and the join handle (until
    /// it is dropped). The last to let go drops a result nobody took, so
    /// that no result outlives the scope.
    holders: AtomicU8,
    /// Set once the end has been reported to the scope.
    ended: AtomicBool,
    /// Set when the coroutine has ended, its thread-locals included.
    done: Latch,
    scope: Arc<ScopeData>,
}

// SAFETY: `f` is touched only by the one caller that wins `taken`; `result`
// only by the winner of `kept` before it lets go, then by the handle after
// `done` is set or by the last holder to let go (`holders` orders them).
unsafe impl<F: Send, T: Send> Sync for ScopedSpawned<F, T> {}

impl<F, T> ScopedSpawned<F, T> {
    fn new(f: F, scope: Arc<ScopeData>) -> ScopedSpawned<F, T> {
        ScopedSpawned {
            taken: AtomicBool::new(false),
            f: UnsafeCell::new(Some(f)),
            packet: Packet {
                kept: AtomicBool::new(false),
                result: UnsafeCell::new(None),
                holders: AtomicU8::new(2),
                ended: AtomicBool::new(false),
                done: Latch::new(),
                scope,
            },
        }
    }

    fn take(&self) -> Option<F> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: only the winner of `taken` gets here, once.
        unsafe { (*self.f.get()).take() }
    }
}

impl<T> Packet<T> {
    /// Keeps the coroutine's result (later ones are dropped) and lets go of
    /// the coroutine's hold on it.
    fn keep(&self, result: thread::Result<T>) {
        if self.kept.swap(true, Ordering::AcqRel) {
            return;
        }
        // SAFETY: only the winner of `kept` writes, before it lets go.
        unsafe { *self.result.get() = Some(result) };
        self.let_go();
    }

    /// Gives up one holder's hold on the result; the last one drops a
    /// result that is still there.
    fn let_go(&self) {
        if self.holders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // SAFETY: both holders have let go; the AcqRel above orders the
            // write of `keep` before this read.
            if let Some(result) = unsafe { (*self.result.get()).take() } {
                self.scope.drop_unjoined(result);
            }
        }
    }

    /// Wakes the join handle and tells the scope that the coroutine has
    /// ended, once.
    fn end(&self) {
        if !self.ended.swap(true, Ordering::AcqRel) {
            self.done.set();
            self.scope.decrement();
        }
    }
}

impl<F, T> Body for ScopedSpawned<F, T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    fn run(&self) {
        if let Some(f) = self.take() {
            self.packet.keep(catch_unwind(AssertUnwindSafe(f)));
        }
    }

    fn deliver(&self) {
        self.packet.end();
    }

    fn fail(&self, payload: Box<dyn Any + Send>) {
        drop(self.take());
        // Ignored if the coroutine kept its result before it was abandoned.
        self.packet.keep(Err(payload));
        self.packet.end();
    }
}

/// The part of a [`ScopedSpawned`] a join handle needs, without the
/// closure type.
trait ScopedJoinable<T>: Send + Sync {
    fn packet(&self) -> &Packet<T>;
}

impl<F: Send, T: Send> ScopedJoinable<T> for ScopedSpawned<F, T> {
    fn packet(&self) -> &Packet<T> {
        &self.packet
    }
}

/// An owned permission to join on a scoped coroutine (block on its
/// termination).
///
/// See [`Scope::spawn`] for details. Dropping the handle leaves the
/// coroutine running; the scope joins it at its end.
///
/// # Examples
/// ```
/// let data = [1, 2, 3];
/// coroutines::scope(|s| {
///     let handle: coroutines::ScopedJoinHandle<'_, i32> = s.spawn(|| data.iter().sum());
///     assert_eq!(handle.join().unwrap(), 6);
/// });
/// ```
pub struct ScopedJoinHandle<'scope, T> {
    spawned: Arc<dyn ScopedJoinable<T> + 'scope>,
    coroutine: Coroutine,
}

impl<T> ScopedJoinHandle<'_, T> {
    /// Waits for the coroutine to finish and returns its result.
    ///
    /// Returns at once if the coroutine has already finished. A coroutine
    /// calling `join` is parked, so its worker runs other coroutines
    /// meanwhile; a plain thread blocks. Everything the coroutine did
    /// happens before `join` returns.
    ///
    /// If the coroutine panicked, the `Err` holds the panic payload, and the
    /// panic is not reported again by [`scope`]. A coroutine that can never
    /// finish (see [`JoinHandle::join`](crate::JoinHandle::join)) also
    /// yields an `Err`, whose payload is a `String` saying why.
    ///
    /// # Examples
    /// ```
    /// coroutines::scope(|s| {
    ///     let handle = s.spawn(|| panic!("oh no"));
    ///     assert!(handle.join().is_err());
    /// });
    /// ```
    pub fn join(self) -> thread::Result<T> {
        let packet = self.spawned.packet();
        packet.done.wait_for(Wait::Join(self.coroutine.id()));
        // SAFETY: `done` is set after the result was kept, and the handle
        // still holds it, so nobody else takes it.
        unsafe { (*packet.result.get()).take() }.expect("a coroutine's result is taken once")
    }

    /// Returns whether the coroutine has finished, without blocking.
    ///
    /// Once it returns `true`, [`join`](Self::join) returns at once.
    ///
    /// # Examples
    /// ```
    /// coroutines::scope(|s| {
    ///     let handle = s.spawn(|| ());
    ///     while !handle.is_finished() {
    ///         coroutines::yield_now();
    ///     }
    ///     handle.join().unwrap();
    /// });
    /// ```
    pub fn is_finished(&self) -> bool {
        self.spawned.packet().done.is_set()
    }

    /// Returns the identity of the coroutine.
    ///
    /// # Examples
    /// ```
    /// coroutines::scope(|s| {
    ///     let handle = coroutines::Builder::new()
    ///         .name("scoped".into())
    ///         .spawn_scoped(s, || coroutines::current().id())
    ///         .unwrap();
    ///     assert_eq!(handle.coroutine().name(), Some("scoped"));
    ///     let id = handle.coroutine().id();
    ///     assert_eq!(handle.join().unwrap(), id);
    /// });
    /// ```
    pub fn coroutine(&self) -> &Coroutine {
        &self.coroutine
    }
}

impl<T> Drop for ScopedJoinHandle<'_, T> {
    fn drop(&mut self) {
        self.spawned.packet().let_go();
    }
}

impl fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("running", &self.data.running.load(Ordering::Relaxed))
            .field(
                "a_coroutine_panicked",
                &self.data.a_coroutine_panicked.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for ScopedJoinHandle<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedJoinHandle")
            .field("coroutine", &self.coroutine)
            .finish_non_exhaustive()
    }
}
