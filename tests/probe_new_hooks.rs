//! Probes of the newest hooks (child waits with `__WNOTHREAD`, `wait3`,
//! `system`, `pclose` and `fclose` of a `popen` stream, calls made on a
//! helper thread, CPU-clock sleeps and `thrd_sleep`, `preadv2`/`pwritev2`
//! at the current position, `eventfd_read`/`eventfd_write`, `vmsplice`,
//! and glibc's fortified entry points): each case runs on a plain thread
//! and in a coroutine of a one-worker runtime (`support::differential`),
//! and the results (return values, error numbers, out-parameters, coarse
//! timings, whether a neighbour kept running) must agree.

mod support;

use std::ffi::CString;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

use support::child::start;
use support::differential::*;
use support::glibc::*;
use support::raw::close;
use support::*;

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: a live array of two.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (fds[0], fds[1])
}

fn h_errno() -> i32 {
    // SAFETY: the calling thread's h_errno slot.
    unsafe { *__h_errno_location() }
}

fn set_h_errno(value: i32) {
    // SAFETY: as above.
    unsafe { *__h_errno_location() = value };
}

/// Looks up glibc's own function `name` (the hook hides it from direct
/// calls).
fn glibc<T: Copy>(name: &std::ffi::CStr) -> T {
    // SAFETY: a lookup by a NUL-terminated name.
    let symbol = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
    assert!(!symbol.is_null(), "dlsym(RTLD_NEXT, {name:?})");
    assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<usize>());
    // SAFETY: the caller names a function pointer type of glibc's
    // function's signature.
    unsafe { std::mem::transmute_copy::<*mut libc::c_void, T>(&symbol) }
}

// ------------------------------------------------------- calls on a helper

/// `system` and `pclose` that succeed leave `errno` and `h_errno` as the
/// caller set them (glibc touches neither on success), and so does a
/// successful `getaddrinfo("localhost")` on a thread (whatever glibc
/// leaves there, the coroutine must see the same). In a coroutine they run
/// on a helper thread and the helper's own `errno`/`h_errno` come back.
#[test]
fn system_pclose_and_lookups_leave_errno_and_h_errno_as_on_a_thread() {
    let got = differential("errno after helper calls", |_side| {
        let mut out = Vec::new();
        set_errno(77);
        set_h_errno(55);
        // SAFETY: a NUL-terminated command.
        let ret = unsafe { libc::system(c"exit 3".as_ptr()) };
        out.push(("system", libc::WEXITSTATUS(ret), errno(), h_errno()));
        // SAFETY: NUL-terminated strings; the stream is closed below.
        let stream = unsafe { libc::popen(c"exit 2".as_ptr(), c"r".as_ptr()) };
        assert!(!stream.is_null());
        set_errno(77);
        set_h_errno(55);
        // SAFETY: a stream of popen, closed once.
        let ret = unsafe { libc::pclose(stream) };
        out.push(("pclose", libc::WEXITSTATUS(ret), errno(), h_errno()));
        set_errno(77);
        set_h_errno(55);
        let mut res = null_mut();
        // SAFETY: NUL-terminated name; the result is freed below.
        let ret = unsafe { libc::getaddrinfo(c"localhost".as_ptr(), null(), null(), &mut res) };
        if ret == 0 {
            // SAFETY: getaddrinfo's own result.
            unsafe { libc::freeaddrinfo(res) };
        }
        out.push(("getaddrinfo", ret, errno(), h_errno()));
        out
    });
    assert_eq!(got[0], ("system", 3, 77, 55));
    assert_eq!(got[1], ("pclose", 2, 77, 55));
}

