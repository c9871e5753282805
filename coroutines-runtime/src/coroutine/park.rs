//! Parking: the one internal way for a coroutine to wait.
//!
//! [`park`] switches away first and only then hands a [`Waker`] out (the
//! worker calls the `register` closure after the switch has completed), so a
//! wake-up can never resume a coroutine that is still running. Every wait in
//! the runtime (join, I/O, timers, futexes) is built on it.
//!
//! # The park word
//! `Task::park` packs one park's state into a `u64` so that all wakers race on
//! a single compare-and-swap:
//! - bits 8..64: the park's generation, bumped by the worker for every park;
//!   a waker from an earlier park never matches again.
//! - bits 2..8: the [`WakeReason`] written by the waker that won.
//! - bit 1 [`REGISTERING`]: the worker is still running `register`. A waker
//!   that wins meanwhile only clears [`WAITING`]; the worker schedules the
//!   coroutine when `register` returns, because `register` lives on the
//!   parked coroutine's stack and must finish before that stack runs again.
//! - bit 0 [`WAITING`]: set when the park begins, cleared by the one waker
//!   that wins. Once clear, every other wake of this generation is a no-op.

use core::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::switch;
use super::task::{Suspend, Task};
use super::wait::Wait;
use crate::scheduler;

/// The coroutine may still be woken by a waker of the current generation.
pub(crate) const WAITING: u64 = 1 << 0;
/// Its worker is still handing out wakers; see the module docs.
pub(crate) const REGISTERING: u64 = 1 << 1;
const REASON_SHIFT: u32 = 2;
const REASON_MASK: u64 = 0b11_1111 << REASON_SHIFT;
pub(crate) const GENERATION_SHIFT: u32 = 8;

/// Why a parked coroutine was woken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum WakeReason {
    /// What it waited for happened (or may have: callers re-check).
    Notified = 0,
    /// The deadline passed first.
    TimedOut = 1,
    /// The descriptor it waited on was closed.
    Closed = 2,
}

impl WakeReason {
    fn from_bits(bits: u64) -> WakeReason {
        match bits {
            0 => WakeReason::Notified,
            1 => WakeReason::TimedOut,
            _ => WakeReason::Closed,
        }
    }
}

/// Wakes one park of one coroutine. Cheap to clone; only the first `wake`
/// among all wakers of a park has an effect.
#[derive(Clone)]
pub struct Waker {
    pub(crate) task: Arc<Task>,
    pub(crate) generation: u64,
}

impl Waker {
    /// Wakes the coroutine with `reason` if this park is still waiting.
    /// Returns whether this call woke it.
    pub fn wake(&self, reason: WakeReason) -> bool {
        let park = &self.task.park;
        let mut current = park.load(Ordering::Acquire);
        loop {
            if current >> GENERATION_SHIFT != self.generation || current & WAITING == 0 {
                return false;
            }
            let woken = (current & !(WAITING | REASON_MASK)) | ((reason as u64) << REASON_SHIFT);
            match park.compare_exchange_weak(current, woken, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        if current & REGISTERING == 0 {
            scheduler::schedule(self.task.clone());
        }
        true
    }

    /// Whether the park this waker belongs to is still waiting.
    pub fn is_waiting(&self) -> bool {
        let current = self.task.park.load(Ordering::Acquire);
        current >> GENERATION_SHIFT == self.generation && current & WAITING != 0
    }

    /// Whether both wakers wake the same coroutine.
    pub fn same_coroutine(&self, other: &Waker) -> bool {
        Arc::ptr_eq(&self.task, &other.task)
    }
}

impl core::fmt::Debug for Waker {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Waker")
            .field("coroutine", &self.task.id)
            .field("generation", &self.generation)
            .finish()
    }
}

/// Parks the current coroutine until a waker handed to `register` wakes it,
/// or `deadline` passes. `what` says what it waits for, for dumps. The
/// caller's `errno` is kept.
///
/// `register` runs on the worker after the coroutine has switched away; it
/// must publish the waker where the event's source will find it, and must
/// itself call `wake` if the event already happened. Spurious wake-ups do not
/// happen, but callers re-check their condition anyway: the event may be
/// consumed by someone else before the coroutine runs.
///
/// # Panics
/// Outside a coroutine.
pub fn park(deadline: Option<Instant>, what: Wait, register: impl FnOnce(Waker)) -> WakeReason {
    let task = switch::current().expect("park called outside a coroutine");
    task.waiting.note(what, deadline);
    let mut register = Some(register);
    let mut call = |waker: Waker| {
        if let Some(register) = register.take() {
            register(waker);
        }
    };
    let call: &mut dyn FnMut(Waker) = &mut call;
    // SAFETY: only the lifetime is erased. The closure lives in this frame,
    // which stays alive and unmoved while the coroutine is suspended, and the
    // worker calls it (once) before the coroutine can be resumed.
    let register: *mut (dyn FnMut(Waker) + 'static) = unsafe { core::mem::transmute(call) };
    switch::suspend(task, Suspend::Park { deadline, register });
    let reason =
        WakeReason::from_bits((task.park.load(Ordering::Acquire) & REASON_MASK) >> REASON_SHIFT);
    if reason == WakeReason::TimedOut {
        task.count_timeout(what == Wait::Sleep);
    }
    reason
}

/// Called by the worker right after a coroutine parked: starts a new park
/// generation and hands its waker to `register`. Returns the waker if the
/// park is still waiting (for the timer), or `None` if it was woken during
/// registration, in which case the caller must schedule the coroutine.
pub(crate) fn begin_park(task: &Arc<Task>, register: &mut dyn FnMut(Waker)) -> Option<Waker> {
    let generation = (task.park.load(Ordering::Relaxed) >> GENERATION_SHIFT) + 1;
    task.park.store(
        (generation << GENERATION_SHIFT) | WAITING | REGISTERING,
        Ordering::Release,
    );
    let waker = Waker {
        task: task.clone(),
        generation,
    };
    register(waker.clone());
    let before = task.park.fetch_and(!REGISTERING, Ordering::AcqRel);
    (before & WAITING != 0).then_some(waker)
}
