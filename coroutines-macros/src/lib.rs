//! The `#[coroutines::main]` and `#[coroutines::test]` attributes.
//!
//! Use them through the `coroutines` crate, which re-exports both; this crate's
//! expansion refers to `::coroutines` and does not work on its own.

mod args;
mod expand;

use proc_macro::TokenStream;

use expand::Kind;

/// Starts the process-wide runtime with the given configuration and runs the
/// body of `fn main` in its root coroutine.
///
/// The body is ordinary blocking code, with no `async` and no `.await`; it may
/// spawn more coroutines with the crate's `std::thread`-like API. As the
/// process-wide runtime starts only once, the function can run only once per
/// process; it is meant for `main` (another name works too, but parameters and
/// generics do not).
///
/// # Arguments
///
/// All optional, written `name = literal` and separated by commas:
///
/// - `workers = N`: the number of worker threads. Default: the
///   `COROUTINES_WORKERS` environment variable if set, else the number of CPUs.
/// - `work_stealing = bool`: whether idle workers may steal coroutines that
///   have already started from busy ones. Default: `false`.
/// - `stack_size = BYTES`: the stack size of coroutines spawned without one of
///   their own. Default: 64 KiB.
/// - `main_stack_size = BYTES`: the stack size of the coroutine that runs
///   the function's body. Default: the main thread's (`ulimit -s`, 8 MiB if
///   unlimited).
/// - `thread_identity = bool`: whether each coroutine has its own thread
///   identity (thread-locals, `thread::current()`, errno). Default: `true`.
/// - `blocking_threads = N`: the most helper threads for blocking calls.
///   Default: 512.
///
/// Stack sizes are checked here (16 KiB to 1 GiB), the rest when the
/// program starts; see `coroutines::runtime::Builder` for each setting.
///
/// # Return type
///
/// `main` may return `()` or, like a plain `main`, any type that implements
/// [`Termination`](std::process::Termination) such as `Result<(), E>`; `?` and
/// `return` work as usual in the body. In the latter case the expanded function
/// returns the [`ExitCode`](std::process::ExitCode) that the body's value
/// reports (printing an `Err` to stderr, as a plain `main` does).
///
/// # Examples
///
/// (Not compiled here: this crate cannot depend on `coroutines`. Programs like
/// these are tested in the workspace's `tests/ui/pass_*.rs`.)
///
/// ```ignore
/// #[coroutines::main]
/// fn main() {
///     assert!(coroutines::in_coroutine());
/// }
/// ```
///
/// ```ignore
/// #[coroutines::main(workers = 4, work_stealing = true, stack_size = 262_144)]
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let text = std::fs::read_to_string("Cargo.toml")?;
///     println!("{} bytes", text.len());
///     Ok(())
/// }
/// ```
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(Kind::Main, args.into(), item.into()).into()
}

/// Runs a test's body in a coroutine, on a runtime built for that test.
///
/// It marks the function as a test itself, so write `#[coroutines::test]`
/// instead of `#[test]`, not in addition to it. Other attributes such as
/// `#[should_panic]` and `#[ignore]` are kept.
///
/// # Arguments
///
/// The same as [`macro@main`]'s, all optional; `main_stack_size` sizes the
/// coroutine that runs the test's body.
///
/// A test may return `()` or a [`Termination`](std::process::Termination) type
/// such as `Result<(), E>`, as a plain `#[test]` may.
///
/// # Examples
///
/// (Not compiled here: this crate cannot depend on `coroutines`. Tests like
/// these are in the workspace's `tests/macros.rs`.)
///
/// ```ignore
/// #[coroutines::test]
/// fn runs_in_a_coroutine() {
///     assert!(coroutines::in_coroutine());
/// }
///
/// #[coroutines::test(workers = 2)]
/// #[should_panic(expected = "boom")]
/// fn panics() {
///     panic!("boom");
/// }
/// ```
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(Kind::Test, args.into(), item.into()).into()
}

#[cfg(test)]
mod tests;
