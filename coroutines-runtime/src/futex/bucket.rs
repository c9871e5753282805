//! The table: a fixed array of buckets, each a spin lock over a wait queue
//! plus a count of its waiters that wakers read without the lock.

use core::ops::DerefMut;
use core::sync::atomic::{fence, AtomicU32, AtomicUsize, Ordering};

use super::queue::Queue;
use crate::sync::SpinLock;

/// Buckets in the table. Fixed (the table must work before `main` and from
/// any thread without allocating) and a power of two; with 512 buckets,
/// unrelated futex words rarely share a lock even with thousands of
/// waiters.
const BUCKETS: usize = 512;
const BUCKET_BITS: u32 = BUCKETS.trailing_zeros();

/// One shard of the table. Aligned to a cache line so that waiters on
/// neighbouring buckets do not contend on the same line.
#[repr(align(64))]
pub(super) struct Bucket {
    /// Linked nodes in `queue`. Raised under the lock *before* the waiter
    /// checks the futex word; read by wakers without the lock (see
    /// [`Bucket::may_have_waiters`]).
    waiters: AtomicUsize,
    /// Slow-path wakes on this bucket, to give kernel waiters a turn now and
    /// then (see `wake.rs`).
    turns: AtomicU32,
    queue: SpinLock<Queue>,
}

impl Bucket {
    const fn new() -> Bucket {
        Bucket {
            waiters: AtomicUsize::new(0),
            turns: AtomicU32::new(0),
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

    pub(super) fn lock(&self) -> impl DerefMut<Target = Queue> + '_ {
        self.queue.lock()
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
    pub(super) fn enter(&self) {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Counts `n` waiters out (unlinked, or never linked). Call under the
    /// lock.
    pub(super) fn leave(&self, n: usize) {
        self.waiters.fetch_sub(n, Ordering::Relaxed);
    }

    /// Whether any coroutine may wait in this bucket: the wakers' fast path,
    /// one fence and one load. A stale non-zero only costs taking the lock.
    pub(super) fn may_have_waiters(&self) -> bool {
        fence(Ordering::SeqCst);
        self.waiters.load(Ordering::Relaxed) != 0
    }

    /// Linked waiters, for tests.
    #[cfg(test)]
    pub(super) fn waiters(&self) -> usize {
        self.waiters.load(Ordering::SeqCst)
    }

    /// Counts one slow-path wake; returns its ordinal.
    pub(super) fn next_turn(&self) -> u32 {
        self.turns.fetch_add(1, Ordering::Relaxed)
    }
}

static TABLE: [Bucket; BUCKETS] = [const { Bucket::new() }; BUCKETS];
