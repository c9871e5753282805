//! A short tour of `coroutines`: each step runs plain blocking std code in
//! coroutines and prints what it shows.
//!
//! Run with `cargo run --release --example tour`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[coroutines::main(workers = 2)]
fn main() {
    println!(
        "The root coroutine runs main's body on {} workers.\n",
        coroutines::stats().workers
    );

    // 1. Spawning is cheap: stacks are pooled, so 100,000 spawns map few.
    let start = Instant::now();
    let handles: Vec<_> = (0..100_000u64)
        .map(|i| coroutines::spawn(move || i * 2))
        .collect();
    let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    println!(
        "1. 100,000 coroutines spawned and joined in {:?}; sum of 2i = {sum}",
        start.elapsed()
    );

    // 2. std::thread::sleep parks the coroutine, not the worker.
    let start = Instant::now();
    let sleepers: Vec<_> = (0..10_000)
        .map(|_| coroutines::spawn(|| std::thread::sleep(Duration::from_millis(200))))
        .collect();
    sleepers.into_iter().for_each(|h| h.join().unwrap());
    println!(
        "2. 10,000 coroutines each slept 200 ms; all done in {:?}",
        start.elapsed()
    );

    // 3. std::net sockets park too: an echo server and 100 clients.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    coroutines::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            coroutines::spawn(move || {
                let mut buf = [0u8; 256];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    stream.write_all(&buf[..n]).unwrap();
                }
            });
        }
    });
    let start = Instant::now();
    let clients: Vec<_> = (0..100)
        .map(|i| {
            coroutines::spawn(move || {
                let mut stream = TcpStream::connect(address).unwrap();
                let mut reply = [0u8; 32];
                for _ in 0..100 {
                    let message = format!("hello {i}");
                    stream.write_all(message.as_bytes()).unwrap();
                    stream.read_exact(&mut reply[..message.len()]).unwrap();
                }
            })
        })
        .collect();
    clients.into_iter().for_each(|h| h.join().unwrap());
    println!(
        "3. 100 TCP clients x 100 echoed messages through std::net in {:?}",
        start.elapsed()
    );

    // 4. Panics stay inside their coroutine and come back from join.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        println!(
            "   (a coroutine panics: {})",
            info.payload().downcast_ref::<&str>().unwrap()
        )
    }));
    let payload = coroutines::spawn(|| panic!("boom")).join().unwrap_err();
    std::panic::set_hook(default_hook);
    println!(
        "4. a coroutine panicked with {:?}; the runtime carries on",
        payload.downcast_ref::<&str>().unwrap()
    );

    // 5. A std Mutex shared by coroutines and counted exactly.
    let counter = Arc::new(Mutex::new(0u64));
    let workers: Vec<_> = (0..100)
        .map(|_| {
            let counter = counter.clone();
            coroutines::spawn(move || {
                for _ in 0..100 {
                    *counter.lock().unwrap() += 1;
                    coroutines::yield_now();
                }
            })
        })
        .collect();
    workers.into_iter().for_each(|h| h.join().unwrap());
    println!(
        "5. 100 coroutines incremented a std Mutex counter to {}",
        counter.lock().unwrap()
    );

    let stats = coroutines::stats();
    println!(
        "\nStats: {} spawned, {} alive, {} context switches, {} migrations.",
        stats.spawned, stats.alive, stats.context_switches, stats.migrations
    );
}
