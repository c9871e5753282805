//! `std::process` inside a coroutine: `Command::output()` reads the child's
//! pipes with `poll` and `read`, which park, so other coroutines of the
//! worker run while the child works. (The final `waitpid` is not hooked; it
//! returns at once here because the child has exited when its pipes close.)

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

/// How long the children sleep.
const CHILD_SLEEP: Duration = Duration::from_millis(300);

fn slow_echo() -> Command {
    let mut command = Command::new("sh");
    command.arg("-c").arg("sleep 0.3; echo hi; echo err >&2");
    command
}

#[test]
fn output_lets_other_coroutines_run() {
    on_one_worker("Command::output", || {
        let ticker = Ticker::start();
        let (output, elapsed, ticks) = ticker.during(|| slow_echo().output().unwrap());
        assert!(output.status.success(), "{output:?}");
        assert_eq!(String::from_utf8_lossy(&output.stdout), "hi\n");
        assert_eq!(String::from_utf8_lossy(&output.stderr), "err\n");
        assert!(elapsed >= CHILD_SLEEP, "took {elapsed:?}");
        // ~300 ticks if the pipes were read in parked coroutine waits.
        assert!(
            ticks >= 100,
            "the ticker ticked {ticks} times in {elapsed:?}: output() blocked the worker"
        );
    });
}

#[test]
fn two_outputs_on_one_worker_overlap() {
    on_one_worker("two Command::output", || {
        let ticker = Ticker::start();
        let (outputs, elapsed, _) = ticker.during(|| {
            let other = coroutines::spawn(|| slow_echo().output().unwrap());
            let mine = slow_echo().output().unwrap();
            [mine, other.join().unwrap()]
        });
        for output in &outputs {
            assert_eq!(String::from_utf8_lossy(&output.stdout), "hi\n");
        }
        assert!(
            elapsed < CHILD_SLEEP * 2 - Duration::from_millis(50),
            "two 300 ms children took {elapsed:?}: they ran one after the other"
        );
    });
}

#[test]
fn reading_a_spawned_childs_stdout_parks() {
    on_one_worker("ChildStdout read", || {
        let ticker = Ticker::start();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("sleep 0.3; echo late")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut text = String::new();
        let (_, elapsed, ticks) = ticker.during(|| stdout.read_to_string(&mut text).unwrap());
        assert_eq!(text, "late\n");
        assert!(
            elapsed >= CHILD_SLEEP - Duration::from_millis(50),
            "took {elapsed:?}"
        );
        assert!(
            ticks >= 100,
            "the ticker ticked {ticks} times in {elapsed:?}"
        );
        assert!(child.wait().unwrap().success());
    });
}
