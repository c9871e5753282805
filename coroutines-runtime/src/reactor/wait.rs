//! The one way the hook layer waits: until a descriptor may be ready, or a
//! deadline passes.

use std::time::Instant;

use libc::c_int;

use super::fd_table::{self, FdEntry, Interest, FD_TABLE};
use crate::coroutine::{park, Wait, WakeReason, Waker};
use crate::scheduler;

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The descriptor may be ready, or the number changed files before the
    /// wait began: try the call again.
    Ready,
    /// The deadline passed first.
    TimedOut,
    /// The descriptor was closed or replaced while the coroutine waited.
    Closed,
    /// The descriptor cannot be waited on (epoll refuses it): make the call
    /// blocking.
    NotPollable,
}

/// One descriptor to wait on, with the state seen before the attempt that
/// would have blocked. Create it before that attempt, so that readiness
/// arriving in between is not lost.
pub(crate) struct FdWait {
    fd: c_int,
    entry: &'static FdEntry,
    interest: Interest,
    snapshot: u64,
    generation: u32,
}

impl FdWait {
    pub(crate) fn new(fd: c_int, entry: &'static FdEntry, interest: Interest) -> FdWait {
        FdWait {
            fd,
            entry,
            interest,
            generation: entry.generation(),
            snapshot: entry.snapshot(interest),
        }
    }

    /// The edge count seen before the attempt.
    pub(crate) fn snapshot(&self) -> u64 {
        self.snapshot
    }

    /// The generation seen before the attempt.
    pub(crate) fn generation(&self) -> u32 {
        self.generation
    }

    /// Looks up `fd` and snapshots it; `None` for untracked descriptors.
    pub(crate) fn lookup(fd: c_int, interest: Interest) -> Option<FdWait> {
        FD_TABLE
            .get(fd)
            .map(|entry| FdWait::new(fd, entry, interest))
    }

    /// Makes sure the worker's poller reports this descriptor.
    fn register(&self) -> Result<(), Outcome> {
        let poller = scheduler::current_poller().ok_or(Outcome::NotPollable)?;
        let mut state = self.entry.lock();
        let current = self.entry.generation();
        if current != self.generation {
            // Its file has ended: closed, or the caller's next attempt is
            // on the file there now.
            return Err(match self.entry.end_reason(self.generation, current) {
                WakeReason::Closed => Outcome::Closed,
                _ => Outcome::Ready,
            });
        }
        if state.note_registered(self.generation, poller.id) {
            return Ok(());
        }
        match poller.register(self.fd, fd_table::token(self.fd, self.generation)) {
            Ok(()) => Ok(()),
            Err(error) => {
                state.forget_registered(poller.id);
                Err(match error {
                    // Closed meanwhile: the next attempt says so.
                    libc::EBADF => Outcome::Ready,
                    _ => Outcome::NotPollable,
                })
            }
        }
    }

    /// The same wait, with the edges seen by now: readiness that came
    /// since `self` was made no longer ends it.
    fn renewed(&self) -> FdWait {
        FdWait {
            fd: self.fd,
            entry: self.entry,
            interest: self.interest,
            snapshot: self.entry.snapshot(self.interest),
            generation: self.generation,
        }
    }

    fn add(&self, waker: Waker) {
        self.entry
            .add_waiter(self.interest, self.snapshot, self.generation, waker);
    }
}

/// Parks the current coroutine until `wait`'s descriptor may be ready, it is
/// closed, or `deadline` passes.
pub(crate) fn wait_fd(wait: &FdWait, deadline: Option<Instant>) -> Outcome {
    wait_fds(core::slice::from_ref(wait), deadline)
}

/// Parks the current coroutine until any of `waits` may be ready, one is
/// closed, or `deadline` passes. Descriptors that cannot be waited on are
/// skipped (they are always ready for `poll`).
pub(crate) fn wait_fds(waits: &[FdWait], deadline: Option<Instant>) -> Outcome {
    let mut any = false;
    for wait in waits {
        match wait.register() {
            Ok(()) => any = true,
            Err(Outcome::NotPollable) if waits.len() > 1 => {}
            Err(outcome) => return outcome,
        }
    }
    if !any && deadline.is_none() {
        return Outcome::NotPollable;
    }
    let what = match waits {
        [one] => Wait::Fd {
            fd: one.fd,
            write: one.interest == Interest::Write,
        },
        _ => Wait::Fds,
    };
    let reason = park(deadline, what, |waker| {
        for wait in waits {
            wait.add(waker.clone());
        }
    });
    if waits.len() > 1 || reason == WakeReason::TimedOut {
        for wait in waits {
            wait.entry.remove_finished_waiters();
        }
    }
    match reason {
        WakeReason::Notified => Outcome::Ready,
        WakeReason::TimedOut => Outcome::TimedOut,
        WakeReason::Closed => Outcome::Closed,
    }
}

/// Parks the current coroutine until `deadline`, or until `wait`'s file
/// ends (closed, or its number given another file): readiness does not end
/// the park. For a call whose readiness edges are no news (a send refused
/// while its socket reports room, whose own attempt raised the edge),
/// tried again at `deadline`.
pub(crate) fn sleep_on_fd(wait: &FdWait, deadline: Instant) -> Outcome {
    let mut wait = wait.renewed();
    loop {
        match wait_fd(&wait, Some(deadline)) {
            // An edge (the refused attempt's own, or other traffic on the
            // socket): parked again, counting from it.
            Outcome::Ready
                if Instant::now() < deadline && wait.entry.generation() == wait.generation =>
            {
                wait = wait.renewed();
            }
            outcome => return outcome,
        }
    }
}

/// Parks the current coroutine until `deadline`.
pub(crate) fn sleep_until(deadline: Instant) {
    while Instant::now() < deadline {
        park(Some(deadline), Wait::Sleep, drop);
    }
}
