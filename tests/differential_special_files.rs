//! Descriptors that are neither sockets, nor pipes made by `pipe(2)`, nor
//! regular files, differentially: FIFOs opened by name, ttys, character
//! devices, directories, and the kernel's event descriptors (eventfd,
//! timerfd, inotify, signalfd). The runtime learns what each is at its
//! first call; whatever it learns, a call must return what it returns on a
//! thread (a tty's VMIN/VTIME, a device's full count), and a wait must
//! park the coroutine, not block its worker.

mod support;

use std::os::fd::RawFd;
use std::thread;
use std::time::Duration;

use support::differential::*;
use support::*;

/// One `read(2)` of up to `len` bytes: the count, or the error.
fn read_len(fd: RawFd, len: usize) -> Result<i64, Errno> {
    let mut buf = vec![0u8; len.max(1)];
    // SAFETY: `buf` is valid for `len` bytes.
    c_outcome(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), len) } as i64)
}

/// One `write(2)` of `data`: the count, or the error.
fn write_all_once(fd: RawFd, data: &[u8]) -> Result<i64, Errno> {
    // SAFETY: a write from a live buffer.
    c_outcome(unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) } as i64)
}

/// Opens `path` with `flags`.
fn open(path: &std::ffi::CStr, flags: i32) -> RawFd {
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    assert!(
        fd >= 0,
        "open {path:?}: {}",
        std::io::Error::last_os_error()
    );
    fd
}

fn close(fd: RawFd) {
    // SAFETY: the caller owns `fd`.
    unsafe { libc::close(fd) };
}

// ------------------------------------------------------------------ FIFOs

/// A FIFO opened for reading and writing reads back what it was written.
#[test]
fn fifo_opened_read_write_reads_back_its_write() {
    let got = differential("FIFO opened O_RDWR", |_| {
        let path = TempPath::fifo();
        let fd = open(&path.c_path(), libc::O_RDWR);
        let got = (write_all_once(fd, b"abc"), read_len(fd, 16));
        close(fd);
        got
    });
    assert_eq!(got, (Ok(3), Ok(3)));
}

/// A FIFO's reader gets what its writer wrote, and then waits for a late
/// write.
#[test]
fn fifo_reader_waits_for_a_late_write() {
    let got = differential("FIFO with separate ends", |_| {
        let path = TempPath::fifo();
        // Opened first, so that neither open below blocks.
        let keep = open(&path.c_path(), libc::O_RDWR);
        let reader = open(&path.c_path(), libc::O_RDONLY);
        let writer = open(&path.c_path(), libc::O_WRONLY);
        let early = (write_all_once(writer, b"abc"), read_len(reader, 16));
        let late = after(WAIT, move || write_all_once(writer, b"late"));
        let waited = timed(|| read_len(reader, 16));
        let wrote = late.join().unwrap();
        for fd in [keep, reader, writer] {
            close(fd);
        }
        (early, wrote, waited)
    });
    assert_eq!(got, ((Ok(3), Ok(3)), Ok(4), (Ok(4), Timing::Waited)));
}

// ------------------------------------------------------------------- ttys

/// A new pty pair (master, slave), blocking.
fn pty() -> (RawFd, RawFd) {
    // SAFETY: the pty calls on a master this function owns; `name` has
    // room for the slave's path.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(master >= 0, "posix_openpt");
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        let slave = open(
            std::ffi::CStr::from_ptr(name.as_ptr()),
            libc::O_RDWR | libc::O_NOCTTY,
        );
        (master, slave)
    }
}

/// A pty pair whose slave is in raw mode with the given VMIN and VTIME.
fn raw_pty(vmin: u8, vtime: u8) -> (RawFd, RawFd) {
    let (master, slave) = pty();
    // SAFETY: an all-zero termios is valid, and filled by tcgetattr.
    unsafe {
        let mut termios: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(slave, &mut termios), 0);
        libc::cfmakeraw(&mut termios);
        termios.c_cc[libc::VMIN] = vmin;
        termios.c_cc[libc::VTIME] = vtime;
        assert_eq!(libc::tcsetattr(slave, libc::TCSANOW, &termios), 0);
    }
    (master, slave)
}

