//! Listeners and connects, differentially: each case runs on a plain
//! thread (libc's answer) and in a coroutine on one worker.
//!
//! In a coroutine, `accept` has no per-call non-blocking flag, so the
//! runtime holds the listener's open file description in O_NONBLOCK while
//! a coroutine accepts. The description is shared by every descriptor of
//! it (`try_clone`), every thread and every child process, so a listener
//! the user left blocking must be blocking for every other holder at every
//! moment the runtime is not inside a call on it (issue items 4 and 5, and
//! the F_SETFL/FIONBIO race). Also: a unix connect to a full backlog waits
//! (item 6), and accept on a UDP socket fails at once (item 8).

mod support;

use std::io::{BufRead, BufReader};
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{self, UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::differential::*;
use support::*;

/// Lets the parties spawned so far reach their blocking call.
fn let_them_block() {
    thread::sleep(Duration::from_millis(50));
}

/// Accepts a connection that may be pending on `listener`, without
/// waiting for one that is not.
fn drain_pending(listener: &TcpListener) {
    let mut pollfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd.
    if unsafe { libc::poll(&mut pollfd, 1, 50) } == 1 {
        listener.accept().unwrap();
    }
}

/// A blocking accept on `listener` while a plain thread connects to `addr`
/// after [`WAIT`]: what it returned, and whether it waited.
fn accept_late_connection(listener: &TcpListener, addr: SocketAddr) -> (Result<(), Errno>, Timing) {
    let client = after(WAIT, move || TcpStream::connect(addr).unwrap());
    let got = timed(|| outcome(listener.accept().map(drop)));
    drop(client.join().unwrap());
    drain_pending(listener);
    got
}

/// Whether `fd`'s description is non-blocking: as `F_GETFL` shows it to
/// the user, and as the kernel has it for every other holder.
#[derive(Debug, PartialEq)]
struct Mode {
    shown: bool,
    kernel: bool,
}

fn mode(fd: RawFd) -> Mode {
    let nonblock = |flags: i32| flags & libc::O_NONBLOCK != 0;
    Mode {
        shown: nonblock(flags(fd)),
        kernel: nonblock(kernel_flags(fd)),
    }
}

const BLOCKING: Mode = Mode {
    shown: false,
    kernel: false,
};

// ------------------------------------------------ item 4: the hold's race

/// Connects to `addr` and resets the connection at once: no TIME_WAIT is
/// left behind, so that tens of thousands of connections fit in the port
/// range.
fn connect_and_reset(addr: SocketAddr) {
    let client = TcpStream::connect(addr).unwrap();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is a live struct of the given size.
    let ret = unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0);
}

/// What the plain thread saw of its blocking accepts.
#[derive(Debug, PartialEq)]
struct Shared {
    /// A blocking accept failed with WouldBlock.
    saw_eagain: bool,
    /// Every connection was accepted by someone.
    all_accepted: bool,
}

