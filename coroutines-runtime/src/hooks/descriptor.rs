//! What the hooks know of a descriptor, in one place the driver asks: the
//! kind of file it names, what the user set on it (non-blocking mode,
//! socket timeouts, the receive low-water mark), and the runtime's own
//! O_NONBLOCK holds.
//!
//! Modes and timeouts belong to the open file description (or the socket),
//! which duplicates (`try_clone`), children and other processes share, so
//! a record keyed by fd number cannot know them: the hooks ask the kernel,
//! and only when it matters, right before a coroutine would park. The
//! answers are cached per descriptor until any hook sees a setting change in
//! the process (`F_SETFL`, `FIONBIO`, `SO_RCVTIMEO`, `SO_SNDTIMEO`,
//! `SO_RCVLOWAT`); a change made by another process sharing the description
//! is seen after the next such change here.
//!
//! # Holds
//! `accept`, `connect`, and `splice` on a socket have no per-call
//! non-blocking flag. For one attempt, the runtime sets O_NONBLOCK on the
//! description itself, makes the call, and puts the user's flags back: the
//! description is non-blocking only while the runtime is inside a system
//! call on it, never while a coroutine waits. Concurrent attempts on one
//! description (through clones, from several workers) share one hold,
//! counted per description (device and inode). Meanwhile `F_GETFL` hides
//! the flag, `F_SETFL` and `FIONBIO` change what will be put back, a
//! `FIOASYNC` waits for the holds' lock, closing or replacing the number
//! waits for the attempt, and a plain thread's `accept` that an attempt
//! made fail with EAGAIN waits and tries again. A hold sets and a release
//! clears only the flag (`FIONBIO`), so that a raw F_SETFL made meanwhile
//! stays. Other processes sharing the description can see it non-blocking
//! for the microseconds an attempt takes, and so can a plain thread's call
//! on a socket that a coroutine splices (see `hooks::relay`).

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use libc::c_int;

use crate::coroutine::switch;
use crate::reactor::fd_table::{FdEntry, Interest};
use crate::sync::{FairSpinGuard, FairSpinLock};
use crate::sys::{self, syscall};

/// What a descriptor names, as far as blocking calls are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// Regular files, block devices and directories: calls never "would
    /// block" and epoll refuses them, so they pass through, exactly as on a
    /// thread (a per-call flag would turn uncached reads short).
    File = 1,
    /// Pipes and FIFOs: byte streams; `RWF_NOWAIT` makes one call
    /// non-blocking.
    Pipe,
    /// TCP: a byte stream whose short read means nothing is left, unless
    /// urgent data stopped it (see `FdEntry::drained`).
    Tcp,
    /// Unix byte streams: a read may stop early at a boundary (passed
    /// descriptors, credentials) with more queued.
    UnixStream,
    /// Other byte-stream sockets (MPTCP, ...).
    StreamSocket,
    /// Connection-oriented sockets that carry whole messages.
    SeqPacket,
    /// Connectionless sockets of other domains (UDP, ...).
    Datagram,
    /// Anything else (ttys, eventfds, devices): whether `RWF_NOWAIT` works
    /// is learned at the first call.
    Device,
    /// A [`Kind::Device`] on which `RWF_NOWAIT` works.
    DeviceNowait,
    /// A [`Kind::Device`] on which it does not (ttys): wait for readiness,
    /// then make the call as the user made it.
    DeviceWaitFirst,
    /// Epoll refuses it: calls pass through and block the worker as they
    /// would block a thread.
    Unpollable,
    /// Unix datagram sockets: a send waits for room in the receiver's
    /// queue (see [`Kind::sends_wait_for_other_queues`]).
    UnixDatagram,
    /// A [`Kind::Pipe`] on which `RWF_NOWAIT` does not work: a FIFO opened
    /// by name, or a pipe end that was spliced (recent kernels, 6.18 here,
    /// take the ability from a pipe file once `splice`, `tee` or
    /// `vmsplice` used it). Reads and writes are made as a [`Kind::DeviceWaitFirst`]'s;
    /// `splice` still keeps it from blocking with its per-call flag.
    PipeWaitFirst,
}

impl Kind {
    const ALL: [Kind; 13] = [
        Kind::File,
        Kind::Pipe,
        Kind::Tcp,
        Kind::UnixStream,
        Kind::StreamSocket,
        Kind::SeqPacket,
        Kind::Datagram,
        Kind::Device,
        Kind::DeviceNowait,
        Kind::DeviceWaitFirst,
        Kind::Unpollable,
        Kind::UnixDatagram,
        Kind::PipeWaitFirst,
    ];

