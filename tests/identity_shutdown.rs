//! Thread-locals of coroutines that do not end normally: detached ones
//! (their join handle dropped) still end as threads do, running their
//! thread-local destructors once; ones abandoned when their runtime shuts
//! down while they wait never run again, and their thread-locals are
//! dropped at most once, by whichever thread lets go of them last. A
//! destructor that makes a blocking call there must not take that thread
//! for a coroutine: it blocks like a thread's, and nothing aborts.

mod support;

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use coroutines::Runtime;
use support::child::{child_case, child_command, run_child};
use support::*;

/// A thread-local value that counts its drops in `counter`, and, if
/// `sleep` says so, sleeps in its destructor (what a destructor that
/// flushes a buffer to a socket or takes a lock may do).
struct Goodbye {
    counter: &'static AtomicUsize,
    sleep: bool,
}

impl Drop for Goodbye {
    fn drop(&mut self) {
        if self.sleep {
            thread::sleep(Duration::from_millis(2));
        }
        self.counter.fetch_add(1, Ordering::SeqCst);
    }
}

thread_local! {
    static GOODBYE: RefCell<Option<Goodbye>> = const { RefCell::new(None) };
}

fn say_goodbye_later(counter: &'static AtomicUsize, sleep: bool) {
    GOODBYE.with(|g| *g.borrow_mut() = Some(Goodbye { counter, sleep }));
}

/// Waits up to a second for `counter` to reach `want`.
fn wait_for(counter: &AtomicUsize, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(1);
    while counter.load(Ordering::SeqCst) < want && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    counter.load(Ordering::SeqCst)
}

#[test]
fn detached_coroutines_run_their_thread_local_destructors_at_their_end() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    const N: usize = 20;
    run(1, WATCHDOG, || {
        for i in 0..N {
            let (started, wait) = mpsc::channel::<()>();
            drop(coroutines::spawn(move || {
                // Sleeping destructors too: the coroutine parks in them.
                say_goodbye_later(&DROPS, i % 2 == 0);
                started.send(()).unwrap();
                thread::sleep(Duration::from_millis(1));
            }));
            wait.recv().unwrap();
        }
        assert_eq!(wait_for(&DROPS, N), N, "destructors of detached coroutines");
    });
    assert_eq!(DROPS.load(Ordering::SeqCst), N, "after the runtime ended");
}

#[test]
fn thread_locals_of_abandoned_coroutines_are_dropped_at_most_once() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let (keep, never) = mpsc::channel::<()>();
    let (started, wait) = mpsc::channel::<()>();
    let parked_on_timer = {
        let started = started.clone();
        runtime.spawn(move || {
            say_goodbye_later(&DROPS, false);
            started.send(()).unwrap();
            thread::sleep(Duration::from_secs(3600));
        })
    };
    let parked_on_channel = runtime.spawn(move || {
        say_goodbye_later(&DROPS, false);
        started.send(()).unwrap();
        let _ = never.recv();
    });
    wait.recv().unwrap();
    wait.recv().unwrap();
    drop(runtime);
    assert!(parked_on_timer.join().is_err(), "abandoned: join fails");
    drop(keep);
    assert!(parked_on_channel.join().is_err(), "abandoned: join fails");
    // Dropped once each, or never; not twice.
    thread::sleep(Duration::from_millis(20));
    let drops = DROPS.load(Ordering::SeqCst);
    assert!(
        drops <= 2,
        "2 abandoned coroutines' thread-locals dropped {drops} times"
    );
}

/// The child's side of
/// [`a_blocking_call_in_an_abandoned_coroutines_destructor_does_not_abort`].
fn abandon_with_a_sleeping_destructor() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let (started, wait) = mpsc::channel::<()>();
    let parked = runtime.spawn(move || {
        say_goodbye_later(&DROPS, true);
        started.send(()).unwrap();
        thread::sleep(Duration::from_secs(3600));
    });
    wait.recv().unwrap();
    drop(runtime);
    // Joining (or dropping) the handle lets go of the abandoned coroutine
    // here, on a plain thread: its destructor's sleep must block this
    // thread, not try to park a coroutine that no worker will run.
    assert!(parked.join().is_err(), "abandoned: join fails");
    assert!(DROPS.load(Ordering::SeqCst) <= 1);
    println!("CHILD OK");
}

#[test]
fn a_blocking_call_in_an_abandoned_coroutines_destructor_does_not_abort() {
    const TEST: &str = "a_blocking_call_in_an_abandoned_coroutines_destructor_does_not_abort";
    match child_case().as_deref() {
        Some("abandon") => return abandon_with_a_sleeping_destructor(),
        Some(_) => return,
        None => {}
    }
    let mut command = child_command(TEST, "abandon");
    command.env("RUST_BACKTRACE", "0");
    let output = run_child("abandoned coroutine", command, Duration::from_secs(20));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("CHILD OK"), "{stdout}");
}
