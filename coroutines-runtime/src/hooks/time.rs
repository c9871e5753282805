//! Sleeping: `clock_nanosleep`, `nanosleep`, `usleep`, `sleep`, `thrd_sleep`.

use std::time::{Duration, Instant};

use libc::{c_int, c_uint, clockid_t, timespec, useconds_t};

use crate::blocking;
use crate::coroutine::{may_switch, switch};
use crate::reactor::sleep_until;
use crate::sys::{self, syscall};

/// The least a relative sleep lasts: a thread's lasts its timer slack
/// (Linux's default, 50 us) past its end, even a sleep of 0. Without it a
/// loop of short sleeps spins its worker and never lets a neighbour run:
/// each deadline has passed by the time the worker would sleep.
const TIMER_SLACK: Duration = Duration::from_micros(50);

/// Sleeps the coroutine for `duration`, at least [`TIMER_SLACK`]; an
/// overflowing deadline sleeps forever, as the kernel would in practice.
fn sleep_for(duration: Duration) {
    match Instant::now().checked_add(duration.max(TIMER_SLACK)) {
        Some(deadline) => sleep_until(deadline),
        None => loop {
            sleep_until(Instant::now() + Duration::from_secs(86_400 * 365));
        },
    }
}

/// The duration in `req`, or the error number the kernel would give
/// (EFAULT for null or unreadable, EINVAL out of range), read only once the
/// kernel has validated it.
fn duration(req: *const timespec) -> Result<Duration, c_int> {
    super::timespec::read(req)?.ok_or(libc::EFAULT)
}

/// Hooked: `std::thread::sleep` calls it with `CLOCK_MONOTONIC`. Returns an
/// error number, not -1.
///
/// # Safety
/// As `clock_nanosleep(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn clock_nanosleep(
    clock: clockid_t,
    flags: c_int,
    req: *const timespec,
    rem: *mut timespec,
) -> c_int {
    if clock == libc::CLOCK_THREAD_CPUTIME_ID {
        // glibc's own answer; the kernel's would be EOPNOTSUPP.
        return libc::EINVAL;
    }
    let call = || -(syscall!(libc::SYS_clock_nanosleep, clock, flags, req, rem) as c_int);
    // A sleep ends by itself, so one made while unwinding with a shared
    // identity blocks the worker rather than let its other coroutines run
    // with the panic count raised (`may_switch`).
    if !may_switch() {
        return call();
    }
    let sleepable = matches!(
        clock,
        libc::CLOCK_MONOTONIC | libc::CLOCK_REALTIME | libc::CLOCK_BOOTTIME | libc::CLOCK_TAI
    );
    if !sleepable {
        if own_thread_clock(clock) {
            // The kernel's answer on the coroutine's thread, the worker;
            // on a helper thread it would sleep on the worker's time.
            return libc::EINVAL;
        }
        // CPU-time clocks (the process's, another thread's or process's)
        // tick with work the worker may have to do: sleep on a helper.
        return blocking::run_borrowed(call);
    }
    let req = match duration(req) {
        Ok(req) => req,
        Err(error) => return error,
    };
    if flags & libc::TIMER_ABSTIME == 0 {
        sleep_for(req);
        return 0;
    }
    let mut now = timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid out-pointer; clock_gettime is not hooked.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return sys::errno();
    }
    let now = Duration::new(now.tv_sec as u64, now.tv_nsec as u32);
    match req.checked_sub(now) {
        Some(remaining) => sleep_for(remaining),
        // Past: the kernel's call returns at once; a loop of them must
        // still let the worker's other coroutines run now and then.
        None => switch::spend_budget(),
    }
    0
}

/// Whether `clock` is the CPU-time clock of the calling thread by id
/// (`pthread_getcpuclockid`): the kernel encodes a thread's as
/// `!tid << 3 | 4 | type`, where tid 0 names the caller.
fn own_thread_clock(clock: clockid_t) -> bool {
    const PER_THREAD: clockid_t = 4;
    let tid = !(clock >> 3);
    clock < 0 && clock & PER_THREAD != 0 && (tid == 0 || tid == sys::gettid())
}

/// Hooked: C11's sleep, which glibc makes through an internal
/// `clock_nanosleep` on `CLOCK_REALTIME`: 0, or -1 if a signal cut it short,
/// or another negative value on error.
///
/// # Safety
/// As `thrd_sleep(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn thrd_sleep(duration: *const timespec, remaining: *mut timespec) -> c_int {
    // SAFETY: same contract, on glibc's clock.
    match unsafe { clock_nanosleep(libc::CLOCK_REALTIME, 0, duration, remaining) } {
        0 => 0,
        libc::EINTR => -1,
        _ => -2,
    }
}

/// Hooked: relative sleep with -1/`errno` errors.
///
/// # Safety
/// As `nanosleep(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nanosleep(req: *const timespec, rem: *mut timespec) -> c_int {
    if !may_switch() {
        return sys::c_result(syscall!(libc::SYS_nanosleep, req, rem)) as c_int;
    }
    match duration(req) {
        Ok(req) => {
            sleep_for(req);
            0
        }
        Err(error) => {
            sys::set_errno(error);
            -1
        }
    }
}

/// Hooked: glibc's `usleep` sleeps through an internal call the other hooks
/// cannot see.
///
/// # Safety
/// Always safe; `unsafe` for symmetry with the C declaration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usleep(usec: useconds_t) -> c_int {
    let req = timespec {
        tv_sec: (usec / 1_000_000) as libc::time_t,
        tv_nsec: ((usec % 1_000_000) * 1000) as libc::c_long,
    };
    // SAFETY: `req` is a valid timespec.
    unsafe { nanosleep(&req, core::ptr::null_mut()) }
}

/// Hooked: as `usleep`. Returns the seconds left unslept (always 0: a
/// coroutine's sleep is not cut short by signals).
///
/// # Safety
/// Always safe; `unsafe` for symmetry with the C declaration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sleep(seconds: c_uint) -> c_uint {
    let req = timespec {
        tv_sec: seconds as libc::time_t,
        tv_nsec: 0,
    };
    let mut rem = req;
    // SAFETY: both are valid timespecs.
    if unsafe { nanosleep(&req, &mut rem) } == 0 {
        0
    } else {
        rem.tv_sec as c_uint
    }
}
