//! Probes of the stack arena (written against 86a50e3, which four of them
//! failed; kept as tests since): the stacks of a worker's pool (the
//! runtime's default size, unmeasured) are slots of shared chunk mappings,
//! served by hooked `mmap`/`mprotect`/`munmap` while the runtime creates or
//! drops a generator; released slots stay dirty up to 4 MiB per size,
//! chunks whose slots are all free are unmapped (the newest of each size
//! when a runtime drops), stale list entries carry their chunk's id.
//!
//! Every probe makes its coroutines' stacks pooled (the runtime is built
//! with `.stack_size(N)` and coroutines are spawned without a size, or
//! with that size), so that they come from the arena. Each asserts what a
//! user would expect from the runtime before the arena (a stack per
//! mapping, unmapped when dropped) or from a plain thread, and fails if
//! the arena changes it. Where the workers' pools matter (each keeps up to
//! 1024 finished stacks, dirty: a policy older than the arena), the probe
//! drops the runtime before measuring (which clears the pools) or bounds
//! its expectation by them. Probes that measure the whole process
//! (resident memory, address space, limits, signal handlers, locking,
//! fork) run in a child process of their own.

mod support;

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use support::child::{child_case, rerun, run_child};
use support::memory::*;

/// A runtime of `workers` workers whose default (pooled) stack is `size`.
fn runtime_with(workers: usize, size: usize) -> coroutines::Runtime {
    coroutines::Runtime::builder()
        .workers(workers)
        .stack_size(size)
        .build()
        .unwrap()
}

fn end(handles: Vec<coroutines::JoinHandle<()>>, barrier: Arc<Barrier>) {
    barrier.wait();
    handles.into_iter().for_each(|h| h.join().unwrap());
}

fn set_address_space_limit(bytes: usize) {
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: sets this (child) process's own limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
}

/// Runs `body` in a child process that acts out `case` (within `limit`),
/// so that the probe's limits and memory counts are its own.
fn in_child(case: &str, limit: Duration, body: impl FnOnce()) {
    match child_case() {
        Some(_) => body(),
        None => drop(run_child(case, child(case), limit)),
    }
}

fn child(case: &str) -> std::process::Command {
    let mut command = rerun(case);
    // One malloc arena: no thread reserves 64 MiB of address space of its
    // own behind the probe's back.
    command.env("MALLOC_ARENA_MAX", "1");
    command
}

/// An anonymous mapping of `len` bytes, unmapped at once: whether the
/// process had room for it.
fn room_for(len: usize) -> Result<(), std::io::Error> {
    // SAFETY: an anonymous mapping, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the mapping made above.
    unsafe { libc::munmap(p, len) };
    Ok(())
}

