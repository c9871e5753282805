//! Round G of the differential probes: thread identity and the
//! `std::thread` / `std::sync` API surface. Each case runs on a plain OS
//! thread and as the root coroutine of a one-worker runtime (helper parties
//! of the same kind beside it: coroutines of that one worker), and the two
//! plain-data results must be equal: park tokens, ids, thread-local
//! destructors, `Once`/`OnceLock`/`LazyLock`, `Barrier`, `RwLock`,
//! rendezvous channels, `Condvar` timeouts, poisoning, panics and their
//! payloads, `errno` across waits and the stdout lock across a park.

mod support;

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, Write};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TrySendError};
use std::sync::{Arc, Barrier, Condvar, LazyLock, Mutex, Once, OnceLock, RwLock, TryLockError};
use std::thread;
use std::time::{Duration, Instant};

use support::differential::*;
use support::{errno, set_errno};

// ------------------------------------------------------------------ helpers

/// Runs `f` beside the case as the case runs (see [`Side::spawn`]) and
/// returns `join`'s own result, the panic payload included.
fn raw_join<T: Send + 'static>(
    side: Side,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::Result<T> {
    match side {
        Side::Thread => thread::spawn(f).join(),
        Side::Coroutine => coroutines::spawn(f).join(),
    }
}

/// The side a destructor or nested party runs on, from where it runs.
fn here() -> Side {
    if coroutines::in_coroutine() {
        Side::Coroutine
    } else {
        Side::Thread
    }
}

/// A panic payload as plain data.
fn payload(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&'static str>() {
        format!("&str: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("String: {s}")
    } else if let Some(n) = p.downcast_ref::<u32>() {
        format!("u32: {n}")
    } else {
        "other".to_owned()
    }
}

/// Runs `f`, catching a panic; without the default hook's message.
fn caught<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|p| payload(&*p))
}

/// A fresh key for the destructor log.
fn token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What thread-local destructors saw, per case token.
static LOG: LazyLock<Mutex<HashMap<u64, Vec<String>>>> = LazyLock::new(Default::default);

thread_local! {
    /// The token of the case whose destructors run on this thread (no
    /// destructor: always accessible).
    static TOKEN: Cell<u64> = const { Cell::new(0) };
}

fn log(entry: impl Into<String>) {
    let token = TOKEN.with(Cell::get);
    LOG.lock()
        .unwrap()
        .entry(token)
        .or_default()
        .push(entry.into());
}

fn take_log(token: u64) -> Vec<String> {
    LOG.lock().unwrap().remove(&token).unwrap_or_default()
}

// ------------------------------------------------------ park / unpark

/// Unpark tokens: two unparks before a park make one token, so the first
/// park returns at once and a following `park_timeout` runs its full time;
/// `park_timeout(0)` consumes a token without waiting. A parker that is
/// not the coroutine's own (shared with the worker or another coroutine)
/// would show extra or missing tokens.
#[test]
fn park_tokens_do_not_accumulate() {
    let _ = differential("park tokens", |_side| {
        let me = thread::current();
        me.unpark();
        me.unpark();
        let (_, first) = timed(thread::park);
        let (_, second) = timed_against(Duration::from_millis(60), || {
            thread::park_timeout(Duration::from_millis(60))
        });
        me.unpark();
        let (_, zero) = timed(|| thread::park_timeout(Duration::ZERO));
        let (_, after_zero) = timed_against(Duration::from_millis(40), || {
            thread::park_timeout(Duration::from_millis(40))
        });
        (first, second, zero, after_zero)
    });
}

/// Parks until woken by an unpark from `waker`, 100 ms in: how long the
/// park took and how often it returned before the flag was set (spurious
/// returns: none on a thread).
fn park_until_flag(waker: impl FnOnce(thread::Thread, Arc<AtomicBool>)) -> (Span, u32) {
    let flag = Arc::new(AtomicBool::new(false));
    waker(thread::current(), flag.clone());
    let mut early = 0;
    let (_, span) = timed_span(|| {
        while !flag.load(Ordering::Acquire) {
            thread::park_timeout(Duration::from_secs(2));
            if !flag.load(Ordering::Acquire) {
                early += 1;
            }
        }
    });
    (span, early)
}

