//! The per-descriptor table: who waits on each fd, the readiness seen on
//! it, and what the hooks have learned about the file it names.
//!
//! Indexed by fd number, process-wide (descriptors are process-wide too).
//! Entries are created on first use and never freed. A descriptor number
//! outlives the files it names: every close, replacement (`dup2`) or
//! creation that the hooks see starts a new *generation* of its entry, and
//! everything learned about a file is tagged with the generation it was
//! learned under, so that nothing learned about one file is applied to the
//! next file that gets the number.

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use libc::c_int;

use super::poller;
use crate::coroutine::{switch, WakeReason, Waker};
use crate::scheduler::Shared;
use crate::sync::{SpinGuard, SpinLock};
use std::sync::Arc;

/// Entries per lazily allocated chunk.
const CHUNK: usize = 1024;
/// Chunks in the table: descriptors up to 4M are tracked, beyond that hooks
/// pass straight through.
const CHUNKS: usize = 4096;

/// Which way a waiter waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interest {
    Read = 0,
    Write = 1,
}

/// A value learned about the file of one generation: the generation in the
/// high half, the value in the low half. Reads of another generation see
/// nothing.
struct Learned(AtomicU64);

impl Learned {
    const NOTHING: u64 = u64::MAX;

    const fn new() -> Learned {
        Learned(AtomicU64::new(Learned::NOTHING))
    }

    fn get(&self, generation: u32) -> Option<u32> {
        let packed = self.0.load(Ordering::Acquire);
        (packed != Learned::NOTHING && (packed >> 32) as u32 == generation).then_some(packed as u32)
    }

    fn set(&self, generation: u32, value: u32) {
        self.0.store(
            (u64::from(generation) << 32) | u64::from(value),
            Ordering::Release,
        );
    }
}

/// One descriptor's record.
pub(crate) struct FdEntry {
    /// Bumped whenever the number starts naming another file (or none), so
    /// that readiness, waiters and facts of an old file cannot reach the
    /// next owner of the number. Epoll events carry the generation they were
    /// registered under.
    pub(crate) generation: AtomicU32,
    /// What the file is, as `hooks::descriptor` classifies it.
    kind: Learned,
    /// Readiness edges seen per direction; a waiter that saw the count
    /// change since before its attempt retries instead of parking.
    read_edges: AtomicU64,
    write_edges: AtomicU64,
    /// The low half of the read edge count at which a short read drained
    /// the stream; see [`FdEntry::drained`].
    drained_at: Learned,
    /// The peer closed, hung up or failed (an RDHUP, HUP or ERR event was
    /// seen): reads are worth trying from now on, drained or not.
    read_closed: AtomicBool,
    /// Urgent data was signalled (EPOLLPRI): a read stops at its mark, so a
    /// short read no longer says the stream is drained.
    urgent: AtomicBool,
    /// Attempts in flight that hold the file non-blocking through this
    /// number (see `hooks::descriptor`): closing or replacing the number
    /// waits for them, so that they can put the user's flags back.
    pub(crate) holding: AtomicU32,
    /// The generation a close or replacement of the number started, until
    /// its system call returns (`u32::MAX`: none): no hold starts through
    /// the file it ends (see `hooks::descriptor`), as the number may be gone
    /// before the hold ends.
    pub(crate) closing: AtomicU32,
    /// The entry may have waiters or locked state; see [`FdEntry::reset`].
    /// Never false while a waiter is queued.
    watched: AtomicBool,
    /// A reset could not take the lock; whoever holds it finishes the reset
    /// when it lets go (see [`FdEntry::lock`]).
    reset_pending: AtomicBool,
    /// The newest generation whose file a close ended (`u32::MAX`: none
    /// yet), which tells the waiters of an ended file whether it was closed
    /// (see [`FdEntry::end_reason`]).
    closed: AtomicU32,
    state: SpinLock<FdState>,
}

