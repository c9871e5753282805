//! The `syscall(SYS_futex, ..)` hook: std::sync waits park the coroutine.
//!
//! std implements `Mutex`, `RwLock`, `Condvar`, `Once`/`OnceLock`, `Barrier`,
//! thread parking and the mpsc channels on one primitive: `syscall(SYS_futex,
//! ..)` with `FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG` (an absolute
//! `CLOCK_MONOTONIC` deadline, or none) and `FUTEX_WAKE | FUTEX_PRIVATE_FLAG`.
//! The `syscall` trampoline (`sys/x86_64_trampoline.rs`) sends every
//! `SYS_futex` here, from every thread of the process, from before `main`
//! on.
//!
//! - Inside a coroutine, private `FUTEX_WAIT` (relative timeout) and
//!   `FUTEX_WAIT_BITSET` with `FUTEX_BITSET_MATCH_ANY` (absolute timeout on
//!   `CLOCK_MONOTONIC`, or `CLOCK_REALTIME` with `FUTEX_CLOCK_REALTIME`) park
//!   the coroutine in the futex table (`crate::futex`), with the kernel's
//!   results: 0 when woken, -1/`EAGAIN` if the word differs, -1/`ETIMEDOUT`
//!   at the deadline, -1/`EINVAL` for a malformed timeout.
//! - Everywhere, private `FUTEX_WAKE` and `FUTEX_WAKE_BITSET` (any non-zero
//!   bitset matches a parked coroutine, whose bitset is "any") wake up to
//!   `val` waiters counting parked coroutines and kernel waiters alike, and
//!   return the total. When no coroutine has waited in the word's bucket
//!   for a while this costs one load before the kernel call; a fence more
//!   while the bucket is armed (`futex/bucket.rs`).
//! - Inside a coroutine, the other waits (on shared words, for a specific
//!   bitset) are the kernel's, made on a helper thread while the coroutine
//!   parks.
//! - Everything else passes through to the kernel unchanged, as a raw
//!   system call (never `libc::syscall`, which would come back here): waits
//!   outside coroutines, wakes of shared (non-private) futexes, requeue,
//!   wake-op and PI operations. No allocation or locking on that path.
//!
//! `errno` is set on every error path and left untouched on success; a
//! parked wait restores the value it had before parking, since the other
//! coroutines of the worker share the thread's `errno` meanwhile.
//!
//! # Limitations
//! - **Same-worker mpsc, park/unpark and re-entrant locks.** std identifies
//!   threads by thread-local state: mpsc's waker skips waiters whose thread
//!   id (the *address* of a thread-local) equals the sender's, `thread::park`
//!   uses one parker per OS thread, and `ReentrantLock` (stdout's lock)
//!   records its owner per OS thread. Two coroutines on the SAME worker share
//!   all of these, so `mpsc` and `park`/`unpark` between them can hang, and a
//!   coroutine that parks while holding a re-entrant lock lets the other
//!   coroutines of its worker into it. They work across workers or with an OS
//!   thread on the other side; this lasts until each coroutine has its own
//!   thread identity.
//! - Coroutine waiters are invisible to the kernel: `FUTEX_REQUEUE`,
//!   `FUTEX_CMP_REQUEUE`, `FUTEX_WAKE_OP` and non-private wakes (which pass
//!   through) do not reach them. std and glibc's own locks use none of those
//!   on private words.
//! - While a panic is in flight in a coroutine (its panic hook, its
//!   unwinding), its futex waits block the worker instead of parking: std's
//!   panic count is per OS thread (see `switch::may_switch`).
//! - A contended PI lock (`FUTEX_LOCK_PI`, `FUTEX_WAIT_REQUEUE_PI`) blocks
//!   the worker: made on a helper, the helper would own the lock.
//! - A futex word at an unmapped address faults in the hook (the kernel
//!   would return `EFAULT`); null and misaligned words pass through to the
//!   kernel, which rejects them.

use core::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use libc::{c_int, c_long, timespec};

use crate::blocking;
use crate::coroutine::may_switch;
use crate::futex;
use crate::scheduler::in_forked_child;
use crate::sys;

const PRIVATE: c_int = libc::FUTEX_PRIVATE_FLAG;
const WAIT: c_int = libc::FUTEX_WAIT | PRIVATE;
const WAKE: c_int = libc::FUTEX_WAKE | PRIVATE;
const WAIT_BITSET: c_int = libc::FUTEX_WAIT_BITSET | PRIVATE;
const WAIT_BITSET_REALTIME: c_int = WAIT_BITSET | libc::FUTEX_CLOCK_REALTIME;
const WAKE_BITSET: c_int = libc::FUTEX_WAKE_BITSET | PRIVATE;
const MATCH_ANY: u32 = u32::MAX;

/// The `SYS_futex` handler the trampoline jumps to, with the futex
/// arguments in the C ABI's registers. Returns the C `syscall` convention:
/// the result, or -1 with `errno` set.
///
/// The arguments are taken as full words and narrowed here: `syscall` is
/// variadic, so a caller passing an `int` leaves the upper half of its
/// register undefined.
///
/// # Safety
/// As `futex(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn coroutines_futex_syscall(
    uaddr: usize,
    op: usize,
    val: usize,
    timeout: usize,
    uaddr2: usize,
    val3: usize,
) -> c_long {
    let args = [uaddr, op, val, timeout, uaddr2, val3];
    // Every unlock and notify of std::sync in the process comes this way.
    // While no coroutine has waited near the word for a while, it is the
    // kernel's wake alone, made from a frame this small.
    if op as c_int == WAKE && word_in_table(uaddr) && futex::kernel_only(uaddr) {
        return pass_through(args);
    }
    futex_call(uaddr, op, val, timeout, uaddr2, val3)
}

