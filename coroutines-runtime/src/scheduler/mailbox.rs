//! A worker's mailbox: where a coroutine woken from a signal handler, or by
//! a wake that re-enters one of its worker's own queue operations, waits
//! for that worker.
//!
//! Either waker may have interrupted the very code that owns the worker's
//! other queues: a handler can interrupt a push to them on its thread, and
//! crossbeam's epoch collection runs other crates' deferred drops (which may
//! wake anyone) inside a push or pop. None of those queues is re-entrant;
//! even the injector's push waits for a pusher that is installing its next
//! block. The mailbox is an intrusive stack: a push is one compare-and-swap
//! loop that never waits for another pusher and never allocates.

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::coroutine::Task;

pub(crate) struct Mailbox {
    /// The newest task, linked to older ones through `Task::mailbox_next`.
    head: AtomicPtr<Task>,
    /// How many tasks wait, for statistics: counted before a push and
    /// after a take, so it may briefly include a push in flight.
    len: AtomicUsize,
}

impl Mailbox {
    pub(crate) const fn new() -> Mailbox {
        Mailbox {
            head: AtomicPtr::new(ptr::null_mut()),
            len: AtomicUsize::new(0),
        }
    }

    /// Leaves `task` for the worker. A task is in one queue at a time (its
    /// park word lets one waker schedule it), so its link is free.
    pub(crate) fn push(&self, task: Arc<Task>) {
        let task = Arc::into_raw(task).cast_mut();
        self.len.fetch_add(1, Ordering::Relaxed);
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: the task is ours until the exchange publishes it.
            unsafe { (*task).mailbox_next.store(head, Ordering::Relaxed) };
            match self
                .head
                .compare_exchange_weak(head, task, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => head = actual,
            }
        }
    }

    /// Whether no task waits here. One load.
    pub(crate) fn is_empty(&self) -> bool {
        self.head.load(Ordering::Relaxed).is_null()
    }

    /// How many tasks wait here (see `len`).
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Takes every task that waits here, oldest first.
    pub(crate) fn take_all(&self) -> TakenMail {
        let mut newest = self.head.swap(ptr::null_mut(), Ordering::Acquire);
        // Reverses the links, so that the tasks come out in wake order.
        let mut oldest = ptr::null_mut();
        let mut taken = 0;
        while !newest.is_null() {
            taken += 1;
            // SAFETY: taken out of the stack, the tasks are ours; each was
            // leaked by `push`.
            let next = unsafe { (*newest).mailbox_next.load(Ordering::Relaxed) };
            // SAFETY: as above.
            unsafe { (*newest).mailbox_next.store(oldest, Ordering::Relaxed) };
            oldest = newest;
            newest = next;
        }
        if taken != 0 {
            self.len.fetch_sub(taken, Ordering::Relaxed);
        }
        TakenMail { next: oldest }
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.take_all().for_each(drop);
    }
}

/// The tasks [`Mailbox::take_all`] took, oldest first. Those not iterated
/// are dropped with it.
pub(crate) struct TakenMail {
    next: *mut Task,
}

impl Iterator for TakenMail {
    type Item = Arc<Task>;

    fn next(&mut self) -> Option<Arc<Task>> {
        if self.next.is_null() {
            return None;
        }
        // SAFETY: a task leaked by `Mailbox::push` and taken by `take_all`,
        // owned by this iterator alone; its link is read before it is
        // handed out (and may be queued again).
        let task = unsafe { Arc::from_raw(self.next) };
        self.next = task.mailbox_next.load(Ordering::Relaxed);
        Some(task)
    }
}

impl Drop for TakenMail {
    fn drop(&mut self) {
        self.for_each(drop);
    }
}
