//! Probes of what a copy takes from its worker (attack round on 83dcc53):
//! libc's per-thread locale caches, worker state written by signal
//! handlers, a large executable TLS block that reaches the floor's lower
//! page, stack bounds of runtimes with different stack sizes, pthread keys
//! of recycled blocks, locked memory. Each compares new coroutines with
//! new threads. (The round's probes of lock ownership by kernel thread id,
//! a known limit noted on issue 11, are not kept.)

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use coroutines::Runtime;
use support::child::{child_case, finish, run_case};
use support::identity::{
    assert_identity_on, joined, on_runtime, stack_and_thread_pointer, workers,
};
use support::library::scratch_dir;

// ------------------------------------------------- locale caches in libc

unsafe extern "C" {
    fn __ctype_b_loc() -> *const *const u16;
    fn __ctype_toupper_loc() -> *const *const i32;
    fn __h_errno_location() -> *mut libc::c_int;
}

/// What the ctype functions of the caller answer for byte 0xE9 ('é' in
/// Latin-1): `(isalpha, toupper, table pointer)`.
fn ctype_view() -> (bool, i32, usize) {
    // SAFETY: the calling thread's ctype table pointers, valid for the
    // indices -128..256.
    unsafe {
        let b = *__ctype_b_loc();
        let up = *__ctype_toupper_loc();
        (libc::isalpha(0xE9) != 0, *up.offset(0xE9), b as usize)
    }
}

/// `setlocale` after the runtime started: a new thread caches the new
/// locale's ctype tables (`__ctype_init` in `start_thread`); a copy takes
/// the worker's cached pointers, which still name the old tables.
#[test]
fn probe_setlocale_after_runtime_start_ctype_tables() {
    if child_case().is_some() {
        let failures = on_runtime(workers(1), Duration::from_secs(30), |runtime| {
            assert_identity_on(runtime);
            joined(runtime.spawn(|| ()));
            let name = std::ffi::CString::new(std::env::var("LOCALE_NAME").unwrap()).unwrap();
            // SAFETY: a NUL-terminated locale name; no other thread reads
            // the locale meanwhile.
            let set = unsafe { libc::setlocale(libc::LC_ALL, name.as_ptr()) };
            if set.is_null() {
                println!("SKIPPED: setlocale failed");
                return Vec::new();
            }
            let mut failures = Vec::new();
            for round in 0..3 {
                let thread = thread::spawn(ctype_view).join().unwrap();
                let coroutine = joined(runtime.spawn(ctype_view));
                if thread != coroutine {
                    failures.push(format!(
                        "round {round}: (isalpha(0xE9), toupper(0xE9), table): new thread \
                         {thread:x?}, new coroutine {coroutine:x?}"
                    ));
                }
            }
            failures
        });
        finish(failures);
        return;
    }
    let dir = scratch_dir("probe-copies-locale");
    std::fs::create_dir_all(&dir).unwrap();
    let built = std::process::Command::new("localedef")
        .args(["-i", "fr_FR", "-f", "ISO-8859-1"])
        .arg(dir.join("fr_FR.ISO-8859-1"))
        .output();
    let (locpath, name) = match built {
        Ok(out) if dir.join("fr_FR.ISO-8859-1").exists() || out.status.success() => {
            (dir.clone(), "fr_FR.ISO-8859-1")
        }
        _ => (dir.clone(), "C.utf8"),
    };
    run_case(
        "locale",
        &[
            ("LOCPATH", &locpath),
            ("LOCALE_NAME", std::path::Path::new(name)),
        ],
        "PROBE OK",
    );
    let _ = std::fs::remove_dir_all(dir);
}

// --------------------------------------- worker state set by a handler

extern "C" fn set_h_errno(_: libc::c_int) {
    // SAFETY: the handling thread's h_errno; a store is async-signal-safe.
    unsafe { *__h_errno_location() = 3 }; // NO_RECOVERY
}

/// Signal handlers run on the worker's identity, so what a handler writes
/// to libc's block (here `h_errno`) is the worker's, and every later copy
/// takes it; a new thread starts with 0.
#[test]
fn probe_handler_state_reaches_new_coroutines() {
    if child_case().is_some() {
        let failures = on_runtime(workers(1), Duration::from_secs(30), |runtime| {
            assert_identity_on(runtime);
            support::install_handler(libc::SIGUSR1, set_h_errno);
            // SAFETY: raise has no preconditions; the handler is installed.
            joined(runtime.spawn(|| unsafe {
                libc::raise(libc::SIGUSR1);
            }));
            // SAFETY: the calling thread's h_errno.
            let look = || unsafe { *__h_errno_location() };
            let thread = thread::spawn(look).join().unwrap();
            let coroutine = joined(runtime.spawn(look));
            let mut failures = Vec::new();
            if thread != coroutine {
                failures.push(format!(
                    "h_errno: new thread {thread}, new coroutine {coroutine}"
                ));
            }
            failures
        });
        finish(failures);
        return;
    }
    run_case("handler", &[], "PROBE OK");
}