/// Whether the futex table serves the word at `uaddr`. The kernel rejects
/// null and misaligned words itself, before waiting; a forked child has no
/// coroutines, and the table is its parent's.
#[inline(always)]
fn word_in_table(uaddr: usize) -> bool {
    uaddr != 0 && uaddr.is_multiple_of(4) && !in_forked_child()
}

/// [`coroutines_futex_syscall`] for every operation.
#[inline(never)]
fn futex_call(
    uaddr: usize,
    op: usize,
    val: usize,
    timeout: usize,
    uaddr2: usize,
    val3: usize,
) -> c_long {
    let args = [uaddr, op, val, timeout, uaddr2, val3];
    if !word_in_table(uaddr) {
        return pass_through(args);
    }
    let (op, val, val3) = (op as c_int, val as u32, val3 as u32);
    match op {
        WAKE => wake(args, val as c_int),
        WAKE_BITSET if val3 != 0 => wake(args, val as c_int),
        WAIT if may_switch() => match read_timeout(timeout) {
            Ok(relative) => wait(uaddr, val, relative.map(relative_deadline)),
            Err(error) => fail(error),
        },
        WAIT_BITSET | WAIT_BITSET_REALTIME if val3 == MATCH_ANY && may_switch() => {
            let clock = if op == WAIT_BITSET {
                libc::CLOCK_MONOTONIC
            } else {
                libc::CLOCK_REALTIME
            };
            match read_timeout(timeout) {
                Ok(absolute) => match absolute.map(|at| absolute_deadline(clock, at)) {
                    Some(Err(error)) => fail(error),
                    Some(Ok(deadline)) => wait(uaddr, val, Some(deadline)),
                    None => wait(uaddr, val, None),
                },
                Err(error) => fail(error),
            }
        }
        // Not PI waits: the kernel records the waiter as the lock's owner.
        _ if kernel_wait(op) && may_switch() => {
            sys::c_result(blocking::run_borrowed(|| sys::raw(libc::SYS_futex, args))) as c_long
        }
        _ => pass_through(args),
    }
}

/// Whether `op` is a wait the table does not serve (on a shared word, for
/// a specific bitset, `FUTEX_WAIT` with `FUTEX_CLOCK_REALTIME`): the
/// kernel's own, made on a helper thread, where every wake reaches it as
/// it would the caller (from other processes, requeues, wake-ops).
fn kernel_wait(op: c_int) -> bool {
    matches!(
        op & !(PRIVATE | libc::FUTEX_CLOCK_REALTIME),
        libc::FUTEX_WAIT | libc::FUTEX_WAIT_BITSET
    )
}

/// Parks the coroutine on the word at `uaddr` (aligned, non-null).
fn wait(uaddr: usize, expected: u32, deadline: Option<Instant>) -> c_long {
    // SAFETY: futex words are 4-byte aligned `u32`s that the caller shares
    // with its wakers; only atomic accesses are made through the reference.
    let word = unsafe { &*(uaddr as *const AtomicU32) };
    match futex::wait(word, expected, deadline) {
        Ok(()) => 0,
        Err(error) => fail(error),
    }
}

/// Wakes up to `val` waiters on `args[0]`: coroutines from the table, then
/// kernel waiters with `args` and the remaining count.
fn wake(mut args: [usize; 6], val: c_int) -> c_long {
    // The kernel wakes one waiter even for a count of zero or less.
    let limit = val.max(1) as usize;
    let woken = futex::wake(args[0], limit, |count| {
        args[2] = count;
        sys::raw(libc::SYS_futex, args)
    });
    sys::c_result(woken) as c_long
}

/// The raw system call with the caller's arguments.
fn pass_through(args: [usize; 6]) -> c_long {
    sys::c_result(sys::raw(libc::SYS_futex, args)) as c_long
}

fn fail(error: c_int) -> c_long {
    sys::set_errno(error);
    -1
}

/// The timeout at `timeout`, or `None` for null; `EFAULT` if unreadable,
/// `EINVAL` if malformed, checked before the word like the kernel does.
fn read_timeout(timeout: usize) -> Result<Option<Duration>, c_int> {
    super::timespec::read(timeout as *const timespec)
}

/// `FUTEX_WAIT`'s timeout is relative to now. A deadline past `Instant`'s
/// range means no deadline.
fn relative_deadline(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or(now + Duration::from_secs(86_400 * 365 * 100))
}

/// `FUTEX_WAIT_BITSET`'s timeout is an absolute time on `clock`. Converted
/// once to an `Instant` (`CLOCK_MONOTONIC`); a `CLOCK_REALTIME` deadline
/// therefore does not follow later jumps of the wall clock. The clock is
/// read before `Instant::now`, so the deadline is never early.
fn absolute_deadline(clock: libc::clockid_t, at: Duration) -> Result<Instant, c_int> {
    let mut now = timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid out-pointer; clock_gettime is not hooked
    // (and is a vDSO call, not a futex).
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return Err(sys::errno());
    }
    let now = Duration::new(now.tv_sec.max(0) as u64, now.tv_nsec as u32);
    Ok(relative_deadline(at.saturating_sub(now)))
}
