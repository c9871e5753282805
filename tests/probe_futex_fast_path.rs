//! Probes of three changes: the futex hook's pass-through wake of a
//! disarmed bucket (`9f27d11`), device classification without a lock and
//! the wait epoch set at build (`e7bc504`), and errno through an
//! interposed `__errno_location` (`30373a4`).
//!
//! - Wake counts with real kernel waiters, for odd and high-bit counts,
//!   from a thread and from coroutines, with the word's bucket armed and
//!   disarmed: the kernel's count, errno untouched.
//! - std::sync hand-offs between a coroutine and a thread, and between
//!   coroutines on two workers, while a neighbour keeps disarming the
//!   words' buckets: no lost wake-up.
//! - Fresh processes whose coroutines classify many kinds of descriptor at
//!   once for the first time: errno untouched on success, no descriptor
//!   left behind (the classification's epoll instances are its own).
//! - A preloaded library interposing `__errno_location` (a per-thread slot
//!   of its own, or one global): hooked calls that fail set the errno the
//!   program reads through it, and nothing crashes.

mod support;

use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use coroutines::Runtime;
use support::child::{child_case, rerun, run_child};
use support::futex_table::{futex, noise_beside, IDLE};
use support::{errno, kernel_syscall, set_errno};

const MARK: i32 = 7777;
const WAKE: usize = (libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as usize;
const WAIT: usize = (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as usize;

fn is_asleep(tid: libc::pid_t) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
        return false;
    };
    stat[stat.rfind(')').unwrap() + 1..]
        .trim_start()
        .starts_with('S')
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Armed,
    Disarmed,
}

/// Puts the bucket of `addr` in `state` without touching `addr`'s waiters:
/// idle wakes on a neighbour disarm it; a coroutine's wait on a neighbour
/// whose value differs arms it (and returns EAGAIN at once).
fn set_state(addr: usize, state: State, runtime: &Runtime) {
    let n = noise_beside(addr);
    match state {
        State::Disarmed => {
            for _ in 0..IDLE {
                futex(n.as_ptr() as usize, WAKE, 1, 0, 0, 0);
            }
        }
        State::Armed => {
            let a = n.as_ptr() as usize;
            let value = n.load(Ordering::SeqCst);
            let r = runtime.block_on(move || {
                set_errno(MARK);
                let ret = futex(a, WAIT, value.wrapping_add(1) as usize, 0, 0, 0);
                (ret, errno())
            });
            assert_eq!(r, (-1, libc::EAGAIN), "arming wait");
        }
    }
}

/// What the kernel's `FUTEX_WAKE` makes of `val` with `waiters` waiting.
fn kernel_count(val: usize, waiters: i64) -> i64 {
    let n = val as u32 as i32;
    if n <= 0 {
        1
    } else {
        i64::from(n).min(waiters)
    }
}