/// In a coroutine: spawns `count` coroutines (pooled stacks) that each fill
/// a stack buffer with a tag of their own, yield a few times, and check it;
/// returns how many found their buffer changed.
fn tagged_round(count: usize, seed: u8, size: Option<usize>) -> usize {
    let handles: Vec<_> = (0..count)
        .map(|i| {
            let tag = seed ^ (i as u8).rotate_left(1) ^ 0x11;
            let builder = match size {
                Some(size) => coroutines::Builder::new().stack_size(size),
                None => coroutines::Builder::new(),
            };
            builder
                .spawn(move || {
                    let mut buf = [tag; 8 * 1024];
                    std::hint::black_box(&mut buf);
                    for _ in 0..4 {
                        coroutines::yield_now();
                        std::hint::black_box(&mut buf);
                    }
                    buf.iter().all(|&b| b == tag)
                })
                .unwrap()
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|ok| !ok)
        .count()
}

/// PROBE 1. Stack pages coroutines touched go back to the kernel once
/// they ended and their runtime is gone: 48 coroutines on the pooled 4 MiB
/// stacks of a runtime (`.stack_size(4 MiB)`), each using 3 MiB, hold
/// ~150 MB while alive; after they end and the runtime is dropped (which
/// empties its pool into the arena), the process should hold (almost) none
/// of it, as it did when each stack was unmapped.
#[test]
fn probe_resident_memory_comes_back_after_big_stacks_end() {
    in_child("rss", Duration::from_secs(120), || {
        fn use_3_mib() {
            let buf = [1u8; 3 << 20];
            std::hint::black_box(&buf);
        }
        let runtime = runtime_with(1, 4 << 20);
        runtime.block_on(|| ());
        let before = resident_kib();
        let (handles, barrier) = parked(&runtime, 48, None, use_3_mib);
        let peak = resident_kib();
        end(handles, barrier);
        drop(runtime);
        let after = resident_kib();
        let grown = peak.saturating_sub(before);
        println!("before {before} KiB, parked {peak} KiB, ended + runtime dropped {after} KiB");
        assert!(grown > 100 * 1024, "parked: only {grown} KiB more");
        assert!(
            after < before + grown / 5,
            "ended and runtime dropped: {after} KiB resident, {before} before, {peak} parked: \
             {} KiB of ended coroutines' stacks stay resident",
            after - before
        );
    });
}

/// The set-up of probes 2 and 3: the address space limited to 256 MiB
/// above its size, 20 coroutines on a runtime's pooled 8 MiB stacks
/// parked, ended, and the runtime dropped. Returns the size before (bytes)
/// and while parked (KiB).
fn twenty_ended_under_a_limit() -> (usize, usize) {
    let runtime = runtime_with(1, 8 << 20);
    runtime.block_on(|| ());
    let base = address_space_kib() * 1024;
    set_address_space_limit(base + (256 << 20));
    let (handles, barrier) = parked(&runtime, 20, None, || ());
    let peak = address_space_kib();
    end(handles, barrier);
    drop(runtime);
    (base, peak)
}

/// PROBE 2. Under an address-space limit (`ulimit -v`), the address
/// space of ended coroutines' stacks is the process's again once the
/// runtime is gone: a user's 120 MiB mapping fits in a 256 MiB headroom
/// after 20 coroutines on a runtime's pooled 8 MiB stacks ended and the
/// runtime was dropped (the pool's retained stacks go with it), as it did
/// when each stack was unmapped.
#[test]
fn probe_address_space_comes_back_under_rlimit_as() {
    in_child("as", Duration::from_secs(120), || {
        let (base, peak) = twenty_ended_under_a_limit();
        let after = address_space_kib();
        println!(
            "VmSize: base {} KiB, 20 coroutines alive {peak} KiB, ended + dropped {after} KiB",
            base / 1024
        );
        if let Err(error) = room_for(120 << 20) {
            panic!(
                "a 120 MiB mapping failed ({error}) with 256 MiB of headroom: {} KiB of ended \
                 coroutines' stacks still take address space after their runtime was dropped",
                after - base / 1024
            );
        }
    });
}

/// PROBE 3. Under an address-space limit, the address space of ended
/// coroutines' stacks can hold a stack of another size: after 20
/// coroutines on a runtime's pooled 8 MiB stacks ended and the runtime was
/// dropped, a coroutine with a 120 MiB stack starts on a new runtime in
/// 256 MiB of headroom (it did when each stack was unmapped).
#[test]
fn probe_ended_stacks_make_room_for_another_size_under_rlimit_as() {
    in_child("other size", Duration::from_secs(120), || {
        let (base, _) = twenty_ended_under_a_limit();
        // The 120 MiB stack is the new runtime's default: pooled, lent.
        let other = runtime_with(1, 120 << 20);
        let joined = other.block_on(|| coroutines::spawn(|| 7).join());
        let after = address_space_kib();
        match joined {
            Ok(seven) => assert_eq!(seven, 7),
            Err(payload) => {
                let why = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_default();
                panic!(
                    "a 120 MiB coroutine could not start in 256 MiB of headroom after \
                     20 coroutines of 8 MiB ended (VmSize {after} KiB, base {} KiB): {why}",
                    base / 1024
                );
            }
        }
    });
}

static HANDLED: AtomicUsize = AtomicUsize::new(0);
static KEPT_AFTER_UNMAP: AtomicUsize = AtomicUsize::new(0);
static MAP_FAILED_IN_HANDLER: AtomicUsize = AtomicUsize::new(0);

/// What the handler writes at the start of its mapping before unmapping
/// it: a mapping made since by another thread at the same address does not
/// hold it.
const HANDLER_MARK: u64 = 0x5eed_a5a5_c0ff_ee11;

/// A signal handler that makes a stack-shaped mapping of its own, marks it
/// and unmaps it: afterwards its pages must be gone, as on any thread.
extern "C" fn map_in_handler(_: libc::c_int) {
    let len = 13 * PAGE;
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK;
    // SAFETY: an anonymous mapping made, written and unmapped here only;
    // afterwards its address is only read through the kernel.
    unsafe {
        let saved = *libc::__errno_location();
        let p = libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0);
        if p == libc::MAP_FAILED {
            MAP_FAILED_IN_HANDLER.fetch_add(1, Ordering::Relaxed);
        } else {
            p.cast::<u64>().write(HANDLER_MARK);
            libc::munmap(p, len);
            let mut word = 0u64;
            let local = libc::iovec {
                iov_base: (&mut word as *mut u64).cast(),
                iov_len: 8,
            };
            let remote = libc::iovec {
                iov_base: p,
                iov_len: 8,
            };
            let n = libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0);
            if n == 8 && word == HANDLER_MARK {
                KEPT_AFTER_UNMAP.fetch_add(1, Ordering::Relaxed);
            }
        }
        HANDLED.fetch_add(1, Ordering::Relaxed);
        *libc::__errno_location() = saved;
    }
}