/// `unpark` from a plain thread (a kernel-side `FUTEX_WAKE` of a word in
/// the coroutine's copy of std's thread-locals), from another party of the
/// case (a coroutine of the same worker), and from a coroutine of another
/// runtime: each ends the park, once.
#[test]
fn unpark_from_a_thread_a_party_and_another_runtime() {
    let _ = differential("unpark from elsewhere", |side| {
        let from_thread = park_until_flag(|me, flag| {
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(100));
                flag.store(true, Ordering::Release);
                me.unpark();
            });
        });
        let from_party = park_until_flag(|me, flag| {
            drop(side.spawn(move || {
                thread::sleep(Duration::from_millis(100));
                flag.store(true, Ordering::Release);
                me.unpark();
            }));
        });
        let from_runtime = park_until_flag(|me, flag| {
            thread::spawn(move || {
                let runtime = coroutines::Runtime::builder().workers(1).build().unwrap();
                runtime.block_on(move || {
                    thread::sleep(Duration::from_millis(100));
                    flag.store(true, Ordering::Release);
                    me.unpark();
                });
            });
        });
        (from_thread, from_party, from_runtime)
    });
}

/// An unpark made while the case is busy elsewhere (sleeping) is kept:
/// the next park returns at once, and the one after waits its timeout.
#[test]
fn unpark_by_a_party_before_park_is_a_token() {
    let _ = differential("unpark before park", |side| {
        let me = thread::current();
        side.spawn(move || me.unpark()).join();
        thread::sleep(Duration::from_millis(30));
        let (_, first) = timed(|| thread::park_timeout(Duration::from_secs(2)));
        let (_, second) = timed_against(Duration::from_millis(50), || {
            thread::park_timeout(Duration::from_millis(50))
        });
        (first, second)
    });
}

// ------------------------------------------------------------- identity

/// `thread::current().id()` is stable across waits and distinct from those
/// of parties, of a party's own party, of `std::thread::scope` threads and
/// of named std threads spawned from the case; `JoinHandle::thread()` of a
/// std thread spawned from the case is that thread, and a `Builder::name`
/// std thread sees its name. (The case's own name is a documented limit.)
#[test]
fn ids_of_nested_parties_scoped_and_named_threads() {
    let _ = differential("ids", |side| {
        let id = thread::current().id();
        thread::sleep(Duration::from_millis(5));
        let stable = thread::current().id() == id;
        let (party, nested) = side
            .spawn(move || {
                let mine = thread::current().id();
                let nested = here().spawn(|| thread::current().id()).join();
                (mine, nested)
            })
            .join();
        let scoped: Vec<_> = thread::scope(|s| {
            let a = s.spawn(|| {
                thread::park_timeout(Duration::from_millis(5));
                (
                    thread::current().id(),
                    thread::current().name().map(str::to_owned),
                )
            });
            let b = s.spawn(|| {
                (
                    thread::current().id(),
                    thread::current().name().map(str::to_owned),
                )
            });
            vec![a.join().unwrap(), b.join().unwrap()]
        });
        let named = thread::Builder::new()
            .name("probe-named".into())
            .spawn(|| {
                (
                    thread::current().id(),
                    thread::current().name().map(str::to_owned),
                )
            })
            .unwrap();
        let handle_id = named.thread().id();
        let handle_name = named.thread().name().map(str::to_owned);
        let (named_id, named_name) = named.join().unwrap();
        let ids = [id, party, nested, scoped[0].0, scoped[1].0, named_id];
        let distinct = (0..ids.len()).all(|i| (0..i).all(|j| ids[i] != ids[j]));
        (
            stable,
            distinct,
            thread::current().id() == id,
            [scoped[0].1.clone(), scoped[1].1.clone()],
            handle_id == named_id,
            handle_name,
            named_name,
        )
    });
}

/// What (still unstable) `thread::sleep_until` does on Linux: an absolute
/// `clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)` `after` from now
/// (negative: in the past); its result.
fn sleep_until_ms(after: i64) -> i32 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let ns = now.tv_sec * 1_000_000_000 + now.tv_nsec + after * 1_000_000;
    let at = libc::timespec {
        tv_sec: ns / 1_000_000_000,
        tv_nsec: ns % 1_000_000_000,
    };
    // SAFETY: a valid timespec; no remainder for an absolute sleep.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &at,
            std::ptr::null_mut(),
        )
    }
}

/// `thread::sleep_until`'s call, an absolute `clock_nanosleep`: a
/// deadline 60 ms ahead is kept, one in the past returns at once.
#[test]
fn sleep_until_keeps_an_absolute_deadline() {
    let _ = differential("sleep_until", |_side| {
        let ahead = timed_against(Duration::from_millis(60), || sleep_until_ms(60));
        let behind = timed(|| sleep_until_ms(-5));
        (ahead, behind)
    });
}

/// `available_parallelism` reads the calling thread's CPU affinity: a
/// worker's may differ from a thread's.
#[test]
fn available_parallelism_is_a_threads() {
    let _ = differential("available_parallelism", |_side| {
        outcome(thread::available_parallelism().map(|n| n.get()))
    });
}

// ------------------------------------------------- thread-local destructors

