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