/// The locked part of an entry.
#[derive(Default)]
pub(crate) struct FdState {
    readers: Vec<Waiter>,
    writers: Vec<Waiter>,
    /// Pollers (by id) this fd is registered with, and the generation the
    /// registrations belong to.
    registered: (u32, Vec<u64>),
    /// What `hooks::descriptor` caches about the file: its identity and the
    /// user's settings, each tagged with the generation it belongs to.
    pub(crate) facts: crate::hooks::Facts,
}

/// A parked call, and the generation of the file it waits on. A reset
/// deferred to the lock's holder may find waiters of the number's next
/// file already queued (the number was reused meanwhile): only those of
/// older generations are the reset's to wake.
struct Waiter {
    generation: u32,
    waker: Waker,
}

impl FdState {
    /// Takes the waiters of the listed directions that `of` picks.
    fn take_waiters(
        &mut self,
        read: bool,
        write: bool,
        of: impl Fn(&Waiter) -> bool,
    ) -> Vec<Waiter> {
        let mut taken = Vec::new();
        for (list, wanted) in [(&mut self.readers, read), (&mut self.writers, write)] {
            if wanted {
                taken.extend(list.extract_if(.., |waiter| of(waiter)));
            }
        }
        taken
    }

    /// Whether the fd is registered with `poller` under `generation`;
    /// records that it is from now on.
    pub(crate) fn note_registered(&mut self, generation: u32, poller: u64) -> bool {
        if self.registered.0 != generation {
            self.registered = (generation, Vec::new());
        }
        if self.registered.1.contains(&poller) {
            return true;
        }
        self.registered.1.push(poller);
        false
    }

    /// Forgets a registration that failed.
    pub(crate) fn forget_registered(&mut self, poller: u64) {
        self.registered.1.retain(|&p| p != poller);
    }
}

/// The entry's lock, held: letting go finishes a reset that was deferred
/// meanwhile.
pub(crate) struct StateGuard<'a> {
    entry: &'a FdEntry,
    guard: Option<SpinGuard<'a, FdState>>,
}

impl core::ops::Deref for StateGuard<'_> {
    type Target = FdState;
    fn deref(&self) -> &FdState {
        self.guard.as_ref().expect("held until dropped")
    }
}

impl core::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut FdState {
        self.guard.as_mut().expect("held until dropped")
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.entry.finish_pending_reset();
    }
}

impl FdEntry {
    fn new() -> FdEntry {
        FdEntry {
            generation: AtomicU32::new(0),
            kind: Learned::new(),
            read_edges: AtomicU64::new(0),
            write_edges: AtomicU64::new(0),
            drained_at: Learned::new(),
            read_closed: AtomicBool::new(false),
            urgent: AtomicBool::new(false),
            holding: AtomicU32::new(0),
            closing: AtomicU32::new(u32::MAX),
            watched: AtomicBool::new(false),
            reset_pending: AtomicBool::new(false),
            closed: AtomicU32::new(u32::MAX),
            state: SpinLock::new(FdState::default()),
        }
    }

