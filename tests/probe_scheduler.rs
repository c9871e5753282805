//! Attack probes on the scheduler: the blocked-worker monitor
//! (`scheduler/monitor.rs`) and admission for stacks
//! (`scheduler/admission.rs`). Each failing probe is ignored with its
//! finding.

mod support;

use std::time::Duration;

use support::child::*;
use support::compute;
use support::differential::*;

/// A party that has started and sleeps 50 ms, while its spawner computes
/// for 1.5 s, on a runtime of two workers (one of them free): a thread's
/// sleep ends on time. In a coroutine the sleeper parked on the computing
/// coroutine's worker, whose timers nobody fires while it computes, and
/// the monitor moves only *queued* coroutines.
#[test]
fn sleeper_on_a_busy_worker_wakes_on_time() {
    let got = differential_monitored(2, "sleep beside a computing spawner", |side| {
        let sleeper = side.spawn(|| timed_span(|| std::thread::sleep(Duration::from_millis(50))).1);
        // Lets the sleeper start and park (a coroutine sleeps here too).
        std::thread::sleep(Duration::from_millis(10));
        compute(Duration::from_millis(1500));
        sleeper.join()
    });
    assert_eq!(got, Span::AtOnce);
}

/// As above, for a coroutine parked in a read: the peer (a plain thread)
/// writes 50 ms in.
#[test]
fn reader_on_a_busy_worker_wakes_when_data_arrives() {
    use std::io::{Read, Write};
    let got = differential_monitored(2, "read beside a computing spawner", |side| {
        let (mut reader, mut writer) = std::io::pipe().unwrap();
        let reader = side.spawn(move || {
            timed_span(|| {
                let mut buf = [0u8; 4];
                reader.read(&mut buf).unwrap()
            })
        });
        std::thread::sleep(Duration::from_millis(10));
        let peer = support::after(Duration::from_millis(50), move || {
            writer.write_all(b"late").unwrap();
            writer
        });
        compute(Duration::from_millis(1500));
        let read = reader.join();
        drop(peer.join().unwrap());
        read
    });
    assert_eq!(got, (4, Span::AtOnce));
}

const NESTED_CHILD: &str = "nested admission";
/// 1 MiB stacks in a 768 MiB address space (as `stack_limit.rs`): a few
/// hundred fit.
const STACK: usize = 1 << 20;
const ADDRESS_SPACE: u64 = 768 << 20;

/// Under an address-space limit, 1000 coroutines each spawn one child and
/// join it. With threads, spawns past the limit fail (an error the program
/// sees); here the parents hold every stack and their children wait for
/// one that no end will free: once the runtime is idle, the waiting
/// children fail through `join`, and everything ends.
#[test]
fn nested_spawns_past_the_stack_limit_finish_or_fail() {
    if child_case().as_deref() == Some(NESTED_CHILD) {
        return nested_child();
    }
    let child = rerun(NESTED_CHILD).spawn().unwrap();
    let (output, ended) = wait_bounded(child, Duration::from_secs(20));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        ended && stdout.contains("NESTED DONE"),
        "the child did not finish within 20 s (ended by itself: {ended});\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

fn nested_child() {
    let limit = libc::rlimit {
        rlim_cur: ADDRESS_SPACE,
        rlim_max: ADDRESS_SPACE,
    };
    // SAFETY: setrlimit reads one rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
    let runtime = coroutines::Runtime::builder()
        .workers(1)
        .stack_size(STACK)
        .build()
        .unwrap();
    let (ok, failed) = runtime.block_on(|| {
        let parents: Vec<_> = (0..1000)
            .map(|_| {
                coroutines::spawn(|| {
                    let child = coroutines::spawn(|| std::thread::sleep(Duration::from_millis(10)));
                    std::thread::sleep(Duration::from_millis(10));
                    child.join().is_ok()
                })
            })
            .collect();
        let results: Vec<bool> = parents
            .into_iter()
            .map(|p| p.join().unwrap_or(false))
            .collect();
        let ok = results.iter().filter(|&&r| r).count();
        (ok, results.len() - ok)
    });
    println!(
        "NESTED DONE: {ok} ok, {failed} failed; {:?}",
        runtime.stats()
    );
}