    fn from_u32(value: u32) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| *kind as u32 == value)
    }

    /// Calls pass through: nothing to wait for, or no way to.
    pub(crate) fn passes_through(self) -> bool {
        matches!(self, Kind::File | Kind::Unpollable)
    }

    /// A byte stream: a blocking write sends everything, a blocking read
    /// waits for its low-water mark (see `hooks::transfer`).
    pub(crate) fn is_stream(self) -> bool {
        matches!(
            self,
            Kind::Pipe | Kind::PipeWaitFirst | Kind::Tcp | Kind::UnixStream | Kind::StreamSocket
        )
    }

    /// A pipe or FIFO, whatever `RWF_NOWAIT` does on it.
    pub(crate) fn is_pipe(self) -> bool {
        matches!(self, Kind::Pipe | Kind::PipeWaitFirst)
    }

    /// No per-call flag keeps its reads and writes from blocking: they wait
    /// for readiness, then are made as the user made them, on a helper
    /// thread.
    pub(crate) fn waits_first(self) -> bool {
        matches!(self, Kind::DeviceWaitFirst | Kind::PipeWaitFirst)
    }

    /// A shutdown that ends a blocked write (the peer's `SHUT_RD`, or ours
    /// through another descriptor) wakes a thread but raises no readiness
    /// event: Unix stream and seqpacket sockets (and, to be safe, stream
    /// sockets of other protocols).
    pub(crate) fn hides_write_shutdown(self) -> bool {
        matches!(
            self,
            Kind::UnixStream | Kind::StreamSocket | Kind::SeqPacket
        )
    }

    pub(crate) fn is_socket(self) -> bool {
        matches!(
            self,
            Kind::Tcp
                | Kind::UnixStream
                | Kind::StreamSocket
                | Kind::SeqPacket
                | Kind::Datagram
                | Kind::UnixDatagram
        )
    }

    /// A send may wait for room in a queue the sender's readiness does not
    /// show. A Unix datagram send waits while the receiver's queue is full
    /// (`net.unix.max_dgram_qlen`), which the sender's poll reflects only
    /// if it is connected to that receiver and sends to it; otherwise a
    /// refused send even makes its own edge, as it frees the buffer it
    /// took and so wakes the sender's writers. (A seqpacket connection's
    /// peer is connected back: its sends wait for the sender's buffer
    /// alone, which readiness shows.)
    pub(crate) fn sends_wait_for_other_queues(self) -> bool {
        self == Kind::UnixDatagram
    }

    /// A byte stream whose reads stop at messages that carry descriptors or
    /// credentials.
    pub(crate) fn ends_at_messages(self) -> bool {
        self == Kind::UnixStream
    }

    /// A stream socket whose send checks the shutdown before the socket's
    /// error when it starts, but the error first once under way (each part
    /// it sends, and each wait for room, first takes a pending error), and
    /// fails without SIGPIPE once it has waited. TCP and MPTCP prefer the
    /// error throughout and raise SIGPIPE.
    pub(crate) fn sends_see_errors_late(self) -> bool {
        self == Kind::UnixStream
    }

    /// A socket that can listen, so `accept` may be attempted under a hold.
    pub(crate) fn accepts(self) -> bool {
        matches!(
            self,
            Kind::Tcp | Kind::UnixStream | Kind::StreamSocket | Kind::SeqPacket
        )
    }

    /// The kind of a socket from its domain, type and protocol.
    pub(crate) fn of_socket(domain: c_int, kind: c_int, protocol: c_int) -> Kind {
        let tcp_domain = domain == libc::AF_INET || domain == libc::AF_INET6;
        match kind & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) {
            libc::SOCK_STREAM if tcp_domain && matches!(protocol, 0 | libc::IPPROTO_TCP) => {
                Kind::Tcp
            }
            libc::SOCK_STREAM if domain == libc::AF_UNIX => Kind::UnixStream,
            libc::SOCK_STREAM => Kind::StreamSocket,
            libc::SOCK_SEQPACKET => Kind::SeqPacket,
            // Linux makes an AF_UNIX SOCK_RAW socket a datagram one.
            libc::SOCK_DGRAM | libc::SOCK_RAW if domain == libc::AF_UNIX => Kind::UnixDatagram,
            _ => Kind::Datagram,
        }
    }
}

