//! Tests of `#[coroutines::main]` and `#[coroutines::test]`.
//!
//! `ui` builds and runs the `tests/ui/pass_*.rs` programs and checks that the
//! `tests/ui/fail_*.rs` ones fail to compile with exactly the errors in their
//! `.stderr` files (regenerate those with `TRYBUILD=overwrite cargo test --test
//! macros`, then read them). The other tests use `#[coroutines::test]` itself.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass_*.rs");
    t.compile_fail("tests/ui/fail_*.rs");
}

#[coroutines::test]
fn test_body_runs_in_a_coroutine() {
    assert!(coroutines::in_coroutine());
}

#[coroutines::test(workers = 2, work_stealing = true, stack_size = 131_072)]
fn test_with_all_arguments() {
    assert!(coroutines::in_coroutine());
}

#[coroutines::test]
#[should_panic(expected = "boom")]
fn test_should_panic_is_kept() {
    panic!("boom");
}

#[coroutines::test]
fn test_returning_result() -> Result<(), std::num::ParseIntError> {
    assert!(coroutines::in_coroutine());
    let n: u32 = "3".parse()?;
    assert_eq!(n, 3);
    Ok(())
}

#[coroutines::test]
fn test_early_return() -> Result<(), String> {
    for i in 0.. {
        if i == 2 {
            return Ok(());
        }
    }
    Err("unreachable".to_owned())
}

/// Doc comments and `#[ignore]` are kept (run with `--ignored`; it passes).
#[coroutines::test]
#[ignore = "only checks that `#[ignore]` survives the expansion"]
fn test_ignore_is_kept() {
    assert!(coroutines::in_coroutine());
}
