//! Probes: races on two workers and plain threads sharing descriptors.

mod attack_common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use attack_common::*;

/// One listener; acceptors: coroutines on two workers and two plain
/// threads; another thread watches F_GETFL. Clients connect N times.
#[test]
fn attack_concurrent_accepts_coroutines_and_threads() {
    const N: usize = 600;
    let r = in_coroutine(2, Duration::from_secs(40), || {
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let thread_errors = Arc::new(AtomicUsize::new(0));
        let co_errors = Arc::new(AtomicUsize::new(0));
        let seen_nonblock = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut cos = Vec::new();
        for _ in 0..6 {
            let (l, a, e, s) = (
                listener.clone(),
                accepted.clone(),
                co_errors.clone(),
                stop.clone(),
            );
            cos.push(coroutines::spawn(move || {
                let mut mine = 0;
                while !s.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((c, _)) => {
                            drop(c);
                            a.fetch_add(1, Ordering::Relaxed);
                            mine += 1;
                        }
                        Err(_) => {
                            e.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                mine
            }));
        }
        let mut threads = Vec::new();
        for _ in 0..2 {
            let (l, a, e, s) = (
                listener.clone(),
                accepted.clone(),
                thread_errors.clone(),
                stop.clone(),
            );
            threads.push(std::thread::spawn(move || {
                let mut mine = 0;
                while !s.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((c, _)) => {
                            drop(c);
                            a.fetch_add(1, Ordering::Relaxed);
                            mine += 1;
                        }
                        Err(err) => {
                            eprintln!("thread accept error: {err}");
                            e.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
                mine
            }));
        }
        let watcher = {
            let (l, s, seen) = (listener.clone(), stop.clone(), seen_nonblock.clone());
            std::thread::spawn(move || {
                let mut looks = 0u64;
                while !s.load(Ordering::Relaxed) {
                    let f = unsafe { libc::fcntl(l.as_raw_fd(), libc::F_GETFL) };
                    if f & libc::O_NONBLOCK != 0 {
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                    looks += 1;
                }
                looks
            })
        };
        let clients: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    for _ in 0..N / 4 {
                        let _c = TcpStream::connect(addr).unwrap();
                        std::thread::sleep(Duration::from_micros(200));
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        // Wait for all to be accepted.
        let start = std::time::Instant::now();
        while accepted.load(Ordering::Relaxed) < N && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let got = accepted.load(Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        // Release the acceptors.
        for _ in 0..(cos.len() + threads.len()) * 2 {
            let _ = TcpStream::connect(addr);
        }
        let per_co: Vec<usize> = cos.into_iter().map(|h| h.join().unwrap()).collect();
        let per_thread: Vec<usize> = threads.into_iter().map(|h| h.join().unwrap()).collect();
        let looks = watcher.join().unwrap();
        let kernel =
            unsafe { libc::syscall(libc::SYS_fcntl, listener.as_raw_fd(), libc::F_GETFL) } as i32;
        (
            got,
            thread_errors.load(Ordering::Relaxed),
            co_errors.load(Ordering::Relaxed),
            seen_nonblock.load(Ordering::Relaxed),
            looks,
            kernel & libc::O_NONBLOCK != 0,
            per_co,
            per_thread,
        )
    });
    eprintln!("[concurrent accepts] {r:?}");
    let (got, terr, cerr, seen, _looks, kernel_nb, _, _) = r.expect("hung");
    assert_eq!(got, N, "not all connections accepted");
    assert_eq!((terr, cerr), (0, 0), "accept errors");
    assert_eq!(seen, 0, "F_GETFL on a thread showed O_NONBLOCK");
    assert!(!kernel_nb, "the listener was left non-blocking");
}

/// Many pipe pairs, reader and writer coroutines on two workers, varying
/// sizes; checks every byte.
#[test]
fn attack_pipe_pairs_two_workers() {
    let r = in_coroutine(2, Duration::from_secs(40), || {
        let mut hs = Vec::new();
        for pair in 0..40usize {
            let mut p = [0; 2];
            unsafe { libc::pipe(p.as_mut_ptr()) };
            let (rfd, wfd) = (p[0], p[1]);
            let w = coroutines::spawn(move || {
                let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(wfd) };
                let mut sum = 0u64;
                let mut x = pair as u64 * 7919 + 1;
                for i in 0..300usize {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let len = (x >> 33) as usize % 70000 + 1;
                    let buf: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
                    sum += buf.iter().map(|&b| b as u64).sum::<u64>();
                    f.write_all(&buf).unwrap();
                    if i % 17 == 0 {
                        coroutines::yield_now();
                    }
                }
                sum
            });
            let r = coroutines::spawn(move || {
                let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(rfd) };
                let mut sum = 0u64;
                let mut buf = vec![0u8; 4096 * 3 + 7];
                loop {
                    match f.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => sum += buf[..n].iter().map(|&b| b as u64).sum::<u64>(),
                        Err(e) => panic!("read: {e}"),
                    }
                }
                sum
            });
            hs.push((w, r));
        }
        hs.into_iter()
            .map(|(w, r)| (w.join().unwrap(), r.join().unwrap()))
            .filter(|(a, b)| a != b)
            .count()
    });
    eprintln!("[pipe pairs] mismatches: {r:?}");
    assert_eq!(r, Some(0));
}

/// TCP echo: server coroutines and client coroutines on two workers, with
/// read timeouts on some clients and random message sizes; all must finish.
#[test]
fn attack_tcp_echo_two_workers() {
    let r = in_coroutine(2, Duration::from_secs(60), || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        const CLIENTS: usize = 100;
        let server = coroutines::spawn(move || {
            let mut hs = Vec::new();
            for _ in 0..CLIENTS {
                let (mut s, _) = listener.accept().unwrap();
                hs.push(coroutines::spawn(move || {
                    let mut buf = vec![0u8; 8192];
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => s.write_all(&buf[..n]).unwrap(),
                            Err(e) => panic!("server read: {e}"),
                        }
                    }
                }));
            }
            for h in hs {
                h.join().unwrap();
            }
        });
        let mut cs = Vec::new();
        for c in 0..CLIENTS {
            cs.push(coroutines::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                if c % 3 == 0 {
                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                }
                let mut x = c as u64 + 3;
                for _ in 0..50 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    let len = (x >> 40) as usize % 100_000 + 1;
                    let msg = vec![(x >> 8) as u8; len];
                    let mut w = s.try_clone().unwrap();
                    let m2 = msg.clone();
                    let writer = coroutines::spawn(move || w.write_all(&m2).unwrap());
                    let mut back = vec![0u8; len];
                    s.read_exact(&mut back).unwrap();
                    writer.join().unwrap();
                    assert_eq!(back, msg);
                }
            }));
        }
        let fails = cs
            .into_iter()
            .map(|h| h.join())
            .filter(|r| r.is_err())
            .count();
        server.join().unwrap();
        fails
    });
    eprintln!("[tcp echo 2 workers] {r:?}");
    assert_eq!(r, Some(0), "hung or clients failed");
}
