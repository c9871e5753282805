//! Join handles and the packet a coroutine's result travels in.

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use coroutines_runtime::coroutine::begin_short_backtrace;
use coroutines_runtime::sync::Latch;
use coroutines_runtime::{Body, CoroutineId, Wait};

use crate::Coroutine;

/// Where a coroutine's result waits for its join handle.
pub(crate) struct Packet<T> {
    /// Set by whoever delivers the result first; guards `result`.
    claimed: AtomicBool,
    result: UnsafeCell<Option<thread::Result<T>>>,
    done: Latch,
}

// SAFETY: `result` is written once, by the thread that won `claimed`, before
// `done` is set (`publish`), and read only after `done` is observed set.
unsafe impl<T: Send> Sync for Packet<T> {}

impl<T> Packet<T> {
    pub(crate) fn new() -> Packet<T> {
        Packet {
            claimed: AtomicBool::new(false),
            result: UnsafeCell::new(None),
            done: Latch::new(),
        }
    }

    /// Keeps the coroutine's result, to be published by [`publish`]; later
    /// results are ignored. Returns whether this one was kept.
    ///
    /// [`publish`]: Packet::publish
    fn keep(&self, result: thread::Result<T>) -> bool {
        if self.claimed.swap(true, Ordering::AcqRel) {
            return false;
        }
        // SAFETY: only the winner of `claimed` writes, before `publish`.
        unsafe { *self.result.get() = Some(result) };
        true
    }

    /// Lets the join handle take the kept result.
    fn publish(&self) {
        self.done.set();
    }

    /// Waits for the result of coroutine `id` and takes it.
    fn take(&self, id: CoroutineId) -> thread::Result<T> {
        self.done.wait_for(Wait::Join(id));
        // SAFETY: `done` is set, so the write has happened and nobody else
        // reads: the only reader is the join handle, consumed by `join`.
        unsafe { (*self.result.get()).take() }.expect("a coroutine's result is taken once")
    }
}

/// A spawned closure and the packet its result goes to, in one allocation
/// that the runtime (as the coroutine's [`Body`]) and the join handle share.
pub(crate) struct Spawned<F, T> {
    /// Set by whichever of `run` and `fail` takes the closure; guards `f`.
    taken: AtomicBool,
    f: UnsafeCell<Option<F>>,
    packet: Packet<T>,
}

// SAFETY: `f` is touched only by the one caller that wins `taken`; `packet`
// is `Sync` for `Send` results.
unsafe impl<F: Send, T: Send> Sync for Spawned<F, T> {}

impl<F, T> Spawned<F, T> {
    pub(crate) fn new(f: F) -> Spawned<F, T> {
        Spawned {
            taken: AtomicBool::new(false),
            f: UnsafeCell::new(Some(f)),
            packet: Packet::new(),
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

impl<F, T> Body for Spawned<F, T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    fn run(&self) {
        if let Some(f) = self.take() {
            self.packet
                .keep(catch_unwind(AssertUnwindSafe(|| begin_short_backtrace(f))));
        }
    }

    fn deliver(&self) {
        self.packet.publish();
    }

    fn fail(&self, payload: Box<dyn Any + Send>) {
        drop(self.take());
        // A result kept by a coroutine that never got to end its thread
        // (its runtime shut down meanwhile) is delivered as it is.
        self.packet.keep(Err(payload));
        self.packet.publish();
    }
}

/// The part of a [`Spawned`] a join handle needs, without the closure type.
pub(crate) trait Joinable<T>: Send + Sync {
    fn packet(&self) -> &Packet<T>;
}

impl<F: Send, T: Send> Joinable<T> for Spawned<F, T> {
    fn packet(&self) -> &Packet<T> {
        &self.packet
    }
}

/// An owned permission to join on a coroutine (block on its termination).
///
/// Dropping the handle detaches the coroutine: it keeps running, and its
/// result is dropped when it finishes. The handle keeps the coroutine's
/// record alive, so the record is usually freed by the joining thread, the
/// one that allocated it.
///
/// # Examples
/// ```
/// let handle: coroutines::JoinHandle<u32> = coroutines::spawn(|| 7);
/// assert_eq!(handle.join().unwrap(), 7);
/// ```
pub struct JoinHandle<T> {
    spawned: Arc<dyn Joinable<T>>,
    coroutine: Coroutine,
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(spawned: Arc<dyn Joinable<T>>, coroutine: Coroutine) -> JoinHandle<T> {
        JoinHandle { spawned, coroutine }
    }

    /// Waits for the coroutine to finish and returns its result.
    ///
    /// A coroutine calling `join` is parked, so its worker runs other
    /// coroutines meanwhile; a plain thread blocks. If the coroutine
    /// panicked, the `Err` holds the panic payload, as with
    /// [`std::thread::JoinHandle::join`]. A coroutine that can never finish
    /// (its stack could not be allocated, it overflowed its stack, or its
    /// runtime shut down first) also yields an `Err`, whose payload is a
    /// `String` saying why.
    ///
    /// # Examples
    /// ```
    /// let handle = coroutines::spawn(|| panic!("oops"));
    /// let payload = handle.join().unwrap_err();
    /// assert_eq!(payload.downcast_ref::<&str>(), Some(&"oops"));
    /// ```
    pub fn join(self) -> thread::Result<T> {
        self.spawned.packet().take(self.coroutine.id())
    }

    /// Returns whether the coroutine has finished, without blocking.
    ///
    /// # Examples
    /// ```
    /// let handle = coroutines::spawn(|| ());
    /// while !handle.is_finished() {
    ///     std::thread::yield_now();
    /// }
    /// handle.join().unwrap();
    /// ```
    pub fn is_finished(&self) -> bool {
        self.spawned.packet().done.is_set()
    }

    /// Returns the identity of the coroutine.
    ///
    /// # Examples
    /// ```
    /// let handle = coroutines::Builder::new().name("named".into()).spawn(|| ()).unwrap();
    /// assert_eq!(handle.coroutine().name(), Some("named"));
    /// ```
    pub fn coroutine(&self) -> &Coroutine {
        &self.coroutine
    }
}

impl<T> std::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinHandle")
            .field("coroutine", &self.coroutine)
            .finish_non_exhaustive()
    }
}
