//! Probes against the worker mailbox (`scheduler/mailbox.rs`), the
//! deferred futex wake of signal handlers (`futex/bucket.rs`,
//! `Bucket::lock_or_defer`) and `switch::as_worker_thread`.
//!
//! - A signal handler's wake goes to the woken coroutine's worker's
//!   mailbox. If that worker is blocked (a coroutine computes without a
//!   hooked call), the monitor must move the mailbox to the injector like
//!   the inbox, where another (spare) worker runs it: the wake must not
//!   wait for the computation to end.
//! - A handler's futex wake that finds its bucket's lock held by ANOTHER
//!   thread (a worker registering a park, a waker, a coroutine removing
//!   its timed-out entry) is left to that holder: a lost hand-over is a
//!   waiter that never wakes. The handler here runs on a plain thread that
//!   holds nothing, so every deferral is to another thread.
//! - A runtime dropped while signal handlers keep waking its parked
//!   coroutines: wakes that land in a mailbox after its worker's last
//!   drain must still fail (or finish) every join handle, without a crash.
//!
//! Cases that install handlers run one at a time (`support::serial`); signals go to
//! the plain thread that raises them, so the handler never interrupts the
//! runtime's own code there.

mod support;

use support::serial;

use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use coroutines::Runtime;
use support::child::{child_case, rerun, wait_bounded};
use support::differential::{on_plain_thread_within, Side};
use support::futex_table::{bucket_mates, private_wait, private_wake};

/// Raises `signal` on the calling thread (its handler runs here, before
/// this returns).
fn raise_here(signal: libc::c_int) {
    // SAFETY: signals the calling thread of this process with a signal
    // whose handler is installed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid(),
            libc::gettid(),
            signal as libc::c_long,
        )
    };
    assert_eq!(ret, 0, "tgkill");
}

/// A handle a signal handler may read: a leaked `Thread`, or null.
struct HandlerThread(AtomicPtr<Thread>);

impl HandlerThread {
    const fn new() -> HandlerThread {
        HandlerThread(AtomicPtr::new(ptr::null_mut()))
    }

    fn set(&self, thread: Thread) {
        // Leaked on purpose: a handler may still read an older one.
        self.0
            .store(Box::into_raw(Box::new(thread)), Ordering::SeqCst);
    }

    fn clear(&self) {
        self.0.store(ptr::null_mut(), Ordering::SeqCst);
    }

    fn unpark(&self) {
        let thread = self.0.load(Ordering::SeqCst);
        // SAFETY: a leaked, never freed `Thread`, or null.
        if let Some(thread) = unsafe { thread.as_ref() } {
            thread.unpark();
        }
    }
}

// ---------------------------------------------------------------------
// 1. A handler's wake of a coroutine whose worker computes.
// ---------------------------------------------------------------------

static BLOCKED_FLAG: AtomicBool = AtomicBool::new(false);
static BLOCKED_WAITER: HandlerThread = HandlerThread::new();

extern "C" fn wake_blocked_waiter(_: libc::c_int) {
    BLOCKED_FLAG.store(true, Ordering::SeqCst);
    BLOCKED_WAITER.unpark();
}

/// How long the case's root computes without a hooked call.
const COMPUTE: Duration = Duration::from_millis(800);

