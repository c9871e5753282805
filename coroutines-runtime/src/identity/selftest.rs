//! The start-up self-test: two coroutines with their own identities on one
//! worker of a runtime of its own, checked for what std and libc see.

use core::cell::Cell;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::any::Any;
use std::sync::{mpsc, Arc};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use super::{in_private_identity, Layout};
use crate::coroutine::{yield_now, Body, TaskRef};
use crate::scheduler::{Config, Runtime, SpawnOptions};
use crate::sync::SpinLock;

/// How long the two coroutines may take: milliseconds when all is well.
const LIMIT: Duration = Duration::from_secs(10);

/// Thread-local destructor runs per coroutine: +1 with the coroutine's
/// identity active, +100 without.
static DESTRUCTOR_RUNS: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

struct DestructorProbe(Cell<usize>);

impl Drop for DestructorProbe {
    fn drop(&mut self) {
        if let Some(runs) = DESTRUCTOR_RUNS.get(self.0.get()) {
            runs.fetch_add(
                if in_private_identity() { 1 } else { 100 },
                Ordering::SeqCst,
            );
        }
    }
}

thread_local! {
    static PROBE: DestructorProbe = const { DestructorProbe(Cell::new(usize::MAX)) };
}

/// A coroutine body made of a closure.
struct Probe<F> {
    f: SpinLock<Option<F>>,
}

impl<F: FnOnce() + Send> Body for Probe<F> {
    fn run(&self) {
        if let Some(f) = self.f.lock().take() {
            f();
        }
    }

    fn deliver(&self) {}

    fn fail(&self, _: Box<dyn Any + Send>) {
        drop(self.f.lock().take());
    }
}

/// Runs the self-test with `layout`; `Err` says what failed.
pub(crate) fn run(layout: &'static Layout) -> Result<(), String> {
    let config = Config {
        workers: Some(1),
        ..Config::default()
    };
    let runtime = Runtime::with_identity(&config, Some(layout)).map_err(|e| e.to_string())?;
    let (report, reports) = mpsc::channel::<Result<ThreadId, String>>();
    let (to_second, from_first) = mpsc::sync_channel::<ThreadId>(0);
    let first = {
        let report = report.clone();
        move || {
            let outcome = coroutine(0, |me| to_second.send(me).map_err(|e| e.to_string()));
            report.send(outcome).ok();
        }
    };
    let second = move || {
        let outcome = coroutine(1, |me| match from_first.recv() {
            Ok(first) if first != me => Ok(()),
            Ok(_) => Err("two coroutines of one worker have one ThreadId".into()),
            Err(e) => Err(format!("sync_channel(0): {e}")),
        });
        report.send(outcome).ok();
    };
    let mut tasks = Vec::new();
    for body in [
        Box::new(first) as Box<dyn FnOnce() + Send>,
        Box::new(second),
    ] {
        let probe = Arc::new(Probe {
            f: SpinLock::new(Some(body)),
        });
        let task = runtime.spawn_raw(SpawnOptions::default(), probe);
        tasks.push(task.map_err(|e| e.to_string())?);
    }
    let start = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..2 {
        match reports.recv_timeout(LIMIT) {
            Ok(Ok(id)) => ids.push(id),
            Ok(Err(why)) => return Err(why),
            Err(_) => {
                // A worker is stuck: leave it rather than wait for it.
                core::mem::forget(runtime);
                return Err(format!("two coroutines did not finish within {LIMIT:?}"));
            }
        }
    }
    // Their thread-local destructors run as they end.
    while !tasks.iter().all(TaskRef::is_done) {
        if start.elapsed() > LIMIT {
            core::mem::forget(runtime);
            return Err(format!("two coroutines did not end within {LIMIT:?}"));
        }
        thread::sleep(Duration::from_millis(1));
    }
    drop(runtime);
    if ids.contains(&thread::current().id()) {
        return Err("a coroutine has the ThreadId of the thread that started it".into());
    }
    for (i, runs) in DESTRUCTOR_RUNS.iter().enumerate() {
        let runs = runs.load(Ordering::SeqCst);
        if runs != 1 {
            return Err(format!(
                "coroutine {i}: a thread-local destructor ran {} times with its identity, {} without",
                runs % 100,
                runs / 100
            ));
        }
    }
    Ok(())
}

/// One coroutine's checks; `exchange` is its part of the channel hop.
/// Returns its `ThreadId`.
fn coroutine(
    i: usize,
    exchange: impl FnOnce(ThreadId) -> Result<(), String>,
) -> Result<ThreadId, String> {
    if !in_private_identity() {
        return Err("a coroutine runs without its own identity".into());
    }
    let me = thread::current().id();
    if crate::sys::errno() != 0 {
        return Err(format!("errno starts at {}, not 0", crate::sys::errno()));
    }
    crate::sys::set_errno(1000 + i as i32);
    PROBE.with(|probe| probe.0.set(i));
    check_stack()?;
    // SAFETY: sched_getcpu has no preconditions.
    if unsafe { libc::sched_getcpu() } < 0 {
        return Err("sched_getcpu failed".into());
    }
    yield_now();
    exchange(me)?;
    if crate::sys::errno() != 1000 + i as i32 {
        return Err(format!(
            "errno changed to {} across a switch",
            crate::sys::errno()
        ));
    }
    if thread::current().id() != me {
        return Err("the ThreadId changed across a switch".into());
    }
    Ok(me)
}

/// `pthread_getattr_np(pthread_self())` must report the coroutine's stack.
fn check_stack() -> Result<(), String> {
    let local = 0u8;
    let here = core::hint::black_box(&local) as *const u8 as usize;
    // SAFETY: getattr_np on ourselves with a local attribute object.
    let (low, size) = unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return Err("pthread_getattr_np failed".into());
        }
        let (mut addr, mut size) = (core::ptr::null_mut(), 0usize);
        libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        (addr as usize, size)
    };
    match (low..low + size).contains(&here) {
        true => Ok(()),
        false => Err(format!(
            "pthread_getattr_np reports the stack [{low:#x}, {:#x}), but it is at {here:#x}",
            low + size
        )),
    }
}
