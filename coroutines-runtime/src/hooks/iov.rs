//! Buffers of vectored calls, for transfers that continue where an
//! earlier attempt stopped.

use libc::{c_void, iovec};

/// The total length of `count` iovecs at `iov`.
///
/// # Safety
/// The iovecs are readable: the kernel has read them (a call with them
/// succeeded).
pub(crate) unsafe fn total(iov: *const iovec, count: usize) -> usize {
    // SAFETY: per the contract.
    let iovs = unsafe { core::slice::from_raw_parts(iov, count) };
    iovs.iter().map(|v| v.iov_len).sum()
}

/// The iovecs that remain after the first `done` bytes of `count` iovecs at
/// `iov`.
///
/// # Safety
/// As [`total`].
pub(crate) unsafe fn skip(iov: *const iovec, count: usize, done: usize) -> Vec<iovec> {
    // SAFETY: per the contract.
    let iovs = unsafe { core::slice::from_raw_parts(iov, count) };
    let mut left = done;
    iovs.iter()
        .filter_map(|v| {
            if left >= v.iov_len {
                left -= v.iov_len;
                return None;
            }
            let skipped = core::mem::take(&mut left);
            Some(iovec {
                // Within the caller's buffer: `skipped < iov_len`.
                iov_base: v
                    .iov_base
                    .cast::<u8>()
                    .wrapping_add(skipped)
                    .cast::<c_void>(),
                iov_len: v.iov_len - skipped,
            })
        })
        .collect()
}
