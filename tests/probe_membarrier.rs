//! Probes of the futex table's disarmed buckets (`c9834a7`): a waker that
//! finds its word's bucket disarmed skips the fence, and the waiter that
//! arms the bucket again runs `membarrier(PRIVATE_EXPEDITED)` for it.
//!
//! Each probe disarms buckets (hundreds of wakes to nobody), then races a
//! wake from a plain thread against a waiter entering the disarmed bucket,
//! and compares a coroutine waiter with an OS thread waiter: same results,
//! no lost wake-up, within a generous bound. Others run the same race where
//! `membarrier` is refused (seccomp) at load time or later, and in a child
//! forked before any runtime existed.

mod support;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier, Condvar, Mutex, Once, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use coroutines::runtime::Builder;
use coroutines::Runtime;
use support::child::{child_case, rerun, run_child, wait_bounded};
use support::futex_table::{bucket_of, noise_beside, noise_per_bucket, IDLE};
use support::seccomp::{self, Refused, Threads};
use support::watchdog_on;

/// `FUTEX_WAKE_PRIVATE` through libc's `syscall` (the hooked symbol).
fn futex_wake(word: &AtomicU32, n: i32) -> i64 {
    // SAFETY: a valid, aligned word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            n,
        )
    }
}

/// `FUTEX_WAIT_PRIVATE` with a relative timeout; `Err(errno)` on failure.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) -> Result<(), i32> {
    let ts = support::timespec(timeout);
    // SAFETY: a valid, aligned word and timespec.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            &ts as *const libc::timespec,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(support::errno())
    }
}

/// Wakes nobody [`IDLE`] times on every bucket: disarms every bucket that
/// has no parked coroutine (where membarrier works).
fn disarm_all() {
    for word in noise_per_bucket() {
        for _ in 0..IDLE {
            futex_wake(word, 1);
        }
    }
}

/// A tiny xorshift for the racing sides' random delays.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn spin(&mut self, max: u64) {
        for _ in 0..self.next() % max {
            std::hint::spin_loop();
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Thread,
    Coroutine,
}

/// Runs `body` on `side` (a coroutine of the running runtime or a new OS
/// thread) and returns its value.
fn on<T: Send + 'static>(side: Side, body: impl FnOnce() -> T + Send + 'static) -> T {
    match side {
        Side::Thread => thread::spawn(body).join().unwrap(),
        Side::Coroutine => coroutines::spawn(body).join().unwrap(),
    }
}

fn builder(workers: usize, identity: bool) -> Builder {
    Runtime::builder()
        .workers(workers)
        .thread_identity(identity)
}

/// What [`raw_race`] reports: the rounds the waiter saw, and its waits that
/// timed out although the word had changed (lost wake-ups).
#[derive(Debug, PartialEq, Eq)]
struct Race {
    seen: u32,
    lost: u32,
}

/// The exact race of the change, on raw futex words. Each round a plain
/// thread wakes nobody [`IDLE`] times on a word of the handoff word's bucket
/// (disarming it: the waiter is not parked then), opens the gate, and after
/// a random delay stores the round (a plain `mov`, the weakest store) and
/// wakes the word. The waiter, after a random delay of its own, waits on the
/// word with its old value: it enters the disarmed bucket while the store
/// and the wake are under way. A wait that times out while the word holds
/// the new round is a lost wake-up.
fn raw_race(side: Side, rounds: u32, seed: u64) -> Race {
    struct Shared {
        word: AtomicU32,
        gate: AtomicU32,
        ack: AtomicU32,
    }
    let shared = Arc::new(Shared {
        word: AtomicU32::new(0),
        gate: AtomicU32::new(0),
        ack: AtomicU32::new(0),
    });
    let waker = {
        let shared = shared.clone();
        thread::spawn(move || {
            let noise = noise_beside(shared.word.as_ptr() as usize);
            let mut rng = Rng(seed | 1);
            for round in 1..=rounds {
                for _ in 0..IDLE {
                    futex_wake(noise, 1);
                }
                shared.gate.store(round, Ordering::SeqCst);
                rng.spin(3000);
                shared.word.store(round, Ordering::Release);
                futex_wake(&shared.word, 1);
                while shared.ack.load(Ordering::Acquire) < round {
                    thread::yield_now();
                }
            }
        })
    };
    let race = on(side, move || {
        let mut rng = Rng(seed.rotate_left(17) | 1);
        let mut race = Race { seen: 0, lost: 0 };
        for round in 1..=rounds {
            while shared.gate.load(Ordering::Acquire) < round {
                std::hint::spin_loop();
            }
            rng.spin(3000);
            loop {
                let seen = shared.word.load(Ordering::Acquire);
                if seen >= round {
                    break;
                }
                if futex_wait(&shared.word, seen, Duration::from_secs(2)) == Err(libc::ETIMEDOUT)
                    && shared.word.load(Ordering::Acquire) >= round
                {
                    race.lost += 1;
                }
            }
            race.seen += 1;
            shared.ack.store(round, Ordering::Release);
        }
        race
    });
    waker.join().unwrap();
    race
}

