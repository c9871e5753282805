//! The table: a fixed array of buckets, each a spin lock over a wait queue
//! plus a count of its waiters that wakers read without the lock.

use core::mem::ManuallyDrop;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{compiler_fence, fence, AtomicBool, AtomicU32, AtomicUsize, Ordering};

use super::queue::Queue;
use crate::coroutine::switch;
use crate::sync::membarrier;
use crate::sync::{SpinGuard, SpinLock};

/// Buckets in the table. Fixed (the table must work before `main` and from
/// any thread without allocating) and a power of two; with 512 buckets,
/// unrelated futex words rarely share a lock even with thousands of
/// waiters.
const BUCKETS: usize = 512;
const BUCKET_BITS: u32 = BUCKETS.trailing_zeros();

/// Wakes in a row that find an armed bucket empty before it is disarmed.
/// Each costs a fence (~20 ns here); re-arming costs one `membarrier`
/// (2-4 us here with the process's other thread running), so buckets that
/// come and go pay at most about twice what the fences would have cost.
pub(super) const DISARM_AFTER: u32 = 256;

/// One shard of the table. Aligned to a cache line so that waiters on
/// neighbouring buckets do not contend on the same line.
#[repr(align(64))]
pub(super) struct Bucket {
    /// Linked nodes in `queue`. Raised under the lock *before* the waiter
    /// checks the futex word; read by wakers without the lock (see
    /// [`Bucket::may_have_waiters`]).
    waiters: AtomicUsize,
    /// Whether wakers must fence and read `waiters`. A disarmed bucket has
    /// no waiter, and the waiter that arms it again runs `membarrier` before
    /// it reads the word (see [`Bucket::enter`]). Starts armed, and is only
    /// disarmed where `membarrier` works. Changed under the lock.
    armed: AtomicBool,
    /// Wakes that found this bucket armed but empty since a waiter last
    /// entered; counted without a lock, so approximately.
    idle_wakes: AtomicU32,
    /// Slow-path wakes on this bucket, to give kernel waiters a turn now and
    /// then (see `wake.rs`).
    turns: AtomicU32,
    /// A signal handler's wake found the lock taken, perhaps by the code it
    /// interrupted on its own thread, which it cannot wait for: whoever
    /// lets go of the lock next wakes every coroutine parked here (see
    /// [`Bucket::lock_or_defer`]).
    deferred_wake: AtomicBool,
    queue: SpinLock<Queue>,
}

impl Bucket {
    const fn new() -> Bucket {
        Bucket {
            waiters: AtomicUsize::new(0),
            armed: AtomicBool::new(true),
            idle_wakes: AtomicU32::new(0),
            turns: AtomicU32::new(0),
            deferred_wake: AtomicBool::new(false),
            queue: SpinLock::new(Queue::new()),
        }
    }

    /// The bucket of the futex word at `addr`.
    pub(super) fn of(addr: usize) -> &'static Bucket {
        // Fibonacci hashing of the word index: futex words are 4-byte
        // aligned, and neighbouring words should land in different buckets.
        let hash = ((addr >> 2) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        &TABLE[(hash >> (u64::BITS - BUCKET_BITS)) as usize]
    }