/// A thread-local value that logs its drop under its name.
struct Logged(&'static str);

impl Drop for Logged {
    fn drop(&mut self) {
        log(format!("drop {}", self.0));
    }
}

thread_local! {
    static ORDER_A: Logged = const { Logged("a") };
    static ORDER_B: Logged = const { Logged("b") };
    static ORDER_C: Logged = const { Logged("c") };
}

/// Destructors run newest first, and all before `join` returns.
#[test]
fn thread_local_destructors_run_newest_first() {
    let _ = differential("destructor order", |side| {
        let t = token();
        side.spawn(move || {
            TOKEN.with(|c| c.set(t));
            ORDER_B.with(|_| ());
            ORDER_A.with(|_| ());
            ORDER_C.with(|_| ());
        })
        .join();
        take_log(t)
    });
}

/// Touches the other keys from its destructor.
struct Toucher;

thread_local! {
    static EARLY: Logged = const { Logged("early") };
    static TOUCHER: Toucher = const { Toucher };
    static LATE: Logged = const { Logged("late") };
    static FRESH: Logged = const { Logged("fresh") };
    static COUNTER: RefCell<Vec<u8>> = RefCell::new(vec![1]);
}

impl Drop for Toucher {
    fn drop(&mut self) {
        log(format!("early alive: {}", EARLY.try_with(|_| ()).is_ok()));
        log(format!("self: {}", TOUCHER.try_with(|_| ()).is_ok()));
        log(format!("late alive: {}", LATE.try_with(|_| ()).is_ok()));
        log(format!("fresh: {}", FRESH.try_with(|_| ()).is_ok()));
        let with = caught(|| LATE.with(|_| ()));
        log(format!("late with: {with:?}"));
        let counter = COUNTER.try_with(|c| c.borrow().len());
        log(format!("counter: {counter:?}"));
    }
}

/// In a destructor: a key initialised earlier (not yet destroyed) is
/// alive, the key itself and one destroyed before are not
/// (`AccessError`, and `with` panics), and a key never used before is
/// initialised afresh and destroyed after.
#[test]
fn a_destructor_sees_other_keys_as_a_thread_does() {
    let _ = differential("destructor touches keys", |side| {
        let t = token();
        side.spawn(move || {
            TOKEN.with(|c| c.set(t));
            EARLY.with(|_| ());
            TOUCHER.with(|_| ());
            LATE.with(|_| ());
        })
        .join();
        take_log(t)
    });
}

/// Spawns a party, joins it, parks and sleeps from its destructor.
struct Spawner(thread::ThreadId);

thread_local! {
    static SPAWNER: RefCell<Option<Spawner>> = const { RefCell::new(None) };
}

impl Drop for Spawner {
    fn drop(&mut self) {
        let value = here()
            .spawn(|| {
                thread::sleep(Duration::from_millis(10));
                7
            })
            .join();
        log(format!("party gave {value}"));
        let (_, parked) = timed_against(Duration::from_millis(20), || {
            thread::park_timeout(Duration::from_millis(20))
        });
        log(format!("park_timeout: {parked:?}"));
        let me = thread::current();
        let waker = here().spawn(move || {
            thread::sleep(Duration::from_millis(20));
            me.unpark();
        });
        let (_, woken) = timed_span(|| thread::park_timeout(Duration::from_secs(2)));
        waker.join();
        log(format!("unparked: {woken:?}"));
        log(format!("same id: {}", thread::current().id() == self.0));
        log(format!("panicking: {}", thread::panicking()));
    }
}

/// A destructor may spawn and join a party, `park_timeout`, be unparked by
/// a party, and still be its thread (same id), not panicking.
#[test]
fn a_destructor_spawns_parks_and_is_unparked() {
    let _ = differential("destructor spawns and parks", |side| {
        let t = token();
        side.spawn(move || {
            TOKEN.with(|c| c.set(t));
            SPAWNER.with(|s| *s.borrow_mut() = Some(Spawner(thread::current().id())));
        })
        .join();
        take_log(t)
    });
}

/// A `pthread_key_create` destructor that first uses a `thread_local!`
/// with a destructor: glibc runs the `__cxa_thread_atexit_impl` list once,
/// before the key destructors, so a destructor registered by a key
/// destructor never runs on a thread. A runtime that loops between the two
/// lists runs it.
#[test]
fn a_key_destructor_that_registers_a_thread_local() {
    static KEY: OnceLock<libc::pthread_key_t> = OnceLock::new();
    thread_local! {
        static LATE_ONE: Logged = const { Logged("registered by a key destructor") };
    }
    unsafe extern "C" fn key_dtor(value: *mut libc::c_void) {
        TOKEN.with(|c| c.set(value as u64));
        log("key destructor");
        LATE_ONE.with(|_| ());
    }
    let key = *KEY.get_or_init(|| {
        let mut key = 0;
        // SAFETY: a valid out-pointer and destructor.
        assert_eq!(
            unsafe { libc::pthread_key_create(&mut key, Some(key_dtor)) },
            0
        );
        key
    });
    let _ = differential("key destructor registers", move |side| {
        let t = token();
        side.spawn(move || {
            // SAFETY: a key of this process; the value is a plain number.
            unsafe { libc::pthread_setspecific(key, t as *const libc::c_void) };
        })
        .join();
        thread::sleep(Duration::from_millis(20));
        take_log(t)
    });
}

unsafe extern "C" {
    /// What `thread_local!` registers its destructors with (the runtime
    /// interposes it).
    fn __cxa_thread_atexit_impl(
        dtor: unsafe extern "C" fn(*mut libc::c_void),
        obj: *mut libc::c_void,
        dso: *mut libc::c_void,
    ) -> libc::c_int;
}

/// A key whose destructor logs, sets the key again (as a destructor that
/// uses what it destroys does) and registers a thread-exit destructor (as
/// a first use of a `thread_local!` would).
fn rearming_key() -> libc::pthread_key_t {
    static KEY: OnceLock<libc::pthread_key_t> = OnceLock::new();
    unsafe extern "C" fn registered(obj: *mut libc::c_void) {
        log(format!("registered destructor of {}", obj as u64));
    }
    unsafe extern "C" fn rearm(value: *mut libc::c_void) {
        log("key destructor");
        // SAFETY: the process's key; the value is a plain number; the
        // registration is a function and a plain number.
        unsafe {
            libc::pthread_setspecific(*KEY.get().unwrap(), value);
            __cxa_thread_atexit_impl(registered, value, std::ptr::null_mut());
        }
    }
    *KEY.get_or_init(|| {
        let mut key = 0;
        // SAFETY: a valid out-pointer and destructor.
        assert_eq!(
            unsafe { libc::pthread_key_create(&mut key, Some(rearm)) },
            0
        );
        key
    })
}

/// A key destructor that sets its key again runs at most
/// `PTHREAD_DESTRUCTOR_ITERATIONS` (4) times at thread exit, and the
/// thread-exit destructors it registers meanwhile never run (glibc calls
/// the `__cxa_thread_atexit_impl` list once, before the keys). A runtime
/// whose thread exit alternates between the two lists until both are
/// quiet runs the key destructor more often, and the registrations.
#[test]
fn a_rearming_key_destructor_runs_four_times() {
    let key = rearming_key();
    let _ = differential("rearming key destructor", move |side| {
        let t = token();
        side.spawn(move || {
            TOKEN.with(|c| c.set(t));
            // SAFETY: a key of this process; the value is a plain number.
            unsafe { libc::pthread_setspecific(key, t as *const libc::c_void) };
        })
        .join();
        let log = take_log(t);
        let keys = log.iter().filter(|e| *e == "key destructor").count();
        (keys, log.len() - keys)
    });
}

/// Thread-exit destructors still registered when a thread ends are
/// forgotten with it: a thread that starts afterwards (the next coroutine
/// on the same stack, in a runtime that reuses a thread block) never runs
/// them. The first party leaves registrations behind through
/// [`rearming_key`]; the second, started right after it ends, must run
/// none of them.
#[test]
fn leftover_exit_destructors_do_not_reach_the_next_thread() {
    let key = rearming_key();
    let _ = differential("leftover exit destructors", move |side| {
        let (first, second) = (token(), token());
        side.spawn(move || {
            TOKEN.with(|c| c.set(first));
            // SAFETY: a key of this process; the value is a plain number.
            unsafe { libc::pthread_setspecific(key, first as *const libc::c_void) };
        })
        .join();
        side.spawn(move || {
            TOKEN.with(|c| c.set(second));
            thread::sleep(Duration::from_millis(5));
        })
        .join();
        let _ = take_log(first);
        take_log(second)
    });
}

/// Logs `thread::panicking()` from its destructor.
struct PanickingWitness;

impl Drop for PanickingWitness {
    fn drop(&mut self) {
        log(format!("panicking in exit: {}", thread::panicking()));
    }
}

thread_local! {
    static PANICKING_WITNESS: PanickingWitness = const { PanickingWitness };
}

/// A party that panics ends its thread after the panic was caught: its
/// thread-local destructors see `thread::panicking()` false, and run
/// before `join` returns the payload.
#[test]
fn exit_destructors_of_a_panicked_party_are_not_panicking() {
    let _ = differential("exit after a panic", |side| {
        let t = token();
        let joined = raw_join(side, move || {
            TOKEN.with(|c| c.set(t));
            PANICKING_WITNESS.with(|_| ());
            panic::panic_any::<u32>(11);
        })
        .map_err(|p| payload(&*p));
        (joined, take_log(t))
    });
}

/// A panic in a thread-local destructor aborts the process on a thread
/// ("thread local panicked on drop").
#[test]
fn a_panic_in_a_thread_local_destructor() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("bomb");
        }
    }
    thread_local! {
        static BOMB: Bomb = const { Bomb };
    }
    isolated(|side| {
        let r = raw_join(side, || BOMB.with(|_| ()));
        r.is_ok()
    });
}

