//! File locks, differentially: `File::lock` (`flock`), `fcntl`'s
//! `F_SETLKW` and `F_OFD_SETLKW`, and `lockf(F_LOCK)` wait for a lock that
//! another open file description holds until a plain thread releases it,
//! and a neighbour keeps running meanwhile in a coroutine; the
//! non-waiting forms fail at once as on a thread.

mod support;

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use support::differential::*;
use support::*;

/// When the holder lets go.
const LATE: Duration = Duration::from_millis(100);

/// A scratch file, opened twice: two open file descriptions, whose locks
/// conflict with each other.
struct Pair {
    _path: TempPath,
    holder: File,
    waiter: File,
}

impl Pair {
    fn new() -> Pair {
        let path = TempPath::unique();
        std::fs::write(&*path, b"0123456789").unwrap();
        let open = || File::options().read(true).write(true).open(&*path).unwrap();
        Pair {
            holder: open(),
            waiter: open(),
            _path: path,
        }
    }
}

/// An OFD write lock on all of `fd`'s file, taken (`F_WRLCK`) or released
/// (`F_UNLCK`) without waiting.
fn ofd_lock(fd: RawFd, kind: libc::c_int) -> i64 {
    // SAFETY: an all-zero flock is valid (the whole file from its start).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    // SAFETY: a live flock for the duration of the call.
    unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &mut lock) as i64 }
}

/// Runs `take` (a lock request on the waiter) while the holder's lock,
/// taken by `hold`, is released by `release` from a plain thread after
/// [`LATE`]: its outcome, timing, and whether the companion ticked.
fn against_holder(
    side: Side,
    hold: fn(&File) -> i64,
    release: fn(File),
    take: impl FnOnce(&File) -> Result<i64, Errno>,
) -> ((Result<i64, Errno>, Timing), bool) {
    let pair = Pair::new();
    assert_eq!(hold(&pair.holder), 0, "the holder takes its lock");
    let companion = Companion::start(side);
    let holder = pair.holder;
    let releaser = after(LATE, move || release(holder));
    let waiter = pair.waiter;
    let got = companion.during(|| timed(|| take(&waiter)));
    releaser.join().unwrap();
    got
}

fn flock_exclusive(file: &File) -> i64 {
    // SAFETY: a flock on a live descriptor, without waiting.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) as i64 }
}

fn ofd_exclusive(file: &File) -> i64 {
    ofd_lock(file.as_raw_fd(), libc::F_WRLCK)
}

fn ofd_release(file: File) {
    assert_eq!(ofd_lock(file.as_raw_fd(), libc::F_UNLCK), 0);
}

/// The waiting forms wait for the holder, and neighbours keep running.
#[test]
fn waiting_locks_wait_for_the_holder() {
    let got = differential("waiting locks", |side| {
        let flock = against_holder(side, flock_exclusive, drop, |file| {
            outcome(file.lock()).map(|()| 0)
        });
        let setlkw = |cmd: libc::c_int| {
            against_holder(side, ofd_exclusive, ofd_release, move |file| {
                // SAFETY: an all-zero flock is valid (the whole file).
                let mut lock: libc::flock = unsafe { std::mem::zeroed() };
                lock.l_type = libc::F_WRLCK as libc::c_short;
                // SAFETY: a live flock for the duration of the call.
                c_outcome(unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut lock) })
            })
        };
        let posix = setlkw(libc::F_SETLKW);
        let ofd = setlkw(libc::F_OFD_SETLKW);
        let lockf = against_holder(side, ofd_exclusive, ofd_release, |file| {
            // SAFETY: a lock on a live descriptor, from its start.
            c_outcome(unsafe { libc::lockf(file.as_raw_fd(), libc::F_LOCK, 0) })
        });
        vec![flock, posix, ofd, lockf]
    });
    assert_eq!(got, vec![((Ok(0), Timing::Waited), true); 4]);
}

/// The non-waiting forms fail at once while the holder holds, with the
/// kernel's and glibc's error numbers.
#[test]
fn non_waiting_locks_fail_at_once() {
    let got = differential("non-waiting locks", |_side| {
        let pair = Pair::new();
        let (holder, waiter) = (pair.holder.as_raw_fd(), pair.waiter.as_raw_fd());
        assert_eq!(flock_exclusive(&pair.holder), 0);
        let try_lock = timed(|| pair.waiter.try_lock().map_err(|e| format!("{e:?}")));
        assert_eq!(ofd_lock(holder, libc::F_WRLCK), 0);
        // SAFETY (each): lock calls on live descriptors.
        let tlock = timed(|| c_outcome(unsafe { libc::lockf(waiter, libc::F_TLOCK, 0) }));
        let test = timed(|| c_outcome(unsafe { libc::lockf(waiter, libc::F_TEST, 0) }));
        let invalid = timed(|| c_outcome(unsafe { libc::lockf(waiter, 99, 0) }));
        (try_lock, tlock, test, invalid)
    });
    assert_eq!(got.0 .1, Timing::AtOnce);
    assert!(got.0 .0.unwrap_err().contains("WouldBlock"));
    assert_eq!(got.1 .0, Err(Errno(libc::EAGAIN)));
    assert_eq!(got.2 .0, Err(Errno(libc::EACCES)));
    assert_eq!(got.3 .0, Err(Errno(libc::EINVAL)));
}

/// Uncontended, each form returns at once.
#[test]
fn free_locks_are_taken_at_once() {
    let got = differential("free locks", |_side| {
        let pair = Pair::new();
        let fd = pair.waiter.as_raw_fd();
        // SAFETY: an all-zero flock is valid (the whole file).
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = libc::F_WRLCK as libc::c_short;
        let flock = timed(|| outcome(pair.waiter.lock()).map(|()| 0));
        // SAFETY (each): lock calls on live descriptors and a live flock.
        let setlkw = timed(|| c_outcome(unsafe { libc::fcntl(fd, libc::F_SETLKW, &mut lock) }));
        let lockf = timed(|| c_outcome(unsafe { libc::lockf(fd, libc::F_LOCK, 4) }));
        vec![flock, setlkw, lockf]
    });
    assert_eq!(got, vec![(Ok(0), Timing::AtOnce); 3]);
}
