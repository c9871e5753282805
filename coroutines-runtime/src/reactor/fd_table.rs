//! The per-descriptor table: what the user asked of each fd, and who waits
//! on it.
//!
//! Indexed by fd number, process-wide (descriptors are process-wide too).
//! Entries are created on first use and never freed; an entry is reset when
//! the hook layer sees its descriptor created or closed.

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};

use libc::c_int;

use crate::coroutine::{WakeReason, Waker};
use crate::scheduler::Shared;
use crate::sync::SpinLock;
use std::sync::Arc;

/// Entries per lazily allocated chunk.
const CHUNK: usize = 1024;
/// Chunks in the table: descriptors up to 4M are tracked, beyond that hooks
/// pass straight through.
const CHUNKS: usize = 4096;

/// How a blocking call on the fd is made non-blocking for one attempt.
pub(crate) const STRATEGY_UNKNOWN: u8 = 0;
/// Per-call flags (`MSG_DONTWAIT`, `RWF_NOWAIT`) work.
pub(crate) const STRATEGY_PER_CALL: u8 = 1;
/// Per-call flags are not supported (ttys, some devices): wait for
/// readiness, then make the plain call.
pub(crate) const STRATEGY_WAIT_FIRST: u8 = 2;
/// The fd cannot be waited on (regular files, epoll refuses them): calls
/// pass through and block the worker as they would block a thread.
pub(crate) const STRATEGY_PASS_THROUGH: u8 = 3;

/// `FdEntry::drained_at` when no short read is on record.
pub(crate) const NOT_DRAINED: u64 = u64::MAX;
/// Not yet known whether reads on the fd consume a byte stream.
pub(crate) const STREAM_UNKNOWN: u8 = 0;
/// A pipe, FIFO or stream socket: a short read drains it.
pub(crate) const STREAM_YES: u8 = 1;
/// Anything else (datagrams, ttys, files): a short read says nothing.
pub(crate) const STREAM_NO: u8 = 2;

/// Which way a waiter waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interest {
    Read,
    Write,
}

/// One descriptor's record.
pub(crate) struct FdEntry {
    /// Bumped when the descriptor is closed, so that readiness for an old
    /// file cannot reach the next owner of the fd number. Epoll events carry
    /// the generation they were registered under.
    pub(crate) generation: AtomicU32,
    pub(crate) strategy: AtomicU8,
    /// Readiness edges seen per direction; a waiter that saw the count
    /// change since before its attempt retries instead of parking.
    read_edges: AtomicU64,
    write_edges: AtomicU64,
    /// The read edge count at which a stream read came back short: the
    /// stream is drained until the count moves, so the next read waits
    /// without trying first. `NOT_DRAINED` otherwise.
    pub(crate) drained_at: AtomicU64,
    /// The peer closed, hung up or failed (an RDHUP, HUP or ERR event was
    /// seen): reads return at once from now on, drained or not.
    pub(crate) read_closed: AtomicBool,
    /// Whether reads consume a byte stream (pipes, stream sockets), where a
    /// short read means drained; see the `STREAM_*` constants.
    pub(crate) stream: AtomicU8,
    /// What the user set on the description (see `hooks::nonblock`), as
    /// learned from the kernel at `settings_epoch`; 0 means never.
    pub(crate) settings_epoch: AtomicU64,
    pub(crate) user_nonblocking: AtomicBool,
    /// `SO_RCVTIMEO`/`SO_SNDTIMEO` in nanoseconds, 0 for none.
    pub(crate) recv_timeout: AtomicU64,
    pub(crate) send_timeout: AtomicU64,
    /// The entry may have waiters or registrations; see `reset`.
    watched: AtomicBool,
    pub(crate) state: SpinLock<FdState>,
}

/// The locked part of an entry.
#[derive(Default)]
pub(crate) struct FdState {
    readers: Vec<Waker>,
    writers: Vec<Waker>,
    /// Pollers (by id) this fd is registered with under the current
    /// generation.
    pub(crate) registered: Vec<u64>,
    /// Device and inode of the open file description, once asked.
    pub(crate) identity: Option<(u64, u64)>,
}