// ------------------------------------------------------- std::thread::scope

/// `std::thread::scope` inside the case: scoped threads park on each other
/// (one unparks another) and on timeouts while the case's thread waits for
/// the scope (itself a park woken by the last scoped thread); a scoped
/// thread's panic makes the scope panic with std's message.
#[test]
fn scope_whose_threads_park() {
    let _ = differential("scope with parking threads", |_side| {
        let hits = AtomicUsize::new(0);
        let values = thread::scope(|s| {
            let sleeper = s.spawn(|| {
                let start = Instant::now();
                while hits.load(Ordering::Acquire) == 0 {
                    thread::park();
                }
                start.elapsed() >= Duration::from_millis(40)
            });
            let target = sleeper.thread().clone();
            let hits = &hits;
            let waker = s.spawn(move || {
                thread::sleep(Duration::from_millis(50));
                hits.fetch_add(1, Ordering::Release);
                target.unpark();
            });
            let timer = s.spawn(|| {
                timed_against(Duration::from_millis(30), || {
                    thread::park_timeout(Duration::from_millis(30))
                })
                .1
            });
            waker.join().unwrap();
            (sleeper.join().unwrap(), timer.join().unwrap())
        });
        let panicked = caught(|| {
            thread::scope(|s| {
                s.spawn(|| {
                    thread::sleep(Duration::from_millis(10));
                    panic::panic_any::<u32>(5);
                });
            })
        });
        (values, panicked)
    });
}

