//! Synchronisation primitives for the runtime's own state.
//!
//! The runtime never takes a `std::sync` lock on its own paths: once the
//! futex hook is installed, such a lock taken inside a coroutine would park
//! it, and taken inside the scheduler it would recurse into the scheduler.

mod fair_spin_lock;
mod latch;
pub(crate) mod membarrier;
mod spin_lock;

pub(crate) use fair_spin_lock::{FairSpinGuard, FairSpinLock};
pub use latch::Latch;
pub(crate) use spin_lock::{SpinGuard, SpinLock};
