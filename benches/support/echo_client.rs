//! The echo benches' blocking client and the listener every server gets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// The churn workload's shape: per iteration `connections` connections,
/// each doing `round_trips` lockstep round trips of `message` bytes, then
/// closing.
pub struct Churn {
    pub connections: usize,
    pub round_trips: usize,
    pub message: usize,
}

/// The churn workload of issue 3: 512 connections x 4 round trips of 512 B.
pub const CHURN: Churn = Churn {
    connections: 512,
    round_trips: 4,
    message: 512,
};

/// The listen backlog of every server (std's `bind` uses 128, which 512
/// simultaneous connects can overflow; tokio and may use 1024).
pub const BACKLOG: i32 = 1024;

/// A listener on a free loopback port with the same options for every
/// server: `SO_REUSEADDR`, a backlog of [`BACKLOG`], close-on-exec.
pub fn listener() -> TcpListener {
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let listener = TcpListener::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let ret = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(ret, 0, "SO_REUSEADDR: {}", std::io::Error::last_os_error());
        let address = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            },
            sin_zero: [0; 8],
        };
        let ret = libc::bind(
            fd,
            &address as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(ret, 0, "bind: {}", std::io::Error::last_os_error());
        let ret = libc::listen(fd, BACKLOG);
        assert_eq!(ret, 0, "listen: {}", std::io::Error::last_os_error());
        listener
    }
}

/// Splits `total` connections over `threads` client threads.
pub fn shares(total: usize, threads: usize) -> Vec<usize> {
    let threads = threads.clamp(1, total);
    (0..threads)
        .map(|t| total / threads + usize::from(t < total % threads))
        .collect()
}

/// A client connection, with `TCP_NODELAY` as every server sets it.
pub fn connect(address: SocketAddr) -> TcpStream {
    let stream =
        TcpStream::connect(address).unwrap_or_else(|e| panic!("client: connect to {address}: {e}"));
    stream.set_nodelay(true).expect("client: TCP_NODELAY");
    stream
}

/// `rounds` lockstep round trips of `message` on each of `streams`: write
/// one message on each, then read each echo back and check it.
pub fn lockstep(streams: &mut [TcpStream], message: &[u8], echo: &mut [u8], rounds: usize) {
    for _ in 0..rounds {
        for stream in streams.iter_mut() {
            stream.write_all(message).expect("client: write");
        }
        for stream in streams.iter_mut() {
            stream.read_exact(echo).expect("client: read");
            assert_eq!(echo, message, "client: wrong echo");
        }
    }
}

/// `iters` churn iterations by `threads` client threads, each owning an
/// equal share of the connections; returns the time from their common
/// start until the last has closed its last connection.
pub fn churn(address: SocketAddr, shape: &Churn, threads: usize, iters: usize) -> Duration {
    let (round_trips, size) = (shape.round_trips, shape.message);
    let shares = shares(shape.connections, threads);
    let barrier = Arc::new(Barrier::new(shares.len() + 1));
    let clients: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                let message = vec![0x5a; size];
                let mut echo = vec![0; size];
                let mut streams = Vec::with_capacity(share);
                barrier.wait();
                for _ in 0..iters {
                    streams.extend((0..share).map(|_| connect(address)));
                    lockstep(&mut streams, &message, &mut echo, round_trips);
                    streams.clear(); // closes them
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for client in clients {
        client.join().expect("client thread panicked");
    }
    start.elapsed()
}

/// The setting `name` from the environment, or `default` if unset.
///
/// # Panics
/// If it is set to something that does not parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not valid")),
        Err(_) => default,
    }
}
