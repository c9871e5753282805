//! Descriptors in general: creating pipes, duplicating and closing
//! descriptors, and the flags the user sets, which the runtime must both
//! honour and never show as its own.

#[cfg(not(target_feature = "crt-static"))]
use core::sync::atomic::AtomicUsize;

use libc::{c_char, c_int, c_uint, c_ulong, c_void};

use super::descriptor::{self, Kind};
use super::driver::{on_created, on_replaced};
#[cfg(not(target_feature = "crt-static"))]
use super::on_helper;
use crate::reactor::fd_table::{Ended, FD_TABLE};
use crate::scheduler::in_forked_child;
use crate::sys::{c_result, syscall};

/// Hooked: both ends start with a clean record.
///
/// # Safety
/// As `pipe2(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pipe2(fds: *mut c_int, flags: c_int) -> c_int {
    let ret = syscall!(libc::SYS_pipe2, fds, flags);
    if ret == 0 {
        // SAFETY: on success the kernel wrote two descriptors to `fds`.
        let pair = unsafe { [*fds, *fds.add(1)] };
        pair.into_iter()
            .for_each(|fd| on_created(fd, Some(Kind::Pipe)));
    }
    c_result(ret) as c_int
}

/// Hooked: as `pipe2` without flags.
///
/// # Safety
/// As `pipe(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pipe(fds: *mut c_int) -> c_int {
    // SAFETY: same contract.
    unsafe { pipe2(fds, 0) }
}

/// Runs `replace`, a system call that closes or replaces the file that
/// `fd` names (`ended` says which): coroutines waiting on the old file wake
/// (see [`Ended`]), and nothing learned about it reaches the number's next
/// file.
///
/// The record starts a new generation both before the call (so waiters
/// wake even if the call takes long) and after it (for waits that began in
/// between), unless a new file got the number meanwhile and started one
/// itself.
fn replacing(fd: c_int, ended: Ended, replace: impl FnOnce() -> isize) -> isize {
    let entry = match in_forked_child() {
        true => None,
        false => FD_TABLE.peek(fd),
    };
    let Some(entry) = entry else {
        return replace();
    };
    let generation = entry.reset(ended);
    let excluded = descriptor::exclude_holds(entry, generation);
    let ret = replace();
    entry.reset_if(generation);
    drop(excluded);
    ret
}

/// Closes a descriptor the hooks opened for themselves (a pidfd), as the
/// `close` hook would.
pub(crate) fn close_owned(fd: c_int) {
    replacing(fd, Ended::Closed, || syscall!(libc::SYS_close, fd));
}

/// Hooked: see [`replacing`].
///
/// # Safety
/// As `close(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    c_result(closing(fd, Ended::Closed, || syscall!(libc::SYS_close, fd))) as c_int
}

/// [`replacing`], for a call that lets go of `fd`'s file (a close, a dup
/// onto its number). In a coroutine it runs on a helper thread if the file
/// is a socket made to linger: its last close waits for the unsent data to
/// go, up to the linger time.
fn closing(fd: c_int, ended: Ended, call: impl FnOnce() -> isize) -> isize {
    // Learned before the record moves on to the number's next file.
    let lingers = crate::coroutine::in_coroutine() && descriptor::lingers(fd);
    replacing(fd, ended, || match lingers {
        true => crate::blocking::run_borrowed(call),
        false => call(),
    })
}

/// The number `new` was just made a duplicate of `old` (`created`: a new
/// number, else one replaced): what is known of the file, and whether it
/// lingers (a socket's setting, which duplicates share).
fn duplicated(old: c_int, new: c_int, created: bool) {
    let kind = descriptor::known_kind(old);
    match created {
        true => on_created(new, kind),
        false => on_replaced(new, kind),
    }
    if descriptor::lingers(old) {
        descriptor::set_lingers(new, true);
    }
}

/// Hooked: the new number starts with a clean record.
///
/// # Safety
/// As `dup(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup(old: c_int) -> c_int {
    let ret = syscall!(libc::SYS_dup, old);
    if ret >= 0 {
        duplicated(old, ret as c_int, true);
    }
    c_result(ret) as c_int
}

/// Hooked: `new` is closed first if open, as `close` would be.
///
/// # Safety
/// As `dup3(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    if old == new {
        // EINVAL, and nothing changes.
        return c_result(syscall!(libc::SYS_dup3, old, new, flags)) as c_int;
    }
    let ret = closing(new, Ended::Replaced, || {
        syscall!(libc::SYS_dup3, old, new, flags)
    });
    if ret >= 0 {
        duplicated(old, new, false);
    }
    c_result(ret) as c_int
}

/// Hooked: as `dup3`; `dup2(fd, fd)` checks `fd` and changes nothing.
///
/// # Safety
/// As `dup2(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    if old == new {
        let ret = syscall!(libc::SYS_fcntl, old, libc::F_GETFD);
        return if ret < 0 { c_result(ret) as c_int } else { new };
    }
    // SAFETY: same contract.
    unsafe { dup3(old, new, 0) }
}