/// Wake counts through the hook with kernel waiters present, for counts
/// the kernel narrows, from a thread and from coroutines on either worker,
/// with the bucket armed and disarmed: the kernel's count, errno untouched,
/// that many waiters woken.
#[test]
fn wake_counts_with_kernel_waiters_in_either_bucket_state() {
    const WAITERS: i64 = 4;
    let runtime = Arc::new(Runtime::builder().workers(2).build().unwrap());
    let word: &'static AtomicU32 = Box::leak(Box::new(AtomicU32::new(0)));
    let w = word.as_ptr() as usize;
    let vals: [usize; 11] = [
        0,
        1,
        2,
        3,
        5,
        u32::MAX as usize,
        0xdead_beef_0000_0002,
        0xffff_ffff_0000_0000,
        0x8000_0000,
        1 << 32,
        -2i64 as usize,
    ];
    let mut failures = Vec::new();
    for state in [State::Disarmed, State::Armed] {
        for from_coroutine in [false, true] {
            for &val in &vals {
                let woken = Arc::new(AtomicU64::new(0));
                let tids = Arc::new(Mutex::new(Vec::new()));
                let waiters: Vec<_> = (0..WAITERS)
                    .map(|_| {
                        let (woken, tids) = (woken.clone(), tids.clone());
                        thread::spawn(move || {
                            // SAFETY: no preconditions.
                            tids.lock().unwrap().push(unsafe { libc::gettid() });
                            // SAFETY: a live word; no timeout.
                            let ret =
                                unsafe { kernel_syscall(libc::SYS_futex, [w, WAIT, 0, 0, 0, 0]) };
                            assert!(ret == 0 || ret == -(libc::EAGAIN as isize), "{ret}");
                            woken.fetch_add(1, Ordering::SeqCst);
                        })
                    })
                    .collect();
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let t = tids.lock().unwrap().clone();
                    if t.len() == WAITERS as usize && t.iter().all(|&t| is_asleep(t)) {
                        break;
                    }
                    assert!(Instant::now() < deadline, "the waiters never slept");
                    thread::sleep(Duration::from_millis(1));
                }
                thread::sleep(Duration::from_millis(20));
                set_state(w, state, &runtime);
                let wake = move || {
                    set_errno(MARK);
                    let ret = futex(w, WAKE, val, 0, 0, 0);
                    (ret, errno())
                };
                let (ret, e) = if from_coroutine {
                    runtime.block_on(wake)
                } else {
                    wake()
                };
                let expected = kernel_count(val, WAITERS);
                let deadline = Instant::now() + Duration::from_millis(500);
                while woken.load(Ordering::SeqCst) < expected as u64 && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(1));
                }
                thread::sleep(Duration::from_millis(20));
                let after = woken.load(Ordering::SeqCst);
                if (ret, e, after) != (expected, MARK, expected as u64) {
                    failures.push(format!(
                        "{state:?} coroutine={from_coroutine} val={val:#x}: ret {ret} errno {e} \
                         woken {after}; expected {expected}"
                    ));
                }
                word.store(1, Ordering::SeqCst);
                // SAFETY: a live word.
                unsafe { kernel_syscall(libc::SYS_futex, [w, WAKE, i32::MAX as usize, 0, 0, 0]) };
                for waiter in waiters {
                    waiter.join().unwrap();
                }
                word.store(0, Ordering::SeqCst);
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A wake of a word nobody waits on: 0, errno untouched, in both states;
/// a wake of a misaligned or null word fails as the kernel says.
#[test]
fn wakes_of_nobody_and_bad_words_in_either_state() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let word: &'static AtomicU32 = Box::leak(Box::new(AtomicU32::new(0)));
    let w = word.as_ptr() as usize;
    for state in [State::Disarmed, State::Armed, State::Disarmed] {
        set_state(w, state, &runtime);
        for val in [0usize, 1, u32::MAX as usize, 0xdead_beef_0000_0000] {
            for from_coroutine in [false, true] {
                let call = move || {
                    let mut out = Vec::new();
                    for (addr, op) in [(w, WAKE), (w + 1, WAKE), (0, WAKE), (w, 1 << 32 | WAKE)] {
                        set_errno(MARK);
                        let ret = futex(addr, op, val, 0, 0, 0);
                        let e = errno();
                        // SAFETY: the kernel validates the word.
                        let k =
                            unsafe { kernel_syscall(libc::SYS_futex, [addr, op, val, 0, 0, 0]) };
                        let kernel_seen = if k < 0 {
                            (-1, -k as i32)
                        } else {
                            (k as i64, MARK)
                        };
                        out.push(((addr, op, val), (ret, e), kernel_seen));
                    }
                    out
                };
                let got = if from_coroutine {
                    runtime.block_on(call)
                } else {
                    call()
                };
                for (args, hook, k) in got {
                    assert_eq!(hook, k, "{state:?} coroutine={from_coroutine} {args:x?}");
                }
            }
        }
    }
}

static PING_LOCK: Mutex<u64> = Mutex::new(0);
static PING_CV: Condvar = Condvar::new();

/// Keeps waking nobody next to the two words until `stop`: their buckets
/// are disarmed after every 256 such wakes with no waiter, and re-armed by
/// the next coroutine waiter, over and over during the hand-offs.
fn disarmer(stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    let lock_word = &PING_LOCK as *const Mutex<u64> as usize;
    let cv_word = &PING_CV as *const Condvar as usize;
    let near = [noise_beside(lock_word), noise_beside(cv_word)];
    thread::spawn(move || {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            for word in near {
                futex(word.as_ptr() as usize, WAKE, 1, 0, 0, 0);
                n += 1;
            }
        }
        n
    })
}