// ---------------------------------------------------------------- std::sync

/// `OnceLock::get_or_init` raced by three parties whose initialiser
/// sleeps: one runs it, the others wait (park on the `Once` state) and get
/// its value.
#[test]
fn oncelock_with_a_parking_initialiser() {
    let _ = differential("OnceLock parked init", |side| {
        let cell = Arc::new(OnceLock::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let parties: Vec<_> = (0..3)
            .map(|i| {
                let (cell, runs) = (cell.clone(), runs.clone());
                side.spawn(move || {
                    thread::sleep(Duration::from_millis(i * 10));
                    *cell.get_or_init(|| {
                        runs.fetch_add(1, Ordering::Relaxed);
                        thread::sleep(Duration::from_millis(80));
                        i
                    })
                })
            })
            .collect();
        let values: Vec<_> = parties.into_iter().map(Party::join).collect();
        (values, runs.load(Ordering::Relaxed))
    });
}

/// `Once::call_once` whose initialiser parks and then panics: a party that
/// waited meanwhile panics with std's "poisoned" message, and the `Once`
/// reports poisoned; `call_once_force` then runs.
#[test]
fn once_poisoned_while_another_waits() {
    let _ = differential("Once poisoned", |side| {
        let once = Arc::new(Once::new());
        let first = {
            let once = once.clone();
            side.spawn(move || {
                caught(|| {
                    once.call_once(|| {
                        thread::sleep(Duration::from_millis(60));
                        panic!("init failed")
                    })
                })
            })
        };
        thread::sleep(Duration::from_millis(20));
        let (waiter, span) = timed_span(|| caught(|| once.call_once(|| ())));
        let forced = {
            let mut saw = None;
            once.call_once_force(|state| saw = Some(state.is_poisoned()));
            saw
        };
        (first.join(), waiter, span, forced, once.is_completed())
    });
}

/// `LazyLock` whose initialiser panics in a party: forcing it again
/// panics with std's "poisoned" message.
#[test]
fn lazylock_poisoned_by_a_party() {
    let _ = differential("LazyLock poisoned", |side| {
        let lazy: Arc<LazyLock<u32>> = Arc::new(LazyLock::new(|| {
            thread::sleep(Duration::from_millis(10));
            panic!("lazy init failed")
        }));
        let first = {
            let lazy = lazy.clone();
            raw_join(side, move || **lazy).map_err(|p| payload(&*p))
        };
        let again = caught(|| **lazy);
        (first, again)
    });
}

/// A `Barrier` of four: two parties of the case's kind, one plain thread
/// and the case; exactly one leader per generation, two generations.
#[test]
fn barrier_across_parties_and_a_thread() {
    let _ = differential("Barrier", |side| {
        let barrier = Arc::new(Barrier::new(4));
        let round = |barrier: Arc<Barrier>, delay: u64| {
            move || {
                let mut leaders = 0;
                for _ in 0..2 {
                    thread::sleep(Duration::from_millis(delay));
                    leaders += barrier.wait().is_leader() as usize;
                }
                leaders
            }
        };
        let a = side.spawn(round(barrier.clone(), 5));
        let b = side.spawn(round(barrier.clone(), 15));
        let t = thread::spawn(round(barrier.clone(), 25));
        let mine = round(barrier.clone(), 1)();
        mine + a.join() + b.join() + t.join().unwrap()
    });
}

/// std's futex `RwLock` prefers writers: while a writer waits behind the
/// case's read lock, `try_read` fails, a reader that comes later waits
/// too, and the writer gets the lock before that reader.
#[test]
fn rwlock_prefers_a_waiting_writer() {
    let _ = differential("RwLock writer preference", |side| {
        let lock = Arc::new(RwLock::new(Vec::new()));
        let guard = lock.read().unwrap();
        let writer = {
            let lock = lock.clone();
            side.spawn(move || lock.write().unwrap().push("writer"))
        };
        thread::sleep(Duration::from_millis(40));
        let try_read = match lock.try_read() {
            Ok(_) => "ok",
            Err(TryLockError::WouldBlock) => "would block",
            Err(TryLockError::Poisoned(_)) => "poisoned",
        };
        let reader = {
            let lock = lock.clone();
            side.spawn(move || {
                let mut order = lock.read().unwrap().clone();
                order.push("reader");
                order
            })
        };
        thread::sleep(Duration::from_millis(40));
        let waiting = (!writer.is_finished(), !reader.is_finished());
        drop(guard);
        writer.join();
        (try_read, waiting, reader.join())
    });
}

/// `sync_channel(0)` between the case and a plain thread: a send waits for
/// the thread's receive, a receive for its send, `try_send` without a
/// receiver waiting is `Full`, and `recv_timeout` with no sender keeps its
/// timeout.
#[test]
fn rendezvous_between_the_case_and_a_thread() {
    let _ = differential("sync_channel(0) with a thread", |_side| {
        let (tx, rx) = mpsc::sync_channel::<u32>(0);
        let full = matches!(tx.try_send(1), Err(TrySendError::Full(1)));
        let receiver = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            let got = rx.recv().unwrap();
            (got, rx)
        });
        let (sent, send_span) = timed_span(|| tx.send(2).is_ok());
        let (got, rx) = receiver.join().unwrap();
        let sender = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            tx.send(3).unwrap();
            tx
        });
        let (received, recv_span) = timed_span(|| rx.recv().ok());
        let tx = sender.join().unwrap();
        let (timeout, against) = timed_against(Duration::from_millis(50), || {
            rx.recv_timeout(Duration::from_millis(50))
        });
        drop(tx);
        (
            full,
            (sent, send_span, got),
            (received, recv_span),
            (timeout == Err(RecvTimeoutError::Timeout), against),
        )
    });
}

