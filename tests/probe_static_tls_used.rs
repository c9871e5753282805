//! Probes of copies bounded by glibc's `dl_tls_static_used` and of resets
//! from start-up images (attack round on 08ff095). Every probe compares
//! new coroutines with new plain threads, in a child process that must
//! have thread identity.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use coroutines::Runtime;
use support::child::{child_case, finish, run_case};
use support::identity::{
    assert_identity_on, compare_marker, compare_thread_locals, joined, on_runtime, workers,
};
use support::library::INITIAL_EXEC as LIB_IE;
use support::library::{compile, dlopen, env_path, open, scratch_dir, sym};

// ---------------------------------------------------------------- helpers

/// errno and a std thread_local (with a destructor) in new coroutines.
fn compare_std_state(runtime: &Runtime) -> Vec<String> {
    thread_local! {
        static COUNT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
        static OWNED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let observe = || {
        // SAFETY: the calling thread's errno.
        let errno = unsafe { *libc::__errno_location() };
        let count = COUNT.with(|c| {
            let v = c.get();
            c.set(v + 1);
            v
        });
        let owned = OWNED.with(|o| {
            let n = o.borrow().len();
            o.borrow_mut().extend_from_slice(&[1, 2, 3]);
            n
        });
        // SAFETY: the calling thread's errno.
        unsafe { *libc::__errno_location() = 77 };
        (errno, count, owned)
    };
    let mut failures = Vec::new();
    for round in 0..10 {
        let thread = thread::spawn(observe).join().unwrap();
        let coroutine = joined(runtime.spawn(observe));
        if coroutine != thread || thread != (0, 0, 0) {
            failures.push(format!(
                "round {round}: std state: thread {thread:?}, coroutine {coroutine:?}"
            ));
        }
    }
    failures
}

/// Offset of a getter's variable from the thread pointer, in a plain thread.
fn tp_offset(addr_of: usize) -> isize {
    thread::spawn(move || {
        // SAFETY: a function of a loaded library returning a pointer.
        // SAFETY: a function of a loaded library returning a pointer.
        let f: extern "C" fn() -> usize = unsafe { std::mem::transmute(addr_of) };
        // SAFETY: pthread_self has no preconditions.
        f() as isize - unsafe { libc::pthread_self() } as isize
    })
    .join()
    .unwrap()
}

/// An initial-exec library: one int, 0x1111.
const LIB_OLD: &str = r#"
__attribute__((tls_model("initial-exec"))) __thread int old_value = 0x1111;
int old_get(void) { return old_value; }
void *old_addr(void) { return &old_value; }
"#;

/// An initial-exec library of the same shape: one int, 0x5eed.
const LIB_NEW: &str = r#"
__attribute__((tls_model("initial-exec"))) __thread int marker = 0x5eed;
int get_marker(void) { return marker; }
void set_marker(int value) { marker = value; }
void *marker_addr(void) { return &marker; }
"#;

// ------------------------------------------------ static TLS given back

/// glibc's dlclose gives back static TLS at the end of the used part
/// (`dl-close.c`: `if (tls_free_end == GL(dl_tls_static_used))
/// GL(dl_tls_static_used) = tls_free_start`): `dl_tls_static_used` does
/// not only grow. An initial-exec library loaded before the runtime (a
/// start-up module: its image is copied at start-up and reset in every
/// copy) is closed after the runtime started, and another initial-exec
/// library of the same shape is loaded: glibc puts its block where the
/// first one's was. Each copy then takes the new block from the worker
/// and resets it with the closed library's image.
#[test]
fn probe_closed_startup_ie_block_reused_by_new_ie_library() {
    if child_case().is_some() {
        let old = env_path("LIB_OLD");
        let new = env_path("LIB_NEW");
        let ho = open(&old, libc::RTLD_NOW | libc::RTLD_LOCAL) as usize;
        let old_off = tp_offset(sym(ho as *mut _, c"old_addr"));
        let failures = on_runtime(workers(1), Duration::from_secs(30), move |runtime| {
            assert_identity_on(runtime);
            joined(runtime.spawn(|| ()));
            // SAFETY: our handle, unused since.
            // SAFETY: the handle opened above, used no more.
            assert_eq!(unsafe { libc::dlclose(ho as *mut libc::c_void) }, 0);
            if !dlopen(&old, libc::RTLD_NOW | libc::RTLD_NOLOAD).is_null() {
                println!("SKIPPED: stayed loaded");
                return Vec::new();
            }
            let hn = open(&new, libc::RTLD_NOW | libc::RTLD_LOCAL);
            let new_off = tp_offset(sym(hn, c"marker_addr"));
            println!("INFO old block at TP{old_off:+}, new block at TP{new_off:+}");
            compare_marker(runtime, hn)
        });
        finish(failures);
        return;
    }
    let dir = scratch_dir("probe-static-used-reclaim");
    let Some(old) = compile(&dir, "old", LIB_OLD, &[]) else {
        return;
    };
    let new = compile(&dir, "new", LIB_NEW, &[]).unwrap();
    run_case(
        "reclaim",
        &[("LIB_OLD", &old), ("LIB_NEW", &new)],
        "PROBE OK",
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// As above, on two workers with coroutines spawned in a stream meanwhile
/// (pooled stacks: the copies' areas are reused); errno and std
/// thread-locals checked too.
#[test]
fn probe_closed_startup_ie_block_reused_two_workers() {
    if child_case().is_some() {
        let old = env_path("LIB_OLD");
        let new = env_path("LIB_NEW");
        let ho = open(&old, libc::RTLD_NOW | libc::RTLD_LOCAL) as usize;
        let failures = on_runtime(workers(2), Duration::from_secs(30), move |runtime| {
            assert_identity_on(runtime);
            let stop = Arc::new(AtomicBool::new(false));
            let churn: Vec<_> = (0..2)
                .map(|_| {
                    let stop = stop.clone();
                    runtime.spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            joined(coroutines::spawn(|| ()));
                            coroutines::yield_now();
                        }
                    })
                })
                .collect();
            thread::sleep(Duration::from_millis(20));
            // SAFETY: our handle, unused since.
            // SAFETY: the handle opened above, used no more.
            assert_eq!(unsafe { libc::dlclose(ho as *mut libc::c_void) }, 0);
            if !dlopen(&old, libc::RTLD_NOW | libc::RTLD_NOLOAD).is_null() {
                println!("SKIPPED: stayed loaded");
                stop.store(true, Ordering::Relaxed);
                return Vec::new();
            }
            let hn = open(&new, libc::RTLD_NOW | libc::RTLD_LOCAL);
            thread::sleep(Duration::from_millis(20));
            let mut failures = compare_marker(runtime, hn);
            stop.store(true, Ordering::Relaxed);
            churn.into_iter().for_each(joined);
            failures.extend(compare_std_state(runtime));
            failures
        });
        finish(failures);
        return;
    }
    let dir = scratch_dir("probe-static-used-reclaim2");
    let Some(old) = compile(&dir, "old", LIB_OLD, &[]) else {
        return;
    };
    let new = compile(&dir, "new", LIB_NEW, &[]).unwrap();
    run_case(
        "reclaim2",
        &[("LIB_OLD", &old), ("LIB_NEW", &new)],
        "PROBE OK",
    );
    let _ = std::fs::remove_dir_all(dir);
}