/// One side of a ping-pong on [`PING_LOCK`]: waits for its parity, then
/// passes the turn. Returns the waits that timed out with the turn theirs
/// (lost wake-ups).
fn pingpong(parity: u64, rounds: u64) -> u64 {
    let mut lost = 0;
    let mut count = PING_LOCK.lock().unwrap();
    for _ in 0..rounds {
        while *count % 2 != parity {
            let (guard, timeout) = PING_CV.wait_timeout(count, Duration::from_secs(5)).unwrap();
            count = guard;
            if timeout.timed_out() && *count % 2 == parity {
                lost += 1;
            }
        }
        *count += 1;
        PING_CV.notify_one();
    }
    lost
}

/// Mutex and Condvar hand-offs, coroutine against thread and coroutine
/// against coroutine on another worker, while a neighbour keeps disarming
/// the words' buckets: every turn arrives, none by a 5 s timeout.
#[test]
fn handoffs_while_the_buckets_keep_disarming() {
    const ROUNDS: u64 = 3000;
    support::run(2, Duration::from_secs(120), || {
        for against_thread in [true, false] {
            *PING_LOCK.lock().unwrap() = 0;
            let stop = Arc::new(AtomicBool::new(false));
            let noise = disarmer(stop.clone());
            let start = Instant::now();
            let a = coroutines::spawn(|| pingpong(0, ROUNDS));
            let lost_b = if against_thread {
                thread::spawn(|| pingpong(1, ROUNDS)).join().unwrap()
            } else {
                coroutines::spawn(|| pingpong(1, ROUNDS)).join().unwrap()
            };
            let lost_a = a.join().unwrap();
            stop.store(true, Ordering::Relaxed);
            let wakes = noise.join().unwrap();
            assert_eq!(
                (lost_a, lost_b),
                (0, 0),
                "against_thread={against_thread}: lost wake-ups ({:?}, {wakes} noise wakes)",
                start.elapsed()
            );
            assert_eq!(*PING_LOCK.lock().unwrap(), 2 * ROUNDS);
        }
    });
}

/// Descriptors whose kind and epoll link count this process holds.
fn fd_summary() -> (usize, usize) {
    let mut all = 0;
    let mut epolls = 0;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let entry = entry.unwrap();
        if let Ok(target) = std::fs::read_link(entry.path()) {
            all += 1;
            if target.to_string_lossy().contains("eventpoll") {
                epolls += 1;
            }
        }
    }
    // The read_dir's own descriptor.
    (all - 1, epolls)
}

const CLASSIFY_CASE: &str = "classify at once";

/// In a fresh process: many coroutines on two workers read, for the first
/// time and all at once, from descriptors of many kinds (each coroutine its
/// own). Every read succeeds with errno untouched, and the process ends up
/// with no new descriptor.
fn classify_child() {
    let runtime = Runtime::builder().workers(2).build().unwrap();
    runtime.block_on(|| ());
    let (fds_before, epolls_before) = fd_summary();
    const N: usize = 24;
    let go = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let go = go.clone();
            runtime.spawn(move || {
                let mut opened: Vec<i32> = Vec::new();
                // SAFETY: plain descriptor calls on descriptors made here.
                let fd = unsafe {
                    match i % 6 {
                        0 => libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY),
                        1 => libc::open(c"/dev/urandom".as_ptr(), libc::O_RDONLY),
                        2 => {
                            let e = libc::eventfd(1, 0);
                            assert!(e >= 0);
                            e
                        }
                        3 => {
                            let mut p = [0; 2];
                            assert_eq!(libc::pipe(p.as_mut_ptr()), 0);
                            assert_eq!(libc::write(p[1], b"12345678".as_ptr().cast(), 8), 8);
                            opened.push(p[1]);
                            p[0]
                        }
                        4 => libc::open(c"/proc/self/stat".as_ptr(), libc::O_RDONLY),
                        _ => {
                            let mut s = [0; 2];
                            assert_eq!(
                                libc::socketpair(
                                    libc::AF_UNIX,
                                    libc::SOCK_STREAM,
                                    0,
                                    s.as_mut_ptr()
                                ),
                                0
                            );
                            assert_eq!(libc::write(s[1], b"12345678".as_ptr().cast(), 8), 8);
                            opened.push(s[1]);
                            s[0]
                        }
                    }
                };
                assert!(fd >= 0, "open {i}");
                opened.push(fd);
                go.fetch_add(1, Ordering::SeqCst);
                while go.load(Ordering::SeqCst) < N {
                    std::hint::spin_loop();
                    coroutines::yield_now();
                }
                set_errno(MARK);
                let mut buf = [0u8; 8];
                // SAFETY: a live descriptor and buffer.
                let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 8) };
                let e = errno();
                for fd in opened {
                    // SAFETY: descriptors this coroutine opened.
                    unsafe { libc::close(fd) };
                }
                (i, n, e)
            })
        })
        .collect();
    let mut bad = Vec::new();
    for h in handles {
        let (i, n, e) = h.join().unwrap();
        if n < 0 || e != MARK {
            bad.push((i % 6, n, e));
        }
    }
    let (fds_after, epolls_after) = fd_summary();
    drop(runtime);
    assert!(bad.is_empty(), "reads (kind, ret, errno): {bad:?}");
    assert_eq!(
        (fds_after, epolls_after),
        (fds_before, epolls_before),
        "descriptors (all, epoll instances) before and after"
    );
    println!("CLASSIFIED");
}

