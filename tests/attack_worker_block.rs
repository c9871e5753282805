//! Probes: calls that block the worker (so that another coroutine of the
//! same worker, which the call waits for, never runs), and descriptors
//! whose number the hooks did not see change.

mod attack_common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::Duration;

use attack_common::*;

fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s)
}

fn fifo() -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!(
        "attack-fifo-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    p
}

/// `Command::status()` for a child that waits for a FIFO that a neighbour
/// (thread / coroutine of the same worker) writes after 100 ms.
#[test]
fn attack_command_status_waits_for_same_worker_neighbour() {
    let limit = Duration::from_secs(4);
    fn body(spawn: fn(Box<dyn FnOnce() + Send>)) -> Option<i32> {
        let path = fifo();
        let p2 = path.clone();
        spawn(Box::new(move || {
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p2)
                .unwrap();
            std::thread::sleep(Duration::from_millis(100));
            f.write_all(b"hello").unwrap();
            std::thread::sleep(Duration::from_millis(500));
        }));
        let status = std::process::Command::new("timeout")
            .args(["3", "head", "-c5"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        status.code()
    }
    let t = on_thread(limit, || {
        body(|f| {
            std::thread::spawn(f);
        })
    });
    let c = in_coroutine(1, limit, || {
        body(|f| {
            coroutines::spawn(f);
        })
    });
    compare(
        "Command::status with the child's input from a neighbour",
        &t,
        &c,
    );
}

/// `io::copy` from a 16 MiB file to a TCP stream (std uses sendfile), the
/// peer read by a neighbour.
#[test]
fn attack_io_copy_file_to_tcp_with_reader_on_same_worker() {
    let limit = Duration::from_secs(6);
    fn body(spawn: Spawner<usize>) -> (u64, usize) {
        const SIZE: usize = 16 << 20;
        let path = std::env::temp_dir().join(format!(
            "attack-copy-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, vec![7u8; SIZE]).unwrap();
        let mut file = std::fs::File::open(&path).unwrap();
        let (mut a, mut b) = tcp_pair();
        let join = spawn(Box::new(move || {
            let mut buf = vec![0u8; 65536];
            let mut total = 0;
            while total < SIZE {
                match b.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
            total
        }));
        let copied = std::io::copy(&mut file, &mut a).unwrap();
        let got = join();
        let _ = std::fs::remove_file(&path);
        (copied, got)
    }
    let t = on_thread(limit, || {
        body(|f| {
            let h = std::thread::spawn(f);
            Box::new(move || h.join().unwrap())
        })
    });
    let c = in_coroutine(1, limit, || {
        body(|f| {
            let h = coroutines::spawn(f);
            Box::new(move || h.join().unwrap())
        })
    });
    compare(
        "io::copy(File -> TcpStream) with the reader a neighbour",
        &t,
        &c,
    );
}

/// `io::copy` from a pipe to a TCP stream (std uses splice), the peer read
/// by a neighbour.
#[test]
fn attack_io_copy_pipe_to_tcp_with_reader_on_same_worker() {
    let limit = Duration::from_secs(6);
    fn body(spawn: Spawner<usize>) -> (u64, usize) {
        const SIZE: usize = 8 << 20;
        let mut p = [0; 2];
        unsafe { libc::pipe(p.as_mut_ptr()) };
        let mut r = unsafe { std::fs::File::from_raw_fd(p[0]) };
        let mut w = unsafe { std::fs::File::from_raw_fd(p[1]) };
        // A plain thread feeds the pipe.
        std::thread::spawn(move || {
            let chunk = vec![1u8; 65536];
            let mut put = 0;
            while put < SIZE {
                w.write_all(&chunk).unwrap();
                put += chunk.len();
            }
        });
        let (mut a, mut b) = tcp_pair();
        let join = spawn(Box::new(move || {
            let mut buf = vec![0u8; 65536];
            let mut total = 0;
            while total < SIZE {
                match b.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
            total
        }));
        let copied = std::io::copy(&mut r, &mut a).unwrap();
        let got = join();
        (copied, got)
    }
    let t = on_thread(limit, || {
        body(|f| {
            let h = std::thread::spawn(f);
            Box::new(move || h.join().unwrap())
        })
    });
    let c = in_coroutine(1, limit, || {
        body(|f| {
            let h = coroutines::spawn(f);
            Box::new(move || h.join().unwrap())
        })
    });
    compare(
        "io::copy(pipe -> TcpStream) with the reader a neighbour",
        &t,
        &c,
    );
}

/// recvmmsg on a blocking UDP socket; the datagram comes from a neighbour
/// after 100 ms.
#[test]
fn attack_recvmmsg_waits_for_same_worker_neighbour() {
    let limit = Duration::from_secs(3);
    fn body(spawn: fn(Box<dyn FnOnce() + Send>)) -> isize {
        let r = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = r.local_addr().unwrap();
        spawn(Box::new(move || {
            std::thread::sleep(Duration::from_millis(100));
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.send_to(b"dgram", addr).unwrap();
        }));
        let mut buf = [0u8; 64];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: 64,
        };
        let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
        m.msg_hdr.msg_iov = &mut iov;
        m.msg_hdr.msg_iovlen = 1;
        unsafe { libc::recvmmsg(r.as_raw_fd(), &mut m, 1, 0, std::ptr::null_mut()) as isize }
    }
    let t = on_thread(limit, || {
        body(|f| {
            std::thread::spawn(f);
        })
    });
    let c = in_coroutine(1, limit, || {
        body(|f| {
            coroutines::spawn(f);
        })
    });
    compare("recvmmsg with the sender a neighbour", &t, &c);
}

/// A pipe end a coroutine has waited on is closed by a path the hooks do
/// not see (close_range), and its number reused by one they do not see
/// either (eventfd); a plain thread writes the eventfd after 100 ms.
#[test]
fn attack_number_reused_behind_the_hooks_back() {
    let limit = Duration::from_secs(3);
    fn body() -> isize {
        let mut p = [0; 2];
        unsafe { libc::pipe(p.as_mut_ptr()) };
        let (r, w) = (p[0], p[1]);
        // Wait on `r` once (a coroutine parks, registering it).
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            unsafe { libc::write(w, b"x".as_ptr().cast(), 1) };
        });
        let mut b = [0u8; 8];
        assert_eq!(unsafe { libc::read(r, b.as_mut_ptr().cast(), 8) }, 1);
        writer.join().unwrap();
        // Close it behind the hooks' back, and reuse the number likewise.
        unsafe { libc::syscall(libc::SYS_close_range, r as u32, r as u32, 0u32) };
        let efd = unsafe { libc::eventfd(0, 0) };
        let poke = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let one: u64 = 1;
            unsafe { libc::write(efd, (&one as *const u64).cast(), 8) };
        });
        let mut v = 0u64;
        let n = unsafe { libc::read(efd, (&mut v as *mut u64).cast(), 8) };
        poke.join().unwrap();
        unsafe {
            libc::close(efd);
            libc::close(w);
        }
        n
    }
    let t = on_thread(limit, body);
    let c = in_coroutine(1, limit, body);
    compare("number reused after close_range + eventfd", &t, &c);
}