// ------------------------------------------------------------- LD_AUDIT

/// A trivial auditor with initial-exec TLS of its own (its namespace has
/// its own libc, whose static TLS also comes from the surplus).
const AUDITOR: &str = r#"
#define _GNU_SOURCE
#include <link.h>
#include <stdint.h>
__attribute__((tls_model("initial-exec"))) __thread int aud_value = 0x5eed;
unsigned int la_version(unsigned int v) { return LAV_CURRENT; }
unsigned int la_objopen(struct link_map *map, Lmid_t lmid, uintptr_t *cookie) {
    aud_value++;
    return LA_FLG_BINDTO | LA_FLG_BINDFROM;
}
"#;

/// A child run with LD_AUDIT: identity must stay on; an initial-exec
/// library loaded after the runtime, errno and std thread-locals start
/// in new coroutines as in new threads.
#[test]
fn probe_ld_audit_then_ie_library() {
    if child_case().is_some() {
        let ie = env_path("LIB_IE");
        let failures = on_runtime(workers(2), Duration::from_secs(30), move |runtime| {
            assert_identity_on(runtime);
            joined(runtime.spawn(|| ()));
            let h = open(&ie, libc::RTLD_NOW | libc::RTLD_LOCAL);
            let mut failures = compare_marker(runtime, h);
            failures.extend(compare_std_state(runtime));
            failures
        });
        finish(failures);
        return;
    }
    let dir = scratch_dir("probe-static-used-audit");
    let Some(aud) = compile(&dir, "aud", AUDITOR, &[]) else {
        return;
    };
    let ie = compile(&dir, "ie", LIB_IE, &[]).unwrap();
    run_case("audit", &[("LD_AUDIT", &aud), ("LIB_IE", &ie)], "PROBE OK");
    let _ = std::fs::remove_dir_all(dir);
}

// ----------------------------------------------------------- LD_PRELOAD

