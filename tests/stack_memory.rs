//! Where coroutine stacks live: slots of shared mappings (no memory map of
//! their own where the kernel has guard markers), pages given back when
//! coroutines end, and `mmap`/`mprotect`/`munmap` made by the user's code,
//! in a coroutine or not, are the kernel's own.

mod support;

use std::sync::Mutex;

/// Held by each test: they count the process's mappings and resident
/// memory, which the others change.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

use support::differential::*;
use support::memory::*;

/// Thousands of parked coroutines add (almost) no memory maps: their
/// stacks are slots of chunks mapped for many. On an older kernel each
/// takes its two, as before.
#[test]
fn parked_coroutines_share_memory_mappings() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const COUNT: usize = 3000;
    let runtime = coroutines::Runtime::builder().workers(1).build().unwrap();
    let before = mappings();
    let (handles, barrier) = parked(&runtime, COUNT, Some(64 * 1024), || ());
    let added = mappings().saturating_sub(before);
    barrier.wait();
    handles.into_iter().for_each(|h| h.join().unwrap());
    match guard_markers() {
        true => assert!(added < COUNT / 20, "{added} maps for {COUNT} stacks"),
        false => assert!(added >= COUNT, "{added} maps for {COUNT} stacks"),
    }
}

/// The stack pages coroutines touched go back to the kernel when they end:
/// 2,000 coroutines that each used 192 KiB of stack hold ~400 MB while
/// parked and far less once ended. (Their stack size is not the runtime's
/// default, so the worker's cache of warm stacks does not keep them; the
/// arena's own giving back is tested in `stack_arena.rs`.)
#[test]
fn ended_coroutines_give_their_stack_pages_back() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const COUNT: usize = 2000;
    fn use_192_kib() {
        let buf = [1u8; 192 * 1024];
        std::hint::black_box(&buf);
    }
    let runtime = coroutines::Runtime::builder().workers(1).build().unwrap();
    let before = resident_kib();
    let (handles, barrier) = parked(&runtime, COUNT, Some(256 * 1024), use_192_kib);
    let peak = resident_kib();
    barrier.wait();
    handles.into_iter().for_each(|h| h.join().unwrap());
    let after = resident_kib();
    let grown = peak.saturating_sub(before);
    assert!(grown > 300 * 1024, "parked: only {grown} KiB more");
    assert!(
        after < before + grown / 5,
        "ended: {after} KiB resident, {before} before, {peak} parked"
    );
}

/// A stack-shaped mapping the user's code makes itself, and errors, are
/// the kernel's in a coroutine as on a thread: a mapping of its own that
/// really goes away, and the same errno for bad arguments; `mlockall` and
/// `munlockall`, which the runtime follows, answer as the kernel does.
#[test]
fn user_memory_calls_are_the_kernels() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mapped = differential("stack-shaped mmap, guard, munmap", |_| {
        const LEN: usize = 17 * 4096;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: an anonymous mapping, protected and unmapped here only.
        unsafe {
            let low = libc::mmap(std::ptr::null_mut(), LEN, prot, flags, -1, 0);
            assert_ne!(low, libc::MAP_FAILED);
            let guard = c_outcome(libc::mprotect(low, 4096, libc::PROT_NONE));
            let start = format!("{:x}-", low as usize);
            let listed = || {
                let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
                maps.lines()
                    .any(|l| l.starts_with(&start) && l.contains("---p"))
            };
            let own = listed();
            let unmapped = c_outcome(libc::munmap(low, LEN));
            (guard, own, unmapped, listed())
        }
    });
    assert_eq!(mapped, (Ok(0), true, Ok(0), false));
    let refused = differential("bad memory calls", |_| {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: calls the kernel refuses; nothing is mapped or unmapped.
        unsafe {
            let empty = libc::mmap(std::ptr::null_mut(), 0, prot, flags, -1, 0);
            let empty = (empty == libc::MAP_FAILED, Errno(support::errno()));
            let unaligned = c_outcome(libc::munmap(4097 as *mut libc::c_void, 4096));
            let unmapped = c_outcome(libc::mprotect(4096 as *mut libc::c_void, 4096, prot));
            let no_flags = c_outcome(libc::mlockall(0));
            let unlocked = c_outcome(libc::munlockall());
            (empty, unaligned, unmapped, no_flags, unlocked)
        }
    });
    let einval = Errno(libc::EINVAL);
    assert_eq!(
        refused,
        (
            (true, einval),
            Err(einval),
            Err(Errno(libc::ENOMEM)),
            Err(einval),
            Ok(0)
        )
    );
}
