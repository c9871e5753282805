//! Runtime configuration and where its defaults come from.

use std::io;
use std::time::Duration;

use crate::coroutine::{main_thread_stack_size, Stacks};
use crate::identity::Layout;

/// The environment variable that overrides the default worker count, like
/// Go's `GOMAXPROCS`. Explicit configuration wins over it.
pub const WORKERS_ENV: &str = "COROUTINES_WORKERS";

/// The most workers a runtime may have. Each is a thread with a spare and
/// four descriptors, so a count past this is a mistake (a size or a
/// sentinel passed for a count), better reported than attempted.
pub const MAX_WORKERS: usize = 4096;

/// Default coroutine stack: 64 KiB is ample for ordinary blocking code
/// (std's I/O paths use a few KiB) and only touched pages become resident.
pub const DEFAULT_STACK_SIZE: usize = 64 * 1024;

/// Finished stacks each worker keeps for re-use. Servers churn through
/// hundreds of short-lived connections per worker (the echo benchmark's 512
/// live connections mapped and unmapped ~66 stacks per iteration with 256).
/// 1024 x 64 KiB bounds the address space a worker holds on to at 64 MiB, of
/// which only the pages the coroutines touched (~8 KiB each) are resident.
pub(crate) const STACK_POOL_CAPACITY: usize = 1024;

/// How a runtime is set up. `None` fields take their defaults when the
/// runtime is built.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Worker threads; default: `COROUTINES_WORKERS`, else the CPU count.
    pub workers: Option<usize>,
    /// Whether idle workers may steal coroutines that have already started;
    /// default `false`.
    pub work_stealing: Option<bool>,
    /// Stack size in bytes of coroutines spawned without one; default
    /// [`DEFAULT_STACK_SIZE`].
    pub stack_size: Option<usize>,
    /// Stack size in bytes of the coroutine `block_on` runs (the body of
    /// `#[coroutines::main]`); default: the size of the main thread's
    /// stack (the soft `RLIMIT_STACK`, 8 MiB if unlimited).
    pub main_stack_size: Option<usize>,
    /// Helper threads for blocking calls at most; default 512.
    pub blocking_threads: Option<usize>,
    /// Whether each coroutine gets its own thread identity; default `true`
    /// where start-up verification passes (see `identity`).
    pub thread_identity: Option<bool>,
    /// How long a worker may run one coroutine while others wait behind it
    /// before the monitor steps in; default [`DEFAULT_BLOCKED_THRESHOLD`].
    pub blocked_threshold: Option<Duration>,
    /// Whether the monitor says so on stderr; default `true`.
    pub blocked_warnings: Option<bool>,
}

/// How long a worker may run one coroutine, without switching, while
/// others wait behind it: twice Go's 10 ms preemption slice, so that
/// ordinary bursts of computation go unremarked.
pub const DEFAULT_BLOCKED_THRESHOLD: Duration = Duration::from_millis(20);

/// A configuration with every default resolved.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub(crate) workers: usize,
    pub(crate) work_stealing: bool,
    pub(crate) stack_size: usize,
    pub(crate) main_stack_size: usize,
    pub(crate) blocking_threads: usize,
    /// The verified layout when coroutines get their own identities.
    pub(crate) identity: Option<&'static Layout>,
    pub(crate) blocked_threshold: Duration,
    pub(crate) blocked_warnings: bool,
}

impl Config {
    /// Resolves every default; `identity` decides thread identity.
    pub(crate) fn resolve(&self, identity: Option<&'static Layout>) -> io::Result<Resolved> {
        let workers = match self.workers {
            Some(0) => return Err(invalid("a runtime needs at least one worker".into())),
            Some(n) if n > MAX_WORKERS => {
                return Err(invalid(format!(
                    "a runtime has at most {MAX_WORKERS} workers, not {n}"
                )))
            }
            Some(n) => n,
            None => match std::env::var(WORKERS_ENV) {
                Ok(text) => match text.trim().parse::<usize>() {
                    Ok(n) if n > 0 && n <= MAX_WORKERS => n,
                    _ => {
                        return Err(invalid(format!(
                            "{WORKERS_ENV} must be an integer from 1 to {MAX_WORKERS}, got {text:?}"
                        )))
                    }
                },
                Err(_) => num_cpus::get().clamp(1, MAX_WORKERS),
            },
        };
        let stack_size = self.stack_size.unwrap_or(DEFAULT_STACK_SIZE);
        Stacks::validate(stack_size)?;
        let main_stack_size = self.main_stack_size.unwrap_or_else(main_thread_stack_size);
        Stacks::validate(main_stack_size)?;
        let blocking_threads = match self.blocking_threads {
            Some(0) => {
                return Err(invalid(
                    "a runtime needs at least one blocking thread".into(),
                ))
            }
            Some(n) => n,
            None => crate::blocking::DEFAULT_BLOCKING_THREADS,
        };
        Ok(Resolved {
            workers,
            work_stealing: self.work_stealing.unwrap_or(false),
            stack_size,
            main_stack_size,
            blocking_threads,
            identity,
            blocked_threshold: self.blocked_threshold.unwrap_or(DEFAULT_BLOCKED_THRESHOLD),
            blocked_warnings: self.blocked_warnings.unwrap_or(true),
        })
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}
