//! A listener that coroutines accept on is kept non-blocking by the runtime
//! while no other process can reach it (to spare three system calls per
//! accept); nobody may notice: not the process's own threads, and not a
//! process it shares the listener with, in any way the hooks see.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{flags, kernel_flags};

fn nonblocking(flags: i32) -> bool {
    flags & libc::O_NONBLOCK != 0
}

#[test]
fn a_plain_thread_still_blocks_in_accept_after_coroutines_accepted() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    let runtime = coroutines::Runtime::builder().workers(1).build().unwrap();
    let listener = runtime.block_on(move || {
        let client = coroutines::spawn(move || TcpStream::connect(address).unwrap());
        let (mut accepted, _) = listener.accept().unwrap();
        accepted.write_all(b"x").unwrap();
        let mut client = client.join().unwrap();
        let mut byte = [0u8];
        client.read_exact(&mut byte).unwrap();
        listener
    });
    assert_eq!(
        flags(fd) & libc::O_NONBLOCK,
        0,
        "F_GETFL shows the runtime's O_NONBLOCK"
    );

    // A plain thread's accept blocks until a client comes, 200 ms later,
    // instead of failing with WouldBlock.
    let connector = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        TcpStream::connect(address).unwrap()
    });
    let start = Instant::now();
    let accepted = listener.accept();
    assert!(accepted.is_ok(), "plain-thread accept failed: {accepted:?}");
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "accept did not block"
    );
    connector.join().unwrap();

    // The user's own choice still wins.
    listener.set_nonblocking(true).unwrap();
    let error = listener.accept().unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::WouldBlock);
    assert_ne!(flags(fd) & libc::O_NONBLOCK, 0);
    listener.set_nonblocking(false).unwrap();
    assert_eq!(flags(fd) & libc::O_NONBLOCK, 0);
}

#[test]
fn a_plain_thread_accept_times_out_after_coroutines_accepted() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let runtime = coroutines::Runtime::builder().workers(1).build().unwrap();
    let listener = runtime.block_on(move || {
        let client = coroutines::spawn(move || TcpStream::connect(address).unwrap());
        listener.accept().unwrap();
        client.join().unwrap();
        listener
    });
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 150_000,
    };
    // SAFETY: SO_RCVTIMEO takes a timeval; it bounds accept on Linux.
    let ret = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &timeout as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0);
    let start = Instant::now();
    let error = listener.accept().unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::WouldBlock);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(140) && waited < Duration::from_secs(2),
        "accept timed out after {waited:?}"
    );
}

/// Accepts one connection on `listener` in a coroutine of `runtime`.
fn accept_in_coroutine(runtime: &coroutines::Runtime, listener: &TcpListener) {
    let address = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    runtime.block_on(move || {
        let client = coroutines::spawn(move || TcpStream::connect(address).unwrap());
        // SAFETY: the caller's listener outlives this call; ManuallyDrop
        // keeps the number open.
        let listener = std::mem::ManuallyDrop::new(unsafe { TcpListener::from_raw_fd(fd) });
        listener.accept().unwrap();
        client.join().unwrap();
    });
}

/// A listener this process made (close-on-exec, through the hooks), after
/// a coroutine accepted on it: its hold is kept, which the kernel shows.
fn kept_listener(runtime: &coroutines::Runtime) -> TcpListener {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    accept_in_coroutine(runtime, &listener);
    let fd = listener.as_raw_fd();
    assert!(nonblocking(kernel_flags(fd)), "the hold was not kept");
    assert!(!nonblocking(flags(fd)), "F_GETFL shows the kept hold");
    listener
}

