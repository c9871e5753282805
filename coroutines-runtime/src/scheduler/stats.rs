//! Runtime statistics.

use core::sync::atomic::{AtomicU64, Ordering};

/// Event counters of one runtime; workers keep their own switch counts.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) spawned: AtomicU64,
    pub(crate) finished: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    pub(crate) migrations: AtomicU64,
    /// Incidents of a blocked worker (see `monitor`).
    pub(crate) blocked_workers: AtomicU64,
    /// Coroutines the monitor moved off blocked workers.
    pub(crate) moved: AtomicU64,
    /// Spare workers started.
    pub(crate) spares_started: AtomicU64,
}

/// A snapshot of a runtime's counters.
///
/// Counters only grow; `alive` is derived. Values read while the runtime runs
/// are each exact but not taken at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Worker threads.
    pub workers: usize,
    /// Coroutines spawned.
    pub spawned: u64,
    /// Coroutines that have not finished (queued, running or parked).
    pub alive: u64,
    /// Switches into a coroutine.
    pub context_switches: u64,
    /// Started coroutines moved to another worker by work stealing.
    pub migrations: u64,
    /// Readiness events delivered by the reactor.
    pub reactor_events: u64,
    /// Parks ended by their deadline.
    pub timeouts: u64,
    /// Times a worker ran one coroutine for longer than the blocked-worker
    /// threshold while others waited behind it.
    pub blocked_workers: u64,
    /// Coroutines moved off blocked workers to run elsewhere.
    pub moved_off_blocked: u64,
    /// Spare workers started because every worker was blocked.
    pub spare_workers_started: u64,
}

impl Counters {
    pub(crate) fn load(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}