// ------------------------------- a large executable block in the floor

/// A large, aligned, const-initialised executable thread-local: its
/// block reaches into the floor's lower page.
#[repr(C, align(64))]
struct Big([u8; 3000]);

const fn pattern() -> Big {
    let mut b = [0u8; 3000];
    let mut i = 0;
    while i < 3000 {
        b[i] = (i % 251) as u8 + 1;
        i += 1;
    }
    Big(b)
}

thread_local! {
    static BIG: std::cell::UnsafeCell<Big> = const { std::cell::UnsafeCell::new(pattern()) };
}

/// How many bytes of `BIG` differ from the pattern; then scribbles on it
/// all, as a recycled stack's next coroutine would find it.
fn big_view() -> (usize, usize) {
    // SAFETY: the calling thread's own thread-local, not borrowed elsewhere.
    BIG.with(|b| unsafe {
        let b = &mut *b.get();
        let want = pattern();
        let bad =
            b.0.iter()
                .zip(want.0.iter())
                .filter(|(x, y)| x != y)
                .count();
        b.0.fill(0xA5);
        (bad, b as *const Big as usize % 64)
    })
}

/// New coroutines (recycled stacks and blocks, two workers, migrations
/// on) see the executable's initial image of a big aligned thread-local,
/// as threads do; and their stack bounds hold.
#[test]
fn probe_large_aligned_executable_tls() {
    let builder = workers(2).work_stealing(true);
    on_runtime(builder, Duration::from_secs(60), |runtime| {
        assert_identity_on(runtime);
        let thread = thread::spawn(big_view).join().unwrap();
        assert_eq!(thread, (0, 0));
        let mut failures = Vec::new();
        for round in 0..200 {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    runtime.spawn(move || {
                        let first = big_view();
                        if i % 2 == 0 {
                            coroutines::yield_now();
                        }
                        let (low, size, guard, tp) = stack_and_thread_pointer();
                        let sp = &first as *const _ as usize;
                        let floor = low - guard;
                        // The area is in the floor: its TP within 2 pages
                        // below the guard page.
                        let in_floor = tp < floor && floor - tp < 2 * 4096;
                        let in_stack = sp > low && sp < low + size && in_floor;
                        (first, in_stack)
                    })
                })
                .collect();
            for h in handles {
                let (seen, in_stack) = joined(h);
                if seen != (0, 0) || !in_stack {
                    failures.push(format!("round {round}: {seen:?}, sp in stack {in_stack}"));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{}",
            failures[..failures.len().min(10)].join("\n")
        );
    });
}

// ------------------------------------------------ stack bounds and guard

/// Whether the byte at `address` can be read (`process_vm_readv` on
/// ourselves: EFAULT for a guard page, no signal).
fn readable(address: usize) -> bool {
    let mut byte = 0u8;
    let local = libc::iovec {
        iov_base: &mut byte as *mut u8 as *mut libc::c_void,
        iov_len: 1,
    };
    let remote = libc::iovec {
        iov_base: address as *mut libc::c_void,
        iov_len: 1,
    };
    // SAFETY: reads one byte of this process into `byte`; a bad address
    // fails with EFAULT.
    unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) == 1 }
}

/// What a coroutine (or thread) sees of its stack: the reported usable
/// bottom readable, the page below it a guard, the stack pointer inside.
fn bounds_view() -> Result<(), String> {
    let (low, size, guard, _) = stack_and_thread_pointer();
    let sp = &low as *const _ as usize;
    let mut bad = Vec::new();
    if !(sp > low && sp < low + size) {
        bad.push(format!("sp {sp:#x} outside [{low:#x}, {:#x})", low + size));
    }
    if !readable(low) {
        bad.push(format!("lowest usable byte {low:#x} unreadable"));
    }
    if guard > 0 && readable(low - 1) {
        bad.push(format!(
            "byte below the stack {:#x} readable (guard {guard})",
            low - 1
        ));
    }
    match bad.is_empty() {
        true => Ok(()),
        false => Err(bad.join("; ")),
    }
}

