//! A std::net echo server and 500 clients, all plain blocking code in
//! coroutines on 2 workers. Every client sends 100 messages and checks each
//! echo; the program prints the totals and exits.
//!
//! Run with `cargo run --release --example echo_server`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

const CLIENTS: usize = 500;
const ROUNDS: usize = 100;

#[coroutines::main(workers = 2)]
fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    println!("echo server on {address}");
    coroutines::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.expect("accept");
            coroutines::spawn(move || {
                let mut buf = [0u8; 1024];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => stream.write_all(&buf[..n]).expect("echo"),
                    }
                }
            });
        }
    });

    let start = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            coroutines::spawn(move || -> std::io::Result<()> {
                let mut stream = TcpStream::connect(address)?;
                let mut reply = [0u8; 64];
                for round in 0..ROUNDS {
                    let message = format!("client {id} round {round}");
                    stream.write_all(message.as_bytes())?;
                    stream.read_exact(&mut reply[..message.len()])?;
                    assert_eq!(&reply[..message.len()], message.as_bytes());
                }
                Ok(())
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client panicked")?;
    }
    let stats = coroutines::stats();
    println!(
        "{CLIENTS} clients x {ROUNDS} round trips in {:?} on {} workers ({} context switches)",
        start.elapsed(),
        stats.workers,
        stats.context_switches
    );
    Ok(())
}
