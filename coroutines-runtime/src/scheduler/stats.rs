//! Runtime statistics.

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use crate::coroutine::CoroutineId;

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
    /// Coroutines that could not be started.
    pub(crate) failed_to_start: AtomicU64,
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
    /// Waits that ended by their deadline before what they waited for
    /// came: socket timeouts, `Condvar::wait_timeout`, `recv_timeout`,
    /// `poll` with a timeout. Sleeps are not timeouts.
    pub timeouts: u64,
    /// Sleeps that ran their full time.
    pub sleeps: u64,
    /// New coroutines that had to wait for a stack because the process was
    /// at its memory-map limit (or out of memory), and started once a
    /// running coroutine ended.
    pub stack_waits: u64,
    /// Coroutines that never ran: no stack (with nothing to wait for), or
    /// no thread identity, could be made for them. Their `join` says why.
    pub failed_to_start: u64,
    /// Coroutines dropped before they finished: their runtime shut down
    /// while they were queued or suspended.
    pub abandoned: u64,
    /// Times a worker ran one coroutine for longer than the blocked-worker
    /// threshold while others waited behind it.
    pub blocked_workers: u64,
    /// Coroutines moved off blocked workers to run elsewhere.
    pub moved_off_blocked: u64,
    /// Spare workers started because every worker was blocked.
    pub spare_workers_started: u64,
}

/// A snapshot of one worker, for dashboards: how much work waits for it and
/// how busy it is. Like [`Stats`], each value is exact but the set is not
/// taken at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Its index: configured workers first, then spare ones.
    pub index: usize,
    /// Whether it is a spare worker, started by the blocked-worker monitor.
    pub spare: bool,
    /// Coroutines queued on it, ready to run.
    pub queued: usize,
    /// Coroutines homed on it that are parked.
    pub parked: usize,
    /// The coroutine it runs now, if any.
    pub running: Option<CoroutineId>,
    /// Time it has spent running coroutines and scheduling since it
    /// started (not asleep waiting for work).
    pub busy: Duration,
    /// Switches into a coroutine.
    pub context_switches: u64,
    /// Readiness events its reactor delivered.
    pub reactor_events: u64,
}

impl Counters {
    pub(crate) fn load(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}
