//! Child processes: a test re-runs its own binary, running only itself,
//! to act out a case whose effects are process-wide or seen only from
//! outside (an exit, stderr, the environment, signals, a namespace); and
//! [`start`], a shell child that the test reaps itself.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The environment variable that tells a re-run test binary which child
/// case to act out.
pub const CHILD_CASE: &str = "COROUTINES_TEST_CHILD";

/// The child case this process acts out, if it is a child.
pub fn child_case() -> Option<String> {
    std::env::var(CHILD_CASE).ok()
}

/// A command that re-runs this test binary, running only `test` (which
/// must act out `case` when [`child_case`] says so), with its output
/// piped. The caller may add environment and runs it.
pub fn child_command(test: &str, case: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_CASE, case)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// [`child_command`] for the calling test, found by its thread's name:
/// call it from the test's own thread.
pub fn rerun(case: &str) -> Command {
    let test = thread::current()
        .name()
        .expect("rerun: call it from the test's own thread")
        .to_owned();
    child_command(&test, case)
}

/// Starts `sh -c script`; the caller reaps the child with a raw wait.
#[allow(clippy::zombie_processes)] // std's `Child` would not see the raw wait
pub fn start(script: &str) -> libc::pid_t {
    Command::new("sh")
        .args(["-c", script])
        .spawn()
        .unwrap()
        .id() as libc::pid_t
}

/// Waits for `child` for up to `limit`, then kills it; its output, and
/// whether it ended by itself.
pub fn wait_bounded(mut child: Child, limit: Duration) -> (Output, bool) {
    // Both pipes are read meanwhile, so that a chatty child cannot fill
    // one and stall.
    let stdout = child.stdout.take().map(read_in_background);
    let stderr = child.stderr.take().map(read_in_background);
    let start = Instant::now();
    let mut ended = false;
    while start.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            ended = true;
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    let collect = |reader: Option<thread::JoinHandle<Vec<u8>>>| {
        reader.map_or_else(Vec::new, |r| r.join().unwrap())
    };
    let output = Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    };
    (output, ended)
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Runs `command` to completion within `limit`, failing the test if it
/// takes longer; its output, whatever its exit status.
#[track_caller]
pub fn finish_child(what: &str, mut command: Command, limit: Duration) -> Output {
    let (output, ended) = wait_bounded(command.spawn().unwrap(), limit);
    assert!(
        ended,
        "{what}: the child process did not finish within {limit:?}; stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Asserts that a finished child exited 0 and printed a line `ok`; else
/// fails with its stdout and the first 30 lines of its stderr, backtrace
/// frames left out. Its stdout is printed either way.
#[track_caller]
pub fn assert_said_ok(output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success() && stdout.contains("\nok"),
        "child {}:\n--- stdout\n{stdout}\n--- stderr\n{}",
        output.status,
        stderr
            .lines()
            .filter(|l| !l.starts_with("   "))
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
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

/// Runs the calling test's child `case` (see [`rerun`]) with `env` added,
/// for up to 90 s, and fails the test unless the child kept thread
/// identity, printed `ok` and exited 0; a child that prints `SKIPPED` is
/// let be. The child's lines starting with `INFO` are passed on.
pub fn run_case(case: &str, env: &[(&str, &std::path::Path)], ok: &str) {
    let mut command = rerun(case);
    for (name, value) in env {
        command.env(name, value);
    }
    command.env("RUST_BACKTRACE", "0");
    let (out, ended) = wait_bounded(command.spawn().unwrap(), Duration::from_secs(90));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("thread identity is off"),
        "{case}: the child runs without thread identity:\n{stderr}"
    );
    if stdout.contains("SKIPPED") {
        eprintln!("{case}: skipped: {stdout}");
        return;
    }
    for line in stdout.lines().filter(|line| line.starts_with("INFO")) {
        eprintln!("{case}: {line}");
    }
    assert!(
        ended && out.status.success() && stdout.contains(ok),
        "{case}: ended {ended}, {}\n--stdout--\n{stdout}\n--stderr--\n{stderr}",
        out.status
    );
}

/// Ends a child case of [`run_case`]: fails with `failures`, one per line,
/// or prints `PROBE OK`.
pub fn finish(failures: Vec<String>) {
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!("PROBE OK");
}
