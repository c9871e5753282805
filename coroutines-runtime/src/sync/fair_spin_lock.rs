//! A spin lock that a waiter kept out too long gets next, for a while.
//!
//! With [`SpinLock`](super::SpinLock) whoever finds the lock free takes it:
//! a thread that takes it again right after letting go (a plain thread
//! that changes a descriptor's mode in a loop) can win it every time, and a
//! worker that waits for it stops every coroutine on its thread (0.75 s
//! seen). Strict turns (a ticket lock) bound that wait, but make every
//! taker wait for every earlier one, and an earlier one may not run: a
//! low-priority thread's turn stalled a worker for seconds, and a waiter
//! in a long signal handler, or one that died, stalled all later ones.
//!
//! Here a waiter that has waited [`STARVING_AFTER`] marks itself, and the
//! others leave the lock to it; but only for [`DEFER_AT_MOST`] from the
//! mark: a marked waiter that does not come (preempted, in a handler,
//! gone) costs the others that long at the most.
//!
//! The lock knows its holder's thread, so that a signal handler can wait
//! for a holder that is another thread, and not for the code it
//! interrupted.

use core::cell::UnsafeCell;
use core::hint;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use core::time::Duration;

use crate::sys;

/// Spins this many times before giving the processor away (to a holder
/// that was preempted, or to a marked waiter).
const SPINS_BEFORE_YIELD: u32 = 64;
/// How long a waiter waits before it asks the others to let it in.
const STARVING_AFTER: u64 = 50_000;
/// How long, from its mark, the others leave the lock to a marked waiter.
const DEFER_AT_MOST: u64 = 1_000_000;

/// A mutual-exclusion lock that never blocks through the hook layer, and
/// that no taker keeps from a waiter for long.
pub(crate) struct FairSpinLock<T> {
    /// The holder's thread pointer (`sys::thread_self`, a coroutine's own
    /// under thread identity), 0 when free. Taking the lock and naming
    /// the holder are one step: a handler never sees it taken by nobody.
    holder: AtomicUsize,
    /// When a waiter kept out marked itself (`sys::monotonic_nanos`), 0
    /// for none. Never refreshed by the waiter that made it: one that does
    /// not come holds the others up once, not for ever.
    starving_since: AtomicU64,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out at most one guard at a time, so `T` is accessed
// by one thread at a time.
unsafe impl<T: Send> Sync for FairSpinLock<T> {}

impl<T> FairSpinLock<T> {
    pub(crate) const fn new(value: T) -> Self {
        FairSpinLock {
            holder: AtomicUsize::new(0),
            starving_since: AtomicU64::new(0),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock for thread `me` if it is free; else tells who holds
    /// it.
    fn try_lock_as(&self, me: usize) -> Result<FairSpinGuard<'_, T>, usize> {
        self.holder
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            // Made only on success: a guard dropped on failure would let go
            // of the holder's lock.
            .map(|_| FairSpinGuard { lock: self })
    }

    /// Takes the lock in a signal handler, which must not wait for the
    /// code it interrupted: `None` at once if this thread holds it (the
    /// interrupted code does), else waits for the holder, another thread,
    /// up to `patience` (a holder that was preempted, or stopped by a
    /// handler of its own).
    pub(crate) fn lock_in_handler(&self, patience: Duration) -> Option<FairSpinGuard<'_, T>> {
        let me = sys::thread_self();
        let mut since = 0;
        let mut spins = 0;
        loop {
            match self.try_lock_as(me) {
                Ok(guard) => return Some(guard),
                Err(holder) if holder == me => return None,
                Err(_) => {}
            }
            spins += 1;
            if spins < SPINS_BEFORE_YIELD {
                hint::spin_loop();
                continue;
            }
            sys::sched_yield();
            let now = sys::monotonic_nanos();
            if since == 0 {
                since = now;
            } else if now - since >= patience.as_nanos() as u64 {
                return None;
            }
        }
    }

