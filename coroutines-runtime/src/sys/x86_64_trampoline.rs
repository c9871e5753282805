//! x86-64: the `syscall` trampoline that routes SYS_futex to the futex hook.
