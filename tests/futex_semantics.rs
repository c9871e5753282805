//! `syscall(SYS_futex, ..)` called directly inside coroutines keeps the
//! kernel's contract: EAGAIN when the word differs, ETIMEDOUT at relative
//! and absolute deadlines (while the worker runs other coroutines), wake
//! counts that include OS threads waiting in the kernel, and `errno` set on
//! errors and untouched on success. Without the hook, the first wait that
//! should park blocks the only worker and the watchdog fails the test.

mod support;

use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use libc::{c_int, c_long, timespec};

use support::{run, timespec, yield_until, Pace, Ticker, LIMIT};

const WAIT: c_int = libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG;
const WAKE: c_int = libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG;
const WAIT_BITSET: c_int = libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG;
const WAKE_BITSET: c_int = libc::FUTEX_WAKE_BITSET | libc::FUTEX_PRIVATE_FLAG;
const ANY: u32 = u32::MAX;
/// How late a timed-out wait may return on a loaded machine.
const SLACK: Duration = Duration::from_millis(300);

fn errno() -> c_int {
    // SAFETY: the calling thread's errno slot.
    unsafe { *libc::__errno_location() }
}

fn set_errno(value: c_int) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = value };
}

/// `syscall(SYS_futex, word, op, val, timeout, NULL, val3)`, returning the
/// result and `errno` right after it (set to a marker first).
fn futex(
    word: &AtomicU32,
    op: c_int,
    val: u32,
    timeout: Option<&timespec>,
    val3: u32,
) -> (c_long, c_int) {
    set_errno(-7);
    let timeout = timeout.map_or(ptr::null(), |t| t as *const timespec);
    // SAFETY: a valid futex word and timeout; the hook or the kernel
    // validates the rest.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op,
            val,
            timeout,
            ptr::null::<u32>(),
            val3,
        )
    };
    (ret, errno())
}

fn wake(word: &AtomicU32, count: i32) -> c_long {
    let (ret, error) = futex(word, WAKE, count as u32, None, 0);
    assert!(ret >= 0, "FUTEX_WAKE failed with errno {error}");
    ret
}

fn clock_now(clock: libc::clockid_t) -> Duration {
    let mut now = timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { libc::clock_gettime(clock, &mut now) }, 0);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Runs `wait` while a ticker coroutine ticks; returns what `wait`
/// returned, how long it took, and how often the ticker ran meanwhile.
fn timed_wait_with_ticker<T>(wait: impl FnOnce() -> T) -> (T, Duration, u64) {
    Ticker::with_pace(Pace::Yield).during(wait)
}

fn assert_timed_out_on_time(
    outcome: (c_long, c_int),
    elapsed: Duration,
    ticks: u64,
    timeout: Duration,
) {
    assert_eq!(outcome, (-1, libc::ETIMEDOUT));
    assert!(elapsed >= timeout, "timed out early, after {elapsed:?}");
    assert!(
        elapsed < timeout + SLACK,
        "timed out late, after {elapsed:?}"
    );
    assert!(
        ticks > 100,
        "the worker ran the ticker {ticks} times during the wait"
    );
}

#[test]
fn wait_returns_eagain_when_the_word_differs() {
    run(1, LIMIT, || {
        let word = AtomicU32::new(1);
        let later = timespec(Duration::from_secs(10));
        assert_eq!(futex(&word, WAIT, 0, None, 0), (-1, libc::EAGAIN));
        assert_eq!(futex(&word, WAIT, 0, Some(&later), 0), (-1, libc::EAGAIN));
        assert_eq!(futex(&word, WAIT_BITSET, 0, None, ANY), (-1, libc::EAGAIN));
        let past = timespec(clock_now(libc::CLOCK_MONOTONIC) - Duration::from_secs(1));
        assert_eq!(
            futex(&word, WAIT_BITSET, 0, Some(&past), ANY),
            (-1, libc::EAGAIN)
        );
        // The value matches but the deadline has passed.
        assert_eq!(
            futex(&word, WAIT_BITSET, 1, Some(&past), ANY),
            (-1, libc::ETIMEDOUT)
        );
    });
}

