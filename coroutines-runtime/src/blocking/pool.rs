//! A bounded pool of helper threads: started when work arrives and none is
//! idle, retired after idling for a while.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::sync::SpinLock;
use crate::sys;

/// Helper threads a runtime may run at once by default; further work
/// queues. As many as tokio's blocking pool: blocking calls are mostly
/// waiting, not computing.
pub(crate) const DEFAULT_BLOCKING_THREADS: usize = 512;

/// An idle helper thread exits after this long without work.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Work for a helper thread.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// A runtime's helper threads.
pub(crate) struct Pool {
    state: SpinLock<State>,
    /// Idle threads sleep on this futex word; every wake-up bumps it first.
    bell: AtomicU32,
    max_threads: usize,
    closed: AtomicBool,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Threads alive.
    threads: usize,
    /// Threads waiting for work and not yet promised any.
    idle: usize,
    /// Wake-ups promised to idle threads for queued work, not yet taken.
    promised: usize,
}

impl Pool {
    pub(crate) fn new(max_threads: usize) -> Arc<Pool> {
        Arc::new(Pool {
            state: SpinLock::new(State::default()),
            bell: AtomicU32::new(0),
            max_threads,
            closed: AtomicBool::new(false),
        })
    }

    /// Queues `job` and makes sure a thread will run it: an idle one, a new
    /// one while under the limit, or else the next that finishes. If no
    /// thread runs and none can start, runs it on the caller's thread.
    pub(crate) fn submit(self: &Arc<Self>, job: Job) {
        let mut state = self.state.lock();
        state.queue.push_back(job);
        if state.idle > 0 {
            state.idle -= 1;
            state.promised += 1;
            drop(state);
            self.ring(1);
            return;
        }
        if state.threads >= self.max_threads {
            return;
        }
        state.threads += 1;
        drop(state);
        let pool = self.clone();
        let started = std::thread::Builder::new()
            .name("coroutines-blocking".into())
            .spawn(move || pool.serve());
        if started.is_err() {
            let mut state = self.state.lock();
            state.threads -= 1;
            if state.threads == 0 {
                // Nobody else will run it.
                let job = state.queue.pop_back();
                drop(state);
                if let Some(job) = job {
                    job();
                }
            }
        }
    }

    /// Lets the pool's threads exit once the queue is empty.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.ring(i32::MAX);
    }

    fn ring(&self, threads: i32) {
        self.bell.fetch_add(1, Ordering::SeqCst);
        sys::futex_wake(&self.bell, threads);
    }

    /// A helper thread's life: run queued jobs, wait for more, exit after
    /// `KEEP_ALIVE` idle or once the pool is closed.
    fn serve(&self) {
        let mut waited = false;
        loop {
            let bell = {
                let mut state = self.state.lock();
                if waited {
                    if state.promised > 0 {
                        state.promised -= 1;
                    } else {
                        // Timed out (or spuriously woken) while counted idle.
                        state.idle -= 1;
                    }
                }
                if let Some(job) = state.queue.pop_front() {
                    drop(state);
                    job();
                    waited = false;
                    continue;
                }
                // A thread that waited and found nothing timed out (or its
                // job went to a busier thread): it retires.
                if self.closed.load(Ordering::SeqCst) || waited {
                    state.threads -= 1;
                    return;
                }
                state.idle += 1;
                self.bell.load(Ordering::SeqCst)
            };
            waited = true;
            sys::futex_wait_timeout(&self.bell, bell, Some(KEEP_ALIVE));
        }
    }
}