#[test]
fn first_classifications_at_once_in_fresh_processes() {
    if child_case().as_deref() == Some(CLASSIFY_CASE) {
        classify_child();
        return;
    }
    for round in 0..12 {
        let out = run_child(
            &format!("classify, round {round}"),
            rerun(CLASSIFY_CASE),
            Duration::from_secs(60),
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("CLASSIFIED"));
    }
}

const INTERPOSER_C: &str = r#"
#include <pthread.h>
#include <stdlib.h>
static __thread int slot;
static int global_slot;
static unsigned long calls;
static pthread_key_t key;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static void make_key(void) { pthread_key_create(&key, free); }
int *__errno_location(void) {
    __atomic_fetch_add(&calls, 1, __ATOMIC_RELAXED);
#if MODE == 1
    return &global_slot;
#elif MODE == 2
    pthread_once(&once, make_key);
    int *p = pthread_getspecific(key);
    if (!p) {
        p = calloc(1, sizeof *p);
        pthread_setspecific(key, p);
    }
    return p;
#else
    return &slot;
#endif
}
unsigned long interposer_calls(void) {
    return __atomic_load_n(&calls, __ATOMIC_RELAXED);
}
"#;

/// Builds the interposer in a directory of its own; its path. `mode` 0:
/// a `__thread` slot (static TLS, at a fixed offset from the thread
/// pointer); 1: one global slot; 2: a per-thread heap slot (no fixed
/// offset).
fn build_interposer(mode: u32) -> std::path::PathBuf {
    let define = format!("-DMODE={mode}");
    support::library::compile(
        &build_dir(mode),
        "interposer",
        INTERPOSER_C,
        &["-pthread", &define],
    )
    .expect("cc")
}

fn build_dir(mode: u32) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "probe-errno-interposer-{}-{mode}",
        std::process::id()
    ))
}

const INTERPOSED_CASE: &str = "interposed errno";