#[test]
fn every_way_of_sharing_a_listener_lets_its_kept_hold_go_for_good() {
    let runtime = coroutines::Runtime::builder().workers(1).build().unwrap();
    type Share = fn(&TcpListener);
    let ways: [(&str, Share); 9] = [
        ("dup", |listener| {
            // SAFETY: dup of an open number; the copy is closed at once.
            drop(unsafe { OwnedFd::from_raw_fd(libc::dup(listener.as_raw_fd())) })
        }),
        ("dup2", |listener| {
            let spare = TcpListener::bind("127.0.0.1:0").unwrap();
            // SAFETY: replaces the spare's number, which this closure owns.
            assert!(unsafe { libc::dup2(listener.as_raw_fd(), spare.as_raw_fd()) } >= 0);
        }),
        ("F_DUPFD", |listener| {
            // SAFETY: F_DUPFD of an open number; the copy is closed at once.
            let copy = unsafe { libc::fcntl(listener.as_raw_fd(), libc::F_DUPFD, 0) };
            // SAFETY: the copy is this closure's.
            drop(unsafe { OwnedFd::from_raw_fd(copy) })
        }),
        ("F_SETFD 0", |listener| {
            // SAFETY: F_SETFD with descriptor flags.
            unsafe { libc::fcntl(listener.as_raw_fd(), libc::F_SETFD, 0) };
        }),
        ("FIONCLEX", |listener| {
            // SAFETY: FIONCLEX takes no argument.
            unsafe { libc::ioctl(listener.as_raw_fd(), libc::FIONCLEX) };
        }),
        ("SCM_RIGHTS", |listener| {
            let (ours, theirs) = UnixStream::pair().unwrap();
            support::raw::send_fds(ours.as_raw_fd(), b"x", &[listener.as_raw_fd()]);
            drop(theirs);
        }),
        ("fork", |listener| {
            let fd = listener.as_raw_fd();
            // SAFETY: the child only makes a raw system call and exits.
            let child = unsafe { libc::fork() };
            if child == 0 {
                // SAFETY: as above.
                let flags = unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFL) };
                let code = match flags as i32 & libc::O_NONBLOCK {
                    0 => 0,
                    _ => 1,
                };
                // SAFETY: ends the child at once.
                unsafe { libc::_exit(code) };
            }
            let mut status = 0;
            // SAFETY: waits for this closure's own child.
            assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
            assert_eq!(
                status, 0,
                "the forked child found the listener non-blocking"
            );
        }),
        ("spawned child's stdin", |listener| {
            let stdin = Stdio::from(OwnedFd::from(listener.try_clone().unwrap()));
            let output = Command::new("cat")
                .arg("/proc/self/fdinfo/0")
                .stdin(stdin)
                .output()
                .unwrap();
            let text = String::from_utf8(output.stdout).unwrap();
            let octal = text
                .lines()
                .find_map(|line| line.strip_prefix("flags:"))
                .expect("fdinfo has flags");
            let flags = i32::from_str_radix(octal.trim(), 8).unwrap();
            assert!(
                !nonblocking(flags),
                "the spawned child's stdin is non-blocking"
            );
        }),
        ("exec'd child's inherited number", |listener| {
            // A number without close-on-exec, as a child would inherit it.
            let copy = listener.try_clone().unwrap();
            // SAFETY: F_SETFD with descriptor flags, on the copy.
            unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_SETFD, 0) };
        }),
    ];
    for (way, share) in ways {
        let listener = kept_listener(&runtime);
        let fd = listener.as_raw_fd();
        let listener = runtime.block_on(move || {
            share(&listener);
            listener
        });
        assert!(
            !nonblocking(kernel_flags(fd)),
            "{way}: the hold is still kept"
        );
        accept_in_coroutine(&runtime, &listener);
        assert!(
            !nonblocking(kernel_flags(fd)),
            "{way}: the hold was kept again"
        );
    }
}

/// Not made by this process through the hooks, or not close-on-exec: a
/// child spawned past the hooks' sight could hold it.
#[test]
fn a_listener_the_process_may_share_unseen_is_never_kept() {
    let runtime = coroutines::Runtime::builder().workers(1).build().unwrap();
    // SAFETY: plain socket calls on a socket this test owns.
    let fd: RawFd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0);
    // SAFETY: the socket is this test's, owned from here on.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let address = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a sockaddr_in of its own size; then listen.
    unsafe {
        let size = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, (&address as *const libc::sockaddr_in).cast(), size),
            0
        );
        assert_eq!(libc::listen(fd, 16), 0);
    }
    let listener = TcpListener::from(socket);
    accept_in_coroutine(&runtime, &listener);
    assert!(
        !nonblocking(kernel_flags(fd)),
        "a listener without close-on-exec was kept"
    );
}

/// The kept hold is let go through its own number: closing it (or a range
/// holding it) puts a clone of the listener back as the user wants it.
#[test]
fn closing_the_kept_number_puts_its_clones_back() {
    let runtime = coroutines::Runtime::builder().workers(1).build().unwrap();
    let close_range = |fd: RawFd| {
        // SAFETY: closes the number of a listener given up to this call.
        assert_eq!(unsafe { libc::close_range(fd as u32, fd as u32, 0) }, 0);
    };
    let closes: [(&str, &dyn Fn(TcpListener)); 2] = [
        ("close", &drop),
        ("close_range", &|listener| {
            close_range(std::os::fd::IntoRawFd::into_raw_fd(listener))
        }),
    ];
    for (how, close) in closes {
        let listener = kept_listener(&runtime);
        let clone = listener.try_clone().unwrap();
        close(listener);
        assert!(
            !nonblocking(kernel_flags(clone.as_raw_fd())),
            "{how}: left non-blocking"
        );
        // Accepts through the clone are held again, and still block.
        accept_in_coroutine(&runtime, &clone);
        assert!(!nonblocking(flags(clone.as_raw_fd())), "{how}");
    }
}

/// A plain thread's blocking accept on a kept listener is the kernel's own
/// blocking call: a signal whose handler has `SA_RESTART` restarts it, and
/// it returns the connection that comes later.
#[test]
fn a_plain_threads_accept_on_a_kept_listener_restarts_after_a_signal() {
    extern "C" fn ignore(_: libc::c_int) {}
    support::install_handler(libc::SIGUSR2, ignore);
    let runtime = coroutines::Runtime::builder().workers(1).build().unwrap();
    let listener = kept_listener(&runtime);
    let address = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    let (tell, thread_id) = std::sync::mpsc::channel();
    let acceptor = std::thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        tell.send(unsafe { libc::pthread_self() }).unwrap();
        // SAFETY: null address arguments are allowed.
        let accepted = unsafe { libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut()) };
        (accepted, std::io::Error::last_os_error())
    });
    let thread = thread_id.recv().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: the acceptor thread is alive until it accepts, below.
    unsafe { libc::pthread_kill(thread, libc::SIGUSR2) };
    std::thread::sleep(Duration::from_millis(100));
    let _client = TcpStream::connect(address).unwrap();
    let (accepted, error) = acceptor.join().unwrap();
    assert!(accepted >= 0, "accept after a restarting signal: {error}");
    drop(listener);
}