/// The waiter parks; a plain thread's handler wakes it while the case
/// computes on (in a coroutine: holds) its worker. Returns whether the
/// waiter ran before the computation ended.
fn wake_while_computing(side: Side) -> bool {
    BLOCKED_FLAG.store(false, Ordering::SeqCst);
    BLOCKED_WAITER.clear();
    support::install_handler(libc::SIGUSR1, wake_blocked_waiter);
    let parked = Arc::new(AtomicBool::new(false));
    let woke_at = Arc::new(Mutex::new(None::<Instant>));
    let waiter = {
        let (parked, woke_at) = (parked.clone(), woke_at.clone());
        side.spawn(move || {
            BLOCKED_WAITER.set(thread::current());
            parked.store(true, Ordering::SeqCst);
            while !BLOCKED_FLAG.load(Ordering::SeqCst) {
                thread::park();
            }
            *woke_at.lock().unwrap() = Some(Instant::now());
        })
    };
    // The waiter runs until it parks (in a coroutine, on this worker).
    let start = Instant::now();
    while !parked.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(2) {
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(Duration::from_millis(20));
    let signaller = thread::spawn(|| {
        thread::sleep(Duration::from_millis(50));
        raise_here(libc::SIGUSR1);
    });
    // No hooked call: the worker is held until the end.
    let computing = Instant::now();
    let mut spins = 0u64;
    while computing.elapsed() < COMPUTE {
        spins = std::hint::black_box(spins.wrapping_add(1));
    }
    let computed = Instant::now();
    signaller.join().unwrap();
    waiter.join();
    let woke = woke_at.lock().unwrap().expect("the waiter woke");
    woke < computed
}

fn compare_wake_while_computing(what: &str, builder: coroutines::runtime::Builder) {
    let _serial = serial();
    let reference = on_plain_thread_within(what, Duration::from_secs(10), || {
        wake_while_computing(Side::Thread)
    });
    assert!(reference, "{what}: the reference thread missed its wake");
    let coroutine = support::watchdog_on(what, Duration::from_secs(20), builder, || {
        wake_while_computing(Side::Coroutine)
    });
    assert_eq!(
        coroutine, reference,
        "{what}: the coroutine (left) differs from the plain thread (right): \
         a handler's wake waited for its blocked worker"
    );
}

/// Pinned started coroutines may move only with work stealing (or their
/// own identity): stealing makes the case independent of identities.
#[test]
fn a_handler_wake_of_a_coroutine_on_a_blocked_worker_moves_with_work_stealing() {
    compare_wake_while_computing(
        "handler wake, blocked worker, work stealing",
        Runtime::builder()
            .workers(1)
            .work_stealing(true)
            .blocked_worker_warnings(false),
    );
}

/// With their own thread identities (the default), started coroutines
/// move too.
#[test]
fn a_handler_wake_of_a_coroutine_on_a_blocked_worker_moves_with_identities() {
    compare_wake_while_computing(
        "handler wake, blocked worker, identities",
        Runtime::builder()
            .workers(1)
            .thread_identity(true)
            .blocked_worker_warnings(false),
    );
}

// ---------------------------------------------------------------------
// 2. Deferred futex wakes handed to another thread.
// ---------------------------------------------------------------------

/// Rounds of the hand-over probe.
const ROUNDS: u64 = 15_000;
/// A round whose wake has not reached the waiter this long after its
/// signal lost it.
const LOST_AFTER: Duration = Duration::from_secs(2);

static WORDS: [AtomicU32; 8192] = [const { AtomicU32::new(0) }; 8192];
static SEEN: AtomicU64 = AtomicU64::new(0);
static HANDOVER_STOP: AtomicBool = AtomicBool::new(false);

fn handover_target() -> &'static AtomicU32 {
    &WORDS[0]
}

extern "C" fn bump_and_wake_target(_: libc::c_int) {
    handover_target().fetch_add(1, Ordering::SeqCst);
    private_wake(handover_target(), 1);
}

/// What a side of the hand-over probe saw.
#[derive(Debug, PartialEq, Eq)]
struct Handover {
    rounds: u64,
    /// Rounds whose wake never reached the waiter (it was rescued).
    lost: u64,
    /// Every churn party finished.
    churn_finished: bool,
}

/// The waiter sees every bump of the target, each announced by one
/// handler's wake; churn parties keep the target's bucket lock busy from
/// other threads (timed waits that register and then remove themselves,
/// wakes that find waiters).
fn handover(side: Side) -> Handover {
    HANDOVER_STOP.store(false, Ordering::SeqCst);
    SEEN.store(0, Ordering::SeqCst);
    handover_target().store(0, Ordering::SeqCst);
    support::install_handler(libc::SIGUSR2, bump_and_wake_target);
    let waiter = side.spawn(|| {
        let mut seen = 0u32;
        while !HANDOVER_STOP.load(Ordering::SeqCst) {
            let now = handover_target().load(Ordering::SeqCst);
            if now != seen {
                seen = now;
                SEEN.store(u64::from(seen), Ordering::SeqCst);
                continue;
            }
            private_wait(handover_target(), seen, None);
        }
    });
    let mates = bucket_mates(&WORDS, 4);
    let churn: Vec<_> = mates
        .chunks(2)
        .flat_map(|pair| {
            let (a, b) = (pair[0], pair[1]);
            [(a, b), (b, a)]
        })
        .map(|(mine, theirs)| {
            side.spawn(move || {
                let mut rounds = 0u64;
                while !HANDOVER_STOP.load(Ordering::SeqCst) {
                    theirs.fetch_add(1, Ordering::SeqCst);
                    private_wake(theirs, 1);
                    let v = mine.load(Ordering::SeqCst);
                    private_wait(mine, v, Some(Duration::from_micros(300)));
                    rounds += 1;
                }
                // The partner may wait: a last wake.
                theirs.fetch_add(1, Ordering::SeqCst);
                private_wake(theirs, 1);
                rounds
            })
        })
        .collect();
    // The signaller: a plain thread, whose handler holds nothing.
    let signaller = thread::spawn(|| {
        let mut lost = 0;
        let mut rounds = 0;
        let start = Instant::now();
        while rounds < ROUNDS && start.elapsed() < Duration::from_secs(10) {
            rounds += 1;
            raise_here(libc::SIGUSR2);
            let asked = Instant::now();
            while SEEN.load(Ordering::SeqCst) < rounds {
                if asked.elapsed() > LOST_AFTER {
                    lost += 1;
                    // Rescue the waiter from a normal context.
                    private_wake(handover_target(), 1);
                    let rescued = Instant::now();
                    while SEEN.load(Ordering::SeqCst) < rounds && rescued.elapsed() < LOST_AFTER {
                        thread::yield_now();
                    }
                    break;
                }
                thread::yield_now();
            }
        }
        (rounds, lost)
    });
    let (rounds, lost) = signaller.join().unwrap();
    HANDOVER_STOP.store(true, Ordering::SeqCst);
    handover_target().fetch_add(1, Ordering::SeqCst);
    private_wake(handover_target(), 1);
    waiter.join();
    let churned: Vec<u64> = churn.into_iter().map(|p| p.join()).collect();
    Handover {
        rounds: rounds.min(ROUNDS),
        lost,
        churn_finished: churned.iter().all(|&n| n > 0),
    }
}

