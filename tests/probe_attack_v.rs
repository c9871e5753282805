//! Round V: probes against the monitor's lingering park (2f4f1f8), the
//! holds' FIONBIO (38bd417) and the direct read of a timespec in the
//! running coroutine's own stack (ee46b0d).
//!
//! Failing at ee46b0d (every run): v01a-e (a bad timespec pointer on a
//! stack of the user's own below the coroutine's is read directly:
//! SIGSEGV instead of EFAULT; they pass at eba0fd3), v03d/e (an unaligned
//! timespec aborts a plain thread's ppoll/pselect in `sys::read_timespec`,
//! debug build), v03f (the same in a coroutine, timespec on the heap),
//! v14 (a 40 ms heartbeat: 141 monitor switches per 25 beats, 39 at
//! eba0fd3), v24 (a sandbox refusing ioctl(FIONBIO): the accept blocks
//! the worker; passes at eba0fd3). All fixed since: the direct read needs
//! the caller's frame in the coroutine's stack, the kernel-checked read is
//! unaligned, the monitor lingers only where it was woken within a look's
//! time, and a hold falls back to F_SETFL where FIONBIO is refused.

mod support;

use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use coroutines::Runtime;
use support::child::*;
use support::differential::*;
use support::seccomp::{self, Refused, Threads};
use support::timed::{self, c_ret, e_ret, Timed};
use support::*;

const SC: Ordering = Ordering::SeqCst;

// ---------------------------------------------------------------------------
// Timespecs (ee46b0d)
// ---------------------------------------------------------------------------

/// A mapping of `stack` read-write bytes with one `PROT_NONE` page right
/// above it, placed below `below` (an address in the caller's stack): the
/// page lies between a stack pointer in the mapping and the caller's
/// stack top.
fn map_below(below: usize, stack: usize) -> (usize, usize) {
    let page = 4096;
    let len = stack + page;
    for step in 1..64usize {
        let hint = (below.saturating_sub(step * (64 << 20))) & !(page - 1);
        if hint < (1 << 30) {
            break;
        }
        // SAFETY: a fresh anonymous mapping where nothing is mapped
        // (MAP_FIXED_NOREPLACE refuses an occupied range).
        let addr = unsafe {
            libc::mmap(
                hint as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            continue;
        }
        let addr = addr as usize;
        assert_eq!(addr, hint);
        // SAFETY: the top page of the mapping just made.
        let ret =
            unsafe { libc::mprotect((addr + stack) as *mut libc::c_void, page, libc::PROT_NONE) };
        assert_eq!(ret, 0);
        return (addr, addr + stack);
    }
    panic!("no room below {below:#x}");
}

static FOREIGN_CALL: Mutex<Option<Box<dyn FnMut() + Send>>> = Mutex::new(None);

extern "C" fn foreign_entry() {
    let mut call = FOREIGN_CALL.lock().unwrap().take().expect("a call");
    call();
}

/// Runs `f` on a stack of its own (`makecontext`/`swapcontext`, as a C
/// coroutine library or `stacker` does) mapped at `stack..stack+len`, and
/// comes back.
fn on_foreign_stack<T: Send + 'static>(
    stack: usize,
    len: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let out = Arc::new(Mutex::new(None));
    let mut f = Some(f);
    let slot = out.clone();
    *FOREIGN_CALL.lock().unwrap() = Some(Box::new(move || {
        let f = f.take().unwrap();
        *slot.lock().unwrap() = Some(f());
    }));
    // SAFETY: ucontext_t is plain data; `stack` is a live mapping of
    // `len` bytes; `back` outlives the switch.
    unsafe {
        let mut back: libc::ucontext_t = std::mem::zeroed();
        let mut there: libc::ucontext_t = std::mem::zeroed();
        assert_eq!(libc::getcontext(&mut there), 0);
        there.uc_stack.ss_sp = stack as *mut libc::c_void;
        there.uc_stack.ss_size = len;
        there.uc_link = &mut back;
        libc::makecontext(&mut there, foreign_entry, 0);
        assert_eq!(libc::swapcontext(&mut back, &there), 0);
    }
    let value = out.lock().unwrap().take().expect("the foreign call ran");
    value
}

/// `which` with a pointer into a `PROT_NONE` page, made on a foreign
/// stack that lies below the caller's: a thread gets EFAULT; so must a
/// coroutine, whose own stack top lies above the page (the hooks must
/// not take the page for a part of the coroutine's stack in use).
fn foreign_stack_bad_pointer(which: Timed) -> Result<i64, i32> {
    let marker = 0u8;
    let here = std::ptr::addr_of!(marker) as usize;
    let stack_len = 256 << 10;
    let (low, guard) = map_below(here, stack_len);
    let result = on_foreign_stack(low, stack_len, move || {
        timed::call(which, (guard + 64) as *const libc::timespec)
    });
    // SAFETY: the mapping made above, no longer used.
    unsafe { libc::munmap(low as *mut libc::c_void, stack_len + 4096) };
    result
}

#[test]
fn v01a_nanosleep_bad_pointer_on_a_foreign_stack() {
    let thread = isolated(|_| foreign_stack_bad_pointer(Timed::Nanosleep));
    assert_eq!(
        thread,
        Ended::Value(format!("{:?}", Err::<i64, i32>(libc::EFAULT)))
    );
}

