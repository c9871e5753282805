//! Child processes: a test re-runs its own binary to act out a case whose
//! effects are process-wide (an exit, stderr, the environment, signals).

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// The environment variable that tells a re-run test binary which child
/// case to act out.
pub const CHILD_CASE: &str = "COROUTINES_TEST_CHILD";

/// The child case this process acts out, if it is a child.
pub fn child_case() -> Option<String> {
    std::env::var(CHILD_CASE).ok()
}

/// A command that re-runs this test binary, running only `test` (which
/// must act out `case` when [`child_case`] says so). The caller adds
/// environment and stdio and runs it.
pub fn child_command(test: &str, case: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_CASE, case);
    command
}

/// Runs `command` (from [`child_command`]) to completion within `limit`,
/// killing it and failing the test if it takes longer; returns its output,
/// whatever its exit status.
#[track_caller]
pub fn finish_child(what: &str, mut command: Command, limit: Duration) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(limit) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            // SAFETY: `pid` is our own child, not yet reaped (its waiter
            // has not returned).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("{what}: the child process did not finish within {limit:?}");
        }
    }
}

/// As [`finish_child`], and asserts that the child succeeded.
#[track_caller]
pub fn run_child(what: &str, command: Command, limit: Duration) -> Output {
    let output = finish_child(what, command, limit);
    assert!(
        output.status.success(),
        "{what}: the child failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