fn compare_handover(what: &str, builder: coroutines::runtime::Builder) {
    let _serial = serial();
    let reference =
        on_plain_thread_within(what, Duration::from_secs(40), || handover(Side::Thread));
    let coroutine = support::watchdog_on(what, Duration::from_secs(40), builder, || {
        handover(Side::Coroutine)
    });
    assert_eq!(
        coroutine, reference,
        "{what}: the coroutine (left) differs from the plain thread (right)"
    );
    assert_eq!(reference.lost, 0, "{what}: the reference lost wakes");
}

#[test]
fn a_handler_futex_wake_deferred_to_another_thread_is_never_lost() {
    compare_handover(
        "futex wake deferred to another thread, two workers",
        Runtime::builder().workers(2),
    );
}

#[test]
fn a_handler_futex_wake_deferred_to_another_thread_is_never_lost_on_one_worker() {
    compare_handover(
        "futex wake deferred to another thread, one worker",
        Runtime::builder().workers(1).blocked_worker_warnings(false),
    );
}

// ---------------------------------------------------------------------
// 3. A runtime dropped while handlers keep waking its coroutines.
// ---------------------------------------------------------------------

const PARKERS: usize = 64;
static PARKER_THREADS: [HandlerThread; PARKERS] = [const { HandlerThread::new() }; PARKERS];
static PARKERS_RELEASED: AtomicBool = AtomicBool::new(false);

extern "C" fn unpark_every_parker(_: libc::c_int) {
    for parker in &PARKER_THREADS {
        parker.unpark();
    }
}

#[test]
fn a_runtime_dropped_during_handler_wakes_settles_every_join() {
    if child_case().as_deref() == Some("drop-storm") {
        support::install_handler(libc::SIGUSR1, unpark_every_parker);
        let runtime = Runtime::builder()
            .workers(2)
            .blocked_worker_warnings(false)
            .build()
            .unwrap();
        let registered = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..PARKERS)
            .map(|i| {
                let registered = registered.clone();
                runtime.spawn(move || {
                    PARKER_THREADS[i].set(thread::current());
                    registered.fetch_add(1, Ordering::SeqCst);
                    while !PARKERS_RELEASED.load(Ordering::SeqCst) {
                        thread::park();
                    }
                })
            })
            .collect();
        let start = Instant::now();
        while registered.load(Ordering::SeqCst) < PARKERS
            && start.elapsed() < Duration::from_secs(5)
        {
            thread::sleep(Duration::from_millis(1));
        }
        let storming = Arc::new(AtomicBool::new(true));
        let storms: Vec<_> = (0..2)
            .map(|_| {
                let storming = storming.clone();
                thread::spawn(move || {
                    let mut sent = 0u64;
                    while storming.load(Ordering::SeqCst) {
                        raise_here(libc::SIGUSR1);
                        sent += 1;
                    }
                    sent
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(100));
        let dropping = Instant::now();
        drop(runtime);
        let dropped_in = dropping.elapsed();
        // Joined on a plain thread, so that a join that never settles is
        // a bounded failure.
        let (done, results) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let (mut ok, mut failed) = (0, 0);
            for handle in handles {
                match handle.join() {
                    Ok(()) => ok += 1,
                    Err(_) => failed += 1,
                }
            }
            let _ = done.send((ok, failed));
        });
        let joined = results.recv_timeout(Duration::from_secs(10));
        storming.store(false, Ordering::SeqCst);
        let sent: u64 = storms.into_iter().map(|s| s.join().unwrap()).sum();
        println!("dropped in {dropped_in:?}, {sent} signals, joins {joined:?}");
        let (ok, failed) = joined.expect("some join handles never settled");
        assert_eq!(ok + failed, PARKERS);
        println!("CHILD OK");
        return;
    }
    let (output, ended) = wait_bounded(
        rerun("drop-storm").spawn().unwrap(),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        ended && stdout.contains("CHILD OK"),
        "the child (ended: {ended}, status {:?}) failed:\n{stdout}\n{stderr}",
        output.status
    );
}
