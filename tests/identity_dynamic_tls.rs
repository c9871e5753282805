//! Dynamic TLS: thread-locals of a library loaded with `dlopen` live in
//! blocks `__tls_get_addr` allocates per thread on first use, found
//! through the thread's dtv. A coroutine's copy starts with those entries
//! unallocated, so each coroutine gets its own block; one that was already
//! running when the library was loaded has a dtv older than the library,
//! which glibc must grow (reallocating the copy's dtv) on first use.
//!
//! The library is libstdc++ (a Rust test binary does not link it), whose
//! `__cxa_get_globals` returns the address of its per-thread exception
//! globals. One test only, in a binary of its own: it needs to be the one
//! that loads the library.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use support::identity::joined;
use support::*;

const LIBRARY: &std::ffi::CStr = c"libstdc++.so.6";

/// `__cxa_get_globals`: the address of the calling thread's
/// `__cxa_eh_globals` in libstdc++'s dynamic TLS block.
type GetGlobals = extern "C" fn() -> *mut libc::c_void;

/// Loads the library (once per process) and returns its
/// `__cxa_get_globals`, as an address so that it can cross threads.
fn load() -> usize {
    // SAFETY: dlopen and dlsym with NUL-terminated names; the library is
    // never unloaded.
    unsafe {
        let handle = libc::dlopen(LIBRARY.as_ptr(), libc::RTLD_NOW);
        assert!(!handle.is_null(), "dlopen({LIBRARY:?}) failed");
        let f = libc::dlsym(handle, c"__cxa_get_globals".as_ptr());
        assert!(!f.is_null(), "__cxa_get_globals not found");
        f as usize
    }
}

/// Calls `__cxa_get_globals` at `f`.
fn globals(f: usize) -> usize {
    // SAFETY: `f` is libstdc++'s `__cxa_get_globals`, loaded for good.
    let f: GetGlobals = unsafe { std::mem::transmute(f) };
    f() as usize
}

/// Whether the library is loaded already.
fn loaded() -> bool {
    // SAFETY: RTLD_NOLOAD only looks; a handle it returns is released.
    unsafe {
        let handle = libc::dlopen(LIBRARY.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if handle.is_null() {
            false
        } else {
            libc::dlclose(handle);
            true
        }
    }
}

#[test]
fn a_dlopened_librarys_thread_locals_are_per_coroutine() {
    assert!(
        !loaded(),
        "{LIBRARY:?} is loaded already: the test cannot see dtv growth"
    );
    const LATER: usize = 50;
    let (root, early, later, on_a_thread) = run(1, WATCHDOG, || {
        // Started (and its dtv copied) before the library is loaded.
        let (go, wait) = mpsc::channel::<usize>();
        let early = coroutines::spawn(move || {
            let f = wait.recv().unwrap();
            let mine = globals(f);
            thread::sleep(Duration::from_millis(1));
            assert_eq!(
                globals(f),
                mine,
                "the early coroutine's block after a sleep"
            );
            mine
        });
        coroutines::yield_now();
        let f = load();
        go.send(f).unwrap();
        let root = globals(f);
        let early = joined(early);
        // Alive all at once, so that no block is freed and reused.
        let ready = Arc::new(AtomicUsize::new(0));
        let later: Vec<_> = (0..LATER)
            .map(|_| {
                let ready = ready.clone();
                coroutines::spawn(move || {
                    let mine = globals(f);
                    ready.fetch_add(1, Ordering::SeqCst);
                    yield_until(|| ready.load(Ordering::SeqCst) == LATER);
                    assert_eq!(globals(f), mine, "a block after waiting for the others");
                    mine
                })
            })
            .collect();
        let later: Vec<_> = later.into_iter().map(joined).collect();
        assert_eq!(globals(f), root, "the root's block at the end");
        let on_a_thread = thread::spawn(move || globals(f)).join().unwrap();
        (root, early, later, on_a_thread)
    });
    assert_ne!(early, root, "the early coroutine has the root's block");
    let mut all: HashSet<usize> = later.iter().copied().collect();
    assert_eq!(
        all.len(),
        LATER,
        "coroutines alive at once share blocks: {later:x?}"
    );
    assert!(all.insert(root), "a coroutine has the root's block");
    assert_ne!(on_a_thread, root);
}