/// The kind of file `fd` names, learned from the kernel once per
/// generation; `None` if `fd` is not open.
pub(crate) fn kind(fd: c_int, entry: &FdEntry, generation: u32) -> Option<Kind> {
    if let Some(kind) = entry.kind(generation).and_then(Kind::from_u32) {
        return Some(kind);
    }
    let kind = classify(fd)?;
    learn_kind(entry, generation, kind);
    Some(kind)
}

/// Records what was learned of the kind of the file of `generation`.
pub(crate) fn learn_kind(entry: &FdEntry, generation: u32, kind: Kind) {
    entry.set_kind(generation, kind as u32);
}

/// What `fd` is, asked of the kernel; `None` if it is not open.
pub(crate) fn classify(fd: c_int) -> Option<Kind> {
    let mode = stat(fd)?.st_mode & libc::S_IFMT;
    Some(match mode {
        libc::S_IFREG | libc::S_IFBLK | libc::S_IFDIR => Kind::File,
        libc::S_IFIFO => Kind::Pipe,
        libc::S_IFSOCK => {
            let option = |name| socket_option(fd, name).unwrap_or(0);
            Kind::of_socket(
                option(libc::SO_DOMAIN),
                option(libc::SO_TYPE),
                option(libc::SO_PROTOCOL),
            )
        }
        _ if !pollable(fd) => Kind::Unpollable,
        _ => Kind::Device,
    })
}

/// Whether epoll can watch `fd`. Devices it cannot (`/dev/zero`,
/// `/dev/urandom`) never wait, and an `RWF_NOWAIT` read of them may stop
/// short where the blocking read would not: their calls pass through.
///
/// The epoll instance is made for the question and closed after it: a
/// cached one would need a lock (a coroutine waiting for another to make it
/// would wait on a futex in its hook, and that wait's EAGAIN would be the
/// user's `errno`), and a program that closes descriptors it does not know
/// (daemonizing) would leave its number to some other file. Devices are
/// classified once per descriptor.
fn pollable(fd: c_int) -> bool {
    let probe = syscall!(libc::SYS_epoll_create1, libc::EPOLL_CLOEXEC) as c_int;
    let mut event = libc::epoll_event { events: 0, u64: 0 };
    let added = syscall!(
        libc::SYS_epoll_ctl,
        probe,
        libc::EPOLL_CTL_ADD,
        fd,
        &mut event as *mut libc::epoll_event
    );
    if probe >= 0 {
        // Closing the instance drops what was added to it.
        syscall!(libc::SYS_close, probe);
    }
    added != -(libc::EPERM as isize)
}

fn stat(fd: c_int) -> Option<libc::stat> {
    let mut stat = core::mem::MaybeUninit::<libc::stat>::uninit();
    if syscall!(libc::SYS_fstat, fd, stat.as_mut_ptr()) < 0 {
        return None;
    }
    // SAFETY: fstat succeeded, so it filled `stat`.
    Some(unsafe { stat.assume_init() })
}

fn socket_option(fd: c_int, name: c_int) -> Option<c_int> {
    int_option(fd, libc::SOL_SOCKET, name).ok()
}

/// Socket `fd`'s integer option `name` at `level`, or `-errno`.
pub(crate) fn int_option(fd: c_int, level: c_int, name: c_int) -> Result<c_int, isize> {
    let mut value: c_int = 0;
    let mut size = core::mem::size_of::<c_int>() as libc::socklen_t;
    let ret = syscall!(
        libc::SYS_getsockopt,
        fd,
        level,
        name,
        &mut value as *mut c_int,
        &mut size as *mut libc::socklen_t
    );
    match ret {
        0 => Ok(value),
        ret => Err(ret),
    }
}

/// A descriptor's cached facts, kept under its entry's lock; each is
/// tagged with what it was learned under.
#[derive(Default)]
pub(crate) struct Facts {
    /// The description's device and inode, and the generation.
    identity: Option<(u32, (u64, u64))>,
    /// The user's settings, and the generation and settings epoch.
    view: Option<(u64, View)>,
    /// A negative receive or send timeout was set (in the generation),
    /// which the kernel reads back as none.
    zero_timeout: Option<(u32, [bool; 2])>,
    /// The generation in which the user set `SO_LINGER` with a time: its
    /// last close waits for unsent data to go.
    lingers: Option<u32>,
}