/// glibc's `fclose` of a `popen` stream waits for the command, as `pclose`
/// does (it is the same close), and returns its status: a neighbour keeps
/// running meanwhile.
#[test]
fn fclose_of_a_popen_stream_waits_without_blocking_the_neighbours() {
    let got = differential("fclose of a popen stream", |side| {
        let companion = Companion::start(side);
        // SAFETY: NUL-terminated strings; the stream is closed once.
        let stream = unsafe { libc::popen(c"sleep 0.2; exit 5".as_ptr(), c"r".as_ptr()) };
        assert!(!stream.is_null());
        // SAFETY: as above.
        let ((ret, span), kept) =
            companion.during(|| timed_span(|| unsafe { libc::fclose(stream) }));
        (libc::WEXITSTATUS(ret), span, kept)
    });
    assert_eq!(got, (5, Span::Woken, true));
}

/// `pclose` after the command was reaped by a `wait` elsewhere fails with
/// ECHILD; `pclose` of a "w" stream flushes what was buffered to the
/// command first; and the freed number, reused for a pipe, waits for a
/// late write while a neighbour keeps running. Each side in a process of
/// its own (a wait for any child).
#[test]
fn pclose_echild_flush_and_the_number_reused() {
    let got = isolated(|side| {
        // SAFETY (below): NUL-terminated strings; each stream closed once.
        let stream = unsafe { libc::popen(c"exit 3".as_ptr(), c"r".as_ptr()) };
        assert!(!stream.is_null());
        let mut status = 0;
        // SAFETY: a live int; the only child is popen's.
        let reaped = unsafe { libc::wait(&mut status) } > 0;
        set_errno(0);
        // SAFETY: as above.
        let late = unsafe { libc::pclose(stream) };
        let late = (late, errno());

        let path = TempPath::unique();
        let command = CString::new(format!("cat > {}", path.display())).unwrap();
        // SAFETY: as above.
        let stream = unsafe { libc::popen(command.as_ptr(), c"w".as_ptr()) };
        assert!(!stream.is_null());
        // SAFETY: a live stream and a NUL-terminated string.
        unsafe { libc::fputs(c"buffered\n".as_ptr(), stream) };
        // SAFETY: as above.
        let flushed = unsafe { libc::pclose(stream) };
        let written = std::fs::read_to_string(&*path).unwrap_or_default();

        // SAFETY: as above.
        let stream = unsafe { libc::popen(c"exit 0".as_ptr(), c"r".as_ptr()) };
        assert!(!stream.is_null());
        // SAFETY: a live stream.
        let old = unsafe { libc::fileno(stream) };
        // SAFETY: as above.
        unsafe { libc::pclose(stream) };
        let (r, w) = pipe();
        let companion = Companion::start(side);
        let writer = after(Duration::from_millis(100), move || {
            // SAFETY: a live descriptor and buffer.
            unsafe { libc::write(w, b"x".as_ptr().cast(), 1) }
        });
        let mut buf = [0u8; 4];
        // SAFETY: a live buffer.
        let (read, kept) = companion.during(|| {
            timed_span(|| c_outcome(unsafe { libc::read(r, buf.as_mut_ptr().cast(), 4) } as i64))
        });
        writer.join().unwrap();
        close(r);
        close(w);
        (reaped, late, flushed, written, r == old, read, kept)
    });
    assert_eq!(
        got,
        Ended::Value(format!(
            "{:?}",
            (
                true,
                (-1, libc::ECHILD),
                0,
                "buffered\n",
                true,
                (Ok::<i64, Errno>(1), Span::Woken),
                true
            )
        ))
    );
}

/// Eight `system` calls at once, each of a shell that sleeps 200 ms and
/// exits with its own code: each gets its own status, and together they
/// take about as long as one (they wait side by side, as threads do).
#[test]
fn eight_systems_at_once_wait_side_by_side() {
    let got = differential("eight systems", |side| {
        let (codes, span) = timed_span(|| {
            let parties: Vec<_> = (0..8)
                .map(|i| {
                    side.spawn(move || {
                        let command = CString::new(format!("sleep 0.2; exit {i}")).unwrap();
                        // SAFETY: a NUL-terminated command.
                        libc::WEXITSTATUS(unsafe { libc::system(command.as_ptr()) })
                    })
                })
                .collect();
            parties.into_iter().map(|p| p.join()).collect::<Vec<_>>()
        });
        (codes, span)
    });
    assert_eq!(got, ((0..8).collect::<Vec<_>>(), Span::Woken));
}