    /// Every bucket of the table.
    pub(super) fn all() -> &'static [Bucket] {
        &TABLE
    }

    pub(super) fn lock(&self) -> BucketGuard<'_> {
        self.guard(self.queue.lock(), true)
    }

    /// The lock for a wake. In a signal handler, only if it is free: the
    /// holder may be the code the handler interrupted. If not, the wake is
    /// left to the holder, and `None` returned: when it lets go, every
    /// coroutine parked in the bucket wakes, whatever its word, and
    /// re-checks its condition, as after any futex wake. With `settles`,
    /// letting go of this guard makes such wakes too.
    pub(super) fn lock_or_defer(&self, settles: bool) -> Option<BucketGuard<'_>> {
        if !switch::in_signal_handler() {
            return Some(self.guard(self.queue.lock(), settles));
        }
        if let Some(queue) = self.queue.try_lock() {
            return Some(self.guard(queue, settles));
        }
        self.deferred_wake.store(true, Ordering::SeqCst);
        // The holder may have let go before it could see the flag; then
        // this guard's drop takes the wake.
        self.queue
            .try_lock()
            .map(|queue| self.guard(queue, settles))
    }

    fn guard<'a>(&'a self, queue: SpinGuard<'a, Queue>, settles: bool) -> BucketGuard<'a> {
        BucketGuard {
            bucket: self,
            queue: ManuallyDrop::new(queue),
            settles,
        }
    }

    /// Takes a wake that [`lock_or_defer`](Self::lock_or_defer) left, if
    /// any. Call after letting go of the lock.
    fn take_deferred_wake(&self) -> bool {
        self.deferred_wake.load(Ordering::SeqCst)
            && self.deferred_wake.swap(false, Ordering::SeqCst)
    }

    /// Counts a waiter in, before it checks the futex word. Call under the
    /// lock.
    ///
    /// Together with the fence in [`may_have_waiters`](Self::may_have_waiters)
    /// this is the classic store/load handshake (the kernel's futex code
    /// does the same): the waiter raises the count then reads the word; the
    /// waker has changed the word and then reads the count. With a
    /// sequentially consistent fence on each side, at least one of them sees
    /// the other's write: either the waiter sees the new value and does not
    /// sleep, or the waker sees the count and takes the lock, which it can
    /// only get once the waiter is linked.
    ///
    /// A waker that finds the bucket disarmed skips its fence. So the
    /// waiter that arms the bucket runs the fence on the wakers' behalf
    /// (`membarrier.rs`) before it reads the word: a waker that read
    /// `armed` as false has its store to the word visible by then.
    ///
    /// Returns false if that fence could not be run: the word the waiter
    /// reads next may then miss the store of a waker that skipped its fence
    /// a moment ago.
    #[must_use]
    pub(super) fn enter(&self) -> bool {
        let mut sure = true;
        if !self.armed.load(Ordering::Relaxed) {
            self.armed.store(true, Ordering::Relaxed);
            sure = membarrier::available() && membarrier::all_threads();
        }
        self.idle_wakes.store(0, Ordering::Relaxed);
        self.waiters.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        sure
    }

    /// Counts `n` waiters out (unlinked, or never linked). Call under the
    /// lock.
    pub(super) fn leave(&self, n: usize) {
        self.waiters.fetch_sub(n, Ordering::Relaxed);
    }

    /// Whether any coroutine may wait in this bucket: the wakers' fast path.
    /// One load when the bucket is disarmed; otherwise a fence and a second
    /// load, and after [`DISARM_AFTER`] empty looks in a row the bucket is
    /// disarmed. A stale non-zero only costs taking the lock.
    #[inline]
    pub(super) fn may_have_waiters(&self) -> bool {
        !self.disarmed() && self.armed_has_waiters()
    }

    /// No coroutine waits in this bucket, nor has one for a while, so a
    /// waker need not look further (see [`may_have_waiters`](Self::may_have_waiters)).
    /// One load.
    #[inline(always)]
    pub(super) fn disarmed(&self) -> bool {
        // The caller's store to the word stays before this load; the CPU's
        // side is the arming waiter's `membarrier`.
        compiler_fence(Ordering::SeqCst);
        !self.armed.load(Ordering::Relaxed)
    }

    /// [`may_have_waiters`](Self::may_have_waiters) of an armed bucket.
    #[inline(never)]
    fn armed_has_waiters(&self) -> bool {
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) != 0 {
            return true;
        }
        let idle = self.idle_wakes.load(Ordering::Relaxed) + 1;
        self.idle_wakes.store(idle, Ordering::Relaxed);
        // Never waits for the lock: this wake may come from a signal
        // handler that interrupted the lock's holder on this thread.
        if idle >= DISARM_AFTER && membarrier::available() {
            if let Some(_queue) = self.queue.try_lock().map(|queue| self.guard(queue, true)) {
                if self.waiters.load(Ordering::Relaxed) == 0 {
                    self.armed.store(false, Ordering::Relaxed);
                }
                self.idle_wakes.store(0, Ordering::Relaxed);
            }
        }
        false
    }

    /// Linked waiters, for tests.
    #[cfg(test)]
    pub(super) fn waiters(&self) -> usize {
        self.waiters.load(Ordering::SeqCst)
    }

    /// Whether wakers fence and look at the count, for tests.
    #[cfg(test)]
    pub(super) fn armed(&self) -> bool {
        self.armed.load(Ordering::SeqCst)
    }

    /// Counts one slow-path wake; returns its ordinal.
    pub(super) fn next_turn(&self) -> u32 {
        self.turns.fetch_add(1, Ordering::Relaxed)
    }
}

static TABLE: [Bucket; BUCKETS] = [const { Bucket::new() }; BUCKETS];

/// The bucket's lock; letting go of it makes the wakes that signal handlers
/// left meanwhile.
pub(super) struct BucketGuard<'a> {
    bucket: &'a Bucket,
    queue: ManuallyDrop<SpinGuard<'a, Queue>>,
    /// Whether letting go makes the deferred wakes; not for the guards of
    /// those wakes, which leave what handlers defer meanwhile to this one.
    settles: bool,
}

impl Deref for BucketGuard<'_> {
    type Target = Queue;
    fn deref(&self) -> &Queue {
        &self.queue
    }
}

impl DerefMut for BucketGuard<'_> {
    fn deref_mut(&mut self) -> &mut Queue {
        &mut self.queue
    }
}

impl Drop for BucketGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: dropped once, here; not used after.
        unsafe { ManuallyDrop::drop(&mut self.queue) };
        // After the release (`SeqCst`), against the handler's store and
        // then `try_lock`: one of the two sees the other. A loop, not a
        // recursion, however long handlers elsewhere keep deferring.
        while self.settles && self.bucket.take_deferred_wake() {
            super::wake::wake_every_parked(self.bucket);
        }
    }
}