/// Records whether the user made socket `fd` linger on close (`SO_LINGER`
/// on, with a time).
pub(crate) fn set_lingers(fd: c_int, lingers: bool) {
    let Some(entry) = crate::reactor::fd_table::FD_TABLE.get(fd) else {
        return;
    };
    let generation = entry.generation();
    entry.lock().facts.lingers = lingers.then_some(generation);
}

/// Whether the user made socket `fd` linger on close, through the hooks
/// (or its listener, which accepted it).
pub(crate) fn lingers(fd: c_int) -> bool {
    let Some(entry) = crate::reactor::fd_table::FD_TABLE.peek(fd) else {
        return false;
    };
    let generation = entry.generation();
    entry.lock().facts.lingers == Some(generation)
}

/// Records that the user set a negative (`zero`) timeout for `interest`
/// on `fd`, or a non-negative one.
pub(crate) fn set_zero_timeout(fd: c_int, interest: Interest, zero: bool) {
    let Some(entry) = crate::reactor::fd_table::FD_TABLE.get(fd) else {
        return;
    };
    let generation = entry.generation();
    let mut state = entry.lock();
    let mut flags = match state.facts.zero_timeout {
        Some((learned, flags)) if learned == generation => flags,
        _ => [false; 2],
    };
    flags[interest as usize] = zero;
    state.facts.zero_timeout = Some((generation, flags));
}

/// What the user set on a descriptor, as it bears on a blocking call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct View {
    /// O_NONBLOCK, as the user set it (never the runtime's).
    pub(crate) nonblocking: bool,
    /// `SO_RCVTIMEO` and `SO_SNDTIMEO`.
    pub(crate) recv_timeout: Option<Duration>,
    pub(crate) send_timeout: Option<Duration>,
    /// `SO_RCVLOWAT` of a stream socket; 1 for everything else.
    pub(crate) rcvlowat: usize,
}

impl View {
    pub(crate) fn timeout(&self, interest: Interest) -> Option<Duration> {
        match interest {
            Interest::Read => self.recv_timeout,
            Interest::Write => self.send_timeout,
        }
    }
}

/// Bumped whenever a hook sees the user change a setting anywhere in the
/// process; views from an older epoch are stale.
static SETTINGS_EPOCH: AtomicU64 = AtomicU64::new(1);

/// Invalidates every descriptor's cached view. Call after the change, so
/// that a concurrent refresh cannot cache the old value under the new
/// epoch.
pub(crate) fn settings_changed() {
    SETTINGS_EPOCH.fetch_add(1, Ordering::AcqRel);
}

/// What the user set on `fd` (of `kind`, in `generation`), cached until the
/// next setting change.
pub(crate) fn view(fd: c_int, entry: &FdEntry, generation: u32, kind: Kind) -> View {
    let key =
        (u64::from(generation) << 32) | (SETTINGS_EPOCH.load(Ordering::Acquire) as u32 as u64);
    if let Some((cached, view)) = entry.lock().facts.view {
        if cached == key {
            return view;
        }
    }
    let timeout = |name| kind.is_socket().then(|| socket_timeout(fd, name)).flatten();
    let rcvlowat = match kind.is_stream() && kind.is_socket() {
        true => socket_option(fd, libc::SO_RCVLOWAT).map_or(1, |n| n.max(1) as usize),
        false => 1,
    };
    let mut view = View {
        nonblocking: user_nonblocking(fd, entry, generation),
        recv_timeout: timeout(libc::SO_RCVTIMEO),
        send_timeout: timeout(libc::SO_SNDTIMEO),
        rcvlowat,
    };
    let mut state = entry.lock();
    if let Some((learned, [recv, send])) = state.facts.zero_timeout {
        if learned == generation {
            if recv {
                view.recv_timeout = Some(Duration::ZERO);
            }
            if send {
                view.send_timeout = Some(Duration::ZERO);
            }
        }
    }
    state.facts.view = Some((key, view));
    view
}