#[test]
fn v01b_clock_nanosleep_bad_pointer_on_a_foreign_stack() {
    let thread = isolated(|_| foreign_stack_bad_pointer(Timed::ClockNanosleep));
    assert_eq!(
        thread,
        Ended::Value(format!("{:?}", Err::<i64, i32>(libc::EFAULT)))
    );
}

#[test]
fn v01c_futex_wait_bad_timeout_on_a_foreign_stack() {
    let thread = isolated(|_| foreign_stack_bad_pointer(Timed::FutexWait));
    assert_eq!(
        thread,
        Ended::Value(format!("{:?}", Err::<i64, i32>(libc::EFAULT)))
    );
}

#[test]
fn v01d_ppoll_bad_timeout_on_a_foreign_stack() {
    let thread = isolated(|_| foreign_stack_bad_pointer(Timed::Ppoll));
    assert_eq!(
        thread,
        Ended::Value(format!("{:?}", Err::<i64, i32>(libc::EFAULT)))
    );
}

#[test]
fn v01e_pselect_bad_timeout_on_a_foreign_stack() {
    let thread = isolated(|_| foreign_stack_bad_pointer(Timed::Pselect));
    assert_eq!(
        thread,
        Ended::Value(format!("{:?}", Err::<i64, i32>(libc::EFAULT)))
    );
}

/// Valid timed waits made on a foreign stack (below the coroutine's) wait
/// as long as on a thread and return the same.
#[test]
fn v02_timed_waits_on_a_foreign_stack_work() {
    differential("v02 foreign stack timed waits", |_| {
        let marker = 0u8;
        let here = std::ptr::addr_of!(marker) as usize;
        let stack_len = 256 << 10;
        let (low, _) = map_below(here, stack_len);
        let out = on_foreign_stack(low, stack_len, || {
            let ts = timespec(Duration::from_millis(30));
            let mut out = Vec::new();
            for which in [
                Timed::Nanosleep,
                Timed::ClockNanosleep,
                Timed::FutexWait,
                Timed::Ppoll,
                Timed::Pselect,
            ] {
                let start = Instant::now();
                let r = timed::call(which, &ts);
                let took = start.elapsed();
                out.push((format!("{which:?}"), r, took >= Duration::from_millis(29)));
            }
            std::thread::sleep(Duration::from_millis(5));
            out
        });
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(low as *mut libc::c_void, stack_len + 4096) };
        out
    });
}

/// Malformed and edge timespecs, aligned and not, in the coroutine's own
/// stack: every timed call answers as on a thread (EINVAL, ETIMEDOUT, 0).
#[test]
fn v03_malformed_timespecs_in_own_stack() {
    differential("v03 malformed timespecs", |_| {
        let cases: [(i64, i64); 9] = [
            (0, 0),
            (0, 1),
            (0, -1),
            (0, 1_000_000_000),
            (-1, 0),
            (i64::MIN, 0),
            (0, i64::MIN),
            (0, 1 << 32),
            (-1, -1),
        ];
        let mut out = Vec::new();
        for offset in [0usize, 8, 16] {
            for (sec, nsec) in cases {
                let mut buf = [0u8; 64];
                let t = ts(sec, nsec);
                // SAFETY: 16 bytes at `offset` fit the buffer.
                let p = unsafe {
                    let p = buf.as_mut_ptr().add(offset) as *mut libc::timespec;
                    p.write_unaligned(t);
                    p as *const libc::timespec
                };
                for which in [
                    Timed::Nanosleep,
                    Timed::ClockNanosleep,
                    Timed::FutexWait,
                    Timed::Ppoll,
                    Timed::Pselect,
                    Timed::ClockNanosleepUntil,
                ] {
                    out.push((
                        offset,
                        sec,
                        nsec,
                        format!("{which:?}"),
                        timed::call(which, p),
                    ));
                }
            }
        }
        out
    });
}

/// The kernel's answer to `which` with the timespec at `ts`, by a raw
/// system call no hook sees.
fn kernel_timed_call(which: Timed, ts: *const libc::timespec) -> Result<i64, i32> {
    static WORD: AtomicU32 = AtomicU32::new(7);
    let t = ts as usize;
    let (nr, args): (libc::c_long, [usize; 6]) = match which {
        Timed::Nanosleep => (libc::SYS_nanosleep, [t, 0, 0, 0, 0, 0]),
        Timed::ClockNanosleep => (
            libc::SYS_clock_nanosleep,
            [libc::CLOCK_MONOTONIC as usize, 0, t, 0, 0, 0],
        ),
        Timed::ClockNanosleepUntil => (
            libc::SYS_clock_nanosleep,
            [
                libc::CLOCK_MONOTONIC as usize,
                libc::TIMER_ABSTIME as usize,
                t,
                0,
                0,
                0,
            ],
        ),
        Timed::FutexWait => (
            libc::SYS_futex,
            [
                WORD.as_ptr() as usize,
                (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as usize,
                7,
                t,
                0,
                0,
            ],
        ),
        Timed::Ppoll => (libc::SYS_ppoll, [0, 0, t, 0, 8, 0]),
        Timed::Pselect => (libc::SYS_pselect6, [0, 0, 0, 0, t, 0]),
        Timed::EpollPwait2 => {
            // SAFETY: a new epoll instance, closed below.
            let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            assert!(ep >= 0);
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; 2];
            let args = [ep as usize, events.as_mut_ptr() as usize, 2, t, 0, 8];
            // SAFETY: valid arguments but for `ts`, which the kernel checks.
            let r = unsafe { kernel_syscall(libc::SYS_epoll_pwait2, args) };
            raw::close(ep);
            return if r < 0 { Err(-r as i32) } else { Ok(r as i64) };
        }
    };
    // SAFETY: valid arguments but for `ts`, which the kernel checks.
    let r = unsafe { kernel_syscall(nr, args) };
    if r < 0 {
        Err(-r as i32)
    } else {
        Ok(r as i64)
    }
}