/// `Condvar::wait_timeout`: with no notification it times out on time
/// (`timed_out()`), even while a party locks and unlocks the mutex; a
/// notification 30 ms in ends it early and not timed out; one
/// `notify_one` among three waiters wakes exactly one, `notify_all` the
/// rest, with no spurious returns.
#[test]
fn condvar_timeouts_and_wake_counts() {
    let _ = differential("Condvar", |side| {
        let pair = Arc::new((Mutex::new(0u32), Condvar::new()));
        let (lock, cv) = &*pair;
        let churn = {
            let pair = pair.clone();
            side.spawn(move || {
                for _ in 0..10 {
                    drop(pair.0.lock().unwrap());
                    thread::sleep(Duration::from_millis(5));
                }
            })
        };
        let ((guard, quiet), quiet_time) = timed_against(Duration::from_millis(80), || {
            cv.wait_timeout(lock.lock().unwrap(), Duration::from_millis(80))
                .unwrap()
        });
        drop(guard);
        churn.join();
        let notifier = {
            let pair = pair.clone();
            side.spawn(move || {
                thread::sleep(Duration::from_millis(30));
                *pair.0.lock().unwrap() = 1;
                pair.1.notify_one();
            })
        };
        let ((guard, notified), notified_span) = timed_span(|| {
            cv.wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(2), |v| *v == 0)
                .unwrap()
        });
        drop(guard);
        notifier.join();
        let returns = Arc::new(AtomicUsize::new(0));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let (pair, returns) = (pair.clone(), returns.clone());
                side.spawn(move || {
                    let guard = pair.0.lock().unwrap();
                    let (_guard, result) =
                        pair.1.wait_timeout(guard, Duration::from_secs(2)).unwrap();
                    returns.fetch_add(1, Ordering::SeqCst);
                    result.timed_out()
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(50));
        let before = returns.load(Ordering::SeqCst);
        cv.notify_one();
        thread::sleep(Duration::from_millis(50));
        let after_one = returns.load(Ordering::SeqCst);
        cv.notify_all();
        let timed_out: Vec<bool> = waiters.into_iter().map(Party::join).collect();
        (
            (quiet.timed_out(), quiet_time),
            (notified.timed_out(), notified_span),
            (before, after_one, timed_out),
        )
    });
}

