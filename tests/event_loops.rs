//! Event loops inside coroutines: `epoll_wait`, `epoll_pwait`,
//! `epoll_pwait2`, `ppoll` and `pselect` park the coroutine until a
//! descriptor is ready or the timeout passes, and report what the same
//! calls report on a plain thread (the differential shape, see
//! `support::differential`); tokio runtimes run inside coroutines, side by
//! side on one worker.

mod support;

use std::io::{PipeReader, PipeWriter, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use support::differential::{differential, timed, Errno, Side, Timing};
use support::*;

/// The calls under test.
#[derive(Clone, Copy, Debug)]
enum Api {
    EpollWait,
    EpollPwait,
    EpollPwait2,
    Ppoll,
    Pselect,
}

const APIS: [Api; 5] = [
    Api::EpollWait,
    Api::EpollPwait,
    Api::EpollPwait2,
    Api::Ppoll,
    Api::Pselect,
];

/// What one wait reported: the indices of the ready descriptors with their
/// events (`epoll`/`poll` bits; 1 for "readable" from `pselect`), or the
/// error.
type Ready = Result<Vec<(usize, u32)>, Errno>;

/// `n` pipes: their read ends and write ends.
fn pipes(n: usize) -> (Vec<PipeReader>, Vec<PipeWriter>) {
    (0..n).map(|_| std::io::pipe().unwrap()).unzip()
}

fn raw_fds(readers: &[PipeReader]) -> Vec<RawFd> {
    readers.iter().map(AsRawFd::as_raw_fd).collect()
}

/// The result of a C call: `ret`, or the errno if it is -1.
fn checked(ret: libc::c_int) -> Result<usize, Errno> {
    match ret {
        -1 => Err(Errno(errno())),
        n => Ok(n as usize),
    }
}

/// Waits with `api` for any of `fds` to become readable, up to `timeout`
/// (`None`: for ever). The `p` variants take `mask` (`None`: the thread's
/// mask); `EpollWait` ignores it.
fn wait_on(
    api: Api,
    fds: &[RawFd],
    timeout: Option<Duration>,
    mask: Option<&libc::sigset_t>,
) -> Ready {
    let mask = mask.map_or(std::ptr::null(), |m| m as *const libc::sigset_t);
    let millis = timeout.map_or(-1, |t| t.as_millis() as libc::c_int);
    let ts = timeout.map(timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    match api {
        Api::EpollWait | Api::EpollPwait | Api::EpollPwait2 => {
            // SAFETY: plain epoll calls on a new instance and live buffers.
            unsafe {
                let epfd = libc::epoll_create1(libc::EPOLL_CLOEXEC);
                assert!(epfd >= 0);
                for (i, &fd) in fds.iter().enumerate() {
                    let mut event = libc::epoll_event {
                        events: libc::EPOLLIN as u32,
                        u64: i as u64,
                    };
                    assert_eq!(
                        libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut event),
                        0
                    );
                }
                let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; fds.len()];
                let (buf, max) = (events.as_mut_ptr(), fds.len() as libc::c_int);
                let ret = match api {
                    Api::EpollWait => libc::epoll_wait(epfd, buf, max, millis),
                    Api::EpollPwait => libc::epoll_pwait(epfd, buf, max, millis, mask),
                    _ => libc::epoll_pwait2(epfd, buf, max, ts_ptr, mask),
                };
                let result = checked(ret);
                libc::close(epfd);
                let mut ready: Vec<_> = events[..result?]
                    .iter()
                    .map(|e| (e.u64 as usize, e.events))
                    .collect();
                ready.sort();
                Ok(ready)
            }
        }
        Api::Ppoll => {
            let mut pollfds: Vec<_> = fds
                .iter()
                .map(|&fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: a live array of `fds.len()` pollfds.
            let ret = unsafe {
                libc::ppoll(
                    pollfds.as_mut_ptr(),
                    pollfds.len() as libc::nfds_t,
                    ts_ptr,
                    mask,
                )
            };
            checked(ret)?;
            Ok(pollfds
                .iter()
                .enumerate()
                .filter(|(_, p)| p.revents != 0)
                .map(|(i, p)| (i, p.revents as u32))
                .collect())
        }
        Api::Pselect => {
            // SAFETY: an fd_set is plain data, filled by FD_ZERO/FD_SET.
            let mut set: libc::fd_set = unsafe { std::mem::zeroed() };
            for &fd in fds {
                // SAFETY: the test's descriptors are below FD_SETSIZE.
                unsafe { libc::FD_SET(fd, &mut set) };
            }
            let nfds = fds.iter().max().unwrap() + 1;
            let null = std::ptr::null_mut();
            // SAFETY: a live fd_set and timespec, or null.
            let ret = unsafe { libc::pselect(nfds, &mut set, null, null, ts_ptr, mask) };
            checked(ret)?;
            Ok(fds
                .iter()
                .enumerate()
                // SAFETY: as above.
                .filter(|(_, &fd)| unsafe { libc::FD_ISSET(fd, &set) })
                .map(|(i, _)| (i, 1))
                .collect())
        }
    }
}

/// What readability of a pipe with data looks like to `api`.
fn readable(api: Api) -> u32 {
    match api {
        Api::Ppoll => libc::POLLIN as u32,
        Api::Pselect => 1,
        _ => libc::EPOLLIN as u32,
    }
}

/// What a pipe whose writer closed looks like to `api`.
fn hung_up(api: Api) -> u32 {
    match api {
        Api::Ppoll => libc::POLLHUP as u32,
        Api::Pselect => 1,
        _ => libc::EPOLLHUP as u32,
    }
}

/// What the peer does to the middle one of three pipes, after 200 ms.
#[derive(Clone, Copy)]
enum Peer {
    Writes,
    HangsUp,
}

/// Runs `f` while a party of the case's kind sets a flag after 20 ms;
/// returns `f`'s value and whether the flag was set when `f` returned. On
/// a thread it always is (for calls of 100 ms or more); in a coroutine,
/// only if the call parked, leaving the worker free for the party.
fn party_ran_meanwhile<T>(side: Side, f: impl FnOnce() -> T) -> (T, bool) {
    let flag = Arc::new(AtomicBool::new(false));
    let party = {
        let flag = flag.clone();
        side.spawn(move || {
            thread::sleep(Duration::from_millis(20));
            flag.store(true, Ordering::SeqCst);
        })
    };
    let value = f();
    let ran = flag.load(Ordering::SeqCst);
    party.join();
    (value, ran)
}

/// Waits (for ever) on three pipes while a party of the case's kind acts
/// on the middle one after 200 ms (in a coroutine, a party that runs only
/// if the wait parks); returns what the wait reported and how long it
/// took.
fn wait_for_peer(side: Side, api: Api, peer: Peer) -> (Ready, Timing) {
    let (readers, mut writers) = pipes(3);
    let mut middle = writers.remove(1);
    let party = side.spawn(move || {
        thread::sleep(Duration::from_millis(200));
        match peer {
            // Kept open until the wait has returned: a coroutine beside a
            // coroutine runs to its end before the waiter runs again.
            Peer::Writes => middle.write_all(b"x").map(|()| middle).ok(),
            Peer::HangsUp => None,
        }
    });
    let (ready, timing) = timed(|| wait_on(api, &raw_fds(&readers), None, None));
    party.join();
    (ready, timing)
}

/// Each call parks until a peer (a coroutine beside a coroutine) writes to
/// one of its descriptors, and reports just that one, as on a thread.
#[test]
fn waits_park_until_a_peer_writes() {
    for api in APIS {
        let result = differential(&format!("{api:?} until a write"), move |side| {
            wait_for_peer(side, api, Peer::Writes)
        });
        assert_eq!(
            result,
            (Ok(vec![(1, readable(api))]), Timing::Waited),
            "{api:?}"
        );
    }
}

/// The same when the peer closes its end: the kernel's hang-up report.
#[test]
fn waits_park_until_a_peer_hangs_up() {
    for api in APIS {
        let result = differential(&format!("{api:?} until a hang-up"), move |side| {
            wait_for_peer(side, api, Peer::HangsUp)
        });
        assert_eq!(
            result,
            (Ok(vec![(1, hung_up(api))]), Timing::Waited),
            "{api:?}"
        );
    }
}

/// What the timeout cases saw: a zero timeout, a 100 ms timeout (and
/// whether it took about that long, and a party ran meanwhile), no
/// timeout with data ready, and a zero timeout with data ready.
type Timeouts = (
    (Ready, Timing),
    (Ready, bool, bool),
    (Ready, Timing),
    (Ready, Timing),
);

/// Timeouts behave as on a thread: zero returns at once, 100 ms waits
/// about 100 ms, and with data ready no timeout (or zero) returns the
/// ready ones at once.
#[test]
fn timeouts_behave_as_on_a_thread() {
    for api in APIS {
        let result: Timeouts = differential(&format!("{api:?} timeouts"), move |side| {
            let (readers, mut writers) = pipes(3);
            let fds = raw_fds(&readers);
            let zero = timed(|| wait_on(api, &fds, Some(Duration::ZERO), None));
            let start = Instant::now();
            let (hundred, party_ran) = party_ran_meanwhile(side, || {
                wait_on(api, &fds, Some(Duration::from_millis(100)), None)
            });
            let elapsed = start.elapsed();
            let about =
                elapsed >= Duration::from_millis(99) && elapsed < Duration::from_millis(450);
            writers[0].write_all(b"x").unwrap();
            writers[2].write_all(b"x").unwrap();
            let forever = timed(|| wait_on(api, &fds, None, None));
            let zero_with_data = timed(|| wait_on(api, &fds, Some(Duration::ZERO), None));
            (zero, (hundred, about, party_ran), forever, zero_with_data)
        });
        let both = Ok(vec![(0, readable(api)), (2, readable(api))]);
        assert_eq!(
            result,
            (
                (Ok(vec![]), Timing::AtOnce),
                (Ok(vec![]), true, true),
                (both.clone(), Timing::AtOnce),
                (both, Timing::AtOnce),
            ),
            "{api:?}"
        );
    }
}

/// The signal tests install a SIGUSR2 handler and raise the signal: they
/// take turns.
static SIGNALS: Mutex<()> = Mutex::new(());

fn signals() -> MutexGuard<'static, ()> {
    SIGNALS.lock().unwrap_or_else(|e| e.into_inner())
}