/// Every timed call with a timespec at an odd address (1, 3 and 4 bytes
/// off alignment), valid or malformed: the kernel reads it fine, so the
/// hooks must answer as the kernel does, on a thread and in a coroutine
/// (each side in a child process: a misaligned read in a hook panics, and
/// a debug build aborts).
fn unaligned_case(which: Timed) -> Vec<(usize, i64, i64, Result<i64, i32>)> {
    let mut out = Vec::new();
    for offset in [1usize, 3, 4] {
        for (sec, nsec) in [(0i64, 1i64), (0, -1), (-1, 0), (0, 1_000_000_000)] {
            let mut buf = [0u8; 64];
            // SAFETY: 16 bytes at `offset` fit the buffer.
            let p = unsafe {
                let p = buf.as_mut_ptr().add(offset) as *mut libc::timespec;
                p.write_unaligned(ts(sec, nsec));
                p as *const libc::timespec
            };
            out.push((offset, sec, nsec, timed::call(which, p)));
        }
    }
    out
}

fn unaligned_reference(which: Timed) -> Ended {
    let mut out = Vec::new();
    for offset in [1usize, 3, 4] {
        for (sec, nsec) in [(0i64, 1i64), (0, -1), (-1, 0), (0, 1_000_000_000)] {
            let mut buf = [0u8; 64];
            // SAFETY: as above.
            let p = unsafe {
                let p = buf.as_mut_ptr().add(offset) as *mut libc::timespec;
                p.write_unaligned(ts(sec, nsec));
                p as *const libc::timespec
            };
            out.push((offset, sec, nsec, kernel_timed_call(which, p)));
        }
    }
    Ended::Value(format!("{out:?}"))
}

#[test]
fn v03a_unaligned_timespec_nanosleep() {
    let thread = isolated(|_| unaligned_case(Timed::Nanosleep));
    assert_eq!(thread, unaligned_reference(Timed::Nanosleep));
}

#[test]
fn v03b_unaligned_timespec_clock_nanosleep() {
    let thread = isolated(|_| unaligned_case(Timed::ClockNanosleep));
    assert_eq!(thread, unaligned_reference(Timed::ClockNanosleep));
}

#[test]
fn v03c_unaligned_timespec_futex() {
    let thread = isolated(|_| unaligned_case(Timed::FutexWait));
    assert_eq!(thread, unaligned_reference(Timed::FutexWait));
}

#[test]
fn v03d_unaligned_timespec_ppoll() {
    let thread = isolated(|_| unaligned_case(Timed::Ppoll));
    assert_eq!(thread, unaligned_reference(Timed::Ppoll));
}

#[test]
fn v03e_unaligned_timespec_pselect() {
    let thread = isolated(|_| unaligned_case(Timed::Pselect));
    assert_eq!(thread, unaligned_reference(Timed::Pselect));
}

/// A timespec at an odd address on the heap (not in the coroutine's own
/// stack, so the hooks have the kernel check it), in a coroutine, for each
/// timed call: the kernel's answers (each in a child process).
#[test]
fn v03f_unaligned_timespec_on_the_heap_in_a_coroutine() {
    let kinds = [
        Timed::Nanosleep,
        Timed::ClockNanosleep,
        Timed::FutexWait,
        Timed::Ppoll,
        Timed::Pselect,
    ];
    let case = |heap: &mut [u8],
                which: Timed,
                call: fn(Timed, *const libc::timespec) -> Result<i64, i32>| {
        // SAFETY: 16 bytes at offset 3 fit the 64-byte buffer.
        let p = unsafe {
            let p = heap.as_mut_ptr().add(3) as *mut libc::timespec;
            p.write_unaligned(ts(0, 1));
            p as *const libc::timespec
        };
        call(which, p)
    };
    if child_case().is_some() {
        let got = watchdog_on("v03f", Duration::from_secs(20), no_monitor(), move || {
            let mut heap = vec![0u8; 64];
            kinds.map(|which| case(&mut heap, which, timed::call))
        });
        println!("\nv03f: {got:?}");
        return;
    }
    let mut heap = vec![0u8; 64];
    let want = kinds.map(|which| case(&mut heap, which, kernel_timed_call));
    let output = finish_child("v03f", rerun("heap"), Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("v03f: {want:?}")),
        "want {want:?}; child {}: {stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .filter(|l| !l.starts_with("   "))
            .take(12)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The same through glibc's own timed waits (sem_timedwait,
/// pthread_mutex_timedlock, pthread_cond_timedwait), which pass the
/// caller's timespec or one of their own frames to futex.
#[test]
fn v04_glibc_timed_waits_with_edge_timespecs() {
    differential("v04 glibc timed waits", |_| {
        let mut out = Vec::new();
        let now = {
            let mut t = ts(0, 0);
            // SAFETY: a valid out pointer.
            unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut t) };
            t
        };
        let cases = [
            ts(0, 0),
            ts(0, -1),
            ts(0, 1_000_000_000),
            ts(-1, 0),
            ts(now.tv_sec, now.tv_nsec),
            ts(now.tv_sec, 1_000_000_000),
            ts(now.tv_sec, -5),
        ];
        for t in cases {
            // SAFETY: a fresh semaphore, mutex and condvar used by this
            // thread only (the mutex is locked by it first: timedlock of a
            // held normal mutex times out or fails).
            unsafe {
                let mut sem: libc::sem_t = std::mem::zeroed();
                libc::sem_init(&mut sem, 0, 0);
                let r = c_ret(libc::sem_timedwait(&mut sem, &t) as i64);
                libc::sem_destroy(&mut sem);
                let mut m: libc::pthread_mutex_t = libc::PTHREAD_MUTEX_INITIALIZER;
                let mut c: libc::pthread_cond_t = libc::PTHREAD_COND_INITIALIZER;
                libc::pthread_mutex_lock(&mut m);
                let cw = e_ret(libc::pthread_cond_timedwait(&mut c, &mut m, &t));
                libc::pthread_mutex_unlock(&mut m);
                out.push((out.len(), r, cw));
            }
        }
        out
    });
}

