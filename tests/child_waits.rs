//! Waiting for child processes parks the coroutine: `Command::status`,
//! `Child::wait`, `waitpid`/`wait`/`waitid` for one child (on a pidfd) or
//! for any child (on the blocking pool) let the worker run other
//! coroutines meanwhile, and report what they report on a plain thread.
//!
//! A wait for any child reaps whichever child ends first, so the tests in
//! this file take turns ([`serial`]) and reap every child they start.

mod support;

use support::serial;

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use support::differential::{differential, outcome, Errno};
use support::*;

/// How long each child lives.
const CHILD_LIFE: Duration = Duration::from_millis(300);

/// A shell that lives [`CHILD_LIFE`] and exits with `code`.
fn exits_later(code: i32) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", &format!("sleep 0.3; exit {code}")]);
    command
}

/// Starts `command`; the caller reaps the child with a raw wait.
#[allow(clippy::zombie_processes)] // std's `Child` would not see the raw wait
fn start(mut command: Command) -> libc::pid_t {
    command.spawn().unwrap().id() as libc::pid_t
}

/// `waitpid(pid, options)` as `(result, status)`, or the errno.
fn waitpid(pid: libc::pid_t, options: libc::c_int) -> Result<(i64, i32), Errno> {
    let mut status = 0;
    // SAFETY: `status` is a live int.
    let ret = unsafe { libc::waitpid(pid, &mut status, options) };
    outcome(match ret {
        -1 => Err(std::io::Error::last_os_error()),
        pid => Ok((pid as i64, status)),
    })
}

/// Ten `Command::status` calls, in ten coroutines of one worker, wait for
/// their children side by side and get each its own exit code.
#[test]
fn command_status_in_ten_coroutines_overlaps() {
    let _serial = serial();
    on_one_worker("Command::status x10", || {
        let ticker = Ticker::start();
        let (codes, elapsed, ticks) = ticker.during(|| {
            let waits: Vec<_> = (0..10)
                .map(|code| coroutines::spawn(move || exits_later(code).status().unwrap().code()))
                .collect();
            waits
                .into_iter()
                .map(|w| w.join().unwrap())
                .collect::<Vec<_>>()
        });
        println!("ten Command::status: {elapsed:?}, {ticks} ticks");
        assert_eq!(codes, (0..10).map(Some).collect::<Vec<_>>());
        // One after the other: 3 s.
        assert!(
            elapsed < Duration::from_millis(1500),
            "ten children of {CHILD_LIFE:?} took {elapsed:?}: the waits did not overlap"
        );
        assert_ticked(ticks);
    });
}

/// `Child::wait` in ten coroutines of one worker: the same.
#[test]
fn child_wait_in_ten_coroutines_overlaps() {
    let _serial = serial();
    on_one_worker("Child::wait x10", || {
        let ticker = Ticker::start();
        let children: Vec<Child> = (0..10)
            .map(|code| exits_later(code).spawn().unwrap())
            .collect();
        let (codes, elapsed, ticks) = ticker.during(|| {
            let waits: Vec<_> = children
                .into_iter()
                .map(|mut child| coroutines::spawn(move || child.wait().unwrap().code()))
                .collect();
            waits
                .into_iter()
                .map(|w| w.join().unwrap())
                .collect::<Vec<_>>()
        });
        println!("ten Child::wait: {elapsed:?}, {ticks} ticks");
        assert_eq!(codes, (0..10).map(Some).collect::<Vec<_>>());
        assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
        assert_ticked(ticks);
    });
}

/// `waitpid(-1)`, `wait` and `waitid(P_ALL)` in a coroutine park while the
/// ticker ticks, and return the pid and status of the child that ended.
#[test]
fn waits_for_any_child_park_and_report_the_child() {
    let _serial = serial();
    on_one_worker("wait for any child", || {
        let ticker = Ticker::start();

        let child = start(exits_later(7));
        let (result, elapsed, ticks) = ticker.during(|| waitpid(-1, 0));
        let (pid, status) = result.unwrap();
        assert_eq!(pid, child as i64);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 7);
        assert_parked("waitpid(-1)", elapsed, ticks);

        let child = start(exits_later(8));
        let mut status = 0;
        // SAFETY: `status` is a live int.
        let (pid, elapsed, ticks) = ticker.during(|| unsafe { libc::wait(&mut status) });
        assert_eq!(pid, child);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 8);
        assert_parked("wait", elapsed, ticks);

        let child = start(exits_later(9));
        // SAFETY: an all-zero siginfo_t is valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let (ret, elapsed, ticks) =
            // SAFETY: `info` is a live siginfo_t.
            ticker.during(|| unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED) });
        assert_eq!(ret, 0);
        // SAFETY: waitid filled `info` in for an exited child.
        let (pid, code) = unsafe { (info.si_pid(), info.si_status()) };
        assert_eq!((pid, code), (child, 9));
        assert_parked("waitid(P_ALL)", elapsed, ticks);

        // A process group: this process's own (the children inherit it).
        let child = start(exits_later(10));
        let (result, elapsed, ticks) = ticker.during(|| waitpid(0, 0));
        assert_eq!(result.unwrap().0, child as i64);
        assert_parked("waitpid(0)", elapsed, ticks);
    });
}

