//! Probes of attack round 5 (on 50ca48a): libc's locale state in
//! coroutines (`uselocale`, `setlocale`, the cached ctype tables a copy
//! takes, name lookups on helper threads), compared with plain threads,
//! and a stress of short coroutines on work-stealing workers while
//! libraries with TLS come and go (the round ran them in release builds).

mod support;

use std::collections::HashSet;
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use support::child::{child_case, finish, run_case};
use support::identity::{assert_identity_on, joined, on_runtime, workers};
use support::library::{compile, dlopen, scratch_dir, sym};

unsafe extern "C" {
    fn __ctype_b_loc() -> *const *const u16;
    fn __ctype_toupper_loc() -> *const *const i32;
    fn __ctype_get_mb_cur_max() -> usize;
    fn towupper(wc: u32) -> u32;
}

/// glibc's `struct __locale_struct`: 13 locale data pointers, then the
/// ctype tables.
#[repr(C)]
struct LocaleStruct {
    locales: [usize; 13],
    ctype_b: *const u16,
    ctype_tolower: *const i32,
    ctype_toupper: *const i32,
}

/// A `C.UTF-8` locale object, leaked (shared by every probe).
fn utf8_locale() -> usize {
    static LOC: AtomicUsize = AtomicUsize::new(0);
    let l = LOC.load(Ordering::Acquire);
    if l != 0 {
        return l;
    }
    // SAFETY: newlocale with a NUL-terminated name and no base.
    let loc = unsafe { libc::newlocale(libc::LC_ALL_MASK, c"C.UTF-8".as_ptr(), ptr0()) };
    assert!(!loc.is_null(), "newlocale C.UTF-8");
    match LOC.compare_exchange(0, loc as usize, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => loc as usize,
        Err(other) => other,
    }
}

fn ptr0() -> libc::locale_t {
    std::ptr::null_mut()
}

/// What the caller sees of its locale: `(uselocale(0), *__ctype_b_loc,
/// *__ctype_toupper_loc, MB_CUR_MAX, towupper(0xE9))`.
fn locale_view() -> (usize, usize, usize, usize, u32) {
    // SAFETY: queries of the calling thread's locale state.
    unsafe {
        (
            libc::uselocale(ptr0()) as usize,
            *__ctype_b_loc() as usize,
            *__ctype_toupper_loc() as usize,
            __ctype_get_mb_cur_max(),
            towupper(0xE9),
        )
    }
}

/// The view a thread using `loc` must have.
fn expected_view(loc: usize) -> (usize, usize, usize, usize, u32) {
    // SAFETY: a live locale object.
    let s = unsafe { &*(loc as *const LocaleStruct) };
    (loc, s.ctype_b as usize, s.ctype_toupper as usize, 6, 0xC9)
}

// ------------------------------------------------ uselocale and lookups

