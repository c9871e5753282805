//! Memory mappings: `mmap`, `mprotect`, `munmap`, and locking them:
//! `mlockall`, `munlockall`.
//!
//! The `generator` crate maps each coroutine stack with the first three;
//! while the runtime creates or drops a generator on this thread, the calls
//! are the stack arena's to answer (`coroutine::stack_arena`). Every other
//! call is the system call, as libc makes it; the arena follows locking.

use libc::{c_int, c_void, off_t, size_t};

use crate::coroutine::stack_arena;
use crate::sys::{c_result, syscall};

/// Hooked: a coroutine stack's mapping is a slot of the arena.
///
/// # Safety
/// As `mmap(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    offset: off_t,
) -> *mut c_void {
    let ret = match stack_arena::answer_map(addr as usize, len, prot, flags, fd, offset) {
        Some(Ok(slot)) => slot as isize,
        Some(Err(error)) => -(error as isize),
        None => syscall!(libc::SYS_mmap, addr, len, prot, flags, fd, offset),
    };
    c_result(ret) as *mut c_void
}

/// Hooked: a lent stack's guard page is already in place.
///
/// # Safety
/// As `mprotect(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mprotect(addr: *mut c_void, len: size_t, prot: c_int) -> c_int {
    if let Some(ret) = stack_arena::answer_protect(addr as usize, len, prot) {
        return ret;
    }
    c_result(syscall!(libc::SYS_mprotect, addr, len, prot)) as c_int
}

/// Hooked: a lent stack's slot goes back to the arena.
///
/// # Safety
/// As `munmap(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: size_t) -> c_int {
    if let Some(ret) = stack_arena::answer_unmap(addr as usize, len) {
        return ret;
    }
    c_result(syscall!(libc::SYS_munmap, addr, len)) as c_int
}

/// Hooked: locking the process's memory stops at the first guard marker of
/// a chunk, so the arena makes its stacks resident after the call, and lends
/// none while future memory is locked.
///
/// # Safety
/// As `mlockall(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mlockall(flags: c_int) -> c_int {
    let ret = syscall!(libc::SYS_mlockall, flags);
    if ret == 0 {
        stack_arena::on_mlockall(flags);
    }
    c_result(ret) as c_int
}

/// Hooked: stacks are lent again.
///
/// # Safety
/// As `munlockall(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn munlockall() -> c_int {
    let ret = syscall!(libc::SYS_munlockall);
    if ret == 0 {
        stack_arena::on_munlockall();
    }
    c_result(ret) as c_int
}