static HANDLED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_signal(_: libc::c_int) {
    HANDLED.store(true, Ordering::SeqCst);
}

/// What a `p` call did with a pending signal: its result, how long it
/// took, whether the handler ran before the thread's mask was restored,
/// and whether it had run after.
type Masked = (Ready, Timing, bool, bool);

/// With SIGUSR2 blocked in the thread's mask and pending on the calling
/// OS thread, waits 300 ms on an empty pipe with `api`, under a mask that
/// unblocks SIGUSR2 or keeps it blocked.
fn with_pending_signal(api: Api, call_unblocks: bool) -> Masked {
    // SAFETY: an all-zero sigaction is valid; the handler only stores.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = note_signal as *const () as libc::sighandler_t;
        assert_eq!(
            libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut()),
            0
        );
    }
    let (readers, _writers) = pipes(1);
    let blocked = sigset(true);
    let mut old = sigset(false);
    // SAFETY: live signal sets; the signal goes to this OS thread, where
    // the call below runs (nothing parks in between).
    unsafe {
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &blocked, &mut old),
            0
        );
        HANDLED.store(false, Ordering::SeqCst);
        let tid = libc::syscall(libc::SYS_gettid);
        assert_eq!(
            libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR2),
            0
        );
    }
    let call_mask = sigset(!call_unblocks);
    let (ready, timing) = timed(|| {
        wait_on(
            api,
            &raw_fds(&readers),
            Some(Duration::from_millis(300)),
            Some(&call_mask),
        )
    });
    let during = HANDLED.load(Ordering::SeqCst);
    // SAFETY: restores the mask saved above; a pending SIGUSR2 arrives now.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    (ready, timing, during, HANDLED.load(Ordering::SeqCst))
}