/// Seeds the view of TCP socket `fd`, which `accept4` with `flags` just
/// made from `listener`, without asking the kernel: its O_NONBLOCK comes
/// from `flags`, and Linux clones the listener's socket, timeouts and
/// low-water mark included, so a current view of the listener is the rest
/// of it. Other connections (a Unix one is made afresh, with default
/// options) learn their view from the kernel.
pub(crate) fn learn_accepted(fd: c_int, listener: c_int, flags: c_int) {
    use crate::reactor::fd_table::FD_TABLE;
    if crate::scheduler::in_forked_child() {
        return;
    }
    let (Some(from), Some(entry)) = (FD_TABLE.peek(listener), FD_TABLE.get(fd)) else {
        return;
    };
    if from.kind(from.generation()).and_then(Kind::from_u32) != Some(Kind::Tcp) {
        return;
    }
    let epoch = SETTINGS_EPOCH.load(Ordering::Acquire) as u32 as u64;
    let current = (u64::from(from.generation()) << 32) | epoch;
    let (view, zero_timeout, lingers) = {
        let state = from.lock();
        let listener_generation = from.generation();
        let zero = state
            .facts
            .zero_timeout
            .filter(|(learned, _)| *learned == listener_generation);
        let lingers = state.facts.lingers == Some(listener_generation);
        match state.facts.view {
            Some((key, view)) if key == current => (view, zero, lingers),
            _ => return,
        }
    };
    let generation = entry.generation();
    let view = View {
        nonblocking: flags & libc::SOCK_NONBLOCK != 0,
        ..view
    };
    let mut state = entry.lock();
    state.facts.view = Some(((u64::from(generation) << 32) | epoch, view));
    state.facts.zero_timeout = zero_timeout.map(|(_, zero)| (generation, zero));
    state.facts.lingers = lingers.then_some(generation);
}

/// `SO_RCVTIMEO` or `SO_SNDTIMEO` of socket `fd`, if set.
fn socket_timeout(fd: c_int, name: c_int) -> Option<Duration> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut size = core::mem::size_of::<libc::timeval>() as libc::socklen_t;
    let ret = syscall!(
        libc::SYS_getsockopt,
        fd,
        libc::SOL_SOCKET,
        name,
        &mut tv as *mut libc::timeval,
        &mut size as *mut libc::socklen_t
    );
    let timeout = Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    (ret == 0 && !timeout.is_zero()).then_some(timeout)
}

/// The description behind `fd` (device and inode), cached per generation:
/// accept asks for every attempt.
fn identity(fd: c_int, entry: &FdEntry, generation: u32) -> Option<(u64, u64)> {
    if let Some((learned, id)) = entry.lock().facts.identity {
        if learned == generation {
            return Some(id);
        }
    }
    let stat = stat(fd)?;
    let id = (stat.st_dev, stat.st_ino);
    entry.lock().facts.identity = Some((generation, id));
    Some(id)
}

/// A description the runtime holds in O_NONBLOCK.
struct Held {
    id: (u64, u64),
    /// Attempts in flight.
    holds: u32,
    /// The user's O_NONBLOCK: cleared at the last release unless set, and
    /// shown by `F_GETFL` meanwhile. The other flags stay the kernel's.
    user_nonblocking: c_int,
}

/// Fair: plain threads take it around every mode change, and one that
/// changes a mode in a loop must not keep a worker's release out.
static HELD: FairSpinLock<Vec<Held>> = FairSpinLock::new(Vec::new());
/// `HELD.len()`, readable without the lock: the common case is 0. Raised
/// before a hold sets the flag, lowered after it is put back.
static HELD_COUNT: AtomicUsize = AtomicUsize::new(0);
/// Holds started and ended, for [`Quiet`].
static HOLD_STARTS: AtomicU64 = AtomicU64::new(0);
static HOLD_ENDS: AtomicU64 = AtomicU64::new(0);

fn flags(fd: c_int) -> isize {
    syscall!(libc::SYS_fcntl, fd, libc::F_GETFL)
}

fn set_flags(fd: c_int, flags: c_int) -> isize {
    syscall!(libc::SYS_fcntl, fd, libc::F_SETFL, flags)
}

/// Sets or clears O_NONBLOCK alone (`FIONBIO`): one system call, which
/// leaves every other flag as it is at that instant, where `F_SETFL` would
/// write back a copy read earlier. Where a sandbox refuses `FIONBIO` and
/// allows `fcntl`, `F_SETFL`.
fn set_nonblocking(fd: c_int, on: bool) -> isize {
    let value = c_int::from(on);
    let ret = syscall!(libc::SYS_ioctl, fd, libc::FIONBIO, &value as *const c_int);
    if ret >= 0 || ret == -(libc::EBADF as isize) {
        return ret;
    }
    match flags(fd) {
        now if now < 0 => now,
        now if on => set_flags(fd, now as c_int | libc::O_NONBLOCK),
        now => set_flags(fd, now as c_int & !libc::O_NONBLOCK),
    }
}