static CHILD_SIGNALS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_child(_: libc::c_int) {
    CHILD_SIGNALS.fetch_add(1, Ordering::Relaxed);
}

/// `system(NULL)` says a shell exists; with a SIGCHLD handler the command's
/// status comes back and the handler runs once; with SIGCHLD ignored the
/// command's exit is reaped by the kernel and `system` fails as glibc's
/// does. Each side in a process of its own (dispositions are
/// process-wide).
#[test]
fn system_null_handled_and_ignored_sigchld() {
    let got = isolated(|_| {
        // SAFETY: a null command asks whether a shell exists.
        let exists = unsafe { libc::system(null()) } != 0;
        install_handler(libc::SIGCHLD, on_child);
        // SAFETY: a NUL-terminated command.
        let handled = unsafe { libc::system(c"exit 4".as_ptr()) };
        thread::sleep(Duration::from_millis(50));
        let signals = CHILD_SIGNALS.load(Ordering::Relaxed);
        // SAFETY: an all-zero sigaction with SIG_IGN is valid.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = libc::SIG_IGN;
            libc::sigaction(libc::SIGCHLD, &action, null_mut());
        }
        set_errno(0);
        // SAFETY: a NUL-terminated command.
        let ignored = unsafe { libc::system(c"exit 4".as_ptr()) };
        let ignored = (ignored, errno());
        (exists, libc::WEXITSTATUS(handled), signals, ignored)
    });
    assert!(
        matches!(got, Ended::Value(ref v) if v.starts_with("(true, 4, 1,")),
        "{got:?}"
    );
}

// ------------------------------------------------------------ child waits

/// `waitpid` with `__WNOTHREAD` for the caller's own child: nothing yet
/// with WNOHANG, the stop with WUNTRACED (the child stops itself 100 ms
/// in), the continue with WCONTINUED (it lives 100 ms more, so the
/// continue is reported before the exit), the exit with `__WALL`, and EINVAL
/// for an unknown option bit; a neighbour keeps running while it waits.
/// Each side in a process of its own.
#[test]
fn waitpid_wnothread_reports_stop_continue_and_exit() {
    let got = isolated(|side| {
        let companion = Companion::start(side);
        let pid = start("sleep 0.1; kill -STOP $$; sleep 0.1; exit 6");
        let mut status = 0;
        let nothread = libc::__WNOTHREAD;
        // SAFETY (each wait): a live int.
        let nothing =
            c_outcome(unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | nothread) });
        let bad = c_outcome(unsafe { libc::waitpid(pid, &mut status, 0x0100_0000 | nothread) });
        let (stopped, kept) = companion.during(|| {
            c_outcome(unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED | nothread) })
        });
        let stop = (stopped == Ok(pid as i64), libc::WIFSTOPPED(status));
        // SAFETY: our child.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        let cont =
            c_outcome(unsafe { libc::waitpid(pid, &mut status, libc::WCONTINUED | nothread) });
        let cont = (cont == Ok(pid as i64), libc::WIFCONTINUED(status));
        let exit = c_outcome(unsafe { libc::waitpid(pid, &mut status, libc::__WALL | nothread) });
        let exit = (exit == Ok(pid as i64), libc::WEXITSTATUS(status));
        (nothing, bad, stop, kept, cont, exit)
    });
    assert_eq!(
        got,
        Ended::Value(format!(
            "{:?}",
            (
                Ok::<i64, Errno>(0),
                Err::<i64, Errno>(Errno(libc::EINVAL)),
                (true, true),
                true,
                (true, true),
                (true, 6)
            )
        ))
    );
}

