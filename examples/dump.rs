//! What is every coroutine doing? `coroutines::dump()` lists them with
//! their names, workers and states, and for a parked one what it waits on
//! and for how long: the first thing to look at when a program is stuck.
//!
//! Here a few coroutines wait on different things (a socket, a lock, a
//! timer, another coroutine); the program prints the dump, then lets them
//! all finish. In a program of your own, run it with
//! `COROUTINES_DUMP_SIGNAL=USR1` and `kill -USR1 <pid>` prints the same to
//! stderr.
//!
//! Run with `cargo run --release --example dump`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

fn named<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> coroutines::JoinHandle<T> {
    coroutines::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawn")
}

#[coroutines::main(workers = 1)]
fn main() {
    // A client waiting for a reply that has not come yet.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let client = named("client", move || {
        let mut stream = TcpStream::connect(address).unwrap();
        let mut reply = [0u8; 5];
        stream.read_exact(&mut reply).unwrap();
    });
    let (mut server_side, _) = listener.accept().unwrap();

    // A coroutine waiting for a lock someone holds.
    let config = Arc::new(Mutex::new("v1"));
    let held = config.lock().unwrap();
    let reloader = {
        let config = config.clone();
        named("config-reloader", move || *config.lock().unwrap() = "v2")
    };

    // A timer, and a coroutine waiting for it to finish.
    let timer = named("timer", || thread::sleep(Duration::from_millis(500)));
    let supervisor = named("supervisor", move || timer.join().unwrap());

    // Give them a moment to start waiting.
    thread::sleep(Duration::from_millis(50));
    println!("{}", coroutines::dump());

    server_side.write_all(b"hello").unwrap();
    drop(held);
    for handle in [client, reloader, supervisor] {
        handle.join().unwrap();
    }
    println!("all done; config is now {}", config.lock().unwrap());
}