/// A pending signal that the call's mask unblocks interrupts the call at
/// once with EINTR, its handler run, as on a thread.
fn unblocking_mask_interrupts(api: Api) {
    let _signals = signals();
    let result = differential(&format!("{api:?} unblocking a pending signal"), move |_| {
        with_pending_signal(api, true)
    });
    assert_eq!(
        result,
        (Err(Errno(libc::EINTR)), Timing::AtOnce, true, true),
        "{api:?}"
    );
}

/// A pending signal that the call's mask keeps blocked stays pending: the
/// call times out, and the handler runs once the thread unblocks it, as on
/// a thread.
#[test]
fn blocking_mask_keeps_a_pending_signal_pending() {
    let _signals = signals();
    for api in [Api::EpollPwait, Api::EpollPwait2, Api::Ppoll, Api::Pselect] {
        let result = differential(&format!("{api:?} keeping a signal blocked"), move |_| {
            with_pending_signal(api, false)
        });
        assert_eq!(result, (Ok(vec![]), Timing::Waited, false, true), "{api:?}");
    }
}

/// `epoll_pwait` whose mask unblocks a pending signal fails with EINTR at once.
#[test]
fn epoll_pwait_mask_unblocking_a_pending_signal_interrupts() {
    unblocking_mask_interrupts(Api::EpollPwait);
}

