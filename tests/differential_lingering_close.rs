//! A close that frees its number long before it returns.
//!
//! A blocking close of a TCP socket with `SO_LINGER` and unsent data frees
//! the descriptor number at once and then waits in the kernel (for the
//! data to go out, or the linger time). The close hook's second half
//! (`reset_if`, hooks/fd.rs `replacing`) runs only when the system call
//! returns, so for that whole time the number may already name another
//! file, which the second half must leave alone.

mod support;

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use support::differential::*;
use support::raw::{recv_fd, set_linger};
use support::{fill_send_buffer, send_with_fd, small_buffers, tcp_pair};

/// Whether `fd` names no open file (a raw fcntl, no hook).
fn is_free(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on any number is harmless.
    unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFD) < 0 }
}

/// A read of a file that got the number while a close of its previous file
/// was still in its system call waits for its data, as on a thread. The
/// file arrives by SCM_RIGHTS, one of the ways of getting a descriptor that
/// no hook sees (also raw system calls).
#[test]
fn a_read_on_a_file_received_during_a_lingering_close_gets_its_data() {
    let got = differential_exclusive("read during a lingering close", |side| {
        let (lingering, mut peer) = tcp_pair();
        small_buffers(&lingering, &peer);
        fill_send_buffer(&lingering);
        set_linger(lingering.as_raw_fd(), 5);
        let (sender, receiver) = UnixStream::pair().unwrap();
        let (passed, mut passed_peer) = UnixStream::pair().unwrap();
        let number = lingering.into_raw_fd();
        // Fill every free number below ours, so that the next descriptor
        // the kernel hands out is ours once it is freed.
        let fillers = support::raw::fill_below(number);
        // The lingering close, on a plain thread on both sides.
        let closer = thread::spawn(move || {
            // SAFETY: the test owns `number` and closes it once.
            unsafe { libc::close(number) }
        });
        while !is_free(number) {
            thread::sleep(Duration::from_millis(1));
        }
        send_with_fd(&sender, &[0], passed.as_raw_fd());
        let reader = side.spawn(move || {
            let fd = recv_fd(receiver.as_raw_fd());
            // SAFETY: received just now, owned here.
            let mut file = unsafe { UnixStream::from_raw_fd(fd) };
            let mut byte = [0u8; 1];
            let result = file.read(&mut byte).map(|_| byte[0]);
            (fd == number, outcome(result))
        });
        // Let the reader wait, then let the lingering close finish (the
        // peer takes everything), then write what the reader waits for.
        thread::sleep(Duration::from_millis(100));
        let mut sink = vec![0u8; 64 * 1024];
        peer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        while let Ok(n) = peer.read(&mut sink) {
            if n == 0 {
                break;
            }
        }
        let closed = closer.join().unwrap();
        thread::sleep(Duration::from_millis(100));
        std::io::Write::write_all(&mut passed_peer, b"z").unwrap();
        let got = reader.join();
        for fd in fillers {
            // SAFETY: opened above, closed once.
            unsafe { libc::close(fd) };
        }
        drop(peer);
        (closed, got)
    });
    assert_eq!(got, (0, (true, Ok(b'z'))));
}

/// The party's own close of a socket that lingers (2 s) with unsent data
/// waits until a neighbour, reading 100 ms in, has taken the data: a
/// thread's close returns then, and in a coroutine the neighbour on the
/// same worker must be able to run meanwhile (a close on the worker would
/// wait out the whole linger time). Also for a socket accepted from a
/// listener that lingers (Linux copies the option).
#[test]
fn a_lingering_close_waits_without_blocking_the_worker() {
    let got = differential("lingering close", |side| {
        let mut results = Vec::new();
        for inherited in [false, true] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            if inherited {
                set_linger(listener.as_raw_fd(), 2);
            }
            let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (lingering, _) = listener.accept().unwrap();
            if !inherited {
                set_linger(lingering.as_raw_fd(), 2);
            }
            small_buffers(&lingering, &peer);
            fill_send_buffer(&lingering);
            let reader = side.spawn(move || {
                thread::sleep(Duration::from_millis(100));
                let mut sink = vec![0u8; 64 * 1024];
                let mut total = 0;
                while let Ok(n @ 1..) = peer.read(&mut sink) {
                    total += n;
                }
                total > 0
            });
            let number = lingering.into_raw_fd();
            // SAFETY: the case owns `number` and closes it once.
            let closed = timed_span(|| unsafe { libc::close(number) });
            results.push((closed, reader.join()));
        }
        results
    });
    let drained = ((0, Span::Woken), true);
    assert_eq!(got, vec![drained, drained]);
}