#[test]
fn malformed_timeouts_are_einval() {
    run(1, LIMIT, || {
        let word = AtomicU32::new(0);
        let bad = timespec {
            tv_sec: 0,
            tv_nsec: 1_000_000_000,
        };
        let negative = timespec {
            tv_sec: -1,
            tv_nsec: 0,
        };
        assert_eq!(futex(&word, WAIT, 0, Some(&bad), 0), (-1, libc::EINVAL));
        assert_eq!(
            futex(&word, WAIT, 0, Some(&negative), 0),
            (-1, libc::EINVAL)
        );
        assert_eq!(
            futex(&word, WAIT_BITSET, 0, Some(&bad), ANY),
            (-1, libc::EINVAL)
        );
    });
}

#[test]
fn relative_timeout_expires_on_time_while_others_run() {
    const TIMEOUT: Duration = Duration::from_millis(150);
    let (outcome, elapsed, ticks) = run(1, LIMIT, || {
        let word = AtomicU32::new(0);
        let timeout = timespec(TIMEOUT);
        timed_wait_with_ticker(|| futex(&word, WAIT, 0, Some(&timeout), 0))
    });
    assert_timed_out_on_time(outcome, elapsed, ticks, TIMEOUT);
}

#[test]
fn absolute_monotonic_deadline_expires_on_time_while_others_run() {
    const TIMEOUT: Duration = Duration::from_millis(150);
    let (outcome, elapsed, ticks) = run(1, LIMIT, || {
        let word = AtomicU32::new(0);
        timed_wait_with_ticker(|| {
            let deadline = timespec(clock_now(libc::CLOCK_MONOTONIC) + TIMEOUT);
            futex(&word, WAIT_BITSET, 0, Some(&deadline), ANY)
        })
    });
    assert_timed_out_on_time(outcome, elapsed, ticks, TIMEOUT);
}

#[test]
fn absolute_realtime_deadline_expires_on_time_while_others_run() {
    const TIMEOUT: Duration = Duration::from_millis(150);
    let (outcome, elapsed, ticks) = run(1, LIMIT, || {
        let word = AtomicU32::new(0);
        timed_wait_with_ticker(|| {
            let deadline = timespec(clock_now(libc::CLOCK_REALTIME) + TIMEOUT);
            futex(
                &word,
                WAIT_BITSET | libc::FUTEX_CLOCK_REALTIME,
                0,
                Some(&deadline),
                ANY,
            )
        })
    });
    assert_timed_out_on_time(outcome, elapsed, ticks, TIMEOUT);
}

/// Whether the OS thread `tid` of this process is asleep.
fn is_asleep(tid: libc::pid_t) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // "tid (comm) S ...": the state follows the last ')'.
    stat[stat.rfind(')').unwrap() + 1..]
        .trim_start()
        .starts_with('S')
}

#[test]
fn wake_counts_parked_coroutines_and_a_kernel_waiter() {
    run(1, LIMIT, || {
        let word = Arc::new(AtomicU32::new(0));
        let parked = Arc::new(AtomicUsize::new(0));
        let tid = Arc::new(AtomicU32::new(0));
        let thread = {
            let (word, tid) = (word.clone(), tid.clone());
            std::thread::spawn(move || {
                // SAFETY: gettid has no preconditions.
                tid.store(unsafe { libc::gettid() } as u32, Ordering::SeqCst);
                // A plain thread: the hook passes this wait to the kernel.
                futex(&word, WAIT_BITSET, 0, None, ANY)
            })
        };
        let coroutines: Vec<_> = (0..2)
            .map(|_| {
                let (word, parked) = (word.clone(), parked.clone());
                coroutines::spawn(move || {
                    parked.fetch_add(1, Ordering::SeqCst);
                    futex(&word, WAIT_BITSET, 0, None, ANY)
                })
            })
            .collect();
        // Both coroutines have run up to their wait (one worker: they park
        // before this coroutine runs again), and the thread sleeps in it.
        yield_until(|| parked.load(Ordering::SeqCst) == 2);
        coroutines::yield_now();
        yield_until(|| {
            let tid = tid.load(Ordering::SeqCst);
            tid != 0 && is_asleep(tid as libc::pid_t)
        });
        // Three waiters, whichever kind goes first.
        assert_eq!(wake(&word, 1), 1);
        assert_eq!(wake(&word, i32::MAX), 2);
        assert_eq!(wake(&word, i32::MAX), 0);
        for coroutine in coroutines {
            assert_eq!(coroutine.join().unwrap(), (0, -7));
        }
        assert_eq!(thread.join().unwrap(), (0, -7));
    });
}