/// The raw race, thread waiter vs coroutine waiter, on one worker and two,
/// identity on and off.
#[test]
fn raw_wakes_into_a_disarmed_bucket_are_never_lost() {
    const ROUNDS: u32 = 3000;
    let expected = Race {
        seen: ROUNDS,
        lost: 0,
    };
    for (workers, identity) in [(1, true), (2, false), (2, true)] {
        for side in [Side::Thread, Side::Coroutine] {
            let what = format!("raw race, {side:?} waiter, {workers} workers, identity {identity}");
            let race = watchdog_on(
                &what,
                Duration::from_secs(30),
                builder(workers, identity),
                move || raw_race(side, ROUNDS, 0x9E37_79B9 + workers as u64),
            );
            assert_eq!(race, expected, "{what}");
        }
    }
}

/// Several coroutines, each on its own word, all words in one bucket: the
/// first to enter arms it (with membarrier), the others enter it armed.
/// Between rounds the bucket is disarmed by wakes on another word of it.
#[test]
fn words_sharing_a_disarmed_bucket_each_get_their_wake() {
    const WAITERS: usize = 6;
    const ROUNDS: u32 = 200;
    // Words of one bucket, from the noise table's neighbours.
    static WORDS: [AtomicU32; 8192] = [const { AtomicU32::new(0) }; 8192];
    let target = bucket_of(WORDS[0].as_ptr() as usize);
    let same: Vec<&'static AtomicU32> = WORDS
        .iter()
        .filter(|w| bucket_of(w.as_ptr() as usize) == target)
        .take(WAITERS + 1)
        .collect();
    assert_eq!(same.len(), WAITERS + 1, "too few colliding words");
    let run_side = |side: Side| {
        for word in &same {
            word.store(0, Ordering::SeqCst);
        }
        let same = same.clone();
        watchdog_on(
            &format!("colliding words, {side:?}"),
            Duration::from_secs(20),
            builder(2, true),
            move || {
                let arrived = Arc::new(AtomicU32::new(0));
                let waiters: Vec<_> = (0..WAITERS)
                    .map(|i| {
                        let word = same[i + 1];
                        let arrived = arrived.clone();
                        let body = move || {
                            let mut seen = Vec::new();
                            for round in 1..=ROUNDS {
                                arrived.fetch_add(1, Ordering::SeqCst);
                                while word.load(Ordering::Acquire) < round {
                                    let _ = futex_wait(word, round - 1, Duration::from_secs(5));
                                }
                                seen.push(round);
                            }
                            seen
                        };
                        match side {
                            Side::Thread => Err(thread::spawn(body)),
                            Side::Coroutine => Ok(coroutines::spawn(body)),
                        }
                    })
                    .collect();
                let noise = same[0];
                let mut rng = Rng(7);
                off_thread(|| {
                    for round in 1..=ROUNDS {
                        let want = round * WAITERS as u32;
                        while arrived.load(Ordering::SeqCst) < want {
                            thread::yield_now();
                        }
                        rng.spin(5000);
                        for i in 0..WAITERS {
                            same[i + 1].store(round, Ordering::Release);
                            futex_wake(same[i + 1], 1);
                        }
                        // Nobody waits now or soon: disarm for the next round.
                        if round % 4 == 0 {
                            for _ in 0..IDLE {
                                futex_wake(noise, 1);
                            }
                        }
                    }
                });
                let started = Instant::now();
                let seen: Vec<Vec<u32>> = waiters
                    .into_iter()
                    .map(|w| match w {
                        Ok(c) => c.join().unwrap(),
                        Err(t) => t.join().unwrap(),
                    })
                    .collect();
                (seen, started.elapsed())
            },
        )
    };
    let (threads, _) = run_side(Side::Thread);
    let (coroutines, slow) = run_side(Side::Coroutine);
    assert_eq!(coroutines, threads);
    // Every wait is woken, none rescued by its 5 s timeout.
    assert!(
        slow < Duration::from_secs(5),
        "a wait ran into its timeout: {slow:?}"
    );
}