/// PROBE 4. A signal handler's `mmap`/`munmap` are the kernel's even when
/// the signal interrupts a worker that is creating or dropping a pooled
/// stack (lending or reclaiming a slot, holding the arena's lock), and the
/// handler neither deadlocks nor is answered by the arena. Each round is a
/// new runtime (`.stack_size(40 KiB)`) that spawns 200 coroutines (every
/// stack lent: the pool starts empty) and is dropped (every stack
/// reclaimed), while another thread signals its worker.
#[test]
fn probe_signal_handler_memory_calls_while_stacks_are_made() {
    if child_case().is_some() {
        // SAFETY: installs a handler (through the runtime's hook).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = map_in_handler as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            assert_eq!(
                libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
                0
            );
        }
        let target = Arc::new(AtomicI32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let (stop, target) = (stop.clone(), target.clone());
            std::thread::spawn(move || {
                // SAFETY: getpid has no preconditions.
                let pid = unsafe { libc::getpid() };
                while !stop.load(Ordering::Relaxed) {
                    let tid = target.load(Ordering::Relaxed);
                    if tid != 0 {
                        // SAFETY: signals a worker thread, whose handler is
                        // installed above (ESRCH if it has just exited).
                        unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGUSR1) };
                    }
                    std::hint::spin_loop();
                }
            })
        };
        let start = Instant::now();
        let (mut spawned, mut rounds) = (0usize, 0usize);
        while start.elapsed() < Duration::from_secs(5)
            && KEPT_AFTER_UNMAP.load(Ordering::Relaxed) == 0
        {
            let runtime = runtime_with(1, 40 * 1024);
            // SAFETY: gettid has no preconditions.
            let worker = runtime.block_on(|| unsafe { libc::gettid() });
            target.store(worker, Ordering::Relaxed);
            spawned += runtime.block_on(|| {
                let handles: Vec<_> = (0..200).map(|_| coroutines::spawn(|| ())).collect();
                let n = handles.len();
                handles.into_iter().for_each(|h| h.join().unwrap());
                n
            });
            drop(runtime);
            target.store(0, Ordering::Relaxed);
            rounds += 1;
        }
        stop.store(true, Ordering::Relaxed);
        sender.join().unwrap();
        let kept = KEPT_AFTER_UNMAP.load(Ordering::Relaxed);
        println!(
            "{rounds} runtimes, {spawned} coroutines, {} handler runs, {kept} handler mappings \
             still mapped after munmap, {} failed maps",
            HANDLED.load(Ordering::Relaxed),
            MAP_FAILED_IN_HANDLER.load(Ordering::Relaxed)
        );
        assert!(HANDLED.load(Ordering::Relaxed) > 0, "the handler never ran");
        assert_eq!(
            kept, 0,
            "a signal handler's own mmap+munmap left its memory mapped {kept} times: \
             the arena answered the handler's calls"
        );
        assert_eq!(MAP_FAILED_IN_HANDLER.load(Ordering::Relaxed), 0);
        return;
    }
    let (output, ended) =
        support::child::wait_bounded(child("signals").spawn().unwrap(), Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        ended,
        "the child hung: its worker deadlocked (a signal handler's mmap re-entered the \
         stack arena while the worker held the arena's lock) or never came back;\n\
         --- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(
        output.status.success(),
        "--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
}

/// What a coroutine sees of its own stack: the range glibc reports
/// (`pthread_getattr_np`, with thread identity on), whether a local lies
/// in it, and whether the page below it (the guard) and its lowest page
/// can be read.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct StackView {
    local_inside: bool,
    guard_readable: bool,
    bottom_readable: bool,
}

/// The calling thread's stack as glibc reports it: lowest usable byte and
/// size.
fn own_stack() -> Option<(usize, usize)> {
    // SAFETY: queries the calling thread's attributes into `attr`, then
    // destroys them.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr = std::ptr::null_mut();
        let mut size = 0;
        libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        Some((addr as usize, size))
    }
}

fn view_own_stack() -> Option<StackView> {
    let (low, size) = own_stack()?;
    let local = 0u8;
    let here = std::hint::black_box(&local) as *const u8 as usize;
    Some(StackView {
        local_inside: (low..low + size).contains(&here),
        guard_readable: readable(low - PAGE),
        bottom_readable: readable(low),
    })
}

/// PROBE 5. Every stack a coroutine gets has a guard page right below it,
/// whatever the runtime's default size (odd sizes too), pooled (lent by
/// the arena: spawned without a size, or with the default one) or
/// measured (a mapping of its own), fresh or re-used.
#[test]
fn probe_every_stack_has_its_guard_page() {
    let mut checked = 0;
    for &size in &[
        16 * 1024,
        16 * 1024 + 1,
        64 * 1024 + 4095,
        (1 << 20) + 12345,
        3 << 20,
    ] {
        let views = support::identity::on_runtime(
            coroutines::Runtime::builder()
                .workers(2)
                .thread_identity(true)
                .stack_size(size),
            Duration::from_secs(60),
            move |runtime| {
                let mut views = Vec::new();
                for how in ["default", "same size", "measured"] {
                    for round in 0..3 {
                        let view = runtime.block_on(move || {
                            let builder = match how {
                                "default" => coroutines::Builder::new(),
                                "same size" => coroutines::Builder::new().stack_size(size),
                                _ => coroutines::Builder::new()
                                    .stack_size(size)
                                    .measure_stack(true),
                            };
                            builder.spawn(view_own_stack).unwrap().join().unwrap()
                        });
                        views.push((how, round, view));
                    }
                }
                views
            },
        );
        for (how, round, view) in views {
            let Some(view) = view else { continue };
            if !view.local_inside {
                // Thread identity is off in this process: glibc reports
                // the worker's stack.
                continue;
            }
            assert_eq!(
                view,
                StackView {
                    local_inside: true,
                    guard_readable: false,
                    bottom_readable: true
                },
                "default stack of {size} bytes, spawned {how}, round {round}"
            );
            checked += 1;
        }
    }
    assert!(
        checked > 0,
        "thread identity is off: no coroutine stack was seen"
    );
}

/// PROBE 6. A stack overflow is caught on a re-used slot and on one whose
/// pages were given back, as on a fresh one, with thread identity on and
/// off: 100 coroutines on a runtime's pooled 128 KiB stacks end and the
/// runtime is dropped (its pool goes back to the arena: past the dirty
/// allowance, a batch is given back), then on a new runtime of that
/// default size 80 coroutines overflow one after another.
#[test]
fn probe_overflow_is_caught_on_reused_and_given_back_slots() {
    if let Some(case) = child_case() {
        let identity = case == "identity on";
        let build = || {
            coroutines::Runtime::builder()
                .workers(1)
                .stack_size(128 * 1024)
                .thread_identity(identity)
                .build()
                .unwrap()
        };
        let runtime = build();
        let (handles, barrier) = parked(&runtime, 100, None, || ());
        end(handles, barrier);
        drop(runtime);
        let runtime = build();
        let results = runtime.block_on(|| {
            (0..80)
                .map(|_| {
                    coroutines::spawn(|| support::recurse_deeply(1_000_000))
                        .join()
                        .map_err(|p| p.downcast::<String>().map(|m| *m).unwrap_or_default())
                })
                .collect::<Vec<_>>()
        });
        for (i, result) in results.into_iter().enumerate() {
            match result {
                Ok(v) => panic!("overflow {i} not caught: returned {v}"),
                Err(message) => assert!(message.contains("overflowed"), "{i}: {message}"),
            }
        }
        return;
    }
    for case in ["identity on", "identity off"] {
        run_child(case, child(case), Duration::from_secs(120));
    }
}