impl FdEntry {
    fn new() -> FdEntry {
        FdEntry {
            generation: AtomicU32::new(0),
            strategy: AtomicU8::new(STRATEGY_UNKNOWN),
            read_edges: AtomicU64::new(0),
            write_edges: AtomicU64::new(0),
            drained_at: AtomicU64::new(NOT_DRAINED),
            read_closed: AtomicBool::new(false),
            stream: AtomicU8::new(STREAM_UNKNOWN),
            settings_epoch: AtomicU64::new(0),
            user_nonblocking: AtomicBool::new(false),
            recv_timeout: AtomicU64::new(0),
            send_timeout: AtomicU64::new(0),
            watched: AtomicBool::new(false),
            state: SpinLock::new(FdState::default()),
        }
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

    /// Adds `waker` as a waiter for `interest`, or wakes it at once if an
    /// edge arrived since `snapshot` or the fd was closed since `generation`.
    pub(crate) fn add_waiter(
        &self,
        interest: Interest,
        snapshot: u64,
        generation: u32,
        waker: Waker,
    ) {
        let mut state = self.state.lock();
        self.mark_watched();
        if self.generation.load(Ordering::SeqCst) != generation {
            drop(state);
            waker.wake(WakeReason::Closed);
        } else if self.edges(interest).load(Ordering::Acquire) != snapshot {
            drop(state);
            waker.wake(WakeReason::Notified);
        } else {
            match interest {
                Interest::Read => state.readers.push(waker),
                Interest::Write => state.writers.push(waker),
            }
        }
    }

    /// Records that the entry has, or is about to get, waiters or a
    /// registration, so that `reset` must take the lock. Called under the
    /// lock, before checking the generation.
    pub(crate) fn mark_watched(&self) {
        self.watched.store(true, Ordering::SeqCst);
    }

    /// Drops waiters whose park has ended (woken by a timer, or by another
    /// descriptor in a multi-fd wait).
    pub(crate) fn remove_finished_waiters(&self) {
        let mut state = self.state.lock();
        state.readers.retain(Waker::is_waiting);
        state.writers.retain(Waker::is_waiting);
    }

    /// Records a readiness event delivered under `generation`.
    pub(crate) fn on_event(&self, generation: u32, events: u32) {
        let readable = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        let writable = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        let mut state = self.state.lock();
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        let closed = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        if events & closed != 0 {
            self.read_closed.store(true, Ordering::Release);
        }
        if events & readable != 0 {
            self.read_edges.fetch_add(1, Ordering::AcqRel);
            state.readers.drain(..).for_each(|w| {
                w.wake(WakeReason::Notified);
            });
        }
        if events & writable != 0 {
            self.write_edges.fetch_add(1, Ordering::AcqRel);
            state.writers.drain(..).for_each(|w| {
                w.wake(WakeReason::Notified);
            });
        }
    }

    /// Forgets everything about the descriptor: it was closed or is being
    /// created anew. Waiters wake with `Closed`.
    ///
    /// Takes no lock unless the entry has waiters or registrations: `close`
    /// and `dup2` run in forked children (where a lock held by another
    /// parent thread is never released) and in signal handlers.
    pub(crate) fn reset(&self) {
        // Pairs with `mark_watched`: either this sees the mark, or the
        // watcher sees the new generation under the lock and backs off.
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.strategy.store(STRATEGY_UNKNOWN, Ordering::Relaxed);
        self.drained_at.store(NOT_DRAINED, Ordering::Relaxed);
        self.read_closed.store(false, Ordering::Relaxed);
        self.stream.store(STREAM_UNKNOWN, Ordering::Relaxed);
        self.settings_epoch.store(0, Ordering::Release);
        if !self.watched.swap(false, Ordering::SeqCst) {
            return;
        }
        let mut state = self.state.lock();
        state.registered.clear();
        state.identity = None;
        let FdState {
            readers, writers, ..
        } = &mut *state;
        readers.drain(..).chain(writers.drain(..)).for_each(|w| {
            w.wake(WakeReason::Closed);
        });
    }
}

/// The process-wide descriptor table.
pub(crate) struct FdTable {
    chunks: [AtomicPtr<FdEntry>; CHUNKS],
}

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
}

impl FdTable {
    /// Drops the waiters that belong to coroutines of the runtime `shared`,
    /// which has shut down: nothing will run them, and holding their wakers
    /// would keep them, and their join handles, waiting forever.
    pub(crate) fn release_runtime(&self, shared: &Shared) {
        let ours = |waker: &Waker| core::ptr::eq(Arc::as_ptr(&waker.task.shared), shared);
        for chunk in &self.chunks {
            let chunk = chunk.load(Ordering::Acquire);
            if chunk.is_null() {
                continue;
            }
            for index in 0..CHUNK {
                // SAFETY: chunks are never freed and hold CHUNK entries.
                let entry = unsafe { &*chunk.add(index) };
                let released: Vec<Waker> = {
                    let mut state = entry.state.lock();
                    let FdState {
                        readers, writers, ..
                    } = &mut *state;
                    let mut released = Vec::new();
                    for list in [readers, writers] {
                        let (theirs, kept) = core::mem::take(list).into_iter().partition(ours);
                        *list = kept;
                        released.extend::<Vec<Waker>>(theirs);
                    }
                    released
                };
                // Dropped outside the lock: dropping a task runs its
                // completion, which may take other locks.
                drop(released);
            }
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