/// Runs `f` on a plain thread (the wakers of these probes are never
/// coroutines) and returns its value.
fn off_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|s| s.spawn(f).join().unwrap())
}

/// One std::sync primitive's handoff from a plain thread to a waiter on
/// `side`, `rounds` times; every bucket is disarmed before each handoff.
/// Returns what the waiter received, in order.
fn std_handoffs(kind: &'static str, side: Side, rounds: u64) -> Vec<u64> {
    let go = Arc::new(AtomicU64::new(0));
    let rng = Mutex::new(Rng(0xC0FFEE));
    let delay = || rng.lock().unwrap().spin(4000);
    // The waiter, started on `side`: waits for `go` to reach the round,
    // then blocks in the primitive.
    macro_rules! waiter {
        ($body:expr) => {{
            let go = go.clone();
            let body = $body;
            let mut rng = Rng(0xBEEF);
            let waiter = move || {
                (1..=rounds)
                    .map(|round| {
                        while go.load(Ordering::Acquire) < round {
                            std::hint::spin_loop();
                        }
                        rng.spin(4000);
                        body(round)
                    })
                    .collect::<Vec<u64>>()
            };
            match side {
                Side::Thread => Err(thread::spawn(waiter)),
                Side::Coroutine => Ok(coroutines::spawn(waiter)),
            }
        }};
    }
    let join = |w: Result<coroutines::JoinHandle<Vec<u64>>, thread::JoinHandle<Vec<u64>>>| match w {
        Ok(c) => c.join().unwrap(),
        Err(t) => t.join().unwrap(),
    };
    let open = |round: u64| {
        disarm_all();
        go.store(round, Ordering::Release);
    };
    // A lock the thread holds while it opens the round; the waiter blocks
    // in `read` until the thread lets go.
    let held = |read: Arc<dyn Fn() -> u64 + Send + Sync>,
                hold: &(dyn Fn(u64, &dyn Fn()) + Sync)| {
        let done = Arc::new(AtomicU64::new(0));
        let w = waiter!({
            let done = done.clone();
            move |_| {
                let v = read();
                done.store(v, Ordering::Release);
                v
            }
        });
        off_thread(|| {
            for round in 1..=rounds {
                hold(round, &|| {
                    open(round);
                    delay();
                });
                while done.load(Ordering::Acquire) < round {
                    thread::yield_now();
                }
            }
        });
        join(w)
    };
    match kind {
        "condvar" => {
            let pair = Arc::new((Mutex::new(0u64), Condvar::new()));
            let w = waiter!({
                let pair = pair.clone();
                move |round| {
                    let (lock, cv) = &*pair;
                    *cv.wait_while(lock.lock().unwrap(), |v| *v < round).unwrap()
                }
            });
            off_thread(|| {
                for round in 1..=rounds {
                    open(round);
                    delay();
                    *pair.0.lock().unwrap() = round;
                    pair.1.notify_one();
                }
            });
            join(w)
        }
        "mutex" => {
            let lock = Arc::new(Mutex::new(0u64));
            let reader = lock.clone();
            held(
                Arc::new(move || *reader.lock().unwrap()),
                &|round, inside| {
                    let mut guard = lock.lock().unwrap();
                    *guard = round;
                    inside();
                },
            )
        }
        "rwlock" => {
            let lock = Arc::new(RwLock::new(0u64));
            let reader = lock.clone();
            held(
                Arc::new(move || *reader.read().unwrap()),
                &|round, inside| {
                    let mut guard = lock.write().unwrap();
                    *guard = round;
                    inside();
                },
            )
        }
        "once" => {
            let onces: Arc<Vec<Once>> = Arc::new((0..=rounds).map(|_| Once::new()).collect());
            let values = Arc::new(AtomicU64::new(0));
            let w = waiter!({
                let (onces, values) = (onces.clone(), values.clone());
                move |round: u64| {
                    onces[round as usize].call_once(|| panic!("the waker runs it"));
                    values.load(Ordering::Acquire)
                }
            });
            off_thread(|| {
                for round in 1..=rounds {
                    let mut inner = Rng(round);
                    onces[round as usize].call_once(|| {
                        open(round);
                        inner.spin(20_000);
                        values.store(round, Ordering::Release);
                    });
                }
            });
            join(w)
        }
        "mpsc" => {
            let (tx, rx) = mpsc::channel::<u64>();
            let rx = Arc::new(Mutex::new(rx));
            let w = waiter!(move |_| rx.lock().unwrap().recv().unwrap());
            off_thread(|| {
                for round in 1..=rounds {
                    open(round);
                    delay();
                    tx.send(round).unwrap();
                }
            });
            join(w)
        }
        "barrier" => {
            let barriers: Arc<Vec<Barrier>> =
                Arc::new((0..=rounds).map(|_| Barrier::new(2)).collect());
            let w = waiter!({
                let barriers = barriers.clone();
                move |round: u64| {
                    barriers[round as usize].wait();
                    round
                }
            });
            off_thread(|| {
                for round in 1..=rounds {
                    open(round);
                    delay();
                    barriers[round as usize].wait();
                }
            });
            join(w)
        }
        "park" => {
            let handle = Arc::new(Mutex::new(None::<thread::Thread>));
            let flag = Arc::new(AtomicU64::new(0));
            let w = waiter!({
                let (handle, flag) = (handle.clone(), flag.clone());
                move |round| {
                    *handle.lock().unwrap() = Some(thread::current());
                    while flag.load(Ordering::Acquire) < round {
                        thread::park_timeout(Duration::from_secs(5));
                    }
                    round
                }
            });
            off_thread(|| {
                for round in 1..=rounds {
                    open(round);
                    delay();
                    flag.store(round, Ordering::Release);
                    let target = loop {
                        if let Some(t) = handle.lock().unwrap().clone() {
                            break t;
                        }
                        thread::yield_now();
                    };
                    target.unpark();
                }
            });
            join(w)
        }
        _ => unreachable!(),
    }
}

