//! Coroutines: the task record, the one way to suspend, and the switch.
//!
//! A coroutine is a `Task` plus a stack from the `generator` crate. It runs
//! only on its worker thread; it leaves the processor through exactly two
//! doors, both in `switch`: [`yield_now`] (back of the queue) and [`park`]
//! (until a [`Waker`] wakes it).

mod id;
mod panic_report;
mod park;
mod stack;
pub(crate) mod stack_arena;
pub(crate) mod stack_floor;
pub(crate) mod switch;
mod task;
mod wait;

pub use id::CoroutineId;
pub use panic_report::begin_short_backtrace;
pub(crate) use park::{begin_park, WAITING as PARKED};
pub use park::{park, WakeReason, Waker};
pub(crate) use stack::{
    generator_address, main_thread_stack_size, size_text, Gen, Identity, StackPool, Stacks,
};
pub use stack::{MAX_STACK_SIZE, MIN_STACK_SIZE};
pub(crate) use switch::may_switch;
pub use switch::{in_coroutine, yield_now};
pub use task::{Body, TaskRef};
pub(crate) use task::{Lifecycle, Suspend, Task};
pub(crate) use wait::{coarse_now, init_epoch};
pub use wait::{Wait, Waiting};