/// In raw mode with VMIN 0 and VTIME 0, a read with nothing queued returns
/// 0 at once.
#[test]
fn tty_read_with_vmin_0_and_vtime_0_returns_zero_at_once() {
    let got = differential("tty VMIN=0 VTIME=0", |_| {
        let (master, slave) = raw_pty(0, 0);
        let got = timed(|| read_len(slave, 16));
        close(slave);
        close(master);
        got
    });
    assert_eq!(got, (Ok(0), Timing::AtOnce));
}

/// In raw mode with VMIN 0 and VTIME 3, a read with nothing queued returns
/// 0 after 0.3 s.
#[test]
fn tty_read_with_vmin_0_and_vtime_3_returns_zero_after_the_timer() {
    let got = differential("tty VMIN=0 VTIME=3", |_| {
        let (master, slave) = raw_pty(0, 3);
        let got = timed_against(Duration::from_millis(300), || read_len(slave, 16));
        close(slave);
        close(master);
        got
    });
    assert_eq!(got, (Ok(0), Against::About));
}

/// A zero-length read of a tty in canonical mode returns 0 at once.
#[test]
fn tty_zero_length_read_returns_zero_at_once() {
    let got = differential("tty zero-length read", |_| {
        let (master, slave) = pty();
        let got = timed(|| read_len(slave, 0));
        close(slave);
        close(master);
        got
    });
    assert_eq!(got, (Ok(0), Timing::AtOnce));
}

/// A write of 1 MiB to a tty completes while a neighbour reads the other
/// side: tty flow control is the neighbour's reads.
#[test]
fn tty_write_of_one_mib_completes_with_the_reader_a_neighbour() {
    const TOTAL: usize = 1 << 20;
    let got = differential("tty 1 MiB write, neighbour reads", |side| {
        let (master, slave) = raw_pty(1, 0);
        let reader = side.spawn(move || {
            let mut got = 0;
            while got < TOTAL {
                match read_len(master, 4096) {
                    Ok(n) if n > 0 => got += n as usize,
                    _ => break,
                }
            }
            got
        });
        let data = vec![b'x'; TOTAL];
        let mut put = 0;
        while put < TOTAL {
            match write_all_once(slave, &data[put..]) {
                Ok(n) if n > 0 => put += n as usize,
                _ => break,
            }
        }
        let got = reader.join();
        close(slave);
        close(master);
        (put, got)
    });
    assert_eq!(got, (TOTAL, TOTAL));
}

/// A party blocked reading a tty that a plain thread also reads, byte by
/// byte, leaves its neighbours running: a coroutine whose wait ended with
/// the byte taken by the thread must wait again, not block its worker.
#[test]
fn tty_read_raced_by_a_thread_leaves_the_neighbours_running() {
    const RACED: usize = 50;
    let got = differential("tty read raced by a thread", |side| {
        let (master, slave) = raw_pty(1, 0);
        let read_bytes = move || {
            (0..RACED)
                .take_while(|_| read_len(slave, 1) == Ok(1))
                .count()
        };
        let thief = thread::spawn(read_bytes);
        let companion = Companion::start(side);
        let reader = side.spawn(read_bytes);
        for _ in 0..RACED + 10 {
            write_all_once(master, b"a").unwrap();
            thread::sleep(Duration::from_millis(2));
        }
        thread::sleep(Duration::from_millis(100));
        let ((), others_kept_running) =
            companion.during(|| thread::sleep(Duration::from_millis(100)));
        drop(companion);
        // Enough for both readers to finish, whoever took what.
        for _ in 0..2 * RACED {
            write_all_once(master, b"b").unwrap();
        }
        thief.join().unwrap();
        reader.join();
        close(slave);
        close(master);
        others_kept_running
    });
    assert!(got);
}

// ---------------------------------------------- devices and directories

