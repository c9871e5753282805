//! `coroutines::dump()`: every live coroutine with its name, worker and
//! state, and for a parked one what it waits on and for how long; and the
//! same dump printed to stderr on the signal `COROUTINES_DUMP_SIGNAL`
//! names.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use coroutines::{CoroutineDump, CoroutineId, CoroutineState, Dump, Wait, Waiting};
use support::child::*;
use support::*;

/// How long the sleeper sleeps.
const NAP: Duration = Duration::from_millis(1500);

/// How long the coroutines have been parked when the dump is taken, at
/// least.
const SETTLE: Duration = Duration::from_millis(100);

/// The entry of the coroutine named `name`.
#[track_caller]
fn named<'a>(dump: &'a Dump, name: &str) -> &'a CoroutineDump {
    dump.coroutines
        .iter()
        .find(|c| c.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no coroutine '{name}' in the dump:\n{dump}"))
}

/// The entry of the coroutine `id`.
#[track_caller]
fn by_id(dump: &Dump, id: CoroutineId) -> &CoroutineDump {
    dump.coroutines
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no coroutine {id:?} in the dump:\n{dump}"))
}

/// The park of a parked coroutine, checked to be on worker 0 and to have
/// lasted since before the dump was asked for.
#[track_caller]
fn parked(dump: &Dump, entry: &CoroutineDump) -> Waiting {
    assert_eq!(entry.worker, Some(0), "{dump}");
    match entry.state {
        CoroutineState::Parked(waiting) => {
            // The coarse clock ticks every few milliseconds.
            assert!(
                waiting.waited >= SETTLE - Duration::from_millis(20),
                "{:?} parked for only {:?}:\n{dump}",
                entry.name,
                waiting.waited
            );
            waiting
        }
        other => panic!("{:?} is {other:?}, not parked:\n{dump}", entry.name),
    }
}

/// The line of the dump's text about the coroutine `id`.
#[track_caller]
fn line_of(text: &str, id: CoroutineId) -> &str {
    let start = format!("  coroutine {} ", id.as_u64());
    let exact = format!("  coroutine {}:", id.as_u64());
    text.lines()
        .find(|l| l.starts_with(&start) || l.starts_with(&exact))
        .unwrap_or_else(|| panic!("no line for coroutine {id:?}:\n{text}"))
}

