//! Our echo server as a process of its own, for the `echo_process` bench:
//! std::net in coroutines on a runtime of 2 workers, a coroutine per
//! connection, on the listening socket the driver passes.
//!
//! Usage: `echo_server_coroutines FD [identity-off]`. With `identity-off`
//! the runtime is built with `thread_identity(false)`. The driver talks to
//! it on stdin/stdout (see `support/echo_server.rs`).

#[path = "../support/echo_server.rs"]
mod echo_server;

use std::sync::Arc;

use echo_server::{accept_loop, control_loop, inherited_listener, Tally};

/// Worker threads (the machine the numbers come from has 2 vCPUs).
const WORKERS: usize = 2;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listener = inherited_listener(args.get(1).map(String::as_str));
    let mut builder = coroutines::Runtime::builder().workers(WORKERS);
    match args.get(2).map(String::as_str) {
        None => {}
        Some("identity-off") => builder = builder.thread_identity(false),
        Some(other) => panic!("unknown option {other:?}; known: identity-off"),
    }
    let runtime = builder.build().expect("our runtime");
    let tally = Arc::new(Tally::default());
    let server_tally = tally.clone();
    runtime.spawn(move || {
        accept_loop("coroutines", listener, server_tally, |handler| {
            coroutines::spawn(handler);
        })
    });
    control_loop(&tally)
}
