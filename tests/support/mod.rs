//! Shared by the integration tests: a watchdog that runs a test body on a
//! fresh runtime and fails instead of hanging, a "ticker" coroutine that
//! proves the worker kept running while a call waited, and socket, pipe and
//! errno helpers.
//!
//! Where the tests sleep inside coroutines they call `std::thread::sleep`,
//! which parks the coroutine through the sleep hook.
// Each test binary includes this module and uses only a subset of it.
#![allow(dead_code)]

pub mod child;
pub mod futex_table;
pub mod glibc;
pub mod identity;
pub mod library;
pub mod memory;
pub mod raw;
pub mod seccomp;
pub mod timed;

use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use coroutines::{JoinHandle, Runtime};

pub mod differential;

/// Installs `handler` for `signal`: a plain handler, an empty mask,
/// `SA_RESTART`.
pub fn install_handler(signal: libc::c_int, handler: extern "C" fn(libc::c_int)) {
    // SAFETY: a zeroed sigaction with a plain handler, an empty mask and
    // SA_RESTART is a valid argument; each caller owns its signal.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        action.sa_flags = libc::SA_RESTART;
        assert_eq!(
            libc::sigaction(signal, &action, std::ptr::null_mut()),
            0,
            "sigaction({signal})"
        );
    }
}

/// A raw system call, which no hook sees: the kernel's own answer, the
/// reference of differential probes. (It mirrors the runtime's
/// `sys::syscall6` on purpose: a reference must not share the code under
/// test.)
///
/// # Safety
/// The arguments must be valid for `nr`.
pub unsafe fn kernel_syscall(nr: libc::c_long, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the x86-64 Linux system-call ABI; per the caller's contract.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    ret
}

/// A bound generous enough for a loaded CI machine, for the futex and join
/// tests; a missing hook blocks the worker forever, so only the order of
/// magnitude matters.
pub const LIMIT: Duration = Duration::from_secs(60);

/// How long a hook-layer test body may run before the watchdog fails the test.
pub const WATCHDOG: Duration = Duration::from_secs(10);

/// How long "must wait" cells make the call wait.
pub const WAIT: Duration = Duration::from_millis(100);

/// The fewest ticks the ticker must make while a call waits [`WAIT`]: it
/// ticks about once a millisecond, so a worker that kept running gives ~100;
/// a worker blocked in the call gives 0 or 1.
pub const MIN_TICKS: u64 = 20;

/// An upper bound for calls that must complete "at once".
pub const PROMPT: Duration = Duration::from_millis(80);

/// Tests that close a descriptor while a coroutine waits on it take this
/// lock exclusively, so that no other test of the binary reuses the freed
/// number before the waiter has seen the close.
static FD_NUMBERS: RwLock<()> = RwLock::new(());

/// Runs `body` as the root coroutine of a fresh one-worker runtime on its
/// own OS thread. A panic in the body fails the test with its message; a body
/// that does not finish within [`WATCHDOG`] (a hooked call blocked the worker
/// or was never woken) fails it too, instead of hanging the run.
pub fn on_one_worker(what: &str, body: impl FnOnce() + Send + 'static) {
    let _shared = FD_NUMBERS.read().unwrap_or_else(|e| e.into_inner());
    watchdog(what, WATCHDOG, 1, body);
}

/// As [`on_one_worker`], with no other test of the binary running
/// meanwhile; for tests that close a descriptor another coroutine uses.
pub fn on_one_worker_exclusive(what: &str, body: impl FnOnce() + Send + 'static) {
    alone(|| watchdog(what, WATCHDOG, 1, body));
}

/// Runs `f` with no other test of the binary running meanwhile (see
/// [`FD_NUMBERS`]).
pub fn alone<T>(f: impl FnOnce() -> T) -> T {
    let _exclusive = FD_NUMBERS.write().unwrap_or_else(|e| e.into_inner());
    f()
}

/// Runs `f` beside other tests, but never while an [`alone`] one runs.
pub fn among_others<T>(f: impl FnOnce() -> T) -> T {
    let _shared = FD_NUMBERS.read().unwrap_or_else(|e| e.into_inner());
    f()
}

