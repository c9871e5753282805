//! A dump of every live coroutine, like Go's SIGQUIT traceback or a Java
//! thread dump: what a user debugging a stuck program reaches for first.
//!
//! [`Dump`] lists each coroutine with its id, name, worker and state, and
//! for a parked one what it waits for (a descriptor and direction, a
//! futex, a timer and the time left, the coroutine it joins, a helper
//! thread's call) and for how long. With the environment variable
//! `COROUTINES_DUMP_SIGNAL` set to a signal (`USR1`, `SIGUSR2`, `QUIT`, or
//! a number), the runtime prints the dump of every runtime to stderr when
//! the process receives that signal, from a thread of its own.

use core::fmt;
use core::sync::atomic::Ordering;
use std::sync::{Arc, Once, Weak};
use std::time::Duration;

use super::Shared;
use crate::coroutine::{CoroutineId, Lifecycle, Task, Wait, Waiting, PARKED};
use crate::sync::SpinLock;
use crate::sys::{self, syscall};

/// The environment variable naming the signal that prints a dump.
pub const DUMP_SIGNAL_ENV: &str = "COROUTINES_DUMP_SIGNAL";

/// Where a coroutine is, at the moment of a dump.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum CoroutineState {
    /// Spawned, not yet run.
    NotStarted,
    /// Running on its worker.
    Running,
    /// Queued to run.
    Runnable,
    /// Waiting for something.
    Parked(Waiting),
}

/// One coroutine in a [`Dump`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CoroutineDump {
    /// Its id.
    pub id: CoroutineId,
    /// Its name, if it was given one.
    pub name: Option<String>,
    /// The worker it runs on, once started.
    pub worker: Option<usize>,
    /// Where it is.
    pub state: CoroutineState,
}

/// Every live coroutine of a runtime; `Display` prints them one a line.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Dump {
    /// The runtime's configured workers.
    pub workers: usize,
    /// Its live coroutines, by id.
    pub coroutines: Vec<CoroutineDump>,
}

impl Dump {
    /// A dump of no coroutines, for where no runtime runs.
    pub fn empty() -> Dump {
        Dump {
            workers: 0,
            coroutines: Vec::new(),
        }
    }
}

/// The dump of `shared`'s runtime.
pub(crate) fn dump(shared: &Shared) -> Dump {
    let mut coroutines = Vec::new();
    shared
        .registry
        .for_each(|task| coroutines.push(describe(shared, task)));
    coroutines.sort_by_key(|c| c.id);
    Dump {
        workers: shared.config.workers,
        coroutines,
    }
}

fn describe(shared: &Shared, task: &Task) -> CoroutineDump {
    let id = task.id.as_u64().get();
    let running = shared
        .workers
        .iter()
        .any(|w| w.running.load(Ordering::Relaxed) == id);
    let started = task.lifecycle() == Lifecycle::Started;
    let state = match () {
        _ if !started => match task.waiting.read() {
            waiting if waiting.what == Wait::Stack => CoroutineState::Parked(waiting),
            _ => CoroutineState::NotStarted,
        },
        _ if running => CoroutineState::Running,
        _ if task.park.load(Ordering::Acquire) & PARKED != 0 => {
            CoroutineState::Parked(task.waiting.read())
        }
        _ => CoroutineState::Runnable,
    };
    CoroutineDump {
        id: task.id,
        name: task.name.as_deref().map(str::to_owned),
        worker: started.then(|| task.home.load(Ordering::Relaxed)),
        state,
    }
}

impl fmt::Display for Dump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |pick: fn(&CoroutineState) -> bool| {
            self.coroutines.iter().filter(|c| pick(&c.state)).count()
        };
        writeln!(
            f,
            "coroutines: {}, {} live coroutines ({} running, {} runnable, {} parked, {} not started)",
            super::runtime::workers_text(self.workers),
            self.coroutines.len(),
            count(|s| matches!(s, CoroutineState::Running)),
            count(|s| matches!(s, CoroutineState::Runnable)),
            count(|s| matches!(s, CoroutineState::Parked(_))),
            count(|s| matches!(s, CoroutineState::NotStarted)),
        )?;
        for c in &self.coroutines {
            write!(f, "  coroutine {}", c.id.as_u64())?;
            if let Some(name) = &c.name {
                write!(f, " '{name}'")?;
            }
            if let Some(worker) = c.worker {
                write!(f, " on worker {worker}")?;
            }
            match c.state {
                CoroutineState::NotStarted => writeln!(f, ": not started")?,
                CoroutineState::Running => writeln!(f, ": running")?,
                CoroutineState::Runnable => writeln!(f, ": runnable")?,
                CoroutineState::Parked(waiting) => writeln!(f, ": {waiting}")?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "parked for {}, ", Short(self.waited))?;
        match self.what {
            Wait::Fd { fd, write: false } => write!(f, "waiting to read descriptor {fd}")?,
            Wait::Fd { fd, write: true } => write!(f, "waiting to write descriptor {fd}")?,
            Wait::Fds => write!(
                f,
                "waiting on several descriptors (poll, select, an event loop)"
            )?,
            Wait::Futex => write!(
                f,
                "waiting on a futex (a std::sync lock, condition variable, channel or park)"
            )?,
            Wait::Sleep => write!(f, "sleeping")?,
            Wait::Join(id) => write!(f, "joining coroutine {}", id.as_u64())?,
            Wait::Pool => write!(
                f,
                "waiting for a call on a helper thread (lookup, join, spawn_blocking)"
            )?,
            Wait::Scope => write!(f, "waiting for its scoped coroutines to end")?,
            Wait::Stack => write!(
                f,
                "waiting for a stack to start on (the process is at its memory-map limit)"
            )?,
            _ => write!(f, "waiting")?,
        }
        if let Some(remaining) = self.remaining {
            write!(f, ", {} left", Short(remaining))?;
        }
        Ok(())
    }
}

