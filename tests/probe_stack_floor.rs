//! Probes of thread areas in the floor of pooled stacks, and of copies
//! that take only the static TLS in use (from the attack round on
//! `f8f3f21`): libraries with TLS loaded and closed before and while a
//! runtime runs, stacks used to their floor, recycled blocks across
//! workers, floored and plain stacks of one length, locked memory, fork,
//! runtimes rebuilt, and the memory a parked coroutine keeps.

mod support;

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use coroutines::Runtime;
use support::child::{child_case, run_case};
use support::identity::{compare_marker, joined, on_runtime, stack_and_thread_pointer, workers};
use support::library::DYNAMIC as LIB_DYN;
use support::library::INITIAL_EXEC as LIB_IE;
use support::library::SMALL_INITIAL_EXEC as LIB_SMALL_IE;
use support::library::{compile, dlerror, dlopen, sym};
use support::{errno, set_errno};

const PAGE: usize = 4096;

// ---------------------------------------------------------------- helpers

// ------------------------------------------------ static TLS and dlclose

/// A TLS module loaded before the runtime and closed afterwards gives its
/// module slot back; an initial-exec library loaded next takes that slot
/// and a block lower in the static surplus, which copies must take.
#[test]
fn probe_dlclose_then_dlopen_static_tls_reuses_the_slot() {
    if let Some(_case) = child_case() {
        let dyn_path = PathBuf::from(std::env::var("LIB_DYN").unwrap());
        let ie_path = PathBuf::from(std::env::var("LIB_IE").unwrap());
        let handle = dlopen(&dyn_path, libc::RTLD_NOW | libc::RTLD_LOCAL);
        assert!(!handle.is_null(), "{}", dlerror());
        let handle = handle as usize;
        let failures = on_runtime(workers(1), Duration::from_secs(30), move |runtime| {
            joined(runtime.spawn(|| ()));
            // SAFETY: a handle of ours, unused since.
            assert_eq!(unsafe { libc::dlclose(handle as *mut libc::c_void) }, 0);
            let again = dlopen(&dyn_path, libc::RTLD_NOW | libc::RTLD_NOLOAD);
            if !again.is_null() {
                println!("SKIPPED: the library stayed loaded");
                return Vec::new();
            }
            let ie = dlopen(&ie_path, libc::RTLD_NOW);
            assert!(!ie.is_null(), "{}", dlerror());
            compare_marker(runtime, ie)
        });
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        println!("PROBE OK");
        return;
    }
    let dir = std::env::temp_dir().join(format!("probe-floor-gap-{}", std::process::id()));
    let (Some(d), Some(ie)) = (
        compile(&dir, "small", LIB_SMALL_IE, &[]),
        compile(&dir, "ie", LIB_IE, &[]),
    ) else {
        eprintln!("no C compiler: skipped");
        return;
    };
    run_case("gap", &[("LIB_DYN", &d), ("LIB_IE", &ie)], "PROBE OK");
    let _ = std::fs::remove_dir_all(dir);
}

/// Control: a library with dynamic TLS loaded while coroutines run; its
/// thread-locals start at their image in coroutines as in threads.
#[test]
fn probe_dynamic_tls_dlopen_while_running() {
    if let Some(_case) = child_case() {
        let dyn_path = PathBuf::from(std::env::var("LIB_DYN").unwrap());
        let failures = on_runtime(workers(2), Duration::from_secs(30), move |runtime| {
            for _ in 0..20 {
                joined(runtime.spawn(|| thread::sleep(Duration::from_micros(100))));
            }
            let h = dlopen(&dyn_path, libc::RTLD_NOW);
            assert!(!h.is_null(), "{}", dlerror());
            let get = sym(h, c"dyn_get");
            let mut failures = Vec::new();
            for round in 0..20 {
                let f = move || {
                    // SAFETY: dyn_get of the loaded library.
                    let get: extern "C" fn() -> i32 = unsafe { std::mem::transmute(get) };
                    get()
                };
                let t = thread::spawn(f).join().unwrap();
                let c = joined(runtime.spawn(f));
                if t != c || t != 0x5eed {
                    failures.push(format!("round {round}: thread {t:#x} coroutine {c:#x}"));
                }
            }
            failures
        });
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        println!("PROBE OK");
        return;
    }
    let dir = std::env::temp_dir().join(format!("probe-floor-dyn-{}", std::process::id()));
    let Some(d) = compile(&dir, "dyn", LIB_DYN, &[]) else {
        return;
    };
    run_case("dyn", &[("LIB_DYN", &d)], "PROBE OK");
    let _ = std::fs::remove_dir_all(dir);
}

