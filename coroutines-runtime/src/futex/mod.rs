//! An address-keyed table of parked futex waiters: how a coroutine waits on
//! a futex word without blocking its worker.
//!
//! The futex hook (`hooks/futex.rs`) turns a `FUTEX_WAIT` made inside a
//! coroutine into [`wait`], and every private `FUTEX_WAKE` into [`wake`],
//! which wakes coroutines from this table and OS threads through the kernel.
//!
//! The table is sharded like parking_lot's: a fixed array of buckets keyed
//! by a hash of the word's address (`bucket.rs`), each a [`SpinLock`] over
//! an intrusive queue whose nodes live in the waiting coroutines' frames
//! (`queue.rs`), so waiting allocates nothing. The word's value is checked
//! under the bucket lock, after the waiter is counted in, so a wake issued
//! after a store to the word cannot miss a waiter that checked before it
//! (`wait.rs`, `wake.rs`).
//!
//! Nothing here takes a lock that can block through the hooks, and the
//! locks are held only by code that never parks: the spin locks are taken
//! on the worker after the switch (registration), by wakers, and by a
//! coroutine that removes its own timed-out entry. A waker in a signal
//! handler never waits for one: the holder may be the code it interrupted,
//! so it leaves its wake to the holder (`Bucket::lock_or_defer`).
//!
//! A coroutine abandoned at shutdown while parked here keeps its entry (and
//! a reference to its task) until `Runtime::drop` sweeps the table with
//! [`release_runtime`] or a wake on the same word finds it; wakers skip such
//! entries without counting them.
//!
//! [`SpinLock`]: crate::sync::SpinLock

mod bucket;
mod queue;
mod shutdown;
#[cfg(test)]
mod tests;
mod wait;
mod wake;

pub(crate) use shutdown::release_runtime;
pub(crate) use wait::wait;
pub(crate) use wake::{kernel_only, wake};
