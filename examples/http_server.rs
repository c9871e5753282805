//! A tiny HTTP/1.1 hello-world server on `std::net`: one coroutine per
//! connection, plain blocking reads and writes, keep-alive. Each request is
//! read up to its blank line (request line and headers; a `Content-Length`
//! body is read and ignored) and answered with a fixed `Content-Length`
//! response, `Hello, world!` for `GET /`, 404 for other paths. A connection
//! closes after `Connection: close` (or an HTTP/1.0 request without
//! `Connection: keep-alive`), when the client closes, or on a malformed
//! request (answered with 400).
//!
//! Run with `cargo run --release --example http_server` and try
//! `curl -v http://127.0.0.1:8080/` or a load generator
//! (`wrk -c 100 -d 10s http://127.0.0.1:8080/`, `ab -k -c 100 -n 100000
//! http://127.0.0.1:8080/`). It serves until you stop it with Ctrl-C,
//! printing a line every few seconds while requests come in.
//!
//! Options:
//! - `ADDRESS` (first argument) or the `HTTP_ADDR` environment variable: where
//!   to listen, `127.0.0.1:8080` by default (`127.0.0.1:0` picks a free port).
//! - `--requests N`: serve N requests, printing each, then exit; for smoke
//!   tests, e.g. `cargo run --release --example http_server -- --requests 3`
//!   and `curl -s http://127.0.0.1:8080/ http://127.0.0.1:8080/ \
//!   http://127.0.0.1:8080/` (three requests over one kept-alive connection).
//! - `--verbose`: print every request without a limit.
//! - `COROUTINES_WORKERS`: worker threads (default: one per CPU).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// Largest request head (request line and headers) accepted, in bytes.
const MAX_HEAD: usize = 16 * 1024;
/// How often the running totals are printed when they changed.
const REPORT_EVERY: Duration = Duration::from_secs(5);
const BODY: &str = "Hello, world!\n";

/// What the command line asked for.
struct Options {
    address: String,
    /// Exit after this many requests.
    limit: Option<u64>,
    verbose: bool,
}

/// Requests that were given a response slot (with a limit, those past it
/// are turned away).
static CLAIMED: AtomicU64 = AtomicU64::new(0);
static SERVED: AtomicU64 = AtomicU64::new(0);
static ACCEPTED: AtomicU64 = AtomicU64::new(0);
static CLOSED: AtomicU64 = AtomicU64::new(0);
/// Set once the request limit is reached; the accept loop then ends.
static STOP: AtomicBool = AtomicBool::new(false);
static OPTIONS: OnceLock<Options> = OnceLock::new();
/// The listener's address as a client reaches it, to wake the accept loop.
static WAKE_ADDR: OnceLock<SocketAddr> = OnceLock::new();

