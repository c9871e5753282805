//! A coroutine that overflows its stack fails alone: its join handle gets
//! an error naming it, and the runtime keeps running others.

mod support;

use std::time::Duration;

use support::child::{child_case, child_command, finish_child};
use support::recurse_deeply;

#[test]
fn an_overflow_is_reported_through_join_by_name() {
    let runtime = coroutines::Runtime::builder().workers(1).build().unwrap();
    let (message, after) = runtime.block_on(|| {
        let deep = coroutines::Builder::new()
            .name("deep".into())
            .stack_size(64 * 1024)
            .spawn(|| recurse_deeply(1_000_000))
            .unwrap();
        let payload = deep.join().unwrap_err();
        let message = payload.downcast::<String>().map(|m| *m);
        (message, coroutines::spawn(|| 5).join().unwrap())
    });
    let message = message.expect("the payload is a String");
    assert!(
        message.contains("coroutine 'deep' (") && message.contains(") overflowed its 64 KiB stack"),
        "{message}"
    );
    assert_eq!(after, 5, "the runtime keeps working");
}

/// The body of `#[coroutines::test]` (and `#[coroutines::main]`) runs on a
/// stack as large as the main thread's, not the 64 KiB of other coroutines.
#[coroutines::test(workers = 1)]
fn the_root_coroutine_has_a_main_thread_sized_stack() {
    let local = std::hint::black_box([7u8; 1 << 20]);
    assert_eq!(local.iter().map(|&b| b as usize).sum::<usize>(), 7 << 20);
    let other = coroutines::spawn(|| recurse_deeply(1_000_000)).join();
    assert!(other.is_err(), "other coroutines keep the smaller default");
}

/// An overflow of `block_on`'s coroutine is reported on stderr, naming it
/// and the setting that raises its stack.
#[test]
fn a_root_overflow_names_main_stack_size() {
    if child_case().is_some() {
        let runtime = coroutines::Runtime::builder()
            .workers(1)
            .main_stack_size(64 * 1024)
            .build()
            .unwrap();
        runtime.block_on(|| recurse_deeply(1_000_000));
        return;
    }
    let test = "a_root_overflow_names_main_stack_size";
    let output = finish_child(test, child_command(test, "root"), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let message = format!("coroutine '{test}' (");
    assert!(stderr.contains(&message), "{message:?} in:\n{stderr}");
    assert!(stderr.contains("overflowed its 64 KiB stack"), "{stderr}");
    assert!(stderr.contains("main_stack_size"), "{stderr}");
}
