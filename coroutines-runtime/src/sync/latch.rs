//! A one-shot signal that a coroutine or an OS thread can wait for.

use core::sync::atomic::{AtomicU32, Ordering};

use super::SpinLock;
use crate::coroutine::{self, Waker};
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
/// OS thread that waits sleeps in the kernel. Any number of coroutines and
/// threads may wait.
pub struct Latch {
    state: AtomicU32,
    waiters: SpinLock<Vec<Waker>>,
}

impl Latch {
    /// Creates an unset latch.
    pub const fn new() -> Self {
        Latch {
            state: AtomicU32::new(UNSET),
            waiters: SpinLock::new(Vec::new()),
        }
    }

    /// Returns whether the latch has been set.
    pub fn is_set(&self) -> bool {
        self.state.load(Ordering::Acquire) == SET
    }

    /// Sets the latch and wakes every waiter.
    pub fn set(&self) {
        let previous = self.state.swap(SET, Ordering::AcqRel);
        let waiters = std::mem::take(&mut *self.waiters.lock());
        for waker in waiters {
            waker.wake(coroutine::WakeReason::Notified);
        }
        if previous == THREAD_WAITING {
            sys::futex_wake(&self.state, i32::MAX);
        }
    }

    /// Blocks the current coroutine or thread until the latch is set.
    pub fn wait(&self) {
        if self.is_set() {
            return;
        }
        if coroutine::in_coroutine() {
            while !self.is_set() {
                coroutine::park(None, |waker| {
                    let mut waiters = self.waiters.lock();
                    // Checked under the lock that `set` takes after storing
                    // SET, so the wake-up cannot be missed.
                    if self.is_set() {
                        drop(waiters);
                        waker.wake(coroutine::WakeReason::Notified);
                    } else {
                        waiters.push(waker);
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