/// Whether any hold could have overlapped a system call made between
/// [`Quiet::before`] and [`Quiet::still`].
struct Quiet {
    starts: u64,
    idle: bool,
}

impl Quiet {
    fn before() -> Quiet {
        // Ends first: a hold that ends between the two loads is counted as
        // still running, never the other way round.
        let ends = HOLD_ENDS.load(Ordering::SeqCst);
        let starts = HOLD_STARTS.load(Ordering::SeqCst);
        Quiet {
            starts,
            idle: starts == ends,
        }
    }

    /// No hold was running when `before` was taken, and none has started
    /// since.
    fn still(&self) -> bool {
        self.idle && HOLD_STARTS.load(Ordering::SeqCst) == self.starts
    }
}

/// Makes `attempt` with `fd`'s description held in O_NONBLOCK, and puts the
/// user's flags back after it. `None` if the number changed files since
/// `generation` (the caller tries again and the kernel has its say).
pub(crate) fn held(
    fd: c_int,
    entry: &FdEntry,
    generation: u32,
    attempt: impl FnOnce() -> isize,
) -> Option<isize> {
    let Some(id) = identity(fd, entry, generation) else {
        // Not open: the call fails by itself.
        return Some(attempt());
    };
    // Pairs with `exclude_holds`: either the closer sees this count and
    // waits, or this sees the close under way and backs off.
    entry.holding.fetch_add(1, Ordering::SeqCst);
    let closing = entry.closing.load(Ordering::SeqCst) == generation;
    if entry.generation() != generation || closing {
        entry.holding.fetch_sub(1, Ordering::SeqCst);
        if closing {
            wait_for_close(fd, entry, generation, id);
        }
        return None;
    }
    {
        let mut held = lock_held();
        HOLD_STARTS.fetch_add(1, Ordering::SeqCst);
        match held.iter_mut().find(|h| h.id == id) {
            Some(record) => record.holds += 1,
            None => {
                let current = flags(fd);
                let user_nonblocking = match current < 0 {
                    true => 0,
                    false => current as c_int & libc::O_NONBLOCK,
                };
                held.push(Held {
                    id,
                    holds: 1,
                    user_nonblocking,
                });
                HELD_COUNT.store(held.len(), Ordering::SeqCst);
                if current >= 0 && user_nonblocking == 0 {
                    set_nonblocking(fd, true);
                }
            }
        }
    }
    let ret = attempt();
    {
        let mut held = lock_held();
        if let Some(index) = held.iter().position(|h| h.id == id) {
            held[index].holds -= 1;
            if held[index].holds == 0 {
                let last = held.swap_remove(index);
                // Closing and replacing the number wait for `holding`, so
                // `fd` still names the description, except when a signal
                // handler closed it under this very attempt. A close waits
                // after starting its generation: asked of the kernel then.
                let same = entry.generation() == generation || identity_of(fd) == Some(id);
                if same && last.user_nonblocking == 0 {
                    // Only the hold's flag goes: the others may have been
                    // changed meanwhile by a raw F_SETFL.
                    set_nonblocking(fd, false);
                }
                HELD_COUNT.store(held.len(), Ordering::SeqCst);
            }
        }
        HOLD_ENDS.fetch_add(1, Ordering::SeqCst);
    }
    entry.holding.fetch_sub(1, Ordering::SeqCst);
    Some(ret)
}

/// Before the number of `entry` is closed or replaced, once its close
/// started `generation` (`FdEntry::reset`): keeps holds from starting
/// through the file it ends until the returned guard drops (after the
/// system call), and waits for those in flight, so that they put the
/// user's flags back through it. They are single non-blocking system
/// calls. A signal handler does not wait: the attempt may be the code it
/// interrupted.
pub(crate) fn exclude_holds(entry: &FdEntry, generation: u32) -> HoldsExcluded<'_> {
    entry.closing.store(generation, Ordering::SeqCst);
    if !switch::in_signal_handler() {
        while entry.holding.load(Ordering::SeqCst) != 0 {
            sys::sched_yield();
        }
    }
    HoldsExcluded { entry, generation }
}

/// Holds kept off a file while its number is closed or replaced.
pub(crate) struct HoldsExcluded<'a> {
    entry: &'a FdEntry,
    generation: u32,
}

