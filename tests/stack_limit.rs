//! Running out of room for stacks is a clear error, never an abort or a
//! hang. The test re-runs itself in a child process with a small address
//! space limit, so mapping a stack fails there for real.

use std::process::Command;
use std::time::Duration;

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
    let (ran, failures) = runtime.block_on(|| {
        let handles: Vec<_> = (0..1000)
            .filter_map(|_| {
                coroutines::Builder::new()
                    .spawn(|| std::thread::sleep(Duration::from_millis(300)))
                    .ok()
            })
            .collect();
        let mut ran = 0;
        let mut failures = Vec::new();
        for handle in handles {
            match handle.join() {
                Ok(()) => ran += 1,
                Err(payload) => failures.push(*payload.downcast::<String>().unwrap()),
            }
        }
        (ran, failures)
    });
    assert!(ran > 50, "only {ran} coroutines got a stack");
    assert!(!failures.is_empty(), "every coroutine got a stack");
    assert!(
        failures[0].contains("could not map a 1024 KiB coroutine stack")
            && failures[0].contains("vm.max_map_count"),
        "unclear error: {}",
        failures[0]
    );
    // The runtime keeps working once stacks are free again.
    assert_eq!(
        runtime.block_on(|| coroutines::spawn(|| 7).join().unwrap()),
        7
    );
    println!(
        "CHILD OK: {ran} ran, {} failed: {}",
        failures.len(),
        failures[0]
    );
}
