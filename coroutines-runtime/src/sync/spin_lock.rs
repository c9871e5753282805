//! A tiny test-and-test-and-set lock for short critical sections.

use core::cell::UnsafeCell;
use core::hint;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

/// Spins this many times before giving the processor away; critical sections
/// guarded by this lock are a handful of instructions long.
const SPINS_BEFORE_YIELD: u32 = 64;

/// A mutual-exclusion lock that never blocks through the hook layer.
///
/// Only for critical sections that neither allocate from a contended path nor
/// call back into user code.
pub(crate) struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out at most one guard at a time, so `T` is accessed
// by one thread at a time.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the value.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T: Default> Default for SpinLock<T> {
    fn default() -> Self {
        SpinLock::new(T::default())
    }
}

impl<T> SpinLock<T> {
    pub(crate) const fn new(value: T) -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock if it is free, without waiting.
    pub(crate) fn try_lock(&self) -> Option<SpinGuard<'_, T>> {
        self.locked
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
            // Made only on success: a guard made and dropped on failure
            // would let go of the holder's lock.
            .then(|| SpinGuard { lock: self })
    }

    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        let mut spins = 0;
        loop {
            if !self.locked.load(Ordering::Relaxed)
                && self
                    .locked
                    .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return SpinGuard { lock: self };
            }
            spins += 1;
            if spins < SPINS_BEFORE_YIELD {
                hint::spin_loop();
            } else {
                // The holder was preempted; let it run.
                crate::sys::sched_yield();
            }
        }
    }
}

pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        // `SeqCst`, so that a holder that looks for deferred work right after
        // letting go cannot miss work deferred by a failed `try_lock`.
        self.lock.locked.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::SpinLock;

    #[test]
    fn a_failed_try_lock_leaves_the_holder_its_lock() {
        let lock = SpinLock::new(0);
        let held = lock.lock();
        assert!(lock.try_lock().is_none());
        assert!(
            lock.try_lock().is_none(),
            "the failed try_lock let go of it"
        );
        drop(held);
        assert!(lock.try_lock().is_some());
    }
}