/// Runs `body` as the root coroutine of a fresh runtime of `workers`
/// workers, on its own OS thread, and returns its value. A panic of the body
/// is resumed; a body that does not finish within `limit` (a hooked call
/// blocked the worker or was never woken) fails the test instead of hanging.
pub fn watchdog<T: Send + 'static>(
    what: &str,
    limit: Duration,
    workers: usize,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    watchdog_on(what, limit, Runtime::builder().workers(workers), body)
}

/// As [`watchdog`], on a fresh runtime built by `builder`.
pub fn watchdog_on<T: Send + 'static>(
    what: &str,
    limit: Duration,
    builder: coroutines::runtime::Builder,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done, finished) = mpsc::channel();
    thread::Builder::new()
        .name(format!("watched: {what}"))
        .spawn(move || {
            let runtime = builder.build().unwrap();
            let result = panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(body)));
            let _ = done.send(result);
            // The runtime drops after the result is delivered, so a worker
            // stuck in a system call cannot turn a failure into a hang.
            drop(runtime);
        })
        .unwrap();
    match finished.recv_timeout(limit) {
        Ok(Ok(value)) => value,
        Ok(Err(payload)) => panic::resume_unwind(payload),
        Err(_) => panic!(
            "watchdog: `{what}` did not finish within {limit:?}; a hooked call \
             (I/O, futex, join, ...) probably blocked the worker thread or its \
             coroutine was never woken"
        ),
    }
}

/// [`watchdog`] named after the calling test: runs `body` on a new runtime
/// of `workers` workers and fails the test if it takes longer than `limit`.
pub fn run<T: Send + 'static>(
    workers: usize,
    limit: Duration,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let what = thread::current().name().unwrap_or("test").to_owned();
    watchdog(&what, limit, workers, body)
}

/// Yields until `condition` holds.
pub fn yield_until(mut condition: impl FnMut() -> bool) {
    while !condition() {
        coroutines::yield_now();
    }
}

/// How the ticker waits between two ticks.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// `std::thread::sleep` (which parks the coroutine) for this long.
    Sleep(Duration),
    /// `coroutines::yield_now`: as often as the worker gets to run it.
    Yield,
}

/// A coroutine that ticks (by default once a millisecond, with
/// `std::thread::sleep`, which parks it), as evidence that its worker keeps
/// running other coroutines.
pub struct Ticker {
    ticks: Arc<AtomicU64>,
    /// The longest interval between two ticks, in microseconds.
    max_gap: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Spawns a ticker that ticks about once a millisecond on the caller's
    /// runtime and lets it start.
    pub fn start() -> Ticker {
        Ticker::with_pace(Pace::Sleep(Duration::from_millis(1)))
    }

    /// Spawns a ticker that waits as `pace` says between ticks on the
    /// caller's runtime and lets it start.
    pub fn with_pace(pace: Pace) -> Ticker {
        let ticks = Arc::new(AtomicU64::new(0));
        let max_gap = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (ticks, max_gap, stop) = (ticks.clone(), max_gap.clone(), stop.clone());
            coroutines::spawn(move || {
                let mut last = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    match pace {
                        Pace::Sleep(period) => thread::sleep(period),
                        Pace::Yield => coroutines::yield_now(),
                    }
                    ticks.fetch_add(1, Ordering::Relaxed);
                    let now = Instant::now();
                    let gap = (now - last).as_micros() as u64;
                    max_gap.fetch_max(gap, Ordering::Relaxed);
                    last = now;
                }
            })
        };
        // Let it run up to its first sleep.
        coroutines::yield_now();
        Ticker {
            ticks,
            max_gap,
            stop,
            handle: Some(handle),
        }
    }

    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// The longest time between two ticks since the last call (or the
    /// start): how long the worker was kept from running the ticker. Sleeps
    /// a few ticks first, so that a ticker that was held up has ticked (and
    /// measured the gap) since.
    pub fn take_max_gap(&self) -> Duration {
        let ticks = self.ticks();
        while self.ticks() < ticks + 3 {
            thread::sleep(Duration::from_millis(1));
        }
        Duration::from_micros(self.max_gap.swap(0, Ordering::Relaxed))
    }

    /// Runs `f`, returning its value, how long it took and how many times
    /// the ticker ticked meanwhile.
    pub fn during<T>(&self, f: impl FnOnce() -> T) -> (T, Duration, u64) {
        let before = self.ticks();
        let start = Instant::now();
        let value = f();
        let elapsed = start.elapsed();
        (value, elapsed, self.ticks() - before)
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            if !thread::panicking() {
                handle.join().unwrap();
            }
        }
    }
}