/// A dump shows each kind of wait with its state, what it waits on, its
/// name and worker: descriptors both ways, locks and condition variables,
/// a timer with the time left, a join, a helper thread's call, a runnable,
/// a not-started and the running coroutine.
#[test]
fn the_dump_shows_what_each_coroutine_waits_on() {
    on_one_worker("dump", || {
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            coroutines::Builder::new()
                .name(name.into())
                .spawn(f)
                .unwrap()
        };

        let (reader_end, mut reader_peer) = tcp_pair();
        let read_fd = reader_end.as_raw_fd();
        let reader = spawn(
            "reader",
            Box::new(move || {
                let mut buf = [0u8; 4];
                (&reader_end).read_exact(&mut buf).unwrap();
            }),
        );

        let (writer_end, writer_peer) = tcp_pair();
        small_buffers(&writer_end, &writer_peer);
        fill_send_buffer(&writer_end);
        let write_fd = writer_end.as_raw_fd();
        let writer = spawn(
            "writer",
            Box::new(move || (&writer_end).write_all(&[1u8; 64 * 1024]).unwrap()),
        );

        let lock = Arc::new(Mutex::new(()));
        let held = lock.lock().unwrap();
        let locker = {
            let lock = lock.clone();
            spawn("locker", Box::new(move || drop(lock.lock().unwrap())))
        };

        let signal = Arc::new((Mutex::new(false), Condvar::new()));
        let waiter = {
            let signal = signal.clone();
            spawn(
                "waiter",
                Box::new(move || {
                    let (flag, condvar) = &*signal;
                    drop(condvar.wait_while(flag.lock().unwrap(), |set| !*set));
                }),
            )
        };

        let sleeper = spawn("sleeper", Box::new(|| thread::sleep(NAP)));
        let sleeper_id = sleeper.coroutine().id();
        let joiner = spawn("joiner", Box::new(move || sleeper.join().unwrap()));

        let (release_job, job_released) = mpsc::channel::<()>();
        let job = coroutines::spawn_blocking(move || job_released.recv().unwrap());
        let job_id = job.coroutine().id();

        let stop = Arc::new(AtomicBool::new(false));
        let yielder = {
            let stop = stop.clone();
            spawn(
                "yielder",
                Box::new(move || {
                    while !stop.load(Ordering::Relaxed) {
                        coroutines::yield_now();
                    }
                }),
            )
        };

        thread::sleep(SETTLE);
        let unstarted = spawn("unstarted", Box::new(|| ()));
        let dump = coroutines::dump();
        let text = dump.to_string();

        // The dump itself.
        assert_eq!(dump.workers, 1);
        let root = by_id(&dump, coroutines::current().id());
        assert!(matches!(root.state, CoroutineState::Running), "{text}");
        assert_eq!(root.worker, Some(0));
        assert!(
            line_of(&text, root.id).ends_with("on worker 0: running"),
            "{text}"
        );

        let entry = named(&dump, "reader");
        let waiting = parked(&dump, entry);
        assert_eq!(
            waiting.what,
            Wait::Fd {
                fd: read_fd,
                write: false
            },
            "{text}"
        );
        assert_eq!(waiting.remaining, None);
        let line = line_of(&text, entry.id);
        assert!(line.contains("'reader' on worker 0: parked for "), "{line}");
        assert!(
            line.ends_with(&format!("waiting to read descriptor {read_fd}")),
            "{line}"
        );

        let entry = named(&dump, "writer");
        let waiting = parked(&dump, entry);
        assert_eq!(
            waiting.what,
            Wait::Fd {
                fd: write_fd,
                write: true
            },
            "{text}"
        );
        let line = line_of(&text, entry.id);
        assert!(
            line.ends_with(&format!("waiting to write descriptor {write_fd}")),
            "{line}"
        );

        for name in ["locker", "waiter"] {
            let entry = named(&dump, name);
            assert_eq!(parked(&dump, entry).what, Wait::Futex, "{name}: {text}");
            assert!(
                line_of(&text, entry.id).contains("waiting on a futex"),
                "{text}"
            );
        }

        let entry = named(&dump, "sleeper");
        let waiting = parked(&dump, entry);
        assert_eq!(waiting.what, Wait::Sleep, "{text}");
        let left = waiting.remaining.expect("a sleep has a deadline");
        // Time waited and time left add up to the nap (the coarse clock
        // and the two readings allow some slack).
        let total = left + waiting.waited;
        assert!(
            total > NAP - Duration::from_millis(30) && total < NAP + Duration::from_millis(30),
            "{left:?} left and {:?} waited of {NAP:?}: {text}",
            waiting.waited
        );
        let line = line_of(&text, entry.id);
        assert!(
            line.contains(": parked for ") && line.contains(", sleeping, "),
            "{line}"
        );
        assert!(line.ends_with(" left"), "{line}");

        let entry = named(&dump, "joiner");
        assert_eq!(parked(&dump, entry).what, Wait::Join(sleeper_id), "{text}");
        assert!(
            line_of(&text, entry.id)
                .ends_with(&format!("joining coroutine {}", sleeper_id.as_u64())),
            "{text}"
        );

        let entry = by_id(&dump, job_id);
        assert_eq!(entry.name, None);
        assert_eq!(parked(&dump, entry).what, Wait::Pool, "{text}");
        assert!(
            line_of(&text, job_id).contains("waiting for a call on a helper thread"),
            "{text}"
        );

        let entry = named(&dump, "yielder");
        assert!(matches!(entry.state, CoroutineState::Runnable), "{text}");
        assert_eq!(entry.worker, Some(0));
        assert!(
            line_of(&text, entry.id).ends_with("'yielder' on worker 0: runnable"),
            "{text}"
        );

        let entry = named(&dump, "unstarted");
        assert!(matches!(entry.state, CoroutineState::NotStarted), "{text}");
        assert_eq!(entry.worker, None);
        assert!(
            line_of(&text, entry.id).ends_with("'unstarted': not started"),
            "{text}"
        );

        // The root, the seven parked coroutines, the yielder, the unstarted.
        assert_eq!(
            text.lines().next().unwrap(),
            "coroutines: 1 worker, 10 live coroutines (1 running, 1 runnable, 7 parked, 1 not started)",
            "{text}"
        );

        // Let everything finish.
        reader_peer.write_all(b"done").unwrap();
        thread::spawn(move || drain(writer_peer));
        drop(held);
        *signal.0.lock().unwrap() = true;
        signal.1.notify_all();
        release_job.send(()).unwrap();
        stop.store(true, Ordering::Relaxed);
        for handle in [reader, writer, locker, waiter, joiner, yielder, unstarted] {
            handle.join().unwrap();
        }
        job.join().unwrap();
        assert!(
            coroutines::dump().coroutines.len() == 1,
            "{}",
            coroutines::dump()
        );
    });
}