/// `wait3`: ECHILD without children, EINVAL for an unknown option, 0 with
/// WNOHANG while the child runs, then the child's status and its resource
/// usage written (a non-zero maximum resident set). Each side in a
/// process of its own.
#[test]
fn wait3_errors_wnohang_and_usage() {
    let got = isolated(|_| {
        let mut status = 0;
        // SAFETY (each call): live out-pointers.
        let none = c_outcome(unsafe { wait3(&mut status, 0, null_mut()) });
        let pid = start("sleep 0.1; exit 4");
        let bad = c_outcome(unsafe { wait3(&mut status, 0x0100_0000, null_mut()) });
        let early = c_outcome(unsafe { wait3(&mut status, libc::WNOHANG, null_mut()) });
        // SAFETY: an all-zero rusage is valid.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let (done, span) = timed_span(|| c_outcome(unsafe { wait3(&mut status, 0, &mut usage) }));
        (
            none,
            bad,
            early,
            done == Ok(pid as i64),
            libc::WEXITSTATUS(status),
            usage.ru_maxrss > 0,
            span,
        )
    });
    assert_eq!(
        got,
        Ended::Value(format!(
            "{:?}",
            (
                Err::<i64, Errno>(Errno(libc::ECHILD)),
                Err::<i64, Errno>(Errno(libc::EINVAL)),
                Ok::<i64, Errno>(0),
                true,
                4,
                true,
                Span::Woken
            )
        ))
    );
}

// ---------------------------------------------------------------- sleeping

/// A sleep on the caller's own thread CPU clock (`pthread_getcpuclockid`
/// of `pthread_self`) is EINVAL at once from the kernel, relative or
/// absolute. A neighbour burns CPU meanwhile, so that a sleep that is
/// wrongly made (on a helper, against the worker's clock) ends too.
#[test]
fn clock_nanosleep_on_the_callers_own_thread_clock_is_einval() {
    let got = differential("own thread CPU clock", |side| {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: a live out-pointer.
        assert_eq!(
            unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) },
            0
        );
        let burner = side.spawn(|| compute(Duration::from_millis(300)));
        let req = ts(0, 20_000_000);
        let mut rem = ts(9, 9);
        // SAFETY: live timespecs.
        let relative = timed(|| unsafe { libc::clock_nanosleep(clock, 0, &req, &mut rem) });
        let abs = ts(0, 20_000_000);
        // SAFETY: as above.
        let absolute = timed(|| unsafe {
            libc::clock_nanosleep(clock, libc::TIMER_ABSTIME, &abs, null_mut())
        });
        burner.join();
        (relative, absolute, (rem.tv_sec, rem.tv_nsec))
    });
    assert_eq!(
        got,
        (
            (libc::EINVAL, Timing::AtOnce),
            (libc::EINVAL, Timing::AtOnce),
            (9, 9)
        )
    );
}

type ThrdSleep = unsafe extern "C" fn(*const libc::timespec, *mut libc::timespec) -> libc::c_int;

/// `thrd_sleep` on bad and immediate requests: return value, `errno` (77
/// before), remainder (a marker before), timing.
fn thrd_sleep_cases(call: ThrdSleep) -> Vec<(i32, i32, (i64, i64), Timing)> {
    let cases = [
        Some(ts(0, 1_000_000_000)),
        Some(ts(0, -1)),
        Some(ts(-1, 0)),
        None,
        Some(ts(0, 0)),
        Some(ts(0, 1_000_000)),
    ];
    cases
        .into_iter()
        .map(|req| {
            let req_ptr = req.as_ref().map_or(null(), |r| r as *const libc::timespec);
            let mut rem = ts(9, 9);
            set_errno(77);
            // SAFETY: `req_ptr` is null or live; `rem` is live.
            let (ret, timing) = timed(|| unsafe { call(req_ptr, &mut rem) });
            (ret, errno(), (rem.tv_sec, rem.tv_nsec), timing)
        })
        .collect()
}