#[test]
fn wake_from_a_plain_thread_wakes_a_parked_coroutine() {
    run(1, LIMIT, || {
        let word = Arc::new(AtomicU32::new(0));
        let parked = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (word, parked) = (word.clone(), parked.clone());
            coroutines::spawn(move || {
                parked.store(true, Ordering::SeqCst);
                futex(&word, WAIT, 0, None, 0)
            })
        };
        yield_until(|| parked.load(Ordering::SeqCst));
        coroutines::yield_now();
        let woken = {
            let word = word.clone();
            std::thread::spawn(move || wake(&word, 1)).join().unwrap()
        };
        assert_eq!(woken, 1);
        assert_eq!(waiter.join().unwrap(), (0, -7));
    });
}

#[test]
fn wake_bitset_wakes_a_parked_coroutine() {
    run(1, LIMIT, || {
        let word = Arc::new(AtomicU32::new(0));
        let waiter = {
            let word = word.clone();
            coroutines::spawn(move || futex(&word, WAIT_BITSET, 0, None, ANY))
        };
        coroutines::yield_now();
        assert_eq!(futex(&word, WAKE_BITSET, 1, None, 0b10), (1, -7));
        assert_eq!(waiter.join().unwrap(), (0, -7));
    });
}

#[test]
fn errno_is_untouched_by_a_successful_wait_and_wake() {
    run(1, LIMIT, || {
        let word = Arc::new(AtomicU32::new(0));
        let waiter = {
            let word = word.clone();
            coroutines::spawn(move || {
                set_errno(1234);
                // SAFETY: a valid futex word, no timeout.
                let ret = unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        word.as_ptr(),
                        WAIT,
                        0,
                        ptr::null::<timespec>(),
                    )
                };
                (ret, errno())
            })
        };
        coroutines::yield_now();
        // Same OS thread: this errno is the waiter's errno too while it is
        // parked.
        set_errno(4321);
        // SAFETY: a valid futex word.
        let woken = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), WAKE, 1) };
        assert_eq!((woken, errno()), (1, 4321));
        assert_eq!(waiter.join().unwrap(), (0, 1234));
    });
}

#[test]
fn timed_out_waits_leave_nothing_behind() {
    run(1, LIMIT, || {
        let word = Arc::new(AtomicU32::new(0));
        let waiters: Vec<_> = (0..500)
            .map(|_| {
                let word = word.clone();
                coroutines::spawn(move || {
                    let timeout = timespec(Duration::from_millis(2));
                    futex(&word, WAIT, 0, Some(&timeout), 0)
                })
            })
            .collect();
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), (-1, libc::ETIMEDOUT));
        }
        assert_eq!(wake(&word, i32::MAX), 0);
    });
}

#[test]
fn other_system_calls_pass_through_the_trampoline() {
    fn check() {
        // SAFETY: getpid/close/mmap/munmap with valid or harmless arguments.
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_getpid) as libc::pid_t,
                libc::getpid()
            );
            set_errno(0);
            assert_eq!(libc::syscall(libc::SYS_close, -1), -1);
            assert_eq!(errno(), libc::EBADF);
            // Six arguments: the sixth (mmap's offset) is the seventh C
            // argument, passed on the stack.
            let fd = libc::memfd_create(c"futex-semantics".as_ptr(), 0);
            assert!(fd >= 0);
            assert_eq!(libc::ftruncate(fd, 8192), 0);
            let marker = 0x5a5a_u32.to_ne_bytes();
            assert_eq!(libc::pwrite(fd, marker.as_ptr().cast(), 4, 4096), 4);
            let page = libc::syscall(
                libc::SYS_mmap,
                ptr::null_mut::<u8>(),
                4096usize,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                4096usize,
            );
            assert!(page > 0);
            assert_eq!(*(page as *const u32), 0x5a5a);
            assert_eq!(libc::syscall(libc::SYS_munmap, page, 4096usize), 0);
            libc::close(fd);
            // A shared (non-private) futex passes through to the kernel.
            let word = AtomicU32::new(1);
            assert_eq!(
                futex(&word, libc::FUTEX_WAIT, 0, None, 0),
                (-1, libc::EAGAIN)
            );
            assert_eq!(futex(&word, libc::FUTEX_WAKE, 1, None, 0), (0, -7));
        }
    }
    check();
    run(1, LIMIT, check);
}