impl Drop for HoldsExcluded<'_> {
    fn drop(&mut self) {
        let none = u32::MAX;
        let closing = &self.entry.closing;
        let _ = closing.compare_exchange(self.generation, none, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// Parks the calling coroutine while the close of `fd`'s file of
/// `generation` (of description `id`) is under way; the caller then tries
/// again, on what the number names then. The kernel frees the number as
/// the close starts, and a lingering close returns only after its linger
/// time (its closer may even be gone, with its runtime): once the number
/// names another file or none, the close is over for the number, and this
/// starts the generation that its end would.
fn wait_for_close(fd: c_int, entry: &FdEntry, generation: u32, id: (u64, u64)) {
    const FIRST: Duration = Duration::from_micros(50);
    const LONGEST: Duration = Duration::from_millis(32);
    let mut pause = FIRST;
    while entry.generation() == generation && entry.closing.load(Ordering::SeqCst) == generation {
        let what = crate::coroutine::Wait::Fd { fd, write: false };
        crate::coroutine::park(Some(Instant::now() + pause), what, drop);
        if identity_of(fd) != Some(id) {
            entry.reset_if(generation);
            return;
        }
        pause = (pause * 2).min(LONGEST);
    }
}

/// The identity of `fd`, uncached: for calls that do not go through an
/// entry.
fn identity_of(fd: c_int) -> Option<(u64, u64)> {
    stat(fd).map(|stat| (stat.st_dev, stat.st_ino))
}

/// Whether the user (not the runtime) made `fd`'s description
/// non-blocking.
fn user_nonblocking(fd: c_int, entry: &FdEntry, generation: u32) -> bool {
    user_flags(fd, || identity(fd, entry, generation))
        .is_some_and(|flags| flags & libc::O_NONBLOCK != 0)
}

/// The status flags the user set on `fd` (whose identity `id` gives): a
/// hold's record if the runtime holds it, else the kernel's. Read under the
/// lock that holds change the flags under, so the two agree.
fn user_flags(fd: c_int, id: impl FnOnce() -> Option<(u64, u64)>) -> Option<c_int> {
    // The common case, with no hold anywhere: the kernel's flags are the
    // user's, without the lock every worker would take.
    let quiet = Quiet::before();
    if quiet.idle {
        let current = flags(fd);
        if quiet.still() {
            return (current >= 0).then_some(current as c_int);
        }
    }
    let Some(held) = held_lock() else {
        let current = flags(fd);
        return (current >= 0).then_some(current as c_int);
    };
    let current = flags(fd);
    // Only a held description has the flag without the user's say.
    if current >= 0 && current as c_int & libc::O_NONBLOCK != 0 && !held.is_empty() {
        if let Some(record) = id().and_then(|id| held.iter().find(|h| h.id == id)) {
            // The kernel's flags, but for the hold's own.
            return Some(current as c_int & !libc::O_NONBLOCK | record.user_nonblocking);
        }
    }
    (current >= 0).then_some(current as c_int)
}

/// `F_GETFL` as the user sees it: without an O_NONBLOCK of the runtime's.
pub(crate) fn get_flags(fd: c_int) -> isize {
    let quiet = Quiet::before();
    let ret = flags(fd);
    if ret < 0 || ret as c_int & libc::O_NONBLOCK == 0 || quiet.still() {
        return ret;
    }
    match user_flags(fd, || identity_of(fd)) {
        Some(user) => user as isize,
        None => flags(fd),
    }
}

/// The holds' lock. A signal handler does not wait for the code it
/// interrupted, and waits for another thread for [`HANDLER_PATIENCE`] at
/// the most; without the lock, it sees and changes the kernel's flags.
fn held_lock() -> Option<FairSpinGuard<'static, Vec<Held>>> {
    /// Far beyond a holder's few system calls, short enough for the
    /// thread the handler stops.
    const HANDLER_PATIENCE: Duration = Duration::from_millis(5);
    match switch::in_signal_handler() {
        true => HELD.lock_in_handler(HANDLER_PATIENCE),
        false => Some(lock_held()),
    }
}

/// The holds' lock, waited for.
fn lock_held() -> FairSpinGuard<'static, Vec<Held>> {
    free_in_forked_children();
    HELD.lock()
}