/// Each std::sync primitive, thread waiter vs coroutine waiter (one worker
/// with identity, two without): the same values, promptly.
#[test]
fn std_sync_handoffs_after_every_bucket_is_disarmed() {
    const ROUNDS: u64 = 6;
    let kinds = [
        "condvar", "mutex", "rwlock", "once", "mpsc", "barrier", "park",
    ];
    let expected: Vec<u64> = (1..=ROUNDS).collect();
    for kind in kinds {
        for (workers, identity) in [(1, true), (2, false)] {
            for side in [Side::Thread, Side::Coroutine] {
                let what = format!("{kind}, {side:?}, {workers} workers, identity {identity}");
                let started = Instant::now();
                let got = watchdog_on(
                    &what,
                    Duration::from_secs(20),
                    builder(workers, identity),
                    move || std_handoffs(kind, side, ROUNDS),
                );
                assert_eq!(got, expected, "{what}");
                // park's 5 s timeout must not be what ended a wait.
                assert!(started.elapsed() < Duration::from_secs(4), "{what}: slow");
            }
        }
    }
}

/// `membarrier(PRIVATE_EXPEDITED)` as the crate calls it: 0, or -errno.
fn membarrier_expedited() -> i64 {
    // SAFETY: a command without pointers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            libc::MEMBARRIER_CMD_PRIVATE_EXPEDITED,
            0,
            0,
        )
    };
    if r == 0 {
        0
    } else {
        -i64::from(support::errno())
    }
}