/// A duration to three significant digits.
struct Short(Duration);

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs_f64();
        match secs {
            s if s >= 1.0 => write!(f, "{s:.2} s"),
            s if s >= 1e-3 => write!(f, "{:.1} ms", s * 1e3),
            s => write!(f, "{:.0} us", s * 1e6),
        }
    }
}

/// Live runtimes, for dumps on a signal.
static RUNTIMES: SpinLock<Vec<Weak<Shared>>> = SpinLock::new(Vec::new());

/// Records a new runtime for dumps on a signal, and sets the signal up the
/// first time if `COROUTINES_DUMP_SIGNAL` asks for it.
pub(crate) fn register(shared: &Arc<Shared>) {
    let mut runtimes = RUNTIMES.lock();
    runtimes.retain(|r| r.strong_count() > 0);
    runtimes.push(Arc::downgrade(shared));
    drop(runtimes);
    static SIGNAL: Once = Once::new();
    SIGNAL.call_once(|| {
        if let Ok(name) = std::env::var(DUMP_SIGNAL_ENV) {
            match signal_number(&name) {
                Some(signal) => dump_on(signal),
                None => eprintln!(
                    "coroutines: {DUMP_SIGNAL_ENV}={name:?} names no signal \
                     (try USR1, USR2, QUIT or a number); no dumps on signals"
                ),
            }
        }
    });
}

fn signal_number(name: &str) -> Option<libc::c_int> {
    let name = name.trim();
    let bare = name.strip_prefix("SIG").unwrap_or(name);
    match bare {
        "USR1" => Some(libc::SIGUSR1),
        "USR2" => Some(libc::SIGUSR2),
        "QUIT" => Some(libc::SIGQUIT),
        "HUP" => Some(libc::SIGHUP),
        _ => name.parse().ok().filter(|n| (1..32).contains(n)),
    }
}

/// The write end of the pipe the signal handler pokes.
static POKE: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(-1);

/// Prints the dump of every runtime to stderr on `signal`: the handler
/// writes a byte to a pipe, a thread of its own reads it and prints.
fn dump_on(signal: libc::c_int) {
    let mut fds = [0; 2];
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
    if syscall!(libc::SYS_pipe2, fds.as_mut_ptr(), flags) < 0 {
        return;
    }
    let [read_end, write_end] = fds;
    // The reader blocks: the thread is not a coroutine.
    syscall!(libc::SYS_fcntl, read_end, libc::F_SETFL, 0);
    POKE.store(write_end, Ordering::Release);
    let printer = std::thread::Builder::new()
        .name("coroutines-dump".into())
        .spawn(move || {
            let mut byte = 0u8;
            while syscall!(libc::SYS_read, read_end, &mut byte as *mut u8, 1) >= 0 {
                print_all();
            }
        });
    if printer.is_err() {
        return;
    }
    extern "C" fn poke(_: libc::c_int) {
        let byte = 0u8;
        let fd = POKE.load(Ordering::Acquire);
        let _ = syscall!(libc::SYS_write, fd, &byte as *const u8, 1);
    }
    // SAFETY: an all-zero sigaction is valid; `poke` is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = core::mem::zeroed();
        action.sa_sigaction = poke as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigaction(signal, &action, core::ptr::null_mut());
    }
}

/// Prints every live runtime's dump to stderr.
fn print_all() {
    let runtimes: Vec<Arc<Shared>> = RUNTIMES.lock().iter().filter_map(Weak::upgrade).collect();
    let mut text = String::new();
    for shared in runtimes {
        text.push_str(&dump(&shared).to_string());
    }
    let _ = sys::write_all(libc::STDERR_FILENO, text.as_bytes());
}