#[test]
fn blocking_accept_on_a_plain_thread_never_fails_beside_an_accepting_party() {
    // A plain thread makes blocking accepts on a listener while a party of
    // the case's side accepts on a clone of it (a coroutine takes and
    // releases its O_NONBLOCK hold on every accept), and the case makes
    // connection after connection, for up to BUDGET or until the thread
    // sees EAGAIN.
    const BUDGET: Duration = Duration::from_millis(1500);
    let got = differential("blocking accept beside an accepting party", |side| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let eagain = Arc::new(AtomicBool::new(false));
        let accept_until_stopped = {
            let (stop, accepted, eagain) = (stop.clone(), accepted.clone(), eagain.clone());
            move |listener: TcpListener| loop {
                match listener.accept() {
                    Ok(_) if stop.load(Ordering::SeqCst) => return,
                    Ok(_) => drop(accepted.fetch_add(1, Ordering::SeqCst)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        eagain.store(true, Ordering::SeqCst)
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        };
        let party = {
            let (clone, accept) = (listener.try_clone().unwrap(), accept_until_stopped.clone());
            side.spawn(move || accept(clone))
        };
        let plain = thread::spawn(move || accept_until_stopped(listener));
        // The case connects itself: in a coroutine, its connects take holds
        // of their own and park, which shifts the timing of the party's
        // accepts, and the race shows within a few hundred connections.
        let start = Instant::now();
        let mut connected = 0;
        while start.elapsed() < BUDGET && !eagain.load(Ordering::SeqCst) {
            connect_and_reset(addr);
            connected += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while accepted.load(Ordering::SeqCst) < connected && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        let all_accepted = accepted.load(Ordering::SeqCst) == connected;
        // One more connection for each acceptor still blocked.
        stop.store(true, Ordering::SeqCst);
        while !(party.is_finished() && plain.is_finished()) {
            connect_and_reset(addr);
            thread::sleep(Duration::from_millis(1));
        }
        party.join();
        plain.join().unwrap();
        Shared {
            saw_eagain: eagain.load(Ordering::SeqCst),
            all_accepted,
        }
    });
    assert_eq!(
        got,
        Shared {
            saw_eagain: false,
            all_accepted: true,
        }
    );
}

// ----------------------------------------- item 5: the hold outlives its use

/// What the holders of a listener's description see after something
/// happened to a party accepting on it.
#[derive(Debug, PartialEq)]
struct Afterwards {
    mode: Mode,
    /// A blocking accept on a plain thread, a connection coming after WAIT.
    thread_accept: (Result<(), Errno>, Timing),
    /// The same on the case's side.
    own_accept: (Result<(), Errno>, Timing),
}

#[test]
fn closing_a_listener_during_an_accept_leaves_its_clone_blocking() {
    let got = differential_exclusive("close during accept, then the clone", |side| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let clone = Arc::new(listener.try_clone().unwrap());
        let fd = listener.into_raw_fd();
        let party = side.spawn(move || {
            let listener: ManuallyDrop<TcpListener> = borrowed(fd);
            outcome(listener.accept().map(drop))
        });
        let_them_block();
        // SAFETY: `fd` is closed once, here; the party never closes it.
        assert_eq!(unsafe { libc::close(fd) }, 0);
        // A thread blocked in accept holds the file and keeps waiting: a
        // connection releases it. (A parked coroutine wakes with EBADF at
        // the close, as the runtime promises; the two differ by design and
        // are not compared. The connection is then left pending, and
        // drained.)
        let _release = TcpStream::connect(addr).unwrap();
        party.join().ok();
        drain_pending(&clone);
        let mode = mode(clone.as_raw_fd());
        let thread_accept = {
            let clone = clone.clone();
            thread::spawn(move || accept_late_connection(&clone, addr))
                .join()
                .unwrap()
        };
        Afterwards {
            mode,
            thread_accept,
            own_accept: accept_late_connection(&clone, addr),
        }
    });
    assert_eq!(
        got,
        Afterwards {
            mode: BLOCKING,
            thread_accept: (Ok(()), Timing::Waited),
            own_accept: (Ok(()), Timing::Waited),
        }
    );
}

/// What a listener's holders see, the user having left it blocking: its
/// mode, a blocking accept through libc (the hooks) on a plain thread, and
/// one by a raw system call (as a static binary, another runtime or
/// io_uring would make it), each with a connection coming after WAIT.
#[derive(Debug, PartialEq)]
struct Holders {
    mode: Mode,
    libc_accept: (Result<(), Errno>, Timing),
    raw_accept: (Result<(), Errno>, Timing),
}

fn holders(listener: &TcpListener) -> Holders {
    let addr = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    let raw_accept = {
        let client = after(WAIT, move || TcpStream::connect(addr).unwrap());
        // SAFETY: accept4 on a live listener; no address is asked for.
        let (ret, timing) = timed(|| unsafe {
            libc::syscall(
                libc::SYS_accept4,
                fd,
                std::ptr::null_mut::<libc::sockaddr>(),
                std::ptr::null_mut::<libc::socklen_t>(),
                libc::SOCK_CLOEXEC,
            )
        });
        drop(client.join().unwrap());
        if ret >= 0 {
            // SAFETY: the accepted descriptor is new and owned here.
            unsafe { libc::close(ret as RawFd) };
        }
        drain_pending(listener);
        (c_outcome(ret).map(drop), timing)
    };
    Holders {
        mode: mode(fd),
        libc_accept: accept_late_connection(listener, addr),
        raw_accept,
    }
}

#[test]
fn a_runtime_dropped_during_an_accept_leaves_the_listener_blocking() {
    // Not the two-sided shape: the reference is the same listener before
    // any runtime touched it. A runtime that is dropped abandons its
    // parked coroutines (their stacks are never unwound): whatever they
    // held must be given back.
    on_plain_thread("runtime dropped during accept", || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let before = holders(&listener);
        let runtime = coroutines::Runtime::builder().workers(1).build().unwrap();
        let clone = listener.try_clone().unwrap();
        runtime.spawn(move || drop(clone.accept()));
        let_them_block();
        drop(runtime);
        let afterwards = holders(&listener);
        assert_eq!(
            afterwards, before,
            "after the runtime's drop (left) vs before it existed (right)"
        );
        assert_eq!(
            before,
            Holders {
                mode: BLOCKING,
                libc_accept: (Ok(()), Timing::Waited),
                raw_accept: (Ok(()), Timing::Waited),
            }
        );
    });
}

/// Accepts once on the inherited descriptor given as its argument and says
/// whether the accept failed for want of blocking.
const CHILD_ACCEPT: &str = "\
import socket, sys
listener = socket.socket(fileno=int(sys.argv[1]))
print('ready', flush=True)
try:
    listener.accept()
    print('accepted', flush=True)
except BlockingIOError:
    print('eagain', flush=True)
";

/// What the child process and the party reported.
#[derive(Debug, PartialEq)]
struct Inherited {
    child: String,
    party: Result<(), Errno>,
}

#[test]
fn a_child_process_inheriting_a_listener_accepts_blocking() {
    let got = differential("child accepting on an inherited listener", |side| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let clone = listener.try_clone().unwrap();
        let party = side.spawn(move || outcome(clone.accept().map(drop)));
        let_them_block();
        // A duplicate without FD_CLOEXEC, for the child to inherit.
        // SAFETY: dup of a live descriptor; the duplicate is closed below.
        let inherited = unsafe { libc::dup(listener.as_raw_fd()) };
        assert!(inherited >= 0);
        let mut child = Command::new("python3")
            .args(["-c", CHILD_ACCEPT, &inherited.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // SAFETY: the duplicate is ours, closed once.
        unsafe { libc::close(inherited) };
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        // Let it reach accept (or fail at it) before anyone connects.
        thread::sleep(WAIT);
        // One connection at a time until both acceptors are done.
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut clients = Vec::new();
        while !(child.try_wait().unwrap().is_some() && party.is_finished())
            && Instant::now() < deadline
        {
            clients.push(TcpStream::connect(addr).unwrap());
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().unwrap();
        Inherited {
            child: lines.next().map_or("no answer".into(), Result::unwrap),
            party: party.join(),
        }
    });
    assert_eq!(
        got,
        Inherited {
            child: "accepted".into(),
            party: Ok(()),
        }
    );
}

// ---------------------------------- F_SETFL/FIONBIO racing a hold's release

/// Accepts connection after connection on the case's side, each coming a
/// little later, while two plain threads keep asking, with `set_blocking`,
/// for the listener to be blocking; after each accept, with the setters
/// stopped, the listener must be blocking. Returns whether it ever was not
/// at rest.
/// (Two setters, because a setter delayed between its look at the hold and
/// its system call is what loses the race; with one, about one round in a
/// thousand does here, with two, about one in twenty.)
fn blocking_mode_set_during_accepts(set_blocking: fn(RawFd)) -> AtRest {
    const BUDGET: Duration = Duration::from_millis(1500);
    const SETTERS: usize = 2;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    let start = Instant::now();
    while start.elapsed() < BUDGET {
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let setters: Vec<_> = (0..SETTERS)
            .map(|_| {
                let (stop, calls) = (stop.clone(), calls.clone());
                thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        set_blocking(fd);
                        calls.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        // The accept must start while the setters are busy, and wait a
        // little, so that its hold's release lands among their calls.
        while calls.load(Ordering::SeqCst) < SETTERS {
            coroutines::yield_now();
        }
        let client = after(Duration::from_micros(300), move || {
            TcpStream::connect(addr).unwrap()
        });
        listener.accept().unwrap();
        stop.store(true, Ordering::SeqCst);
        setters.into_iter().for_each(|s| s.join().unwrap());
        drop(client.join().unwrap());
        if kernel_flags(fd) & libc::O_NONBLOCK != 0 {
            return AtRest { nonblocking: true };
        }
    }
    AtRest { nonblocking: false }
}

/// The listener's mode between calls.
#[derive(Debug, PartialEq)]
struct AtRest {
    nonblocking: bool,
}

#[test]
fn fionbio_racing_an_accept_leaves_the_listener_blocking() {
    let at_rest = differential("FIONBIO(0) during accepts", |_| {
        blocking_mode_set_during_accepts(|fd| {
            let off: libc::c_int = 0;
            // SAFETY: FIONBIO takes a pointer to an int.
            unsafe { libc::ioctl(fd, libc::FIONBIO, &off) };
        })
    });
    assert_eq!(at_rest, AtRest { nonblocking: false });
}

#[test]
fn f_setfl_racing_an_accept_leaves_the_listener_blocking() {
    let at_rest = differential("F_SETFL without O_NONBLOCK during accepts", |_| {
        blocking_mode_set_during_accepts(|fd| {
            let wanted = flags(fd) & !libc::O_NONBLOCK;
            // SAFETY: F_SETFL with status flags.
            unsafe { libc::fcntl(fd, libc::F_SETFL, wanted) };
        })
    });
    assert_eq!(at_rest, AtRest { nonblocking: false });
}

// ----------------------------------------- item 6: unix connect, full queue

/// A name in the abstract unix namespace, unique in this run.
fn abstract_address() -> net::SocketAddr {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "coroutines-differential-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    net::SocketAddr::from_abstract_name(name).unwrap()
}

#[test]
fn unix_connect_to_a_full_backlog_waits_for_the_server() {
    let got = differential("unix connect to a full backlog", |side| {
        let companion = Companion::start(side);
        let addr = abstract_address();
        let listener = UnixListener::bind_addr(&addr).unwrap();
        // Backlog 0: one queued connection fills it.
        // SAFETY: listen again on a listening socket, to shrink its queue.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        let queued = UnixStream::connect_addr(&addr).unwrap();
        // Taking the queued connection makes room for the next.
        let server = after(WAIT, move || {
            let first = listener.accept().unwrap();
            (listener, first)
        });
        let ((got, timing), others_kept_running) =
            companion.during(|| timed(|| outcome(UnixStream::connect_addr(&addr).map(drop))));
        drop((server.join().unwrap(), queued));
        (got, timing, others_kept_running)
    });
    assert_eq!(got, (Ok(()), Timing::Waited, true));
}

// ------------------------------------------------ item 8: accept on UDP

#[test]
fn accept_on_a_udp_socket_fails_at_once() {
    let got = differential("accept on UDP", |_| {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = socket.local_addr().unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        // A datagram releases an accept that waits for readability.
        let rescue = Rescue::arm(move || drop(sender.send_to(b"x", to)));
        // SAFETY: accept without an address.
        let got = timed(|| {
            c_outcome(unsafe {
                libc::accept(
                    socket.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            })
        });
        (got, rescue.disarm())
    });
    assert_eq!(got, ((Err(Errno(libc::EOPNOTSUPP)), Timing::AtOnce), false));
}

/// An accepted socket inherits the listener's receive timeout, and its
/// mode comes from `accept4`'s flags: a read on it times out, or with
/// `SOCK_NONBLOCK` fails at once, as on a thread.
#[test]
fn accepted_sockets_inherit_the_listeners_timeout_and_take_accept4s_mode() {
    let got = differential("accepted sockets' timeouts and mode", |_| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Longer than the first accept waits for its connection.
        set_timeout_opt(listener.as_raw_fd(), libc::SO_RCVTIMEO, 3 * WAIT);
        // A first accept waits (and lets a coroutine learn the listener).
        let (first, _) = accept_late_connection(&listener, addr);
        let read_from = |flags| {
            let client = TcpStream::connect(addr).unwrap();
            // SAFETY: accept4 without an address.
            let fd = unsafe {
                libc::accept4(
                    listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    flags,
                )
            };
            assert!(fd >= 0, "accept4: {}", std::io::Error::last_os_error());
            let mut byte = 0u8;
            // SAFETY: reads one byte into a live buffer.
            let got = timed(|| {
                c_outcome(unsafe { libc::read(fd, (&mut byte as *mut u8).cast(), 1) } as i64)
            });
            // SAFETY: the descriptor accept4 made above.
            unsafe { libc::close(fd) };
            drop(client);
            got
        };
        (first, read_from(0), read_from(libc::SOCK_NONBLOCK))
    });
    let again = Err(Errno(libc::EAGAIN));
    assert_eq!(
        got,
        (Ok(()), (again, Timing::Waited), (again, Timing::AtOnce))
    );
}

// ------------------------------- connects, and acceptors on two workers

/// What two connects on one socket returned.
#[derive(Debug, PartialEq)]
struct Connects {
    non_blocking: Result<(), Errno>,
    blocking: Result<(), Errno>,
    /// The blocking one waited for the kernel's SYN retransmit (about a
    /// second), not just for the server's accept.
    waited_for_the_retransmit: bool,
}

/// A blocking connect on a socket whose non-blocking connect is still in
/// progress (its SYN dropped by a full listener) waits for it, and
/// succeeds once the server makes room.
#[test]
fn blocking_connect_waits_for_a_connect_in_progress() {
    let got = differential("blocking connect, connect in progress", |_| {
        let (listener, queued) = full_listener();
        let addr = listener.local_addr().unwrap();
        let socket = raw_tcp_socket();
        let blocking = flags(socket);
        // SAFETY: F_SETFL on a socket this case owns.
        unsafe { libc::fcntl(socket, libc::F_SETFL, blocking | libc::O_NONBLOCK) };
        let non_blocking = outcome(raw_connect(socket, addr));
        // SAFETY: as above.
        unsafe { libc::fcntl(socket, libc::F_SETFL, blocking) };
        let (release, released) = std::sync::mpsc::channel::<()>();
        let server = after(WAIT, move || {
            let first = listener.accept().unwrap();
            let _ = released.recv();
            (listener, first)
        });
        let start = Instant::now();
        let blocking = outcome(raw_connect(socket, addr));
        let waited_for_the_retransmit = start.elapsed() > Duration::from_millis(200);
        let _ = release.send(());
        drop((server.join().unwrap(), queued));
        // SAFETY: the socket is ours.
        unsafe { libc::close(socket) };
        Connects {
            non_blocking,
            blocking,
            waited_for_the_retransmit,
        }
    });
    assert_eq!(
        got,
        Connects {
            non_blocking: Err(Errno(libc::EINPROGRESS)),
            blocking: Ok(()),
            waited_for_the_retransmit: true,
        }
    );
}

/// What acceptors racing on one listener saw.
#[derive(Debug, PartialEq)]
struct Raced {
    all_accepted: bool,
    thread_errors: usize,
    party_errors: usize,
    /// A plain thread's `F_GETFL` showed O_NONBLOCK at some moment.
    thread_saw_nonblock: bool,
    /// The kernel has the listener non-blocking at the end.
    left_nonblocking: bool,
}

/// Six parties (on two workers, in a coroutine) and two plain threads
/// accept 600 connections on one blocking listener while another thread
/// watches its flags: every connection is accepted, no accept fails, and
/// the listener never looks non-blocking.
#[test]
fn acceptors_on_two_workers_and_threads_share_a_blocking_listener() {
    const CONNECTIONS: usize = 600;
    let got = differential_on(2, "acceptors racing on two workers", |side| {
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = |errors: Arc<AtomicUsize>| {
            let (listener, accepted, stop) = (listener.clone(), accepted.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok(_) => drop(accepted.fetch_add(1, Ordering::Relaxed)),
                        Err(_) => drop(errors.fetch_add(1, Ordering::Relaxed)),
                    }
                }
            }
        };
        let (party_errors, thread_errors) = (Arc::default(), Arc::default());
        let parties: Vec<_> = (0..6)
            .map(|_| side.spawn(acceptor(Arc::clone(&party_errors))))
            .collect();
        let threads: Vec<_> = (0..2)
            .map(|_| thread::spawn(acceptor(Arc::clone(&thread_errors))))
            .collect();
        let watcher = {
            let (listener, stop) = (listener.clone(), stop.clone());
            thread::spawn(move || {
                let mut saw = false;
                while !stop.load(Ordering::Relaxed) {
                    saw |= flags(listener.as_raw_fd()) & libc::O_NONBLOCK != 0;
                }
                saw
            })
        };
        let clients: Vec<_> = (0..4)
            .map(|_| {
                thread::spawn(move || {
                    for _ in 0..CONNECTIONS / 4 {
                        drop(TcpStream::connect(addr).unwrap());
                        thread::sleep(Duration::from_micros(200));
                    }
                })
            })
            .collect();
        for client in clients {
            client.join().unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while accepted.load(Ordering::Relaxed) < CONNECTIONS && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let all_accepted = accepted.load(Ordering::Relaxed) == CONNECTIONS;
        stop.store(true, Ordering::Relaxed);
        // One more connection for each acceptor still blocked.
        while !(parties.iter().all(Party::is_finished) && threads.iter().all(|t| t.is_finished())) {
            drop(TcpStream::connect(addr));
            thread::sleep(Duration::from_millis(1));
        }
        parties.into_iter().for_each(Party::join);
        threads.into_iter().for_each(|t| t.join().unwrap());
        Raced {
            all_accepted,
            thread_errors: thread_errors.load(Ordering::Relaxed),
            party_errors: party_errors.load(Ordering::Relaxed),
            thread_saw_nonblock: watcher.join().unwrap(),
            left_nonblocking: kernel_flags(listener.as_raw_fd()) & libc::O_NONBLOCK != 0,
        }
    });
    assert_eq!(
        got,
        Raced {
            all_accepted: true,
            thread_errors: 0,
            party_errors: 0,
            thread_saw_nonblock: false,
            left_nonblocking: false,
        }
    );
}