/// Asserts that a call waited about [`WAIT`] or more while the worker kept
/// running the ticker.
#[track_caller]
pub fn assert_parked(what: &str, elapsed: Duration, ticks: u64) {
    assert!(
        elapsed >= WAIT - Duration::from_millis(10),
        "{what}: returned after {elapsed:?}, before its peer acted (~{WAIT:?})"
    );
    assert!(
        ticks >= MIN_TICKS,
        "{what}: the ticker ticked {ticks} times during a {elapsed:?} wait (want >= {MIN_TICKS}): \
         the call blocked the worker instead of parking the coroutine"
    );
}

/// Reads `reader` while a plain thread writes `b"late"` to `writer` after
/// [`WAIT`], and asserts (as `what`) that the read parked meanwhile and got
/// the bytes. Returns `writer`.
#[track_caller]
pub fn assert_read_parks_until_late_write<W: Write + Send + 'static>(
    what: &str,
    ticker: &Ticker,
    mut reader: impl Read,
    mut writer: W,
) -> W {
    let late = after(WAIT, move || {
        writer.write_all(b"late").unwrap();
        writer
    });
    let mut buf = [0u8; 16];
    let (n, elapsed, ticks) = ticker.during(|| reader.read(&mut buf).unwrap());
    assert_parked(what, elapsed, ticks);
    assert_eq!(&buf[..n], b"late");
    late.join().unwrap()
}

/// Asserts that the ticker ticked at least [`MIN_TICKS`] times while a call
/// waited.
#[track_caller]
pub fn assert_ticked(ticks: u64) {
    assert!(ticks >= MIN_TICKS, "the ticker ticked {ticks} times");
}

/// Asserts that a call returned at once.
#[track_caller]
pub fn assert_prompt(what: &str, elapsed: Duration) {
    assert!(
        elapsed < PROMPT,
        "{what}: took {elapsed:?}, want < {PROMPT:?}"
    );
}

/// Asserts that a timed-out call took about `expected`: not much earlier,
/// not much later.
#[track_caller]
pub fn assert_about(what: &str, elapsed: Duration, expected: Duration) {
    let low = expected - Duration::from_millis(5);
    let high = expected + Duration::from_millis(350);
    assert!(
        elapsed >= low && elapsed <= high,
        "{what}: took {elapsed:?}, want about {expected:?} (between {low:?} and {high:?})"
    );
}

/// Asserts that `result` failed with the OS error `errno`.
#[track_caller]
pub fn assert_os_error<T: std::fmt::Debug>(what: &str, result: io::Result<T>, errno: i32) {
    match result {
        Err(e) if e.raw_os_error() == Some(errno) => {}
        other => panic!(
            "{what}: got {other:?}, want {}",
            io::Error::from_raw_os_error(errno)
        ),
    }
}

/// Runs `f` on a plain OS thread after `delay`.
pub fn after<T: Send + 'static>(
    delay: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    thread::spawn(move || {
        thread::sleep(delay);
        f()
    })
}

/// Closes `fd` from another coroutine of this worker after `delay`.
pub fn close_later(fd: RawFd, delay: Duration) -> JoinHandle<()> {
    coroutines::spawn(move || {
        thread::sleep(delay);
        // SAFETY: the test hands `fd` over to be closed, exactly once.
        assert_eq!(unsafe { libc::close(fd) }, 0, "close({fd})");
    })
}

/// Gives up ownership of `fd` so that it is not closed twice when another
/// coroutine closes it: the value is wrapped so that it is never dropped.
pub fn borrowed<T: FromRawFd>(fd: RawFd) -> ManuallyDrop<T> {
    // SAFETY: the caller owns `fd` and never closes it through this value.
    ManuallyDrop::new(unsafe { T::from_raw_fd(fd) })
}

/// A connected loopback TCP pair: (client, server side).
pub fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

