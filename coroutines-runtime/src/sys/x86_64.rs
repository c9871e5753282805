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
