//! Round N probes against how a runtime stops (`Runtime::drop`, `stop`,
//! the "coroutines-stop" thread, the workers' final drain, the shutdown
//! re-check in `schedule`, `Poller::close`, pidfd release).
//!
//! - A runtime dropped from outside, but by a coroutine (of another
//!   runtime): `stop` runs on that coroutine, whose joins park it; if its
//!   own runtime stops meanwhile it is abandoned in the middle of `stop`.
//! - Drops from inside while neighbours spawn, wait on helpers, children
//!   and threads; a dropper that panics; a drop from a scoped coroutine,
//!   from a coroutine's thread-local destructor, from a helper thread of the
//!   runtime itself, from the closure of a coroutine that never started.
//! - A hundred runtimes dropped from inside: threads and descriptors come
//!   back; descriptors opened right after the drop are left alone.
//! - Process exit while "coroutines-stop" runs.
//!
//! Cases that count threads or descriptors run one at a time (`serial`).

mod support;

use support::{fds, serial, tasks};

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use coroutines::{JoinHandle, Runtime};
use support::{compute, join_within, payload_text, raw_sleep};

// ------------------------------------------------------------------ helpers

/// Waits up to `limit` for the thread and descriptor counts to come back to
/// `(tasks0, fds0)` plus `slack`; returns the last counts.
fn settle(tasks0: usize, fds0: usize, slack: usize, limit: Duration) -> (usize, usize) {
    let start = Instant::now();
    loop {
        let (t, f) = (tasks(), fds());
        if (t <= tasks0 + slack && f <= fds0 + slack) || start.elapsed() > limit {
            return (t, f);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn runtime(workers: usize) -> Runtime {
    Runtime::builder()
        .workers(workers)
        .blocked_worker_warnings(false)
        .build()
        .unwrap()
}

type Slot = Arc<Mutex<Option<Runtime>>>;

fn slot() -> Slot {
    Arc::new(Mutex::new(None))
}

/// Takes the runtime out of its slot, waiting (up to 3 s) for the test to
/// put it there.
fn take(slot: &Slot) -> Runtime {
    let start = Instant::now();
    loop {
        if let Some(rt) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return rt;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the runtime never came to its slot"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// Waits (parking if in a coroutine: `thread::sleep` is hooked) until
/// `flag` is set; false after 3 s.
fn wait_flag(flag: &AtomicBool) -> bool {
    let start = Instant::now();
    while !flag.load(Ordering::SeqCst) {
        if start.elapsed() > Duration::from_secs(3) {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
    true
}

/// A coroutine of `runtime` parked in a long sleep: its join must fail
/// once the runtime has stopped.
fn parked_sleeper(runtime: &Runtime) -> JoinHandle<()> {
    runtime.spawn(|| thread::sleep(Duration::from_secs(60)))
}

fn expect_failed(what: &str, handle: JoinHandle<()>) {
    match join_within(handle, Duration::from_secs(3)) {
        None => panic!("{what}: its join hangs (3 s) after its runtime was dropped"),
        Some(Ok(())) => panic!("{what}: joined Ok, yet it was parked for 60 s"),
        Some(Err(_)) => {}
    }
}

// ------------- 1-2. the outside path run on a coroutine that is abandoned

/// A coroutine of runtime B drops runtime A (the "outside" path: `stop`
/// runs on the coroutine, and joining A's busy worker parks it on B's
/// helper thread). B is dropped meanwhile: the coroutine is abandoned in
/// the middle of A's `stop`, which never goes on. A's parked coroutine
/// must still have its join fail, and A's descriptors must be closed.
#[test]
fn outside_drop_on_a_coroutine_whose_runtime_stops_meanwhile() {
    let _serial = serial();
    let (tasks0, fds0) = (tasks(), fds());
    let a = runtime(1);
    let sleeper = parked_sleeper(&a);
    // Holds A's only worker for 400 ms: the join of it parks the dropper.
    let started = Arc::new(AtomicBool::new(false));
    let s = started.clone();
    let _busy = a.spawn(move || {
        s.store(true, Ordering::SeqCst);
        compute(Duration::from_millis(400));
    });
    assert!(wait_flag(&started));
    let b = runtime(1);
    let dropping = Arc::new(AtomicBool::new(false));
    let d = dropping.clone();
    let dropper = b.spawn(move || {
        d.store(true, Ordering::SeqCst);
        drop(a);
    });
    assert!(wait_flag(&dropping));
    thread::sleep(Duration::from_millis(100));
    // The dropper is parked in the join of A's worker.
    drop(b);
    let _ = join_within(dropper, Duration::from_secs(5));
    let (t, f) = settle(tasks0, fds0, 2, Duration::from_secs(1));
    eprintln!("after 1 s: threads {tasks0} -> {t}, descriptors {fds0} -> {f}");
    expect_failed("A's parked coroutine", sleeper);
    let (t, f) = settle(tasks0, fds0, 2, Duration::from_secs(1));
    assert!(
        t <= tasks0 + 2 && f <= fds0 + 2,
        "threads {tasks0} -> {t}, descriptors {fds0} -> {f}: A's stop never finished"
    );
}

/// The same, with no one else involved: a coroutine drops its own runtime
/// (inside), then another runtime (outside path, whose joins park it). Its
/// own runtime stops as it parks and abandons it: the second runtime's
/// stop must still complete.
#[test]
fn dropper_drops_another_runtime_after_its_own() {
    let _serial = serial();
    let (tasks0, fds0) = (tasks(), fds());
    let other = runtime(1);
    let sleeper = parked_sleeper(&other);
    let started = Arc::new(AtomicBool::new(false));
    let s = started.clone();
    let _busy = other.spawn(move || {
        s.store(true, Ordering::SeqCst);
        compute(Duration::from_millis(300));
    });
    assert!(wait_flag(&started));
    let own = runtime(2);
    let own_slot = slot();
    let o = own_slot.clone();
    let dropper = own.spawn(move || {
        drop(take(&o));
        drop(other);
        5u32
    });
    *own_slot.lock().unwrap() = Some(own);
    match join_within(dropper, Duration::from_secs(5)) {
        None => panic!("the dropper's join hangs"),
        Some(r) => eprintln!("dropper: {:?}", r.map_err(|p| payload_text(&*p))),
    }
    let (t, f) = settle(tasks0, fds0, 2, Duration::from_secs(1));
    eprintln!("after 1 s: threads {tasks0} -> {t}, descriptors {fds0} -> {f}");
    expect_failed("the other runtime's parked coroutine", sleeper);
    let (t, f) = settle(tasks0, fds0, 2, Duration::from_secs(1));
    assert!(
        t <= tasks0 + 2 && f <= fds0 + 2,
        "threads {tasks0} -> {t}, descriptors {fds0} -> {f}"
    );
}

// --------------------------------------- 3-5. drops from inside, neighbours

/// A neighbour spawns in a tight loop (never parking) on the other worker
/// while a coroutine drops the runtime: the neighbour gets an error from
/// spawn and ends, and every handle it got joins (Ok or Err).
#[test]
fn inside_drop_while_a_neighbour_spawns_in_a_loop() {
    let _serial = serial();
    let (tasks0, fds0) = (tasks(), fds());
    let rt = runtime(2);
    let rt_slot = slot();
    let spawning = Arc::new(AtomicBool::new(false));
    let sp = spawning.clone();
    let spawner = rt.spawn(move || {
        let mut handles = Vec::new();
        let start = Instant::now();
        loop {
            match coroutines::Builder::new().spawn(|| compute(Duration::from_micros(20))) {
                Ok(h) => handles.push(h),
                Err(_) => break,
            }
            if handles.len() == 64 {
                sp.store(true, Ordering::SeqCst);
            }
            if start.elapsed() > Duration::from_secs(3) || handles.len() > 200_000 {
                break;
            }
        }
        handles
    });
    let s = rt_slot.clone();
    let sp = spawning.clone();
    let dropper = rt.spawn(move || {
        assert!(wait_flag(&sp));
        drop(take(&s));
    });
    *rt_slot.lock().unwrap() = Some(rt);
    let _ = join_within(dropper, Duration::from_secs(5)).expect("the dropper's join hangs");
    let handles = match join_within(spawner, Duration::from_secs(5)) {
        None => panic!("the spawner's join hangs"),
        Some(Ok(h)) => h,
        Some(Err(_)) => Vec::new(),
    };
    let n = handles.len();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let ended = handles
            .into_iter()
            .map(|h| h.join().is_ok())
            .filter(|ok| *ok)
            .count();
        let _ = tx.send(ended);
    });
    let ok = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|_| {
        panic!("some of the {n} coroutines spawned around the drop never join")
    });
    eprintln!("{n} spawned, {ok} ran");
    let (t, f) = settle(tasks0, fds0, 2, Duration::from_secs(3));
    assert!(
        t <= tasks0 + 2 && f <= fds0 + 2,
        "threads {tasks0} -> {t}, fds {fds0} -> {f}"
    );
}

/// Neighbours parked in spawn_blocking, a child wait and a thread join
/// when a coroutine drops the runtime: every join returns, and once the
/// helper's job and the thread end, the threads come back.
#[test]
fn inside_drop_while_neighbours_wait_on_helpers_children_and_threads() {
    let _serial = serial();
    let (tasks0, fds0) = (tasks(), fds());
    let rt = runtime(2);
    let rt_slot = slot();
    let blocking = rt.spawn(|| {
        let _ = coroutines::spawn_blocking(|| raw_sleep(Duration::from_millis(300))).join();
    });
    let child = rt.spawn(|| {
        let _ = Command::new("sleep").arg("0.3").status();
    });
    let joiner = rt.spawn(|| {
        let _ = thread::spawn(|| raw_sleep(Duration::from_millis(300))).join();
    });
    let s = rt_slot.clone();
    let dropper = rt.spawn(move || {
        thread::sleep(Duration::from_millis(50));
        drop(take(&s));
    });
    *rt_slot.lock().unwrap() = Some(rt);
    assert!(
        join_within(dropper, Duration::from_secs(5)).is_some(),
        "dropper hangs"
    );
    for (what, h) in [("blocking", blocking), ("child", child), ("joiner", joiner)] {
        assert!(
            join_within(h, Duration::from_secs(5)).is_some(),
            "{what}'s join hangs"
        );
    }
    // Reap the sleep child the abandoned coroutine left (documented).
    thread::sleep(Duration::from_millis(400));
    unsafe { while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {} }
    let (t, f) = settle(tasks0, fds0, 2, Duration::from_secs(3));
    assert!(
        t <= tasks0 + 2 && f <= fds0 + 2,
        "threads {tasks0} -> {t}, fds {fds0} -> {f}"
    );
}

/// A dropper that panics right after dropping its runtime, and one that
/// computes 200 ms after it: Err (or Ok) for the first, Ok for the
/// second; never a hang.
#[test]
fn dropper_that_panics_or_computes_after_the_drop() {
    let _serial = serial();
    for panics in [true, false] {
        let rt = runtime(2);
        let rt_slot = slot();
        let sleeper = parked_sleeper(&rt);
        let s = rt_slot.clone();
        let dropper = rt.spawn(move || {
            drop(take(&s));
            if panics {
                panic!("dropper panics after the drop");
            }
            compute(Duration::from_millis(200));
            9u32
        });
        *rt_slot.lock().unwrap() = Some(rt);
        match join_within(dropper, Duration::from_secs(5)) {
            None => panic!("the dropper's join hangs (panics: {panics})"),
            Some(Ok(v)) => assert!(!panics && v == 9, "panics: {panics}, got {v}"),
            Some(Err(p)) => assert!(
                panics,
                "the computing dropper failed: {}",
                payload_text(&*p)
            ),
        }
        expect_failed("the sleeper", sleeper);
    }
}

// ------------------------------------------- 6-9. unusual droppers

/// A scoped coroutine drops the runtime while its scope's owner waits for
/// it and it writes to the owner's stack for 100 ms after the drop: the
/// owner must not resume (the scope may not return while it runs), and
/// the owner's join must return.
#[test]
fn drop_from_a_scoped_coroutine() {
    let _serial = serial();
    let rt = runtime(2);
    let rt_slot = slot();
    let s = rt_slot.clone();
    let returned_early = Arc::new(AtomicBool::new(false));
    let r = returned_early.clone();
    let writing = Arc::new(AtomicBool::new(false));
    let w = writing.clone();
    let owner = rt.spawn(move || {
        let mut cells = vec![0u64; 16];
        coroutines::scope(|sc| {
            let cells = &mut cells;
            sc.spawn(move || {
                drop(take(&s));
                w.store(true, Ordering::SeqCst);
                let start = Instant::now();
                while start.elapsed() < Duration::from_millis(100) {
                    cells[0] += 1;
                    std::hint::black_box(&mut *cells);
                }
                w.store(false, Ordering::SeqCst);
            });
        });
        if writing.load(Ordering::SeqCst) {
            r.store(true, Ordering::SeqCst);
        }
        cells[0]
    });
    *rt_slot.lock().unwrap() = Some(rt);
    let res = join_within(owner, Duration::from_secs(5)).expect("the scope owner's join hangs");
    assert!(
        !returned_early.load(Ordering::SeqCst),
        "the scope returned while its coroutine still wrote to the owner's stack"
    );
    eprintln!("owner: {:?}", res.map_err(|p| payload_text(&*p)));
}

thread_local! {
    static KEPT: RefCell<Option<Runtime>> = const { RefCell::new(None) };
}

/// A coroutine moves its own runtime into a thread-local and returns: the
/// runtime is dropped by the coroutine's thread-local destructors. Its
/// join returns, and the runtime's threads go away.
#[test]
fn drop_from_a_thread_local_destructor_of_its_own_coroutine() {
    let _serial = serial();
    let (tasks0, fds0) = (tasks(), fds());
    let rt = runtime(2);
    let rt_slot = slot();
    let sleeper = parked_sleeper(&rt);
    let s = rt_slot.clone();
    let keeper = rt.spawn(move || {
        KEPT.with(|k| *k.borrow_mut() = Some(take(&s)));
        3u32
    });
    *rt_slot.lock().unwrap() = Some(rt);
    let res = join_within(keeper, Duration::from_secs(5)).expect("the keeper's join hangs");
    eprintln!("keeper: {:?}", res.map_err(|p| payload_text(&*p)));
    expect_failed("the sleeper", sleeper);
    let (t, f) = settle(tasks0, fds0, 2, Duration::from_secs(3));
    assert!(
        t <= tasks0 + 2 && f <= fds0 + 2,
        "threads {tasks0} -> {t}, fds {fds0} -> {f}"
    );
}

/// A spawn_blocking job of the runtime drops the runtime (a helper thread
/// of its own pool: the outside path, closing the pool it runs on).
#[test]
fn drop_from_a_helper_thread_of_its_own_pool() {
    let _serial = serial();
    let (tasks0, fds0) = (tasks(), fds());
    let rt = runtime(2);
    let rt_slot = slot();
    let sleeper = parked_sleeper(&rt);
    let s = rt_slot.clone();
    let job = rt.spawn(move || coroutines::spawn_blocking(move || drop(take(&s))).join());
    *rt_slot.lock().unwrap() = Some(rt);
    let _ = join_within(job, Duration::from_secs(5)).expect("the job's join hangs");
    expect_failed("the sleeper", sleeper);
    let (t, f) = settle(tasks0, fds0, 2, Duration::from_secs(3));
    assert!(
        t <= tasks0 + 2 && f <= fds0 + 2,
        "threads {tasks0} -> {t}, fds {fds0} -> {f}"
    );
}

/// Runtime A is dropped from inside while a coroutine of A that never
/// started owns runtime B: B is dropped with the closure, by A's worker's
/// final drain or A's stop. B's parked coroutine's join must fail.
#[test]
fn runtime_owned_by_a_closure_that_never_ran() {
    let _serial = serial();
    let (tasks0, fds0) = (tasks(), fds());
    let b = runtime(1);
    let b_sleeper = parked_sleeper(&b);
    let a = runtime(1);
    let a_slot = slot();
    let s = a_slot.clone();
    let dropper = a.spawn(move || {
        // Queued behind the dropper on A's only worker: never runs.
        let never = coroutines::spawn(move || drop(b));
        drop(take(&s));
        drop(never);
    });
    *a_slot.lock().unwrap() = Some(a);
    let _ = join_within(dropper, Duration::from_secs(5)).expect("the dropper's join hangs");
    expect_failed("B's sleeper", b_sleeper);
    let (t, f) = settle(tasks0, fds0, 2, Duration::from_secs(3));
    assert!(
        t <= tasks0 + 2 && f <= fds0 + 2,
        "threads {tasks0} -> {t}, fds {fds0} -> {f}"
    );
}

// ---------------------------------- 10-11. many runtimes, user descriptors

/// A hundred runtimes, each dropped from one of its own coroutines with a
/// parked neighbour: every join returns, and the threads and descriptors
/// come back.
#[test]
fn a_hundred_runtimes_dropped_from_inside() {
    let _serial = serial();
    let (tasks0, fds0) = (tasks(), fds());
    for round in 0..100 {
        let rt = runtime(2);
        let rt_slot = slot();
        let sleeper = parked_sleeper(&rt);
        let s = rt_slot.clone();
        let dropper = rt.spawn(move || drop(take(&s)));
        *rt_slot.lock().unwrap() = Some(rt);
        assert!(
            join_within(dropper, Duration::from_secs(5)).is_some(),
            "round {round}: the dropper's join hangs"
        );
        expect_failed(&format!("round {round}: the sleeper"), sleeper);
    }
    let (t, f) = settle(tasks0, fds0, 4, Duration::from_secs(5));
    assert!(
        t <= tasks0 + 4 && f <= fds0 + 4,
        "threads {tasks0} -> {t}, fds {fds0} -> {f}"
    );
}

/// A pipe, its inode, and whether it still works: a byte written comes
/// back, and nothing else was written to it.
struct UserPipe {
    r: std::fs::File,
    w: std::fs::File,
    inode: u64,
}

fn inode(fd: RawFd) -> u64 {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0, "fd {fd} was closed");
    st.st_ino
}

impl UserPipe {
    fn open() -> UserPipe {
        let mut p = [0; 2];
        assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let (r, w) = unsafe {
            (
                std::fs::File::from_raw_fd(p[0]),
                std::fs::File::from_raw_fd(p[1]),
            )
        };
        let inode = inode(r.as_raw_fd());
        UserPipe { r, w, inode }
    }

    fn check(mut self) -> Result<(), String> {
        let (rfd, wfd) = (self.r.as_raw_fd(), self.w.as_raw_fd());
        if inode(rfd) != self.inode || inode(wfd) != self.inode {
            return Err(format!("pipe {rfd}/{wfd} now names another file"));
        }
        unsafe { libc::fcntl(rfd, libc::F_SETFL, libc::O_NONBLOCK) };
        let mut buf = [0u8; 64];
        let n = unsafe { libc::read(rfd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Err(format!(
                "pipe {rfd}: {n} bytes nobody wrote: {:?}",
                &buf[..n as usize]
            ));
        }
        self.w
            .write_all(b"x")
            .map_err(|e| format!("write {wfd}: {e}"))?;
        let mut one = [0u8; 1];
        self.r
            .read_exact(&mut one)
            .map_err(|e| format!("read {rfd}: {e}"))?;
        Ok(())
    }
}

/// Pipes opened right after an inside drop (by the dropper, and by the
/// main thread as soon as it hears of the drop) while the stop runs on its
/// own thread: once the stop is done, each pipe still names its file and
/// has seen no write.
#[test]
fn descriptors_opened_right_after_an_inside_drop_are_left_alone() {
    let _serial = serial();
    for round in 0..30 {
        let rt = runtime(2);
        let rt_slot = slot();
        let sleeper = parked_sleeper(&rt);
        // A child wait too, so that a pidfd is released by the stop.
        let _child = rt.spawn(|| {
            let _ = Command::new("sleep").arg("0.05").status();
        });
        thread::sleep(Duration::from_millis(5));
        let s = rt_slot.clone();
        let (tx, rx) = mpsc::channel::<()>();
        let dropper = rt.spawn(move || {
            drop(take(&s));
            let _ = tx.send(());
            (0..4).map(|_| UserPipe::open()).collect::<Vec<_>>()
        });
        *rt_slot.lock().unwrap() = Some(rt);
        rx.recv_timeout(Duration::from_secs(5)).expect("no drop");
        let mine: Vec<UserPipe> = (0..4).map(|_| UserPipe::open()).collect();
        expect_failed(&format!("round {round}: the sleeper"), sleeper);
        let theirs = match join_within(dropper, Duration::from_secs(5)) {
            None => panic!("round {round}: the dropper's join hangs"),
            Some(Ok(p)) => p,
            Some(Err(_)) => Vec::new(),
        };
        // Let the stop finish.
        thread::sleep(Duration::from_millis(60));
        for p in mine.into_iter().chain(theirs) {
            if let Err(e) = p.check() {
                panic!("round {round}: {e}");
            }
        }
    }
    unsafe { while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {} }
}

// ---------------------------------------------- 12. process exit mid-stop

const CHILD_VAR: &str = "PROBE_ATTACK_N_EXIT_CHILD";

/// In a child process: a coroutine drops its runtime (stop then runs on
/// "coroutines-stop", failing neighbours parked in sleeps, reads and child
/// waits) and the process exits at once, with `exit`. It must exit 0, not
/// crash or hang.
#[test]
fn process_exit_while_the_stop_thread_runs() {
    if let Ok(mode) = std::env::var(CHILD_VAR) {
        let rt = runtime(2);
        let rt_slot = slot();
        let mut held = Vec::new();
        for _ in 0..50 {
            held.push(rt.spawn(|| thread::sleep(Duration::from_secs(60))));
            let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            held.push(rt.spawn(move || {
                let mut a = a;
                let _ = a.read(&mut [0u8; 4]);
                drop(b);
            }));
        }
        held.push(rt.spawn(|| {
            let _ = Command::new("sleep")
                .arg("2")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }));
        thread::sleep(Duration::from_millis(20));
        let s = rt_slot.clone();
        let (tx, rx) = mpsc::channel::<()>();
        let _dropper = rt.spawn(move || {
            drop(take(&s));
            let _ = tx.send(());
        });
        *rt_slot.lock().unwrap() = Some(rt);
        rx.recv().unwrap();
        if mode == "exit" {
            std::process::exit(0);
        }
        // "return": the held handles are dropped as the stop runs.
        drop(held);
        std::process::exit(0);
    }
    let exe = std::env::current_exe().unwrap();
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    for mode in ["exit", "return", "exit", "return", "exit", "return"] {
        RUNS.fetch_add(1, Ordering::Relaxed);
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "process_exit_while_the_stop_thread_runs",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_VAR, mode)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the child ({mode}) hangs at exit");
            }
            thread::sleep(Duration::from_millis(10));
        };
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        assert!(
            status.success(),
            "the child ({mode}) ended with {status}: {err}"
        );
    }
}