/// The hooked `thrd_sleep` answers as glibc's own (on a plain thread) on a
/// thread and in a coroutine.
#[test]
fn thrd_sleep_errors_as_glibc() {
    let reference = on_plain_thread("glibc thrd_sleep", || {
        thrd_sleep_cases(glibc::<ThrdSleep>(c"thrd_sleep"))
    });
    let got = differential("thrd_sleep cases", |_| thrd_sleep_cases(thrd_sleep));
    assert_eq!(got, reference);
}

// ------------------------------------------------------- preadv2/pwritev2

/// A `preadv2` with a flag the kernel does not know fails with EOPNOTSUPP
/// on both sides; afterwards `accept` on the same listener still waits for
/// a late client without blocking a neighbour.
#[test]
fn preadv2_with_an_unknown_flag_leaves_accept_parking() {
    let got = differential("preadv2 unknown flag, then accept", |side| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = listener.as_raw_fd();
        let mut buf = [0u8; 8];
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: a live iovec.
        let unknown = c_outcome(unsafe { libc::preadv2(fd, &iov, 1, -1, 0x4000_0000) } as i64);
        let companion = Companion::start(side);
        let addr = listener.local_addr().unwrap();
        let client = after(Duration::from_millis(150), move || TcpStream::connect(addr));
        let ((accepted, span), kept) =
            companion.during(|| timed_span(|| listener.accept().is_ok()));
        drop(client.join().unwrap());
        (unknown, accepted, span, kept)
    });
    assert_eq!(got, (Err(Errno(libc::EOPNOTSUPP)), true, Span::Woken, true));
}

/// `pwritev2(RWF_DSYNC)` of 256 KiB at the current position to a pipe
/// whose reader drains it 100 ms later writes everything (a neighbour
/// keeps running); `preadv2` with `RWF_HIPRI` reads; `preadv2` at offset 0
/// of a pipe is ESPIPE; `pwritev2(RWF_APPEND)` at -1 on a file appends.
#[test]
fn pwritev2_large_dsync_hipri_espipe_and_append() {
    let got = differential("pwritev2 flags", |side| {
        let (r, w) = pipe();
        let data = vec![7u8; 256 * 1024];
        let iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let reader = after(Duration::from_millis(100), move || {
            let mut total = 0usize;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                // SAFETY: a live buffer; `r` is live until joined.
                let n = unsafe { libc::read(r, buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    break total;
                }
                total += n as usize;
            }
        });
        let companion = Companion::start(side);
        // SAFETY: a live iovec.
        let (written, kept) = companion.during(|| {
            timed_span(|| {
                c_outcome(unsafe { libc::pwritev2(w, &iov, 1, -1, libc::RWF_DSYNC) } as i64)
            })
        });
        close(w);
        let drained = reader.join().unwrap();
        close(r);

        let (r, w) = pipe();
        // SAFETY: a live buffer.
        unsafe { libc::write(w, b"hipri".as_ptr().cast(), 5) };
        let mut buf = [0u8; 16];
        let riov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: a live iovec.
        let hipri = c_outcome(unsafe { libc::preadv2(r, &riov, 1, -1, libc::RWF_HIPRI) } as i64);
        // SAFETY: as above.
        let espipe = c_outcome(unsafe { libc::preadv2(r, &riov, 1, 0, 0) } as i64);
        close(r);
        close(w);

        let path = TempPath::unique();
        std::fs::write(&*path, b"head").unwrap();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&*path)
            .unwrap();
        let tail = libc::iovec {
            iov_base: b"tail".as_ptr() as *mut libc::c_void,
            iov_len: 4,
        };
        // SAFETY: a live iovec.
        let append =
            c_outcome(
                unsafe { libc::pwritev2(file.as_raw_fd(), &tail, 1, -1, libc::RWF_APPEND) } as i64,
            );
        let content = std::fs::read(&*path).unwrap();
        (
            written,
            kept,
            drained,
            hipri,
            espipe,
            append,
            bytes(&content),
        )
    });
    assert_eq!(
        got,
        (
            (Ok(256 * 1024), Span::Woken),
            true,
            256 * 1024,
            Ok(5),
            Err(Errno(libc::ESPIPE)),
            Ok(4),
            bytes(b"headtail")
        )
    );
}