#[inline(never)]
fn use_256_kib() {
    let buf = [3u8; 256 * 1024];
    std::hint::black_box(&buf);
}

#[inline(never)]
fn use_nothing() {
    std::hint::black_box(0u8);
}

/// PROBE 7. A measured coroutine reports its own use, not that of the
/// coroutines that ran before it on the runtime's (lent, pooled) stacks of
/// the same size: measured stacks are never lent, so even after pooled
/// coroutines dirtied the arena's slots of that size and gave them back,
/// a measured one starts from zero.
#[test]
fn probe_measured_stack_on_a_reused_slot() {
    let used = support::identity::on_runtime(
        coroutines::Runtime::builder()
            .workers(1)
            .stack_size(512 * 1024),
        Duration::from_secs(60),
        |runtime| {
            runtime.block_on(|| {
                // Pooled stacks (lent), dirtied by 256 KiB each.
                let dirty: Vec<_> = (0..8).map(|_| coroutines::spawn(use_256_kib)).collect();
                dirty.into_iter().for_each(|h| h.join().unwrap());
                let spawn = |f: fn()| {
                    let handle = coroutines::Builder::new()
                        .stack_size(512 * 1024)
                        .measure_stack(true)
                        .spawn(f)
                        .unwrap();
                    let coroutine = handle.coroutine().clone();
                    handle.join().unwrap();
                    coroutine.stack_used().unwrap()
                };
                (spawn(use_256_kib), spawn(use_nothing), spawn(use_nothing))
            })
        },
    );
    assert!(used.0 >= 256 * 1024, "{used:?}");
    assert!(used.1 < 64 * 1024 && used.2 < 64 * 1024, "{used:?}");
}

/// PROBE 8. Two threads making and dropping runtimes of one default stack
/// size at the same time (each round a new runtime, so every stack is lent
/// and reclaimed, chunks emptied and unmapped, slots given back) never
/// hand one slot to two live coroutines, nor zero a live one's pages: each
/// coroutine fills a stack buffer, yields, and checks it.
#[test]
fn probe_parallel_runtimes_never_share_a_slot() {
    let check = |seed: u8| {
        std::thread::spawn(move || {
            let mut corrupted = 0;
            for round in 0..25u8 {
                let runtime = runtime_with(2, 48 * 1024);
                corrupted += runtime.block_on(move || tagged_round(80, seed ^ round, None));
            }
            corrupted
        })
    };
    let (a, b) = (check(0x5a), check(0xa5));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!(
        (a, b),
        (0, 0),
        "coroutines found their stack changed under them"
    );
}

/// PROBE 9. With all memory locked (`mlockall(MCL_CURRENT | MCL_FUTURE)`,
/// as real-time programs do), every mapping is made resident at once, so
/// a coroutine stack should cost its own size and no more: 5 coroutines on
/// a runtime's pooled 4 MiB stacks add about 20 MiB (the parent commit:
/// 20 MiB; its pool mapped one stack per spawn). At 86a50e3 the arena
/// mapped chunks for several stacks at a time (4, then 8, ... slots per
/// size) and the pool fresh stacks in doubling batches, all of which the
/// lock made resident (and `RLIMIT_MEMLOCK` counts, for a process without
/// CAP_IPC_LOCK).
#[test]
fn probe_locked_memory_costs_only_the_stacks_in_use() {
    in_child("mlockall", Duration::from_secs(120), || {
        let runtime = runtime_with(1, 4 << 20);
        runtime.block_on(|| ());
        // SAFETY: locks this (child) process's memory.
        let locked = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
        if locked != 0 {
            println!("mlockall failed: {}", std::io::Error::last_os_error());
            return;
        }
        let before = resident_kib();
        let (handles, barrier) = parked(&runtime, 5, None, || ());
        let peak = resident_kib();
        end(handles, barrier);
        let grown = peak.saturating_sub(before);
        println!("locked: before {before} KiB, 5 coroutines of 4 MiB alive {peak} KiB");
        // `before` may or may not still hold the ended root coroutine of
        // `block_on` (8 MiB, locked): the parent commit measured 12 or
        // 20 MiB here, this one 41 or 49 MiB.
        assert!(
            grown < 32 * 1024,
            "5 coroutines of 4 MiB (and an ended root coroutine) made {grown} KiB resident \
             with memory locked"
        );
    });
}

