//! The `syscall(SYS_futex, ..)` hook: std::sync waits park the coroutine.
