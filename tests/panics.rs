//! Panics: a coroutine's panic comes back from `join` as `Err(payload)`, the
//! runtime keeps working afterwards, and `Runtime::block_on` resumes the
//! panic in its caller.

use std::panic::{catch_unwind, panic_any, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coroutines::Runtime;
use support::child::{child_case, child_command, run_child};

mod support;

#[derive(Debug, PartialEq)]
struct CustomPayload(u32);

#[test]
fn str_payload_is_returned_by_join() {
    let payload = coroutines::spawn(|| panic!("static message"))
        .join()
        .unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"static message"));
}

#[test]
fn string_payload_is_returned_by_join() {
    let n = 7;
    let payload = coroutines::spawn(move || -> u32 { panic!("formatted {n}") })
        .join()
        .unwrap_err();
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some("formatted 7")
    );
}

#[test]
fn custom_payload_and_panic_after_suspending() {
    // The coroutine has run, suspended and resumed before it unwinds.
    let payload = coroutines::spawn(|| {
        coroutines::yield_now();
        coroutines::yield_now();
        panic_any(CustomPayload(99))
    })
    .join()
    .unwrap_err();
    assert_eq!(
        payload.downcast_ref::<CustomPayload>(),
        Some(&CustomPayload(99))
    );
}

#[test]
fn panic_joined_from_a_coroutine() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let message = runtime.block_on(|| {
        let payload = coroutines::spawn(|| panic!("child failed"))
            .join()
            .unwrap_err();
        payload.downcast_ref::<&str>().map(|s| s.to_string())
    });
    assert_eq!(message.as_deref(), Some("child failed"));
}

#[test]
fn runtime_keeps_working_after_many_panics() {
    for workers in [1, 2] {
        let runtime = Runtime::builder().workers(workers).build().unwrap();
        let drops = Arc::new(AtomicUsize::new(0));
        let panicking: Vec<_> = (0..200u32)
            .map(|i| {
                let guard = DropCounter(drops.clone());
                runtime.spawn(move || {
                    let _guard = guard;
                    if i % 2 == 0 {
                        coroutines::yield_now();
                    }
                    panic!("panic number {i}")
                })
            })
            .collect();
        for (i, handle) in panicking.into_iter().enumerate() {
            let payload = handle.join().unwrap_err();
            assert_eq!(
                payload.downcast_ref::<String>(),
                Some(&format!("panic number {i}"))
            );
        }
        // Unwinding ran the destructors on the coroutines' stacks.
        assert_eq!(drops.load(Ordering::SeqCst), 200);

        // Same runtime, afterwards: ordinary work, from threads and inside.
        let handles: Vec<_> = (0..1000u64).map(|i| runtime.spawn(move || i)).collect();
        let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(sum, 999 * 1000 / 2);
        let inner = runtime.block_on(|| {
            let hs: Vec<_> = (0..100u64)
                .map(|i| {
                    coroutines::spawn(move || {
                        coroutines::yield_now();
                        i
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
        });
        assert_eq!(inner, 99 * 100 / 2);
        // A joined coroutine's result is delivered just before its worker
        // retires it, so `alive` reaches 0 shortly after the last join.
        let deadline = Instant::now() + Duration::from_secs(5);
        while runtime.stats().alive != 0 {
            assert!(Instant::now() < deadline, "{:?}", runtime.stats());
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

struct DropCounter(Arc<AtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn block_on_resumes_the_panic_in_the_caller() {
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let result = catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(|| -> u32 { panic!("boom from block_on") })
    }));
    let payload = result.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom from block_on"));

    let result = catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(|| panic_any(CustomPayload(3)))
    }));
    assert_eq!(
        result.unwrap_err().downcast_ref::<CustomPayload>(),
        Some(&CustomPayload(3))
    );

    // The runtime is still usable afterwards.
    assert_eq!(
        runtime.block_on(|| coroutines::spawn(|| 40).join().unwrap() + 2),
        42
    );
}

/// A coroutine's panic message names it as std's names a thread (its name
/// and id), `block_on`'s coroutine after the calling thread, and a
/// backtrace shows the user's frames, not the runtime's.
#[test]
fn panic_messages_name_the_coroutine() {
    if let Some(case) = child_case() {
        let named = coroutines::Builder::new()
            .name("fetcher".into())
            .spawn(|| panic!("boom in fetcher"))
            .unwrap();
        println!("ID {}", named.coroutine().id().as_u64());
        assert!(named.join().is_err());
        if case == "root" {
            let runtime = Runtime::builder().workers(1).build().unwrap();
            let caller = std::thread::Builder::new().name("caller".into());
            let caller = caller.spawn(move || runtime.block_on(|| panic!("boom in root")));
            assert!(caller.unwrap().join().is_err());
        }
        return;
    }
    let run = |case: &str, backtrace: &str| {
        let mut command = child_command("panic_messages_name_the_coroutine", case);
        command.env("RUST_BACKTRACE", backtrace);
        let output = run_child(case, command, Duration::from_secs(60));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        // libtest prints the test's name on the same line first.
        let id: String = stdout
            .split("ID ")
            .nth(1)
            .expect("the child printed the id")
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        (id, String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (id, stderr) = run("root", "0");
    let named = format!("coroutine 'fetcher' ({id}) panicked at tests/panics.rs:");
    assert!(stderr.contains(&named), "{named:?} in:\n{stderr}");
    assert!(stderr.contains("boom in fetcher\n"), "{stderr}");
    let root = "coroutine 'caller' (";
    assert!(stderr.contains(root), "{root:?} in:\n{stderr}");
    assert!(!stderr.contains("<unnamed>"), "{stderr}");

    let (_, stderr) = run("backtrace", "1");
    assert!(stderr.contains("stack backtrace:"), "{stderr}");
    assert!(
        stderr.contains("panics::panic_messages_name_the_coroutine"),
        "{stderr}"
    );
    assert!(!stderr.contains("coroutines_runtime::"), "{stderr}");
}
