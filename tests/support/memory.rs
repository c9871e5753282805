//! Memory as the kernel sees it, for the tests of stacks and thread areas:
//! /proc/self/status figures, whether a page is readable or resident, and
//! coroutines parked on stacks of a given size.

use std::sync::{Arc, Barrier};

pub const PAGE: usize = 4096;

/// A field of /proc/self/status, in KiB.
pub fn status_kib(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Resident memory of the process, in KiB.
pub fn resident_kib() -> usize {
    status_kib("VmRSS:")
}

/// Address space of the process, in KiB.
pub fn address_space_kib() -> usize {
    status_kib("VmSize:")
}

/// Lines of /proc/self/maps: the process's memory mappings.
pub fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

/// Whether the byte at `addr` can be read (the kernel's view: a guard page,
/// `PROT_NONE` or a guard marker, or an unmapped page is not).
pub fn readable(addr: usize) -> bool {
    let mut byte = 0u8;
    let local = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: 1,
    };
    // SAFETY: reads one byte of this process into `byte`; the kernel checks
    // the remote address.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    n == 1
}

/// Whether the page at `addr` is resident (mapped and in memory).
pub fn resident(addr: usize) -> bool {
    let mut vec = 0u8;
    // SAFETY: one page, one byte of result; an unmapped page is ENOMEM.
    let ret = unsafe { libc::mincore((addr & !(PAGE - 1)) as *mut libc::c_void, PAGE, &mut vec) };
    ret == 0 && vec & 1 == 1
}

/// Whether this kernel makes guard pages without a mapping of their own
/// (`MADV_GUARD_INSTALL`, Linux 6.13+).
pub fn guard_markers() -> bool {
    const MADV_GUARD_INSTALL: libc::c_int = 102;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    // SAFETY: a fresh anonymous page, advised and unmapped here only.
    unsafe {
        let page = libc::mmap(std::ptr::null_mut(), PAGE, libc::PROT_READ, flags, -1, 0);
        assert_ne!(page, libc::MAP_FAILED);
        let supported = libc::madvise(page, PAGE, MADV_GUARD_INSTALL) == 0;
        libc::munmap(page, PAGE);
        supported
    }
}

/// `count` coroutines of `runtime`, on stacks of `stack_size` (`None`: the
/// runtime's default, pooled), each running `touch` and then waiting at a
/// barrier; they are all alive when this returns. Returns their handles
/// and the barrier that lets them end.
pub fn parked(
    runtime: &coroutines::Runtime,
    count: usize,
    stack_size: Option<usize>,
    touch: fn(),
) -> (Vec<coroutines::JoinHandle<()>>, Arc<Barrier>) {
    let barrier = Arc::new(Barrier::new(count + 1));
    let reached = Arc::new(Barrier::new(count + 1));
    let handles = {
        let (barrier, reached) = (barrier.clone(), reached.clone());
        runtime.block_on(move || {
            (0..count)
                .map(|_| {
                    let (barrier, reached) = (barrier.clone(), reached.clone());
                    let builder = match stack_size {
                        Some(size) => coroutines::Builder::new().stack_size(size),
                        None => coroutines::Builder::new(),
                    };
                    builder
                        .spawn(move || {
                            touch();
                            reached.wait();
                            barrier.wait();
                        })
                        .unwrap()
                })
                .collect::<Vec<_>>()
        })
    };
    reached.wait();
    (handles, barrier)
}
