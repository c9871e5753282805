//! A first-come, first-served spin lock.
//!
//! [`SpinLock`](super::SpinLock) lets whoever finds it free take it: a
//! thread that takes it again right after letting go (a plain thread that
//! changes a descriptor's mode in a loop) can win it every time, and a
//! worker that waits for it then stops every coroutine on its thread (0.75 s
//! seen). Here each taker draws a ticket and is served in turn, so a waiter
//! waits for at most the takers ahead of it.

use core::cell::UnsafeCell;
use core::hint;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

/// Spins this many times before giving the processor away (to a holder or
/// an earlier ticket that was preempted).
const SPINS_BEFORE_YIELD: u32 = 64;

/// A mutual-exclusion lock that never blocks through the hook layer, and
/// serves its takers in the order they came.
pub(crate) struct TicketLock<T> {
    /// The next ticket to hand out.
    next: AtomicU32,
    /// The ticket that holds, or may take, the lock now.
    serving: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out at most one guard at a time, so `T` is accessed
// by one thread at a time.
unsafe impl<T: Send> Sync for TicketLock<T> {}

impl<T> TicketLock<T> {
    pub(crate) const fn new(value: T) -> Self {
        TicketLock {
            next: AtomicU32::new(0),
            serving: AtomicU32::new(0),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock if it is free and nobody waits for it, without
    /// waiting (for signal handlers, which must not wait for the code they
    /// interrupted).
    pub(crate) fn try_lock(&self) -> Option<TicketGuard<'_, T>> {
        // While no ticket past `serving` is out, nobody holds the lock nor
        // can let it go, so `serving` stays as read until the exchange.
        let serving = self.serving.load(Ordering::Acquire);
        self.next
            .compare_exchange(
                serving,
                serving.wrapping_add(1),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
            .then(|| TicketGuard { lock: self })
    }

    /// Takes the lock once the takers ahead have let it go.
    pub(crate) fn lock(&self) -> TicketGuard<'_, T> {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        let mut spins = 0;
        while self.serving.load(Ordering::Acquire) != ticket {
            spins += 1;
            if spins < SPINS_BEFORE_YIELD {
                hint::spin_loop();
            } else {
                crate::sys::sched_yield();
            }
        }
        TicketGuard { lock: self }
    }
}

pub(crate) struct TicketGuard<'a, T> {
    lock: &'a TicketLock<T>,
}

impl<T> Deref for TicketGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for TicketGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for TicketGuard<'_, T> {
    fn drop(&mut self) {
        // Only the holder moves `serving`.
        self.lock.serving.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::TicketLock;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn excludes_and_counts() {
        let lock = Arc::new(TicketLock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        *lock.lock() += 1;
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(*lock.lock(), 40_000);
    }

    #[test]
    fn try_lock_fails_while_held_or_awaited() {
        let lock = TicketLock::new(());
        let held = lock.lock();
        assert!(lock.try_lock().is_none());
        drop(held);
        let again = lock.try_lock();
        assert!(again.is_some());
        drop(again);
        assert!(lock.try_lock().is_some());
    }

    /// A thread that takes the lock again right after letting it go, in a
    /// loop, does not keep a waiter out: the waiter is served next.
    #[test]
    fn a_looping_taker_does_not_starve_a_waiter() {
        let lock = Arc::new(TicketLock::new(()));
        let stop = Arc::new(AtomicBool::new(false));
        let looper = {
            let (lock, stop) = (lock.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _held = lock.lock();
                    // A critical section as long as a system call.
                    let until = Instant::now() + Duration::from_micros(2);
                    while Instant::now() < until {}
                }
            })
        };
        let mut longest = Duration::ZERO;
        for _ in 0..2000 {
            let start = Instant::now();
            drop(lock.lock());
            longest = longest.max(start.elapsed());
        }
        stop.store(true, Ordering::Relaxed);
        looper.join().unwrap();
        assert!(
            longest < Duration::from_millis(100),
            "a wait took {longest:?}"
        );
    }
}
