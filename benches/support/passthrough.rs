//! The measurements of the `passthrough` bench, compiled into two binaries
//! that differ only in whether they link `coroutines`: the bench itself
//! (the libc functions below resolve to glibc) and `passthrough_hooked`
//! (they resolve to the runtime's hooks, called here outside any
//! coroutine, so they take the pass-through path).
//!
//! std only, and the libc functions are declared here, so both binaries
//! make exactly the same calls.

use std::ffi::{c_char, c_int, c_long, c_void, CStr};
use std::hint::black_box;
use std::time::Instant;

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

#[repr(C)]
struct DlInfo {
    dli_fname: *const c_char,
    dli_fbase: *mut c_void,
    dli_sname: *const c_char,
    dli_saddr: *mut c_void,
}

extern "C" {
    fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize;
    fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
    fn recv(fd: c_int, buf: *mut c_void, len: usize, flags: c_int) -> isize;
    fn send(fd: c_int, buf: *const c_void, len: usize, flags: c_int) -> isize;
    fn pipe2(fds: *mut c_int, flags: c_int) -> c_int;
    fn socketpair(domain: c_int, kind: c_int, protocol: c_int, fds: *mut c_int) -> c_int;
    fn syscall(number: c_long, ...) -> c_long;
    fn clock_nanosleep(
        clock: c_int,
        flags: c_int,
        req: *const Timespec,
        rem: *mut Timespec,
    ) -> c_int;
    fn dladdr(addr: *const c_void, info: *mut DlInfo) -> c_int;
    fn prctl(option: c_int, ...) -> c_int;
}

const AF_UNIX: c_int = 1;
const SOCK_STREAM: c_int = 1;
const O_NONBLOCK: c_int = 0o4000;
const O_CLOEXEC: c_int = 0o2000000;
const SOCK_CLOEXEC: c_int = O_CLOEXEC;
const SYS_FUTEX: c_long = 202;
const FUTEX_WAKE_PRIVATE: c_int = 1 | 128;
const CLOCK_MONOTONIC: c_int = 1;
const PR_SET_TIMERSLACK: c_int = 29;

/// One measured operation: its name, how many hooked calls one operation
/// makes, and the operation itself.
pub struct Op {
    pub name: &'static str,
    pub calls: u32,
    run: Box<dyn FnMut()>,
}

/// The operations, on descriptors made for them (kept open for good).
pub fn ops() -> Vec<Op> {
    let pipe = pair(|fds| unsafe { pipe2(fds, O_CLOEXEC) });
    let empty = pair(|fds| unsafe { pipe2(fds, O_CLOEXEC | O_NONBLOCK) });
    let socket = pair(|fds| unsafe { socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) });
    let futex_word: &'static u32 = Box::leak(Box::new(0));
    vec![
        Op {
            name: "write + read, pipe, 1 B",
            calls: 2,
            run: Box::new(move || {
                let mut byte = 0u8;
                // SAFETY: one byte to and from a pipe this op owns.
                unsafe {
                    assert_eq!(write(pipe[1], (&raw const byte).cast(), 1), 1);
                    assert_eq!(read(pipe[0], (&raw mut byte).cast(), 1), 1);
                }
            }),
        },
        Op {
            name: "send + recv, unix socketpair, 1 B",
            calls: 2,
            run: Box::new(move || {
                let mut byte = 0u8;
                // SAFETY: one byte to and from a socket pair this op owns.
                unsafe {
                    assert_eq!(send(socket[0], (&raw const byte).cast(), 1, 0), 1);
                    assert_eq!(recv(socket[1], (&raw mut byte).cast(), 1, 0), 1);
                }
            }),
        },
        Op {
            name: "read, empty non-blocking pipe (EAGAIN)",
            calls: 1,
            run: Box::new(move || {
                let mut byte = 0u8;
                // SAFETY: reads into one byte.
                let n = unsafe { read(empty[0], (&raw mut byte).cast(), 1) };
                assert_eq!(n, -1);
            }),
        },
        Op {
            name: "syscall(SYS_futex) wake, no waiters",
            calls: 1,
            run: Box::new(move || {
                // SAFETY: wakes nobody on a word this op owns.
                let woken = unsafe {
                    syscall(
                        SYS_FUTEX,
                        futex_word as *const u32,
                        FUTEX_WAKE_PRIVATE,
                        1 as c_int,
                    )
                };
                assert_eq!(woken, 0);
            }),
        },
        Op {
            name: "clock_nanosleep, 0 ns (timer slack 1 ns)",
            calls: 1,
            run: Box::new(|| {
                let zero = Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // SAFETY: a relative sleep of zero.
                let ret =
                    unsafe { clock_nanosleep(CLOCK_MONOTONIC, 0, &zero, std::ptr::null_mut()) };
                assert_eq!(ret, 0);
            }),
        },
    ]
}

fn pair(make: impl FnOnce(*mut c_int) -> c_int) -> [c_int; 2] {
    let mut fds = [-1; 2];
    assert_eq!(
        make(fds.as_mut_ptr()),
        0,
        "{}",
        std::io::Error::last_os_error()
    );
    fds
}

/// The file that defines the `read` this binary calls.
pub fn read_comes_from() -> String {
    let mut info = DlInfo {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    };
    let address = read as unsafe extern "C" fn(c_int, *mut c_void, usize) -> isize;
    // SAFETY: dladdr fills `info` for an address in this process.
    let found = unsafe { dladdr(address as *const c_void, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return "?".into();
    }
    // SAFETY: dladdr returned a NUL-terminated file name.
    let file = unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy();
    file.rsplit('/').next().unwrap_or(&file).to_owned()
}

/// Measures every operation: `batches` batches of `per_batch` operations
/// after one unmeasured batch; prints `ns<TAB>calls<TAB>name` per
/// operation (the fastest batch's ns per operation, which other processes
/// disturb least, and the hooked calls one operation makes), after a line
/// `from<TAB>FILE` naming the file that defines `read`.
pub fn child(batches: usize, per_batch: u32) {
    // A sleep of 0 ns would otherwise last the default timer slack (50 us)
    // and the wake-up, which would bury what the hook adds.
    // SAFETY: sets this thread's timer slack to 1 ns.
    unsafe { prctl(PR_SET_TIMERSLACK, 1 as c_long) };
    println!("from\t{}", read_comes_from());
    // For profiling one operation: only those whose names contain this.
    let only = std::env::var("PASSTHROUGH_OP").unwrap_or_default();
    for mut op in ops().into_iter().filter(|op| op.name.contains(&only)) {
        let fastest = (0..=batches)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..per_batch {
                    (op.run)();
                }
                black_box(start.elapsed().as_nanos() as f64 / f64::from(per_batch))
            })
            .skip(1)
            .fold(f64::INFINITY, f64::min);
        println!("{fastest:.2}\t{}\t{}", op.calls, op.name);
    }
}
