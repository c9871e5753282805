//! Attack probes on child waits (`hooks/process.rs`) and the blocking pool
//! (`blocking/`, `hooks/resolve.rs`), differentially where a thread is the
//! reference. Each failing probe is ignored with its finding.
//!
//! Waits for any child reap whichever child ends first, so the probes here
//! take turns ([`serial`]) and reap every child they start.

mod support;

use support::serial;

use std::net::{Ipv4Addr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use support::child::start;
use support::differential::*;
use support::glibc::__h_errno_location;

/// `waitpid(pid, WNOHANG)`: the pid if it reaped the child, 0 if it still
/// runs, or the errno (ECHILD: already reaped).
fn try_reap(pid: libc::pid_t) -> Result<i64, Errno> {
    let mut status = 0;
    // SAFETY: a live int.
    c_outcome(unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) }).map(|r| r.min(1))
}

/// `waitid(P_PID, pid, NULL, WEXITED)`: Linux accepts a null `infop` (the
/// child is reaped, nothing is reported). On a thread the call waits for
/// the child's exit and reaps it.
#[test]
fn waitid_with_a_null_infop_waits_for_the_child() {
    let _serial = serial();
    let got = differential("waitid(P_PID, NULL infop)", |_| {
        let pid = start("sleep 0.3");
        // SAFETY: a null infop is allowed by Linux.
        let (ret, timing) = timed(|| {
            c_outcome(unsafe {
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    std::ptr::null_mut(),
                    libc::WEXITED,
                )
            })
        });
        // Reaped by the waitid (ECHILD), or still there (reap it now).
        let after = try_reap(pid);
        if after == Ok(0) {
            let mut status = 0;
            // SAFETY: a live int; waits for the child started above.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
        (ret, timing, after)
    });
    assert_eq!(got, (Ok(0), Timing::Waited, Err(Errno(libc::ECHILD))));
}

static HANDLED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_signal(_: libc::c_int) {
    HANDLED.store(true, Ordering::SeqCst);
}

/// `waitpid` for a child that lives 1.5 s, with a SIGUSR2 handler without
/// `SA_RESTART` and the signal sent to the calling OS thread 100 ms in: on
/// a thread the wait fails with EINTR then (the child is reaped later).
#[test]
#[ignore = "known limit (coroutines/docs/troubleshooting.md): a handled signal (no SA_RESTART) sent to the calling OS thread does not interrupt a parked waitpid; it waits on for the child"]
fn waitpid_interrupted_by_a_handled_signal() {
    let _serial = serial();
    let got = differential("waitpid, handled signal during the wait", |_| {
        // SAFETY: an all-zero sigaction is valid; the handler only stores.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = note_signal as *const () as libc::sighandler_t;
            libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut());
        }
        HANDLED.store(false, Ordering::SeqCst);
        let pid = start("sleep 1.5");
        // SAFETY: gettid has no arguments.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::pid_t;
        let sender = support::after(Duration::from_millis(100), move || {
            // SAFETY: tgkill to a thread of this process.
            unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR2) };
        });
        let mut status = 0;
        // SAFETY: a live int.
        let (ret, span) =
            timed_span(|| c_outcome(unsafe { libc::waitpid(pid, &mut status, 0) }).map(|_| ()));
        sender.join().unwrap();
        if ret.is_err() {
            // SAFETY: reaps the child started above.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
        (ret, span, HANDLED.load(Ordering::SeqCst))
    });
    assert_eq!(got, (Err(Errno(libc::EINTR)), Span::Woken, true));
}

