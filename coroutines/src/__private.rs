//! What `#[coroutines::main]` and `#[coroutines::test]` expand to. Not a
//! public API.

use std::process::{ExitCode, Termination};

use crate::runtime::{block_on, Builder};

/// `main` returning `()`: starts the process-wide runtime with `builder` and
/// runs `body` in its root coroutine.
#[track_caller]
pub fn main<T: Send + 'static>(builder: Builder, body: impl FnOnce() -> T + Send + 'static) -> T {
    match builder.start_default_runtime() {
        Ok(runtime) => block_on(runtime, body),
        Err(error) => panic!("#[coroutines::main]: {error}"),
    }
}

/// `main` with a return type: the value is reported (as `main` would) inside
/// the coroutine, so it need not be `Send`.
#[track_caller]
pub fn main_report<R: Termination + 'static>(
    builder: Builder,
    body: impl FnOnce() -> R + Send + 'static,
) -> ExitCode {
    main(builder, move || body().report())
}

/// A test returning `()`: runs `body` in the root coroutine of a runtime of
/// its own, since tests run in parallel threads of one process.
#[track_caller]
pub fn test<T: Send + 'static>(builder: Builder, body: impl FnOnce() -> T + Send + 'static) -> T {
    match builder.build() {
        Ok(runtime) => runtime.block_on(body),
        Err(error) => panic!("#[coroutines::test]: {error}"),
    }
}

/// A test with a return type, reported inside the coroutine.
#[track_caller]
pub fn test_report<R: Termination + 'static>(
    builder: Builder,
    body: impl FnOnce() -> R + Send + 'static,
) -> ExitCode {
    test(builder, move || body().report())
}