/// A timespec at the very top of a small coroutine stack (the root
/// coroutine's first frame, and a spawned coroutine's with the smallest
/// stack), under each stack size and with or without thread identity:
/// read right, never past the top.
#[test]
fn v05_timespecs_near_the_top_of_small_and_big_stacks() {
    for (stack, identity) in [
        (16 << 10, true),
        (16 << 10, false),
        (64 << 10, true),
        (8 << 20, false),
    ] {
        let builder = Runtime::builder()
            .workers(1)
            .stack_size(stack)
            .main_stack_size(stack)
            .thread_identity(identity);
        let got = watchdog_on("v05", Duration::from_secs(30), builder, move || {
            let t = ts(0, 2_000_000);
            let a = timed::call(Timed::Nanosleep, &t);
            let b = timed::call(Timed::Ppoll, &ts(0, -1));
            let h = coroutines::spawn(|| {
                let t = ts(0, 1_000_000);
                (
                    timed::call(Timed::ClockNanosleep, &t),
                    timed::call(Timed::FutexWait, &ts(-1, 0)),
                )
            });
            (a, b, h.join().unwrap())
        });
        assert_eq!(
            got,
            (Ok(0), Err(libc::EINVAL), (Ok(0), Err(libc::EINVAL))),
            "stack {stack}, identity {identity}"
        );
    }
}

/// A coroutine's timespec in another coroutine's stack (a pointer handed
/// over while the owner is parked): mapped memory, read right (the hook
/// must not crash or reject it); the kernel reads it.
#[test]
fn v06_timespec_in_another_coroutines_stack() {
    let got = watchdog_on(
        "v06",
        Duration::from_secs(30),
        Runtime::builder().workers(2),
        || {
            let (tx, rx) = mpsc::channel::<usize>();
            let (done_tx, done_rx) = mpsc::channel::<()>();
            let owner = coroutines::spawn(move || {
                let t = ts(0, 3_000_000);
                let bad = ts(0, 1_000_000_000);
                tx.send(&t as *const _ as usize).unwrap();
                tx.send(&bad as *const _ as usize).unwrap();
                done_rx.recv().unwrap();
                std::hint::black_box((&t, &bad));
            });
            let good = rx.recv().unwrap() as *const libc::timespec;
            let bad = rx.recv().unwrap() as *const libc::timespec;
            let mut out = Vec::new();
            for which in [
                Timed::Nanosleep,
                Timed::FutexWait,
                Timed::Ppoll,
                Timed::Pselect,
            ] {
                out.push((timed::call(which, good), timed::call(which, bad)));
            }
            done_tx.send(()).unwrap();
            owner.join().unwrap();
            out
        },
    );
    for (good, bad) in got {
        assert!(matches!(good, Ok(0) | Err(libc::ETIMEDOUT)), "{good:?}");
        assert_eq!(bad, Err(libc::EINVAL));
    }
}

// ---------------------------------------------------------------------------
// The monitor's lingering park (2f4f1f8)
// ---------------------------------------------------------------------------

fn raw_write_byte(fd: RawFd) {
    let byte = 1u8;
    // SAFETY: a one-byte write from `byte` to a descriptor the probe owns.
    unsafe {
        kernel_syscall(
            libc::SYS_write,
            [fd as usize, &byte as *const u8 as usize, 1, 0, 0, 0],
        )
    };
}