/// `waitid` for one child, by pid and by pidfd, parks and reports it.
#[test]
fn waitid_for_one_child_parks() {
    let _serial = serial();
    on_one_worker("waitid(P_PID / P_PIDFD)", || {
        let ticker = Ticker::start();
        // SAFETY: an all-zero siginfo_t is valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };

        let child = start(exits_later(3));
        let (ret, elapsed, ticks) = ticker.during(|| {
            // SAFETY: `info` is a live siginfo_t.
            unsafe { libc::waitid(libc::P_PID, child as libc::id_t, &mut info, libc::WEXITED) }
        });
        assert_eq!(ret, 0);
        // SAFETY: waitid filled `info` in.
        assert_eq!(unsafe { (info.si_pid(), info.si_status()) }, (child, 3));
        assert_parked("waitid(P_PID)", elapsed, ticks);

        let child = start(exits_later(4));
        // SAFETY: plain system call.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child, 0) } as i32;
        assert!(
            pidfd >= 0,
            "pidfd_open: {}",
            std::io::Error::last_os_error()
        );
        let (ret, elapsed, ticks) = ticker.during(|| {
            // SAFETY: `info` is a live siginfo_t.
            unsafe { libc::waitid(libc::P_PIDFD, pidfd as u32, &mut info, libc::WEXITED) }
        });
        assert_eq!(ret, 0);
        // SAFETY: waitid filled `info` in.
        assert_eq!(unsafe { (info.si_pid(), info.si_status()) }, (child, 4));
        assert_parked("waitid(P_PIDFD)", elapsed, ticks);
        // SAFETY: this test's own descriptor.
        unsafe { libc::close(pidfd) };
    });
}

/// `WNOHANG` returns 0 at once while the children still run, for one
/// child and for any.
#[test]
fn wnohang_returns_at_once_while_children_run() {
    let _serial = serial();
    on_one_worker("WNOHANG", || {
        let mut child = exits_later(0).spawn().unwrap();
        let pid = child.id() as libc::pid_t;
        for target in [pid, -1] {
            let start = Instant::now();
            let result = waitpid(target, libc::WNOHANG);
            let elapsed = start.elapsed();
            assert_eq!(result, Ok((0, 0)), "waitpid({target}, WNOHANG)");
            assert_prompt("waitpid WNOHANG", elapsed);
        }
        assert_eq!(child.try_wait().unwrap(), None);
        assert!(child.wait().unwrap().success());
    });
}

/// A stopped child is reported to `waitpid(pid, WUNTRACED)` in a coroutine
/// (a pidfd does not report stops, so this wait runs on the pool) while
/// the ticker ticks.
#[test]
fn wuntraced_reports_a_stopped_child() {
    let _serial = serial();
    on_one_worker("WUNTRACED", || {
        let ticker = Ticker::start();
        let mut child = Command::new("sleep").arg("10").spawn().unwrap();
        let pid = child.id() as libc::pid_t;
        let stopper = after(WAIT, move || {
            // SAFETY: signalling this test's own child.
            unsafe { libc::kill(pid, libc::SIGSTOP) }
        });
        let (result, elapsed, ticks) = ticker.during(|| waitpid(pid, libc::WUNTRACED));
        assert_eq!(stopper.join().unwrap(), 0);
        let (got, status) = result.unwrap();
        assert_eq!(got, pid as i64);
        assert!(libc::WIFSTOPPED(status) && libc::WSTOPSIG(status) == libc::SIGSTOP);
        assert_parked("waitpid(WUNTRACED)", elapsed, ticks);
        child.kill().unwrap();
        let status: ExitStatus = child.wait().unwrap();
        assert!(!status.success());
    });
}

/// With no children, every wait fails with ECHILD at once, as on a plain
/// thread.
#[test]
fn waits_without_children_fail_as_on_a_thread() {
    let _serial = serial();
    let results = differential("waits without children", |_| {
        let mut status = 0;
        // SAFETY: `status` and `info` are live.
        let wait = unsafe { libc::wait(&mut status) };
        let wait = (wait, errno());
        // SAFETY: an all-zero siginfo_t is valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a live siginfo_t.
        let waitid = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED) };
        let waitid = (waitid, errno());
        let (outcomes, timing) = support::differential::timed(|| {
            [
                waitpid(-1, 0),
                waitpid(0, 0),
                waitpid(-1, libc::WNOHANG),
                // init: a process, but not a child.
                waitpid(1, 0),
                waitpid(1, libc::WUNTRACED),
            ]
        });
        (wait, waitid, outcomes, timing)
    });
    assert_eq!(results.0, (-1, libc::ECHILD));
    assert_eq!(results.1, (-1, libc::ECHILD));
    assert!(
        results.2.iter().all(|r| *r == Err(Errno(libc::ECHILD))),
        "{results:?}"
    );
}