/// A party that panics holding a `Mutex` poisons it, including for a
/// party parked in `lock()` meanwhile; `clear_poison` clears it.
#[test]
fn mutex_poisoned_across_parties() {
    let _ = differential("Mutex poisoning", |side| {
        let m = Arc::new(Mutex::new(0u32));
        let holder = {
            let m = m.clone();
            side.spawn(move || {
                caught::<()>(|| {
                    let mut g = m.lock().unwrap();
                    *g = 1;
                    thread::sleep(Duration::from_millis(60));
                    panic!("holder")
                })
            })
        };
        thread::sleep(Duration::from_millis(20));
        let waiter = {
            let m = m.clone();
            side.spawn(move || timed_span(|| m.lock().map(|g| *g).map_err(|e| *e.into_inner())))
        };
        let held = holder.join();
        let waited = waiter.join();
        let poisoned = m.is_poisoned();
        m.clear_poison();
        (held, waited, poisoned, m.lock().map(|g| *g).ok())
    });
}

// ----------------------------------------------------------------- panics

/// A panic caught inside the case, then the case goes on: not panicking,
/// it parks, sleeps, uses a contended mutex and spawns; a drop during the
/// unwinding sees `thread::panicking()`.
#[test]
fn catch_unwind_then_carry_on() {
    struct Witness(Arc<AtomicBool>);
    impl Drop for Witness {
        fn drop(&mut self) {
            self.0.store(thread::panicking(), Ordering::SeqCst);
        }
    }
    let _ = differential("catch_unwind and continue", |side| {
        let saw = Arc::new(AtomicBool::new(false));
        let witness = Witness(saw.clone());
        let result = caught::<()>(move || {
            let _w = witness;
            panic!("caught {}", 1)
        });
        let during = saw.load(Ordering::SeqCst);
        let after = thread::panicking();
        let (_, parked) = timed_against(Duration::from_millis(20), || {
            thread::park_timeout(Duration::from_millis(20))
        });
        let m = Arc::new(Mutex::new(()));
        let g = m.lock().unwrap();
        let contender = {
            let m = m.clone();
            side.spawn(move || timed_span(|| drop(m.lock().unwrap())).1)
        };
        thread::sleep(Duration::from_millis(30));
        drop(g);
        let second = caught::<()>(|| panic::panic_any(9u32));
        (result, during, after, parked, contender.join(), second)
    });
}

/// A party unwinding a panic parks in a destructor (a sleep, then a mutex
/// another party holds): it is `panicking()` before and after the waits,
/// and the other party, running meanwhile, is not. The join error is the
/// original payload.
#[test]
fn panicking_is_per_party_across_a_park_during_unwinding() {
    struct Slow(Arc<Mutex<()>>, Arc<Mutex<Vec<String>>>);
    impl Drop for Slow {
        fn drop(&mut self) {
            let before = thread::panicking();
            thread::sleep(Duration::from_millis(40));
            let (_, span) = timed_span(|| drop(self.0.lock().unwrap()));
            let after = thread::panicking();
            self.1
                .lock()
                .unwrap()
                .push(format!("unwinder: {before} {after} {span:?}"));
        }
    }
    let _ = differential("panicking across a park", |side| {
        let m = Arc::new(Mutex::new(()));
        let notes = Arc::new(Mutex::new(Vec::new()));
        let unwinder = {
            let slow = Slow(m.clone(), notes.clone());
            move || {
                let _slow = slow;
                thread::sleep(Duration::from_millis(5));
                panic::panic_any(3u32);
            }
        };
        let other = {
            let (m, notes) = (m.clone(), notes.clone());
            side.spawn(move || {
                thread::sleep(Duration::from_millis(20));
                let g = m.lock().unwrap();
                let mid = thread::panicking();
                thread::sleep(Duration::from_millis(60));
                drop(g);
                notes.lock().unwrap().push(format!("other: {mid}"));
            })
        };
        let joined = raw_join(side, unwinder).map_err(|p| payload(&*p));
        other.join();
        let mut notes = notes.lock().unwrap().clone();
        notes.sort();
        (joined, notes)
    });
}

