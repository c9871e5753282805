//! Calls that a coroutine cannot make as one non-blocking attempt,
//! differentially: name resolution, waiting for a child, `sendfile` and
//! `splice` (what `io::copy` uses between files, pipes and sockets), and
//! `recvmmsg`. Whether the runtime runs such a call on its blocking pool
//! or in pieces, the call must return what it returns on a thread, and
//! must not block the worker: in these cases what it waits for is done by
//! a neighbour (a thread beside a thread, a coroutine of the same worker
//! beside a coroutine), which a blocked worker never runs.

mod support;

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::thread;

use support::differential::*;
use support::*;

/// Name resolution gives the same addresses and errors.
#[test]
fn getaddrinfo_resolves_as_on_a_thread() {
    let got = differential("getaddrinfo", |_| {
        let resolve = |name: &str| -> Result<Vec<String>, String> {
            name.to_socket_addrs()
                .map(|addrs| {
                    let mut addrs: Vec<String> = addrs.map(|a| a.to_string()).collect();
                    addrs.sort();
                    addrs
                })
                .map_err(|e| format!("{:?}", e.kind()))
        };
        [
            "localhost:80",
            "127.0.0.1:80",
            "[::1]:81",
            "no-such-host.invalid:80",
            "bad name with spaces:1",
        ]
        .map(resolve)
    });
    assert_eq!(
        got[..3],
        [
            Ok(vec!["127.0.0.1:80".to_owned()]),
            Ok(vec!["127.0.0.1:80".to_owned()]),
            Ok(vec!["[::1]:81".to_owned()]),
        ]
    );
}

/// `getaddrinfo`'s own error codes come back unchanged.
#[test]
fn getaddrinfo_returns_its_error_codes() {
    let got = differential("getaddrinfo error codes", |_| {
        let mut found: *mut libc::addrinfo = std::ptr::null_mut();
        // SAFETY: an all-zero addrinfo is a valid hints value.
        let mut numeric: libc::addrinfo = unsafe { std::mem::zeroed() };
        numeric.ai_flags = libc::AI_NUMERICHOST;
        let (no_name, no_hints) = (std::ptr::null(), std::ptr::null());
        // SAFETY: valid or null arguments; each call fails, leaving
        // nothing to free.
        unsafe {
            [
                libc::getaddrinfo(c"localhost".as_ptr(), no_name, &numeric, &mut found),
                libc::getaddrinfo(no_name, no_name, no_hints, &mut found),
                libc::getaddrinfo(
                    c"127.0.0.1".as_ptr(),
                    c"notaservice".as_ptr(),
                    no_hints,
                    &mut found,
                ),
            ]
        }
    });
    assert_eq!(got, [libc::EAI_NONAME, libc::EAI_NONAME, libc::EAI_SERVICE]);
}

/// `Command::status` waits for a child whose input a neighbour writes to
/// a FIFO after [`WAIT`].
#[test]
fn command_status_waits_for_a_child_fed_by_a_neighbour() {
    let got = differential("Command::status, child fed by a neighbour", |side| {
        let path = TempPath::fifo();
        let fifo = path.to_path_buf();
        let feeder = side.spawn(move || {
            // Opened for writing and reading, so that the open does not
            // wait for the child.
            let mut fifo = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(fifo)
                .unwrap();
            thread::sleep(WAIT);
            fifo.write_all(b"hello").unwrap();
            fifo
        });
        let status = Command::new("timeout")
            .args(["3", "head", "-c5"])
            .arg(&*path)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        drop(feeder.join());
        status.code()
    });
    assert_eq!(got, Some(0));
}

/// Reads `stream` until `len` bytes or end of file; the count.
fn read_up_to(mut stream: TcpStream, len: usize) -> usize {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    while total < len {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    total
}

/// `io::copy` from a 16 MiB file to TCP (std uses `sendfile`) copies it
/// all while a neighbour reads the other end.
#[test]
fn io_copy_from_a_file_to_tcp_completes_with_the_reader_a_neighbour() {
    const SIZE: usize = 16 << 20;
    let got = differential("io::copy file -> TCP", |side| {
        let path = TempPath::unique();
        std::fs::write(&*path, vec![7u8; SIZE]).unwrap();
        let mut file = std::fs::File::open(&*path).unwrap();
        let (mut writer, reader) = tcp_pair();
        let reader = side.spawn(move || read_up_to(reader, SIZE));
        let copied = std::io::copy(&mut file, &mut writer).unwrap();
        (copied, reader.join())
    });
    assert_eq!(got, (SIZE as u64, SIZE));
}

/// `io::copy` from a pipe to TCP (std uses `splice`) copies everything a
/// plain thread feeds the pipe while a neighbour reads the other end.
#[test]
fn io_copy_from_a_pipe_to_tcp_completes_with_the_reader_a_neighbour() {
    const SIZE: usize = 8 << 20;
    let got = differential("io::copy pipe -> TCP", |side| {
        let (mut source, mut feed) = std::io::pipe().unwrap();
        let feeder = thread::spawn(move || {
            let chunk = vec![1u8; 64 * 1024];
            for _ in 0..SIZE / chunk.len() {
                feed.write_all(&chunk).unwrap();
            }
        });
        let (mut writer, reader) = tcp_pair();
        let reader = side.spawn(move || read_up_to(reader, SIZE));
        let copied = std::io::copy(&mut source, &mut writer).unwrap();
        feeder.join().unwrap();
        (copied, reader.join())
    });
    assert_eq!(got, (SIZE as u64, SIZE));
}

/// `recvmmsg` on a blocking UDP socket waits for the datagram a neighbour
/// sends after [`WAIT`].
#[test]
fn recvmmsg_waits_for_a_datagram_from_a_neighbour() {
    let got = differential("recvmmsg, neighbour sends", |side| {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        let sender = side.spawn(move || {
            thread::sleep(WAIT);
            UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .send_to(b"dgram", to)
                .unwrap()
        });
        let mut buf = [0u8; 64];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: an all-zero mmsghdr is valid; `iov` and `buf` outlive
        // the call.
        let got = unsafe {
            let mut message: libc::mmsghdr = std::mem::zeroed();
            message.msg_hdr.msg_iov = &mut iov;
            message.msg_hdr.msg_iovlen = 1;
            let received = libc::recvmmsg(
                receiver.as_raw_fd(),
                &mut message,
                1,
                0,
                std::ptr::null_mut(),
            );
            (c_outcome(received), message.msg_len)
        };
        sender.join();
        got
    });
    assert_eq!(got, (Ok(1), 5));
}
