//! `select`, differentially (issue item 11). The reference is glibc's own
//! `select` (found with `dlsym(RTLD_NEXT)`, past the hook) on a plain
//! thread; the hooked `select` must give the same on a plain thread, where
//! it should pass through, and in a coroutine.
//!
//! glibc normalises a `tv_usec` of a second or more instead of failing,
//! and the kernel clamps `nfds` to the descriptor table instead of failing
//! above `FD_SETSIZE`; `exceptfds` asks for urgent data only, so a hung-up
//! pipe there is not an event.

mod support;

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use support::differential::*;
use support::*;

/// The signature of `select`.
type SelectFn = unsafe extern "C" fn(
    libc::c_int,
    *mut libc::fd_set,
    *mut libc::fd_set,
    *mut libc::fd_set,
    *mut libc::timeval,
) -> libc::c_int;

/// glibc's `select`, which the hook hides from direct calls.
fn glibc_select() -> SelectFn {
    // SAFETY: a lookup by a NUL-terminated name.
    let symbol = unsafe { libc::dlsym(libc::RTLD_NEXT, c"select".as_ptr()) };
    assert!(!symbol.is_null(), "dlsym(RTLD_NEXT, select) found nothing");
    // SAFETY: glibc's `select` has this signature.
    unsafe { std::mem::transmute::<*mut libc::c_void, SelectFn>(symbol) }
}

/// The hooked `select`, as any caller in the process reaches it.
fn hooked_select() -> SelectFn {
    libc::select
}

/// Runs `case` with glibc's `select` on a plain thread, with the hooked one
/// on a plain thread, and with the hooked one in a coroutine, and asserts
/// that all three agree; returns glibc's value.
#[track_caller]
fn against_glibc<T, F>(what: &str, case: F) -> T
where
    T: PartialEq + std::fmt::Debug + Send + 'static,
    F: Fn(SelectFn) -> T + Send + Sync + Copy + 'static,
{
    let glibc = on_plain_thread(what, move || case(glibc_select()));
    let hooked = on_plain_thread(what, move || case(hooked_select()));
    assert_eq!(
        hooked, glibc,
        "{what}: the hooked select on a plain thread (left) differs from glibc's (right)"
    );
    differential(what, move |_| case(hooked_select()));
    glibc
}

/// Room for 2 * FD_SETSIZE descriptors, so that the kernel may read past
/// the first set when `nfds` exceeds FD_SETSIZE.
#[repr(C)]
#[derive(Clone, Copy)]
struct WideSet([libc::fd_set; 2]);

impl WideSet {
    fn empty() -> WideSet {
        // SAFETY: an all-zero fd_set is the empty set.
        unsafe { std::mem::zeroed() }
    }

    fn with(fd: RawFd) -> WideSet {
        let mut set = WideSet::empty();
        // SAFETY: `fd` < FD_SETSIZE in these tests, within the first set.
        unsafe { libc::FD_SET(fd, set.as_ptr()) };
        set
    }

    fn as_ptr(&mut self) -> *mut libc::fd_set {
        self.0.as_mut_ptr()
    }

    fn has(&mut self, fd: RawFd) -> bool {
        // SAFETY: as in `with`.
        unsafe { libc::FD_ISSET(fd, self.as_ptr()) }
    }
}

/// A pipe with one byte in it: its reading end is readable.
fn readable_pipe() -> (std::io::PipeReader, std::io::PipeWriter) {
    let (reader, mut writer) = std::io::pipe().unwrap();
    writer.write_all(b"x").unwrap();
    (reader, writer)
}

/// What one `select` call reported.
#[derive(Debug, PartialEq)]
struct Selected {
    result: Result<i64, Errno>,
    /// Whether the read set still holds the descriptor asked about.
    in_read_set: bool,
    timing: Timing,
}

#[test]
fn select_accepts_a_tv_usec_of_a_second_or_more() {
    let got = against_glibc("select with tv_usec = 1,500,000", |select| {
        let (reader, _writer) = readable_pipe();
        let fd = reader.as_raw_fd();
        let mut read = WideSet::with(fd);
        let mut timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 1_500_000,
        };
        let null = std::ptr::null_mut();
        // SAFETY: valid sets and timeval.
        let (ret, timing) =
            timed(|| unsafe { select(fd + 1, read.as_ptr(), null, null, &mut timeout) });
        // The time left, normalised, in tenths of a second.
        let left = (timeout.tv_sec, timeout.tv_usec / 100_000);
        let selected = Selected {
            result: c_outcome(ret),
            in_read_set: read.has(fd),
            timing,
        };
        (selected, left)
    });
    assert_eq!(
        got,
        (
            Selected {
                result: Ok(1),
                in_read_set: true,
                timing: Timing::AtOnce,
            },
            (1, 4)
        )
    );
}