/// `preadv2` at -1 on a pty's master waits for a line the slave writes
/// 100 ms later (a neighbour keeps running), and an unknown flag is
/// EOPNOTSUPP there too.
#[test]
fn preadv2_on_a_pty_waits_for_a_late_line() {
    let got = differential("preadv2 on a pty", |side| {
        // SAFETY: posix_openpt and friends on a fresh master.
        let (master, slave) = unsafe {
            let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            assert!(master >= 0);
            assert_eq!(libc::grantpt(master), 0);
            assert_eq!(libc::unlockpt(master), 0);
            let name = libc::ptsname(master);
            let slave = libc::open(name, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            assert!(slave >= 0);
            (master, slave)
        };
        let mut buf = [0u8; 64];
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: a live iovec.
        let unknown = c_outcome(unsafe { libc::preadv2(master, &iov, 1, -1, 0x4000_0000) } as i64);
        let writer = after(Duration::from_millis(100), move || {
            // SAFETY: a live descriptor and buffer.
            unsafe { libc::write(slave, b"late\n".as_ptr().cast(), 5) }
        });
        let companion = Companion::start(side);
        // SAFETY: a live iovec.
        let (read, kept) = companion.during(|| {
            timed_span(|| c_outcome(unsafe { libc::preadv2(master, &iov, 1, -1, 0) } as i64))
        });
        writer.join().unwrap();
        let line = bytes(&buf[..read.0.unwrap_or(0).max(0) as usize]);
        close(slave);
        close(master);
        (unknown, read, kept, line)
    });
    assert_eq!(
        got,
        (
            Err(Errno(libc::EOPNOTSUPP)),
            (Ok(6), Span::Woken),
            true,
            bytes(b"late\r\n")
        )
    );
}

// ----------------------------------------------------------------- eventfd

/// `eventfd_read` on a non-blocking, empty counter: -1 and EAGAIN;
/// `eventfd_write` of the reserved maximum: -1 and EINVAL; both on a
/// closed number: -1 and EBADF; `eventfd_write` on a pipe writes 8 bytes
/// (0); a blocking `eventfd_read` waits for a late write while a neighbour
/// keeps running.
#[test]
fn eventfd_read_write_errors_and_a_late_write() {
    let got = differential("eventfd_read/eventfd_write", |side| {
        // SAFETY: a fresh eventfd.
        let nb = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        let mut value: libc::eventfd_t = 99;
        set_errno(0);
        // SAFETY (each call): live out-pointers.
        let empty = (
            unsafe { libc::eventfd_read(nb, &mut value) },
            errno(),
            value,
        );
        set_errno(0);
        let max = (unsafe { libc::eventfd_write(nb, u64::MAX) }, errno());
        close(nb);
        set_errno(0);
        let closed_read = (unsafe { libc::eventfd_read(nb, &mut value) }, errno());
        set_errno(0);
        let closed_write = (unsafe { libc::eventfd_write(nb, 1) }, errno());
        let (r, w) = pipe();
        let on_pipe = unsafe { libc::eventfd_write(w, 5) };
        let mut eight = [0u8; 16];
        let got8 = unsafe { libc::read(r, eight.as_mut_ptr().cast(), 16) };
        close(r);
        close(w);

        // SAFETY: a fresh eventfd.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        let writer = after(Duration::from_millis(100), move || unsafe {
            libc::eventfd_write(fd, 3)
        });
        let companion = Companion::start(side);
        let mut got = 0;
        let ((ret, span), kept) =
            companion.during(|| timed_span(|| unsafe { libc::eventfd_read(fd, &mut got) }));
        writer.join().unwrap();
        close(fd);
        (
            empty,
            max,
            closed_read,
            closed_write,
            (on_pipe, got8),
            (ret, got, span, kept),
        )
    });
    assert_eq!(
        got,
        (
            (-1, libc::EAGAIN, 99),
            (-1, libc::EINVAL),
            (-1, libc::EBADF),
            (-1, libc::EBADF),
            (0, 8),
            (0, 3, Span::Woken, true)
        )
    );
}