/// A loopback address nobody listens on (connections are refused).
pub fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Sets an integer socket option.
pub fn set_int_opt(fd: RawFd, level: i32, name: i32, value: i32) {
    // SAFETY: `value` is a live int of the given size.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0, "setsockopt: {}", io::Error::last_os_error());
}

/// Sets `SO_RCVTIMEO` or `SO_SNDTIMEO` on `fd` through libc.
pub fn set_timeout_opt(fd: RawFd, name: i32, timeout: Duration) {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: `tv` is a live timeval of the given size.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0, "setsockopt: {}", io::Error::last_os_error());
}

/// Shrinks the buffers of a pair so that filling them is quick.
pub fn small_buffers(writer: &TcpStream, reader: &TcpStream) {
    set_int_opt(writer.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, 4096);
    set_int_opt(reader.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 4096);
}

/// Writes to `stream` with `MSG_DONTWAIT` until the kernel refuses more
/// (the peer does not read), so that the next blocking write must wait.
/// Returns how many bytes went in.
pub fn fill_send_buffer(stream: &TcpStream) -> usize {
    let chunk = [0x5au8; 16 * 1024];
    let mut total = 0;
    // Twice, with a pause, in case data was still moving to the peer.
    for _ in 0..2 {
        loop {
            // SAFETY: `chunk` is a live buffer of the given length.
            let n = unsafe {
                libc::send(
                    stream.as_raw_fd(),
                    chunk.as_ptr() as *const libc::c_void,
                    chunk.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                let error = io::Error::last_os_error();
                assert_eq!(error.kind(), io::ErrorKind::WouldBlock, "filling: {error}");
                break;
            }
            total += n as usize;
        }
        thread::sleep(Duration::from_millis(20));
    }
    total
}

/// Writes to `fd`, a pipe's blocking writing end, until it is full.
pub fn fill_pipe(fd: RawFd) {
    let chunk = vec![0u8; 64 * 1024];
    // SAFETY: F_GETFL/F_SETFL on a live descriptor; writes from a live
    // buffer.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        while libc::write(fd, chunk.as_ptr().cast(), chunk.len()) > 0 {}
        libc::fcntl(fd, libc::F_SETFL, flags);
    }
}

/// Reads `stream` until end of file, returning the byte count.
pub fn drain(mut stream: impl io::Read) -> usize {
    let mut buf = [0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("drain: {e}"),
        }
    }
}

/// The `F_GETFL` flags of `fd`, as the user sees them.
pub fn flags(fd: RawFd) -> i32 {
    // SAFETY: F_GETFL takes no argument.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert!(flags >= 0, "F_GETFL({fd}): {}", io::Error::last_os_error());
    flags
}

/// The `F_GETFL` flags of `fd` as the kernel has them, by a raw system
/// call that no hook sees: what other holders of the file description see.
pub fn kernel_flags(fd: RawFd) -> i32 {
    // SAFETY: F_GETFL takes no argument.
    let flags = unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFL) };
    assert!(flags >= 0, "F_GETFL({fd}): {}", io::Error::last_os_error());
    flags as i32
}

/// Whether `F_GETFL` shows `O_NONBLOCK` on `fd`.
pub fn shows_nonblock(fd: RawFd) -> bool {
    flags(fd) & libc::O_NONBLOCK != 0
}

/// The current thread's errno.
pub fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap()
}

/// Sets the current thread's errno.
pub fn set_errno(value: i32) {
    // SAFETY: the errno location of the calling thread is always valid.
    unsafe { *libc::__errno_location() = value };
}

