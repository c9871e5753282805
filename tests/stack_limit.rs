//! Running out of room for stacks never loses a coroutine: past the limit
//! new coroutines wait for running ones to free a stack (reported once on
//! stderr, counted, shown by a dump), and one that no end could make room
//! for fails through `join` with a clear error. The test re-runs itself in
//! a child process with a small address space limit, so mapping a stack
//! fails there for real.

use std::process::Command;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "COROUTINES_STACK_LIMIT_CHILD";
/// 1 MiB stacks in a 768 MiB address space: a few hundred fit, a thousand do
/// not.
const STACK: usize = 1 << 20;
const ADDRESS_SPACE: u64 = 768 << 20;

#[test]
fn stack_allocation_failure_is_reported_through_join() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child();
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "stack_allocation_failure_is_reported_through_join",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("CHILD OK"),
        "child did not finish:\n{stdout}\n{stderr}"
    );
    let warnings = stderr.matches("wait for running coroutines to end").count();
    assert!(warnings >= 1, "no warning on stderr:\n{stderr}");
    assert!(
        warnings <= 3,
        "a warning per coroutine, not per incident:\n{stderr}"
    );
    assert!(
        stderr.contains("address space (ulimit -v) ran out"),
        "{stderr}"
    );
}

fn child() {
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
    let started = Instant::now();
    let (ran, dump) = runtime.block_on(move || {
        let handles: Vec<_> = (0..1000)
            .map(|_| coroutines::spawn(|| std::thread::sleep(Duration::from_millis(100))))
            .collect();
        // Until the worker has started all it can and the rest wait.
        while coroutines::stats().stack_waits == 0 && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(2));
        }
        let dump = coroutines::dump().to_string();
        let ran = handles
            .into_iter()
            .map(|h| h.join())
            .filter(Result::is_ok)
            .count();
        (ran, dump)
    });
    let took = started.elapsed();
    assert_eq!(ran, 1000, "every coroutine ran");
    assert!(
        took < Duration::from_secs(10),
        "waves of 100 ms took {took:?}"
    );
    assert!(dump.contains("waiting for a stack"), "{dump}");
    let stats = runtime.stats();
    assert!(stats.stack_waits > 0, "{stats:?}");
    assert_eq!(stats.failed_to_start, 0, "{stats:?}");

    // More stack than every running coroutine holds: waiting cannot help.
    let failure = runtime.block_on(|| {
        coroutines::Builder::new()
            .stack_size(ADDRESS_SPACE as usize)
            .spawn(|| ())
            .unwrap()
            .join()
            .unwrap_err()
    });
    let failure = failure.downcast::<String>().unwrap();
    assert!(
        failure.contains("could not map a 768 MiB coroutine stack"),
        "unclear error: {failure}"
    );
    assert_eq!(runtime.stats().failed_to_start, 1);
    println!(
        "CHILD OK: {ran} ran in {took:?}, {} waited",
        stats.stack_waits
    );
}