#[coroutines::main]
fn main() -> io::Result<()> {
    let options = OPTIONS.get_or_init(|| {
        parse_args().unwrap_or_else(|usage| {
            eprintln!("{usage}");
            std::process::exit(2)
        })
    });
    let listener = TcpListener::bind(&options.address)?;
    let mut local = listener.local_addr()?;
    println!(
        "listening on http://{local}/ with {} workers; {}",
        coroutines::stats().workers,
        match options.limit {
            Some(n) => format!("exits after {n} request(s)"),
            None => "stop with Ctrl-C".to_owned(),
        }
    );
    if local.ip().is_unspecified() {
        local.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    WAKE_ADDR.set(local).expect("set once");
    if options.limit.is_none() {
        coroutines::spawn(report);
    }

    for stream in listener.incoming() {
        if STOP.load(Ordering::Acquire) {
            break;
        }
        match stream {
            Ok(stream) => {
                let id = ACCEPTED.fetch_add(1, Ordering::Relaxed) + 1;
                coroutines::spawn(move || {
                    if let Err(e) = serve(id, stream) {
                        if options.verbose || options.limit.is_some() {
                            eprintln!("connection {id}: {e}");
                        }
                    }
                    CLOSED.fetch_add(1, Ordering::Relaxed);
                });
            }
            // Out of descriptors, or the peer gave up before we accepted:
            // keep serving the others.
            Err(e) => {
                eprintln!("accept: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    println!(
        "served {} request(s) on {} connection(s); exiting",
        SERVED.load(Ordering::Relaxed),
        ACCEPTED.load(Ordering::Relaxed)
    );
    Ok(())
}

fn parse_args() -> Result<Options, String> {
    let usage = "usage: http_server [ADDRESS] [--requests N] [--verbose]";
    let mut options = Options {
        address: std::env::var("HTTP_ADDR").unwrap_or_else(|_| DEFAULT_ADDR.to_owned()),
        limit: None,
        verbose: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--requests" => {
                let n = args.next().and_then(|n| n.parse().ok());
                options.limit = Some(n.filter(|&n| n > 0).ok_or(usage)?);
            }
            "--verbose" => options.verbose = true,
            "-h" | "--help" => return Err(usage.to_owned()),
            address if !address.starts_with('-') => options.address = address.to_owned(),
            _ => return Err(usage.to_owned()),
        }
    }
    Ok(options)
}

/// One parsed request head.
struct Request<'a> {
    method: &'a str,
    target: &'a str,
    version: &'a str,
    keep_alive: bool,
    content_length: usize,
}

/// Serves requests on one connection until it closes.
fn serve(id: u64, mut stream: TcpStream) -> io::Result<()> {
    let options = OPTIONS.get().expect("set in main");
    let mut buf = vec![0u8; 4096];
    // Bytes of `buf` received and not yet consumed (pipelined requests stay
    // here until their turn).
    let mut filled = 0;
    let mut number = 0u64;
    loop {
        // Read until the blank line that ends the head.
        let head_len = loop {
            if let Some(end) = find_head_end(&buf[..filled]) {
                break end;
            }
            if filled == buf.len() {
                if buf.len() >= MAX_HEAD {
                    stream.write_all(&response(
                        431,
                        "text/plain",
                        "Request header too large\n",
                        false,
                    ))?;
                    return Ok(());
                }
                buf.resize(buf.len() * 2, 0);
            }
            match stream.read(&mut buf[filled..])? {
                0 => return Ok(()),
                n => filled += n,
            }
        };
        let Some(request) = parse_head(&buf[..head_len]) else {
            stream.write_all(&response(400, "text/plain", "Bad request\n", false))?;
            return Ok(());
        };
        let (status, body) = match (request.method, request.target) {
            ("GET" | "HEAD", "/") => (200, BODY),
            ("GET" | "HEAD", _) => (404, "Not found\n"),
            _ => (405, "Method not allowed\n"),
        };
        let mut keep_alive = request.keep_alive;
        let line = format!("{} {} {}", request.method, request.target, request.version);
        let head_only = request.method == "HEAD";
        let body_len = request.content_length;

        // Skip the request body, if any.
        let mut consumed = head_len;
        let mut to_skip = body_len;
        let buffered = (filled - consumed).min(to_skip);
        consumed += buffered;
        to_skip -= buffered;
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
        while to_skip > 0 {
            let n = stream.read(&mut buf[..to_skip.min(4096)])?;
            if n == 0 {
                return Ok(());
            }
            to_skip -= n;
        }

        let ticket = CLAIMED.fetch_add(1, Ordering::Relaxed) + 1;
        let last = options.limit.map(|limit| ticket >= limit);
        if options.limit.is_some_and(|limit| ticket > limit) {
            return Ok(()); // past the limit: we are shutting down
        }
        if last == Some(true) {
            keep_alive = false;
        }
        let mut bytes = response(status, "text/plain", body, keep_alive);
        if head_only {
            bytes.truncate(bytes.len() - body.len());
        }
        stream.write_all(&bytes)?;
        number += 1;
        let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
        if options.verbose || options.limit.is_some() {
            let peer = stream.peer_addr().map_or("?".to_owned(), |a| a.to_string());
            println!("#{served} connection {id} ({peer}) request {number}: {line} -> {status}");
        }
        if last == Some(true) {
            // Wake the accept loop so it sees STOP and main returns.
            STOP.store(true, Ordering::Release);
            let _ = TcpStream::connect(WAKE_ADDR.get().expect("set in main"));
        }
        if !keep_alive {
            return Ok(());
        }
    }
}

/// The length of the head (up to and including `\r\n\r\n`), if complete.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

/// Parses the request line and the headers this server cares about.
fn parse_head(head: &[u8]) -> Option<Request<'_>> {
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let mut parts = lines.next()?.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || method.is_empty() || !target.starts_with('/') {
        return None;
    }
    let mut keep_alive = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return None,
    };
    let mut content_length = 0;
    for line in lines.take_while(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return None; // chunked request bodies are beyond this example
        }
    }
    Some(Request {
        method,
        target,
        version,
        keep_alive,
        content_length,
    })
}

/// A complete response, head and body, to be sent with one write (several
/// small writes would meet Nagle's algorithm and delayed ACKs).
fn response(status: u16, content_type: &str, body: &str, keep_alive: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Unknown",
    };
    let connection = if keep_alive { "keep-alive" } else { "close" };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: {connection}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Prints the running totals every few seconds while they change; runs
/// until the process ends.
fn report() {
    let start = Instant::now();
    let mut last = (0, 0);
    loop {
        thread::sleep(REPORT_EVERY);
        let served = SERVED.load(Ordering::Relaxed);
        let accepted = ACCEPTED.load(Ordering::Relaxed);
        if (served, accepted) == last {
            continue;
        }
        let open = accepted - CLOSED.load(Ordering::Relaxed).min(accepted);
        println!(
            "[{:>4}s] {served} requests (+{:.0}/s), {accepted} connections, {open} open, {} context switches",
            start.elapsed().as_secs(),
            (served - last.0) as f64 / REPORT_EVERY.as_secs_f64(),
            coroutines::stats().context_switches,
        );
        last = (served, accepted);
    }
}
