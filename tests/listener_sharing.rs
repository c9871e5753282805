//! A listener that coroutines accept on is kept non-blocking by the runtime
//! (to spare two system calls per accept); nobody else may notice.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

fn flags(fd: i32) -> i32 {
    // SAFETY: F_GETFL takes no argument.
    unsafe { libc::fcntl(fd, libc::F_GETFL) }
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