#[test]
fn select_accepts_nfds_above_fd_setsize() {
    let got = against_glibc("select with nfds = FD_SETSIZE + 1", |select| {
        let (reader, _writer) = readable_pipe();
        let fd = reader.as_raw_fd();
        let mut read = WideSet::with(fd);
        let mut timeout = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        let null = std::ptr::null_mut();
        let nfds = libc::FD_SETSIZE as i32 + 1;
        // SAFETY: valid sets, each with room for `nfds` descriptors.
        let (ret, timing) =
            timed(|| unsafe { select(nfds, read.as_ptr(), null, null, &mut timeout) });
        Selected {
            result: c_outcome(ret),
            in_read_set: read.has(fd),
            timing,
        }
    });
    assert_eq!(
        got,
        Selected {
            result: Ok(1),
            in_read_set: true,
            timing: Timing::AtOnce,
        }
    );
}

#[test]
fn select_on_a_hung_up_pipe_in_exceptfds_only_times_out() {
    let got = against_glibc("exceptfds-only select on a hung-up pipe", |select| {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(writer);
        let fd = reader.as_raw_fd();
        let mut except = WideSet::with(fd);
        let mut timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 150_000,
        };
        let null = std::ptr::null_mut();
        // SAFETY: a valid set and timeval.
        let (ret, timing) =
            timed(|| unsafe { select(fd + 1, null, null, except.as_ptr(), &mut timeout) });
        (c_outcome(ret), except.has(fd), timing)
    });
    assert_eq!(got, (Ok(0), false, Timing::Waited));
}

#[test]
fn select_without_timeout_ignores_a_hung_up_pipe_in_exceptfds() {
    // With no timeout, only the other descriptor, written after WAIT, ends
    // the wait.
    let got = against_glibc("exceptfds on a hung-up pipe, no timeout", |select| {
        let (hung_up, writer) = std::io::pipe().unwrap();
        drop(writer);
        let (reader, mut writer) = std::io::pipe().unwrap();
        let late = after(WAIT, move || writer.write_all(b"x").unwrap());
        let (hung_up, fd) = (hung_up.as_raw_fd(), reader.as_raw_fd());
        let mut except = WideSet::with(hung_up);
        let mut read = WideSet::with(fd);
        let nfds = hung_up.max(fd) + 1;
        let (none, forever) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: valid sets; no timeout.
        let (ret, timing) =
            timed(|| unsafe { select(nfds, read.as_ptr(), none, except.as_ptr(), forever) });
        late.join().unwrap();
        (
            Selected {
                result: c_outcome(ret),
                in_read_set: read.has(fd),
                timing,
            },
            except.has(hung_up),
        )
    });
    assert_eq!(
        got,
        (
            Selected {
                result: Ok(1),
                in_read_set: true,
                timing: Timing::Waited,
            },
            false
        )
    );
}

/// A sanity check of the three-way shape: a select that waits for a peer
/// agrees everywhere (it passes today).
#[test]
fn select_that_waits_for_a_peer_agrees_with_glibc() {
    let got = against_glibc("select waiting for a peer", |select| {
        let (reader, mut writer) = std::io::pipe().unwrap();
        let late = after(WAIT, move || writer.write_all(b"x").unwrap());
        let fd = reader.as_raw_fd();
        let mut read = WideSet::with(fd);
        let mut timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        let null = std::ptr::null_mut();
        // SAFETY: a valid set and timeval.
        let (ret, timing) =
            timed(|| unsafe { select(fd + 1, read.as_ptr(), null, null, &mut timeout) });
        late.join().unwrap();
        let left = Duration::new(timeout.tv_sec as u64, timeout.tv_usec as u32 * 1000);
        let selected = Selected {
            result: c_outcome(ret),
            in_read_set: read.has(fd),
            timing,
        };
        (
            selected,
            left > Duration::from_secs(4) && left < Duration::from_secs(5),
        )
    });
    assert_eq!(
        got,
        (
            Selected {
                result: Ok(1),
                in_read_set: true,
                timing: Timing::Waited,
            },
            true
        )
    );
}
