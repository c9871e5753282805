//! A worker's timers: a min-heap of deadlines, each waking one park.

use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::coroutine::{WakeReason, Waker};

/// Below this many entries the heap is never compacted.
const COMPACT_MIN: usize = 1024;

struct Entry {
    deadline: Instant,
    /// Breaks ties so equal deadlines fire in arming order.
    seq: u64,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed, so `BinaryHeap` (a max-heap) yields the earliest first.
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}

/// Deadlines of parked coroutines. Owned by one worker; not shared.
///
/// A park that ends early leaves its entry behind (cancellation is lazy: the
/// waker of a finished park does nothing). So that such entries cannot pile
/// up, the heap drops them whenever it has doubled since the last sweep.
pub(crate) struct Timers {
    heap: BinaryHeap<Entry>,
    next_seq: u64,
    sweep_at: usize,
}

impl Timers {
    pub(crate) fn new() -> Timers {
        Timers {
            heap: BinaryHeap::new(),
            next_seq: 0,
            sweep_at: COMPACT_MIN,
        }
    }

    /// Arms a timer that wakes `waker` with `TimedOut` at `deadline`.
    pub(crate) fn insert(&mut self, deadline: Instant, waker: Waker) {
        if self.heap.len() >= self.sweep_at {
            self.heap.retain(|entry| entry.waker.is_waiting());
            self.sweep_at = (self.heap.len() * 2).max(COMPACT_MIN);
        }
        self.next_seq += 1;
        self.heap.push(Entry {
            deadline,
            seq: self.next_seq,
            waker,
        });
    }

    /// Wakes every park whose deadline is at or before `now`.
    pub(crate) fn fire(&mut self, now: Instant) {
        while let Some(entry) = self.heap.peek() {
            if entry.deadline > now {
                break;
            }
            let entry = self.heap.pop().expect("peeked");
            entry.waker.wake(WakeReason::TimedOut);
        }
    }

    /// How long until the earliest live deadline, `None` if there is none.
    pub(crate) fn next_timeout(&mut self, now: Instant) -> Option<Duration> {
        while let Some(entry) = self.heap.peek() {
            if entry.waker.is_waiting() {
                return Some(entry.deadline.saturating_duration_since(now));
            }
            self.heap.pop();
        }
        None
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Removes every entry, returning their wakers (used at shutdown).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Waker> + '_ {
        self.heap.drain().map(|entry| entry.waker)
    }
}