    /// Takes the entry's lock. Marks the entry watched first, so that a
    /// reset takes the lock too: whatever is put under it (waiters, facts)
    /// is then cleared or woken by the next reset.
    pub(crate) fn lock(&self) -> StateGuard<'_> {
        self.watched.store(true, Ordering::SeqCst);
        StateGuard {
            entry: self,
            guard: Some(self.state.lock()),
        }
    }

    /// The current generation.
    pub(crate) fn generation(&self) -> u32 {
        self.generation.load(Ordering::SeqCst)
    }

    /// What was learned of the file's kind under `generation`.
    pub(crate) fn kind(&self, generation: u32) -> Option<u32> {
        self.kind.get(generation)
    }

    pub(crate) fn set_kind(&self, generation: u32, kind: u32) {
        self.kind.set(generation, kind);
    }

    fn edges(&self, interest: Interest) -> &AtomicU64 {
        match interest {
            Interest::Read => &self.read_edges,
            Interest::Write => &self.write_edges,
        }
    }

    /// The edge count to compare against after a failed attempt; take it
    /// before the attempt.
    pub(crate) fn snapshot(&self, interest: Interest) -> u64 {
        self.edges(interest).load(Ordering::Acquire)
    }

    /// Records that a read made after `snapshot` (under `generation`) came
    /// back short on a stream where that means nothing is left.
    pub(crate) fn set_drained(&self, generation: u32, snapshot: u64) {
        self.drained_at.set(generation, snapshot as u32);
    }

    /// Whether a hang-up, a shutdown for reading or an error was seen.
    pub(crate) fn hung_up(&self) -> bool {
        self.read_closed.load(Ordering::Acquire)
    }

    /// The socket was shut down (for reading if `read`) by a hooked call:
    /// its waiters try their calls again, which see the shutdown (some
    /// shutdowns raise no readiness event).
    pub(crate) fn shut_down(&self, read: bool) {
        if read {
            self.read_closed.store(true, Ordering::Release);
        }
        if !self.watched.load(Ordering::SeqCst) {
            return;
        }
        let mut state = self.lock();
        let generation = self.generation();
        let woken = state.take_waiters(true, true, |w| w.generation == generation);
        drop(state);
        for waiter in woken {
            waiter.waker.wake(WakeReason::Notified);
        }
    }

    /// Whether a read would find nothing: a short read drained the stream
    /// and no readiness edge, hang-up or urgent data has arrived since.
    pub(crate) fn drained(&self, generation: u32, snapshot: u64) -> bool {
        self.drained_at.get(generation) == Some(snapshot as u32)
            && !self.read_closed.load(Ordering::Acquire)
            && !self.urgent.load(Ordering::Acquire)
    }

    /// Adds `waker` as a waiter for `interest`, or wakes it at once: with
    /// `Notified` if an edge arrived since `snapshot` or the number changed
    /// files since `generation` (the caller tries its call again, and the
    /// kernel says what is there now).
    pub(crate) fn add_waiter(
        &self,
        interest: Interest,
        snapshot: u64,
        generation: u32,
        waker: Waker,
    ) {
        let mut state = self.lock();
        let current = self.generation();
        if current != generation || self.edges(interest).load(Ordering::Acquire) != snapshot {
            drop(state);
            waker.wake(self.end_reason(generation, current));
            return;
        }
        let waiter = Waiter { generation, waker };
        match interest {
            Interest::Read => state.readers.push(waiter),
            Interest::Write => state.writers.push(waiter),
        }
    }

    /// Drops waiters whose park has ended (woken by a timer, or by another
    /// descriptor in a multi-fd wait).
    pub(crate) fn remove_finished_waiters(&self) {
        let mut state = self.lock();
        state.readers.retain(|w| w.waker.is_waiting());
        state.writers.retain(|w| w.waker.is_waiting());
    }

    /// Records a readiness event delivered under `generation`.
    pub(crate) fn on_event(&self, generation: u32, events: u32) {
        let readable =
            (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR)
                as u32;
        let writable = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        let closed = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        let mut state = self.lock();
        if self.generation() != generation {
            return;
        }
        if events & closed != 0 {
            self.read_closed.store(true, Ordering::Release);
        }
        if events & libc::EPOLLPRI as u32 != 0 {
            self.urgent.store(true, Ordering::Release);
        }
        let (read, write) = (events & readable != 0, events & writable != 0);
        if read {
            self.read_edges.fetch_add(1, Ordering::AcqRel);
        }
        if write {
            self.write_edges.fetch_add(1, Ordering::AcqRel);
        }
        let woken = state.take_waiters(read, write, |w| w.generation == generation);
        drop(state);
        for waiter in woken {
            waiter.waker.wake(WakeReason::Notified);
        }
    }

    /// Starts a new generation: the number's file `ended` (see [`Ended`]).
    /// Returns the new generation.
    ///
    /// Never spins on the entry's lock: `close` and `dup2` run in signal
    /// handlers, which may have interrupted the lock's holder on this very
    /// thread. If the lock is taken, its holder wakes the waiters when it
    /// lets go.
    pub(crate) fn reset(&self, ended: Ended) -> u32 {
        let mut current = self.generation();
        loop {
            // Recorded before the generation ends, so that whoever sees
            // the new generation also sees how the old one ended.
            self.note_end(current, ended);
            // Pairs with `lock`: either this sees the mark, or the locker
            // sees the new generation under the lock and backs off.
            match self.generation.compare_exchange_weak(
                current,
                current.wrapping_add(1),
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        let generation = current.wrapping_add(1);
        self.read_closed.store(false, Ordering::Relaxed);
        self.urgent.store(false, Ordering::Relaxed);
        self.wake_for_reset();
        generation
    }

    /// Starts a new generation if none has started since `generation`: the
    /// second half of a close or a replacement, for calls that got in
    /// between the first half and the system call. Their waiters try again
    /// and get the kernel's answer, as a thread's call that starts now
    /// would: EBADF if the number is still closed, or the file that took
    /// it meanwhile (a descriptor can arrive without a hook seeing it, by
    /// `SCM_RIGHTS` or a raw system call, while a lingering close has not
    /// returned yet).
    pub(crate) fn reset_if(&self, generation: u32) {
        let next = generation.wrapping_add(1);
        if self
            .generation
            .compare_exchange(generation, next, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.wake_for_reset();
        }
    }

    /// Records how the file of `generation` ends, before its generation
    /// does. The record only moves forward.
    fn note_end(&self, generation: u32, ended: Ended) {
        if ended == Ended::Closed {
            let _ = self
                .closed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |closed| {
                    let newer = closed == u32::MAX || generation.wrapping_sub(closed) as i32 > 0;
                    newer.then_some(generation)
                });
        }
    }

    /// What a waiter on the file of generation `waited` sees now that the
    /// number is at `current`: EBADF if a close ended its file or a later
    /// one before `current` (the number no longer names what it waited on,
    /// and went through a close), else a retry on the file there now.
    pub(crate) fn end_reason(&self, waited: u32, current: u32) -> WakeReason {
        let closed = self.closed.load(Ordering::SeqCst);
        match closed.wrapping_sub(waited) < current.wrapping_sub(waited) {
            true => WakeReason::Closed,
            false => WakeReason::Notified,
        }
    }

    /// Wakes the waiters of the generations that ended, if the entry is
    /// watched. A signal handler leaves it to a worker (`kick`): waking
    /// schedules coroutines, which is not async-signal-safe.
    fn wake_for_reset(&self) {
        if !self.watched.swap(false, Ordering::SeqCst) {
            return;
        }
        self.reset_pending.store(true, Ordering::SeqCst);
        if switch::in_signal_handler() {
            DEFERRED.store(true, Ordering::SeqCst);
            poller::kick();
        } else {
            self.finish_pending_reset();
        }
    }

    /// Wakes the waiters of ended generations if a reset is pending and the
    /// lock is free; otherwise leaves it to the lock's holder, who calls
    /// this after letting go (the `SeqCst` store of the flag, the failed
    /// `try_lock`, the holder's `SeqCst` unlock and its load of the flag are
    /// ordered so that it sees the flag).
    ///
    /// By then the number may name a new file whose waiters are queued
    /// already: they stay, and so must the entry's mark, which the reset
    /// cleared, possibly after they set it.
    fn finish_pending_reset(&self) {
        while self.reset_pending.load(Ordering::SeqCst) {
            let Some(mut state) = self.state.try_lock() else {
                return;
            };
            if !self.reset_pending.swap(false, Ordering::SeqCst) {
                continue;
            }
            let mut woken = Vec::new();
            loop {
                let current = self.generation();
                woken.extend(
                    state
                        .take_waiters(true, true, |w| w.generation != current)
                        .into_iter()
                        .map(|w| (self.end_reason(w.generation, current), w.waker)),
                );
                if state.readers.is_empty() && state.writers.is_empty() {
                    break;
                }
                self.watched.store(true, Ordering::SeqCst);
                // A reset that started before the mark was back missed it:
                // its waiters are taken here.
                if self.generation() == current {
                    break;
                }
            }
            drop(state);
            for (reason, waker) in woken {
                waker.wake(reason);
            }
        }
    }
}

