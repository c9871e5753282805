//! Memory the runtime maps for itself: fixed-size slots carved from large
//! mappings ([`Slots`]: coroutine stacks, thread areas), and pages given
//! back to the kernel in batches ([`give_back`]).

mod slots;

pub(crate) use slots::Slots;

use crate::sys::{self, syscall};

/// The page size everything here is mapped in.
pub(crate) const PAGE: usize = 4096;

/// Gives the pages of `(address, length)` ranges back to the kernel
/// (`MADV_DONTNEED`): in one `process_madvise` where the kernel allows it
/// on the calling process (Linux 6.13+; one TLB flush for the batch on
/// 6.16+), else one `madvise` each. Empty ranges are skipped.
pub(crate) fn give_back(ranges: &[(usize, usize)]) {
    let vectors: Vec<libc::iovec> = ranges
        .iter()
        .filter(|&&(_, len)| len > 0)
        .map(|&(address, len)| libc::iovec {
            iov_base: address as *mut libc::c_void,
            iov_len: len,
        })
        .collect();
    if vectors.is_empty() {
        return;
    }
    let total: usize = vectors.iter().map(|v| v.iov_len).sum();
    let ret = syscall!(
        libc::SYS_process_madvise,
        sys::PIDFD_SELF,
        vectors.as_ptr(),
        vectors.len(),
        libc::MADV_DONTNEED,
        0
    );
    if ret == total as isize {
        return;
    }
    for vector in &vectors {
        let _ = syscall!(
            libc::SYS_madvise,
            vector.iov_base,
            vector.iov_len,
            libc::MADV_DONTNEED
        );
    }
}
