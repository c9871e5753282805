//! The platform layer: raw system calls and the few facts about the C
//! library's layout that the runtime depends on.
//!
//! Everything architecture-specific lives in one file per target
//! (`x86_64.rs` today); the rest of the crate calls the portable wrappers
//! below. The runtime never calls the libc functions it hooks for its own
//! work: those calls would re-enter the hook layer.

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
compile_error!("coroutines-runtime supports x86-64 Linux only for now (see sys/mod.rs)");

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod x86_64;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod x86_64_trampoline;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(crate) use x86_64::{
    prefetch, read_tls_i32, set_thread_pointer, syscall6, thread_pointer, thread_self,
    write_tls_i32,
};

use core::sync::atomic::{AtomicIsize, Ordering};

use libc::{c_int, c_long};

/// Runs a system call, returning the kernel's result: a non-negative value,
/// or `-errno`.
#[inline]
pub(crate) fn raw(nr: c_long, args: [usize; 6]) -> isize {
    // SAFETY: the callers below pass argument words that the kernel validates;
    // a bad pointer yields EFAULT, never undefined behaviour in this process,
    // except for calls that write through pointers, which document their own
    // contracts.
    unsafe { syscall6(nr, args) }
}

/// Converts a raw result into `Ok(value)` or `Err(errno)`.
#[inline]
pub(crate) fn check(ret: isize) -> Result<usize, c_int> {
    if ret < 0 {
        Err(-ret as c_int)
    } else {
        Ok(ret as usize)
    }
}

/// Where the calling thread's `errno` is: its offset from the thread
/// pointer (negative), learned on first use; 0 before that; [`CALL`] if
/// only a call to `__errno_location` can say. glibc's `errno` is
/// initial-exec TLS of libc's static block: the same offset in every thread
/// and in every coroutine's copy of a thread area, so a hook sets it with
/// one store, as libc's own wrappers do.
static ERRNO_OFFSET: AtomicIsize = AtomicIsize::new(0);

/// `__errno_location` is not glibc's (a preloaded library interposes it):
/// its answer may be anywhere, so each access asks it.
const CALL: isize = 1;

/// Learns the offset at load time, before `main`: `dladdr` takes the
/// loader's lock, which a signal handler making the process's first
/// failing call must not.
#[used]
#[unsafe(link_section = ".init_array")]
static LEARN_ERRNO_AT_LOAD: extern "C" fn() = learn_errno_at_load;

extern "C" fn learn_errno_at_load() {
    learn_errno_offset();
}

#[cold]
fn learn_errno_offset() -> isize {
    let offset = match errno_location_is_libcs() {
        // SAFETY: `__errno_location` has no preconditions.
        true => (unsafe { libc::__errno_location() }) as isize - thread_self() as isize,
        false => CALL,
    };
    ERRNO_OFFSET.store(offset, Ordering::Relaxed);
    offset
}

/// Whether the `__errno_location` this process calls is the C library's
/// own, whose answer lies at a fixed offset from the thread pointer.
fn errno_location_is_libcs() -> bool {
    // SAFETY: an all-zero `Dl_info` is valid (null pointers).
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    let function = libc::__errno_location as *const libc::c_void;
    // SAFETY: `info` is a valid out-pointer; dladdr reads no other memory.
    if unsafe { libc::dladdr(function, &mut info) } == 0 || info.dli_fname.is_null() {
        return false;
    }
    // SAFETY: dladdr succeeded: `dli_fname` is a C string it owns.
    let file = unsafe { core::ffi::CStr::from_ptr(info.dli_fname) }.to_bytes();
    let name = file.rsplit(|&byte| byte == b'/').next().unwrap_or(file);
    name.starts_with(b"libc.so")
}

/// The calling thread's `errno` slot, for the slow cases.
#[cold]
fn errno_slot(offset: isize) -> *mut c_int {
    let offset = match offset {
        0 => learn_errno_offset(),
        offset => offset,
    };
    match offset {
        // SAFETY: `__errno_location` has no preconditions.
        CALL => unsafe { libc::__errno_location() },
        offset => (thread_self() as isize + offset) as *mut c_int,
    }
}

/// Sets the calling thread's `errno`.
#[inline]
pub(crate) fn set_errno(e: c_int) {
    match ERRNO_OFFSET.load(Ordering::Relaxed) {
        // SAFETY: a learned offset: errno's slot in every thread's static TLS.
        offset if offset < 0 => unsafe { write_tls_i32(offset, e) },
        // SAFETY: the calling thread's errno slot.
        offset => unsafe { *errno_slot(offset) = e },
    }
}

/// Reads the calling thread's `errno`.
#[inline]
pub(crate) fn errno() -> c_int {
    match ERRNO_OFFSET.load(Ordering::Relaxed) {
        // SAFETY: as in `set_errno`.
        offset if offset < 0 => unsafe { read_tls_i32(offset) },
        // SAFETY: as in `set_errno`.
        offset => unsafe { *errno_slot(offset) },
    }
}

