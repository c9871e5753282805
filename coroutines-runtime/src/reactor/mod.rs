//! The reactor: per-worker readiness (epoll) and timers.
//!
//! Each worker owns one [`Poller`] and one [`Timers`]. An idle worker sleeps
//! in its poller until a descriptor becomes ready, its next timer is due, or
//! another thread notifies it; a busy worker polls without blocking every few
//! dozen coroutine runs. Coroutines stay on their worker, so the event that
//! wakes one is, as a rule, received on the core that will run it.

pub(crate) mod fd_table;
mod poller;
mod timers;
mod wait;

pub(crate) use fd_table::dispatch;
pub(crate) use poller::Poller;
pub(crate) use timers::Timers;
pub(crate) use wait::{sleep_on_fd, sleep_until, wait_fd, wait_fds, FdWait, Outcome};