/// PROBE 10. While a runtime runs, the address space its stacks hold
/// follows the stacks in use: 12,000 coroutines on pooled 64 KiB stacks
/// park, all but every 1000th end (12 stay), and the process should hold
/// about the 12 live stacks plus the worker's pool (up to 1024 finished
/// stacks, a policy older than the arena), ~70 MiB, as it did when each
/// stack was its own mapping. A chunk is unmapped only when all its slots
/// are free, so one live coroutine (or pooled stack) keeps a whole chunk
/// of 1024 slots (68 MiB) mapped: 12 survivors spread over the chunks keep
/// ~800 MiB.
#[test]
fn probe_address_space_follows_the_live_stacks() {
    in_child("fragmentation", Duration::from_secs(300), || {
        const COUNT: usize = 12_000;
        const EVERY: usize = 1000;
        let runtime = runtime_with(1, 64 * 1024);
        runtime.block_on(|| ());
        let base = address_space_kib();
        let survivors = COUNT / EVERY;
        let reached = Arc::new(Barrier::new(COUNT + 1));
        let ended = Arc::new(Barrier::new(COUNT - survivors + 1));
        let last = Arc::new(Barrier::new(survivors + 1));
        let handles = {
            let (reached, ended, last) = (reached.clone(), ended.clone(), last.clone());
            runtime.block_on(move || {
                (0..COUNT)
                    .map(|i| {
                        let (reached, ended, last) = (reached.clone(), ended.clone(), last.clone());
                        coroutines::spawn(move || {
                            reached.wait();
                            match i % EVERY {
                                0 => last.wait(),
                                _ => ended.wait(),
                            };
                        })
                    })
                    .collect::<Vec<_>>()
            })
        };
        reached.wait();
        let peak = address_space_kib();
        ended.wait();
        let (kept, done): (Vec<_>, Vec<_>) = handles
            .into_iter()
            .enumerate()
            .partition(|(i, _)| i % EVERY == 0);
        done.into_iter().for_each(|(_, h)| h.join().unwrap());
        let after = address_space_kib();
        last.wait();
        kept.into_iter().for_each(|(_, h)| h.join().unwrap());
        // 12 live stacks + 1024 pooled + a batch, 68 KiB each, four times
        // over (a live stack keeps its chunk of up to 64 slots mapped, and
        // which 1,024 stacks the pool keeps is the order they ended in),
        // and 32 MiB for everything else: far below the ~900 MB parked.
        let bound = 4 * (survivors + 1024 + 16) * 68 + 32 * 1024;
        println!(
            "VmSize: base {base} KiB, {COUNT} parked {peak} KiB, {survivors} left {after} KiB"
        );
        assert!(
            after - base < bound,
            "{survivors} live coroutines (and a pool of <= 1024 stacks) hold {} KiB of \
             address space, more than {bound} KiB",
            after - base
        );
    });
}

/// PROBE 11. Once the last runtime is dropped, the address space of its
/// stacks is the process's again: a runtime whose default stack is
/// 256 MiB runs one coroutine and is dropped; the process should be back
/// to its size before (it was when each stack was unmapped). At 86a50e3
/// the arena kept the newest chunk of each size mapped while empty: with stacks of
/// 128 MiB or more a chunk is one slot, so a whole stack's address space
/// stayed taken for good (up to 128 MiB per size for smaller stacks).
#[test]
fn probe_address_space_comes_back_after_the_last_runtime() {
    in_child("newest chunk", Duration::from_secs(120), || {
        {
            let warm = runtime_with(1, 64 * 1024);
            warm.block_on(|| ());
        }
        let base = address_space_kib();
        let runtime = runtime_with(1, 256 << 20);
        runtime.block_on(|| {
            coroutines::spawn(|| {
                let buf = [1u8; 1 << 20];
                std::hint::black_box(&buf);
            })
            .join()
            .unwrap()
        });
        let alive = address_space_kib();
        drop(runtime);
        let after = address_space_kib();
        println!("VmSize: base {base} KiB, runtime alive {alive} KiB, dropped {after} KiB");
        assert!(
            after < base + 16 * 1024,
            "the runtime with 256 MiB stacks is gone but {} KiB of address space stays taken",
            after - base
        );
    });
}

