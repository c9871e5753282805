//! The peers' echo servers, shared by `echo.rs` (in the bench's process)
//! and `echo_process.rs` (a process each): a thread per connection, `may`
//! and tokio. Each accepts on `listener` for ever and counts in `tally`.
//! (Ours is `echo_server::accept_loop` in a coroutine; its own binary
//! cannot use this module, which needs the peers' crates.)

use std::net::TcpListener;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::Arc;
use std::thread;

use crate::echo_server::{accept_loop, echo_blocking, Count, SERVER_BUFFER};

/// A thread per connection.
pub fn threads<C: Count>(listener: TcpListener, tally: Arc<C>) {
    thread::spawn(move || {
        accept_loop("threads", listener, tally, |handler| {
            thread::spawn(handler);
        })
    });
}

/// A `may` coroutine per connection, on may's configured workers.
pub fn may<C: Count>(listener: TcpListener, tally: Arc<C>) {
    // SAFETY: `listener`'s descriptor moves to may.
    let listener = unsafe { may::net::TcpListener::from_raw_fd(listener.into_raw_fd()) };
    may::go!(move || {
        for stream in listener.incoming() {
            let stream = stream.expect("may: accept");
            stream.set_nodelay(true).expect("may: TCP_NODELAY");
            let tally = tally.clone();
            tally.accept();
            may::go!(move || {
                echo_blocking(stream);
                tally.finish();
            });
        }
    });
}

/// A tokio task per connection, on the runtime that runs this future.
pub async fn tokio<C: Count>(listener: TcpListener, tally: Arc<C>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    listener.set_nonblocking(true).expect("tokio: non-blocking");
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio: listener");
    loop {
        let (mut stream, _) = listener.accept().await.expect("tokio: accept");
        stream.set_nodelay(true).expect("tokio: TCP_NODELAY");
        let tally = tally.clone();
        tally.accept();
        tokio::spawn(async move {
            let mut buf = [0u8; SERVER_BUFFER];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            tally.finish();
        });
    }
}