/// After the runtime idled `gap` (the monitor lingering, parking, or
/// parked), the root coroutine spawns a neighbour and blocks its worker
/// in a raw read that only the neighbour answers: the monitor must wake
/// and move the neighbour. Returns how long the rescue took; a rescue
/// that never comes is answered from outside after `limit` and fails.
fn rescue_after_idle(runtime: &Runtime, gap: Duration, how: u32, limit: Duration) -> Duration {
    std::thread::sleep(gap);
    let (read, write) = raw::pipe(0);
    let finished = Arc::new(AtomicBool::new(false));
    let rescuer = {
        let finished = finished.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < limit {
                if finished.load(SC) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            raw_write_byte(write);
            true
        })
    };
    let took = runtime.block_on(move || {
        match how {
            // Woken by the block_on submission, then a raw block at once.
            0 => {}
            // A coroutine's timer wakes the worker after the gap.
            1 => std::thread::sleep(gap),
            // A plain thread's futex wake wakes the worker.
            _ => {
                let (tx, rx) = mpsc::channel::<()>();
                let t = std::thread::spawn(move || {
                    std::thread::sleep(gap);
                    tx.send(()).unwrap();
                });
                rx.recv().unwrap();
                t.join().unwrap();
            }
        }
        let start = Instant::now();
        let neighbour = coroutines::spawn(move || raw_write_byte(write));
        read_byte_past_hooks(read);
        let took = start.elapsed();
        neighbour.join().unwrap();
        took
    });
    finished.store(true, SC);
    let rescued_from_outside = rescuer.join().unwrap();
    raw::close_all([read, write]);
    assert!(
        !rescued_from_outside,
        "after {gap:?} idle (wake kind {how}), the blocked worker's neighbour was not moved within {limit:?}"
    );
    took
}

/// Idle gaps spanning the monitor's park boundary (10 looks of 5 ms), with
/// three ways of waking the worker: every rescue comes within seconds.
#[test]
fn v10_rescue_after_idle_gaps_around_the_park_boundary() {
    let _serial = serial();
    let runtime = Runtime::builder()
        .workers(1)
        .blocked_worker_warnings(false)
        .build()
        .unwrap();
    let mut worst = Duration::ZERO;
    for round in 0..3 {
        for gap_ms in [0u64, 3, 20, 45, 50, 53, 55, 57, 60, 62, 70, 100, 200] {
            let how = (round + gap_ms as u32) % 3;
            let took = rescue_after_idle(
                &runtime,
                Duration::from_millis(gap_ms),
                how,
                Duration::from_secs(8),
            );
            worst = worst.max(took);
        }
    }
    println!("worst rescue {worst:?}");
    assert!(worst < Duration::from_secs(3), "worst rescue {worst:?}");
}

/// Two workers, both blocked after an idle gap: the parked monitor must
/// wake, see both blocked and start a spare.
#[test]
fn v11_both_workers_blocked_after_the_monitor_parked() {
    let _serial = serial();
    let runtime = Runtime::builder()
        .workers(2)
        .blocked_worker_warnings(false)
        .build()
        .unwrap();
    for gap_ms in [0u64, 55, 60, 150] {
        std::thread::sleep(Duration::from_millis(gap_ms));
        let (read, write) = raw::pipe(0);
        let (read2, write2) = raw::pipe(0);
        let (done_tx, done_rx) = mpsc::channel();
        let rt = &runtime;
        std::thread::scope(|s| {
            s.spawn(move || {
                rt.block_on(move || {
                    let other = coroutines::spawn(move || read_byte_past_hooks(read2));
                    // Both workers block; a third coroutine answers both.
                    let helper = coroutines::spawn(move || {
                        std::thread::sleep(Duration::from_millis(30));
                        raw_write_byte(write);
                        raw_write_byte(write2);
                    });
                    read_byte_past_hooks(read);
                    other.join().unwrap();
                    helper.join().unwrap();
                });
                let _ = done_tx.send(());
            });
            match done_rx.recv_timeout(Duration::from_secs(10)) {
                Ok(()) => {}
                Err(_) => {
                    raw_write_byte(write);
                    raw_write_byte(write2);
                    panic!("after {gap_ms} ms idle, two blocked workers were not rescued");
                }
            }
        });
        raw::close_all([read, write, read2, write2]);
    }
}

/// A runtime dropped while its monitor lingers or is about to park (idle
/// gaps around the boundary), many times: every drop returns.
#[test]
fn v12_drop_while_the_monitor_lingers_or_parks() {
    let _serial = serial();
    let (tx, rx) = mpsc::channel::<Option<u64>>();
    std::thread::spawn(move || {
        for i in 0..60u64 {
            let runtime = Runtime::builder()
                .workers(1 + (i % 2) as usize)
                .build()
                .unwrap();
            runtime.block_on(|| ());
            let gap = 40 + (i * 7) % 30; // 40..70 ms
            std::thread::sleep(Duration::from_millis(gap) + Duration::from_micros(i * 137 % 1000));
            let _ = tx.send(Some(i));
            drop(runtime);
        }
        let _ = tx.send(None);
    });
    let mut last = None;
    loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Some(i)) => last = Some(i),
            Ok(None) => break,
            Err(_) => panic!("a runtime drop hung after round {last:?}"),
        }
    }
}

/// After a rescue that started a spare, once everything ended, the
/// runtime idles: the monitor parks (the spare's rest must not keep it
/// looking) and its threads are quiet.
#[test]
fn v13_idle_after_a_rescue_with_a_spare_is_quiet() {
    let _serial = serial();
    let runtime = Runtime::builder()
        .workers(1)
        .blocked_worker_warnings(false)
        .build()
        .unwrap();
    rescue_after_idle(&runtime, Duration::ZERO, 0, Duration::from_secs(8));
    assert!(
        runtime.stats().spare_workers_started >= 1,
        "{:?}",
        runtime.stats()
    );
    std::thread::sleep(Duration::from_millis(300));
    let (threads, before) = thread_switches("coroutines-");
    std::thread::sleep(Duration::from_secs(1));
    let woken = thread_switches("coroutines-").1 - before;
    println!("{threads} runtime threads switched {woken} times in an idle second after a rescue");
    assert!(
        woken < 40,
        "{threads} runtime threads switched {woken} times in an idle second after a rescue"
    );
}

