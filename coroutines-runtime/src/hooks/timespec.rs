//! A caller's `timespec` argument, read as the kernel reads it: `EFAULT`
//! where it cannot be read, `EINVAL` where it is malformed, never a crash
//! in the hook.
//!
//! Having the kernel read it costs a system call (`sys::read_timespec`)
//! on every timed wait. But std, like most callers, passes a `timespec`
//! from its own frame, a few hundred bytes above the hook's: one in the
//! same page as a local of the hook is readable (protections cover whole
//! pages, and the hook's own frame is in use), and is read directly. Any
//! other page may be one the program made unreadable, even in the middle
//! of a live stack.

use core::time::Duration;

use libc::{c_int, timespec};

use crate::memory::PAGE;
use crate::sys;

/// The duration at `ts`, `None` for null.
pub(super) fn read(ts: *const timespec) -> Result<Option<Duration>, c_int> {
    let mut local = 0u8;
    // In memory, in this frame: its page is readable.
    let here = core::hint::black_box(&mut local) as *mut u8 as usize / PAGE;
    let (first, last) = (
        ts as usize,
        (ts as usize).wrapping_add(size_of::<timespec>() - 1),
    );
    if !ts.is_null() && first / PAGE == here && last / PAGE == here {
        // SAFETY: in the page of a live local of this frame.
        return sys::timespec_duration(unsafe { ts.read_unaligned() }).map(Some);
    }
    sys::read_timespec(ts)
}
