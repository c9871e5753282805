//! POSIX semaphores: `sem_wait`, `sem_timedwait` and `sem_clockwait`.
//! glibc waits for a semaphore with its own futex calls, which no hook
//! sees, so in a coroutine a wait that cannot take the semaphore at once
//! (`sem_trywait`) makes glibc's call on a helper thread
//! (`on_helper::run`) while the coroutine parks: the result and `errno`
//! are the call's own. Outside coroutines, glibc's function is called in
//! place.

use core::ffi::CStr;
use core::sync::atomic::AtomicUsize;

use libc::{c_int, clockid_t, sem_t, timespec};

use super::on_helper;
use crate::coroutine::in_coroutine;

/// glibc's `name`, which has the signature `F`, looked up once in `slot`.
fn real<F: Copy>(slot: &AtomicUsize, name: &CStr) -> F {
    let address = on_helper::real(slot, name);
    assert_ne!(address, 0, "glibc defines {name:?}");
    assert_eq!(size_of::<F>(), size_of::<usize>());
    // SAFETY: a function pointer of the caller's type `F`, as wide as the
    // address, which dlsym found for glibc's function of that type.
    unsafe { core::mem::transmute_copy(&address) }
}

/// Takes `sem` if that does not wait; else makes `wait` (glibc's waiting
/// call with the caller's arguments) on a helper thread. Arguments glibc
/// refuses (`!valid`) fail at once, before it tries the semaphore.
fn waited(sem: *mut sem_t, valid: bool, wait: impl FnOnce() -> c_int) -> c_int {
    if !in_coroutine() || !valid {
        return wait();
    }
    let errno = crate::sys::errno();
    // SAFETY: the caller's semaphore (sem_wait's contract).
    if unsafe { libc::sem_trywait(sem) } == 0 {
        return 0;
    }
    // The attempt's EAGAIN is not the call's.
    crate::sys::set_errno(errno);
    on_helper::run(wait)
}

/// Hooked: see the module docs.
///
/// # Safety
/// As `sem_wait(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sem_wait(sem: *mut sem_t) -> c_int {
    static REAL: AtomicUsize = AtomicUsize::new(usize::MAX);
    let real: unsafe extern "C" fn(*mut sem_t) -> c_int = real(&REAL, c"sem_wait");
    // SAFETY: the caller's argument, passed on unchanged; the caller keeps
    // the semaphore alive until this returns.
    waited(sem, true, || unsafe { real(sem) })
}

/// Hooked: see the module docs.
///
/// # Safety
/// As `sem_timedwait(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sem_timedwait(sem: *mut sem_t, at: *const timespec) -> c_int {
    static REAL: AtomicUsize = AtomicUsize::new(usize::MAX);
    let real: unsafe extern "C" fn(*mut sem_t, *const timespec) -> c_int =
        real(&REAL, c"sem_timedwait");
    // SAFETY: as in `sem_wait`; `at` too is the caller's, alive meanwhile.
    waited(sem, valid_time(at), || unsafe { real(sem, at) })
}

/// Hooked: see the module docs.
///
/// # Safety
/// As `sem_clockwait(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sem_clockwait(
    sem: *mut sem_t,
    clock: clockid_t,
    at: *const timespec,
) -> c_int {
    static REAL: AtomicUsize = AtomicUsize::new(usize::MAX);
    let real: unsafe extern "C" fn(*mut sem_t, clockid_t, *const timespec) -> c_int =
        real(&REAL, c"sem_clockwait");
    let valid = matches!(clock, libc::CLOCK_REALTIME | libc::CLOCK_MONOTONIC) && valid_time(at);
    // SAFETY: as in `sem_timedwait`.
    waited(sem, valid, || unsafe { real(sem, clock, at) })
}

/// Whether glibc takes `at` as a time to wait until: nanoseconds within a
/// second. glibc reads it first, as this does.
fn valid_time(at: *const timespec) -> bool {
    // SAFETY: the caller's time, which glibc reads as given.
    let nanos = unsafe { (*at).tv_nsec };
    (0..1_000_000_000).contains(&nanos)
}