// ------------------------------------------------------ stacks and floors

thread_local! {
    static MARK: Cell<u64> = const { Cell::new(0) };
}

static DROPS: AtomicUsize = AtomicUsize::new(0);
struct CountDrop;
impl Drop for CountDrop {
    fn drop(&mut self) {
        DROPS.fetch_add(1, Ordering::SeqCst);
    }
}
thread_local! {
    static COUNTED: std::cell::RefCell<Option<CountDrop>> = const { std::cell::RefCell::new(None) };
}

/// Recurses until the stack pointer is within `margin` bytes of `low`.
#[inline(never)]
fn recurse_to(low: usize, margin: usize, depth: u64) -> u64 {
    let frame = std::hint::black_box([depth as u8; 256]);
    let sp = &frame as *const _ as usize;
    if sp < low + margin {
        return depth;
    }
    let deepest = recurse_to(low, margin, depth + 1);
    // Keeps the frame alive across the call (no tail call).
    std::hint::black_box(&frame);
    deepest
}

/// A pooled (floored) stack used down to ~1.5 KiB above its reported low
/// end: no fault, and the thread-locals, errno and pthread_self (in the
/// floor just under the guard) are intact. Repeated on recycled stacks.
#[test]
fn probe_deep_legal_recursion_on_floored_stack() {
    let results = on_runtime(
        workers(1).stack_size(64 * 1024),
        Duration::from_secs(60),
        |runtime| {
            (0..20)
                .map(|i| {
                    joined(runtime.spawn(move || {
                        MARK.with(|m| m.set(1000 + i));
                        set_errno(40 + i as i32);
                        let (low, size, guard, tp) = stack_and_thread_pointer();
                        assert_eq!((size, guard), (64 * 1024, PAGE));
                        let depth = recurse_to(low, 1536, 0);
                        let after = stack_and_thread_pointer();
                        (
                            depth,
                            MARK.with(Cell::get) == 1000 + i,
                            errno() == 40 + i as i32,
                            after == (low, size, guard, tp),
                        )
                    }))
                })
                .collect::<Vec<_>>()
        },
    );
    for (i, r) in results.iter().enumerate() {
        assert!(r.0 > 50 && r.1 && r.2 && r.3, "coroutine {i}: {r:?}");
    }
}

