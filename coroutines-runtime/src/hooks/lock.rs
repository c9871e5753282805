//! File locks: `flock` (what `File::lock` and `File::lock_shared` call),
//! `fcntl`'s `F_SETLKW` and `F_OFD_SETLKW`, and `lockf`'s `F_LOCK`. A lock
//! someone else holds makes these wait, with no readiness the reactor could
//! watch. In a coroutine the lock is first tried without waiting (the
//! common, uncontended case costs one system call, as before); if it is
//! taken, the waiting call runs on a helper thread of the runtime
//! (`crate::blocking`) while the coroutine parks. The lock is the same
//! either way: `flock` and OFD locks belong to the open file description,
//! record locks to the process, never to a thread.

use libc::{c_int, c_ulong};

use crate::blocking;
use crate::coroutine::in_coroutine;
use crate::sys::{c_result, syscall};

/// `wait()` (the call that waits for the lock) where it cannot block a
/// worker; `try_now()` is the same request without waiting.
fn lock_or_wait(try_now: impl FnOnce() -> isize, wait: impl FnOnce() -> isize) -> isize {
    if !in_coroutine() {
        return wait();
    }
    match try_now() {
        // Taken by someone else (F_SETLK says EACCES or EAGAIN).
        ret if ret == -(libc::EAGAIN as isize) || ret == -(libc::EACCES as isize) => {
            blocking::run_borrowed(wait)
        }
        ret => ret,
    }
}

/// `fcntl`'s waiting lock commands: `cmd` is `F_SETLKW` or `F_OFD_SETLKW`,
/// `arg` the caller's `struct flock`. The raw result.
pub(super) fn record_lock(fd: c_int, cmd: c_int, arg: c_ulong) -> isize {
    let try_cmd = match cmd {
        libc::F_OFD_SETLKW => libc::F_OFD_SETLK,
        _ => libc::F_SETLK,
    };
    lock_or_wait(
        || syscall!(libc::SYS_fcntl, fd, try_cmd, arg),
        || syscall!(libc::SYS_fcntl, fd, cmd, arg),
    )
}

/// Hooked: see the module docs.
///
/// # Safety
/// Always safe; `unsafe` for symmetry with the C declaration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn flock(fd: c_int, operation: c_int) -> c_int {
    let call = |operation: c_int| syscall!(libc::SYS_flock, fd, operation);
    let ret = match operation & libc::LOCK_NB {
        0 => lock_or_wait(|| call(operation | libc::LOCK_NB), || call(operation)),
        _ => call(operation),
    };
    c_result(ret) as c_int
}

/// Hooked: glibc's `lockf` locks through an internal `fcntl`; `F_LOCK` is
/// its waiting command, a write lock from the current position for `len`
/// bytes (to the end of the file and beyond if 0, backwards if negative).
/// The other commands are glibc's.
///
/// # Safety
/// Always safe; `unsafe` for symmetry with the C declaration.
#[cfg(not(target_feature = "crt-static"))]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lockf(fd: c_int, cmd: c_int, len: libc::off_t) -> c_int {
    use core::sync::atomic::AtomicUsize;
    static REAL: AtomicUsize = AtomicUsize::new(usize::MAX);
    if cmd == libc::F_LOCK {
        // SAFETY: an all-zero flock is valid; the fields are set below.
        let mut lock: libc::flock = unsafe { core::mem::zeroed() };
        lock.l_type = libc::F_WRLCK as libc::c_short;
        lock.l_whence = libc::SEEK_CUR as libc::c_short;
        lock.l_len = len;
        let arg = &mut lock as *mut libc::flock as c_ulong;
        return c_result(record_lock(fd, libc::F_SETLKW, arg)) as c_int;
    }
    let address = super::on_helper::real(&REAL, c"lockf");
    assert_ne!(address, 0, "glibc defines lockf");
    // SAFETY: glibc's `lockf`, which has this signature.
    let real: unsafe extern "C" fn(c_int, c_int, libc::off_t) -> c_int =
        unsafe { core::mem::transmute(address) };
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { real(fd, cmd, len) }
}

/// Hooked: glibc's large-file name for `lockf`.
///
/// # Safety
/// Always safe; `unsafe` for symmetry with the C declaration.
#[cfg(not(target_feature = "crt-static"))]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lockf64(fd: c_int, cmd: c_int, len: libc::off64_t) -> c_int {
    // SAFETY: same contract; `off_t` is 64 bits wide here.
    unsafe { lockf(fd, cmd, len) }
}
