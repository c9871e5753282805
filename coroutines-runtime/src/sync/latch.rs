//! A one-shot signal that a coroutine or an OS thread can wait for.

use core::sync::atomic::{AtomicU32, Ordering};

use super::SpinLock;
use crate::coroutine::{self, Wait, Waker};
use crate::sys;

/// Not set; nobody sleeps in the kernel on it.
const UNSET: u32 = 0;
/// Set: every `wait` returns at once. Final.
const SET: u32 = 1;
/// Not set, and at least one OS thread sleeps on the futex word, so `set`
/// must issue a futex wake.
const THREAD_WAITING: u32 = 2;

/// A flag that goes from unset to set once and wakes whoever waits for it.
///
/// A coroutine that waits is parked (its worker runs other coroutines); an
/// OS thread that waits sleeps in the kernel. Any number of threads may
/// wait, but at most one coroutine at a time (a join handle has one owner),
/// which keeps the slot allocation-free.
pub struct Latch {
    state: AtomicU32,
    waiter: SpinLock<Option<Waker>>,
}

impl Latch {
    /// Creates an unset latch.
    pub const fn new() -> Self {
        Latch {
            state: AtomicU32::new(UNSET),
            waiter: SpinLock::new(None),
        }
    }

    /// Returns whether the latch has been set.
    pub fn is_set(&self) -> bool {
        self.state.load(Ordering::Acquire) == SET
    }

    /// Sets the latch and wakes every waiter.
    pub fn set(&self) {
        let previous = self.state.swap(SET, Ordering::AcqRel);
        let waiter = self.waiter.lock().take();
        if let Some(waker) = waiter {
            waker.wake(coroutine::WakeReason::Notified);
        }
        if previous == THREAD_WAITING {
            sys::futex_wake(&self.state, i32::MAX);
        }
    }

    /// Blocks the current coroutine or thread until the latch is set.
    /// At most one coroutine may wait at a time.
    pub fn wait(&self) {
        self.wait_for(Wait::Other);
    }

    /// As [`wait`](Self::wait); `what` says what the latch stands for, for
    /// dumps of a parked coroutine.
    pub fn wait_for(&self, what: Wait) {
        if self.is_set() {
            return;
        }
        if coroutine::in_coroutine() {
            while !self.is_set() {
                coroutine::park(None, what, |waker| {
                    let mut waiter = self.waiter.lock();
                    // Checked under the lock that `set` takes after storing
                    // SET, so the wake-up cannot be missed.
                    if self.is_set() {
                        drop(waiter);
                        waker.wake(coroutine::WakeReason::Notified);
                    } else {
                        *waiter = Some(waker);
                    }
                });
            }
        } else {
            loop {
                match self.state.compare_exchange(
                    UNSET,
                    THREAD_WAITING,
                    Ordering::Acquire,
                    Ordering::Acquire,
                ) {
                    Ok(_) | Err(THREAD_WAITING) => sys::futex_wait(&self.state, THREAD_WAITING),
                    Err(_) => return,
                }
            }
        }
    }
}

impl Default for Latch {
    fn default() -> Self {
        Latch::new()
    }
}
