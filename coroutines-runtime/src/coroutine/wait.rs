//! What a parked coroutine waits for, and since when: recorded at every
//! park for dumps (`scheduler::dump`), at the price of three relaxed
//! stores and a coarse clock read.

use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::id::CoroutineId;

/// What a parked coroutine waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Wait {
    /// A descriptor to become readable, or writable if `write`.
    Fd {
        /// The descriptor.
        fd: i32,
        /// Whether it waits to write.
        write: bool,
    },
    /// Any of several descriptors (`poll`, `select`, an event loop).
    Fds,
    /// A `std::sync` lock, condition variable, channel or parker: a futex
    /// word.
    Futex,
    /// Time to pass (`sleep`).
    Sleep,
    /// Another coroutine to finish (`join`).
    Join(CoroutineId),
    /// A call running on a helper thread of the blocking pool (a name
    /// lookup, joining an OS thread, `spawn_blocking`).
    Pool,
    /// The coroutines of a `coroutines::scope` to end.
    Scope,
    /// A stack to run on, before its first run: the process is at its
    /// memory-map limit (see `Stats::stack_waits`).
    Stack,
    /// Anything else.
    Other,
}

const TAG_SHIFT: u32 = 56;
const PAYLOAD: u64 = (1 << TAG_SHIFT) - 1;

impl Wait {
    fn pack(self) -> u64 {
        let (tag, payload) = match self {
            Wait::Fd { fd, write } => (1, (fd as u32 as u64) << 1 | write as u64),
            Wait::Fds => (2, 0),
            Wait::Futex => (3, 0),
            Wait::Sleep => (4, 0),
            Wait::Join(id) => (5, id.as_u64().get() & PAYLOAD),
            Wait::Pool => (6, 0),
            Wait::Other => (7, 0),
            Wait::Stack => (8, 0),
            Wait::Scope => (9, 0),
        };
        (tag << TAG_SHIFT) | payload
    }

    fn unpack(packed: u64) -> Wait {
        let payload = packed & PAYLOAD;
        match packed >> TAG_SHIFT {
            1 => Wait::Fd {
                fd: (payload >> 1) as u32 as i32,
                write: payload & 1 != 0,
            },
            2 => Wait::Fds,
            3 => Wait::Futex,
            4 => Wait::Sleep,
            5 => CoroutineId::from_u64(payload).map_or(Wait::Other, Wait::Join),
            6 => Wait::Pool,
            8 => Wait::Stack,
            9 => Wait::Scope,
            _ => Wait::Other,
        }
    }
}

/// A coroutine's last park: what, since when, until when.
#[derive(Default)]
pub(crate) struct WaitRecord {
    what: AtomicU64,
    /// Nanoseconds on `CLOCK_MONOTONIC_COARSE`.
    since: AtomicU64,
    /// Nanoseconds since `epoch()`, 0 for none.
    deadline: AtomicU64,
}

/// One park, as a dump shows it.
#[derive(Clone, Copy, Debug)]
pub struct Waiting {
    /// What it waits for.
    pub what: Wait,
    /// How long it has waited so far.
    pub waited: Duration,
    /// How long until its deadline, if it has one (zero once passed).
    pub remaining: Option<Duration>,
}

impl WaitRecord {
    /// Records a park that starts now.
    pub(crate) fn note(&self, what: Wait, deadline: Option<Instant>) {
        self.what.store(what.pack(), Ordering::Relaxed);
        self.since.store(coarse_now(), Ordering::Relaxed);
        let deadline = deadline.map_or(0, |d| {
            (d.saturating_duration_since(epoch()).as_nanos() as u64).max(1)
        });
        self.deadline.store(deadline, Ordering::Relaxed);
    }

    /// The last park recorded (racy: it may be ending as it is read).
    pub(crate) fn read(&self) -> Waiting {
        let deadline = self.deadline.load(Ordering::Relaxed);
        Waiting {
            what: Wait::unpack(self.what.load(Ordering::Relaxed)),
            waited: Duration::from_nanos(
                coarse_now().saturating_sub(self.since.load(Ordering::Relaxed)),
            ),
            remaining: (deadline != 0).then(|| {
                let at = epoch() + Duration::from_nanos(deadline);
                at.saturating_duration_since(Instant::now())
            }),
        }
    }
}

/// Sets [`epoch`]; on a plain thread, before the first park.
pub(crate) fn init_epoch() {
    epoch();
}

/// A fixed `Instant` that deadlines are recorded from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds: a few nanoseconds to read
/// (vDSO), precise to the scheduler tick, plenty for "waiting for 3 s".
pub(crate) fn coarse_now() -> u64 {
    crate::sys::clock_nanos(libc::CLOCK_MONOTONIC_COARSE)
}