/// Outside any runtime, with the process-wide runtime not started, the
/// dump is empty.
#[test]
fn a_dump_outside_coroutines_without_a_runtime_is_empty() {
    if child_case().is_some() {
        let dump = coroutines::dump();
        assert!(dump.coroutines.is_empty());
        assert_eq!(dump.workers, 0);
        return;
    }
    // In a child process: other tests of this binary may have started the
    // process-wide runtime.
    run_child("empty dump", rerun("empty"), Duration::from_secs(30));
}

/// With `COROUTINES_DUMP_SIGNAL=USR1`, `kill -USR1` makes the process print
/// the dump to stderr and go on running.
#[test]
fn the_dump_signal_prints_the_dump_to_stderr() {
    if child_case().is_some() {
        return on_one_worker("napping", || {
            let napper = coroutines::Builder::new()
                .name("napper".into())
                .spawn(|| thread::sleep(Duration::from_secs(20)))
                .unwrap();
            thread::sleep(Duration::from_millis(20));
            println!("\nready {}", napper.coroutine().id().as_u64());
            // The parent kills this process once it has seen the dump.
            thread::sleep(Duration::from_secs(8));
        });
    }
    let mut command = rerun("signal");
    command.env("COROUTINES_DUMP_SIGNAL", "USR1");
    let mut child = command.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let stderr = Arc::new(Mutex::new(String::new()));
    {
        let stderr = stderr.clone();
        let mut pipe = child.stderr.take().unwrap();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                stderr
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let napper_id = loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!(
                "the child ended before it was ready: {}",
                stderr.lock().unwrap()
            );
        }
        if let Some(id) = line.trim().strip_prefix("ready ") {
            break id.to_owned();
        }
    };
    // SAFETY: signalling this test's own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
    let want = format!("  coroutine {napper_id} 'napper' on worker 0: parked for ");
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let seen = stderr.lock().unwrap().clone();
        let printed = seen
            .lines()
            .any(|l| l.starts_with(&want) && l.contains(", sleeping, "));
        if printed || Instant::now() > deadline {
            break seen;
        }
        thread::sleep(Duration::from_millis(10));
    };
    // Still running: the signal was handled, not fatal.
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.contains("coroutines: 1 worker, ") && seen.contains(&want),
        "no dump naming the napper on stderr after SIGUSR1:\n{seen}"
    );
    assert!(alive, "the child died of the signal:\n{seen}");
}
