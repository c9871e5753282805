//! POSIX semaphores (`sem_wait`, `sem_timedwait`, `sem_clockwait`) in a
//! coroutine give a thread's results, and a wait parks the coroutine (on a
//! helper thread) instead of blocking its worker.

mod support;

use std::mem::MaybeUninit;
use std::thread;
use std::time::Duration;

use support::differential::*;
use support::glibc::sem_clockwait;
use support::*;

/// A semaphore for one case, with `value`, at a fixed address (boxed).
struct Semaphore(Box<MaybeUninit<libc::sem_t>>);

// SAFETY: a semaphore is made to be used from several threads.
unsafe impl Send for Semaphore {}
// SAFETY: as above.
unsafe impl Sync for Semaphore {}

impl Semaphore {
    fn new(value: u32) -> Semaphore {
        let mut sem = Box::new(MaybeUninit::uninit());
        // SAFETY: room for a sem_t, initialised here.
        assert_eq!(unsafe { libc::sem_init(sem.as_mut_ptr(), 0, value) }, 0);
        Semaphore(sem)
    }

    fn ptr(&self) -> *mut libc::sem_t {
        self.0.as_ptr() as *mut libc::sem_t
    }

    fn value(&self) -> i32 {
        let mut value = -1;
        // SAFETY: an initialised semaphore.
        unsafe { libc::sem_getvalue(self.ptr(), &mut value) };
        value
    }

    fn post(&self) {
        // SAFETY: an initialised semaphore.
        assert_eq!(unsafe { libc::sem_post(self.ptr()) }, 0);
    }
}

impl Drop for Semaphore {
    fn drop(&mut self) {
        // SAFETY: initialised, and nobody waits on it any more.
        unsafe { libc::sem_destroy(self.ptr()) };
    }
}

/// CLOCK_REALTIME (or `clock`) now plus `after`.
fn at(clock: libc::clockid_t, after: Duration) -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock and out-pointer.
    unsafe { libc::clock_gettime(clock, &mut now) };
    let nanos = now.tv_nsec as u64 + after.subsec_nanos() as u64;
    libc::timespec {
        tv_sec: now.tv_sec
            + after.as_secs() as libc::time_t
            + (nanos / 1_000_000_000) as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    }
}

/// `sem_wait` on an empty semaphore that a neighbour posts 100 ms in
/// returns then; meanwhile a companion keeps running (in a coroutine: the
/// wait parked); `errno` is left as it was.
#[test]
fn sem_wait_waits_for_a_post_without_blocking_the_worker() {
    let got = differential("sem_wait", |side| {
        let sem = std::sync::Arc::new(Semaphore::new(0));
        let poster = {
            let sem = sem.clone();
            side.spawn(move || {
                thread::sleep(WAIT);
                sem.post();
            })
        };
        let companion = Companion::start(side);
        set_errno(libc::ENOENT);
        let (waited, ticking) = companion
            .during(|| timed_span(|| c_outcome(unsafe { libc::sem_wait(sem.ptr()) } as i64)));
        let errno_after = errno();
        drop(companion);
        poster.join();
        (waited, ticking, errno_after, sem.value())
    });
    assert_eq!(got, ((Ok(0), Span::Woken), true, libc::ENOENT, 0));
}

/// The timed waits: an available semaphore is taken at once; an empty one
/// times out with ETIMEDOUT (`sem_timedwait` on CLOCK_REALTIME,
/// `sem_clockwait` on CLOCK_MONOTONIC); invalid nanoseconds and clocks are
/// EINVAL even when the semaphore is available, which stays untaken.
#[test]
fn timed_waits_and_their_errors() {
    let got = differential("sem_timedwait, sem_clockwait", |_| {
        let sem = Semaphore::new(1);
        let later = at(libc::CLOCK_REALTIME, Duration::from_millis(150));
        // SAFETY: an initialised semaphore and a live timespec, here and below.
        let taken = timed(|| c_outcome(unsafe { libc::sem_timedwait(sem.ptr(), &later) } as i64));
        let later = at(libc::CLOCK_REALTIME, Duration::from_millis(150));
        let timed_out =
            timed(|| c_outcome(unsafe { libc::sem_timedwait(sem.ptr(), &later) } as i64));
        let later = at(libc::CLOCK_MONOTONIC, Duration::from_millis(150));
        let clock_timed_out = timed(|| {
            c_outcome(unsafe { sem_clockwait(sem.ptr(), libc::CLOCK_MONOTONIC, &later) } as i64)
        });
        sem.post();
        let bad_nanos = libc::timespec {
            tv_sec: 0,
            tv_nsec: 1_000_000_000,
        };
        let invalid = c_outcome(unsafe { libc::sem_timedwait(sem.ptr(), &bad_nanos) } as i64);
        let later = at(libc::CLOCK_REALTIME, Duration::from_millis(150));
        let bad_clock =
            c_outcome(
                unsafe { sem_clockwait(sem.ptr(), libc::CLOCK_PROCESS_CPUTIME_ID, &later) } as i64,
            );
        (
            taken,
            timed_out,
            clock_timed_out,
            invalid,
            bad_clock,
            sem.value(),
        )
    });
    let einval = Err(Errno(libc::EINVAL));
    let timed_out = (Err(Errno(libc::ETIMEDOUT)), Timing::Waited);
    assert_eq!(
        got,
        (
            (Ok(0), Timing::AtOnce),
            timed_out,
            timed_out,
            einval,
            einval,
            1
        )
    );
}