/// `getaddrinfo` with `AI_IDN` converts the name from the caller's locale
/// (libidn2 reads the thread's `LC_CTYPE`). A thread that `uselocale`s
/// C.UTF-8 resolves a full-width "ｌｏｃａｌｈｏｓｔ" (mapped to
/// "localhost" by UTS 46, found in /etc/hosts); a coroutine doing the same
/// must get the same answer.
#[test]
fn probe_getaddrinfo_idn_uses_callers_locale() {
    let failures = on_runtime(workers(1), Duration::from_secs(60), |runtime| {
        assert_identity_on(runtime);
        let lookup = || -> (i32, usize) {
            let loc = utf8_locale();
            // SAFETY: a live locale object; restored below.
            let old = unsafe { libc::uselocale(loc as libc::locale_t) };
            let name = CString::new("ｌｏｃａｌｈｏｓｔ").unwrap();
            // SAFETY: zeroed hints are valid; result freed below.
            let rc = unsafe {
                let mut hints: libc::addrinfo = std::mem::zeroed();
                hints.ai_family = libc::AF_INET;
                hints.ai_socktype = libc::SOCK_STREAM;
                hints.ai_flags = 0x0040; // AI_IDN
                let mut res = std::ptr::null_mut();
                let rc = libc::getaddrinfo(name.as_ptr(), std::ptr::null(), &hints, &mut res);
                if rc == 0 {
                    libc::freeaddrinfo(res);
                }
                rc
            };
            // SAFETY: back to the caller's locale.
            let now = unsafe { libc::uselocale(old) } as usize;
            (rc, now)
        };
        let thread = thread::spawn(lookup).join().unwrap();
        let coroutine = joined(runtime.spawn(lookup));
        let mut failures = Vec::new();
        if thread.0 != coroutine.0 {
            failures.push(format!(
                "getaddrinfo(\"ｌｏｃａｌｈｏｓｔ\", AI_IDN) under uselocale(C.UTF-8): thread \
                 returns {}, coroutine {} (-105 = EAI_IDN_ENCODE)",
                thread.0, coroutine.0
            ));
        }
        failures
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Coroutines on two work-stealing workers, half of them under
/// `uselocale(C.UTF-8)`, yielding often: each keeps its own locale and
/// ctype tables wherever it runs, as threads do.
#[test]
fn probe_uselocale_survives_migration() {
    let failures = on_runtime(
        workers(2).work_stealing(true),
        Duration::from_secs(60),
        |runtime| {
            assert_identity_on(runtime);
            let loc = utf8_locale();
            let global = thread::spawn(locale_view).join().unwrap();
            let body = move |i: usize| -> Vec<String> {
                let mut bad = Vec::new();
                let want = if i.is_multiple_of(2) {
                    // SAFETY: a live locale object.
                    unsafe { libc::uselocale(loc as libc::locale_t) };
                    expected_view(loc)
                } else {
                    global
                };
                for step in 0..200 {
                    let seen = locale_view();
                    if seen != want {
                        bad.push(format!("#{i} step {step}: {seen:x?}, want {want:x?}"));
                        break;
                    }
                    if coroutines::in_coroutine() {
                        coroutines::yield_now();
                    } else {
                        thread::yield_now();
                    }
                }
                bad
            };
            let threads: Vec<_> = (0..4).map(|i| thread::spawn(move || body(i))).collect();
            let handles: Vec<_> = (0..64).map(|i| runtime.spawn(move || body(i))).collect();
            let mut failures: Vec<String> = threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .map(|f| format!("thread {f}"))
                .collect();
            for h in handles {
                failures.extend(joined(h).into_iter().map(|f| format!("coroutine {f}")));
            }
            failures
        },
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A coroutine that ends under `uselocale(C.UTF-8)` without restoring it:
/// the next coroutine (on its recycled stack and block) starts on the
/// global locale, as a new thread does.
#[test]
fn probe_uselocale_not_inherited_by_next_coroutine() {
    let failures = on_runtime(workers(1), Duration::from_secs(60), |runtime| {
        assert_identity_on(runtime);
        let loc = utf8_locale();
        let mut failures = Vec::new();
        for round in 0..5 {
            let set_and_end = move || {
                // SAFETY: a live locale object, never restored.
                unsafe { libc::uselocale(loc as libc::locale_t) };
            };
            thread::spawn(set_and_end).join().unwrap();
            joined(runtime.spawn(set_and_end));
            let thread = thread::spawn(locale_view).join().unwrap();
            let coroutine = joined(runtime.spawn(locale_view));
            if thread != coroutine {
                failures.push(format!(
                    "round {round}: new thread {thread:x?}, new coroutine {coroutine:x?}"
                ));
            }
        }
        failures
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A signal handler on a worker that switches the worker's locale
/// (`uselocale`), as a handler on a thread may: later coroutines of that
/// worker must still start on the global locale, as new threads do.
#[test]
fn probe_handler_uselocale_reaches_new_coroutines() {
    if child_case().is_some() {
        extern "C" fn switch_locale(_: libc::c_int) {
            // SAFETY: a live locale object.
            unsafe { libc::uselocale(utf8_locale() as libc::locale_t) };
        }
        let failures = on_runtime(workers(1), Duration::from_secs(30), |runtime| {
            assert_identity_on(runtime);
            utf8_locale();
            support::install_handler(libc::SIGUSR1, switch_locale);
            // SAFETY: the handler is installed.
            joined(runtime.spawn(|| unsafe {
                libc::raise(libc::SIGUSR1);
            }));
            let thread = thread::spawn(locale_view).join().unwrap();
            let coroutine = joined(runtime.spawn(locale_view));
            let mut failures = Vec::new();
            if thread != coroutine {
                failures.push(format!(
                    "after a handler's uselocale on the worker: new thread {thread:x?}, new \
                     coroutine {coroutine:x?}"
                ));
            }
            failures
        });
        finish(failures);
        return;
    }
    run_case("handler-locale", &[], "PROBE OK");
}

/// `setlocale(LC_CTYPE, ..)` called by a coroutine while others run: the
/// caller's tables change, as a thread's do; new coroutines and new
/// threads agree; a coroutine and a thread alive across the call agree.
#[test]
fn probe_setlocale_ctype_in_coroutine() {
    if child_case().is_some() {
        let failures = on_runtime(
            workers(2).work_stealing(true),
            Duration::from_secs(30),
            |runtime| {
                assert_identity_on(runtime);
                let mut failures = Vec::new();
                let (go_t, wait_t) = std::sync::mpsc::channel::<()>();
                let (go_c, wait_c) = std::sync::mpsc::channel::<()>();
                let old_thread = thread::spawn(move || {
                    wait_t.recv().unwrap();
                    locale_view()
                });
                let old_coroutine = runtime.spawn(move || {
                    wait_c.recv().unwrap();
                    locale_view()
                });
                thread::sleep(Duration::from_millis(50));
                let caller = joined(runtime.spawn(|| {
                    // SAFETY: NUL-terminated locale name.
                    let r = unsafe { libc::setlocale(libc::LC_CTYPE, c"C.UTF-8".as_ptr()) };
                    (!r.is_null(), locale_view())
                }));
                let thread_caller = thread::spawn(|| {
                    // SAFETY: as above (same locale, again).
                    let r = unsafe { libc::setlocale(libc::LC_CTYPE, c"C.UTF-8".as_ptr()) };
                    (!r.is_null(), locale_view())
                })
                .join()
                .unwrap();
                if caller != thread_caller {
                    failures.push(format!(
                        "setlocale caller: coroutine {caller:x?}, thread {thread_caller:x?}"
                    ));
                }
                for round in 0..3 {
                    let t = thread::spawn(locale_view).join().unwrap();
                    let c = joined(runtime.spawn(locale_view));
                    if t != c {
                        failures.push(format!(
                            "round {round}: new thread {t:x?}, coroutine {c:x?}"
                        ));
                    }
                }
                go_t.send(()).unwrap();
                go_c.send(()).unwrap();
                let t = old_thread.join().unwrap();
                let c = joined(old_coroutine);
                if t != c {
                    failures.push(format!("alive across: thread {t:x?}, coroutine {c:x?}"));
                }
                failures
            },
        );
        finish(failures);
        return;
    }
    run_case("setlocale-ctype", &[], "PROBE OK");
}

// ------------------------------------------------------------- stress

const TLS_LIB: &str = r#"
__thread int dyn_value = 0x1234;
int get(void) { return dyn_value; }
void set(int v) { dyn_value = v; }
"#;

const STATIC_TLS_LIB: &str = r#"
__attribute__((tls_model("initial-exec"))) __thread char ie_block[512] = {1};
__attribute__((tls_model("initial-exec"))) __thread int ie_value = 0x5678;
int get(void) { return ie_value + ie_block[0] - 1; }
"#;

/// Many short coroutines on 2 work-stealing workers, spawned from 4 plain
/// threads at once, while another thread opens and closes libraries with
/// TLS: each coroutine has its own errno and thread_local! values across
/// yields, a `ThreadId` no other has, the initial value of a dynamic TLS
/// variable of a library loaded before, and nothing crashes.
#[test]
fn probe_stress_short_coroutines_with_dlopen() {
    if child_case().is_some() {
        thread_local! {
            static COUNT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
            static OWNED: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let dir = std::path::PathBuf::from(std::env::var("LIBDIR").unwrap());
        let dynlib = support::library::open(&dir.join("libdyntls.so"), libc::RTLD_NOW);
        let (get, set) = (sym(dynlib, c"get"), sym(dynlib, c"set"));
        let failures = on_runtime(
            workers(2).work_stealing(true),
            Duration::from_secs(120),
            move |runtime| {
                assert_identity_on(runtime);
                let stop = Arc::new(AtomicBool::new(false));
                let loads = Arc::new(AtomicUsize::new(0));
                let loader = {
                    let (stop, loads, dir) = (stop.clone(), loads.clone(), dir.clone());
                    thread::spawn(move || {
                        let mut bad = Vec::new();
                        while !stop.load(Ordering::Relaxed) {
                            let h = dlopen(&dir.join("libstatictls.so"), libc::RTLD_NOW);
                            if h.is_null() {
                                bad.push(support::library::dlerror());
                                break;
                            }
                            // SAFETY: `int get(void)` of the library just opened.
                            let f: extern "C" fn() -> i32 =
                                unsafe { std::mem::transmute(sym(h, c"get")) };
                            if f() != 0x5678 {
                                bad.push(format!("loader sees {:#x}", f()));
                            }
                            // SAFETY: a handle of ours.
                            unsafe { libc::dlclose(h) };
                            loads.fetch_add(1, Ordering::Relaxed);
                        }
                        bad
                    })
                };
                let ids = Arc::new(Mutex::new(Vec::new()));
                let errors = Arc::new(Mutex::new(Vec::<String>::new()));
                let per_spawner: usize = std::env::var("STRESS_N")
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(3000);
                let mut failures: Vec<String> = thread::scope(|scope| {
                    let spawners: Vec<_> = (0..4)
                    .map(|s| {
                        let (ids, errors) = (ids.clone(), errors.clone());
                        let handle = runtime;
                        scope.spawn(move || {
                            let mut joins = Vec::new();
                            for i in 0..per_spawner {
                                let (ids, errors) = (ids.clone(), errors.clone());
                                let me = s * per_spawner + i + 1;
                                joins.push(handle.spawn(move || {
                                    let mut bad = Vec::new();
                                    // SAFETY: get/set of the dynamic TLS library.
                                    let (g, st): (extern "C" fn() -> i32, extern "C" fn(i32)) =
                                        unsafe { (std::mem::transmute::<usize, extern "C" fn() -> i32>(get), std::mem::transmute::<usize, extern "C" fn(i32)>(set)) };
                                    if g() != 0x1234 {
                                        bad.push(format!("#{me}: dyn tls {:#x}", g()));
                                    }
                                    st(me as i32);
                                    if COUNT.with(|c| c.get()) != 0 {
                                        bad.push(format!("#{me}: COUNT starts {}", COUNT.with(|c| c.get())));
                                    }
                                    if OWNED.with(|o| o.borrow().len()) != 0 {
                                        bad.push(format!("#{me}: OWNED starts non-empty"));
                                    }
                                    // SAFETY: the caller's errno.
                                    let e0 = unsafe { *libc::__errno_location() };
                                    if e0 != 0 {
                                        bad.push(format!("#{me}: errno starts {e0}"));
                                    }
                                    COUNT.with(|c| c.set(me));
                                    OWNED.with(|o| o.borrow_mut().push(me));
                                    // SAFETY: as above.
                                    unsafe { *libc::__errno_location() = me as i32 };
                                    let id = thread::current().id();
                                    for _ in 0..(me % 4) {
                                        coroutines::yield_now();
                                    }
                                    // SAFETY: as above.
                                    let e = unsafe { *libc::__errno_location() };
                                    let c = COUNT.with(|c| c.get());
                                    let o = OWNED.with(|o| o.borrow().clone());
                                    if e != me as i32 || c != me || o != [me] || g() != me as i32 {
                                        bad.push(format!(
                                            "#{me}: after yields errno {e}, COUNT {c}, OWNED {o:?}, dyn {}",
                                            g()
                                        ));
                                    }
                                    if thread::current().id() != id {
                                        bad.push(format!("#{me}: ThreadId changed"));
                                    }
                                    ids.lock().unwrap().push(id);
                                    if !bad.is_empty() {
                                        errors.lock().unwrap().extend(bad);
                                    }
                                }));
                                if i % 64 == 0 {
                                    for j in joins.drain(..) {
                                        let _ = j.join();
                                    }
                                }
                            }
                            for j in joins {
                                if let Err(p) = j.join() {
                                    return vec![format!("coroutine panicked: {p:?}")];
                                }
                            }
                            Vec::new()
                        })
                    })
                    .collect();
                    spawners
                        .into_iter()
                        .flat_map(|s| s.join().unwrap())
                        .collect()
                });
                stop.store(true, Ordering::Relaxed);
                failures.extend(loader.join().unwrap());
                failures.extend(errors.lock().unwrap().iter().take(20).cloned());
                let ids = ids.lock().unwrap();
                let unique: HashSet<_> = ids.iter().collect();
                if unique.len() != ids.len() || ids.len() != 4 * per_spawner {
                    failures.push(format!(
                        "{} coroutines ran, {} distinct ThreadIds",
                        ids.len(),
                        unique.len()
                    ));
                }
                println!("INFO loads {}", loads.load(Ordering::Relaxed));
                failures
            },
        );
        finish(failures);
        return;
    }
    let dir = scratch_dir("probe-r5-stress");
    let Some(_) = compile(&dir, "dyntls", TLS_LIB, &[]) else {
        eprintln!("no C compiler: skipped");
        return;
    };
    compile(&dir, "statictls", STATIC_TLS_LIB, &[]).unwrap();
    run_case("stress", &[("LIBDIR", &dir)], "PROBE OK");
    let _ = std::fs::remove_dir_all(dir);
}