/// A `sockaddr_in` for an IPv4 address.
pub fn sockaddr_in(addr: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only: {addr}")
    };
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// `connect(2)` through libc on a raw socket.
pub fn raw_connect(fd: RawFd, addr: SocketAddr) -> io::Result<()> {
    let sin = sockaddr_in(addr);
    // SAFETY: `sin` is a live sockaddr_in of the given size.
    let ret = unsafe {
        libc::connect(
            fd,
            &sin as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A new blocking IPv4 TCP socket, through libc.
pub fn raw_tcp_socket() -> RawFd {
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
    fd
}

/// A listener whose accept queue is full: a connect to it must wait for the
/// kernel to retransmit its SYN (about one second) after the queue drains.
/// Returns the listener and the connection occupying the queue.
pub fn full_listener() -> (TcpListener, TcpStream) {
    let fd = raw_tcp_socket();
    let any = "127.0.0.1:0".parse().unwrap();
    let sin = sockaddr_in(any);
    // SAFETY: binding and listening on a socket this function owns; `sin` is
    // a live sockaddr_in of the given size.
    unsafe {
        let ret = libc::bind(
            fd,
            &sin as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(ret, 0, "bind: {}", io::Error::last_os_error());
        // Backlog 0: the queue holds one connection.
        assert_eq!(
            libc::listen(fd, 0),
            0,
            "listen: {}",
            io::Error::last_os_error()
        );
    }
    // SAFETY: `fd` is a listening socket this function owns.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let queued = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    (listener, queued)
}

/// Spins for `how_long` without any call: a coroutine that computes.
pub fn compute(how_long: Duration) {
    let start = Instant::now();
    while start.elapsed() < how_long {
        std::hint::spin_loop();
    }
}

/// `duration` as a `timespec`, for raw system calls.
pub fn timespec(duration: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: duration.as_secs() as libc::time_t,
        tv_nsec: duration.subsec_nanos() as libc::c_long,
    }
}

/// A `timespec` of `sec` seconds and `nsec` nanoseconds, as given (out of
/// range included): for error cases.
pub fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// Sleeps `duration` by a raw `nanosleep` system call, which no hook sees:
/// it blocks whatever thread makes it, as a C library's blocking call would.
pub fn raw_sleep(duration: Duration) {
    let ts = timespec(duration);
    // SAFETY: `ts` is a live timespec; no remainder is asked for.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_nanosleep,
            &ts as *const libc::timespec,
            std::ptr::null_mut::<libc::timespec>(),
        )
    };
    assert_eq!(ret, 0, "nanosleep: {}", io::Error::last_os_error());
}

/// A one-worker runtime with the blocked-worker monitor off: only a
/// coroutine's own switches let its neighbours run.
pub fn no_monitor() -> coroutines::runtime::Builder {
    coroutines::runtime::Builder::default()
        .workers(1)
        .blocked_worker_threshold(Duration::MAX)
}

/// Spawns a coroutine that spins on `std::thread::yield_now` until a flag
/// is set and another that sets it; the spins the first made. Call it in a
/// coroutine of a [`no_monitor`] runtime.
pub fn spins_until_a_neighbour_sets_a_flag() -> u64 {
    let flag = Arc::new(AtomicBool::new(false));
    let spinner = {
        let flag = flag.clone();
        coroutines::spawn(move || {
            let mut spins = 0u64;
            while !flag.load(Ordering::Acquire) {
                std::thread::yield_now();
                spins += 1;
            }
            spins
        })
    };
    let setter = coroutines::spawn(move || flag.store(true, Ordering::Release));
    setter.join().unwrap();
    spinner.join().unwrap()
}

/// A path in the temporary directory, unique in this run; whatever is made
/// there is removed when it drops.
pub struct TempPath(std::path::PathBuf);

impl TempPath {
    pub fn unique() -> TempPath {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        TempPath(std::env::temp_dir().join(format!(
            "coroutines-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )))
    }

    /// A new FIFO (named pipe), which the hooks only see as a descriptor
    /// once it is opened by name.
    pub fn fifo() -> TempPath {
        let path = TempPath::unique();
        // SAFETY: a NUL-terminated path.
        let ret = unsafe { libc::mkfifo(path.c_path().as_ptr(), 0o600) };
        assert_eq!(ret, 0, "mkfifo: {}", io::Error::last_os_error());
        path
    }

    /// The path for libc calls.
    pub fn c_path(&self) -> std::ffi::CString {
        std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap()
    }
}

impl std::ops::Deref for TempPath {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = match self.0.is_dir() {
            true => std::fs::remove_dir_all(&self.0),
            false => std::fs::remove_file(&self.0),
        };
    }
}

/// Recurses `depth` frames of 1 KiB deep: a stack overflow for any
/// coroutine stack when `depth` is large.
pub fn recurse_deeply(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth as u8; 1024]);
    if depth == 0 {
        return frame[0] as u64;
    }
    recurse_deeply(depth - 1) + frame[(depth % 1024) as usize] as u64
}

/// Sends `data` on `stream` with one descriptor (`passed`) as SCM_RIGHTS.
pub fn send_with_fd(stream: &UnixStream, data: &[u8], passed: RawFd) {
    raw::send_fds(stream.as_raw_fd(), data, &[passed]);
}

/// A signal set with SIGUSR2 in it, or empty.
pub fn sigset(with_usr2: bool) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; sigaddset adds a valid signal.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        if with_usr2 {
            libc::sigaddset(&mut set, libc::SIGUSR2);
        }
        set
    }
}

