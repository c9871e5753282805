//! libc's per-thread state with coroutines that are threads of their own:
//! the buffers `strsignal` and `strerror` return for unknown numbers, the
//! pending `dlerror` message, and pthread keys (with their destructors,
//! which run at the coroutine's end as at a thread's exit). Each coroutine
//! has its own, kept across waits; and none of it leaks when coroutines
//! end, however many come and go.

mod support;

use std::ffi::CStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use support::identity::joined;
use support::*;

/// Coroutines alive at once in these tests.
const COROUTINES: usize = 50;

/// Spawns [`COROUTINES`] coroutines running `body(i)` that are alive at
/// once (each calls `together` to wait for all the others to have got
/// there) and returns their results.
fn all_at_once<T: Send + 'static>(
    body: impl Fn(usize, &dyn Fn()) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let body = Arc::new(body);
    let arrived = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..COROUTINES)
        .map(|i| {
            let (body, arrived) = (body.clone(), arrived.clone());
            coroutines::spawn(move || {
                let together = || {
                    arrived.fetch_add(1, Ordering::SeqCst);
                    yield_until(|| arrived.load(Ordering::SeqCst) >= COROUTINES);
                    thread::sleep(Duration::from_millis(1));
                };
                body(i, &together)
            })
        })
        .collect();
    handles.into_iter().map(joined).collect()
}

/// A C string returned by libc, copied.
fn text(p: *const libc::c_char) -> String {
    assert!(!p.is_null());
    // SAFETY: libc returned a NUL-terminated string that stays valid until
    // the calling thread's next call of the same function.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

#[test]
fn strsignal_and_strerror_buffers_are_per_coroutine() {
    run(1, WATCHDOG, || {
        all_at_once(|i, together| {
            let signal = 200 + i as i32;
            let error = 5000 + i as i32;
            // Unknown numbers are formatted into per-thread buffers.
            // SAFETY: no preconditions; the results are read below, before
            // this coroutine calls either function again.
            let (s, e) = unsafe { (libc::strsignal(signal), libc::strerror(error)) };
            // Every other coroutine formats its own numbers meanwhile.
            together();
            assert!(
                text(s).ends_with(&signal.to_string()),
                "strsignal: {}",
                text(s)
            );
            assert!(
                text(e).ends_with(&error.to_string()),
                "strerror: {}",
                text(e)
            );
        });
    });
}

#[test]
fn a_pending_dlerror_is_per_coroutine() {
    run(1, WATCHDOG, || {
        all_at_once(|i, together| {
            let fails = i % 2 == 0;
            if fails {
                let name = format!("libcoroutines-identity-test-missing-{i}.so\0");
                // SAFETY: dlopen of a library that does not exist, with a
                // NUL-terminated name.
                let handle = unsafe { libc::dlopen(name.as_ptr().cast(), libc::RTLD_NOW) };
                assert!(handle.is_null());
            }
            together();
            // SAFETY: dlerror has no preconditions.
            let message = unsafe { libc::dlerror() };
            if fails {
                let message = text(message);
                assert!(
                    message.contains(&format!("missing-{i}.so")),
                    "coroutine {i}'s dlerror: {message}"
                );
            } else {
                assert!(
                    message.is_null(),
                    "coroutine {i} sees another's dlerror: {}",
                    text(message)
                );
            }
        });
    });
}

/// Destructor calls of the test key, and calls that got a value another
/// coroutine had set.
static KEY_DESTRUCTOR_CALLS: AtomicUsize = AtomicUsize::new(0);
static KEY_VALUES_SEEN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn key_destructor(value: *mut libc::c_void) {
    KEY_DESTRUCTOR_CALLS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the value is a `Box<usize>` leaked by the key test.
    let value = unsafe { Box::from_raw(value as *mut usize) };
    KEY_VALUES_SEEN.fetch_add(*value, Ordering::SeqCst);
}

/// The calling thread's value of `key`, a key created by the test.
fn specific(key: libc::pthread_key_t) -> *mut libc::c_void {
    // SAFETY: `key` is a live key (never deleted).
    unsafe { libc::pthread_getspecific(key) }
}

#[test]
fn pthread_keys_are_per_coroutine_and_destroyed_at_its_end() {
    static KEY: OnceLock<libc::pthread_key_t> = OnceLock::new();
    let key = *KEY.get_or_init(|| {
        let mut key = 0;
        // SAFETY: creates a key with a valid destructor.
        assert_eq!(
            unsafe { libc::pthread_key_create(&mut key, Some(key_destructor)) },
            0
        );
        key
    });
    run(1, WATCHDOG, move || {
        assert!(specific(key).is_null(), "the root's value");
        all_at_once(move |i, together| {
            assert!(specific(key).is_null(), "a new coroutine's value");
            let value = Box::into_raw(Box::new(i + 1));
            // SAFETY: a live key; the value is a leaked Box that the
            // destructor frees.
            assert_eq!(unsafe { libc::pthread_setspecific(key, value.cast()) }, 0);
            together();
            assert_eq!(
                specific(key),
                value.cast(),
                "coroutine {i}'s value after the others set theirs"
            );
        });
        // Joined: each coroutine's key destructor ran with its own value.
        // (Waited for: join may return before a coroutine's thread exit.)
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while KEY_DESTRUCTOR_CALLS.load(Ordering::SeqCst) < COROUTINES
            && std::time::Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(1));
        }
        assert!(specific(key).is_null(), "the root's value at the end");
    });
    assert_eq!(KEY_DESTRUCTOR_CALLS.load(Ordering::SeqCst), COROUTINES);
    assert_eq!(
        KEY_VALUES_SEEN.load(Ordering::SeqCst),
        COROUTINES * (COROUTINES + 1) / 2,
        "each destructor got its own coroutine's value"
    );
}