/// The child's share of the seccomp and fork probes: the raw race with a
/// coroutine waiter and a thread waiter, compared.
fn race_in_child(rounds: u32) {
    let want = Race {
        seen: rounds,
        lost: 0,
    };
    for side in [Side::Thread, Side::Coroutine] {
        let race = watchdog_on(
            "race in child",
            Duration::from_secs(20),
            builder(2, true),
            move || raw_race(side, rounds, 12345),
        );
        assert_eq!(race, want, "{side:?}");
        // Idle wakes, then a coroutine parks on a condvar: the path that
        // arms a disarmed bucket.
        let got = watchdog_on(
            "condvar in child",
            Duration::from_secs(20),
            builder(1, true),
            move || std_handoffs("condvar", side, 3),
        );
        assert_eq!(got, vec![1, 2, 3], "{side:?}");
    }
}

/// Where `membarrier` fails from the start (a seccomp filter inherited over
/// exec), the constructor cannot register, buckets stay armed, and the
/// races behave as anywhere else.
#[test]
fn membarrier_refused_at_load_keeps_buckets_armed() {
    match child_case().as_deref() {
        Some("deny-then-exec") => {
            deny_membarrier(libc::ENOSYS);
            let out = rerun("denied-at-load").output().unwrap();
            assert!(
                out.status.success(),
                "grandchild: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Some("denied-at-load") => {
            assert_eq!(
                membarrier_expedited(),
                -i64::from(libc::ENOSYS),
                "the filter holds"
            );
            race_in_child(500);
        }
        Some(_) => {}
        None => {
            run_child(
                "denied at load",
                rerun("deny-then-exec"),
                Duration::from_secs(30),
            );
        }
    }
}

/// A program that confines itself with seccomp after start (after the
/// constructor registered), refusing `membarrier` as allowlist sandboxes do.
/// Its futex waits must keep working as a thread's do. (At `c9834a7` the
/// first coroutine to arm a disarmed bucket aborted the process; now it
/// waits a millisecond instead, and buckets stop disarming.)
#[test]
fn membarrier_refused_after_start_does_not_abort() {
    match child_case().as_deref() {
        Some("denied-after-start") => {
            deny_membarrier(libc::EPERM);
            assert_eq!(
                membarrier_expedited(),
                -i64::from(libc::EPERM),
                "the filter holds"
            );
            race_in_child(200);
        }
        Some(_) => {}
        None => {
            let mut child = rerun("denied-after-start");
            let (out, ended) = wait_bounded(child.spawn().unwrap(), Duration::from_secs(30));
            assert!(
                ended && out.status.success(),
                "the child failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A process forked before it built any runtime (so the fork watcher is not
/// installed) whose child builds one: the registration is the parent's,
/// inherited over fork, and a child coroutine arming a bucket that the
/// parent disarmed must neither abort nor lose a wake.
#[test]
fn a_child_forked_before_any_runtime_runs_its_own() {
    match child_case().as_deref() {
        Some("fork-first") => {
            disarm_all();
            // SAFETY: the child only runs Rust code of this test and exits.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0);
            if pid == 0 {
                let ok = std::panic::catch_unwind(|| race_in_child(300)).is_ok();
                // SAFETY: leaves the forked child without running the
                // harness's exit path twice.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            let mut status = 0;
            // SAFETY: waits for our own child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "forked child: status {status:#x}"
            );
        }
        Some(_) => {}
        None => {
            run_child("fork first", rerun("fork-first"), Duration::from_secs(40));
        }
    }
}

/// A seccomp filter on the calling thread (and the threads it starts, and
/// across exec) that fails `membarrier` with `errno`.
fn deny_membarrier(errno: i32) {
    assert!(
        seccomp::refuse(
            Refused::Syscall(libc::SYS_membarrier),
            errno,
            Threads::Calling
        ),
        "seccomp: {}",
        std::io::Error::last_os_error()
    );
}