/// With `blocking_threads(1)`, a coroutine waiting for *any* child holds
/// the only helper thread for as long as the child lives; a neighbour's
/// name lookup, which needs the pool, waits behind it. Here the neighbour
/// would end the child once its lookup is done: with threads the child is
/// killed at once; in coroutines the lookup waits for the child to exit by
/// itself (3 s), so the kill comes too late. On a plain thread nothing
/// waits for anything.
#[test]
#[ignore = "known limit (coroutines/docs/troubleshooting.md): a wait for any child occupies a pool thread for the child's lifetime; with blocking_threads(1) a neighbour's getaddrinfo waits for it (a cycle: the lookup was to end the child)"]
fn any_child_wait_starves_the_pool_for_a_neighbours_lookup() {
    let _serial = serial();
    let case = || {
        let pid = start("exec sleep 3");
        let waiter = move || {
            let mut status = 0;
            // SAFETY: a live int.
            let ret = unsafe { libc::wait(&mut status) };
            assert_eq!(ret, pid);
            libc::WIFSIGNALED(status)
        };
        let killer = move || {
            thread::sleep(Duration::from_millis(100));
            let (found, span) = timed_span(|| ("localhost", 80).to_socket_addrs().is_ok());
            // SAFETY: signals the child started above (or its zombie).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            (found, span)
        };
        (waiter, killer)
    };
    let reference = on_plain_thread("any-child wait, threads", move || {
        let (waiter, killer) = case();
        let w = thread::spawn(waiter);
        let k = thread::spawn(killer);
        (w.join().unwrap(), k.join().unwrap())
    });
    let builder = coroutines::Runtime::builder()
        .workers(1)
        .blocking_threads(1);
    let coroutine = support::watchdog_on("any-child wait, coroutines", LIMIT, builder, move || {
        let (waiter, killer) = case();
        let w = coroutines::spawn(waiter);
        let k = coroutines::spawn(killer);
        (w.join().unwrap(), k.join().unwrap())
    });
    assert_eq!(reference, (true, (true, Span::AtOnce)));
    assert_eq!(coroutine, reference);
}

/// The prefix of glibc's `struct __res_state` (the calling thread's
/// resolver configuration, `_res`).
#[repr(C)]
struct ResState {
    retrans: libc::c_int,
    retry: libc::c_int,
    options: libc::c_ulong,
    nscount: libc::c_int,
    nsaddr_list: [libc::sockaddr_in; 3],
}

unsafe extern "C" {
    fn __res_state() -> *mut ResState;
    fn __res_init() -> libc::c_int;
    fn gethostbyname(name: *const libc::c_char) -> *mut libc::hostent;
}

/// A DNS server on an ephemeral loopback port that answers every query
/// NXDOMAIN at once and counts them.
fn nxdomain_server() -> (
    u16,
    Arc<AtomicUsize>,
    Arc<AtomicBool>,
    thread::JoinHandle<()>,
) {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let port = socket.local_addr().unwrap().port();
    let queries = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let (queries, stop) = (queries.clone(), stop.clone());
        thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if n < 12 {
                    continue;
                }
                queries.fetch_add(1, Ordering::SeqCst);
                let mut reply = buf[..n].to_vec();
                reply[2] |= 0x80; // QR: a response
                reply[3] = 0x80 | 3; // RA, NXDOMAIN
                let _ = socket.send_to(&reply, from);
            }
        })
    };
    (port, queries, stop, handle)
}

/// A program that points its resolver at its own server through `_res`
/// (`res_init`, then `nscount`/`nsaddr_list`: the classic API, per
/// thread in glibc) and looks a name up with `gethostbyname`: on a thread
/// the query goes to that server. In a coroutine the lookup runs on a
/// helper thread, whose `_res` is its own.
#[test]
#[ignore = "known limit (coroutines/docs/troubleshooting.md): lookups on the blocking pool ignore the caller's per-thread resolver state (_res): a nameserver set with res_init/_res is not asked"]
fn gethostbyname_asks_the_nameserver_set_in_res() {
    let got = differential("gethostbyname with _res pointing at our server", |_| {
        let (port, queries, stop, server) = nxdomain_server();
        // SAFETY: the calling thread's resolver state, initialised first.
        let h_errno = unsafe {
            assert_eq!(__res_init(), 0);
            let res = &mut *__res_state();
            res.nscount = 1;
            res.nsaddr_list[0] = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
                },
                sin_zero: [0; 8],
            };
            res.retrans = 1;
            res.retry = 1;
            *__h_errno_location() = 0;
            let host = gethostbyname(c"probe-resolver-state.example".as_ptr());
            assert!(host.is_null());
            *__h_errno_location()
        };
        stop.store(true, Ordering::Relaxed);
        server.join().unwrap();
        (queries.load(Ordering::SeqCst) > 0, h_errno)
    });
    // HOST_NOT_FOUND, from our server's NXDOMAIN.
    assert_eq!(got, (true, 1));
}