/// A child forked while another thread held the lock would wait for it for
/// ever (that thread is not in the child), in any process that links the
/// hooks, with a runtime or without. The child's records are its parent's
/// holds, which the parent releases.
fn free_in_forked_children() {
    static ONCE: Once = Once::new();
    extern "C" fn in_child() {
        // SAFETY: the child's only thread runs this, before any other code.
        unsafe { HELD.reset(Vec::new()) };
        HELD_COUNT.store(0, Ordering::SeqCst);
    }
    ONCE.call_once(|| {
        // SAFETY: registers a handler without preconditions.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
}

/// The hold record of `fd`'s description, if the runtime holds it.
fn record_of(held: &mut [Held], fd: c_int) -> Option<&mut Held> {
    if held.is_empty() {
        return None;
    }
    let id = identity_of(fd)?;
    held.iter_mut().find(|h| h.id == id)
}

/// `F_SETFL` with the user's `wanted` flags. While the runtime holds the
/// description, the kernel keeps O_NONBLOCK, and the user's choice of it
/// is the one made at the release.
pub(crate) fn set_user_flags(fd: c_int, wanted: c_int) -> isize {
    let ret = match held_lock() {
        None => set_flags(fd, wanted),
        Some(mut held) => match record_of(&mut held, fd) {
            None => set_flags(fd, wanted),
            Some(record) => {
                let ret = set_flags(fd, wanted | libc::O_NONBLOCK);
                if ret >= 0 {
                    record.user_nonblocking = wanted & libc::O_NONBLOCK;
                }
                ret
            }
        },
    };
    settings_changed();
    ret
}

/// A call that changes a descriptor's status flags the kernel's way
/// (`FIOASYNC`), made under the holds' lock: a hold reads and writes the
/// flags in two calls as it starts and as it ends, and a change made in
/// between would be lost.
pub(crate) fn change_flags(call: impl FnOnce() -> isize) -> isize {
    let _held = held_lock();
    call()
}

/// `FIONBIO` with the caller's `arg`, as the user made it by `call`. While
/// the runtime holds the description, the mode it asks for is the one put
/// back at the release, and the kernel is not asked: its call would clear
/// O_NONBLOCK under an attempt about to start, which would then block.
pub(crate) fn set_user_mode(fd: c_int, arg: *const c_int, call: impl FnOnce() -> isize) -> isize {
    let ret = match held_lock() {
        None => call(),
        Some(mut held) => match record_of(&mut held, fd) {
            None => call(),
            Some(record) => {
                // Read as the kernel reads it: EFAULT for a bad pointer.
                let mut on = [0u8; 4];
                match sys::read_user_bytes(arg.cast(), &mut on) {
                    Ok(()) => {
                        record.user_nonblocking = match c_int::from_ne_bytes(on) {
                            0 => 0,
                            _ => libc::O_NONBLOCK,
                        };
                        0
                    }
                    Err(errno) => -(errno as isize),
                }
            }
        },
    };
    settings_changed();
    ret
}

/// A plain thread's `call` on `fd`, which has no per-call flag (accept):
/// if a coroutine's hold made the description non-blocking during the call
/// and the user wants it blocking, waits for `interest` and tries again, up
/// to the user's timeout, as the kernel would have blocked in the call.
pub(crate) fn thread_call(fd: c_int, interest: Interest, mut call: impl FnMut() -> isize) -> isize {
    // The user's timeout runs from the call's start: a hold anywhere in the
    // process makes an EAGAIN suspect, even one the kernel gave at the
    // timeout, which must then end the call, not start another.
    let start = Instant::now();
    let mut deadline: Option<Option<Instant>> = None;
    loop {
        let quiet = Quiet::before();
        let ret = call();
        if ret != -(libc::EAGAIN as isize) || quiet.still() {
            return ret;
        }
        if user_flags(fd, || identity_of(fd)).is_none_or(|flags| flags & libc::O_NONBLOCK != 0) {
            return ret;
        }
        let deadline = *deadline.get_or_insert_with(|| {
            let name = match interest {
                Interest::Read => libc::SO_RCVTIMEO,
                Interest::Write => libc::SO_SNDTIMEO,
            };
            socket_timeout(fd, name).and_then(|t| start.checked_add(t))
        });
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if remaining.is_some_and(|r| r.is_zero())
            || super::driver::poll_one(fd, interest, remaining) < 0
        {
            return ret;
        }
    }
}

/// The kind of `fd` if it is already known, without asking the kernel.
pub(crate) fn known_kind(fd: c_int) -> Option<Kind> {
    let entry = crate::reactor::fd_table::FD_TABLE.peek(fd)?;
    entry.kind(entry.generation()).and_then(Kind::from_u32)
}
