//! Children forked from a coroutine (std forks instead of using
//! `posix_spawn` when a `pre_exec` hook is set) run the hooked `dup2` and
//! `close` between fork and exec. Those must not take locks that another
//! thread of the parent may have held at the fork, or the child hangs.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn children_forked_while_other_coroutines_do_io_all_exit() {
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = coroutines::Runtime::builder().workers(2).build().unwrap();
        runtime.block_on(|| {
            // Keeps descriptor entries busy on the other worker meanwhile.
            let (mut a, mut b) = UnixStream::pair().unwrap();
            let echo = coroutines::spawn(move || {
                let mut byte = [0u8];
                while b.read_exact(&mut byte).is_ok() {
                    b.write_all(&byte).unwrap();
                }
            });
            let children = coroutines::spawn(|| {
                for _ in 0..50 {
                    let mut command = Command::new("true");
                    command.stdin(Stdio::null()).stdout(Stdio::piped());
                    // SAFETY: the hook does nothing, which is async-signal-safe.
                    unsafe { command.pre_exec(|| Ok(())) };
                    let status = command.output().unwrap().status;
                    assert!(status.success());
                }
            });
            for _ in 0..2000 {
                a.write_all(b"x").unwrap();
                a.read_exact(&mut [0u8]).unwrap();
            }
            children.join().unwrap();
            drop(a);
            echo.join().unwrap();
        });
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("forked children or the echo did not finish within 60 s");
}
