//! `select`, differentially (issue item 11). The reference is glibc's own
//! `select` (found with `dlsym(RTLD_NEXT)`, past the hook) on a plain
//! thread; the hooked `select` must give the same on a plain thread, where
//! it should pass through, and in a coroutine.
//!
//! glibc normalises a `tv_usec` of a second or more instead of failing,
//! and the kernel clamps `nfds` to the descriptor table instead of failing
//! above `FD_SETSIZE`; `exceptfds` asks for urgent data only, so a hung-up
//! pipe there is not an event.
//!
//! `poll`, differentially: a coroutine's poll asks the reactor for the
//! events the user asked for (POLLWRNORM, POLLWRBAND, none at all), on
//! any kind of descriptor, and must report exactly what the kernel does.

mod support;

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

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

/// A `select` for exceptional conditions only reports urgent data a peer
/// sends later.
#[test]
fn select_in_exceptfds_only_reports_late_urgent_data() {
    let got = against_glibc("exceptfds-only select, urgent data", |select| {
        let (writer, reader) = tcp_pair();
        let late = after(WAIT, move || {
            // SAFETY: one byte from a live buffer.
            unsafe { libc::send(writer.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
            writer
        });
        let fd = reader.as_raw_fd();
        let mut except = WideSet::with(fd);
        let mut timeout = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        let null = std::ptr::null_mut();
        // SAFETY: a valid set and timeval.
        let (ret, span) =
            timed_span(|| unsafe { select(fd + 1, null, null, except.as_ptr(), &mut timeout) });
        drop(late.join().unwrap());
        (c_outcome(ret), except.has(fd), span)
    });
    assert_eq!(got, (Ok(1), true, Span::Woken));
}

const HUNDRED_MS: Duration = Duration::from_millis(100);

/// A `select` for exceptional conditions only on a regular file times out.
#[test]
fn select_in_exceptfds_only_on_a_regular_file_times_out() {
    let got = against_glibc("exceptfds-only select, regular file", |select| {
        let file = std::fs::File::open("/etc/hostname").unwrap();
        let fd = file.as_raw_fd();
        let mut except = WideSet::with(fd);
        let mut timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: HUNDRED_MS.as_micros() as libc::suseconds_t,
        };
        let null = std::ptr::null_mut();
        // SAFETY: a valid set and timeval.
        let (ret, against) = timed_against(HUNDRED_MS, || unsafe {
            select(fd + 1, null, null, except.as_ptr(), &mut timeout)
        });
        (c_outcome(ret), against)
    });
    assert_eq!(got, (Ok(0), Against::About));
}

/// `poll` of `fds` with a timeout of `timeout_ms`; the result, each
/// revents, and how long it took.
fn poll_all<T>(
    fds: &mut [libc::pollfd],
    timeout_ms: i32,
    time: impl FnOnce(&mut dyn FnMut() -> i32) -> (i32, T),
) -> (Result<i64, Errno>, Vec<libc::c_short>, T) {
    let len = fds.len() as libc::nfds_t;
    let ptr = fds.as_mut_ptr();
    // SAFETY: `fds` is a live array of `len` pollfds.
    let (ret, timing) = time(&mut || unsafe { libc::poll(ptr, len, timeout_ms) });
    (
        c_outcome(ret),
        fds.iter().map(|p| p.revents).collect(),
        timing,
    )
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// A `poll` asking for no events on a regular file times out with none.
#[test]
fn poll_for_no_events_on_a_regular_file_times_out() {
    let got = differential("poll(regular file, events 0)", |_| {
        let file = std::fs::File::open("/etc/hostname").unwrap();
        poll_all(&mut [pollfd(file.as_raw_fd(), 0)], 100, |call| {
            timed_against(HUNDRED_MS, call)
        })
    });
    assert_eq!(got, (Ok(0), vec![0], Against::About));
}

/// A `poll` of a pidfd reports POLLIN when the child exits.
#[test]
fn poll_of_a_pidfd_reports_the_child_exiting() {
    let got = differential("poll(pidfd)", |_| {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        // SAFETY: pidfd_open of our own child.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as i32, 0) } as RawFd;
        let start = Instant::now();
        let got = poll_all(&mut [pollfd(pidfd, libc::POLLIN)], 3000, |call| {
            (call(), ())
        });
        // Coarse: a child's start takes a while on a loaded machine.
        let about_the_child = (150..1500).contains(&start.elapsed().as_millis());
        child.wait().unwrap();
        // SAFETY: the pidfd is ours.
        unsafe { libc::close(pidfd) };
        (got.0, got.1, about_the_child)
    });
    assert_eq!(got, (Ok(1), vec![libc::POLLIN], true));
}

/// A `poll` for POLLWRBAND only on a full pipe sees nothing, although a
/// reader makes room: pipes have no priority band. It times out.
#[test]
fn poll_for_wrband_only_on_a_pipe_times_out() {
    let got = differential("poll(POLLWRBAND) on a full pipe", |_| {
        let (mut reader, writer) = std::io::pipe().unwrap();
        fill_pipe(writer.as_raw_fd());
        let (release, released) = std::sync::mpsc::channel::<()>();
        let drainer = after(WAIT, move || {
            let mut buf = vec![0u8; 1 << 17];
            std::io::Read::read(&mut reader, &mut buf).unwrap();
            // The reader stays open until the poll has returned.
            let _ = released.recv();
        });
        let got = poll_all(
            &mut [pollfd(writer.as_raw_fd(), libc::POLLWRBAND)],
            2000,
            |call| timed_span(call),
        );
        let _ = release.send(());
        drainer.join().unwrap();
        got
    });
    assert_eq!(got, (Ok(0), vec![0], Span::Long));
}

/// A `poll` for POLLWRNORM only on a TCP socket with a full send buffer
/// reports it when the peer drains the buffer.
#[test]
fn poll_for_wrnorm_only_reports_room_made_by_the_peer() {
    let got = differential("poll(POLLWRNORM) on a full TCP socket", |_| {
        let (writer, mut reader) = tcp_pair();
        fill_send_buffer(&writer);
        let (release, released) = std::sync::mpsc::channel::<()>();
        let drainer = after(WAIT, move || {
            reader
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut buf = vec![0u8; 1 << 20];
            while matches!(std::io::Read::read(&mut reader, &mut buf), Ok(n) if n > 0) {}
            // No end of file before the poll has returned.
            let _ = released.recv();
        });
        let (ret, revents, span) = poll_all(
            &mut [pollfd(writer.as_raw_fd(), libc::POLLWRNORM)],
            2000,
            |call| timed_span(call),
        );
        let _ = release.send(());
        drainer.join().unwrap();
        (ret, revents[0] & libc::POLLWRNORM != 0, span)
    });
    assert_eq!(got, (Ok(1), true, Span::Woken));
}