/// Runtimes with different stack sizes and identity on and off at once,
/// coroutines of the pool size, another size and measured ones, first
/// runs and recycled stacks: the bounds glibc reports match the mapping.
#[test]
fn probe_stack_bounds_of_mixed_runtimes() {
    let mut failures = Vec::new();
    let small = Runtime::builder()
        .workers(1)
        .stack_size(64 * 1024)
        .build()
        .unwrap();
    let big = Runtime::builder()
        .workers(1)
        .stack_size(256 * 1024)
        .build()
        .unwrap();
    let off = Runtime::builder()
        .workers(1)
        .stack_size(64 * 1024 - 8192)
        .thread_identity(false)
        .build()
        .unwrap();
    assert_identity_on(&small);
    if let Err(e) = thread::spawn(bounds_view).join().unwrap() {
        panic!("a plain thread: {e}");
    }
    for round in 0..5 {
        for (name, rt) in [("64K", &small), ("256K", &big)] {
            let mut handles = Vec::new();
            for kind in 0..3 {
                let handle = match kind {
                    0 => rt.spawn(bounds_view),
                    1 => rt.block_on(|| {
                        coroutines::Builder::new()
                            .stack_size(128 * 1024)
                            .spawn(bounds_view)
                            .unwrap()
                    }),
                    _ => rt.block_on(|| {
                        coroutines::Builder::new()
                            .measure_stack(true)
                            .spawn(bounds_view)
                            .unwrap()
                    }),
                };
                handles.push((kind, handle));
            }
            for (kind, h) in handles {
                if let Err(e) = joined(h) {
                    failures.push(format!("round {round} {name} kind {kind}: {e}"));
                }
            }
        }
        joined(off.spawn(|| ()));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ------------------------------------------------- pthread keys recycled

static DTOR_CALLS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn key_dtor(_: *mut libc::c_void) {
    DTOR_CALLS.fetch_add(1, Ordering::SeqCst);
}

/// A key with a destructor set in coroutines that end; the key deleted and
/// a new one created at the same index; later coroutines on recycled
/// blocks see no value for it, and each destructor ran once per coroutine
/// that set a value (as for threads).
#[test]
fn probe_pthread_key_values_in_recycled_blocks() {
    on_runtime(workers(1), Duration::from_secs(30), |runtime| {
        assert_identity_on(runtime);
        let mut failures = Vec::new();
        for round in 0..20 {
            let mut key: libc::pthread_key_t = 0;
            // SAFETY: creates a key with a destructor that only counts.
            assert_eq!(
                unsafe { libc::pthread_key_create(&mut key, Some(key_dtor)) },
                0
            );
            DTOR_CALLS.store(0, Ordering::SeqCst);
            // SAFETY: a live key; the value is a marker, never dereferenced.
            let use_key = move || unsafe {
                let before = libc::pthread_getspecific(key) as usize;
                libc::pthread_setspecific(key, 0x1234 as *const libc::c_void);
                before
            };
            let t = thread::spawn(use_key).join().unwrap();
            let thread_calls = DTOR_CALLS.swap(0, Ordering::SeqCst);
            let mut seen = Vec::new();
            for _ in 0..4 {
                seen.push(joined(runtime.spawn(use_key)));
            }
            let co_calls = DTOR_CALLS.load(Ordering::SeqCst);
            if t != 0 || seen.iter().any(|&v| v != 0) || thread_calls != 1 || co_calls != 4 {
                failures.push(format!(
                    "round {round} key {key}: thread saw {t:#x} ({thread_calls} dtor), \
                     coroutines saw {seen:x?} ({co_calls} dtors)"
                ));
            }
            // SAFETY: the key made above, unused from now on.
            unsafe { libc::pthread_key_delete(key) };
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    });
}

// ------------------------------------------ locked, then unlocked memory

/// Coroutines spawned while memory is locked for the future (floored
/// stacks of their own mappings, guard raised), then after `munlockall`
/// (arena slots), then locked again: bounds, guard and the big
/// thread-local hold in each, on first runs and recycled stacks.
#[test]
fn probe_mlockall_munlockall_transitions() {
    if child_case().is_some() {
        let failures = on_runtime(workers(1), Duration::from_secs(60), |runtime| {
            assert_identity_on(runtime);
            let mut failures = Vec::new();
            let check = |phase: &str, failures: &mut Vec<String>| {
                let hs: Vec<_> = (0..40)
                    .map(|_| {
                        runtime.spawn(|| {
                            let big = big_view();
                            coroutines::yield_now();
                            (bounds_view(), big)
                        })
                    })
                    .collect();
                for h in hs {
                    let (b, big) = joined(h);
                    if b.is_err() || big != (0, 0) {
                        failures.push(format!("{phase}: {b:?} {big:?}"));
                    }
                }
            };
            check("before", &mut failures);
            // SAFETY (this and the calls below): memory locking has no
            // memory-safety preconditions.
            if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
                println!("SKIPPED: mlockall");
                return Vec::new();
            }
            check("locked", &mut failures);
            unsafe { libc::munlockall() };
            check("unlocked", &mut failures);
            unsafe { libc::mlockall(libc::MCL_FUTURE) };
            check("relocked", &mut failures);
            unsafe { libc::munlockall() };
            check("again", &mut failures);
            failures.truncate(10);
            failures
        });
        finish(failures);
        return;
    }
    run_case("mlock", &[], "PROBE OK");
}
