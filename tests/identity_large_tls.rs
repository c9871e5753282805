//! A program with a large static TLS area: a 512 KiB `thread_local!` buffer
//! makes every thread's static TLS bigger than the runtime copies per
//! coroutine (the limit is 256 KiB), so start-up verification fails and the
//! process falls back to shared identity, saying so once on stderr, and
//! everything that works without identities still works. The buffer is in
//! this test binary only: it changes the whole process.

mod support;

use std::cell::RefCell;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use support::child::{child_case, child_command, run_child};
use support::identity::joined;
use support::*;

thread_local! {
    /// Constant-initialised and without a destructor: it lives in static
    /// TLS (`.tbss`), 512 KiB of it per thread.
    static BIG: RefCell<[u8; 512 * 1024]> = const { RefCell::new([0; 512 * 1024]) };
}

/// The child's side of [`a_large_static_tls_falls_back_with_a_warning`].
fn child() {
    run(1, WATCHDOG, || {
        BIG.with(|b| b.borrow_mut()[12345] = 7);
        let other = coroutines::spawn(|| {
            // Shared identity: the worker's thread-locals.
            let seen = BIG.with(|b| b.borrow()[12345]);
            (thread::current().id(), seen)
        });
        let (id, seen) = joined(other);
        assert_eq!(id, thread::current().id(), "shared identity");
        assert_eq!(seen, 7, "the worker's BIG, shared");
        // A channel with a plain thread on the other side still works.
        let (tx, rx) = mpsc::channel();
        let sender = thread::spawn(move || {
            thread::sleep(Duration::from_millis(10));
            tx.send(5u8).unwrap();
        });
        assert_eq!(rx.recv().unwrap(), 5);
        sender.join().unwrap();
    });
    // Several runtimes: still one warning.
    run(2, WATCHDOG, || coroutines::spawn(|| ()).join().unwrap());
    println!("CHILD OK");
}

#[test]
fn a_large_static_tls_falls_back_with_a_warning() {
    match child_case().as_deref() {
        Some("large") => return child(),
        Some(_) => return,
        None => {}
    }
    let mut command = child_command("a_large_static_tls_falls_back_with_a_warning", "large");
    command
        .env("RUST_BACKTRACE", "0")
        .env_remove("COROUTINES_THREAD_IDENTITY");
    let output = run_child("large static TLS", command, Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.contains("CHILD OK"), "{stdout}\n{stderr}");
    let warnings: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("coroutines: thread identity is off ("))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning:\n{stderr}");
    assert!(
        warnings[0].contains("static thread-local storage (514 KiB)"),
        "the warning names the cause: {}",
        warnings[0]
    );
}