/// Pins the calling thread to CPU 0.
pub fn pin_to_cpu_0() {
    // SAFETY: a zeroed cpu_set_t is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU 0 is within the set's bits.
    unsafe { libc::CPU_SET(0, &mut set) };
    // SAFETY: sets this thread's own affinity from a valid set.
    let ret = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    assert_eq!(ret, 0);
}

/// Joins `handle` from a plain thread; `None` if it does not return within
/// `limit` (the joining thread is then left behind).
pub fn join_within<T: Send + 'static>(
    handle: JoinHandle<T>,
    limit: Duration,
) -> Option<thread::Result<T>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(handle.join());
    });
    rx.recv_timeout(limit).ok()
}

/// A panic payload's text: a `&str` or `String`, else a placeholder.
pub fn payload_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "<other payload>".to_owned()
    }
}

/// Held by a test that counts or changes process-wide things (descriptors,
/// threads, CPU time, signal handlers): such tests of one file run one at
/// a time.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The process's open descriptors.
pub fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The process's threads.
pub fn tasks() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// A new file, read and write, holding `contents`, its offset at the start
/// (already unlinked: only the descriptor names it).
pub fn temp_file(contents: &[u8]) -> std::fs::File {
    let path = TempPath::unique();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&*path)
        .unwrap();
    file.write_all(contents).unwrap();
    // SAFETY: lseek on a live descriptor.
    unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_SET) };
    file
}

/// How many of this process's threads have names starting with `prefix`
/// (`coroutines-` for workers, the monitor, helper threads), and their
/// context switches so far, from `/proc`.
pub fn thread_switches(prefix: &str) -> (usize, u64) {
    let (mut threads, mut total) = (0, 0);
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
            continue; // the thread has exited
        };
        if !name.starts_with(prefix) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(path.join("status")) else {
            continue;
        };
        threads += 1;
        total += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    (threads, total)
}

/// One byte read from `fd` by a system call no hook sees, retried on
/// EINTR: in a coroutine it blocks the worker until a byte comes.
pub fn read_byte_past_hooks(fd: RawFd) -> u8 {
    let mut byte = 0u8;
    loop {
        // SAFETY: a one-byte read into `byte` from a descriptor the probe owns.
        let n = unsafe {
            kernel_syscall(
                libc::SYS_read,
                [fd as usize, &mut byte as *mut u8 as usize, 1, 0, 0, 0],
            )
        };
        if n == -(libc::EINTR as isize) {
            continue;
        }
        assert_eq!(n, 1, "raw read");
        return byte;
    }
}

/// Sleeps `d` by a system call no hook sees, resumed after EINTR: in a
/// coroutine it blocks the worker.
pub fn sleep_past_hooks(d: Duration) {
    let ts = libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    };
    let mut rem = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut ts = ts;
    loop {
        // SAFETY: valid timespec pointers.
        let n = unsafe {
            kernel_syscall(
                libc::SYS_nanosleep,
                [
                    &ts as *const _ as usize,
                    &mut rem as *mut _ as usize,
                    0,
                    0,
                    0,
                    0,
                ],
            )
        };
        if n == -(libc::EINTR as isize) {
            ts = rem;
            continue;
        }
        return;
    }
}

/// Lowers the soft address-space limit to what the process maps now plus
/// 1 MiB, so that a new thread's stack cannot be mapped; or puts back
/// `restore`.
pub fn limit_address_space(restore: Option<libc::rlimit>) -> libc::rlimit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills a live struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) }, 0);
    let wanted = restore.unwrap_or_else(|| {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmSize:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        libc::rlimit {
            rlim_cur: (kib + 1024) * 1024,
            rlim_max: limit.rlim_max,
        }
    });
    // SAFETY: setrlimit reads a live struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &wanted) }, 0);
    limit
}