/// The resident set size of this process, in KiB.
fn rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

thread_local! {
    static GROWN: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One short-lived coroutine that touches every kind of per-thread state a
/// thread block frees at the end: std's thread handle, a thread-local with
/// a heap buffer, strsignal's and strerror's buffers, a pending dlerror.
fn touch_everything(i: usize) {
    let _ = thread::current().id();
    GROWN.with(|g| g.borrow_mut().resize(4096, i as u8));
    // SAFETY: no preconditions; dlopen of a missing library leaves a
    // pending error that the coroutine never reads.
    unsafe {
        libc::strsignal(200);
        libc::strerror(5000);
        libc::dlopen(
            c"libcoroutines-identity-test-missing.so".as_ptr(),
            libc::RTLD_NOW,
        );
    }
    coroutines::yield_now();
}

#[test]
fn coroutines_that_come_and_go_do_not_leak_their_thread_state() {
    const BATCH: usize = 100;
    const WARM_UP: usize = 5_000;
    const MEASURED: usize = 30_000;
    let (before, after) = run(1, Duration::from_secs(30), || {
        let wave = |n: usize| {
            for start in (0..n).step_by(BATCH) {
                let handles: Vec<_> = (start..start + BATCH)
                    .map(|i| coroutines::spawn(move || touch_everything(i)))
                    .collect();
                handles.into_iter().for_each(joined);
            }
        };
        // Pools (stacks, thread areas, malloc's free lists) fill up first.
        wave(WARM_UP);
        let before = rss_kib();
        wave(MEASURED);
        (before, rss_kib())
    });
    // A leak of even a few hundred bytes per coroutine shows as megabytes.
    let growth = after.saturating_sub(before);
    assert!(
        growth < 8 * 1024,
        "RSS grew by {growth} KiB over {MEASURED} coroutines ({before} -> {after} KiB): \
         about {} bytes each",
        growth * 1024 / MEASURED
    );
}
