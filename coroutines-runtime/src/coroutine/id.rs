//! Process-wide unique coroutine identifiers.

use core::num::NonZeroU64;
use core::sync::atomic::{AtomicU64, Ordering};

/// A unique identifier for a coroutine, like [`std::thread::ThreadId`].
///
/// Identifiers are never reused within a process, across all runtimes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CoroutineId(NonZeroU64);

impl CoroutineId {
    pub(crate) fn next() -> CoroutineId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        CoroutineId(NonZeroU64::new(id).expect("coroutine ids never wrap a u64"))
    }

    /// The id numbered `n`, if `n` is not zero.
    pub(crate) fn from_u64(n: u64) -> Option<CoroutineId> {
        NonZeroU64::new(n).map(CoroutineId)
    }

    /// Returns the identifier as a number, unique within the process.
    pub fn as_u64(&self) -> NonZeroU64 {
        self.0
    }
}