/// A coroutine with a 40 ms heartbeat (a periodic timer, a server polled
/// every few tens of ms): the monitor should not look every 5 ms between
/// beats, when every worker sleeps. Before 2f4f1f8 it woke about twice a
/// beat; lingering 10 looks, it never parks and looks ~8 times a beat.
#[test]
fn v14_a_40ms_heartbeat_does_not_keep_the_monitor_looking() {
    let _serial = serial();
    let runtime = Runtime::builder().workers(1).build().unwrap();
    runtime.block_on(|| std::thread::sleep(Duration::from_millis(1)));
    std::thread::sleep(Duration::from_millis(200));
    const BEATS: u64 = 25;
    let (monitors, before) = thread_switches("coroutines-moni");
    assert!(monitors >= 1);
    let (_, workers_before) = thread_switches("coroutines-work");
    runtime.block_on(|| {
        for _ in 0..BEATS {
            std::thread::sleep(Duration::from_millis(40));
        }
    });
    let woken = thread_switches("coroutines-moni").1 - before;
    let workers = thread_switches("coroutines-work").1 - workers_before;
    println!("the monitor switched {woken} times over {BEATS} beats of 40 ms (workers: {workers})");
    assert!(
        woken <= BEATS * 3,
        "the monitor switched {woken} times over {BEATS} beats of 40 ms (workers: {workers})"
    );
}

/// Many runtimes idling and waking at once (each with its own monitor):
/// every one rescues its blocked worker after its monitor parked.
#[test]
fn v15_many_runtimes_rescue_after_parking() {
    let _serial = serial();
    let failures = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|s| {
        for i in 0..6u64 {
            let failures = failures.clone();
            s.spawn(move || {
                let runtime = Runtime::builder()
                    .workers(1)
                    .blocked_worker_warnings(false)
                    .build()
                    .unwrap();
                for round in 0..4u64 {
                    let gap = Duration::from_millis(50 + (i * 3 + round * 5) % 20);
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        rescue_after_idle(
                            &runtime,
                            gap,
                            ((i + round) % 3) as u32,
                            Duration::from_secs(15),
                        )
                    }));
                    if r.is_err() {
                        failures.fetch_add(1, SC);
                    }
                }
            });
        }
    });
    assert_eq!(failures.load(SC), 0);
}

// ---------------------------------------------------------------------------
// Holds set and cleared with FIONBIO (38bd417)
// ---------------------------------------------------------------------------

/// `F_SETFL` through the hooks.
fn set_fl(fd: RawFd, flags: i32) -> Result<i64, i32> {
    // SAFETY: F_SETFL with an int.
    c_ret(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } as i64)
}

/// The user's and the kernel's view of `fd`'s status flags.
fn views(fd: RawFd) -> (i32, i32) {
    (flags(fd), kernel_flags(fd))
}

/// accept, connect and splice on blocking sockets that carry O_APPEND and
/// O_ASYNC (set by the user): after each call in a coroutine the flags
/// are exactly as on a thread: the user's, O_NONBLOCK clear, the others
/// kept.
#[test]
fn v20_holds_keep_the_users_other_flags() {
    let _ = differential("v20 flags after held calls", |_| {
        let extra = libc::O_APPEND | libc::O_ASYNC;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let lfd = listener.as_raw_fd();
        let base = flags(lfd);
        set_fl(lfd, base | extra).unwrap();
        let mut out = vec![("listener set", views(lfd))];
        // accept, waited for: a client connects 40 ms later.
        let client = after(Duration::from_millis(40), move || {
            TcpStream::connect(addr).unwrap()
        });
        let (server, _) = listener.accept().unwrap();
        out.push(("listener after accept", views(lfd)));
        out.push(("accepted", views(server.as_raw_fd())));
        let _client = client.join().unwrap();
        // connect on a blocking socket with the extra flags.
        let s = raw_tcp_socket();
        set_fl(s, flags(s) | extra).unwrap();
        let c = raw_connect(s, addr).map_err(|e| e.raw_os_error());
        out.push(("socket after connect", views(s)));
        let (peer, _) = listener.accept().unwrap();
        // connect refused.
        let r = raw_tcp_socket();
        set_fl(r, flags(r) | extra).unwrap();
        let refused = raw_connect(r, refused_addr()).map_err(|e| e.raw_os_error());
        out.push(("socket after refused connect", views(r)));
        // splice from the connected socket into a pipe, the data sent 40 ms
        // later.
        let (pr, pw) = raw::pipe(0);
        let peer_fd = peer.as_raw_fd();
        let writer = after(Duration::from_millis(40), move || {
            raw::write_once(s, b"hello").unwrap();
        });
        let spliced = raw::splice(peer_fd, pw, 5, 0);
        writer.join().unwrap();
        let _ = peer_fd;
        set_fl(peer_fd, flags(peer_fd) | extra).unwrap();
        let writer = after(Duration::from_millis(40), move || {
            raw::write_once(s, b"again").unwrap();
        });
        let spliced2 = raw::splice(peer_fd, pw, 5, 0);
        writer.join().unwrap();
        out.push(("peer after splice", views(peer_fd)));
        raw::close_all([s, r, pr, pw]);
        (out, c, refused, spliced, spliced2)
    });
}

