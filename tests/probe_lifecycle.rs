//! Round K probes: the runtime's lifecycle and the public API. Dropping a
//! runtime while its coroutines are parked in each kind of wait (what the
//! join handles say, whether descriptors, threads or children are left
//! behind), many runtimes in a row and side by side, nested `block_on`,
//! dropping a runtime from inside a coroutine, the process-wide runtime's
//! configuration, `JoinHandle` against `std::thread`'s, builder limits,
//! statistics and dumps after storms, panics and `process::exit`, and
//! `#[coroutines::main]` returning an error.
//!
//! Several probes count the process's descriptors and threads, so run this
//! binary with `--test-threads=1` (the probes also serialise on a lock).

mod support;

use std::any::Any;
use std::io::{Read, Write};
use std::mem::ManuallyDrop;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use coroutines::{JoinHandle, Runtime};
use support::child::{child_case, finish_child, rerun};
use support::differential::{isolated, Ended, Side};
use support::{fds, join_within, payload_text, serial, tasks};

// ------------------------------------------------------------------ helpers

/// Children of this process that have ended and not been reaped.
fn zombies() -> usize {
    let me = std::process::id().to_string();
    let mut n = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] == "Z" && fields[1] == me {
            n += 1;
        }
    }
    n
}

/// Waits up to `limit` for the descriptor and thread counts to come back
/// to `fds0 + slack` and `tasks0 + slack`; the counts it ended with.
fn settle(fds0: usize, tasks0: usize, slack: usize, limit: Duration) -> (usize, usize, Duration) {
    let start = Instant::now();
    loop {
        let (f, t) = (fds(), tasks());
        if (f <= fds0 + slack && t <= tasks0 + slack) || start.elapsed() > limit {
            return (f, t, start.elapsed());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `f` on a plain thread; `None` if it does not finish within `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let r = panic::catch_unwind(AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => Some(v),
        Ok(Err(p)) => panic::resume_unwind(p),
        Err(_) => None,
    }
}

/// Waits until `flag` is set (up to 5 s), then lets the coroutine reach
/// its wait.
fn wait_flag(flag: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !flag.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the coroutine did not start");
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(Duration::from_millis(30));
}

// ------------------------------------------- dropping a runtime mid-wait

/// What the abandoned coroutine is parked in.
#[derive(Clone, Copy, Debug)]
enum Park {
    Sleep,
    SocketRead,
    PipeRead,
    Accept,
    MutexLock,
    CondvarWait,
    ChannelRecv,
    JoinCoroutine,
    JoinThread,
    SpawnBlocking,
    ChildWait,
    HoldingOwnHandle,
    Scope,
}

/// One round: a runtime whose coroutine parks in `kind`; the runtime is
/// dropped; the handle is joined from outside; then whatever the wait was
/// for happens. Returns a problem, if any.
fn drop_while_parked_once(kind: Park) -> Result<String, String> {
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let started = Arc::new(AtomicBool::new(false));
    // What happens after the drop, releasing the resources outside.
    let mut release: Vec<Box<dyn FnOnce()>> = Vec::new();
    let go = {
        let started = started.clone();
        move || started.store(true, Ordering::SeqCst)
    };
    let handle: JoinHandle<()> = match kind {
        Park::Sleep => runtime.spawn(move || {
            go();
            thread::sleep(Duration::from_secs(3600));
        }),
        Park::SocketRead => {
            let (a, b) = UnixStream::pair().unwrap();
            let fd = a.as_raw_fd();
            release.push(Box::new(move || drop((a, b))));
            runtime.spawn(move || {
                go();
                // SAFETY: the test owns `fd` and closes it only after the drop.
                let s = ManuallyDrop::new(unsafe { UnixStream::from_raw_fd(fd) });
                let _ = (&*s).read(&mut [0u8; 8]);
            })
        }
        Park::PipeRead => {
            let mut p = [0; 2];
            assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            let (r, w) = (p[0], p[1]);
            release.push(Box::new(move || unsafe {
                libc::close(w);
                libc::close(r);
            }));
            runtime.spawn(move || {
                go();
                // SAFETY: as above.
                let f = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(r) });
                let _ = (&*f).read(&mut [0u8; 8]);
            })
        }
        Park::Accept => {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let fd = l.as_raw_fd();
            release.push(Box::new(move || drop(l)));
            runtime.spawn(move || {
                go();
                // SAFETY: as above.
                let l = ManuallyDrop::new(unsafe { TcpListener::from_raw_fd(fd) });
                let _ = l.accept();
            })
        }
        Park::MutexLock => {
            let m = Arc::new(Mutex::new(()));
            let (locked_tx, locked_rx) = mpsc::channel();
            let (unlock_tx, unlock_rx) = mpsc::channel::<()>();
            let holder = {
                let m = m.clone();
                thread::spawn(move || {
                    let _g = m.lock().unwrap();
                    locked_tx.send(()).unwrap();
                    let _ = unlock_rx.recv();
                })
            };
            locked_rx.recv().unwrap();
            let outside = m.clone();
            release.push(Box::new(move || {
                drop(unlock_tx);
                holder.join().unwrap();
                // The lock is usable by a thread afterwards.
                drop(outside.lock().unwrap());
            }));
            runtime.spawn(move || {
                go();
                let _g = m.lock();
            })
        }
        Park::CondvarWait => {
            let pair = Arc::new((Mutex::new(false), Condvar::new()));
            let outside = pair.clone();
            release.push(Box::new(move || {
                *outside.0.lock().unwrap() = true;
                outside.1.notify_all();
            }));
            runtime.spawn(move || {
                go();
                let (m, c) = &*pair;
                let mut g = m.lock().unwrap();
                while !*g {
                    g = c.wait(g).unwrap();
                }
            })
        }
        Park::ChannelRecv => {
            let (tx, rx) = mpsc::channel::<u32>();
            release.push(Box::new(move || {
                let _ = tx.send(1);
                drop(tx);
            }));
            runtime.spawn(move || {
                go();
                let _ = rx.recv();
            })
        }
        Park::JoinCoroutine => runtime.spawn(move || {
            let sibling = coroutines::spawn(|| thread::sleep(Duration::from_secs(3600)));
            go();
            let _ = sibling.join();
        }),
        Park::JoinThread => {
            let (tx, rx) = mpsc::channel::<()>();
            let t = thread::spawn(move || {
                let _ = rx.recv();
            });
            release.push(Box::new(move || drop(tx)));
            runtime.spawn(move || {
                go();
                let _ = t.join();
            })
        }
        Park::SpawnBlocking => {
            let (tx, rx) = mpsc::channel::<()>();
            release.push(Box::new(move || drop(tx)));
            runtime.spawn(move || {
                go();
                let _ = coroutines::spawn_blocking(move || rx.recv()).join();
            })
        }
        Park::ChildWait => runtime.spawn(move || {
            go();
            let _ = Command::new("sleep")
                .arg("0.3")
                .stdin(Stdio::null())
                .status();
        }),
        Park::HoldingOwnHandle => runtime.spawn(move || {
            let me = coroutines::current();
            go();
            thread::sleep(Duration::from_secs(3600));
            drop(me);
        }),
        Park::Scope => runtime.spawn(move || {
            coroutines::scope(|s| {
                s.spawn(|| thread::sleep(Duration::from_secs(3600)));
                go();
            });
        }),
    };
    wait_flag(&started);
    let state = runtime
        .dump()
        .coroutines
        .iter()
        .find(|c| c.id == handle.coroutine().id())
        .map(|c| format!("{:?}", c.state))
        .unwrap_or_else(|| "not in the dump".into());
    let start = Instant::now();
    drop(runtime);
    let took = start.elapsed();
    if took > Duration::from_secs(2) {
        return Err(format!("{kind:?}: dropping the runtime took {took:?}"));
    }
    let joined = join_within(handle, Duration::from_secs(5));
    for r in release {
        r();
    }
    match joined {
        None => Err(format!(
            "{kind:?}: the join handle of the abandoned coroutine (state {state}) hangs after the drop"
        )),
        Some(Ok(())) => Err(format!("{kind:?}: join returned Ok for a coroutine that could not finish")),
        Some(Err(p)) => {
            let text = payload_text(&*p);
            if text.contains("shut down") {
                Ok(state)
            } else {
                Err(format!("{kind:?}: join's payload does not say the runtime shut down: {text:?}"))
            }
        }
    }
}

/// Thirty rounds of [`drop_while_parked_once`]; then no descriptor, thread
/// or child of the runtime may be left (those the user's code owned on the
/// leaked stack are the test's, released after each drop).
fn drop_while_parked(kind: Park) {
    let _serial = serial();
    // A warm-up round, for what is set up once per process.
    let state = drop_while_parked_once(kind).unwrap_or_else(|e| panic!("{e}"));
    thread::sleep(Duration::from_millis(400));
    let (fds0, tasks0, zombies0) = (fds(), tasks(), zombies());
    const ROUNDS: usize = 30;
    for _ in 0..ROUNDS {
        if let Err(e) = drop_while_parked_once(kind) {
            panic!("{e}");
        }
    }
    let (f, t, took) = settle(fds0, tasks0, 2, Duration::from_secs(15));
    let z = zombies();
    eprintln!(
        "{kind:?} (parked as {state}): fds {fds0} -> {f}, threads {tasks0} -> {t} (settled in {took:?}), zombies {zombies0} -> {z}"
    );
    assert!(
        f <= fds0 + 2,
        "{kind:?}: {} descriptors leaked over {ROUNDS} dropped runtimes ({fds0} -> {f})",
        f - fds0
    );
    assert!(
        t <= tasks0 + 2,
        "{kind:?}: {} threads left over {ROUNDS} dropped runtimes ({tasks0} -> {t})",
        t - tasks0
    );
    // An abandoned wait leaves its child unreaped, as a dropped
    // `std::process::Child` does (troubleshooting.md); nothing else may.
    if !matches!(kind, Park::ChildWait) {
        assert!(
            z <= zombies0,
            "{kind:?}: {} unreaped children over {ROUNDS} dropped runtimes",
            z - zombies0
        );
    }
}

#[test]
fn drop_parked_in_sleep() {
    drop_while_parked(Park::Sleep);
}

#[test]
fn drop_parked_in_socket_read() {
    drop_while_parked(Park::SocketRead);
}

#[test]
fn drop_parked_in_pipe_read() {
    drop_while_parked(Park::PipeRead);
}

#[test]
fn drop_parked_in_accept() {
    drop_while_parked(Park::Accept);
}

#[test]
fn drop_parked_in_mutex_lock() {
    drop_while_parked(Park::MutexLock);
}

#[test]
fn drop_parked_in_condvar_wait() {
    drop_while_parked(Park::CondvarWait);
}

#[test]
fn drop_parked_in_channel_recv() {
    drop_while_parked(Park::ChannelRecv);
}

#[test]
fn drop_parked_in_join_of_a_coroutine() {
    drop_while_parked(Park::JoinCoroutine);
}

#[test]
fn drop_parked_in_join_of_a_thread() {
    drop_while_parked(Park::JoinThread);
}

#[test]
fn drop_parked_in_spawn_blocking() {
    drop_while_parked(Park::SpawnBlocking);
}

#[test]
fn drop_parked_in_child_wait() {
    drop_while_parked(Park::ChildWait);
}

/// The smallest form of the join cases' leak: a sleeping coroutine that
/// holds `coroutines::current()`.
#[test]
fn drop_parked_holding_its_own_handle() {
    drop_while_parked(Park::HoldingOwnHandle);
}

#[test]
fn drop_parked_in_scope() {
    drop_while_parked(Park::Scope);
}

// ------------------------------------------------- many runtimes in a row

/// 200 runtimes, each doing a little of everything, built and dropped in
/// turn: nothing may accumulate.
#[test]
fn two_hundred_runtimes_in_a_row() {
    let _serial = serial();
    let round = || {
        let runtime = Runtime::builder().workers(2).build().unwrap();
        let sum = runtime.block_on(|| {
            let (a, b) = UnixStream::pair().unwrap();
            let echo = coroutines::spawn(move || {
                let mut buf = [0u8; 4];
                let mut b = b;
                b.read_exact(&mut buf).unwrap();
                b.write_all(&buf).unwrap();
            });
            let mut a = a;
            a.write_all(b"ping").unwrap();
            let mut buf = [0u8; 4];
            a.read_exact(&mut buf).unwrap();
            echo.join().unwrap();
            let sleepers: Vec<_> = (0..8u64)
                .map(|i| {
                    coroutines::spawn(move || {
                        thread::sleep(Duration::from_millis(1));
                        i
                    })
                })
                .collect();
            let blocking = coroutines::spawn_blocking(|| 100u64);
            let t = thread::spawn(|| 1000u64);
            sleepers.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
                + blocking.join().unwrap()
                + t.join().unwrap()
        });
        assert_eq!(sum, 28 + 100 + 1000);
    };
    round();
    thread::sleep(Duration::from_millis(200));
    let (fds0, tasks0) = (fds(), tasks());
    let start = Instant::now();
    for _ in 0..200 {
        round();
    }
    let took = start.elapsed();
    let (f, t, settled) = settle(fds0, tasks0, 2, Duration::from_secs(15));
    eprintln!("200 runtimes in {took:?}: fds {fds0} -> {f}, threads {tasks0} -> {t} (settled in {settled:?})");
    assert!(f <= fds0 + 2, "descriptors grew {fds0} -> {f}");
    assert!(t <= tasks0 + 2, "threads grew {tasks0} -> {t}");
    assert!(took < Duration::from_secs(60), "200 runtimes took {took:?}");
}

// ------------------------------------------------- runtimes side by side

/// Two runtimes at once: a coroutine of each and a plain thread pass
/// messages around and join one another.
#[test]
fn two_runtimes_talk_and_join_across() {
    let done = within(Duration::from_secs(20), || {
        let a = Runtime::builder().workers(1).build().unwrap();
        let b = Arc::new(Runtime::builder().workers(1).build().unwrap());
        let (to_thread, thread_rx) = mpsc::channel::<u64>();
        let (to_a, a_rx) = mpsc::channel::<u64>();
        let t = thread::spawn(move || {
            // Thread relays B's messages to A.
            for v in thread_rx {
                to_a.send(v * 10).unwrap();
            }
        });
        let b2 = b.clone();
        let total = a.block_on(move || {
            let in_b = b2.spawn(move || {
                for i in 1..=100u64 {
                    to_thread.send(i).unwrap();
                    if i % 10 == 0 {
                        thread::sleep(Duration::from_millis(1));
                    }
                }
                coroutines::current().id()
            });
            let mut sum = 0;
            for _ in 0..100 {
                sum += a_rx.recv().unwrap();
            }
            let id = in_b.join().unwrap();
            assert_ne!(id, coroutines::current().id());
            sum
        });
        t.join().unwrap();
        drop(b);
        total
    });
    assert_eq!(done, Some(50_500), "hung (None) or wrong sum");
}

/// A coroutine of runtime A joins one of runtime B that can never finish;
/// B is dropped: A's join returns an error promptly.
#[test]
fn join_across_runtimes_when_the_other_is_dropped() {
    let a = Runtime::builder().workers(1).build().unwrap();
    let b = Runtime::builder().workers(1).build().unwrap();
    let parked = b.spawn(|| thread::sleep(Duration::from_secs(3600)));
    let joiner = a.spawn(move || match parked.join() {
        Ok(()) => "ok".to_owned(),
        Err(p) => payload_text(&*p),
    });
    thread::sleep(Duration::from_millis(50));
    drop(b);
    let r = join_within(joiner, Duration::from_secs(5));
    match r {
        Some(Ok(text)) => assert!(text.contains("shut down"), "{text}"),
        other => panic!(
            "A's join of B's abandoned coroutine: {:?}",
            other.map(|r| r.is_ok())
        ),
    }
}

/// Runtime B dropped from a coroutine of runtime A while B's coroutines
/// are parked: the drop returns promptly and B's handles fail.
#[test]
fn drop_a_runtime_from_a_coroutine_of_another() {
    let a = Runtime::builder().workers(1).build().unwrap();
    let b = Runtime::builder().workers(2).build().unwrap();
    let parked: Vec<_> = (0..4)
        .map(|_| b.spawn(|| thread::sleep(Duration::from_secs(3600))))
        .collect();
    thread::sleep(Duration::from_millis(30));
    let r = within(Duration::from_secs(10), move || {
        a.block_on(move || {
            let start = Instant::now();
            drop(b);
            let took = start.elapsed();
            let results: Vec<bool> = parked.into_iter().map(|h| h.join().is_err()).collect();
            (took, results)
        })
    });
    let (took, results) = r.expect("dropping B inside A's coroutine hung");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(results.iter().all(|&e| e), "{results:?}");
}

// ------------------------------------------------------ nested block_on

/// `block_on` inside a coroutine: of another runtime, and of the caller's
/// own one-worker runtime (the caller parks, so its worker runs the inner
/// body), three deep.
#[test]
fn nested_block_on() {
    let r = within(Duration::from_secs(10), || {
        let a = Arc::new(Runtime::builder().workers(1).build().unwrap());
        let b = Arc::new(Runtime::builder().workers(1).build().unwrap());
        let (a2, b2) = (a.clone(), b.clone());
        a.block_on(move || {
            let outer = coroutines::current().id();
            let a3 = a2.clone();
            let inner = a2.block_on(move || {
                let mid = coroutines::current().id();
                let deepest = b2.block_on(move || {
                    // A coroutine of A spawned from B's coroutine via A's handle.
                    a3.spawn(|| 7u32).join().unwrap() + coroutines::spawn(|| 1).join().unwrap()
                });
                (mid, deepest)
            });
            (outer != inner.0, inner.1)
        })
    });
    assert_eq!(r, Some((true, 8)));
}

// --------------------------------------- dropping a runtime from inside it

fn drop_inside_case() {
    let slot: Arc<Mutex<Option<Runtime>>> = Arc::new(Mutex::new(None));
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let parked = runtime.spawn(|| thread::sleep(Duration::from_secs(3600)));
    let s = slot.clone();
    let dropper = runtime.spawn(move || {
        thread::sleep(Duration::from_millis(30));
        let rt = s
            .lock()
            .unwrap()
            .take()
            .expect("the runtime is in the slot");
        let start = Instant::now();
        drop(rt);
        let took = start.elapsed();
        let spawn_after = coroutines::Builder::new()
            .spawn(|| ())
            .map(|_| ())
            .map_err(|e| e.to_string());
        (took, spawn_after)
    });
    *slot.lock().unwrap() = Some(runtime);
    match join_within(dropper, Duration::from_secs(5)) {
        None => println!("\nRESULT dropper: join hangs"),
        Some(Ok((took, after))) => {
            println!("\nRESULT dropper: Ok, drop took {took:?}, spawn after: {after:?}")
        }
        Some(Err(p)) => println!("\nRESULT dropper: Err {}", payload_text(&*p)),
    }
    match join_within(parked, Duration::from_secs(15)) {
        None => println!("RESULT parked: join hangs (15 s)"),
        Some(Ok(())) => println!("RESULT parked: Ok"),
        Some(Err(p)) => println!("RESULT parked: Err {}", payload_text(&*p)),
    }
    println!("RESULT end");
}

/// A coroutine takes its own runtime and drops it: no crash or hang; the
/// dropper goes on (a spawn then fails with an error), and the other,
/// parked coroutine's handle fails as at any shutdown.
#[test]
fn drop_the_runtime_from_its_own_coroutine() {
    if child_case().as_deref() == Some("drop_inside") {
        drop_inside_case();
        return;
    }
    let mut command = rerun("drop_inside");
    command.env("RUST_BACKTRACE", "0");
    let out = finish_child("drop inside", command, Duration::from_secs(40));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let results: Vec<&str> = stdout.lines().filter(|l| l.starts_with("RESULT")).collect();
    eprintln!("{results:#?}");
    assert!(
        out.status.success() && stdout.contains("RESULT end"),
        "child ended {}:\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        results
            .iter()
            .any(|l| l.starts_with("RESULT dropper: Ok") && l.contains("Err(")),
        "the dropper did not return, or spawning after the drop did not fail: {results:?}"
    );
    assert!(
        results
            .iter()
            .any(|l| l.starts_with("RESULT parked: Err") && l.contains("shut down")),
        "the parked coroutine's join did not fail cleanly: {results:?}"
    );
}

// ------------------------------------------ the process-wide runtime's config

fn start_default_case() {
    let first = coroutines::Runtime::builder().workers(3).start_default();
    let second = coroutines::Runtime::builder().workers(1).start_default();
    let workers = coroutines::spawn(|| coroutines::stats().workers)
        .join()
        .unwrap();
    let from_thread = coroutines::stats().workers;
    println!("RESULT first {:?}", first.map_err(|e| e.to_string()));
    println!(
        "RESULT second {:?}",
        second.map_err(|e| (e.kind(), e.to_string().contains("already started")))
    );
    println!("RESULT workers {workers} {from_thread}");
}

/// `start_default` configures the process-wide runtime; a second call is an
/// `AlreadyExists` error, and the first configuration is what spawns use.
#[test]
fn start_default_twice() {
    if child_case().as_deref() == Some("start_default") {
        start_default_case();
        return;
    }
    let out = finish_child(
        "start_default",
        rerun("start_default"),
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("RESULT first Ok(())"), "{stdout}");
    assert!(
        stdout.contains("RESULT second Err((AlreadyExists, true))"),
        "{stdout}"
    );
    assert!(stdout.contains("RESULT workers 3 3"), "{stdout}");
}

// ------------------------------------------------- JoinHandle against std

thread_local! {
    static SLOW_DTOR: SlowDtor = const { SlowDtor };
}

static DTOR_DONE: AtomicUsize = AtomicUsize::new(0);

struct SlowDtor;

impl Drop for SlowDtor {
    fn drop(&mut self) {
        thread::sleep(Duration::from_millis(150));
        DTOR_DONE.fetch_add(1, Ordering::SeqCst);
    }
}

/// `std::thread::JoinHandle::join` returns after the thread's thread-local
/// destructors have run (it joins the OS thread). A coroutine's join
/// should do the same.
#[test]
fn join_waits_for_thread_local_destructors() {
    let _serial = serial();
    let check = |side: Side| -> bool {
        let before = DTOR_DONE.load(Ordering::SeqCst);
        let h = side.spawn(|| SLOW_DTOR.with(|_| ()));
        h.join();
        DTOR_DONE.load(Ordering::SeqCst) > before
    };
    let on_thread = check(Side::Thread);
    let in_coroutine = support::watchdog("tls dtor", Duration::from_secs(10), 1, move || {
        check(Side::Coroutine)
    });
    assert!(on_thread, "reference: std's join waits for TLS destructors");
    assert!(
        in_coroutine,
        "a coroutine's join returned before its thread-local destructors ran"
    );
}

/// A panicking coroutine's join returns the payload, of the same type as a
/// thread's: `&str` for a constant message, `String` for a formatted one,
/// the value itself from `panic_any`.
#[test]
fn join_returns_the_panic_payload_as_std() {
    fn kind(p: &(dyn Any + Send)) -> String {
        if let Some(s) = p.downcast_ref::<&'static str>() {
            format!("&str {s}")
        } else if let Some(s) = p.downcast_ref::<String>() {
            format!("String {s}")
        } else if let Some(n) = p.downcast_ref::<u64>() {
            format!("u64 {n}")
        } else {
            "other".into()
        }
    }
    fn cases() -> Vec<Box<dyn FnOnce() + Send>> {
        vec![
            Box::new(|| panic!("constant")),
            Box::new(|| panic!("formatted {}", std::hint::black_box(7))),
            Box::new(|| panic::panic_any(42u64)),
        ]
    }
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let threads: Vec<String> = cases()
        .into_iter()
        .map(|f| kind(&*thread::spawn(f).join().unwrap_err()))
        .collect();
    let coroutines: Vec<String> = cases()
        .into_iter()
        .map(|f| kind(&*coroutines::spawn(f).join().unwrap_err()))
        .collect();
    panic::set_hook(hook);
    assert_eq!(coroutines, threads);
}

/// `is_finished` turns true once the body has returned, without a join.
#[test]
fn is_finished_without_join() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let h = runtime.spawn(|| 5);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !h.is_finished() {
        assert!(Instant::now() < deadline, "is_finished never turned true");
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(h.join().unwrap(), 5);
}

// --------------------------------------------------------- builder limits

/// Absurd stack sizes are `InvalidInput` errors from `Builder::spawn` and
/// from `runtime::Builder::build`, never a crash; odd sizes work.
#[test]
fn absurd_stack_sizes_are_errors() {
    for size in [
        0,
        1,
        16 * 1024 - 1,
        (1 << 30) + 1,
        usize::MAX / 2,
        usize::MAX,
    ] {
        let e = coroutines::Builder::new()
            .stack_size(size)
            .spawn(|| ())
            .err();
        assert_eq!(
            e.map(|e| e.kind()),
            Some(std::io::ErrorKind::InvalidInput),
            "stack {size}"
        );
        let e = Runtime::builder().stack_size(size).build().err();
        assert_eq!(
            e.map(|e| e.kind()),
            Some(std::io::ErrorKind::InvalidInput),
            "runtime stack {size}"
        );
        let e = Runtime::builder().main_stack_size(size).build().err();
        assert_eq!(
            e.map(|e| e.kind()),
            Some(std::io::ErrorKind::InvalidInput),
            "main stack {size}"
        );
    }
    // An odd size, not a page multiple: the coroutine gets at least that.
    let h = coroutines::Builder::new()
        .stack_size(100_001)
        .spawn(|| std::hint::black_box([1u8; 40 * 1024]).len())
        .unwrap();
    assert_eq!(h.join().unwrap(), 40 * 1024);
    // 16 KiB exactly is allowed and runs.
    let h = coroutines::Builder::new()
        .stack_size(16 * 1024)
        .spawn(|| 1)
        .unwrap();
    assert_eq!(h.join().unwrap(), 1);
}

fn huge_workers_case(workers: usize) {
    let r = Runtime::builder().workers(workers).build();
    println!("RESULT {:?}", r.map(|_| ()).map_err(|e| e.kind()));
}

/// `workers(n)` with an n no machine can have: `build` returns an error (its
/// documented contract: "a worker cannot start"), as for `workers(0)`,
/// rather than panicking or aborting the process.
#[test]
fn absurd_worker_counts_are_errors() {
    if let Some(case) = child_case() {
        if let Some(n) = case.strip_prefix("workers=") {
            huge_workers_case(n.parse().unwrap());
            return;
        }
    }
    let mut failures = Vec::new();
    for n in [usize::MAX, usize::MAX / 2 + 1, 1usize << 40] {
        let mut command = rerun(&format!("workers={n}"));
        command.env("RUST_BACKTRACE", "0");
        let out = finish_child("huge workers", command, Duration::from_secs(60));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stdout.contains("RESULT Err(") {
            let why = stderr
                .lines()
                .filter(|l| {
                    l.contains("panicked")
                        || l.contains("overflow")
                        || l.contains("alloc")
                        || l.contains("capacity")
                })
                .collect::<Vec<_>>()
                .join(" | ");
            failures.push(format!("workers({n}): {} ({why})", out.status));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// `COROUTINES_WORKERS` with an absurd value: the default runtime fails to
/// start with an error (spawn panics with "failed to spawn"), not an abort.
#[test]
fn absurd_workers_variable() {
    if child_case().as_deref() == Some("env_workers") {
        let r = coroutines::Builder::new()
            .spawn(|| ())
            .map(|_| ())
            .map_err(|e| e.kind());
        println!("RESULT {r:?}");
        return;
    }
    let mut command = rerun("env_workers");
    command
        .env("COROUTINES_WORKERS", usize::MAX.to_string())
        .env("RUST_BACKTRACE", "0");
    let out = finish_child("env workers", command, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("RESULT Err("),
        "COROUTINES_WORKERS={}: {}; stderr: {}",
        usize::MAX,
        out.status,
        stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(4)
            .collect::<Vec<_>>()
            .join(" | ")
    );
}

#[inline(never)]
fn deep(n: usize) -> usize {
    let a = std::hint::black_box([n as u8; 1024]);
    if n == 0 {
        a[0] as usize
    } else {
        deep(n - 1) + a[1] as usize
    }
}

fn measured(stack: usize, f: fn() -> usize) -> usize {
    let h = coroutines::Builder::new()
        .measure_stack(true)
        .stack_size(stack)
        .spawn(f)
        .unwrap();
    let c = h.coroutine().clone();
    h.join().unwrap();
    c.stack_used().unwrap()
}

/// What the troubleshooting guide prescribes: measure a typical coroutine,
/// then give it that much stack (page-rounded). The measure must not be
/// smaller than what the coroutine needs, nor larger than the stack.
#[test]
fn size_a_stack_from_its_measure() {
    let trivial = measured(256 * 1024, || 1);
    let used = measured(1 << 20, || deep(40));
    let used_small = measured(256 * 1024, || deep(40));
    eprintln!(
        "measured: trivial {trivial}, deep(40) {used} (1 MiB stack), {used_small} (256 KiB stack)"
    );
    assert!(trivial < 256 * 1024);
    let size = ((used + 4095) & !4095).max(16 * 1024);
    let r = coroutines::Builder::new()
        .stack_size(size)
        .spawn(|| deep(40))
        .unwrap()
        .join();
    assert!(
        r.is_ok(),
        "a stack of the measured size ({size} for {used} used) overflowed"
    );
}

/// `measure_stack(true)` is for diagnosis: it must not change whether the
/// coroutine fits its stack, and the measure must not exceed the stack the
/// coroutine was given.
#[test]
fn measure_stack_does_not_change_the_stack() {
    let stack = 64 * 1024;
    let mut problems = Vec::new();
    for n in 20..40usize {
        let measured = coroutines::Builder::new()
            .measure_stack(true)
            .stack_size(stack)
            .spawn(move || deep(std::hint::black_box(n)))
            .unwrap();
        let c = measured.coroutine().clone();
        let measured_ok = measured.join().is_ok();
        let plain_ok = coroutines::Builder::new()
            .stack_size(stack)
            .spawn(move || deep(std::hint::black_box(n)))
            .unwrap()
            .join()
            .is_ok();
        let used = c.stack_used();
        if measured_ok != plain_ok || used.is_some_and(|u| u > stack) {
            problems.push(format!(
                "deep({n}) on {stack} bytes: measured run ok {measured_ok} (stack_used {used:?}), unmeasured run ok {plain_ok}"
            ));
        }
        if !measured_ok && !plain_ok {
            break;
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

// ---------------------------------------------- storms and statistics

static UNPARK_TARGETS: OnceLock<Vec<thread::Thread>> = OnceLock::new();
static SIGNAL_UNPARKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn unpark_all(_: libc::c_int) {
    if let Some(targets) = UNPARK_TARGETS.get() {
        for t in targets {
            t.unpark();
        }
        SIGNAL_UNPARKS.fetch_add(1, Ordering::Relaxed);
    }
}

/// A spawn storm on two stealing workers while parked coroutines are woken
/// by a plain thread (condvar) and by a SIGALRM handler (`unpark`): every
/// coroutine finishes, and afterwards the counters balance (nothing alive,
/// nothing queued or parked, spawned = what was spawned).
#[test]
fn storm_with_wakes_from_threads_and_signals_balances() {
    let _serial = serial();
    support::install_handler(libc::SIGALRM, unpark_all);
    let runtime = Runtime::builder()
        .workers(2)
        .work_stealing(true)
        .blocked_worker_warnings(false)
        .build()
        .unwrap();
    const PARKERS: usize = 16;
    const STORM: u64 = 20_000;
    let stop = Arc::new(AtomicBool::new(false));
    let cv = Arc::new((Mutex::new(0u64), Condvar::new()));
    // Parkers: wait for the signal handler's unparks until stopped.
    let (ids_tx, ids_rx) = mpsc::channel();
    let parkers: Vec<_> = (0..PARKERS)
        .map(|_| {
            let (stop, ids_tx) = (stop.clone(), ids_tx.clone());
            runtime.spawn(move || {
                ids_tx.send(thread::current()).unwrap();
                let mut wakes = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    thread::park();
                    wakes += 1;
                }
                wakes
            })
        })
        .collect();
    drop(ids_tx);
    let targets: Vec<thread::Thread> = ids_rx.iter().take(PARKERS).collect();
    UNPARK_TARGETS.set(targets).expect("set once");
    // Condvar waiters woken from a plain thread.
    let waiters: Vec<_> = (0..PARKERS)
        .map(|_| {
            let (stop, cv) = (stop.clone(), cv.clone());
            runtime.spawn(move || {
                let (m, c) = &*cv;
                let mut seen = 0;
                let mut g = m.lock().unwrap();
                while !stop.load(Ordering::SeqCst) {
                    g = c.wait_timeout(g, Duration::from_millis(50)).unwrap().0;
                    seen = *g;
                }
                seen
            })
        })
        .collect();
    let notifier = {
        let (stop, cv) = (stop.clone(), cv.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                *cv.0.lock().unwrap() += 1;
                cv.1.notify_one();
                thread::sleep(Duration::from_micros(200));
            }
        })
    };
    // A 1 ms interval timer.
    let timer = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 1000,
        },
        it_value: libc::timeval {
            tv_sec: 0,
            tv_usec: 1000,
        },
    };
    unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) };
    let storm = within(Duration::from_secs(60), {
        let rt_spawned = Arc::new(AtomicU64::new(0));
        let handle_count = rt_spawned.clone();
        let runtime_stats_before = runtime.stats().spawned;
        let h = runtime.spawn(move || {
            let mut total = 0u64;
            for wave in 0..(STORM / 1000) {
                let hs: Vec<_> = (0..1000u64)
                    .map(|i| {
                        coroutines::spawn(move || {
                            if i % 3 == 0 {
                                coroutines::yield_now();
                            }
                            if i % 7 == 0 {
                                thread::sleep(Duration::from_micros(50));
                            }
                            wave * 1000 + i
                        })
                    })
                    .collect();
                handle_count.fetch_add(1000, Ordering::Relaxed);
                total += hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>();
            }
            total
        });
        move || {
            (
                join_within(h, Duration::from_secs(55)),
                runtime_stats_before,
            )
        }
    });
    stop.store(true, Ordering::SeqCst);
    let off = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
    };
    unsafe { libc::setitimer(libc::ITIMER_REAL, &off, std::ptr::null_mut()) };
    for t in UNPARK_TARGETS.get().unwrap() {
        t.unpark();
    }
    cv.1.notify_all();
    notifier.join().unwrap();
    let parker_results: Vec<_> = parkers
        .into_iter()
        .map(|h| join_within(h, Duration::from_secs(5)).map(|r| r.is_ok()))
        .collect();
    let waiter_results: Vec<_> = waiters
        .into_iter()
        .map(|h| join_within(h, Duration::from_secs(5)).map(|r| r.is_ok()))
        .collect();
    let (storm_result, _) = storm.expect("storm hung");
    let expected = (0..STORM).sum::<u64>();
    match storm_result {
        Some(Ok(total)) => assert_eq!(total, expected),
        other => panic!(
            "the storm coroutine: {:?} (a spawned coroutine was lost?)",
            other.map(|r| r.is_ok())
        ),
    }
    assert!(
        parker_results.iter().all(|r| *r == Some(true)),
        "parkers: {parker_results:?}"
    );
    assert!(
        waiter_results.iter().all(|r| *r == Some(true)),
        "waiters: {waiter_results:?}"
    );
    eprintln!("signal unparks: {}", SIGNAL_UNPARKS.load(Ordering::Relaxed));
    // Counters after everything was joined.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = runtime.stats();
        let w = runtime.worker_stats();
        let balanced = s.alive == 0
            && s.spawned == 1 + 2 * PARKERS as u64 + STORM
            && s.abandoned == 0
            && w.iter()
                .all(|w| w.queued == 0 && w.parked == 0 && w.running.is_none())
            && runtime.dump().coroutines.is_empty();
        if balanced {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counters do not balance after every coroutine was joined: {s:?}\n{w:?}\n{}",
            runtime.dump()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// A dump taken while coroutines are parked in each kind of wait names each
/// coroutine and says what it waits on, as the troubleshooting guide lists.
#[test]
fn dump_names_each_kind_of_wait() {
    let _serial = serial();
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let named = |name: &str| coroutines::Builder::new().name(name.into());
    let text = within(Duration::from_secs(20), move || {
        runtime.block_on(move || {
            let (a, b) = UnixStream::pair().unwrap();
            let m = Arc::new(Mutex::new(()));
            let guard_holder = m.clone();
            let (lock_tx, lock_rx) = mpsc::channel::<()>();
            let (locked_tx, locked_rx) = mpsc::channel::<()>();
            let holder = thread::spawn(move || {
                let _g = guard_holder.lock().unwrap();
                locked_tx.send(()).unwrap();
                let _ = lock_rx.recv();
            });
            locked_rx.recv().unwrap();
            let (chan_tx, chan_rx) = mpsc::channel::<()>();
            let (blk_tx, blk_rx) = mpsc::channel::<()>();
            let sleeper = named("w-sleep")
                .spawn(|| thread::sleep(Duration::from_millis(1500)))
                .unwrap();
            let sleeper_id = sleeper.coroutine().id();
            let mut hs = vec![
                named("w-read")
                    .spawn(move || {
                        let mut b = b;
                        let _ = b.read(&mut [0u8; 1]);
                    })
                    .unwrap(),
                named("w-mutex").spawn(move || drop(m.lock())).unwrap(),
                named("w-chan")
                    .spawn(move || {
                        let _ = chan_rx.recv();
                    })
                    .unwrap(),
                named("w-join")
                    .spawn(move || {
                        let _ = sleeper.join();
                    })
                    .unwrap(),
                named("w-blocking")
                    .spawn(move || {
                        let _ = coroutines::spawn_blocking(move || blk_rx.recv()).join();
                    })
                    .unwrap(),
                named("w-child")
                    .spawn(|| {
                        let _ = Command::new("sleep").arg("0.5").status();
                    })
                    .unwrap(),
            ];
            thread::sleep(Duration::from_millis(150));
            let text = coroutines::dump().to_string();
            drop(a);
            lock_tx.send(()).unwrap();
            chan_tx.send(()).unwrap();
            blk_tx.send(()).unwrap();
            holder.join().unwrap();
            for h in hs.drain(..) {
                h.join().unwrap();
            }
            (text, sleeper_id)
        })
    });
    let (text, sleeper_id) = text.expect("the dump case hung");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.contains(&format!("'{name}'")))
            .unwrap_or_else(|| panic!("{name} missing from the dump:\n{text}"))
            .to_owned()
    };
    let mut failures = Vec::new();
    let mut expect = |name: &str, want: &str| {
        let l = line(name);
        if !l.contains(want) {
            failures.push(format!("{name}: wanted {want:?}: {l}"));
        }
    };
    expect("w-sleep", "sleeping");
    expect("w-read", "waiting to read descriptor");
    expect("w-mutex", "futex");
    expect("w-chan", "futex");
    expect(
        "w-join",
        &format!("joining coroutine {}", sleeper_id.as_u64()),
    );
    expect("w-blocking", "joining coroutine");
    expect("w-child", "parked");
    assert!(failures.is_empty(), "{failures:#?}\n{text}");
}

// ------------------------------------------------------------- panics

/// A coroutine panics while holding a std mutex others wait for: they are
/// woken with a poisoned lock, as threads are.
#[test]
fn panic_while_holding_a_lock_poisons_for_waiters() {
    let r = support::watchdog("poison", Duration::from_secs(10), 1, || {
        let hook = panic::take_hook();
        panic::set_hook(Box::new(|_| {}));
        let m = Arc::new(Mutex::new(0));
        let m2 = m.clone();
        let holder = coroutines::spawn(move || {
            let _g = m2.lock().unwrap();
            thread::sleep(Duration::from_millis(50));
            panic!("holder dies");
        });
        thread::sleep(Duration::from_millis(10));
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                coroutines::spawn(move || m.lock().is_err())
            })
            .collect();
        let held = holder.join().is_err();
        let poisoned: Vec<bool> = waiters.into_iter().map(|h| h.join().unwrap()).collect();
        panic::set_hook(hook);
        (held, poisoned)
    });
    assert_eq!(r, (true, vec![true; 4]));
}

struct PanicInDrop;

impl Drop for PanicInDrop {
    fn drop(&mut self) {
        panic!("second panic, in a destructor during unwinding");
    }
}

/// A panic in a destructor while unwinding aborts the process, as with
/// threads (std: "panic in a destructor during cleanup").
#[test]
fn panic_in_drop_while_unwinding_aborts_like_std() {
    let ended = isolated(|side: Side| {
        let h = side.spawn(|| {
            let _d = PanicInDrop;
            panic!("first panic");
        });
        let _ = panic::catch_unwind(AssertUnwindSafe(|| h.join()));
        "survived"
    });
    assert_eq!(ended, Ended::Killed(libc::SIGABRT));
}

fn exit_case(side: &str) {
    let body = || {
        let mut out = std::io::stdout();
        out.write_all(b"partial line without newline").unwrap();
        std::process::exit(7);
    };
    match side {
        "thread" => {
            let _others: Vec<_> = (0..4)
                .map(|_| {
                    thread::spawn(|| loop {
                        thread::sleep(Duration::from_millis(1))
                    })
                })
                .collect();
            thread::spawn(body).join().unwrap();
        }
        _ => {
            let _others: Vec<_> = (0..4)
                .map(|_| {
                    coroutines::spawn(|| loop {
                        thread::sleep(Duration::from_millis(1))
                    })
                })
                .collect();
            let _spinner = coroutines::spawn(|| loop {
                coroutines::yield_now()
            });
            coroutines::spawn(body).join().unwrap();
        }
    }
    unreachable!();
}

/// `process::exit` in a coroutine while others run: the exit code is kept
/// and buffered stdout is flushed, as from a thread.
#[test]
fn process_exit_from_a_coroutine() {
    if let Some(case) = child_case() {
        if let Some(side) = case.strip_prefix("exit-") {
            exit_case(side);
        }
        return;
    }
    let mut seen = Vec::new();
    for side in ["thread", "coroutine"] {
        let out = finish_child(
            "exit",
            rerun(&format!("exit-{side}")),
            Duration::from_secs(30),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        seen.push((
            side,
            out.status.code(),
            stdout.contains("partial line without newline"),
        ));
    }
    assert_eq!(seen[1].1, seen[0].1, "{seen:?}");
    assert_eq!(seen[1].2, seen[0].2, "{seen:?}");
    assert_eq!(seen[0], ("thread", Some(7), true));
}

// ----------------------------------------------------------- the macros

#[coroutines::main(workers = 2)]
fn main_returning_err() -> Result<(), String> {
    assert!(coroutines::in_coroutine());
    Err("the body failed".into())
}

/// `#[coroutines::main]` on a function returning `Err`: like std's `main`,
/// the result reports failure and `Error: ...` goes to stderr; a second
/// `#[coroutines::main]` in the process panics with a clear message.
#[test]
fn main_macro_returning_err() {
    if child_case().as_deref() == Some("main_err") {
        let code = main_returning_err();
        let again = panic::catch_unwind(main_returning_err).map_err(|p| payload_text(&*p));
        println!("RESULT failure {}", code == ExitCode::FAILURE);
        println!("RESULT again {:?}", again.map(|c| c == ExitCode::FAILURE));
        return;
    }
    let out = finish_child("main err", rerun("main_err"), Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("RESULT failure true"), "{stdout}\n{stderr}");
    assert!(stderr.contains("Error: \"the body failed\""), "{stderr}");
    assert!(
        stdout.contains("RESULT again Err(") && stdout.contains("already started"),
        "{stdout}"
    );
}

// ------------------------------------------ descriptor numbers after a drop

/// Descriptor numbers a dropped runtime gave back are reused by the next:
/// a descriptor the user opens after a drop must not be mistaken for one
/// the dead runtime watched (a read on it parks and completes).
#[test]
fn descriptor_reuse_after_a_drop() {
    let _serial = serial();
    for _ in 0..20 {
        let (a, b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let rt = Runtime::builder().workers(1).build().unwrap();
        let h = rt.spawn(move || {
            // SAFETY: the test owns `fd` and closes it after the drop.
            let s = ManuallyDrop::new(unsafe { UnixStream::from_raw_fd(fd) });
            let _ = (&*s).read(&mut [0u8; 1]);
        });
        thread::sleep(Duration::from_millis(20));
        drop(rt);
        let _ = join_within(h, Duration::from_secs(5)).expect("abandoned join hangs");
        drop((a, b));
        // A fresh pair takes the same numbers; use it in a new runtime.
        let rt = Runtime::builder().workers(1).build().unwrap();
        let ok = within(Duration::from_secs(5), move || {
            rt.block_on(|| {
                let (mut c, mut d) = UnixStream::pair().unwrap();
                let reader = coroutines::spawn(move || {
                    let mut buf = [0u8; 3];
                    d.read_exact(&mut buf).map(|_| buf)
                });
                thread::sleep(Duration::from_millis(5));
                c.write_all(b"abc").unwrap();
                reader.join().unwrap().ok()
            })
        });
        assert_eq!(
            ok,
            Some(Some(*b"abc")),
            "a read on a reused descriptor number"
        );
    }
}