/// Thread-locals of fresh and recycled coroutines start as in a new
/// thread; errno starts at 0; across 2 workers with migrations.
#[test]
fn probe_recycled_blocks_start_fresh_across_workers() {
    let bad = on_runtime(workers(2), Duration::from_secs(60), |runtime| {
        let handles: Vec<_> = (0..600u64)
            .map(|i| {
                runtime.spawn(move || {
                    let fresh = (MARK.with(Cell::get), errno());
                    MARK.with(|m| m.set(i + 1));
                    set_errno(5);
                    COUNTED.with(|c| *c.borrow_mut() = Some(CountDrop));
                    for _ in 0..3 {
                        thread::yield_now();
                        thread::sleep(Duration::from_micros(50));
                    }
                    let kept = MARK.with(Cell::get) == i + 1 && errno() == 5;
                    (fresh, kept)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(joined)
            .enumerate()
            .filter(|(_, (fresh, kept))| *fresh != (0, 0) || !kept)
            .collect::<Vec<_>>()
    });
    assert!(bad.is_empty(), "{:?}", &bad[..bad.len().min(10)]);
    assert_eq!(DROPS.load(Ordering::SeqCst), 600, "thread-local drops");
}

/// Two runtimes in one process: identity on with 64 KiB (floored slots of
/// 72 KiB) and identity off with 72 KiB (plain slots of the same length).
/// Both churn through more stacks than the pools keep, so slots go back to
/// the arena and are lent again; then each overflows. Overflows must be
/// caught (no SIGSEGV of the process) and locals of the identity runtime
/// must drop once.
#[test]
fn probe_colliding_floored_and_plain_classes() {
    if let Some(_case) = child_case() {
        let on = Runtime::builder()
            .workers(1)
            .thread_identity(true)
            .stack_size(64 * 1024)
            .build()
            .unwrap();
        let off = Runtime::builder()
            .workers(1)
            .thread_identity(false)
            .stack_size(72 * 1024)
            .build()
            .unwrap();
        for round in 0..3 {
            let a: Vec<_> = (0..400)
                .map(|_| on.spawn(|| thread::sleep(Duration::from_millis(2))))
                .collect();
            let b: Vec<_> = (0..400)
                .map(|_| off.spawn(|| thread::sleep(Duration::from_millis(2))))
                .collect();
            a.into_iter().for_each(joined);
            b.into_iter().for_each(joined);
            // Overflow in each.
            let before = DROPS.load(Ordering::SeqCst);
            let e = on
                .spawn(|| {
                    COUNTED.with(|c| *c.borrow_mut() = Some(CountDrop));
                    support::recurse_deeply(1_000_000)
                })
                .join();
            assert!(e.is_err(), "round {round}: identity runtime overflow");
            assert_eq!(DROPS.load(Ordering::SeqCst), before + 1, "round {round}");
            let e = off.spawn(|| support::recurse_deeply(1_000_000)).join();
            assert!(e.is_err(), "round {round}: plain runtime overflow");
            // Still sane.
            let (low, size, guard, tp) = joined(on.spawn(stack_and_thread_pointer));
            assert_eq!((size, guard), (64 * 1024, PAGE));
            assert!((low - guard - 2 * PAGE..low - guard).contains(&tp));
        }
        drop(on);
        drop(off);
        println!("PROBE OK");
        return;
    }
    run_case("collide", &[], "PROBE OK");
}

/// Memory locked (current and future) before the runtime: floored stacks
/// map their own and raise their guard. The area is in the floor, glibc
/// reports the configured stack, an overflow is caught, and locals drop
/// once.
#[test]
fn probe_mlockall_floored_stacks() {
    if let Some(_case) = child_case() {
        // SAFETY: mlockall with valid flags.
        if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
            println!("SKIPPED: mlockall: {}", std::io::Error::last_os_error());
            return;
        }
        let maps_before = support::memory::mappings();
        let rt = Runtime::builder()
            .workers(1)
            .thread_identity(true)
            .stack_size(64 * 1024)
            .build()
            .unwrap();
        let (low, size, guard, tp) = joined(rt.spawn(stack_and_thread_pointer));
        assert_eq!((size, guard), (64 * 1024, PAGE));
        assert!(
            (low - guard - 2 * PAGE..low - guard).contains(&tp),
            "tp {tp:#x} low {low:#x}"
        );
        let depth = joined(rt.spawn(|| {
            let (low, ..) = stack_and_thread_pointer();
            MARK.with(|m| m.set(3));
            let d = recurse_to(low, 1536, 0);
            assert_eq!(MARK.with(Cell::get), 3);
            d
        }));
        assert!(depth > 50);
        let before = DROPS.load(Ordering::SeqCst);
        let e = rt
            .spawn(|| {
                COUNTED.with(|c| *c.borrow_mut() = Some(CountDrop));
                support::recurse_deeply(1_000_000)
            })
            .join();
        assert!(e.is_err());
        assert_eq!(DROPS.load(Ordering::SeqCst), before + 1);
        // Many at once: more than the pool keeps.
        let hs: Vec<_> = (0..300)
            .map(|i| {
                rt.spawn(move || {
                    let f = MARK.with(Cell::get);
                    MARK.with(|m| m.set(i));
                    thread::sleep(Duration::from_millis(5));
                    (f, MARK.with(Cell::get) == i)
                })
            })
            .collect();
        for h in hs {
            assert_eq!(joined(h), (0, true));
        }
        let maps_during = support::memory::mappings();
        drop(rt);
        println!(
            "mappings {maps_before} {maps_during} {}",
            support::memory::mappings()
        );
        println!("PROBE OK");
        return;
    }
    run_case("mlock", &[], "PROBE OK");
}

/// fork inside a coroutine on a floored stack: the child sees its
/// thread-locals and errno, can create and join a thread, and exits 0;
/// as from a plain thread.
#[test]
fn probe_fork_in_floored_coroutine() {
    fn act() -> (i32, i32) {
        MARK.with(|m| m.set(77));
        set_errno(33);
        // SAFETY: fork; the child uses only what a forked child of a
        // multithreaded process may (plus a thread create, as a test).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let mut code = 0;
            if MARK.with(Cell::get) != 77 {
                code |= 1;
            }
            if errno() != 33 {
                code |= 2;
            }
            let t = thread::spawn(|| MARK.with(Cell::get)).join();
            if t.ok() != Some(0) {
                code |= 4;
            }
            let (_, size, ..) = stack_and_thread_pointer();
            if size == 0 {
                code |= 8;
            }
            // SAFETY: _exit.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        (
            libc::WIFEXITED(status) as i32,
            if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                1000 + libc::WTERMSIG(status)
            },
        )
    }
    let thread = thread::spawn(act).join().unwrap();
    let coroutine = on_runtime(workers(1), Duration::from_secs(30), |runtime| {
        (0..5)
            .map(|_| joined(runtime.spawn(act)))
            .collect::<Vec<_>>()
    });
    assert_eq!(thread, (1, 0));
    for c in coroutine {
        assert_eq!(c, thread);
    }
}

/// A runtime dropped and rebuilt many times (Stacks::trim), with many
/// coroutines each time: resident memory and mappings do not grow.
#[test]
fn probe_rebuild_runtime_no_growth() {
    if let Some(_case) = child_case() {
        let cycle = || {
            let rt = Runtime::builder()
                .workers(2)
                .thread_identity(true)
                .build()
                .unwrap();
            let hs: Vec<_> = (0..500)
                .map(|i| {
                    rt.spawn(move || {
                        MARK.with(|m| m.set(i));
                        thread::sleep(Duration::from_millis(1));
                        MARK.with(Cell::get) == i
                    })
                })
                .collect();
            for h in hs {
                assert!(joined(h));
            }
            drop(rt);
        };
        for _ in 0..3 {
            cycle();
        }
        let (rss0, maps0) = (support::memory::resident_kib(), support::memory::mappings());
        for _ in 0..15 {
            cycle();
        }
        let (rss1, maps1) = (support::memory::resident_kib(), support::memory::mappings());
        println!("INFO rss {rss0} -> {rss1} KiB, mappings {maps0} -> {maps1}");
        assert!(rss1 < rss0 + 8 * 1024, "rss {rss0} -> {rss1} KiB");
        assert!(maps1 < maps0 + 50, "mappings {maps0} -> {maps1}");
        println!("PROBE OK");
        return;
    }
    run_case("rebuild", &[], "PROBE OK");
}

/// Parks `n` coroutines on `rt` and returns (mappings, resident KiB)
/// deltas per coroutine while they are parked.
fn per_parked(rt: &Runtime, n: usize) -> (f64, f64) {
    let (maps0, rss0) = (support::memory::mappings(), support::memory::resident_kib());
    let gate = std::sync::Arc::new(std::sync::Barrier::new(n + 1));
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let hs: Vec<_> = (0..n)
        .map(|_| {
            let gate = gate.clone();
            let rx = rx.clone();
            rt.spawn(move || {
                MARK.with(|m| m.set(1));
                let _ = gate;
                let _ = rx;
                thread::sleep(Duration::from_millis(800));
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(400));
    let (maps1, rss1) = (support::memory::mappings(), support::memory::resident_kib());
    drop(tx);
    for h in hs {
        joined(h);
    }
    (
        (maps1 as f64 - maps0 as f64) / n as f64,
        (rss1 as f64 - rss0 as f64) / n as f64,
    )
}

/// Under mlockall, floored stacks map their own and `raise_guard` splits
/// each into three mappings, where the map-limit accounting
/// (`stack_mappings`: OWN * 2) counts two.
#[test]
fn probe_mlockall_mappings_per_floored_stack() {
    if let Some(_case) = child_case() {
        // SAFETY: mlockall with valid flags.
        if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
            println!("SKIPPED: mlockall: {}", std::io::Error::last_os_error());
            return;
        }
        let on = Runtime::builder()
            .workers(1)
            .thread_identity(true)
            .build()
            .unwrap();
        let (maps_on, rss_on) = per_parked(&on, 300);
        drop(on);
        let off = Runtime::builder()
            .workers(1)
            .thread_identity(false)
            .build()
            .unwrap();
        let (maps_off, rss_off) = per_parked(&off, 300);
        drop(off);
        println!("INFO identity on: {maps_on:.2} mappings, {rss_on:.1} KiB per parked coroutine");
        println!(
            "INFO identity off: {maps_off:.2} mappings, {rss_off:.1} KiB per parked coroutine"
        );
        assert!(
            maps_on < 2.2,
            "{maps_on:.2} mappings per floored stack, accounted as 2"
        );
        println!("PROBE OK");
        return;
    }
    run_case("mlockmaps", &[], "PROBE OK");
}

/// Resident memory per parked coroutine with identity (floored stacks)
/// and without; printed, and bounded.
#[test]
fn probe_resident_per_parked_coroutine() {
    if let Some(_case) = child_case() {
        let on = Runtime::builder()
            .workers(1)
            .thread_identity(true)
            .build()
            .unwrap();
        let _ = per_parked(&on, 200);
        let (maps_on, rss_on) = per_parked(&on, 2000);
        drop(on);
        let off = Runtime::builder()
            .workers(1)
            .thread_identity(false)
            .build()
            .unwrap();
        let _ = per_parked(&off, 200);
        let (maps_off, rss_off) = per_parked(&off, 2000);
        drop(off);
        println!("INFO identity on: {maps_on:.2} mappings, {rss_on:.1} KiB per parked coroutine");
        println!(
            "INFO identity off: {maps_off:.2} mappings, {rss_off:.1} KiB per parked coroutine"
        );
        assert!(
            rss_on < rss_off + 6.0,
            "on {rss_on:.1} KiB, off {rss_off:.1} KiB"
        );
        println!("PROBE OK");
        return;
    }
    run_case("rss", &[], "PROBE OK");
}

/// (Pre-existing, not of f8f3f21.) An initial-exec library loaded before
/// the runtime is one of `Layout::modules`; once it is closed, every new
/// block's `fill` still copies its TLS image from the unloaded library's
/// memory. The child must survive spawning after the dlclose.
#[test]
fn probe_spawn_after_dlclose_of_pre_runtime_ie_library() {
    if let Some(_case) = child_case() {
        let small = PathBuf::from(std::env::var("LIB_SMALL").unwrap());
        let handle = dlopen(&small, libc::RTLD_NOW | libc::RTLD_LOCAL);
        assert!(!handle.is_null(), "{}", dlerror());
        let handle = handle as usize;
        let ok = on_runtime(workers(1), Duration::from_secs(30), move |runtime| {
            joined(runtime.spawn(|| ()));
            // SAFETY: our handle, unused since.
            assert_eq!(unsafe { libc::dlclose(handle as *mut libc::c_void) }, 0);
            if !dlopen(&small, libc::RTLD_NOW | libc::RTLD_NOLOAD).is_null() {
                println!("SKIPPED: stayed loaded");
                return true;
            }
            // Fresh blocks (more than one pool's worth at once).
            let hs: Vec<_> = (0..100)
                .map(|i| {
                    runtime.spawn(move || {
                        thread::sleep(Duration::from_millis(2));
                        i
                    })
                })
                .collect();
            hs.into_iter().map(joined).sum::<i32>() == 4950
        });
        assert!(ok);
        println!("PROBE OK");
        return;
    }
    let dir = std::env::temp_dir().join(format!("probe-floor-stale-{}", std::process::id()));
    let Some(small) = compile(&dir, "small", LIB_SMALL_IE, &[]) else {
        return;
    };
    run_case("stale", &[("LIB_SMALL", &small)], "PROBE OK");
    let _ = std::fs::remove_dir_all(dir);
}
