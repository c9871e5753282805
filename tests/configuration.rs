//! Where the worker count comes from: explicit configuration, then
//! `COROUTINES_WORKERS`, then the CPU count; and configuring the
//! process-wide runtime once it runs is an error that says so. The
//! environment is process-wide, so each case runs in a child process.

use std::process::Command;

const CASE: &str = "COROUTINES_CONFIGURATION_CASE";

/// Runs this test binary again, running only `test` with `case` and the
/// environment variable set to `workers`; returns the child's stdout.
fn child(test: &str, case: &str, workers: &str) -> String {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CASE, case)
        .env("COROUTINES_WORKERS", workers)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "child {case} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn environment_variable_sets_the_default_worker_count() {
    match std::env::var(CASE).as_deref() {
        Ok("env") => {
            let workers = coroutines::spawn(|| coroutines::stats().workers)
                .join()
                .unwrap();
            assert_eq!(workers, 3, "process-wide runtime");
            let runtime = coroutines::Runtime::builder().build().unwrap();
            assert_eq!(runtime.workers(), 3, "built runtime");
            let explicit = coroutines::Runtime::builder().workers(1).build().unwrap();
            assert_eq!(explicit.workers(), 1, "explicit configuration wins");
            println!("CHILD OK");
        }
        Ok(_) => {}
        Err(_) => {
            let out = child(
                "environment_variable_sets_the_default_worker_count",
                "env",
                "3",
            );
            assert!(out.contains("CHILD OK"), "{out}");
        }
    }
}

#[test]
fn an_invalid_environment_variable_is_a_clear_error() {
    match std::env::var(CASE).as_deref() {
        Ok("invalid") => {
            let error = coroutines::Runtime::builder().build().err().unwrap();
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
            assert!(error.to_string().contains("COROUTINES_WORKERS"), "{error}");
            assert!(error.to_string().contains("\"many\""), "{error}");
            // An explicit count does not consult the variable.
            assert!(coroutines::Runtime::builder().workers(2).build().is_ok());
            println!("CHILD OK");
        }
        Ok(_) => {}
        Err(_) => {
            let out = child(
                "an_invalid_environment_variable_is_a_clear_error",
                "invalid",
                "many",
            );
            assert!(out.contains("CHILD OK"), "{out}");
        }
    }
}

#[test]
fn configuring_the_running_process_wide_runtime_is_an_error() {
    match std::env::var(CASE).as_deref() {
        Ok("late") => {
            coroutines::spawn(|| ()).join().unwrap();
            let error = coroutines::Runtime::builder()
                .workers(2)
                .start_default()
                .unwrap_err();
            assert!(error.to_string().contains("already started"), "{error}");
            println!("CHILD OK");
        }
        Ok(_) => {}
        Err(_) => {
            let out = child(
                "configuring_the_running_process_wide_runtime_is_an_error",
                "late",
                "2",
            );
            assert!(out.contains("CHILD OK"), "{out}");
        }
    }
}

/// With `COROUTINES_WORKERS=0`, spawning outside a runtime returns the
/// error from `Builder::spawn` (and `spawn` panics with it), as documented.
#[test]
fn a_default_runtime_that_cannot_start_is_an_error_from_spawn() {
    match std::env::var(CASE).as_deref() {
        Ok("zero") => {
            let error = coroutines::Builder::new().spawn(|| ()).unwrap_err();
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
            let text = error.to_string();
            assert!(text.contains("COROUTINES_WORKERS"), "{text}");
            println!("CHILD OK");
        }
        Ok(_) => {}
        Err(_) => {
            let out = child(
                "a_default_runtime_that_cannot_start_is_an_error_from_spawn",
                "zero",
                "0",
            );
            assert!(out.contains("CHILD OK"), "{out}");
        }
    }
}

/// Too many workers for the descriptor limit: the error says how many were
/// asked for and what to change, not only "Too many open files".
#[test]
fn too_many_workers_say_what_failed_and_why() {
    match std::env::var(CASE).as_deref() {
        Ok("many") => {
            let limit = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            // SAFETY: sets this child process's own descriptor limit.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
            let error = coroutines::Runtime::builder().build().err().unwrap();
            let text = error.to_string();
            assert!(text.contains("a runtime of 100 workers"), "{text}");
            assert!(text.contains("ulimit -n"), "{text}");
            println!("CHILD OK");
        }
        Ok(_) => {}
        Err(_) => {
            let out = child("too_many_workers_say_what_failed_and_why", "many", "100");
            assert!(out.contains("CHILD OK"), "{out}");
        }
    }
}

/// Stack sizes outside 16 KiB..=1 GiB are refused where they are set, with
/// the bounds in the message.
#[test]
fn stack_sizes_are_checked_where_they_are_set() {
    let bounds = "between 16 KiB and 1 GiB";
    for bytes in [100, 1 << 40] {
        let error = coroutines::Builder::new()
            .stack_size(bytes)
            .spawn(|| ())
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains(bounds), "{error}");
        let error = coroutines::Runtime::builder()
            .workers(1)
            .stack_size(bytes)
            .build()
            .err()
            .unwrap();
        assert!(error.to_string().contains(bounds), "{error}");
        let error = coroutines::Runtime::builder()
            .workers(1)
            .main_stack_size(bytes)
            .build()
            .err()
            .unwrap();
        assert!(error.to_string().contains(bounds), "{error}");
    }
}

/// The process-wide runtime's "already started" error counts its workers
/// in proper English.
#[test]
fn one_worker_is_not_one_workers() {
    match std::env::var(CASE).as_deref() {
        Ok("one") => {
            coroutines::spawn(|| ()).join().unwrap();
            let error = coroutines::Runtime::builder().start_default().unwrap_err();
            assert!(error.to_string().contains("(with 1 worker)"), "{error}");
            println!("CHILD OK");
        }
        Ok(_) => {}
        Err(_) => {
            let out = child("one_worker_is_not_one_workers", "one", "1");
            assert!(out.contains("CHILD OK"), "{out}");
        }
    }
}

/// A runtime `#[coroutines::test]` cannot start panics at the attribute,
/// in the user's file, not inside the `coroutines` crate.
#[coroutines::test]
fn a_macro_runtime_that_cannot_start_points_at_the_attribute() {
    // Runs only in the parent: the child's runtime never starts.
    let test = "a_macro_runtime_that_cannot_start_points_at_the_attribute";
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("COROUTINES_WORKERS", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("#[coroutines::test]: "), "{stderr}");
    assert!(
        stderr.contains("panicked at tests/configuration.rs:"),
        "{stderr}"
    );
}
