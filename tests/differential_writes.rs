//! Writes, differentially (issue item 10): a blocking write to a pipe or a
//! stream socket returns the full count on a thread, however much larger
//! than the buffer it is, unless a signal or timeout interrupts it; in a
//! coroutine it must too. A plain thread drains the other end meanwhile.
//!
//! Also: a datagram send waits for room in a receiver's queue, and loads
//! of writers and readers on two workers deliver every byte.

mod support;

use std::io::{IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::thread;
use std::time::Duration;

use support::differential::*;
use support::*;

/// Sixteen times a pipe's default buffer.
const MIB: usize = 1 << 20;

/// What a single write call returned, and what the reader got in all.
#[derive(Debug, PartialEq)]
struct Written {
    returned: Result<usize, Errno>,
    drained: usize,
}

/// Makes one `write` call of `len` bytes with `write` on the writing end
/// while a plain thread drains `reader`; the writer is dropped after the
/// call, so the drain ends.
fn write_once<W, R>(
    len: usize,
    writer: W,
    reader: R,
    write: impl FnOnce(&mut W, &[u8]) -> std::io::Result<usize>,
) -> Written
where
    R: std::io::Read + Send + 'static,
{
    let drainer = thread::spawn(move || drain(reader));
    let data = vec![0x5a; len];
    let mut writer = writer;
    let returned = outcome(write(&mut writer, &data));
    drop(writer);
    Written {
        returned,
        drained: drainer.join().unwrap(),
    }
}

#[test]
fn pipe_write_of_one_mib_returns_the_full_count() {
    let got = differential("1 MiB write to a pipe", |_| {
        let (reader, writer) = std::io::pipe().unwrap();
        write_once(MIB, writer, reader, |w, data| w.write(data))
    });
    assert_eq!(
        got,
        Written {
            returned: Ok(MIB),
            drained: MIB,
        }
    );
}

#[test]
fn pipe_writev_of_one_mib_returns_the_full_count() {
    let got = differential("1 MiB writev to a pipe", |_| {
        let (reader, writer) = std::io::pipe().unwrap();
        write_once(MIB, writer, reader, |w, data| {
            let (head, tail) = data.split_at(data.len() / 2);
            w.write_vectored(&[IoSlice::new(head), IoSlice::new(tail)])
        })
    });
    assert_eq!(
        got,
        Written {
            returned: Ok(MIB),
            drained: MIB,
        }
    );
}

#[test]
fn tcp_send_of_32_mib_returns_the_full_count() {
    let got = differential("32 MiB send on TCP", |_| {
        let (writer, reader) = tcp_pair();
        write_once(32 * MIB, writer, reader, |w, data| w.write(data))
    });
    assert_eq!(
        got,
        Written {
            returned: Ok(32 * MIB),
            drained: 32 * MIB,
        }
    );
}

#[test]
fn unix_stream_write_of_4_mib_returns_the_full_count() {
    let got = differential("4 MiB write on a unix stream", |_| {
        let (writer, reader) = UnixStream::pair().unwrap();
        write_once(4 * MIB, writer, reader, |w, data| w.write(data))
    });
    assert_eq!(
        got,
        Written {
            returned: Ok(4 * MIB),
            drained: 4 * MIB,
        }
    );
}

/// A send on an unconnected Unix datagram socket to a receiver whose queue
/// another socket filled waits until the receiver takes a datagram.
#[test]
fn unix_datagram_send_to_a_queue_another_socket_filled_waits_for_room() {
    let got = differential("Unix datagram send to a full queue", |_| {
        let path = TempPath::unique();
        let receiver = UnixDatagram::bind(&*path).unwrap();
        let filler = UnixDatagram::unbound().unwrap();
        filler.set_nonblocking(true).unwrap();
        let filled = std::iter::from_fn(|| filler.send_to(b"fill", &*path).ok()).count();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let taker = after(Duration::from_millis(200), move || {
            let mut buf = [0u8; 16];
            receiver.recv(&mut buf).unwrap();
            // Open until the send has returned.
            let _ = released.recv();
        });
        let sender = UnixDatagram::unbound().unwrap();
        let got = timed_span(|| outcome(sender.send_to(b"late", &*path)));
        let _ = release.send(());
        taker.join().unwrap();
        (filled > 0, got)
    });
    assert_eq!(got, (true, (Ok(4), Span::Woken)));
}

/// A fixed pseudo-random sequence (an LCG), so that both loads below are
/// the same every run.
fn lcg(x: &mut u64) -> u64 {
    *x = x
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *x >> 33
}

/// Forty pipes, each with a writer and a reader coroutine on two workers,
/// move writes of every size up to 70,000 bytes: every byte arrives.
#[test]
fn pipes_between_coroutines_on_two_workers_deliver_every_byte() {
    let mismatches = run(2, support::LIMIT, || {
        let pairs: Vec<_> = (0..40u64)
            .map(|pair| {
                let (mut reader, mut writer) = std::io::pipe().unwrap();
                let written = coroutines::spawn(move || {
                    let (mut sum, mut x) = (0u64, pair * 7919 + 1);
                    for i in 0..300usize {
                        let len = lcg(&mut x) as usize % 70_000 + 1;
                        let chunk: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
                        sum += chunk.iter().map(|&b| u64::from(b)).sum::<u64>();
                        writer.write_all(&chunk).unwrap();
                        if i % 17 == 0 {
                            coroutines::yield_now();
                        }
                    }
                    sum
                });
                let read = coroutines::spawn(move || {
                    let (mut sum, mut buf) = (0u64, vec![0u8; 4096 * 3 + 7]);
                    loop {
                        match reader.read(&mut buf).unwrap() {
                            0 => return sum,
                            n => sum += buf[..n].iter().map(|&b| u64::from(b)).sum::<u64>(),
                        }
                    }
                });
                (written, read)
            })
            .collect();
        pairs
            .into_iter()
            .map(|(written, read)| (written.join().unwrap(), read.join().unwrap()))
            .filter(|(written, read)| written != read)
            .count()
    });
    assert_eq!(mismatches, 0);
}

/// A hundred TCP clients, some with a read timeout, each echo fifty
/// messages of up to 100 KB through server coroutines on two workers,
/// writing from a coroutine of their own while they read: every client
/// gets its messages back.
#[test]
fn tcp_echo_between_coroutines_on_two_workers_returns_every_message() {
    const CLIENTS: u64 = 100;
    let failed = run(2, support::LIMIT, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = coroutines::spawn(move || {
            let echoes: Vec<_> = (0..CLIENTS)
                .map(|_| {
                    let (mut stream, _) = listener.accept().unwrap();
                    coroutines::spawn(move || {
                        let mut buf = vec![0u8; 8192];
                        loop {
                            match stream.read(&mut buf).unwrap() {
                                0 => break,
                                n => stream.write_all(&buf[..n]).unwrap(),
                            }
                        }
                    })
                })
                .collect();
            for echo in echoes {
                echo.join().unwrap();
            }
        });
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                coroutines::spawn(move || {
                    let mut stream = TcpStream::connect(addr).unwrap();
                    if client % 3 == 0 {
                        stream
                            .set_read_timeout(Some(Duration::from_secs(20)))
                            .unwrap();
                    }
                    let mut x = client + 3;
                    for _ in 0..50 {
                        let seed = lcg(&mut x);
                        let message = vec![seed as u8; seed as usize % 100_000 + 1];
                        let mut writer = stream.try_clone().unwrap();
                        let sent = message.clone();
                        let writer = coroutines::spawn(move || writer.write_all(&sent).unwrap());
                        let mut back = vec![0u8; message.len()];
                        stream.read_exact(&mut back).unwrap();
                        writer.join().unwrap();
                        assert_eq!(back, message);
                    }
                })
            })
            .collect();
        let failed = clients
            .into_iter()
            .map(|client| client.join())
            .filter(Result::is_err)
            .count();
        server.join().unwrap();
        failed
    });
    assert_eq!(failed, 0);
}
