//! Closing a descriptor while coroutines wait on it: the waiters wake
//! promptly with EBADF and nothing crashes; and the descriptor number's next
//! owner is not confused by the old file: the old waiter does not take the
//! new file's data, the new owner's waits work, and the old file's
//! readiness does not reach them.
//!
//! Every test here runs alone (see `support::on_one_worker_exclusive`),
//! so that no other test takes the freed number.

mod support;

use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::time::{Duration, Instant};

use support::*;

/// A woken waiter must return within this much of the close.
const PROMPT_AFTER_CLOSE: Duration = Duration::from_millis(100);

/// Moves the descriptor `fd` to the number `target`, just closed, as a new
/// owner of a reused number would get it. (Create the new descriptors
/// before closing `target`, or one of them may take the number itself.)
fn move_to(fd: RawFd, target: RawFd) -> RawFd {
    if fd == target {
        return fd;
    }
    // SAFETY: `target` is free (closed by the test) and `fd` is owned here.
    unsafe {
        assert_eq!(
            libc::dup2(fd, target),
            target,
            "dup2: {}",
            io::Error::last_os_error()
        );
        assert_eq!(libc::close(fd), 0);
    }
    target
}

/// Spawns a coroutine that reads once from `fd` (not owned: never closed by
/// it) and reports the result and when it returned.
fn reader(fd: RawFd) -> coroutines::JoinHandle<(io::Result<Vec<u8>>, Instant)> {
    coroutines::spawn(move || {
        let mut stream: ManuallyDrop<TcpStream> = borrowed(fd);
        let mut buf = [0u8; 64];
        let result = stream.read(&mut buf).map(|n| buf[..n].to_vec());
        (result, Instant::now())
    })
}

/// Lets the coroutines spawned so far run up to their park.
fn let_them_park() {
    std::thread::sleep(Duration::from_millis(20));
}

#[test]
fn reader_wakes_with_ebadf_promptly() {
    on_one_worker_exclusive("reader closed", || {
        let ticker = Ticker::start();
        let (client, _server) = tcp_pair();
        let fd = client.into_raw_fd();
        let waiter = reader(fd);
        let_them_park();
        let before = ticker.ticks();
        std::thread::sleep(WAIT);
        assert!(
            ticker.ticks() - before >= MIN_TICKS,
            "the worker kept running"
        );
        assert!(!waiter.is_finished(), "the reader waits for data");
        let closed_at = Instant::now();
        // SAFETY: the test owns `fd`; the reader never closes it.
        assert_eq!(unsafe { libc::close(fd) }, 0);
        let (result, woke_at) = waiter.join().unwrap();
        assert_os_error("read", result, libc::EBADF);
        let delay = woke_at - closed_at;
        assert!(delay < PROMPT_AFTER_CLOSE, "woke {delay:?} after the close");
    });
}

#[test]
fn reader_and_writer_on_one_descriptor_both_wake() {
    on_one_worker_exclusive("reader and writer closed", || {
        let (client, server) = tcp_pair();
        small_buffers(&client, &server);
        fill_send_buffer(&client);
        let fd = client.into_raw_fd();
        let first_reader = reader(fd);
        let second_reader = reader(fd);
        let writer = coroutines::spawn(move || {
            let mut stream: ManuallyDrop<TcpStream> = borrowed(fd);
            stream.write(&[1u8; 4096])
        });
        let_them_park();
        assert!(!first_reader.is_finished() && !second_reader.is_finished());
        assert!(!writer.is_finished());
        // SAFETY: the test owns `fd`; the waiters never close it.
        assert_eq!(unsafe { libc::close(fd) }, 0);
        assert_os_error("first read", first_reader.join().unwrap().0, libc::EBADF);
        assert_os_error("second read", second_reader.join().unwrap().0, libc::EBADF);
        assert_os_error("write", writer.join().unwrap(), libc::EBADF);
    });
}

#[test]
fn closing_one_duplicate_leaves_waiters_on_the_other() {
    // A dup is another number for the same socket: closing one number wakes
    // its waiters only; the socket stays open through the other.
    on_one_worker_exclusive("dup survives", || {
        let ticker = Ticker::start();
        let (client, mut server) = tcp_pair();
        let duplicate = client.try_clone().unwrap();
        let fd = client.into_raw_fd();
        let on_closed = reader(fd);
        let on_duplicate = reader(duplicate.as_raw_fd());
        let_them_park();
        // SAFETY: the test owns `fd`; the reader never closes it.
        assert_eq!(unsafe { libc::close(fd) }, 0);
        assert_os_error(
            "read on the closed number",
            on_closed.join().unwrap().0,
            libc::EBADF,
        );
        assert!(
            !on_duplicate.is_finished(),
            "the duplicate's reader still waits"
        );
        let writer = after(WAIT, move || {
            server.write_all(b"for the dup").unwrap();
            server
        });
        let ((result, _), elapsed, ticks) = ticker.during(|| on_duplicate.join().unwrap());
        assert_eq!(result.unwrap(), b"for the dup");
        assert_parked("read on the duplicate", elapsed, ticks);
        drop(writer.join().unwrap());
    });
}