/// /dev/null and a directory read and write as on a thread: the device
/// moves whole requests at once, the directory refuses both.
#[test]
fn dev_null_and_directories_read_and_write_as_on_a_thread() {
    const MIB: usize = 1 << 20;
    let got = differential("/dev/null, a directory", |_| {
        let null = open(c"/dev/null", libc::O_RDWR);
        let dir = open(c"/tmp", libc::O_RDONLY | libc::O_DIRECTORY);
        let data = vec![1u8; MIB];
        let got = (
            read_len(null, 10),
            write_all_once(null, &data),
            read_len(dir, 10),
            write_all_once(dir, &data[..10]),
        );
        let mut pollfd = libc::pollfd {
            fd: null,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        let polled = (unsafe { libc::poll(&mut pollfd, 1, 100) }, pollfd.revents);
        close(null);
        close(dir);
        (got, polled)
    });
    assert_eq!(
        got,
        (
            (
                Ok(0),
                Ok(MIB as i64),
                Err(Errno(libc::EISDIR)),
                Err(Errno(libc::EBADF))
            ),
            (1, libc::POLLIN)
        )
    );
}

/// Reads of /dev/zero return the whole request, as on a thread (one stops
/// early only for a signal); with `RWF_NOWAIT` the device would stop early
/// whenever the thread should yield.
#[test]
fn dev_zero_reads_return_the_whole_request() {
    const READS: usize = 20;
    let got = differential("reads of /dev/zero", |_| {
        let zero = open(c"/dev/zero", libc::O_RDONLY);
        let whole = [1 << 20, 16 << 20].map(|len| {
            (0..READS)
                .filter(|_| read_len(zero, len) == Ok(len as i64))
                .count()
        });
        close(zero);
        whole
    });
    assert_eq!(got, [READS; 2]);
}

// ------------------------------------------------------- event descriptors

/// An eventfd read waits for a late write, a short read of it fails with
/// EINVAL, and a timerfd read waits for the timer.
#[test]
fn eventfd_and_timerfd_reads_wait_for_their_events() {
    let got = differential("eventfd and timerfd", |_| {
        // SAFETY: plain descriptor creation.
        let event = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        let late = after(Duration::from_millis(50), move || {
            write_all_once(event, &5u64.to_ne_bytes())
        });
        let mut count = [0u8; 8];
        // SAFETY: reads into a live 8-byte buffer.
        let waited = c_outcome(unsafe { libc::read(event, count.as_mut_ptr().cast(), 8) } as i64);
        let short = read_len(event, 4);
        late.join().unwrap().unwrap();
        // SAFETY: plain descriptor creation.
        let timer = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC) };
        let fifty_ms = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: 0,
                tv_nsec: 50_000_000,
            },
        };
        // SAFETY: a live itimerspec.
        unsafe { libc::timerfd_settime(timer, 0, &fifty_ms, std::ptr::null_mut()) };
        let mut expirations = [0u8; 8];
        // SAFETY: reads into a live 8-byte buffer.
        let fired =
            c_outcome(unsafe { libc::read(timer, expirations.as_mut_ptr().cast(), 8) } as i64);
        close(event);
        close(timer);
        (
            waited,
            u64::from_ne_bytes(count),
            short,
            fired,
            u64::from_ne_bytes(expirations),
        )
    });
    assert_eq!(got, (Ok(8), 5, Err(Errno(libc::EINVAL)), Ok(8), 1));
}

/// An inotify read waits for the event a late file creation makes.
#[test]
fn inotify_read_waits_for_an_event() {
    let got = differential("inotify", |_| {
        let dir = TempPath::unique();
        std::fs::create_dir(&*dir).unwrap();
        // SAFETY: plain descriptor creation; a NUL-terminated path.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        // SAFETY: a NUL-terminated path.
        unsafe { libc::inotify_add_watch(fd, dir.c_path().as_ptr(), libc::IN_CREATE) };
        let file = dir.join("f");
        let creator = after(Duration::from_millis(50), move || {
            std::fs::write(file, b"x").unwrap()
        });
        let got = read_len(fd, 4096).map(|n| n > 0);
        creator.join().unwrap();
        close(fd);
        got
    });
    assert_eq!(got, Ok(true));
}

/// A signalfd read waits for a signal sent later to the reading thread.
#[test]
fn signalfd_read_waits_for_a_signal() {
    let got = differential("signalfd", |_| {
        let signal = libc::SIGRTMIN() + 9;
        // SAFETY: sigset calls on a live set; blocks the signal in this
        // thread (a coroutine's: its worker's), which signalfd needs.
        let fd = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            libc::signalfd(-1, &set, libc::SFD_CLOEXEC)
        };
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let sender = after(Duration::from_millis(50), move || {
            // SAFETY: the target thread outlives the read below.
            unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, signal) };
        });
        // SAFETY: an all-zero siginfo is valid.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: a read into a live siginfo.
        let got = c_outcome(
            unsafe { libc::read(fd, (&mut info as *mut _ as *mut u8).cast(), size) } as i64,
        );
        sender.join().unwrap();
        close(fd);
        (got, info.ssi_signo as i32 == signal)
    });
    assert_eq!(got, (Ok(128), true));
}
