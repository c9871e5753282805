//! Helpers for the crate's unit tests: coroutines spawned from plain
//! closures, and joined.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::any::Any;
use std::sync::Arc;

use crate::sync::{Latch, SpinLock};
use crate::{Body, Config, Runtime, SpawnOptions};

/// Runs a closure; sets a latch when the coroutine ends and records whether
/// it failed.
pub(crate) struct Done {
    body: SpinLock<Option<Box<dyn FnOnce() + Send>>>,
    latch: Latch,
    pub(crate) failed: AtomicUsize,
    ran: AtomicBool,
}

impl Done {
    pub(crate) fn new(body: impl FnOnce() + Send + 'static) -> Arc<Done> {
        Arc::new(Done {
            body: SpinLock::new(Some(Box::new(body))),
            latch: Latch::new(),
            failed: AtomicUsize::new(0),
            ran: AtomicBool::new(false),
        })
    }
}

impl Body for Done {
    fn run(&self) {
        let body = self.body.lock().take();
        if let Some(body) = body {
            body();
            self.ran.store(true, Ordering::SeqCst);
        }
    }

    fn deliver(&self) {
        self.latch.set();
    }

    fn fail(&self, _payload: Box<dyn Any + Send>) {
        if self.ran.load(Ordering::SeqCst) {
            self.latch.set();
        } else if !self.latch.is_set() {
            self.failed.fetch_add(1, Ordering::SeqCst);
            self.latch.set();
        }
    }
}

/// Spawns `body` on the current runtime (or on `runtime`) and returns what
/// tells when it has ended.
pub(crate) fn spawn(runtime: Option<&Runtime>, body: impl FnOnce() + Send + 'static) -> Arc<Done> {
    let done = Done::new(body);
    match runtime {
        Some(runtime) => runtime.spawn_raw(SpawnOptions::default(), done.clone()),
        None => crate::spawn(SpawnOptions::default(), done.clone()),
    }
    .expect("spawn");
    done
}

impl Done {
    /// Whether the coroutine has ended.
    pub(crate) fn ended(&self) -> bool {
        self.latch.is_set()
    }
}

/// Waits for `done`'s coroutine to end; fails if it could not run.
pub(crate) fn join(done: &Done) {
    done.latch.wait();
    assert_eq!(done.failed.load(Ordering::SeqCst), 0, "a coroutine failed");
}

/// A runtime of `workers` workers, otherwise configured by default.
pub(crate) fn runtime(workers: usize) -> Runtime {
    Runtime::new(&Config {
        workers: Some(workers),
        ..Config::default()
    })
    .expect("runtime")
}