// ---------------------------------------------------------------- vmsplice

/// `vmsplice`: to a full pipe with SPLICE_F_NONBLOCK, EAGAIN at once; to a
/// regular file, EBADF; from a pipe's read end (the read direction), the
/// queued bytes; to a pipe without readers, EPIPE (SIGPIPE is ignored in
/// Rust programs); to a full pipe drained 100 ms later, everything, while
/// a neighbour keeps running.
#[test]
fn vmsplice_nonblock_errors_read_direction_and_a_late_drain() {
    let got = differential("vmsplice", |side| {
        let data = [5u8; 16];
        let iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let (r, w) = pipe();
        fill_pipe(w);
        // SAFETY (each call): live iovecs.
        let nonblock = timed(|| {
            c_outcome(unsafe { libc::vmsplice(w, &iov, 1, libc::SPLICE_F_NONBLOCK) } as i64)
        });
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let to_file = c_outcome(unsafe { libc::vmsplice(file.as_raw_fd(), &iov, 1, 0) } as i64);
        let reader = after(Duration::from_millis(100), move || {
            let mut buf = vec![0u8; 1 << 20];
            // SAFETY: a live buffer; `r` is closed after the join.
            unsafe { libc::read(r, buf.as_mut_ptr().cast(), buf.len()) }
        });
        let companion = Companion::start(side);
        let (late, kept) = companion
            .during(|| timed_span(|| c_outcome(unsafe { libc::vmsplice(w, &iov, 1, 0) } as i64)));
        reader.join().unwrap();
        close(r);
        close(w);

        let (r, w) = pipe();
        // SAFETY: a live buffer.
        unsafe { libc::write(w, b"queued".as_ptr().cast(), 6) };
        let mut into = [0u8; 16];
        let riov = libc::iovec {
            iov_base: into.as_mut_ptr().cast(),
            iov_len: into.len(),
        };
        let read_dir = c_outcome(unsafe { libc::vmsplice(r, &riov, 1, 0) } as i64);
        close(r);
        let epipe = c_outcome(unsafe { libc::vmsplice(w, &iov, 1, 0) } as i64);
        close(w);
        (
            nonblock,
            to_file,
            late,
            kept,
            read_dir,
            bytes(&into[..6]),
            epipe,
        )
    });
    assert_eq!(
        got,
        (
            (Err(Errno(libc::EAGAIN)), Timing::AtOnce),
            Err(Errno(libc::EBADF)),
            (Ok(16), Span::Woken),
            true,
            Ok(6),
            bytes(b"queued"),
            Err(Errno(libc::EPIPE))
        )
    );
}

// ---------------------------------------------------------------- fortify

type ReadChk = unsafe extern "C" fn(i32, *mut libc::c_void, usize, usize) -> isize;
type RecvChk = unsafe extern "C" fn(i32, *mut libc::c_void, usize, usize, i32) -> isize;
type PollChk = unsafe extern "C" fn(*mut libc::pollfd, libc::nfds_t, i32, usize) -> i32;
type PpollChk = unsafe extern "C" fn(
    *mut libc::pollfd,
    libc::nfds_t,
    *const libc::timespec,
    *const libc::sigset_t,
    usize,
) -> i32;