/// Hooked (`fcntl` is variadic in C; on x86-64 a fixed third argument is
/// passed in the same register): `F_GETFL` never shows an O_NONBLOCK the
/// runtime holds, `F_SETFL` is what the runtime puts back after a hold,
/// `F_DUPFD*` give the new number a clean record, and the waiting lock
/// commands wait as `lock` says.
///
/// # Safety
/// As `fcntl(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    let ret = match cmd {
        _ if in_forked_child() => syscall!(libc::SYS_fcntl, fd, cmd, arg),
        libc::F_GETFL => descriptor::get_flags(fd),
        libc::F_SETFL => descriptor::set_user_flags(fd, arg as c_int),
        libc::F_SETLKW | libc::F_OFD_SETLKW => super::lock::record_lock(fd, cmd, arg),
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            let ret = syscall!(libc::SYS_fcntl, fd, cmd, arg);
            if ret >= 0 {
                duplicated(fd, ret as c_int, true);
            }
            ret
        }
        _ => syscall!(libc::SYS_fcntl, fd, cmd, arg),
    };
    c_result(ret) as c_int
}

/// Hooked: glibc's large-file name for `fcntl`.
///
/// # Safety
/// As `fcntl(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: same contract.
    unsafe { fcntl(fd, cmd, arg) }
}

/// The `ioctl` requests that change status flags, as `request` is typed.
const FIONBIO: c_ulong = libc::FIONBIO as c_ulong;
const FIOASYNC: c_ulong = libc::FIOASYNC as c_ulong;

/// Hooked (variadic in C, register-compatible on x86-64): `FIONBIO`, which
/// `set_nonblocking` uses, sets the user's mode as `F_SETFL` does; the
/// holds wait for a `FIOASYNC`.
///
/// # Safety
/// As `ioctl(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int {
    let call = || syscall!(libc::SYS_ioctl, fd, request, arg);
    let ret = match request {
        FIONBIO if !in_forked_child() => descriptor::set_user_mode(fd, arg as *const c_int, call),
        FIOASYNC if !in_forked_child() => descriptor::change_flags(call),
        _ => call(),
    };
    c_result(ret) as c_int
}

/// Defines hooks for calls that create a descriptor through one system
/// call: the new number starts with a clean record (its kind learned when
/// a coroutine first waits on it).
macro_rules! creates {
    ($($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) = $nr:expr, ($($sys:expr),*);)*) => {$(
        $(#[$doc])*
        ///
        /// # Safety
        /// As the C library's function of the same name.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> c_int {
            let ret = syscall!($nr, $($sys),*);
            if ret >= 0 {
                on_created(ret as c_int, None);
            }
            c_result(ret) as c_int
        }
    )*};
}

creates! {
    /// Hooked: `File::open` (variadic in C; on x86-64 the mode, read only
    /// with `O_CREAT` or `O_TMPFILE`, arrives in the same register).
    fn open(path: *const c_char, flags: c_int, mode: c_uint) =
        libc::SYS_openat, (libc::AT_FDCWD, path, flags, mode);
    /// Hooked: glibc's large-file name for `open`.
    fn open64(path: *const c_char, flags: c_int, mode: c_uint) =
        libc::SYS_openat, (libc::AT_FDCWD, path, flags, mode);
    /// Hooked: as `open`, relative to a directory.
    fn openat(dir: c_int, path: *const c_char, flags: c_int, mode: c_uint) =
        libc::SYS_openat, (dir, path, flags, mode);
    /// Hooked: glibc's large-file name for `openat`.
    fn openat64(dir: c_int, path: *const c_char, flags: c_int, mode: c_uint) =
        libc::SYS_openat, (dir, path, flags, mode);
    /// Hooked: `open` with `O_CREAT | O_WRONLY | O_TRUNC`.
    fn creat(path: *const c_char, mode: c_uint) =
        libc::SYS_openat, (libc::AT_FDCWD, path, libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC, mode);
    /// Hooked: event counters.
    fn eventfd(initial: c_uint, flags: c_int) = libc::SYS_eventfd2, (initial, flags);
    /// Hooked: timers.
    fn timerfd_create(clock: c_int, flags: c_int) = libc::SYS_timerfd_create, (clock, flags);
    /// Hooked: epoll instances.
    fn epoll_create(size: c_int) = libc::SYS_epoll_create, (size);
    /// Hooked: epoll instances.
    fn epoll_create1(flags: c_int) = libc::SYS_epoll_create1, (flags);
    /// Hooked: inotify instances.
    fn inotify_init() = libc::SYS_inotify_init1, (0);
    /// Hooked: inotify instances.
    fn inotify_init1(flags: c_int) = libc::SYS_inotify_init1, (flags);
    /// Hooked: anonymous files.
    fn memfd_create(name: *const c_char, flags: c_uint) = libc::SYS_memfd_create, (name, flags);
}

