//! Writes, differentially (issue item 10): a blocking write to a pipe or a
//! stream socket returns the full count on a thread, however much larger
//! than the buffer it is, unless a signal or timeout interrupts it; in a
//! coroutine it must too. A plain thread drains the other end meanwhile.

mod support;

use std::io::{IoSlice, Write};
use std::os::unix::net::UnixStream;
use std::thread;

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