/// `count` coroutines of the calling coroutine's runtime, each filling a
/// stack buffer with its tag, all alive at once: whether each found its
/// buffer intact after all the others started and yielded, and where it
/// was. Two live coroutines on one slot would have the same address.
fn live_at_once(count: usize, seed: u8) -> Vec<(bool, usize)> {
    let reached = Arc::new(Barrier::new(count));
    let handles: Vec<_> = (0..count)
        .map(|i| {
            let reached = reached.clone();
            let tag = seed ^ (i as u8).rotate_left(3);
            coroutines::spawn(move || {
                let mut buf = [tag; 4 * 1024];
                std::hint::black_box(&mut buf);
                reached.wait();
                coroutines::yield_now();
                std::hint::black_box(&mut buf);
                (buf.iter().all(|&b| b == tag), buf.as_ptr() as usize)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// PROBE 12. Slots of a chunk that was unmapped are never lent again, even
/// when a new chunk is mapped at the same address (stale list entries),
/// and no slot is lent to two live coroutines: runtimes of one default
/// size come and go (each drop empties the pool into the arena, chunks are
/// unmapped, their entries go stale; the next runtime maps new chunks,
/// likely at the same addresses), and each round 700 coroutines alive at
/// once check their stack buffers and that no two share an address.
#[test]
fn probe_stale_slots_are_never_lent() {
    let rounds: Vec<(usize, usize)> = (0..6u8)
        .map(|round| {
            let runtime = runtime_with(2, 32 * 1024);
            let seen = runtime.block_on(move || live_at_once(700, round.wrapping_mul(37)));
            drop(runtime);
            let corrupted = seen.iter().filter(|(ok, _)| !ok).count();
            let mut at: Vec<usize> = seen.iter().map(|&(_, at)| at).collect();
            at.sort_unstable();
            at.dedup();
            (corrupted, seen.len() - at.len())
        })
        .collect();
    assert!(
        rounds.iter().all(|&r| r == (0, 0)),
        "(corrupted buffers, shared slots) per round: {rounds:?}"
    );
}

/// PROBE 13. Stack bookkeeping holds under churn from every direction at
/// once (a debug build panics on an underflow of the arena's counts; a
/// chunk unmapped while a slot is lent kills the process): two threads
/// make and drop runtimes of two different default sizes (64 KiB and
/// 128 KiB; the 64 KiB runtimes also spawn coroutines with an explicit
/// 64 KiB, pooled too, and with 128 KiB, not their default: mappings of
/// their own, of the other runtimes' size), while a long-lived runtime's
/// coroutine keeps a 64 KiB slot lent in a chunk whose other slots come
/// and go. Every coroutine's stack buffer stays intact.
#[test]
fn probe_churn_across_runtimes_and_sizes() {
    in_child("churn", Duration::from_secs(300), || {
        let keeper = runtime_with(1, 64 * 1024);
        let stop = Arc::new(AtomicBool::new(false));
        let kept = {
            let stop = stop.clone();
            keeper.spawn(move || {
                let mut buf = [0x77u8; 16 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    std::hint::black_box(&mut buf);
                    std::thread::sleep(Duration::from_millis(2));
                }
                buf.iter().all(|&b| b == 0x77)
            })
        };
        let churn = |default: usize, other: Option<usize>, seed: u8| {
            std::thread::spawn(move || {
                let mut corrupted = 0;
                for round in 0..20u8 {
                    let runtime = runtime_with(2, default);
                    corrupted += runtime.block_on(move || {
                        let mut bad = tagged_round(150, seed ^ round, None);
                        bad += tagged_round(50, seed ^ round ^ 0x40, Some(default));
                        if let Some(other) = other {
                            bad += tagged_round(50, seed ^ round ^ 0x80, Some(other));
                        }
                        bad
                    });
                }
                corrupted
            })
        };
        let a = churn(64 * 1024, Some(128 * 1024), 0x3c);
        let b = churn(128 * 1024, None, 0xc3);
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        stop.store(true, Ordering::Relaxed);
        assert!(
            kept.join().unwrap(),
            "the long-lived coroutine's stack changed"
        );
        assert_eq!(
            (a, b),
            (0, 0),
            "coroutines found their stack changed under them"
        );
    });
}

/// PROBE 14. Coroutines that move between workers (work stealing) keep
/// their stacks, and their stacks end up in the pool of the worker they
/// finish on, then back in the arena when the runtime is dropped; a second
/// runtime of that size gets every slot once.
#[test]
fn probe_migrated_coroutines_keep_their_stacks() {
    let build = || {
        coroutines::Runtime::builder()
            .workers(2)
            .work_stealing(true)
            .stack_size(96 * 1024)
            .build()
            .unwrap()
    };
    let runtime = build();
    let corrupted = runtime.block_on(|| {
        let handles: Vec<_> = (0..200u32)
            .map(|i| {
                coroutines::spawn(move || {
                    let tag = i as u8;
                    let mut buf = [tag; 8 * 1024];
                    for _ in 0..5 {
                        std::hint::black_box(&mut buf);
                        // Busy, then waiting: the other worker steals.
                        let start = Instant::now();
                        while start.elapsed() < Duration::from_micros(200) {
                            std::hint::spin_loop();
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    buf.iter().all(|&b| b == tag)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|ok| !ok)
            .count()
    });
    let migrations = runtime.stats().migrations;
    drop(runtime);
    let runtime = build();
    let seen = runtime.block_on(|| live_at_once(300, 0x99));
    let bad = seen.iter().filter(|(ok, _)| !ok).count();
    let mut at: Vec<usize> = seen.iter().map(|&(_, at)| at).collect();
    at.sort_unstable();
    at.dedup();
    println!("{migrations} migrations");
    assert_eq!(
        corrupted, 0,
        "migrated coroutines found their stack changed"
    );
    assert_eq!(
        (bad, seen.len() - at.len()),
        (0, 0),
        "after migrations: a slot lent twice"
    );
    assert!(
        migrations > 0,
        "no coroutine migrated: the probe did not exercise stealing"
    );
}

/// PROBE 15. A runtime dropped while coroutines on its pooled stacks are
/// parked (their stacks leaked on purpose: unwinding them could abort)
/// shuts down promptly, and the next runtime of that size gets stacks of
/// its own: its coroutines, all alive at once, never share a slot with
/// each other, and their buffers stay intact (a leaked coroutine's slot
/// must not be lent again, nor its chunk unmapped under it).
#[test]
fn probe_shutdown_with_parked_coroutines() {
    in_child("shutdown", Duration::from_secs(180), || {
        for round in 0..3u8 {
            let runtime = runtime_with(2, 64 * 1024);
            let parked_count = 500;
            let reached = Arc::new(Barrier::new(parked_count + 1));
            let handles = {
                let reached = reached.clone();
                runtime.block_on(move || {
                    (0..parked_count)
                        .map(|_| {
                            let reached = reached.clone();
                            coroutines::spawn(move || {
                                let mut buf = [0xeeu8; 2048];
                                std::hint::black_box(&mut buf);
                                reached.wait();
                                // Parked for good: nothing wakes it.
                                std::thread::sleep(Duration::from_secs(3600));
                            })
                        })
                        .collect::<Vec<_>>()
                })
            };
            reached.wait();
            let started = Instant::now();
            drop(runtime);
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "round {round}: dropping the runtime took {:?}",
                started.elapsed()
            );
            let abandoned = handles.into_iter().filter(|h| h.is_finished()).count();
            println!("round {round}: {abandoned} handles finished after shutdown");
            let next = runtime_with(2, 64 * 1024);
            let seen = next.block_on(move || live_at_once(800, round));
            let bad = seen.iter().filter(|(ok, _)| !ok).count();
            let mut at: Vec<usize> = seen.iter().map(|&(_, at)| at).collect();
            at.sort_unstable();
            at.dedup();
            assert_eq!((bad, seen.len() - at.len()), (0, 0), "round {round}");
        }
    });
}

/// PROBE 16. A process forked in a coroutine on a lent stack keeps that
/// stack's guard page: in the child, the page below the stack can still
/// not be read, and a write to it faults rather than landing in memory. (Guard markers in the page tables must survive the
/// fork; an `mprotect`ed guard page always did.)
#[test]
fn probe_fork_in_a_coroutine_keeps_the_guard_page() {
    let outcome = support::identity::on_runtime(
        coroutines::Runtime::builder()
            .workers(1)
            .thread_identity(true)
            .stack_size(64 * 1024),
        Duration::from_secs(60),
        |runtime| {
            runtime.block_on(|| {
                coroutines::spawn(|| {
                    let (low, _) = own_stack()?;
                    let guard = low - PAGE;
                    let in_parent = readable(guard);
                    let mut statuses = Vec::new();
                    for write in [false, true] {
                        // SAFETY: the child only reads its memory, touches
                        // the guard page and exits with _exit.
                        let pid = unsafe { libc::fork() };
                        if pid == 0 {
                            if write {
                                // SAFETY: the guard page: this must fault.
                                unsafe { std::ptr::write_volatile(guard as *mut u8, 1) };
                                // SAFETY: only reached if the write landed.
                                unsafe { libc::_exit(4) };
                            }
                            let code = if readable(guard) { 3 } else { 0 };
                            // SAFETY: ends the child at once.
                            unsafe { libc::_exit(code) };
                        }
                        let mut status = 0;
                        // SAFETY: waits for the child just forked.
                        unsafe { libc::waitpid(pid, &mut status, 0) };
                        statuses.push(status);
                    }
                    Some((in_parent, statuses))
                })
                .join()
                .unwrap()
            })
        },
    );
    let Some((in_parent, statuses)) = outcome else {
        panic!("glibc reported no stack for the coroutine");
    };
    assert!(!in_parent, "the guard page is readable in the parent");
    let (read, write) = (statuses[0], statuses[1]);
    assert!(
        libc::WIFEXITED(read) && libc::WEXITSTATUS(read) == 0,
        "in the forked child the guard page below the coroutine's stack is readable \
         (status {read:#x})"
    );
    // The fault ends the child one way or another (the runtime reports a
    // stack overflow and the child's coroutine ends, or SIGSEGV); only a
    // write that landed reaches `_exit(4)`.
    assert!(
        !(libc::WIFEXITED(write) && libc::WEXITSTATUS(write) == 4),
        "in the forked child a write to the guard page did not fault: it landed in memory"
    );
}

/// PROBE 17. `mlockall(MCL_CURRENT)` after the runtime lent stacks makes
/// them resident, as it made each stack mapping resident before: a parked
/// coroutine's whole stack is in memory once the process locked it (a
/// real-time program locks its memory so that nothing faults later).
#[test]
fn probe_mlockall_makes_lent_stacks_resident() {
    in_child("mlockall current", Duration::from_secs(120), || {
        let runtime = coroutines::Runtime::builder()
            .workers(1)
            .thread_identity(true)
            .stack_size(256 * 1024)
            .build()
            .unwrap();
        let reached = Arc::new(Barrier::new(9));
        let barrier = Arc::new(Barrier::new(9));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (reached, barrier) = (reached.clone(), barrier.clone());
                runtime.spawn(move || {
                    let stack = own_stack();
                    reached.wait();
                    barrier.wait();
                    stack
                })
            })
            .collect();
        reached.wait();
        // SAFETY: locks this (child) process's memory.
        let locked = unsafe { libc::mlockall(libc::MCL_CURRENT) };
        let error = std::io::Error::last_os_error();
        barrier.wait();
        let stacks: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(locked, 0, "mlockall(MCL_CURRENT) failed: {error}");
        let mut missing = Vec::new();
        for (low, size) in stacks.into_iter().flatten() {
            let absent = (low..low + size)
                .step_by(PAGE)
                .filter(|&page| !resident(page))
                .count();
            missing.push(absent);
        }
        assert!(!missing.is_empty(), "thread identity is off: no stack seen");
        println!("pages not resident per stack after mlockall: {missing:?}");
        assert!(
            missing.iter().all(|&m| m == 0),
            "after mlockall(MCL_CURRENT), lent stacks have pages that are not resident: \
             {missing:?} (of {} each)",
            256 * 1024 / PAGE
        );
    });
}

/// PROBE 18. A runtime whose default stack is small (16 KiB, the minimum)
/// runs ordinary std code on its lent stacks and reports an overflow as an
/// error, not a crash, with thread identity on and off; one whose default
/// is large (8 MiB) gives the pages its coroutines touched back once they
/// ended and it was dropped (a released 8 MiB slot is over the 4 MiB dirty
/// allowance by itself).
#[test]
fn probe_small_and_large_default_stacks() {
    if let Some(case) = child_case() {
        if case == "large" {
            fn use_6_mib() {
                let buf = [1u8; 6 << 20];
                std::hint::black_box(&buf);
            }
            let runtime = runtime_with(1, 8 << 20);
            runtime.block_on(|| ());
            let before = resident_kib();
            let (handles, barrier) = parked(&runtime, 12, None, use_6_mib);
            let peak = resident_kib();
            end(handles, barrier);
            drop(runtime);
            let after = resident_kib();
            println!("before {before} KiB, parked {peak} KiB, dropped {after} KiB");
            let grown = peak.saturating_sub(before);
            assert!(grown > 60 * 1024, "parked: only {grown} KiB more");
            assert!(
                after < before + 8 * 1024,
                "{} KiB stay resident",
                after - before
            );
            return;
        }
        let runtime = coroutines::Runtime::builder()
            .workers(2)
            .stack_size(16 * 1024)
            .thread_identity(case == "small on")
            .build()
            .unwrap();
        let (texts, overflows) = runtime.block_on(|| {
            let texts: Vec<_> = (0..300)
                .map(|i| {
                    coroutines::spawn(move || {
                        let text = format!("{i:>8} {:?}", std::thread::current().id());
                        let meta = std::fs::metadata("/proc/self/status").is_ok();
                        (text.len(), meta)
                    })
                })
                .collect();
            let texts: Vec<_> = texts.into_iter().map(|h| h.join().unwrap()).collect();
            let overflows: Vec<_> = (0..20)
                .map(|_| coroutines::spawn(|| support::recurse_deeply(100_000)).join())
                .collect();
            (texts, overflows)
        });
        assert!(texts.iter().all(|&(len, meta)| len > 8 && meta));
        for (i, result) in overflows.into_iter().enumerate() {
            let message = match result {
                Ok(v) => panic!("overflow {i} not caught: returned {v}"),
                Err(p) => p.downcast::<String>().map(|m| *m).unwrap_or_default(),
            };
            assert!(message.contains("overflowed"), "{i}: {message}");
        }
        return;
    }
    for case in ["small on", "small off", "large"] {
        run_child(case, child(case), Duration::from_secs(120));
    }
}

/// PROBE 19. Under an address-space limit, a runtime whose default stack
/// is 1 MiB fails to start more coroutines with an error (not a crash)
/// once the limit is reached, and once they ended and the runtime was
/// dropped, the user can map most of the headroom again: 96 MiB of
/// headroom, 64 MiB mapped afterwards.
#[test]
fn probe_rlimit_as_limit_reached_and_recovered() {
    in_child("rlimit fill", Duration::from_secs(120), || {
        let runtime = runtime_with(1, 1 << 20);
        runtime.block_on(|| ());
        let base = address_space_kib() * 1024;
        // The root coroutine of `block_on` (8 MiB) is in the headroom.
        set_address_space_limit(base + (96 << 20));
        let (started, failed) = runtime.block_on(|| {
            let mut handles = Vec::new();
            let mut failed = None;
            for _ in 0..200 {
                let handle = coroutines::spawn(|| {
                    let buf = [1u8; 256 * 1024];
                    std::hint::black_box(&buf);
                    std::thread::sleep(Duration::from_millis(300));
                });
                // Each spawn starts before the next one.
                coroutines::yield_now();
                if handle.is_finished() {
                    failed = Some(
                        handle
                            .join()
                            .map_err(|p| p.downcast::<String>().map(|m| *m).unwrap_or_default()),
                    );
                    break;
                }
                handles.push(handle);
            }
            let started = handles.len();
            handles.into_iter().for_each(|h| h.join().unwrap());
            (started, failed)
        });
        let during = address_space_kib();
        drop(runtime);
        let after = address_space_kib();
        println!(
            "{started} started, then {failed:?}; VmSize base {} KiB, at the limit {during} KiB, \
             dropped {after} KiB",
            base / 1024
        );
        assert!(
            started >= 40,
            "only {started} coroutines of 1 MiB in 96 MiB"
        );
        if let Err(error) = room_for(64 << 20) {
            panic!(
                "after the runtime was dropped, 64 MiB of the 96 MiB headroom could not be \
                 mapped ({error}): {} KiB still taken",
                after - base / 1024
            );
        }
    });
}

/// PROBE 20. Memory and address space come back after runtimes of many
/// different default stack sizes ran and were dropped: 24 runtimes, one
/// after the other, each with its own default size (64 KiB + i * 4 KiB),
/// each running 120 coroutines that touch 48 KiB of their stack. With each
/// stack unmapped when dropped, the process ends where it began. At 86a50e3
/// the arena kept, per size and with no bound on the number of sizes, up to 4 MiB
/// of released slots dirty and its newest chunk mapped, and never forgot
/// a size: ~350 MiB of address space stayed taken.
#[test]
fn probe_memory_comes_back_after_many_sizes() {
    in_child("many sizes", Duration::from_secs(180), || {
        #[inline(never)]
        fn use_48_kib() {
            let buf = [5u8; 48 * 1024];
            std::hint::black_box(&buf);
        }
        {
            let warm = runtime_with(1, 32 * 1024);
            warm.block_on(|| ());
        }
        let before = resident_kib();
        let base = address_space_kib();
        for i in 0..24 {
            let runtime = runtime_with(1, (64 + 4 * i) * 1024);
            let (handles, barrier) = parked(&runtime, 120, None, use_48_kib);
            end(handles, barrier);
            drop(runtime);
        }
        let after = resident_kib();
        let space = address_space_kib();
        println!(
            "RSS before {before} KiB, after 24 sizes {after} KiB; VmSize {base} -> {space} KiB"
        );
        assert!(
            after < before + 16 * 1024,
            "every runtime is gone but {} KiB more stay resident",
            after - before
        );
        assert!(
            space < base + 64 * 1024,
            "every runtime is gone but {} KiB more address space stays taken",
            space - base
        );
    });
}
