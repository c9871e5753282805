//! Timed calls made with a caller's `timespec` pointer, for probes of how
//! the hooks read it: each through libc (so through the hooks, in a
//! coroutine), its result as `Ok(value)` or `Err(errno)`.

use std::sync::atomic::AtomicU32;

use super::errno;

/// Which timed call to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timed {
    Nanosleep,
    ClockNanosleep,
    /// `clock_nanosleep` with `TIMER_ABSTIME`.
    ClockNanosleepUntil,
    /// `FUTEX_WAIT` on a word holding the expected value: only the
    /// timeout ends it.
    FutexWait,
    Ppoll,
    Pselect,
    EpollPwait2,
}

/// The result of a C call returning -1 and setting errno.
pub fn c_ret(ret: i64) -> Result<i64, i32> {
    match ret {
        -1 => Err(errno()),
        r => Ok(r),
    }
}

/// The result of a call returning an error number (`clock_nanosleep`,
/// `pthread_*`).
pub fn e_ret(ret: i32) -> Result<i64, i32> {
    match ret {
        0 => Ok(0),
        e => Err(e),
    }
}

/// Makes `which` with `ts`, which may be a bad pointer: the kernel rejects
/// those with EFAULT.
pub fn call(which: Timed, ts: *const libc::timespec) -> Result<i64, i32> {
    static WORD: AtomicU32 = AtomicU32::new(7);
    let clock = |flags| {
        // SAFETY: `ts` per the caller (the kernel checks it); no remainder.
        e_ret(unsafe {
            libc::clock_nanosleep(libc::CLOCK_MONOTONIC, flags, ts, std::ptr::null_mut())
        })
    };
    // SAFETY: every pointer but `ts` is valid or null where allowed.
    unsafe {
        match which {
            Timed::Nanosleep => c_ret(libc::nanosleep(ts, std::ptr::null_mut()) as i64),
            Timed::ClockNanosleep => clock(0),
            Timed::ClockNanosleepUntil => clock(libc::TIMER_ABSTIME),
            Timed::FutexWait => c_ret(libc::syscall(
                libc::SYS_futex,
                WORD.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                7,
                ts,
            )),
            Timed::Ppoll => {
                c_ret(libc::ppoll(std::ptr::null_mut(), 0, ts, std::ptr::null()) as i64)
            }
            Timed::Pselect => c_ret(libc::pselect(
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                ts,
                std::ptr::null(),
            ) as i64),
            Timed::EpollPwait2 => {
                let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
                assert!(ep >= 0);
                let mut events = [libc::epoll_event { events: 0, u64: 0 }; 2];
                let r = c_ret(
                    libc::epoll_pwait2(ep, events.as_mut_ptr(), 2, ts, std::ptr::null()) as i64,
                );
                libc::close(ep);
                r
            }
        }
    }
}