/// How a number's file ended, which decides what its waiters see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Ended {
    /// `dup2` put another file in its place: the waiters try their call
    /// again, on that file, as a thread's call that starts now would.
    Replaced = 1,
    /// Closed: the waiters fail with EBADF (a thread's call would wait on
    /// the closed file for ever, or see whatever reused the number).
    Closed = 2,
}

/// The process-wide descriptor table.
pub(crate) struct FdTable {
    chunks: [AtomicPtr<FdEntry>; CHUNKS],
}

/// Some entry has a reset that a signal handler left to a worker.
static DEFERRED: AtomicBool = AtomicBool::new(false);

pub(crate) static FD_TABLE: FdTable = FdTable {
    chunks: [const { AtomicPtr::new(ptr::null_mut()) }; CHUNKS],
};

impl FdTable {
    /// The entry for `fd`, created if needed; `None` for negative or
    /// untracked descriptors.
    pub(crate) fn get(&self, fd: c_int) -> Option<&'static FdEntry> {
        let fd = usize::try_from(fd).ok()?;
        let slot = self.chunks.get(fd / CHUNK)?;
        let mut chunk = slot.load(Ordering::Acquire);
        if chunk.is_null() {
            let fresh: Box<[FdEntry]> = (0..CHUNK).map(|_| FdEntry::new()).collect();
            let fresh = Box::into_raw(fresh) as *mut FdEntry;
            match slot.compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => chunk = fresh,
                Err(existing) => {
                    // SAFETY: `fresh` was never shared; rebuild the box to free it.
                    drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(fresh, CHUNK)) });
                    chunk = existing;
                }
            }
        }
        // SAFETY: chunks are never freed and hold CHUNK entries.
        Some(unsafe { &*chunk.add(fd % CHUNK) })
    }

    /// The entry for `fd` if it exists, without creating one.
    pub(crate) fn peek(&self, fd: c_int) -> Option<&'static FdEntry> {
        let fd = usize::try_from(fd).ok()?;
        let chunk = self.chunks.get(fd / CHUNK)?.load(Ordering::Acquire);
        // SAFETY: as in `get`.
        (!chunk.is_null()).then(|| unsafe { &*chunk.add(fd % CHUNK) })
    }

    /// Finishes the resets that signal handlers deferred.
    pub(crate) fn finish_deferred_resets(&self) {
        if DEFERRED.swap(false, Ordering::SeqCst) {
            for entry in self.entries() {
                entry.finish_pending_reset();
            }
        }
    }

    /// Starts a new generation of every tracked number from `first` to
    /// `last`; returns the entries and their new generations, for
    /// `reset_if` after the system call.
    pub(crate) fn reset_range(
        &self,
        first: u32,
        last: u32,
        ended: Ended,
    ) -> Vec<(&'static FdEntry, u32)> {
        let (first, last) = (first as usize, last as usize);
        let mut reset = Vec::new();
        for (index, chunk) in self.chunks.iter().enumerate() {
            let base = index * CHUNK;
            if base + CHUNK <= first || base > last {
                continue;
            }
            let chunk = chunk.load(Ordering::Acquire);
            if chunk.is_null() {
                continue;
            }
            for fd in base.max(first)..=(base + CHUNK - 1).min(last) {
                // SAFETY: chunks are never freed and hold CHUNK entries.
                let entry: &'static FdEntry = unsafe { &*chunk.add(fd - base) };
                reset.push((entry, entry.reset(ended)));
            }
        }
        reset
    }

    /// Every entry created so far.
    fn entries(&self) -> impl Iterator<Item = &'static FdEntry> + '_ {
        self.chunks.iter().flat_map(|chunk| {
            let chunk = chunk.load(Ordering::Acquire);
            // SAFETY: chunks are never freed and hold CHUNK entries.
            let entries: &'static [FdEntry] = if chunk.is_null() {
                &[]
            } else {
                unsafe { core::slice::from_raw_parts(chunk, CHUNK) }
            };
            entries.iter()
        })
    }

    /// Drops the waiters that belong to coroutines of the runtime `shared`,
    /// which has shut down: nothing will run them, and holding their wakers
    /// would keep them, and their join handles, waiting forever.
    pub(crate) fn release_runtime(&self, shared: &Shared) {
        let ours = |waker: &Waker| core::ptr::eq(Arc::as_ptr(&waker.task.shared), shared);
        for entry in self.entries() {
            if !entry.watched.load(Ordering::SeqCst) {
                continue;
            }
            let released: Vec<Waiter> = {
                let mut state = entry.lock();
                state.take_waiters(true, true, |w| ours(&w.waker))
            };
            // Dropped outside the lock: dropping a task runs its
            // completion, which may take other locks.
            drop(released);
        }
    }
}