/// Waits on a futex word while it holds `expected`, bypassing the hook layer.
pub(crate) fn futex_wait(word: &core::sync::atomic::AtomicU32, expected: u32) {
    futex_wait_timeout(word, expected, None);
}

/// As [`futex_wait`], for at most `timeout` (`None`: no limit).
pub(crate) fn futex_wait_timeout(
    word: &core::sync::atomic::AtomicU32,
    expected: u32,
    timeout: Option<core::time::Duration>,
) {
    let timeout = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let timeout = timeout
        .as_ref()
        .map_or(core::ptr::null(), |t| t as *const libc::timespec);
    let _ = raw(
        libc::SYS_futex,
        [
            word.as_ptr() as usize,
            (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as usize,
            expected as usize,
            timeout as usize,
            0,
            0,
        ],
    );
}

/// Wakes up to `count` threads waiting on a futex word, bypassing the hook
/// layer.
pub(crate) fn futex_wake(word: &core::sync::atomic::AtomicU32, count: i32) -> isize {
    raw(
        libc::SYS_futex,
        [
            word.as_ptr() as usize,
            (libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as usize,
            count as usize,
            0,
            0,
            0,
        ],
    )
}

/// Writes all of `bytes` to `fd` (a blocking descriptor), bypassing the hook
/// layer; stops at the first error.
pub(crate) fn write_all(fd: c_int, mut bytes: &[u8]) -> Result<(), c_int> {
    while !bytes.is_empty() {
        let n = check(raw(
            libc::SYS_write,
            [fd as usize, bytes.as_ptr() as usize, bytes.len(), 0, 0, 0],
        ))?;
        bytes = &bytes[n..];
    }
    Ok(())
}

/// Closes a descriptor the runtime owns.
pub(crate) fn close(fd: c_int) {
    let _ = raw(libc::SYS_close, [fd as usize, 0, 0, 0, 0, 0]);
}

/// Yields the processor to another thread.
pub(crate) fn sched_yield() {
    let _ = raw(libc::SYS_sched_yield, [0; 6]);
}

/// `syscall!(SYS_name, a, b, ..)`: a raw system call with up to six
/// arguments of any integer or pointer type, returning `-errno` on failure.
macro_rules! syscall {
    ($nr:expr $(, $arg:expr)* $(,)?) => {{
        let args: &[usize] = &[$($arg as usize),*];
        let mut words = [0usize; 6];
        words[..args.len()].copy_from_slice(args);
        $crate::sys::raw($nr, words)
    }};
}
pub(crate) use syscall;

/// Converts a raw result to the C convention: the value, or -1 with `errno`
/// set.
#[inline]
pub(crate) fn c_result(ret: isize) -> isize {
    if ret < 0 {
        set_errno(-ret as c_int);
        -1
    } else {
        ret
    }
}

/// `ppoll` with an optional timeout (`None` waits forever) and no signal
/// mask; the raw result.
pub(crate) fn ppoll(
    fds: *mut libc::pollfd,
    nfds: libc::nfds_t,
    timeout: Option<core::time::Duration>,
) -> isize {
    ppoll_masked(fds, nfds, timeout, core::ptr::null())
}

/// `ppoll` with an optional timeout and the caller's signal mask (null:
/// the thread's); the raw result.
pub(crate) fn ppoll_masked(
    fds: *mut libc::pollfd,
    nfds: libc::nfds_t,
    timeout: Option<core::time::Duration>,
    sigmask: *const libc::sigset_t,
) -> isize {
    let timeout = timeout.map(timespec);
    let timeout = timeout
        .as_ref()
        .map_or(core::ptr::null(), |t| t as *const libc::timespec);
    syscall!(libc::SYS_ppoll, fds, nfds, timeout, sigmask, SIGSET_BYTES)
}

/// The kernel's signal set size, for the calls that take a mask.
pub(crate) const SIGSET_BYTES: usize = 8;

/// `madvise` advice that turns pages into guard pages without a new
/// mapping (Linux 6.13+; not in the `libc` crate yet).
pub(crate) const MADV_GUARD_INSTALL: libc::c_int = 102;

/// The pidfd that names the calling process's own thread (Linux 6.15+).
pub(crate) const PIDFD_SELF: libc::c_int = -10000;

/// `ioctl` request: whether a TCP socket's next byte is the urgent mark
/// (`<linux/sockios.h>`; the `libc` crate has it for Apple targets only).
pub(crate) const SIOCATMARK: libc::c_ulong = 0x8905;

/// A duration as a `timespec`.
pub(crate) fn timespec(t: core::time::Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    }
}

/// Fills `buf` from a caller's pointer through the kernel
/// (`process_vm_readv` on this process): `EFAULT` if it cannot be read,
/// instead of a crash in the hook. Where that call is not allowed (some
/// seccomp profiles), reads it directly, as C code handed the pointer would.
pub(crate) fn read_user_bytes(ptr: *const u8, buf: &mut [u8]) -> Result<(), c_int> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: ptr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let pid = raw(libc::SYS_getpid, [0; 6]);
    let ret = syscall!(
        libc::SYS_process_vm_readv,
        pid,
        &local as *const libc::iovec,
        1,
        &remote as *const libc::iovec,
        1,
        0
    );
    match check(ret) {
        Ok(n) if n == buf.len() => Ok(()),
        Ok(_) => Err(libc::EFAULT),
        Err(libc::ENOSYS | libc::EPERM) => {
            // SAFETY: the call is refused here; the caller vouches for
            // `ptr` and `buf.len()` bytes behind it.
            unsafe { core::ptr::copy_nonoverlapping(ptr, buf.as_mut_ptr(), buf.len()) };
            Ok(())
        }
        Err(_) => Err(libc::EFAULT),
    }
}