/// The user's own O_NONBLOCK survives holds: a non-blocking listener's
/// accept fails at once with EAGAIN, and the flag stays, in the user's and
/// in the kernel's view; the same after FIONBIO set through ioctl.
#[test]
fn v21_users_nonblocking_survives() {
    let _ = differential("v21 user's O_NONBLOCK", |_| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let lfd = listener.as_raw_fd();
        let mut out = Vec::new();
        set_fl(lfd, flags(lfd) | libc::O_NONBLOCK | libc::O_APPEND).unwrap();
        // SAFETY: a null address is allowed.
        let r =
            c_ret(unsafe { libc::accept(lfd, std::ptr::null_mut(), std::ptr::null_mut()) } as i64);
        out.push((r, views(lfd)));
        set_fl(lfd, flags(lfd) & !libc::O_NONBLOCK).unwrap();
        let on: libc::c_int = 1;
        // SAFETY: FIONBIO with a live int.
        let i = unsafe { libc::ioctl(lfd, libc::FIONBIO, &on) };
        // SAFETY: as above.
        let r =
            c_ret(unsafe { libc::accept(lfd, std::ptr::null_mut(), std::ptr::null_mut()) } as i64);
        out.push((r, views(lfd)));
        out.push((Ok(i as i64), views(lfd)));
        // connect on a non-blocking socket: EINPROGRESS, flag kept.
        let s = raw_tcp_socket();
        set_fl(s, flags(s) | libc::O_NONBLOCK).unwrap();
        let c = raw_connect(s, listener.local_addr().unwrap()).map_err(|e| e.raw_os_error());
        out.push((Ok(0), views(s)));
        raw::close(s);
        (out, c)
    });
}

/// Error paths: accept and connect on a closed descriptor, on a pipe, on
/// an O_PATH descriptor of a bound unix socket: the same errors as on a
/// thread, and nothing left changed.
#[test]
fn v22_held_calls_error_paths() {
    differential("v22 error paths", |_| {
        let mut out = Vec::new();
        let (pr, pw) = raw::pipe(0);
        let addr = sockaddr_in(refused_addr());
        for fd in [pr, 987, -1] {
            // SAFETY: null address for accept; a live sockaddr for connect.
            let a = c_ret(
                unsafe { libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut()) } as i64,
            );
            // SAFETY: as above.
            let c = c_ret(unsafe {
                libc::connect(
                    fd,
                    &addr as *const _ as *const libc::sockaddr,
                    std::mem::size_of_val(&addr) as u32,
                )
            } as i64);
            out.push((a, c));
        }
        out.push((Ok(flags(pr) as i64), Ok(kernel_flags(pr) as i64)));
        // An O_PATH descriptor of a bound unix socket (fstat says socket).
        let path = TempPath::unique();
        let l = raw::unix_listener(&path);
        let cpath = path.c_path();
        // SAFETY: a valid path.
        let opath = unsafe { libc::open(cpath.as_ptr(), libc::O_PATH) };
        assert!(opath >= 0);
        // SAFETY: as above.
        let a = c_ret(
            unsafe { libc::accept(opath, std::ptr::null_mut(), std::ptr::null_mut()) } as i64,
        );
        let c = c_ret(unsafe {
            libc::connect(
                opath,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of_val(&addr) as u32,
            )
        } as i64);
        out.push((a, c));
        out.push((Ok(flags(opath) as i64), Ok(kernel_flags(opath) as i64)));
        raw::close_all([pr, pw, l, opath]);
        out
    });
}