/// The fortified calls at their size boundaries, with the given functions:
/// a read and a receive of exactly the buffer's size, a poll of as many
/// descriptors as fit (and of none, with no array), a ppoll of none, a
/// read of a closed number (errno). Results and `errno`.
fn fortified_cases(
    read_chk: ReadChk,
    recv_chk: RecvChk,
    poll_chk: PollChk,
    ppoll_chk: PpollChk,
) -> Vec<(i64, i32)> {
    let mut out = Vec::new();
    let (r, w) = pipe();
    // SAFETY (each call): live buffers of the stated sizes.
    unsafe { libc::write(w, b"12345678".as_ptr().cast(), 8) };
    let mut buf = [0u8; 8];
    set_errno(0);
    out.push((
        unsafe { read_chk(r, buf.as_mut_ptr().cast(), 8, 8) } as i64,
        errno(),
    ));
    let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
    b.send(b"abcd").unwrap();
    out.push((
        unsafe { recv_chk(a.as_raw_fd(), buf.as_mut_ptr().cast(), 4, 4, 0) } as i64,
        errno(),
    ));
    unsafe { libc::write(w, b"x".as_ptr().cast(), 1) };
    let mut fds = [
        libc::pollfd {
            fd: r,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: w,
            events: libc::POLLOUT,
            revents: 0,
        },
    ];
    let size = std::mem::size_of_val(&fds);
    out.push((
        unsafe { poll_chk(fds.as_mut_ptr(), 2, 0, size) } as i64,
        errno(),
    ));
    out.push((unsafe { poll_chk(null_mut(), 0, 0, 0) } as i64, errno()));
    let zero = ts(0, 0);
    out.push((
        unsafe { ppoll_chk(null_mut(), 0, &zero, null(), 0) } as i64,
        errno(),
    ));
    out.push((
        unsafe { ppoll_chk(fds.as_mut_ptr(), 2, &zero, null(), size) } as i64,
        errno(),
    ));
    close(r);
    close(w);
    set_errno(0);
    out.push((
        unsafe { read_chk(r, buf.as_mut_ptr().cast(), 8, 8) } as i64,
        errno(),
    ));
    out
}

/// Outside coroutines the hooked fortified calls answer as glibc's own
/// (on a plain thread), and in a coroutine as on a thread.
#[test]
fn fortified_boundaries_as_glibc() {
    let reference = on_plain_thread("glibc's fortified calls", || {
        fortified_cases(
            glibc::<ReadChk>(c"__read_chk"),
            glibc::<RecvChk>(c"__recv_chk"),
            glibc::<PollChk>(c"__poll_chk"),
            glibc::<PpollChk>(c"__ppoll_chk"),
        )
    });
    let got = differential("fortified boundaries", |_| {
        fortified_cases(__read_chk, __recv_chk, __poll_chk, __ppoll_chk)
    });
    assert_eq!(got, reference);
}

/// A fortified receive past its buffer aborts with glibc's message on
/// stderr, on both sides. Each side in a child process that itself runs
/// the check in a grandchild, so the message can be read.
#[test]
fn fortified_overflow_prints_glibcs_message() {
    let got = isolated(|_| {
        let (r, w) = pipe();
        // SAFETY: fork; the child only redirects stderr and fails the check.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: in the child: descriptors of ours; the check aborts.
            unsafe {
                libc::dup2(w, 2);
                let mut buf = [0u8; 4];
                __recv_chk(0, buf.as_mut_ptr().cast(), 8, 4, 0);
                libc::_exit(0);
            }
        }
        close(w);
        let mut message = Vec::new();
        let mut chunk = [0u8; 256];
        loop {
            // SAFETY: a live buffer.
            let n = unsafe { libc::read(r, chunk.as_mut_ptr().cast(), chunk.len()) };
            if n <= 0 {
                break;
            }
            message.extend_from_slice(&chunk[..n as usize]);
        }
        close(r);
        let mut status = 0;
        // SAFETY: our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        (
            String::from_utf8_lossy(&message).contains("*** buffer overflow detected ***"),
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGABRT,
        )
    });
    assert_eq!(got, Ended::Value(format!("{:?}", (true, true))));
}
