//! x86-64: the `syscall` trampoline that routes SYS_futex to the futex hook.
//!
//! `syscall(long number, ...)` is variadic, which Rust cannot define, so the
//! symbol is defined in assembly. It replaces glibc's: std (and any C code
//! in the process) calls it for every futex operation. `SYS_futex` jumps to
//! the Rust handler `coroutines_futex_syscall` (hooks/futex.rs) with the
//! futex arguments moved into the C ABI's argument registers; every other
//! number runs the system call exactly as glibc's `syscall` does.
//!
//! Only the x86-64 specifics live here: the register shuffle and the
//! kernel's error convention. The handler's logic is portable Rust.

use core::arch::global_asm;

// The calling convention, on entry:
//   rdi = number, rsi, rdx, rcx, r8, r9 = arguments 1-5,
//   [rsp + 8] = argument 6 (the 7th C argument is on the stack),
//   [rsp] = return address, rsp = 8 (mod 16).
// The kernel's convention: rax = number, rdi, rsi, rdx, r10, r8, r9 =
// arguments 1-6; it returns -4095..-1 for -errno, and clobbers rcx and r11.
//
// The futex branch is a tail call: the handler gets the same stack (return
// address on top, same alignment) and returns straight to our caller.
global_asm!(
    ".pushsection .text.coroutines_syscall,\"ax\",@progbits",
    ".globl syscall",
    ".type syscall, @function",
    ".p2align 4",
    "syscall:",
    ".cfi_startproc",
    "cmp rdi, {sys_futex}",
    "je 2f",
    // The raw system call.
    "mov rax, rdi",
    "mov rdi, rsi",
    "mov rsi, rdx",
    "mov rdx, rcx",
    "mov r10, r8",
    "mov r8, r9",
    "mov r9, qword ptr [rsp + 8]",
    "syscall",
    "cmp rax, -4095",
    "jae 3f",
    "ret",
    // SYS_futex: shift the arguments down one register and jump.
    "2:",
    "mov rdi, rsi",
    "mov rsi, rdx",
    "mov rdx, rcx",
    "mov rcx, r8",
    "mov r8, r9",
    "mov r9, qword ptr [rsp + 8]",
    "jmp coroutines_futex_syscall@PLT",
    // Failure: errno = -rax, return -1. One push realigns the stack for the
    // call and keeps the error number across it.
    "3:",
    "neg rax",
    "push rax",
    ".cfi_adjust_cfa_offset 8",
    "call {errno_location}@PLT",
    "pop rcx",
    ".cfi_adjust_cfa_offset -8",
    "mov dword ptr [rax], ecx",
    "mov rax, -1",
    "ret",
    ".cfi_endproc",
    ".size syscall, . - syscall",
    ".popsection",
    sys_futex = const libc::SYS_futex,
    errno_location = sym libc::__errno_location,
);

/// GNU ld only takes an archive member that resolves a symbol it still
/// needs, and the `syscall` references come from std, which is linked after
/// this crate: without a reference from a kept object, the linker would use
/// glibc's `syscall`. rustc keeps `#[used]` statics, so this one pulls the
/// trampoline in.
#[used]
static KEEP_SYSCALL: unsafe extern "C" fn(libc::c_long, ...) -> libc::c_long = libc::syscall;
