//! An intrusive FIFO of parked coroutines, one per bucket.
//!
//! Nodes live in the frames of the coroutines that wait (see `wait.rs`), not
//! on the heap: a wait allocates nothing, and a coroutine whose wait times
//! out unlinks its own node in O(1). A node's frame stays put while the
//! coroutine is suspended, and the coroutine unlinks it (under the bucket
//! lock) before that frame returns, so a pointer found in the queue is valid
//! for as long as the bucket lock is held.

use core::ptr;

use crate::coroutine::Waker;

/// One parked coroutine: the futex word it waits on and how to wake it.
pub(super) struct Node {
    /// The futex word's address: the key.
    addr: usize,
    /// `Some` exactly while the node is linked; whoever unlinks it takes the
    /// waker, so "linked" needs no separate flag.
    waker: Option<Waker>,
    prev: *mut Node,
    next: *mut Node,
}

impl Node {
    pub(super) const fn new(addr: usize) -> Node {
        Node {
            addr,
            waker: None,
            prev: ptr::null_mut(),
            next: ptr::null_mut(),
        }
    }
}

/// The waiters of one bucket, oldest first. Only touched under the bucket's
/// lock.
pub(super) struct Queue {
    head: *mut Node,
    tail: *mut Node,
}

// SAFETY: the queue is only reached through its bucket's `SpinLock`, which
// hands it to one thread at a time; the nodes it points to are kept alive by
// the protocol described in the module docs.
unsafe impl Send for Queue {}

impl Queue {
    pub(super) const fn new() -> Queue {
        Queue {
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
        }
    }

    /// Appends `node`, which will be woken through `waker`.
    ///
    /// # Safety
    /// `node` is valid, not linked, and stays valid and unmoved until it is
    /// unlinked (by [`drain_where`](Self::drain_where) or [`remove`](Self::remove)).
    pub(super) unsafe fn push_back(&mut self, node: *mut Node, waker: Waker) {
        // SAFETY: valid and exclusively ours under the bucket lock, per the
        // contract; `tail`, if any, is a linked node and so valid too.
        unsafe {
            (*node).waker = Some(waker);
            (*node).prev = self.tail;
            (*node).next = ptr::null_mut();
            match self.tail.as_mut() {
                Some(tail) => tail.next = node,
                None => self.head = node,
            }
        }
        self.tail = node;
    }

    /// Unlinks `node` if it is still linked and returns its waker (`None` if
    /// a waker already took it out).
    ///
    /// # Safety
    /// `node` is valid, and if linked, linked in this queue.
    pub(super) unsafe fn remove(&mut self, node: *mut Node) -> Option<Waker> {
        // SAFETY: per the contract; linked neighbours are valid.
        unsafe {
            let waker = (*node).waker.take()?;
            self.unlink(node);
            Some(waker)
        }
    }

    /// Unlinks the waiters for which `select(addr, waker)` holds, oldest
    /// first, handing each one's waker to `take` until it returns `false`.
    /// Returns how many were unlinked.
    pub(super) fn drain_where(
        &mut self,
        mut select: impl FnMut(usize, &Waker) -> bool,
        mut take: impl FnMut(Waker) -> bool,
    ) -> usize {
        let mut unlinked = 0;
        let mut cursor = self.head;
        // SAFETY: every node reached from `head` is linked, hence valid while
        // the caller holds the bucket lock. `next` is read before the node is
        // unlinked: once unlinked, its coroutine may return and free it (as
        // soon as it gets the lock), so it is not touched again.
        unsafe {
            while let Some(node) = cursor.as_mut() {
                cursor = node.next;
                let waker = node.waker.as_ref().expect("a linked node holds its waker");
                if !select(node.addr, waker) {
                    continue;
                }
                let waker = node.waker.take().expect("a linked node holds its waker");
                self.unlink(node);
                unlinked += 1;
                if !take(waker) {
                    break;
                }
            }
        }
        unlinked
    }

    /// # Safety
    /// `node` is linked in this queue.
    unsafe fn unlink(&mut self, node: *mut Node) {
        // SAFETY: per the contract; its neighbours are linked, hence valid.
        unsafe {
            let (prev, next) = ((*node).prev, (*node).next);
            match prev.as_mut() {
                Some(prev) => prev.next = next,
                None => self.head = next,
            }
            match next.as_mut() {
                Some(next) => next.prev = prev,
                None => self.tail = prev,
            }
            (*node).prev = ptr::null_mut();
            (*node).next = ptr::null_mut();
        }
    }
}
