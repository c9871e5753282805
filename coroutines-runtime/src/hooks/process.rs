//! Child processes: `fork`, and waiting for children (`waitpid`, `wait4`,
//! `wait`, `waitid`: what `Child::wait`, `Command::status` and
//! `Command::output` call).
//!
//! In a coroutine, a wait for one given child parks on a pidfd, which
//! becomes readable when the child exits, and asks the kernel with
//! `WNOHANG` in between: the status is the kernel's own. Waits for any
//! child, for a process group, or for stopped and continued children
//! (which a pidfd does not report) run on a helper thread of the runtime
//! (`crate::blocking`).

use libc::{c_int, id_t, idtype_t, pid_t, rusage, siginfo_t};

use super::descriptor::Kind;
use super::driver::on_created;
use super::fd::close_owned;
use crate::blocking;
use crate::coroutine::in_coroutine;
use crate::identity;
use crate::reactor::fd_table::Interest;
use crate::reactor::{wait_fd, FdWait, Outcome};
use crate::sys::{c_result, syscall};

unsafe extern "C" {
    /// glibc's `fork`, under its exported alias: runs the atfork handlers
    /// (the runtime's among them, see `scheduler::fork`).
    fn __fork() -> pid_t;
}

/// Hooked: a coroutine with its own thread identity forks on its worker's
/// identity, which glibc knows (see `identity::fork_on_worker`).
///
/// # Safety
/// As `fork(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork() -> pid_t {
    // SAFETY: glibc's fork, called as the caller called it.
    identity::fork_on_worker(&mut || unsafe { __fork() })
}

/// Hooked: `vfork` is `fork` (POSIX lets it be): a vfork child shares its
/// parent's memory, so the hooked calls it makes before `exec` (a `close`)
/// would change the parent's records.
///
/// # Safety
/// As `vfork(2)`: the child may only call `exec` or `_exit` (here it could
/// do more, as a forked child).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vfork() -> pid_t {
    // SAFETY: same contract, as `fork`.
    unsafe { fork() }
}

/// Options under which a pidfd says nothing: only exits make it readable.
const NOT_EXITS: c_int = libc::WUNTRACED | libc::WCONTINUED;

/// What a wait waits for.
#[derive(Clone, Copy)]
enum Child {
    /// One child, by pid.
    Pid(pid_t),
    /// One child, by a pidfd of the caller's.
    Pidfd(c_int),
    /// Any child, or any of a process group.
    Any,
}

/// A wait for `child` with the caller's `options`: `call(options)` makes
/// the system call with them, and `waiting(result)` says whether a
/// `WNOHANG` call found nothing yet. In a coroutine, parks as the module
/// docs say; elsewhere, the call as made.
fn wait_for(
    child: Child,
    options: c_int,
    call: impl Fn(c_int) -> isize + Send + Sync,
    waiting: impl Fn(isize) -> bool,
) -> isize {
    if !in_coroutine() || options & libc::WNOHANG != 0 {
        return call(options);
    }
    let pidfd = match child {
        _ if options & NOT_EXITS != 0 => None,
        Child::Pid(pid) => Some(pidfd_open(pid)),
        Child::Pidfd(fd) => Some(Ok(fd)),
        Child::Any => None,
    };
    match pidfd {
        Some(Ok(fd)) => {
            let ret = parked_on(fd, || call(options | libc::WNOHANG), &waiting);
            if let Child::Pid(_) = child {
                close_owned(fd);
            }
            ret.unwrap_or_else(|| blocking::run(|| call(options)))
        }
        // No pidfd (a pid that is not a live process: the call fails by
        // itself), or nothing a pidfd reports.
        Some(Err(_)) => call(options),
        None => blocking::run(|| call(options)),
    }
}

/// Asks with `call` (a `WNOHANG` wait) until `waiting` says it found
/// something, parking on the pidfd `fd` in between. `None` if the pidfd
/// cannot be waited on.
fn parked_on(
    fd: c_int,
    call: impl Fn() -> isize,
    waiting: impl Fn(isize) -> bool,
) -> Option<isize> {
    loop {
        let wait = FdWait::lookup(fd, Interest::Read)?;
        let ret = call();
        if !waiting(ret) {
            return Some(ret);
        }
        match wait_fd(&wait, None) {
            Outcome::Ready | Outcome::TimedOut => {}
            Outcome::Closed | Outcome::NotPollable => return None,
        }
    }
}

/// A pidfd for `pid`, recorded as a new descriptor; `Err(errno)` if none.
fn pidfd_open(pid: pid_t) -> Result<c_int, c_int> {
    let ret = syscall!(libc::SYS_pidfd_open, pid, 0);
    if ret < 0 {
        return Err(-ret as c_int);
    }
    on_created(ret as c_int, Some(Kind::Device));
    Ok(ret as c_int)
}

/// The child a `wait4`-style pid names.
fn child_of(pid: pid_t) -> Child {
    match pid {
        pid if pid > 0 => Child::Pid(pid),
        _ => Child::Any,
    }
}

/// Hooked: `Child::wait`.
///
/// # Safety
/// As `waitpid(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn waitpid(pid: pid_t, status: *mut c_int, options: c_int) -> pid_t {
    // SAFETY: same contract, without resource usage.
    unsafe { wait4(pid, status, options, core::ptr::null_mut()) }
}

/// Hooked: as `waitpid(-1, status, 0)`.
///
/// # Safety
/// As `wait(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wait(status: *mut c_int) -> pid_t {
    // SAFETY: same contract.
    unsafe { wait4(-1, status, 0, core::ptr::null_mut()) }
}

/// Hooked: see the module docs.
///
/// # Safety
/// As `wait4(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wait4(
    pid: pid_t,
    status: *mut c_int,
    options: c_int,
    usage: *mut rusage,
) -> pid_t {
    // Raw pointers are not `Send`; the caller keeps them valid until the
    // call returns, wherever it runs.
    let (status, usage) = (status as usize, usage as usize);
    let call = |options: c_int| syscall!(libc::SYS_wait4, pid, status, options, usage);
    c_result(wait_for(child_of(pid), options, call, |ret| ret == 0)) as pid_t
}

/// Hooked: see the module docs; `P_PIDFD` waits park on the caller's
/// pidfd.
///
/// # Safety
/// As `waitid(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn waitid(
    idtype: idtype_t,
    id: id_t,
    info: *mut siginfo_t,
    options: c_int,
) -> c_int {
    let child = match idtype {
        libc::P_PID if id > 0 => Child::Pid(id as pid_t),
        libc::P_PIDFD => Child::Pidfd(id as c_int),
        _ => Child::Any,
    };
    // A `WNOHANG` waitid that found nothing returns 0 with `si_pid` zero,
    // which only a `siginfo_t` shows: without the caller's, the runtime's
    // own takes the answer (the kernel writes nothing the caller sees).
    // SAFETY: an all-zero siginfo_t is valid.
    let mut own: siginfo_t = unsafe { core::mem::zeroed() };
    let info = match info.is_null() {
        true => &mut own as *mut siginfo_t,
        false => info,
    };
    let address = info as usize;
    let call = |options: c_int| syscall!(libc::SYS_waitid, idtype, id, address, options, 0);
    let waiting = |ret: isize| {
        // SAFETY: the call succeeded, so the kernel wrote `info`, which is
        // the caller's or `own`, alive until this function returns.
        ret == 0 && unsafe { (*info).si_pid() } == 0
    };
    c_result(wait_for(child, options, call, waiting)) as c_int
}