/// `epoll_pwait2` whose mask unblocks a pending signal fails with EINTR at once.
#[test]
fn epoll_pwait2_mask_unblocking_a_pending_signal_interrupts() {
    unblocking_mask_interrupts(Api::EpollPwait2);
}

/// `ppoll` whose mask unblocks a pending signal fails with EINTR at once.
#[test]
fn ppoll_mask_unblocking_a_pending_signal_interrupts() {
    unblocking_mask_interrupts(Api::Ppoll);
}

/// `pselect` whose mask unblocks a pending signal fails with EINTR at once.
#[test]
fn pselect_mask_unblocking_a_pending_signal_interrupts() {
    unblocking_mask_interrupts(Api::Pselect);
}

/// A one-worker runtime whose coroutines have stacks large enough for
/// tokio's futures in a debug build.
fn tokio_sized() -> coroutines::runtime::Builder {
    coroutines::Runtime::builder()
        .workers(1)
        .stack_size(4 << 20)
}

/// A tokio current-thread runtime with its I/O and time drivers.
fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Echoes one connection of `listener` after `delay`, then returns.
async fn echo_once(listener: tokio::net::TcpListener, delay: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).await.unwrap();
    tokio::time::sleep(delay).await;
    stream.write_all(&buf[..n]).await.unwrap();
}

/// Sends `message` to `address` and returns the reply.
async fn ask(address: std::net::SocketAddr, message: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(message).await.unwrap();
    let mut reply = vec![0u8; message.len()];
    stream.read_exact(&mut reply).await.unwrap();
    reply
}

/// A tokio runtime in a coroutine: a TCP echo with a delayed answer and a
/// `tokio::time::sleep` both wait in `epoll_wait`, which parks, so the
/// ticker beside it keeps ticking.
#[test]
fn tokio_runtime_in_a_coroutine_beside_the_ticker() {
    watchdog_on("tokio beside the ticker", WATCHDOG, tokio_sized(), || {
        let ticker = Ticker::start();
        let runtime = tokio_runtime();
        let (reply, elapsed, ticks) = ticker.during(|| {
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                    .await
                    .unwrap();
                let address = listener.local_addr().unwrap();
                let server = tokio::spawn(echo_once(listener, WAIT));
                let reply = ask(address, b"hello").await;
                server.await.unwrap();
                reply
            })
        });
        assert_eq!(reply, b"hello");
        assert_parked("tokio TCP echo", elapsed, ticks);

        let (_, elapsed, ticks) = ticker.during(|| {
            runtime.block_on(async { tokio::time::sleep(Duration::from_millis(200)).await })
        });
        assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
        assert_ticked(ticks);
    });
}

/// Two tokio runtimes in two coroutines of one worker run at once: one
/// serves, the other asks (so a runtime that blocked the worker in
/// `epoll_wait` would never get its answer), and their 300 ms sleeps
/// overlap.
#[test]
fn two_tokio_runtimes_on_one_worker() {
    let elapsed = watchdog_on("two tokio runtimes", WATCHDOG, tokio_sized(), || {
        let ticker = Ticker::start();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let ((), elapsed, ticks) = ticker.during(|| {
            let server = coroutines::spawn(move || {
                tokio_runtime().block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let sleep = tokio::time::sleep(Duration::from_millis(300));
                    tokio::join!(echo_once(listener, Duration::ZERO), sleep);
                })
            });
            let client = coroutines::spawn(move || {
                tokio_runtime().block_on(async move {
                    let sleep = tokio::time::sleep(Duration::from_millis(300));
                    tokio::join!(ask(address, b"ping"), sleep).0
                })
            });
            assert_eq!(client.join().unwrap(), b"ping");
            server.join().unwrap();
        });
        assert_ticked(ticks);
        elapsed
    });
    // One after the other: 600 ms at least.
    assert!(elapsed < Duration::from_millis(550), "{elapsed:?}");
}
