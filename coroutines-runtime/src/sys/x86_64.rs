//! x86-64 Linux: the raw system-call instruction.

use core::arch::asm;
use libc::c_long;

/// Executes `syscall` with up to six arguments and returns `rax`
/// (`-errno` on failure).
///
/// # Safety
/// The arguments must be valid for the system call `nr`.
#[inline]
pub(crate) unsafe fn syscall6(nr: c_long, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the x86-64 Linux system-call ABI: number in rax, arguments in
    // rdi, rsi, rdx, r10, r8, r9; the kernel clobbers rcx and r11.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack, preserves_flags)
        );
    }
    ret
}

/// The calling thread's thread pointer (`fs_base`), by `rdfsbase`.
///
/// # Safety
/// The kernel enables FSGSBASE (`identity` checks `AT_HWCAP2` first).
#[inline(always)]
pub(crate) unsafe fn thread_pointer() -> usize {
    let value: usize;
    // SAFETY: reads a register; FSGSBASE per the caller's contract.
    unsafe {
        asm!("rdfsbase {}", out(reg) value, options(nomem, nostack, preserves_flags));
    }
    value
}

/// The calling thread's thread pointer as the C library records it in the
/// thread's area (`%fs:0`, glibc's `tcbhead_t.tcb`): no FSGSBASE needed.
#[inline(always)]
pub(crate) fn thread_self() -> usize {
    let value: usize;
    // SAFETY: every thread of a glibc process has a thread area whose first
    // word points to itself (coroutines' copies too: `identity::block`).
    unsafe {
        asm!("mov {}, qword ptr fs:[0]", out(reg) value, options(nostack, preserves_flags, readonly));
    }
    value
}

/// The `i32` at `offset` from the calling thread's thread pointer.
///
/// # Safety
/// `offset` is a 4-byte slot of static TLS, present in every thread.
#[inline(always)]
pub(crate) unsafe fn read_tls_i32(offset: isize) -> i32 {
    let value: i32;
    // SAFETY: per the caller's contract.
    unsafe {
        asm!("mov {:e}, dword ptr fs:[{}]", out(reg) value, in(reg) offset, options(nostack, preserves_flags, readonly));
    }
    value
}

/// Stores `value` at `offset` from the calling thread's thread pointer.
///
/// # Safety
/// As [`read_tls_i32`].
#[inline(always)]
pub(crate) unsafe fn write_tls_i32(offset: isize, value: i32) {
    // SAFETY: per the caller's contract.
    unsafe {
        asm!("mov dword ptr fs:[{}], {:e}", in(reg) offset, in(reg) value, options(nostack, preserves_flags));
    }
}

/// Switches the calling thread's thread pointer (`fs_base`), by `wrfsbase`.
/// Without `nomem`, so it is a compiler barrier: no memory access moves
/// across it.
///
/// # Safety
/// FSGSBASE is enabled, and `value` is a complete thread area (a thread's
/// own, or a coroutine's copy of one).
#[inline(always)]
pub(crate) unsafe fn set_thread_pointer(value: usize) {
    // SAFETY: per the caller's contract.
    unsafe {
        asm!("wrfsbase {}", in(reg) value, options(nostack, preserves_flags));
    }
}

/// Starts loading the cache line holding `addr`, without waiting for it.
/// A hint: any address is fine, none faults.
#[inline(always)]
pub(crate) fn prefetch(addr: usize) {
    // SAFETY: `prefetcht0` never faults, whatever the address.
    unsafe {
        asm!("prefetcht0 [{}]", in(reg) addr, options(nostack, preserves_flags, readonly));
    }
}