/// Epoll data for `fd` under `generation`.
pub(crate) fn token(fd: c_int, generation: u32) -> u64 {
    ((generation as u64) << 32) | fd as u32 as u64
}

/// Delivers an epoll event to the descriptor it was registered for.
pub(crate) fn dispatch(token: u64, events: u32) {
    let fd = token as u32 as c_int;
    if let Some(entry) = FD_TABLE.peek(fd) {
        entry.on_event((token >> 32) as u32, events);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::coroutine::{park, Wait};
    use crate::test_support::{join, runtime, spawn};

    /// Parks a coroutine of `runtime` as a waiter for reading the file of
    /// `generation` on `entry`, queued with `queue`; returns how it wakes.
    fn park_waiter(
        runtime: &crate::Runtime,
        queue: fn(&'static FdEntry, u32, Waker),
        entry: &'static FdEntry,
        generation: u32,
    ) -> (mpsc::Receiver<WakeReason>, Arc<crate::test_support::Done>) {
        let (sender, woken) = mpsc::channel();
        let waiter = spawn(Some(runtime), move || {
            let reason = park(None, Wait::Other, |waker| queue(entry, generation, waker));
            sender.send(reason).expect("receiver alive");
        });
        while entry.state.lock().readers.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        (woken, waiter)
    }

    /// Queues through `add_waiter`, as the hooks do.
    fn add_reader(entry: &'static FdEntry, generation: u32, waker: Waker) {
        let snapshot = entry.read_edges.load(Ordering::SeqCst);
        entry.add_waiter(Interest::Read, snapshot, generation, waker);
    }

    /// Queues without finishing a pending reset, as when the queuer's own
    /// finish loses the lock to another holder.
    fn push_reader(entry: &'static FdEntry, generation: u32, waker: Waker) {
        entry
            .state
            .lock()
            .readers
            .push(Waiter { generation, waker });
    }

    /// Takes the entry's lock and lets go without finishing what a reset
    /// left meanwhile, as a holder does in the instant after its unlock.
    fn with_lock_held(entry: &FdEntry, during: impl FnOnce()) {
        let held = entry.state.lock();
        during();
        drop(held);
    }

    /// A close that finds the entry's lock taken leaves its wake-ups to
    /// the lock's next holder; by then the number may name a new file with
    /// a waiter of its own, which must not see the old file's EBADF.
    #[test]
    fn a_deferred_reset_wakes_only_the_waiters_of_the_closed_file() {
        // Numbers that nothing in this test process opens.
        const FD: c_int = 4093;
        let entry = FD_TABLE.get(FD).expect("tracked");
        drop(entry.lock());
        with_lock_held(entry, || {
            entry.reset(Ended::Closed);
        });
        assert!(entry.reset_pending.load(Ordering::SeqCst));
        let runtime = runtime(1);
        let generation = entry.generation();
        let (woken, waiter) = park_waiter(&runtime, add_reader, entry, generation);
        assert!(!entry.reset_pending.load(Ordering::SeqCst));
        assert!(
            woken.recv_timeout(Duration::from_millis(100)).is_err(),
            "the new file's waiter was woken by the old file's close"
        );
        entry.on_event(generation, libc::EPOLLIN as u32);
        assert_eq!(
            woken.recv_timeout(Duration::from_secs(10)),
            Ok(WakeReason::Notified)
        );
        join(&waiter);
    }

    /// A waiter that queues between a close's new generation and its clearing
    /// of the entry's mark is woken by the close's second half, to try its
    /// call again (which the kernel then fails with EBADF).
    #[test]
    fn a_waiter_that_queues_during_a_reset_is_woken_by_the_close() {
        const FD: c_int = 4092;
        let entry = FD_TABLE.get(FD).expect("tracked");
        drop(entry.lock());
        // `reset`'s first half, as `close` starts.
        let generation = entry
            .generation
            .fetch_add(1, Ordering::SeqCst)
            .wrapping_add(1);
        let runtime = runtime(1);
        let (woken, waiter) = park_waiter(&runtime, add_reader, entry, generation);
        // Its second half, then the close's own `reset_if`.
        entry.wake_for_reset();
        entry.reset_if(generation);
        assert_eq!(
            woken.recv_timeout(Duration::from_secs(10)),
            Ok(WakeReason::Notified)
        );
        join(&waiter);
    }

    /// A close's second half that comes late (a lingering close returns
    /// after the number was reused) neither moves the close record back
    /// nor fails the waiter of the file that took the number.
    #[test]
    fn a_late_second_half_of_a_close_leaves_the_next_files_waiter_alone() {
        const FD: c_int = 4090;
        let entry = FD_TABLE.get(FD).expect("tracked");
        drop(entry.lock());
        let closing = entry.reset(Ended::Closed);
        // The number is free: a descriptor arrives on it unseen, and a
        // coroutine waits on it.
        let runtime = runtime(1);
        let (woken, waiter) = park_waiter(&runtime, add_reader, entry, closing);
        // The close returns.
        entry.reset_if(closing);
        assert_eq!(
            woken.recv_timeout(Duration::from_secs(10)),
            Ok(WakeReason::Notified)
        );
        join(&waiter);
        // A later close of the number, and a late second half of the
        // earlier one: the record keeps the later close.
        let later = entry.generation();
        entry.reset(Ended::Closed);
        entry.reset_if(closing);
        assert_eq!(entry.closed.load(Ordering::SeqCst), later);
    }

    /// A pending close of one file and a `dup2` over the next: the next
    /// file's waiter retries on the replacing file instead of failing.
    #[test]
    fn a_pending_close_does_not_fail_the_next_files_waiter() {
        const FD: c_int = 4091;
        let entry = FD_TABLE.get(FD).expect("tracked");
        drop(entry.lock());
        with_lock_held(entry, || {
            entry.reset(Ended::Closed);
        });
        let runtime = runtime(1);
        let generation = entry.generation();
        let (woken, waiter) = park_waiter(&runtime, push_reader, entry, generation);
        with_lock_held(entry, || {
            entry.reset(Ended::Replaced);
        });
        entry.finish_pending_reset();
        assert_eq!(
            woken.recv_timeout(Duration::from_secs(10)),
            Ok(WakeReason::Notified)
        );
        join(&waiter);
    }
}
