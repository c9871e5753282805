//! Attack probes on the descriptor hooks (`hooks/fd.rs`, `hooks/driver.rs`),
//! differentially. Each failing probe is ignored with its finding.

mod support;

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::differential::*;
use support::TempPath;

fn open(path: &std::ffi::CStr, flags: libc::c_int) -> RawFd {
    // SAFETY: a NUL-terminated path.
    unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) }
}

/// The classic FIFO hand-shake: the reader opens the FIFO (which waits for
/// a writer), and a neighbour that first sleeps 50 ms opens it for writing
/// and writes. On threads the reader's open returns once the writer opens.
/// In a coroutine `open` is a plain system call that blocks the worker, and
/// the neighbour's sleep is a timer of that same worker, which nobody
/// fires, but for the blocked-worker monitor: without it or the rescue (a
/// plain thread that opens the FIFO for writing after 500 ms) the two never
/// meet.
#[test]
fn fifo_open_meets_a_writer_that_sleeps_first() {
    let got = differential_monitored(1, "FIFO open hand-shake", |side| {
        let path = TempPath::fifo();
        let c_path = path.c_path();
        let writer = {
            let c_path = c_path.clone();
            side.spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                let fd = open(&c_path, libc::O_WRONLY);
                // SAFETY: writes two bytes from a live buffer.
                let wrote = unsafe { libc::write(fd, b"hi".as_ptr().cast(), 2) };
                // SAFETY: closes the descriptor opened above.
                unsafe { libc::close(fd) };
                wrote
            })
        };
        // Lets the writer start and park in its sleep.
        std::thread::sleep(Duration::from_millis(10));
        let held = Arc::new(AtomicI32::new(-1));
        let rescue = {
            let (c_path, held) = (c_path.clone(), held.clone());
            Rescue::arm(move || {
                // A writer that writes nothing: releases the reader's open.
                held.store(
                    open(&c_path, libc::O_WRONLY | libc::O_NONBLOCK),
                    Ordering::SeqCst,
                );
            })
        };
        let (fd, span) = timed_span(|| open(&c_path, libc::O_RDONLY));
        let rescued = rescue.disarm();
        let mut buf = [0u8; 4];
        // SAFETY: reads into a live buffer.
        let read = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        let wrote = writer.join();
        // SAFETY: closes the descriptors opened above.
        unsafe {
            libc::close(fd);
            let held = held.load(Ordering::SeqCst);
            if held >= 0 {
                libc::close(held);
            }
        }
        (span, rescued, read, wrote)
    });
    assert_eq!(got, (Span::AtOnce, false, 2, 2));
}
