//! The engine behind [`coroutines`](https://docs.rs/coroutines): the
//! scheduler, the reactor and the hook layer.
//!
//! Users depend on the `coroutines` crate, whose API mirrors `std::thread`.
//! This crate is what it is built on:
//! - [`coroutine`]: the task record, parking and the switch path;
//! - [`blocking`]: helper threads for calls that cannot become a reactor
//!   wait;
//! - [`scheduler`]: worker threads, run queues, placement, runtimes;
//! - `reactor`: per-worker epoll and timers, the per-descriptor table, and
//!   the one wait every hook uses;
//! - `hooks`: `#[no_mangle]` definitions of the libc functions std calls to
//!   block, one file per family;
//! - `futex`: the wait table behind the futex hook;
//! - `memory`: slots carved from large mappings (stacks, thread areas);
//! - [`sync`]: the runtime's own lock-free or spinning primitives;
//! - `sys`: raw system calls and everything platform-specific.

pub mod blocking;
pub mod coroutine;
mod futex;
mod hooks;
mod identity;
mod memory;
mod reactor;
pub mod scheduler;
pub mod sync;
mod sys;
#[cfg(test)]
mod test_support;

pub use coroutine::{
    in_coroutine, park, yield_now, Body, CoroutineId, TaskRef, Wait, Waiting, WakeReason, Waker,
};
pub use scheduler::{
    current_dump, current_stats, current_task, current_worker_stats, default_runtime,
    init_default_runtime, spawn, started_default_runtime, Config, CoroutineDump, CoroutineState,
    Dump, Runtime, SpawnOptions, Stats, WorkerStats, DEFAULT_BLOCKED_THRESHOLD, DEFAULT_STACK_SIZE,
    DUMP_SIGNAL_ENV, WORKERS_ENV,
};