/// Preloaded initial-exec TLS, large (the in-use part reaches far below a
/// floor's page) and aligned to 64.
const LIB_PRELOAD_BIG: &str = r#"
__attribute__((tls_model("initial-exec"), aligned(64))) __thread int pre_marker = 0x5eed;
__attribute__((tls_model("initial-exec"))) __thread char pre_big[12000] = { 1 };
int pre_get(void) { return pre_marker + pre_big[0] - 1 + pre_big[11999]; }
void pre_set(int v) { pre_marker = v; pre_big[0] = 9; pre_big[11999] = 9; }
"#;

/// Preloaded TLS aligned to a page: glibc's static TLS alignment becomes
/// 4096.
const LIB_PRELOAD_PAGE: &str = r#"
__attribute__((tls_model("initial-exec"), aligned(4096))) __thread int pre_marker = 0x5eed;
int pre_get(void) { return pre_marker; }
void pre_set(int v) { pre_marker = v; }
"#;

/// An initial-exec library aligned to 64 bytes, loaded after the runtime.
const LIB_IE_ALIGNED: &str = r#"
__attribute__((tls_model("initial-exec"))) __thread char pad_before[3] = { 1, 2, 3 };
__attribute__((tls_model("initial-exec"), aligned(64))) __thread int marker = 0x5eed;
int get_marker(void) { return marker + pad_before[2] - 3; }
void set_marker(int value) { marker = value; pad_before[2] = 9; }
"#;

fn preload_child() {
    let ie = env_path("LIB_IE");
    let failures = on_runtime(workers(2), Duration::from_secs(30), move |runtime| {
        assert_identity_on(runtime);
        let exe = open_self();
        let mut failures =
            compare_thread_locals(runtime, sym(exe, c"pre_get"), sym(exe, c"pre_set"), 0x5eed);
        let h = open(&ie, libc::RTLD_NOW | libc::RTLD_LOCAL);
        failures.extend(compare_marker(runtime, h));
        failures.extend(compare_std_state(runtime));
        failures
    });
    finish(failures);
}

fn open_self() -> *mut libc::c_void {
    // SAFETY: dlopen(NULL) names the program itself.
    unsafe { libc::dlopen(std::ptr::null(), libc::RTLD_NOW) }
}

// ------------------------------------------- loads beside spawns, 2 workers

/// Initial-exec libraries loaded one after another by a plain thread while
/// both workers spawn coroutines without pause; after each load, new
/// coroutines must start with its values.
#[test]
fn probe_ie_loads_in_parallel_with_spawning() {
    if child_case().is_some() {
        let libs: Vec<PathBuf> = (0..4).map(|i| env_path(&format!("LIB_{i}"))).collect();
        let failures = on_runtime(workers(2), Duration::from_secs(60), move |runtime| {
            assert_identity_on(runtime);
            let stop = Arc::new(AtomicBool::new(false));
            let churn: Vec<_> = (0..4)
                .map(|_| {
                    let stop = stop.clone();
                    runtime.spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            joined(coroutines::spawn(|| ()));
                        }
                    })
                })
                .collect();
            let mut failures = Vec::new();
            for lib in &libs {
                let h = open(lib, libc::RTLD_NOW | libc::RTLD_LOCAL);
                let (get, set) = (sym(h, c"get_marker"), sym(h, c"set_marker"));
                let hs: Vec<_> = (0..200)
                    .map(|_| {
                        runtime.spawn(move || {
                            // SAFETY: functions of the loaded library.
                            // SAFETY: the library's functions, of these types.
                            let get: extern "C" fn() -> i32 = unsafe { std::mem::transmute(get) };
                            // SAFETY: as above.
                            let set: extern "C" fn(i32) = unsafe { std::mem::transmute(set) };
                            let v = get();
                            set(7);
                            v
                        })
                    })
                    .collect();
                let bad: Vec<i32> = hs
                    .into_iter()
                    .map(joined)
                    .filter(|&v| v != 0x5eed)
                    .collect();
                if !bad.is_empty() {
                    failures.push(format!(
                        "{lib:?}: {} coroutines saw {:#x?}",
                        bad.len(),
                        &bad[..bad.len().min(4)]
                    ));
                }
                failures.extend(compare_thread_locals(runtime, get, set, 0x5eed));
            }
            stop.store(true, Ordering::Relaxed);
            churn.into_iter().for_each(joined);
            failures
        });
        finish(failures);
        return;
    }
    let dir = scratch_dir("probe-static-used-parallel");
    let mut libs = Vec::new();
    for i in 0..4 {
        let Some(l) = compile(&dir, &format!("ie{i}"), LIB_IE_ALIGNED, &[]) else {
            return;
        };
        libs.push(l);
    }
    let names: Vec<String> = (0..4).map(|i| format!("LIB_{i}")).collect();
    let env: Vec<(&str, &Path)> = names
        .iter()
        .zip(&libs)
        .map(|(n, l)| (n.as_str(), l.as_path()))
        .collect();
    run_case("parallel", &env, "PROBE OK");
    let _ = std::fs::remove_dir_all(dir);
}

