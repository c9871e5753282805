//! Child processes: `fork`, and waiting for children (`waitpid`, `wait4`,
//! `wait`, `waitid`: what `Child::wait`, `Command::status` and
//! `Command::output` call).
//!
//! In a coroutine, a wait for one given child parks on a pidfd, which
//! becomes readable when the child exits, and asks the kernel with
//! `WNOHANG` in between: the status is the kernel's own. Waits for any
//! child, for a process group, or for stopped and continued children
//! (which a pidfd does not report), and waits for which no pidfd can be
//! opened (`EMFILE`), run on a helper thread of the runtime
//! (`crate::blocking`). A helper thread has no children of its own, so a
//! wait with `__WNOTHREAD` (children of the calling thread only: here, of
//! the worker, which forked them) asks with `WNOHANG` on the worker
//! instead, and sleeps between asks.
//!
//! `wait3` and `system` are hooked too (and `pclose`, in `fd`): glibc's
//! wait through internal calls no other hook sees.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libc::{c_int, id_t, idtype_t, pid_t, rusage, siginfo_t};

use super::descriptor::{get_flags, Kind};
use super::driver::on_created;
use super::fd::close_owned;
#[cfg(not(target_feature = "crt-static"))]
use super::on_helper::helper_hook;
use crate::blocking;
use crate::coroutine::{in_coroutine, switch};
use crate::identity;
use crate::reactor::fd_table::Interest;
use crate::reactor::{sleep_until, wait_fd, FdWait, Outcome};
use crate::scheduler::Shared;
use crate::sync::SpinLock;
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
    let elsewhere = || match options & libc::__WNOTHREAD {
        0 => blocking::run(|| call(options)),
        _ => polled(|| call(options | libc::WNOHANG), &waiting),
    };
    let pidfd = match child {
        _ if options & NOT_EXITS != 0 => None,
        Child::Pid(pid) => Some(pidfd_open(pid)),
        // The kernel fails a wait on a non-blocking pidfd with EAGAIN
        // while the child runs.
        Child::Pidfd(fd) if nonblocking(fd) => return call(options),
        Child::Pidfd(fd) => Some(Ok(fd)),
        Child::Any => None,
    };
    match pidfd {
        Some(Ok(fd)) => {
            let _opened = matches!(child, Child::Pid(_)).then(|| PidfdGuard::new(fd));
            parked_on(fd, || call(options | libc::WNOHANG), &waiting).unwrap_or_else(elsewhere)
        }
        // Not a live process: the call fails by itself.
        Some(Err(libc::ESRCH)) => call(options),
        // No descriptor to spare, or nothing a pidfd reports.
        Some(Err(_)) | None => elsewhere(),
    }
}

/// Pidfds opened for waits under way, each with the address of the
/// waiting coroutine's runtime and a number of its own. A waiter closes its
/// pidfd as it returns; a stopping runtime closes those of its coroutines,
/// which never resume.
static OPENED_PIDFDS: SpinLock<Vec<OpenedPidfd>> = SpinLock::new(Vec::new());
static NEXT_OPENED: AtomicU64 = AtomicU64::new(0);

/// A pidfd this hook opened for the running coroutine's wait, closed by
/// whichever of the two (the coroutine, its runtime) takes it out of
/// `OPENED_PIDFDS` first. The number tells it from a later pidfd that
/// reuses the descriptor number.
#[derive(Clone, Copy, PartialEq, Eq)]
struct OpenedPidfd {
    fd: c_int,
    runtime: usize,
    number: u64,
}

/// Closes the pidfd of its wait as the wait returns.
struct PidfdGuard(OpenedPidfd);

impl PidfdGuard {
    fn new(fd: c_int) -> PidfdGuard {
        let opened = OpenedPidfd {
            fd,
            runtime: switch::current().map_or(0, |task| Arc::as_ptr(&task.shared) as usize),
            number: NEXT_OPENED.fetch_add(1, Ordering::Relaxed),
        };
        OPENED_PIDFDS.lock().push(opened);
        PidfdGuard(opened)
    }
}

impl Drop for PidfdGuard {
    fn drop(&mut self) {
        let mut opened = OPENED_PIDFDS.lock();
        if let Some(at) = opened.iter().position(|&o| o == self.0) {
            opened.swap_remove(at);
            drop(opened);
            close_owned(self.0.fd);
        }
    }
}

/// Closes the pidfds that `shared`'s coroutines opened for their waits: the
/// runtime has stopped, and they will never return to close them.
pub(crate) fn release_runtime(shared: &Shared) {
    let runtime = core::ptr::from_ref(shared) as usize;
    let theirs: Vec<OpenedPidfd> = {
        let mut opened = OPENED_PIDFDS.lock();
        let (theirs, others) = opened.drain(..).partition(|o| o.runtime == runtime);
        *opened = others;
        theirs
    };
    theirs.into_iter().for_each(|o| close_owned(o.fd));
}

/// Whether the user made `fd` non-blocking.
fn nonblocking(fd: c_int) -> bool {
    let flags = get_flags(fd);
    flags >= 0 && flags as c_int & libc::O_NONBLOCK != 0
}

/// Asks with `call` (a `WNOHANG` wait) until `waiting` says it found
/// something, sleeping in between: from 1 ms, doubling up to 50 ms.
fn polled(call: impl Fn() -> isize, waiting: impl Fn(isize) -> bool) -> isize {
    let mut pause = Duration::from_millis(1);
    loop {
        let ret = call();
        if !waiting(ret) {
            return ret;
        }
        sleep_until(Instant::now() + pause);
        pause = (pause * 2).min(Duration::from_millis(50));
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

#[cfg(not(target_feature = "crt-static"))]
helper_hook! {
    /// Hooked: glibc's `system` waits for its shell through an internal
    /// `waitpid`, so it runs on a helper thread (`on_helper`).
    fn system(command: *const libc::c_char) -> c_int,
    fail: no_system()
}

/// What `system` returns without glibc's: no shell could be run.
#[cfg(not(target_feature = "crt-static"))]
fn no_system() -> c_int {
    crate::sys::set_errno(libc::ENOSYS);
    -1
}

/// Hooked: as `wait4(-1, status, options, usage)`.
///
/// # Safety
/// As `wait3(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wait3(status: *mut c_int, options: c_int, usage: *mut rusage) -> pid_t {
    // SAFETY: same contract.
    unsafe { wait4(-1, status, options, usage) }
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
