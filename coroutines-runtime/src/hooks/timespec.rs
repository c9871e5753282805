//! A caller's `timespec` argument, read as the kernel reads it: `EFAULT`
//! where it cannot be read, `EINVAL` where it is malformed, never a crash
//! in the hook.
//!
//! Having the kernel read it costs a system call (`sys::read_timespec`)
//! on every timed wait. But std, like most callers, passes a `timespec`
//! from its own frame: one in the running coroutine's stack, above the
//! hook's frame, is memory in use, and is read directly.

use core::time::Duration;

use libc::{c_int, timespec};

use crate::coroutine::switch;
use crate::sys;

/// The duration at `ts`, `None` for null.
pub(super) fn read(ts: *const timespec) -> Result<Option<Duration>, c_int> {
    if !ts.is_null() && switch::in_own_stack(ts as usize, size_of::<timespec>()) {
        // SAFETY: inside the stack the coroutine runs on, between this
        // frame and its top.
        return sys::timespec_duration(unsafe { ts.read_unaligned() }).map(Some);
    }
    sys::read_timespec(ts)
}