/// `join`'s error carries the panic's payload as is: a `&'static str` for
/// a literal, a `String` for a formatted message, any type for
/// `panic_any`; `Ok` for a value.
#[test]
fn join_error_payloads_downcast() {
    let _ = differential("join payloads", |side| {
        let outcome = |r: thread::Result<u8>| r.map_err(|p| payload(&*p));
        (
            outcome(raw_join(side, || panic!("literal"))),
            outcome(raw_join(side, || panic!("formatted {}", 2))),
            outcome(raw_join(side, || panic::panic_any(42u32))),
            outcome(raw_join(side, || 8)),
        )
    });
}

// ------------------------------------------------------------------ errno

/// `errno` across waits: `last_os_error()` after a failed call survives a
/// park during which a party of the same worker fails a call of its own;
/// a timed-out `park_timeout`, `Condvar::wait_timeout` and `recv_timeout`
/// leave `ETIMEDOUT` as a thread's futex call does; an unpark-ended park,
/// a sleep, a contended lock and a join leave a value set before alone.
#[test]
fn errno_across_waits() {
    let _ = differential("errno across waits", |side| {
        const MARK: i32 = libc::EXDEV;
        let mut seen = Vec::new();
        // SAFETY: a read of an invalid descriptor fails with EBADF.
        let ret = unsafe { libc::read(-1, std::ptr::null_mut(), 0) };
        let failed = if ret == -1 { errno() } else { 0 };
        let party = side.spawn(|| {
            // SAFETY: as above, with another error.
            unsafe { libc::close(-2) };
            thread::sleep(Duration::from_millis(20));
            errno()
        });
        thread::sleep(Duration::from_millis(40));
        seen.push(("failed read", failed));
        seen.push(("failed read, after a sleep", errno()));
        seen.push(("party's own", party.join()));

        set_errno(MARK);
        thread::park_timeout(Duration::from_millis(10));
        seen.push(("park_timeout timed out", errno()));

        set_errno(MARK);
        let me = thread::current();
        let waker = side.spawn(move || {
            thread::sleep(Duration::from_millis(20));
            me.unpark();
        });
        thread::park_timeout(Duration::from_secs(2));
        seen.push(("park unparked", errno()));
        waker.join();

        set_errno(MARK);
        thread::sleep(Duration::from_millis(5));
        seen.push(("sleep", errno()));

        let m = Arc::new(Mutex::new(()));
        let g = m.lock().unwrap();
        let contender = {
            let m = m.clone();
            side.spawn(move || {
                set_errno(MARK);
                drop(m.lock().unwrap());
                errno()
            })
        };
        thread::sleep(Duration::from_millis(50));
        drop(g);
        seen.push(("contended lock", contender.join()));

        let pair = (Mutex::new(()), Condvar::new());
        set_errno(MARK);
        let _ = pair
            .1
            .wait_timeout(pair.0.lock().unwrap(), Duration::from_millis(10));
        seen.push(("wait_timeout timed out", errno()));

        let (_tx, rx) = mpsc::channel::<()>();
        set_errno(MARK);
        let _ = rx.recv_timeout(Duration::from_millis(10));
        seen.push(("recv_timeout timed out", errno()));

        let short = side.spawn(|| thread::sleep(Duration::from_millis(20)));
        set_errno(MARK);
        short.join();
        seen.push(("join", errno()));
        seen
    });
}

// ------------------------------------------------------------ stdout lock

/// The stdout lock held by a party across a park: another party and the
/// case wait for it (they are other threads to its `ReentrantLock`), and
/// the holder may take it again re-entrantly after the park.
#[test]
fn stdout_lock_held_across_a_park() {
    let _ = differential("stdout lock across a park", |side| {
        let order = Arc::new(Mutex::new(Vec::new()));
        let holder = {
            let order = order.clone();
            side.spawn(move || {
                let mut out = io::stdout().lock();
                order.lock().unwrap().push("holder locked");
                thread::sleep(Duration::from_millis(80));
                let again = io::stdout().lock();
                let _ = out.write_all(b"");
                drop(again);
                order.lock().unwrap().push("holder unlocks");
            })
        };
        thread::sleep(Duration::from_millis(20));
        let other = {
            let order = order.clone();
            side.spawn(move || {
                let (_, span) = timed_span(|| {
                    let mut out = io::stdout().lock();
                    let _ = out.write_all(b"");
                });
                order.lock().unwrap().push("other locked");
                span
            })
        };
        let (_, mine) = timed_span(|| drop(io::stdout().lock()));
        holder.join();
        let other = other.join();
        let order = order.lock().unwrap().clone();
        (mine, other, order)
    });
}