/// An initial-exec library: one word, 0x1111.
const LIB_OLD_WORD: &str = r#"
__attribute__((tls_model("initial-exec"))) __thread long old_word = 0x1111;
long old_get(void) { return old_word; }
"#;

/// An initial-exec library whose thread-local is a pointer.
const LIB_NEW_PTR: &str = r#"
__attribute__((tls_model("initial-exec"))) __thread const char *name = "Z";
int get_marker(void) { return name[0] == 'Z' ? 0x5eed : -1; }
void set_marker(int value) { name = "Y"; }
"#;

/// As `probe_closed_startup_ie_block_reused_by_new_ie_library`, where the
/// new library's thread-local is a pointer: the closed library's image
/// makes it 0x1111 in every new coroutine, which crashes on use.
#[test]
fn probe_closed_startup_ie_block_reused_pointer_crashes() {
    if child_case().is_some() {
        let old = env_path("LIB_OLD");
        let new = env_path("LIB_NEW");
        let ho = open(&old, libc::RTLD_NOW | libc::RTLD_LOCAL) as usize;
        let failures = on_runtime(workers(1), Duration::from_secs(30), move |runtime| {
            assert_identity_on(runtime);
            // SAFETY: our handle, unused since.
            // SAFETY: the handle opened above, used no more.
            assert_eq!(unsafe { libc::dlclose(ho as *mut libc::c_void) }, 0);
            if !dlopen(&old, libc::RTLD_NOW | libc::RTLD_NOLOAD).is_null() {
                println!("SKIPPED: stayed loaded");
                return Vec::new();
            }
            let hn = open(&new, libc::RTLD_NOW | libc::RTLD_LOCAL);
            compare_marker(runtime, hn)
        });
        finish(failures);
        return;
    }
    let dir = scratch_dir("probe-static-used-reclaim-ptr");
    let Some(old) = compile(&dir, "old", LIB_OLD_WORD, &[]) else {
        return;
    };
    let new = compile(&dir, "new", LIB_NEW_PTR, &[]).unwrap();
    run_case(
        "reclaim-ptr",
        &[("LIB_OLD", &old), ("LIB_NEW", &new)],
        "PROBE OK",
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Preloaded TLS of 6000 bytes: the area is more than a floor holds, but
/// less than the size at which `fits_floor` underflows (slots are used).
const LIB_PRELOAD_MID: &str = r#"
__attribute__((tls_model("initial-exec"))) __thread int pre_marker = 0x5eed;
__attribute__((tls_model("initial-exec"))) __thread char pre_big[6000] = { 1 };
int pre_get(void) { return pre_marker + pre_big[0] - 1 + pre_big[5999]; }
void pre_set(int v) { pre_marker = v; pre_big[0] = 9; pre_big[5999] = 9; }
"#;

/// A child with the library of `preload_source` preloaded: what new
/// coroutines see of its thread-locals, of an initial-exec library loaded
/// after the runtime, and of std's state, against new threads.
fn preload_case(tag: &str, preload_source: &str) {
    if child_case().is_some() {
        preload_child();
        return;
    }
    let dir = scratch_dir(&format!("probe-static-used-{tag}"));
    let Some(pre) = compile(&dir, "pre", preload_source, &[]) else {
        return;
    };
    let ie = compile(&dir, "ie", LIB_IE_ALIGNED, &[]).unwrap();
    run_case(tag, &[("LD_PRELOAD", &pre), ("LIB_IE", &ie)], "PROBE OK");
    let _ = std::fs::remove_dir_all(dir);
}

/// 12 KiB of preloaded TLS: too much for a floor (and more than the
/// floor check could once take without overflowing).
#[test]
fn probe_ld_preload_large_aligned_ie_tls() {
    preload_case("preload-big", LIB_PRELOAD_BIG);
}

/// Static TLS aligned to a page.
#[test]
fn probe_ld_preload_page_aligned_tls() {
    preload_case("preload-page", LIB_PRELOAD_PAGE);
}

/// 6000 bytes of preloaded TLS: more than a floor holds (areas in slots).
#[test]
fn probe_ld_preload_mid_sized_tls() {
    preload_case("preload-mid", LIB_PRELOAD_MID);
}
