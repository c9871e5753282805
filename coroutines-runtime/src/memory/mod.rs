//! Memory the runtime maps for itself: fixed-size slots carved from large
//! mappings ([`Slots`]: coroutine stacks, thread areas), and pages given
//! back to the kernel in batches ([`give_back`]).

mod slots;

pub(crate) use slots::Slots;

use crate::sys::{self, syscall};

/// The page size everything here is mapped in.
pub(crate) const PAGE: usize = 4096;

/// Gives the pages of `(address, length)` ranges back to the kernel
/// (`MADV_DONTNEED`): in one call where the kernel allows it ([`advise`]),
/// else one `madvise` each. Empty ranges are skipped.
pub(crate) fn give_back(ranges: &[(usize, usize)]) {
    if advise(ranges, libc::MADV_DONTNEED) {
        return;
    }
    for &(address, len) in ranges.iter().filter(|&&(_, len)| len > 0) {
        let _ = syscall!(libc::SYS_madvise, address, len, libc::MADV_DONTNEED);
    }
}

/// Applies `advice` to `(address, length)` ranges in one `process_madvise`
/// on the calling process (Linux 6.13+; for `MADV_DONTNEED`, one TLB flush
/// for the batch on 6.16+). Whether the kernel took it for every byte;
/// if not, the caller goes range by range. Empty ranges are skipped.
pub(crate) fn advise(ranges: &[(usize, usize)], advice: libc::c_int) -> bool {
    let vectors: Vec<libc::iovec> = ranges
        .iter()
        .filter(|&&(_, len)| len > 0)
        .map(|&(address, len)| libc::iovec {
            iov_base: address as *mut libc::c_void,
            iov_len: len,
        })
        .collect();
    if vectors.is_empty() {
        return true;
    }
    let total: usize = vectors.iter().map(|v| v.iov_len).sum();
    let ret = syscall!(
        libc::SYS_process_madvise,
        sys::PIDFD_SELF,
        vectors.as_ptr(),
        vectors.len(),
        advice,
        0
    );
    ret == total as isize
}
