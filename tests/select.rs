//! `select` inside a coroutine parks like `poll`, reports the same
//! readiness as the kernel would, and updates the timeout; outside a
//! coroutine it is libc's.

mod support;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use support::*;

/// `select` on `fd` for reading with a timeout; returns (result, read set
/// still holds fd, timeout left).
fn select_read(fd: i32, timeout: Duration) -> (i32, bool, Duration) {
    // SAFETY: a zeroed fd_set is empty; FD_SET and select get valid sets.
    unsafe {
        let mut set: libc::fd_set = std::mem::zeroed();
        libc::FD_SET(fd, &mut set);
        let mut tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        let ret = libc::select(
            fd + 1,
            &mut set,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut tv,
        );
        let left = Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
        (ret, libc::FD_ISSET(fd, &set), left)
    }
}

#[test]
fn select_parks_until_readable() {
    run(1, WATCHDOG, || {
        let (mut writer, reader) = tcp_pair();
        let ticker = Ticker::start();
        let late = after(Duration::from_millis(100), move || {
            writer.write_all(b"x").unwrap();
            writer
        });
        let ((ret, set, left), elapsed, ticks) =
            ticker.during(|| select_read(reader.as_raw_fd(), Duration::from_secs(5)));
        assert_eq!(ret, 1);
        assert!(set, "the read set lost the ready descriptor");
        assert!(
            elapsed >= Duration::from_millis(80),
            "returned after {elapsed:?}"
        );
        assert!(
            left < Duration::from_secs(5) && left > Duration::from_secs(4),
            "left {left:?}"
        );
        assert_ticked(ticks);
        drop(late.join().unwrap());
    });
}

#[test]
fn select_times_out_and_clears_the_sets() {
    run(1, WATCHDOG, || {
        let (_writer, reader) = tcp_pair();
        let ticker = Ticker::start();
        let ((ret, set, left), elapsed, ticks) =
            ticker.during(|| select_read(reader.as_raw_fd(), Duration::from_millis(150)));
        assert_eq!(ret, 0);
        assert!(!set, "a timed-out select left the descriptor in its set");
        assert_eq!(left, Duration::ZERO);
        assert!(
            elapsed >= Duration::from_millis(140),
            "timed out after {elapsed:?}"
        );
        assert_ticked(ticks);
    });
}

#[test]
fn select_outside_a_coroutine_blocks_as_libc() {
    let (_writer, reader) = tcp_pair();
    let start = Instant::now();
    let (ret, set, _) = select_read(reader.as_raw_fd(), Duration::from_millis(100));
    assert_eq!((ret, set), (0, false));
    assert!(start.elapsed() >= Duration::from_millis(90));
}