/// As above, closed by fclose (glibc's internal close) after fdopen.
#[test]
fn attack_number_reused_after_fclose() {
    let limit = Duration::from_secs(3);
    fn body() -> isize {
        let mut p = [0; 2];
        unsafe { libc::pipe(p.as_mut_ptr()) };
        let (r, w) = (p[0], p[1]);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            unsafe { libc::write(w, b"x".as_ptr().cast(), 1) };
        });
        let mut b = [0u8; 8];
        assert_eq!(unsafe { libc::read(r, b.as_mut_ptr().cast(), 8) }, 1);
        writer.join().unwrap();
        unsafe {
            let f = libc::fdopen(r, c"r".as_ptr());
            libc::fclose(f);
        }
        // An eventfd takes the number (unless a test running beside this
        // one took it first).
        let ff = unsafe { libc::eventfd(0, 0) };
        let poke = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let one: u64 = 1;
            unsafe { libc::write(ff, (&one as *const u64).cast(), 8) };
        });
        let n = unsafe { libc::read(ff, b.as_mut_ptr().cast(), 8) };
        let n = if n < 0 {
            -(std::io::Error::last_os_error().raw_os_error().unwrap() as isize)
        } else {
            n
        };
        poke.join().unwrap();
        unsafe {
            libc::close(ff);
            libc::close(w);
        }
        n
    }
    let t = on_thread(limit, body);
    let c = in_coroutine(1, limit, body);
    compare("number reused after fclose + eventfd", &t, &c);
}
