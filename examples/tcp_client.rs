//! A `std::net::TcpStream` client with a read timeout, in a coroutine. It
//! talks to a small line-based server that the example starts in the same
//! process (so it runs standalone), makes a few request/response exchanges,
//! and shows `set_read_timeout` working as it does on a thread: a reply that
//! takes longer than the timeout fails with `WouldBlock` after the timeout,
//! and can still be read later. Every step is printed with its time.
//!
//! The server understands `PING`, `ADD a b` and `SLOW ms` (replies after
//! sleeping `ms` milliseconds with `std::thread::sleep`, which parks only its
//! own coroutine).
//!
//! Run with `cargo run --release --example tcp_client`; it ends by itself.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// The client's read timeout.
const READ_TIMEOUT: Duration = Duration::from_millis(300);

#[coroutines::main(workers = 2)]
fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    coroutines::spawn(move || serve(listener));
    println!("server on {address}");
    client(address)
}

fn client(address: SocketAddr) -> std::io::Result<()> {
    let start = Instant::now();
    let at = || format!("[{:>7.1?}]", start.elapsed());
    let stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    println!(
        "{} connected from {}, read timeout {:?}",
        at(),
        stream.local_addr()?,
        stream.read_timeout()?.expect("a timeout was set")
    );
    let mut reader = BufReader::new(&stream);

    for request in ["PING", "ADD 2 40", "SLOW 100", "SLOW 1000"] {
        send_line(&stream, request)?;
        let sent = Instant::now();
        let mut reply = String::new();
        match reader.read_line(&mut reply) {
            Ok(_) => println!(
                "{} {request:<9} -> {:<18} ({:.1?})",
                at(),
                reply.trim_end(),
                sent.elapsed()
            ),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                println!(
                    "{} {request:<9} -> timed out with {:?} after {:.1?}",
                    at(),
                    e.kind(),
                    sent.elapsed()
                );
                // The reply is still on its way: wait for it without a
                // timeout this time.
                stream.set_read_timeout(None)?;
                reply.clear();
                reader.read_line(&mut reply)?;
                println!(
                    "{} {request:<9} -> {:<18} (late, {:.1?} after the request)",
                    at(),
                    reply.trim_end(),
                    sent.elapsed()
                );
                stream.set_read_timeout(Some(READ_TIMEOUT))?;
            }
            Err(e) => return Err(e),
        }
    }
    let stats = coroutines::stats();
    println!(
        "{} done on {} workers, {} context switches",
        at(),
        stats.workers,
        stats.context_switches
    );
    Ok(())
}

/// Sends `text` and a newline in ONE write. Two small writes (as
/// `writeln!` makes) would meet Nagle's algorithm and the peer's delayed
/// acknowledgement, and each exchange would take about 40 ms longer.
fn send_line(mut stream: &TcpStream, text: &str) -> std::io::Result<()> {
    stream.write_all(format!("{text}\n").as_bytes())
}

/// Accepts connections forever, one coroutine each; the process ends when
/// `main` returns.
fn serve(listener: TcpListener) {
    for stream in listener.incoming() {
        let stream = stream.expect("accept");
        coroutines::spawn(move || {
            if let Err(e) = answer(stream) {
                eprintln!("server: {e}");
            }
        });
    }
}

/// Answers one request per line until the client closes.
fn answer(stream: TcpStream) -> std::io::Result<()> {
    let mut line = String::new();
    let mut reader = BufReader::new(&stream);
    while reader.read_line(&mut line)? > 0 {
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["PING"] => "PONG".to_owned(),
            ["ADD", a, b] => match (a.parse::<i64>(), b.parse::<i64>()) {
                (Ok(a), Ok(b)) => (a + b).to_string(),
                _ => "ERR not numbers".to_owned(),
            },
            ["SLOW", ms] => match ms.parse() {
                Ok(ms) => {
                    thread::sleep(Duration::from_millis(ms));
                    format!("DONE after {ms} ms")
                }
                Err(_) => "ERR not a number".to_owned(),
            },
            _ => format!("ERR unknown request {:?}", line.trim_end()),
        };
        send_line(&stream, &reply)?;
        line.clear();
    }
    Ok(())
}