/// Coroutines accept on a blocking listener (O_APPEND set by the user)
/// again and again, on two workers, while plain threads (a) read F_GETFL
/// through the hooks (they must never see O_NONBLOCK, always O_APPEND),
/// (b) accept on the same listener (blocking: never EAGAIN), (c) set
/// flags with F_SETFL and FIONBIO to the values they already have. At the
/// end the kernel's flags are the user's.
#[test]
fn v23_holds_under_concurrent_flag_readers_writers_and_thread_acceptors() {
    for run in 0..3 {
        let got = watchdog_on(
            "v23",
            Duration::from_secs(60),
            Runtime::builder().workers(2),
            move || {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let lfd = listener.as_raw_fd();
                let user = flags(lfd) | libc::O_APPEND;
                set_fl(lfd, user).unwrap();
                let stop = Arc::new(AtomicBool::new(false));
                let seen_bad = Arc::new(AtomicU64::new(0));
                let accepted = Arc::new(AtomicU64::new(0));
                let thread_errors = Arc::new(AtomicU64::new(0));
                const CONNS: u64 = 400;
                let reader = {
                    let (stop, seen_bad) = (stop.clone(), seen_bad.clone());
                    std::thread::spawn(move || {
                        let mut reads = 0u64;
                        while !stop.load(SC) {
                            let f = flags(lfd);
                            if f != user {
                                seen_bad.fetch_add(1, SC);
                            }
                            reads += 1;
                        }
                        reads
                    })
                };
                let setter = {
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        let off: libc::c_int = 0;
                        while !stop.load(SC) {
                            set_fl(lfd, user).unwrap();
                            // SAFETY: FIONBIO with a live int.
                            unsafe { libc::ioctl(lfd, libc::FIONBIO, &off) };
                            std::thread::yield_now();
                        }
                    })
                };
                let thread_acceptor = {
                    let (accepted, thread_errors) = (accepted.clone(), thread_errors.clone());
                    std::thread::spawn(move || loop {
                        // SAFETY: null address.
                        let c = unsafe {
                            libc::accept(lfd, std::ptr::null_mut(), std::ptr::null_mut())
                        };
                        if c < 0 {
                            thread_errors.fetch_add(1, SC);
                            return errno();
                        }
                        raw::close(c);
                        if accepted.fetch_add(1, SC) + 1 >= CONNS {
                            return 0;
                        }
                    })
                };
                let acceptors: Vec<_> = (0..3)
                    .map(|_| {
                        let accepted = accepted.clone();
                        coroutines::spawn(move || {
                            let mut errors = Vec::new();
                            while accepted.load(SC) < CONNS {
                                // SAFETY: null address.
                                let c = unsafe {
                                    libc::accept(lfd, std::ptr::null_mut(), std::ptr::null_mut())
                                };
                                if c < 0 {
                                    errors.push(errno());
                                    continue;
                                }
                                raw::close(c);
                                accepted.fetch_add(1, SC);
                            }
                            errors
                        })
                    })
                    .collect();
                let connector = std::thread::spawn(move || {
                    let mut conns = Vec::new();
                    for _ in 0..CONNS + 8 {
                        conns.push(TcpStream::connect(addr).unwrap());
                        if conns.len() % 16 == 0 {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    conns
                });
                let _conns = connector.join().unwrap();
                // Wake whoever still waits.
                let extra: Vec<_> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
                let errors: Vec<Vec<i32>> =
                    acceptors.into_iter().map(|h| h.join().unwrap()).collect();
                let extra2: Vec<_> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
                let thread_result = thread_acceptor.join().unwrap();
                stop.store(true, SC);
                let reads = reader.join().unwrap();
                setter.join().unwrap();
                drop((extra, extra2));
                (
                    seen_bad.load(SC),
                    reads,
                    errors,
                    thread_result,
                    thread_errors.load(SC),
                    views(lfd),
                    user,
                )
            },
        );
        let (bad, reads, errors, thread_result, thread_errors, (user_view, kernel_view), user) =
            got;
        println!("run {run}: {reads} flag reads, {bad} bad; coroutine errors {errors:?}; thread {thread_result} / {thread_errors}");
        assert_eq!(
            bad, 0,
            "run {run}: F_GETFL showed something else than the user's flags {bad} times of {reads}"
        );
        assert!(
            errors.iter().all(|e| e.is_empty()),
            "run {run}: coroutine accept errors {errors:?}"
        );
        assert_eq!(
            (thread_result, thread_errors),
            (0, 0),
            "run {run}: the plain thread's blocking accept failed"
        );
        assert_eq!(
            (user_view, kernel_view),
            (user, user),
            "run {run}: flags at the end"
        );
    }
}

/// In a process whose sandbox refuses ioctl(FIONBIO) but allows fcntl
/// (as before 38bd417 the holds used), a coroutine's accept on a blocking
/// listener still parks: a neighbour coroutine on the one worker keeps
/// ticking while it waits 300 ms for a client; and the flags are the
/// user's after.
#[test]
fn v24_accept_parks_when_the_sandbox_refuses_fionbio() {
    if child_case().is_some() {
        assert!(
            seccomp::refuse(Refused::Ioctl(libc::FIONBIO), libc::EPERM, Threads::All),
            "seccomp"
        );
        let (ticks, after_flags, user) =
            watchdog_on("v24", Duration::from_secs(20), no_monitor(), || {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let user = flags(listener.as_raw_fd());
                let ticks = Arc::new(AtomicU64::new(0));
                let stop = Arc::new(AtomicBool::new(false));
                let ticker = {
                    let (ticks, stop) = (ticks.clone(), stop.clone());
                    coroutines::spawn(move || {
                        while !stop.load(SC) {
                            std::thread::sleep(Duration::from_millis(1));
                            ticks.fetch_add(1, SC);
                        }
                    })
                };
                coroutines::yield_now();
                let client = after(Duration::from_millis(300), move || {
                    TcpStream::connect(addr).unwrap()
                });
                let start = ticks.load(SC);
                let (_server, _) = listener.accept().unwrap();
                let during = ticks.load(SC) - start;
                stop.store(true, SC);
                ticker.join().unwrap();
                let _c = client.join().unwrap();
                (during, views(listener.as_raw_fd()), user)
            });
        println!("ticks during accept {ticks}; flags {after_flags:?} user {user}");
        assert_eq!(after_flags, (user, user));
        assert!(
            ticks >= MIN_TICKS,
            "the accept blocked the worker: {ticks} ticks"
        );
        println!("ok");
        return;
    }
    let output = finish_child("v24", rerun("seccomp"), Duration::from_secs(60));
    assert_said_ok(&output);
}