    /// Takes the lock, first leaving it to a waiter that marked itself not
    /// long ago.
    pub(crate) fn lock(&self) -> FairSpinGuard<'_, T> {
        let me = sys::thread_self();
        let mut mine = 0;
        let mut first_miss = 0;
        let mut spins = 0;
        loop {
            let mark = self.starving_since.load(Ordering::Relaxed);
            let defer = mark != 0 && mark != mine && {
                let now = sys::monotonic_nanos();
                now.saturating_sub(mark) < DEFER_AT_MOST
            };
            if !defer && self.holder.load(Ordering::Relaxed) == 0 {
                if let Ok(guard) = self.try_lock_as(me) {
                    if mine != 0 {
                        // Only this waiter's own mark goes; a stale one was
                        // perhaps replaced by another's.
                        let _ = self.starving_since.compare_exchange(
                            mine,
                            0,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    return guard;
                }
            }
            spins += 1;
            if spins < SPINS_BEFORE_YIELD {
                hint::spin_loop();
                continue;
            }
            sys::sched_yield();
            if mine == 0 && !defer {
                let now = sys::monotonic_nanos();
                if first_miss == 0 {
                    first_miss = now;
                } else if now - first_miss >= STARVING_AFTER
                    && (mark == 0 || now.saturating_sub(mark) >= DEFER_AT_MOST)
                    && self
                        .starving_since
                        .compare_exchange(mark, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    mine = now;
                }
            }
        }
    }

    /// Makes the lock free and its value `value`, forgetting the old one.
    ///
    /// # Safety
    /// No other thread may use the lock now or hold a guard of it: in the
    /// child of a `fork`, whose only thread was not the holder.
    pub(crate) unsafe fn reset(&self, value: T) {
        // SAFETY: per the contract, nobody else reaches the value. The old
        // one is not dropped: its holder may have left it half changed.
        unsafe { self.value.get().write(value) };
        self.starving_since.store(0, Ordering::Relaxed);
        self.holder.store(0, Ordering::Release);
    }
}

pub(crate) struct FairSpinGuard<'a, T> {
    lock: &'a FairSpinLock<T>,
}

impl<T> Deref for FairSpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for FairSpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for FairSpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.holder.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::{FairSpinLock, DEFER_AT_MOST};
    use crate::sys;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn excludes_and_counts() {
        let lock = Arc::new(FairSpinLock::new(0u64));
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

    /// A thread pointer that no thread has.
    const ANOTHER_THREAD: usize = usize::MAX;

    #[test]
    fn a_failed_attempt_leaves_the_holder_its_lock() {
        let lock = FairSpinLock::new(());
        let held = lock.lock();
        assert!(lock.try_lock_as(ANOTHER_THREAD).is_err());
        assert!(
            lock.try_lock_as(ANOTHER_THREAD).is_err(),
            "the failed attempt let go"
        );
        drop(held);
        assert!(lock.try_lock_as(ANOTHER_THREAD).is_ok());
    }

    /// A thread that takes the lock again right after letting it go, in a
    /// loop, does not keep a waiter out.
    #[test]
    fn a_looping_taker_does_not_starve_a_waiter() {
        let lock = Arc::new(FairSpinLock::new(()));
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

    /// A waiter that marked itself and never came (it died, or waits in a
    /// signal handler) holds the others up for the bound at the most, once.
    #[test]
    fn a_mark_that_is_not_taken_up_expires() {
        let lock = FairSpinLock::new(());
        lock.starving_since
            .store(sys::monotonic_nanos(), Ordering::Relaxed);
        let start = Instant::now();
        drop(lock.lock());
        let first = start.elapsed();
        assert!(
            first >= Duration::from_nanos(DEFER_AT_MOST / 2),
            "the mark was ignored ({first:?})"
        );
        assert!(first < Duration::from_millis(100), "took {first:?}");
        let start = Instant::now();
        for _ in 0..1000 {
            drop(lock.lock());
        }
        assert!(
            start.elapsed() < Duration::from_millis(50),
            "a stale mark still defers: 1,000 takes in {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_handler_does_not_wait_for_its_own_thread() {
        let lock = FairSpinLock::new(());
        let _held = lock.lock();
        let start = Instant::now();
        assert!(lock.lock_in_handler(Duration::from_secs(10)).is_none());
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    /// A handler waits for a holder that is another thread, as long as its
    /// patience lasts.
    #[test]
    fn a_handler_waits_for_another_thread_for_a_while() {
        let lock = Arc::new(FairSpinLock::new(0));
        let (taken, release) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let holder = {
            let (lock, taken, release) = (lock.clone(), taken.clone(), release.clone());
            std::thread::spawn(move || {
                let mut held = lock.lock();
                taken.store(true, Ordering::SeqCst);
                while !release.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                *held = 1;
            })
        };
        while !taken.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let start = Instant::now();
        assert!(lock.lock_in_handler(Duration::from_millis(20)).is_none());
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(10) && waited < Duration::from_secs(1),
            "gave up after {waited:?}"
        );
        let releaser = {
            let release = release.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(5));
                release.store(true, Ordering::SeqCst);
            })
        };
        let guard = lock.lock_in_handler(Duration::from_secs(10));
        assert_eq!(guard.as_deref(), Some(&1), "did not wait for the holder");
        drop(guard);
        holder.join().unwrap();
        releaser.join().unwrap();
    }

    #[test]
    fn reset_frees_a_lock_held_elsewhere() {
        let lock = FairSpinLock::new(1);
        std::mem::forget(lock.lock());
        // SAFETY: the guard is forgotten; no thread uses the lock.
        unsafe { lock.reset(2) };
        assert_eq!(
            *lock.try_lock_as(ANOTHER_THREAD).expect("free after reset"),
            2
        );
    }
}
