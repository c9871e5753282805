//! Sandboxes for probes: seccomp filters that make one system call fail
//! with a chosen error number, as a container's or a browser's sandbox
//! refuses calls it does not know.

/// Which threads a filter covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// The calling thread, the threads it starts later, and across exec.
    Calling,
    /// Every thread of the process (`SECCOMP_FILTER_FLAG_TSYNC`).
    All,
}

/// The calls a filter refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Every call of this number.
    Syscall(libc::c_long),
    /// `ioctl` with this request (its low 32 bits).
    Ioctl(u64),
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    jump(code, k, 0, 0)
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// Installs a filter on `threads` that fails `refused` with `errno` and
/// allows everything else; false if the kernel refused the filter.
pub fn refuse(refused: Refused, errno: i32, threads: Threads) -> bool {
    const LD_W_ABS: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    const JEQ_K: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    const RET_K: u32 = libc::BPF_RET | libc::BPF_K;
    // Offsets in `struct seccomp_data`: the number, then the low word of
    // the second argument.
    const NR: u32 = 0;
    const ARG1_LOW: u32 = 24;
    let deny = stmt(RET_K, libc::SECCOMP_RET_ERRNO | errno as u32);
    let allow = stmt(RET_K, libc::SECCOMP_RET_ALLOW);
    let program = match refused {
        Refused::Syscall(nr) => vec![
            stmt(LD_W_ABS, NR),
            jump(JEQ_K, nr as u32, 0, 1),
            deny,
            allow,
        ],
        Refused::Ioctl(request) => vec![
            stmt(LD_W_ABS, NR),
            jump(JEQ_K, libc::SYS_ioctl as u32, 0, 3),
            stmt(LD_W_ABS, ARG1_LOW),
            jump(JEQ_K, request as u32, 0, 1),
            deny,
            allow,
        ],
    };
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    let flags = match threads {
        Threads::Calling => 0,
        Threads::All => libc::SECCOMP_FILTER_FLAG_TSYNC,
    };
    // SAFETY: a valid filter program that outlives the calls; no new
    // privileges first, as an unprivileged filter requires.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &prog as *const libc::sock_fprog,
            ) == 0
    }
}