/// Hooked: signal descriptors; `fd` -1 creates one, otherwise it is changed.
///
/// # Safety
/// As `signalfd(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn signalfd(fd: c_int, mask: *const libc::sigset_t, flags: c_int) -> c_int {
    let ret = syscall!(
        libc::SYS_signalfd4,
        fd,
        mask,
        crate::sys::SIGSET_BYTES,
        flags
    );
    if ret >= 0 && fd == -1 {
        on_created(ret as c_int, None);
    }
    c_result(ret) as c_int
}

/// Hooked: every number in the range is closed as `close` would close it
/// (unless only marked close-on-exec).
///
/// # Safety
/// As `close_range(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    let call = || syscall!(libc::SYS_close_range, first, last, flags);
    if flags & libc::CLOSE_RANGE_CLOEXEC as c_int != 0 || in_forked_child() {
        return c_result(call()) as c_int;
    }
    let ended = FD_TABLE.reset_range(first, last, Ended::Closed);
    let excluded: Vec<_> = ended
        .iter()
        .map(|(entry, generation)| descriptor::exclude_holds(entry, *generation))
        .collect();
    let ret = call();
    for (entry, generation) in &ended {
        entry.reset_if(*generation);
    }
    drop(excluded);
    c_result(ret) as c_int
}

/// Hooked: as `close_range(low, ~0, 0)`.
///
/// # Safety
/// As `closefrom(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn closefrom(low: c_int) {
    // SAFETY: same contract.
    unsafe { close_range(low.max(0) as c_uint, c_uint::MAX, 0) };
}

/// Hooked: a stdio stream's descriptor is closed as `close` would close it
/// (glibc's `fclose` closes it internally, where no hook sees it). Not in
/// static builds, where there is no loader to find glibc's `fclose`.
///
/// # Safety
/// As `fclose(3)`.
#[cfg(not(target_feature = "crt-static"))]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fclose(stream: *mut libc::FILE) -> c_int {
    static REAL: AtomicUsize = AtomicUsize::new(usize::MAX);
    let real = stream_closer(&REAL, c"fclose");
    // SAFETY: glibc's `fclose` with the caller's stream, closed once; the
    // caller waits for the helper.
    unsafe {
        close_stream(stream, |fd| match close_may_wait(fd) {
            true => on_helper::run(|| real(stream)),
            false => real(stream),
        })
    }
}

/// Whether closing a stream on `fd` in a coroutine may wait: to flush its
/// buffer into a pipe, socket or terminal, or, for a `popen` stream (which
/// glibc's `fclose` closes as `pclose` does), for its child. A regular
/// file's never does.
#[cfg(not(target_feature = "crt-static"))]
fn close_may_wait(fd: c_int) -> bool {
    crate::coroutine::in_coroutine() && descriptor::classify(fd) != Some(Kind::File)
}

/// Hooked: as `fclose`, for a stream of `popen`, whose child glibc's
/// `pclose` then waits for (internally, where no hook sees it): on a helper
/// thread (`on_helper::run`).
///
/// # Safety
/// As `pclose(3)`.
#[cfg(not(target_feature = "crt-static"))]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pclose(stream: *mut libc::FILE) -> c_int {
    static REAL: AtomicUsize = AtomicUsize::new(usize::MAX);
    let real = stream_closer(&REAL, c"pclose");
    // SAFETY: glibc's `pclose` with the caller's stream, closed once; the
    // caller waits for the helper.
    unsafe { close_stream(stream, |_| on_helper::run(|| real(stream))) }
}

/// glibc's `fclose` or `pclose` (`name`), looked up once into `slot`.
#[cfg(not(target_feature = "crt-static"))]
fn stream_closer(
    slot: &AtomicUsize,
    name: &core::ffi::CStr,
) -> unsafe extern "C" fn(*mut libc::FILE) -> c_int {
    let address = on_helper::real(slot, name);
    assert_ne!(address, 0, "glibc defines {name:?}");
    // SAFETY: glibc's function of that name, which has this signature.
    unsafe { core::mem::transmute(address) }
}

/// Closes `stream` with `close` (glibc's function, given the stream's
/// descriptor), recording the descriptor's end as the `close` hook would.
///
/// # Safety
/// `stream` is an open stream, and `close` closes it.
#[cfg(not(target_feature = "crt-static"))]
unsafe fn close_stream(stream: *mut libc::FILE, close: impl FnOnce(c_int) -> c_int) -> c_int {
    // SAFETY: the caller passes an open stream.
    let fd = unsafe { libc::fileno(stream) };
    let mut ret = 0;
    replacing(fd, Ended::Closed, || {
        ret = close(fd);
        0
    });
    ret
}