/// Reads a caller's `timespec` as a system call taking it would: `EFAULT`
/// if it cannot be read, `EINVAL` if it is not a valid duration, `None`
/// for null. The kernel reads it first (a `FUTEX_WAIT` on a word that
/// never holds the expected value checks its timeout, then returns at
/// once), so a bad pointer is an error, not a crash in the hook.
pub(crate) fn read_timespec(
    ts: *const libc::timespec,
) -> Result<Option<core::time::Duration>, c_int> {
    if ts.is_null() {
        return Ok(None);
    }
    let word = core::sync::atomic::AtomicU32::new(0);
    let ret = raw(
        libc::SYS_futex,
        [
            word.as_ptr() as usize,
            (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as usize,
            1,
            ts as usize,
            0,
            0,
        ],
    );
    match check(ret) {
        // SAFETY: the kernel has just read it, and found it valid; it may
        // be at any address.
        Err(libc::EAGAIN) => timespec_duration(unsafe { ts.read_unaligned() }).map(Some),
        Err(error) => Err(error),
        Ok(_) => Err(libc::EINVAL),
    }
}

/// The duration a `timespec` argument gives, or `EINVAL` where the kernel
/// finds it malformed (`timespec64_valid`: a negative second, or a
/// nanosecond outside `0..1e9`).
pub(crate) fn timespec_duration(ts: libc::timespec) -> Result<core::time::Duration, c_int> {
    if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
        return Err(libc::EINVAL);
    }
    Ok(core::time::Duration::new(
        ts.tv_sec as u64,
        ts.tv_nsec as u32,
    ))
}

/// `CLOCK_MONOTONIC` in nanoseconds: never 0 (the clock counts from boot).
pub(crate) fn monotonic_nanos() -> u64 {
    clock_nanos(libc::CLOCK_MONOTONIC)
}

/// `clock` in nanoseconds, read through the vDSO with no system call
/// (`clock_gettime` is not hooked).
pub(crate) fn clock_nanos(clock: libc::clockid_t) -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write; the clock ids passed are
    // the system's.
    unsafe { libc::clock_gettime(clock, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// The calling thread's kernel id.
pub(crate) fn gettid() -> libc::pid_t {
    raw(libc::SYS_gettid, [0; 6]) as libc::pid_t
}

/// The CPU time thread `tid` of this process has used; `None` if it has
/// exited. The clock id is the kernel's per-thread scheduler clock, as
/// glibc's `pthread_getcpuclockid` makes it.
pub(crate) fn thread_cpu_time(tid: libc::pid_t) -> Option<core::time::Duration> {
    let clock = (!(tid as libc::clockid_t) << 3) | 6;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let ret = syscall!(
        libc::SYS_clock_gettime,
        clock,
        &mut now as *mut libc::timespec
    );
    (ret == 0).then(|| core::time::Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
}

/// Whether thread `tid` of this process is running or waiting for a CPU
/// (state `R` in /proc), rather than asleep in the kernel.
pub(crate) fn thread_runnable(tid: libc::pid_t) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses and may
    // hold spaces.
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
    state.is_some_and(|rest| rest.starts_with('R'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hooks' `errno` is libc's, on every thread.
    #[test]
    fn errno_is_the_c_librarys() {
        let check = |value: c_int| {
            set_errno(value);
            // SAFETY: the calling thread's errno slot.
            assert_eq!(unsafe { *libc::__errno_location() }, value);
            // SAFETY: as above.
            unsafe { *libc::__errno_location() = value + 1 };
            assert_eq!(errno(), value + 1);
        };
        check(1234);
        let threads: Vec<_> = (0..4)
            .map(|i| std::thread::spawn(move || check(100 + i)))
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(errno(), 1235, "other threads' errno is their own");
        assert!(
            ERRNO_OFFSET.load(Ordering::Relaxed) < 0,
            "glibc's __errno_location is recognised: errno is one store away"
        );
    }

    /// Where `__errno_location` is not libc's, each access asks it.
    #[test]
    fn an_interposed_errno_location_is_asked_every_time() {
        // SAFETY: no preconditions.
        assert_eq!(errno_slot(CALL), unsafe { libc::__errno_location() });
        let elsewhere = std::thread::spawn(|| errno_slot(CALL) as usize)
            .join()
            .unwrap();
        assert_ne!(elsewhere, errno_slot(CALL) as usize);
    }
}
