//! A `std::net::TcpListener` accepting connections inside a coroutine: one
//! coroutine per accepted connection greets the peer, reads one line back
//! and closes. The accept loop stops after N connections (default 3), so the
//! program ends by itself.
//!
//! Everything runs on ONE worker thread: the accept loop, the handlers and
//! the example's own clients (coroutines too, connecting one after another
//! with a pause in between). While one of them waits in `accept`, `read` or
//! `sleep`, only that coroutine waits and the others run. Every step is
//! printed with the time it happened.
//!
//! Run with `cargo run --release --example tcp_listener` (3 connections from
//! clients the example spawns itself), or with a count:
//! `cargo run --release --example tcp_listener -- 5`.
//!
//! To be the client yourself, add `--external`: the listener then binds
//! 127.0.0.1:7878 (or the address in `TCP_LISTENER_ADDR`), spawns no
//! clients, and waits for N connections, e.g. from
//! `cargo run --release --example tcp_listener -- 2 --external` and, in
//! another terminal, `nc 127.0.0.1 7878` (type a line and press Enter; if
//! your `nc` stays open after the goodbye, end it with Ctrl-D or Ctrl-C; run
//! it twice).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// Connections accepted before the listener stops, unless given.
const DEFAULT_CONNECTIONS: usize = 3;
/// Where `--external` listens unless `TCP_LISTENER_ADDR` says otherwise.
const DEFAULT_EXTERNAL_ADDR: &str = "127.0.0.1:7878";
/// Pause between the example's own clients, so the accepts are visibly
/// spread out in time.
const CLIENT_PAUSE: Duration = Duration::from_millis(200);

#[coroutines::main(workers = 1)]
fn main() -> std::io::Result<()> {
    let mut connections = DEFAULT_CONNECTIONS;
    let mut external = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--external" => external = true,
            n => {
                connections = n.parse().map_err(|_| {
                    std::io::Error::other(format!(
                        "usage: tcp_listener [CONNECTIONS] [--external], got {n:?}"
                    ))
                })?
            }
        }
    }

    let start = Instant::now();
    let at = move || format!("[{:>7.1?}]", start.elapsed());
    let address = if external {
        std::env::var("TCP_LISTENER_ADDR").unwrap_or_else(|_| DEFAULT_EXTERNAL_ADDR.into())
    } else {
        "127.0.0.1:0".into()
    };
    let listener = TcpListener::bind(&address)?;
    let local = listener.local_addr()?;
    println!(
        "{} listening on {local}, for {connections} connection(s)",
        at()
    );

    let clients = if external {
        println!("{} connect with: nc {} {}", at(), local.ip(), local.port());
        None
    } else {
        Some(coroutines::spawn(move || -> std::io::Result<()> {
            for id in 0..connections {
                thread::sleep(CLIENT_PAUSE);
                coroutines::spawn(move || client(id, local, at))
                    .join()
                    .unwrap()?;
            }
            Ok(())
        }))
    };

    let mut handlers = Vec::new();
    for number in 1..=connections {
        let (stream, peer) = listener.accept()?;
        println!("{} accepted connection {number} from {peer}", at());
        handlers.push(coroutines::spawn(move || greet(number, stream, at)));
    }
    drop(listener);
    for handler in handlers {
        handler.join().expect("handler panicked")?;
    }
    if let Some(clients) = clients {
        clients.join().expect("clients panicked")?;
    }
    let stats = coroutines::stats();
    println!(
        "{} done: {connections} connection(s) on {} worker(s), {} context switches",
        at(),
        stats.workers,
        stats.context_switches
    );
    Ok(())
}

/// Serves one accepted connection: greets, reads one line, says goodbye.
fn greet(number: usize, stream: TcpStream, at: impl Fn() -> String) -> std::io::Result<()> {
    let me = coroutines::current().id();
    send_line(
        &stream,
        &format!("hello, you are connection {number}; say something"),
    )?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    println!(
        "{} connection {number} (coroutine {me:?}) got {:?}",
        at(),
        line.trim_end()
    );
    send_line(&stream, "goodbye")?;
    Ok(())
}

/// One of the example's own clients: reads the greeting, answers, reads the
/// goodbye.
fn client(
    id: usize,
    address: std::net::SocketAddr,
    at: impl Fn() -> String,
) -> std::io::Result<()> {
    let stream = TcpStream::connect(address)?;
    let mut reader = BufReader::new(&stream);
    let mut greeting = String::new();
    reader.read_line(&mut greeting)?;
    println!("{} client {id} read {:?}", at(), greeting.trim_end());
    send_line(&stream, &format!("hi from client {id}"))?;
    let mut goodbye = String::new();
    reader.read_line(&mut goodbye)?;
    println!("{} client {id} read {:?}", at(), goodbye.trim_end());
    Ok(())
}

/// Sends `text` and a newline in ONE write: two small writes (as `writeln!`
/// makes) can meet Nagle's algorithm and the peer's delayed acknowledgement,
/// which would add about 40 ms per exchange.
fn send_line(mut stream: &TcpStream, text: &str) -> std::io::Result<()> {
    stream.write_all(format!("{text}\n").as_bytes())
}