/// Hooked calls that fail or succeed, on a thread and in coroutines;
/// errno as read through the (interposed) `__errno_location`.
fn interposed_child() {
    // SAFETY: a lookup by name of a function with that signature.
    let calls: extern "C" fn() -> libc::c_ulong = unsafe {
        let f = libc::dlsym(libc::RTLD_DEFAULT, c"interposer_calls".as_ptr());
        assert!(!f.is_null(), "the interposer is not loaded");
        std::mem::transmute::<*mut libc::c_void, extern "C" fn() -> libc::c_ulong>(f)
    };
    let identity = std::env::var("PROBE_IDENTITY").unwrap() == "1";
    let check = |where_: &str| {
        let mut bad = Vec::new();
        let mut expect = |what: &str, ret: i64, want_ret: i64, want: i32| {
            let e = errno();
            if (ret, e) != (want_ret, want) {
                bad.push(format!(
                    "{where_} {what}: ret {ret} errno {e}, want {want_ret}/{want}"
                ));
            }
        };
        let mut buf = [0u8; 4];
        set_errno(MARK);
        // SAFETY: a bad descriptor; the kernel rejects it.
        let r = unsafe { libc::read(-1, buf.as_mut_ptr().cast(), 4) } as i64;
        expect("read(-1)", r, -1, libc::EBADF);
        set_errno(MARK);
        // SAFETY: as above.
        let r = unsafe { libc::recv(-1, buf.as_mut_ptr().cast(), 4, 0) } as i64;
        expect("recv(-1)", r, -1, libc::EBADF);
        set_errno(MARK);
        // SAFETY: as above.
        let r = unsafe { libc::write(-1, buf.as_ptr().cast(), 4) } as i64;
        expect("write(-1)", r, -1, libc::EBADF);
        set_errno(MARK);
        // SAFETY: the trampoline's non-futex path; a bad descriptor.
        let r = unsafe { libc::syscall(libc::SYS_close, -1) };
        expect("syscall(close, -1)", r, -1, libc::EBADF);
        let word = AtomicU32::new(3);
        set_errno(MARK);
        let r = futex(word.as_ptr() as usize, WAIT, 4, 0, 0, 0);
        expect("futex wait, value differs", r, -1, libc::EAGAIN);
        set_errno(MARK);
        let r = futex(word.as_ptr() as usize, WAKE, 1, 0, 0, 0);
        expect("futex wake of nobody", r, 0, MARK);
        set_errno(MARK);
        let r = futex(word.as_ptr() as usize + 1, WAKE, 1, 0, 0, 0);
        expect("futex wake misaligned", r, -1, libc::EINVAL);
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let writer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(30));
            use std::io::Write;
            (&b).write_all(b"abcd").unwrap();
            b
        });
        set_errno(MARK);
        // SAFETY: a live descriptor and buffer; waits for the writer.
        let r = unsafe { libc::read(a.as_raw_fd(), buf.as_mut_ptr().cast(), 4) } as i64;
        expect("read that waits", r, 4, MARK);
        drop(writer.join().unwrap());
        set_errno(MARK);
        thread::sleep(Duration::from_millis(2));
        expect("sleep", 0, 0, MARK);
        bad
    };
    let before = calls();
    let mut bad = check("thread");
    let runtime = Runtime::builder()
        .workers(2)
        .thread_identity(identity)
        .build()
        .unwrap();
    // A global slot is shared by every thread and coroutine: the
    // coroutines then run one at a time (on either worker).
    let global = std::env::var("PROBE_MODE").unwrap() == "1";
    if global {
        for i in 0..8 {
            bad.extend(
                runtime
                    .spawn(move || check(&format!("coroutine {i}")))
                    .join()
                    .unwrap(),
            );
        }
    } else {
        let handles: Vec<_> = (0..8)
            .map(|i| runtime.spawn(move || check(&format!("coroutine {i}"))))
            .collect();
        for h in handles {
            bad.extend(h.join().unwrap());
        }
    }
    drop(runtime);
    assert!(calls() > before, "the interposer was never asked");
    assert!(bad.is_empty(), "{bad:#?}");
    println!("INTERPOSED OK");
}

#[test]
fn an_interposed_errno_location_gets_the_hooks_errors() {
    if child_case().as_deref() == Some(INTERPOSED_CASE) {
        interposed_child();
        return;
    }
    if Command::new("cc").arg("--version").output().is_err() {
        eprintln!("no C compiler: skipped");
        return;
    }
    let mut failures = Vec::new();
    for mode in [0, 1, 2] {
        let lib = build_interposer(mode);
        for identity in [false, true] {
            let mut command = rerun(INTERPOSED_CASE);
            command
                .env("LD_PRELOAD", &lib)
                .env("PROBE_IDENTITY", if identity { "1" } else { "0" })
                .env("PROBE_MODE", mode.to_string());
            let (out, ended) =
                support::child::wait_bounded(command.spawn().unwrap(), Duration::from_secs(60));
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !ended || !out.status.success() || !stdout.contains("INTERPOSED OK") {
                failures.push(format!(
                    "mode={mode} identity={identity}: {} (ended {ended})\n{}\n{}",
                    out.status,
                    stdout,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    for mode in [0, 1, 2] {
        let _ = std::fs::remove_dir_all(build_dir(mode));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n-----\n"));
}