#[test]
fn old_waiter_does_not_take_the_new_owners_data() {
    // The number is reused, and the new file has data, before the old
    // waiter runs again: the old waiter fails with EBADF instead of
    // reading from the new file.
    on_one_worker_exclusive("old waiter vs new data", || {
        let (old, _old_peer) = tcp_pair();
        let number = old.into_raw_fd();
        let waiter = reader(number);
        let_them_park();
        let (new, mut new_peer) = tcp_pair();
        // All of this without yielding, so the old waiter cannot run between.
        // SAFETY: the test owns `number`; the reader never closes it.
        assert_eq!(unsafe { libc::close(number) }, 0);
        let new_fd = move_to(new.into_raw_fd(), number);
        new_peer.write_all(b"new data").unwrap();
        std::thread::sleep(Duration::from_millis(10));
        assert_os_error("the old waiter", waiter.join().unwrap().0, libc::EBADF);
        // The data is still there for the new owner.
        let mut new: ManuallyDrop<TcpStream> = borrowed(new_fd);
        let mut buf = [0u8; 8];
        new.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"new data");
        ManuallyDrop::into_inner(new);
    });
}

#[test]
fn new_owner_of_the_number_waits_and_wakes_normally() {
    on_one_worker_exclusive("new owner waits", || {
        let ticker = Ticker::start();
        let (old, _old_peer) = tcp_pair();
        let number = old.into_raw_fd();
        let old_waiter = reader(number);
        let_them_park();
        let (new, new_peer) = tcp_pair();
        // SAFETY: the test owns `number`; the reader never closes it.
        assert_eq!(unsafe { libc::close(number) }, 0);
        let new_fd = move_to(new.into_raw_fd(), number);
        assert_os_error("the old waiter", old_waiter.join().unwrap().0, libc::EBADF);
        let mut new_peer = new_peer;
        let writer = after(WAIT, move || {
            new_peer.write_all(b"hello new").unwrap();
            new_peer
        });
        let mut new: ManuallyDrop<TcpStream> = borrowed(new_fd);
        let mut buf = [0u8; 16];
        let (n, elapsed, ticks) = ticker.during(|| new.read(&mut buf).unwrap());
        assert_eq!(&buf[..n], b"hello new");
        assert_parked("read by the new owner", elapsed, ticks);
        drop(writer.join().unwrap());
        ManuallyDrop::into_inner(new);
    });
}

#[test]
fn old_files_readiness_does_not_wake_the_new_owner() {
    // The old socket stays open through a duplicate, so the worker's epoll
    // still reports it; its events carry the number's old generation and
    // must not wake a waiter on the number's new file. Measured in context
    // switches: without a ticker, the only switch while the main coroutine
    // sleeps is its own wake-up.
    on_one_worker_exclusive("stale readiness", || {
        let (old, mut old_peer) = tcp_pair();
        let old_duplicate = old.try_clone().unwrap();
        let number = old.into_raw_fd();
        let old_waiter = reader(number);
        let_them_park();
        let (new, mut new_peer) = tcp_pair();
        // SAFETY: the test owns `number`; the reader never closes it.
        assert_eq!(unsafe { libc::close(number) }, 0);
        let new_fd = move_to(new.into_raw_fd(), number);
        assert_os_error("the old waiter", old_waiter.join().unwrap().0, libc::EBADF);
        let new_waiter = reader(new_fd);
        let_them_park();
        let before = coroutines::stats().context_switches;
        old_peer.write_all(b"old data").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let switches = coroutines::stats().context_switches - before;
        if new_waiter.is_finished() {
            let (result, _) = new_waiter.join().unwrap();
            panic!("the new owner's reader returned while only the old file had data: {result:?}");
        }
        assert_eq!(
            switches, 1,
            "context switches while the old file became readable (1 is the sleeper's own)"
        );
        new_peer.write_all(b"new data").unwrap();
        let (result, _) = new_waiter.join().unwrap();
        assert_eq!(result.unwrap(), b"new data");
        let mut old_duplicate = old_duplicate;
        let mut buf = [0u8; 8];
        old_duplicate.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"old data");
        // SAFETY: the new socket at `number` is owned here.
        unsafe { libc::close(new_fd) };
    });
}

#[test]
fn stale_accept_does_not_disturb_the_next_listener_on_the_number() {
    // A coroutine parked in accept is woken by a close; before it runs
    // again the number is a new listener with two coroutines accepting.
    // When the old accept returns it must not undo the runtime's hold on
    // the new listener (O_NONBLOCK while accepting): one connection wakes
    // both acceptors, and the loser must park again rather than block the
    // worker in a blocking accept4.
    on_one_worker_exclusive("stale accept", || {
        let ticker = Ticker::start();
        let old = TcpListener::bind("127.0.0.1:0").unwrap();
        let number = old.into_raw_fd();
        let old_acceptor = coroutines::spawn(move || {
            let listener: ManuallyDrop<TcpListener> = borrowed(number);
            listener.accept().map(drop)
        });
        let_them_park();
        ticker.take_max_gap();
        let new = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = new.local_addr().unwrap();
        // Without yielding: close, reuse the number, start accepting on it.
        // SAFETY: the test owns `number`; the acceptor never closes it.
        assert_eq!(unsafe { libc::close(number) }, 0);
        let new_fd = move_to(new.into_raw_fd(), number);
        let other_acceptor = coroutines::spawn(move || {
            let listener: ManuallyDrop<TcpListener> = borrowed(new_fd);
            listener.accept().map(drop)
        });
        let clients = after(Duration::from_millis(50), move || {
            let one = TcpStream::connect(addr).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            let two = TcpStream::connect(addr).unwrap();
            (one, two)
        });
        let listener: ManuallyDrop<TcpListener> = borrowed(new_fd);
        listener.accept().unwrap();
        assert_os_error("the old accept", old_acceptor.join().unwrap(), libc::EBADF);
        other_acceptor.join().unwrap().unwrap();
        let gap = ticker.take_max_gap();
        drop(clients.join().unwrap());
        assert!(
            gap < Duration::from_millis(100),
            "the worker stopped running other coroutines for {gap:?}: an accept blocked it"
        );
        ManuallyDrop::into_inner(listener);
    });
}
