//! The driver shared by every hook that may block on a descriptor: the
//! call's result, as the blocking call would give it on a thread, with the
//! coroutine parked instead of the worker whenever the call would block.

use std::time::{Duration, Instant};

use libc::{c_int, iovec, msghdr};

use super::descriptor::{self, Kind, View};
use super::iov;
use crate::blocking;
use crate::coroutine::{in_coroutine, switch};
use crate::reactor::fd_table::{Ended, FdEntry, Interest, FD_TABLE};
use crate::reactor::{sleep_on_fd, wait_fd, FdWait, Outcome};
use crate::scheduler::in_forked_child;
use crate::sys::syscall;

/// How one attempt of a call is kept from blocking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Nonblock {
    /// `MSG_DONTWAIT`, which every socket honours.
    Flag,
    /// `RWF_NOWAIT` (`preadv2`/`pwritev2`), which some devices refuse
    /// (ttys): those are waited on first, then called as the user called.
    Rwf,
    /// No per-call flag (accept, connect): the description is held
    /// non-blocking for the attempt (see `descriptor`).
    Hold,
}

/// A call that may block on a descriptor, and what completes it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Call {
    pub(crate) fd: c_int,
    pub(crate) interest: Interest,
    pub(crate) nonblock: Nonblock,
    /// The bytes it transfers. On a byte stream a blocking write returns
    /// only once all of them are written, and a blocking read once its
    /// low-water mark (`SO_RCVLOWAT`, or all of them with `MSG_WAITALL`) is
    /// reached, unless an error, the end of the stream or a timeout comes
    /// first: the driver collects attempts until then.
    pub(crate) len: Len,
    /// `MSG_WAITALL`.
    pub(crate) wait_all: bool,
    /// `MSG_PEEK`: consumes nothing, so an unfinished peek is repeated
    /// from the start rather than continued.
    pub(crate) peek: bool,
    /// Earlier parts of the user's call moved something (`recvmmsg`'s
    /// earlier messages): a pending socket error is left for the next call,
    /// as after some bytes of a stream.
    pub(crate) moved_before: bool,
}

/// One attempt of a call, as the driver asks the hook to make it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Attempt {
    /// It must not block (see [`Nonblock`]); else it is the call as the
    /// user made it.
    pub(crate) nonblocking: bool,
    /// What earlier attempts moved: the attempt is for the rest (always 0
    /// for peeks and non-transfers).
    pub(crate) done: usize,
    /// A send that fails must raise no SIGPIPE: it continues a blocking
    /// send that moved something, or one that waited on a Unix stream,
    /// whose blocking send fails quietly once it has waited for room.
    pub(crate) quiet: bool,
}

impl Attempt {
    /// The call as the user made it, first and only.
    const AS_MADE: Attempt = Attempt {
        nonblocking: false,
        done: 0,
        quiet: false,
    };
}

/// How many bytes a call transfers. Read from the caller's memory only
/// after an attempt succeeded: the kernel has validated it by then.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Len {
    /// Not a transfer (accept, connect).
    None,
    /// One buffer of this many bytes.
    Buffer(usize),
    /// The iovecs at a caller's pointer.
    Vectored(*const iovec, usize),
    /// The iovecs of the message header at a caller's pointer.
    Message(*const msghdr),
}

impl Len {
    /// The byte count.
    ///
    /// # Safety
    /// The kernel has read the iovecs (an attempt with them succeeded).
    unsafe fn bytes(self) -> usize {
        match self {
            Len::None => 0,
            Len::Buffer(len) => len,
            // SAFETY: per the contract.
            Len::Vectored(iov, count) => unsafe { iov::total(iov, count) },
            // SAFETY: per the contract, for the header and its iovecs.
            Len::Message(msg) => unsafe { iov::total((*msg).msg_iov, (*msg).msg_iovlen) },
        }
    }
}

impl Call {
    /// A call that is not a transfer (accept, connect).
    pub(crate) fn other(fd: c_int, interest: Interest, nonblock: Nonblock) -> Call {
        Call {
            fd,
            interest,
            nonblock,
            len: Len::None,
            wait_all: false,
            peek: false,
            moved_before: false,
        }
    }

    /// A transfer of `len`.
    pub(crate) fn transfer(fd: c_int, interest: Interest, nonblock: Nonblock, len: Len) -> Call {
        Call {
            len,
            ..Call::other(fd, interest, nonblock)
        }
    }

    /// The fewest bytes with which the blocking call on a `kind` file
    /// returns; `rcvlowat` gives a stream socket's low-water mark.
    ///
    /// # Safety
    /// As [`Len::bytes`].
    unsafe fn target(&self, kind: Kind, rcvlowat: impl FnOnce() -> usize) -> usize {
        if !kind.is_stream() {
            return 1;
        }
        // SAFETY: per the contract.
        let len = unsafe { self.len.bytes() };
        match self.interest {
            Interest::Write => len,
            Interest::Read if self.wait_all => len,
            Interest::Read if kind.is_socket() => rcvlowat().min(len),
            Interest::Read => 1,
        }
    }

    /// A read of one non-empty buffer: a short one drains a TCP stream.
    fn reads_buffer(&self) -> bool {
        self.interest == Interest::Read && !self.peek && matches!(self.len, Len::Buffer(1..))
    }
}

/// Makes `call`; in a coroutine, parks it instead of blocking the worker.
/// Returns the raw result (`-errno` on failure).
///
/// `attempt` makes one [`Attempt`] of the call. Outside coroutines it is
/// made once, as is.
///
/// Before parking, the user's settings decide, as read once per call (the
/// kernel reads them when the call starts): a non-blocking description
/// fails with EAGAIN, and `SO_RCVTIMEO`/`SO_SNDTIMEO` bound the whole call
/// (not each wait), after which it returns what it has, or EAGAIN.
///
/// Inlined into every hook, so that a call outside coroutines costs a
/// thread-local load more than libc's; what a coroutine's call needs stays
/// out of line.
#[inline(always)]
pub(crate) fn blocking_io(call: Call, mut attempt: impl FnMut(Attempt) -> isize) -> isize {
    if !in_coroutine() {
        return match call.nonblock {
            Nonblock::Hold if !in_forked_child() => {
                descriptor::thread_call(call.fd, call.interest, || attempt(Attempt::AS_MADE))
            }
            _ => attempt(Attempt::AS_MADE),
        };
    }
    coroutine_io(call, attempt)
}

/// [`blocking_io`] in a coroutine.
#[inline(never)]
fn coroutine_io(call: Call, mut attempt: impl FnMut(Attempt) -> isize) -> isize {
    switch::spend_budget();
    let Some(entry) = FD_TABLE.get(call.fd) else {
        return attempt(Attempt::AS_MADE);
    };
    let mut done = 0;
    // The user's settings, learned the first time they matter and kept for
    // the whole call: the kernel reads the mode and the timeouts when the
    // call starts, so a change made while the call waits is not its.
    let mut settings: Option<View> = None;
    // Timed from the first time the call would park: a call that does not
    // block never reads the clock.
    let mut deadline: Option<Option<Instant>> = None;
    let mut recheck = Recheck::HIDDEN;
    let mut backoff = Recheck::REFUSED;
    let mut waited = false;
    loop {
        let wait = FdWait::new(call.fd, entry, call.interest);
        let generation = wait.generation();
        let Some(kind) = descriptor::kind(call.fd, entry, generation) else {
            // Not open: the kernel says so.
            let as_made = Attempt {
                done,
                quiet: done > 0,
                ..Attempt::AS_MADE
            };
            return progress(done, attempt(as_made));
        };
        let quiet_after_wait =
            waited && call.interest == Interest::Write && kind.sends_see_errors_late();
        let at = |nonblocking: bool, done: usize| Attempt {
            nonblocking,
            done,
            quiet: done > 0 || quiet_after_wait,
        };
        if kind.passes_through() || (call.nonblock == Nonblock::Hold && !kind.accepts()) {
            return progress(done, attempt(at(false, done)));
        }
        let mut view =
            || *settings.get_or_insert_with(|| descriptor::view(call.fd, entry, generation, kind));
        if call.interest == Interest::Read && kind.ends_at_messages() {
            let view = view();
            if call.wait_all || view.rcvlowat > 1 {
                // A Unix stream's read that collects stops after a
                // message that carried descriptors, which the caller may
                // not even see (no control buffer), and fills the control
                // buffer along the way: a read made in parts can do
                // neither. The call as made, on a helper thread unless it
                // does not block. Decided before the first attempt (the
                // settings are the call's), so nothing was read yet.
                return match view.nonblocking {
                    true => attempt(Attempt::AS_MADE),
                    false => blocking::run_borrowed(|| {
                        descriptor::thread_call(call.fd, call.interest, || {
                            attempt(Attempt::AS_MADE)
                        })
                    }),
                };
            }
        }
        if let Some(error) = continued_send_error(&call, kind, done > 0 || waited) {
            return progress(done, error);
        }
        if (done > 0 || call.moved_before) && kind.is_socket() && error_pending(call.fd, kind) {
            // A blocking call returns what it moved and leaves the error
            // for the next call; trying again would take the error.
            return done as isize;
        }
        if kind.waits_first() {
            // No per-call flag (ttys, FIFOs opened by name, pipe ends that
            // were spliced): the call as the user made it, on a helper
            // thread, with a terminal's own rules (VMIN, VTIME, output
            // flow) intact.
            return progress(done, blocking::run_borrowed(|| attempt(at(false, done))));
        }
        let tcp_read = kind == Kind::Tcp && call.reads_buffer();
        let ret = if tcp_read && entry.drained(generation, wait.snapshot()) {
            None
        } else if call.nonblock == Nonblock::Hold {
            match descriptor::held(call.fd, entry, generation, || attempt(at(true, done))) {
                Some(ret) => Some(ret),
                None => continue,
            }
        } else {
            Some(attempt(at(true, done)))
        };
        if call.nonblock == Nonblock::Rwf {
            if let Some(ret) = ret {
                if learn_nowait(entry, generation, kind, ret) {
                    continue;
                }
            }
        }
        match ret {
            Some(n) if n > 0 => {
                let n = n as usize;
                let total = if call.peek { n } else { done + n };
                // SAFETY: the attempt succeeded, so the kernel read the
                // caller's iovecs.
                let target = unsafe { call.target(kind, || view().rcvlowat) };
                if let (true, Len::Buffer(len)) = (tcp_read, call.len) {
                    if total < len {
                        entry.set_drained(generation, wait.snapshot());
                    }
                }
                if total >= target {
                    return total as isize;
                }
                if !call.peek {
                    done = total;
                    // Not enough yet: the next attempt takes what has come
                    // meanwhile, or finds nothing and parks.
                    continue;
                }
                // A peek sees the same bytes until more come: wait for
                // them, or return what is there if the user does not wait.
                if view().nonblocking {
                    return total as isize;
                }
            }
            Some(n) if n != -(libc::EAGAIN as isize) => return progress(done, n),
            _ => {}
        }
        let tried = ret.is_some();
        if call.interest == Interest::Read && entry.hung_up() && hung_up(call.fd) {
            // Shut down for reading: the blocking call returns at once
            // (0, or EINVAL for a listener) where an attempt says EAGAIN.
            return progress(done, attempt(at(false, done)));
        }
        let view = view();
        if view.nonblocking {
            // The user's call does not block: make it as is.
            return match tried {
                true => progress(done, -(libc::EAGAIN as isize)),
                false => progress(done, attempt(at(false, done))),
            };
        }
        let deadline = *deadline.get_or_insert_with(|| {
            view.timeout(call.interest)
                .and_then(|t| Instant::now().checked_add(t))
        });
        let other_queue =
            tried && call.interest == Interest::Write && kind.sends_wait_for_other_queues();
        // Refused although the socket reports room: the send waits for a
        // receiver's queue that nothing here can watch, and its own
        // attempt raised the edge a wait would end at at once (see
        // `Kind::sends_wait_for_other_queues`). Tried again on a timer,
        // as a Unix connect to a full backlog is.
        let refused_with_room = other_queue && revents(call.fd, libc::POLLOUT) & libc::POLLOUT != 0;
        let until = if refused_with_room {
            Some(backoff.next(deadline))
        } else if call.interest == Interest::Write && (kind.hides_write_shutdown() || other_queue) {
            // Readiness may miss what ends the wait: a shutdown, or room
            // in a receiver's queue while it shows the sender's own buffer
            // or the queue of the peer it is connected to.
            Some(recheck.next(deadline))
        } else {
            deadline
        };
        waited = true;
        let outcome = match until {
            Some(until) if refused_with_room => sleep_on_fd(&wait, until),
            _ => wait_fd(&wait, until),
        };
        // Edges that keep coming must not keep a call past its deadline
        // (a held call tries again: its last word at the deadline is
        // EAGAIN without trying).
        let past = || deadline.is_some_and(|deadline| Instant::now() >= deadline);
        match outcome {
            Outcome::Ready if call.nonblock == Nonblock::Hold || !past() => {}
            Outcome::TimedOut if until != deadline && !past() => {}
            Outcome::Ready | Outcome::TimedOut => {
                // What came without an edge (below a low-water mark, or
                // behind a drained stream) is the kernel's answer at the
                // timeout too, and so is what came before the deadline
                // but was seen after it (an end of file, an error): the
                // thread's call ended with it.
                let last = match call.nonblock {
                    Nonblock::Hold => -(libc::EAGAIN as isize),
                    _ => continued_send_error(&call, kind, true)
                        .unwrap_or_else(|| attempt(at(true, done))),
                };
                return match last {
                    n if n > 0 && call.peek => n,
                    n => progress(done, n),
                };
            }
            Outcome::Closed => return progress(done, -(libc::EBADF as isize)),
            Outcome::NotPollable => {
                descriptor::learn_kind(entry, generation, Kind::Unpollable);
                return progress(done, attempt(at(false, done)));
            }
        }
    }
}

/// How long a parked call waits before it tries again without an edge:
/// the next pause, doubled after each up to the longest.
pub(crate) struct Recheck {
    pause: Duration,
    longest: Duration,
}

impl Recheck {
    /// A writer whose readiness may miss what ends its wait (a shutdown,
    /// room in a queue it does not show): from 5 ms, doubling up to
    /// 200 ms, as it also waits for the edge.
    pub(crate) const HIDDEN: Recheck = Recheck {
        pause: Duration::from_millis(5),
        longest: Duration::from_millis(200),
    };
    /// A wait on descriptors the reactor cannot watch (files, an epoll
    /// instance nested too deep for another): from 1 ms, doubling up to
    /// 50 ms.
    pub(crate) const UNWATCHED: Recheck = Recheck {
        pause: Duration::from_millis(1),
        longest: Duration::from_millis(50),
    };
    /// A send refused while its socket reports room, which waits for
    /// nothing but the timer: from 1 ms, doubling up to 32 ms (as a Unix
    /// connect to a full backlog, `hooks::socket`), so that it goes
    /// through at most that late after the receiver reads.
    const REFUSED: Recheck = Recheck {
        pause: Duration::from_millis(1),
        longest: Duration::from_millis(32),
    };

    /// When the next wait ends: the next recheck, or `deadline` if sooner.
    pub(crate) fn next(&mut self, deadline: Option<Instant>) -> Instant {
        let at = Instant::now() + self.pause;
        self.pause = (self.pause * 2).min(self.longest);
        deadline.map_or(at, |deadline| deadline.min(at))
    }
}

/// A call's result after `done` bytes were already moved: those bytes, or
/// the last attempt's outcome added to them. An error after some progress
/// is left for the next call, as the kernel does.
pub(crate) fn progress(done: usize, ret: isize) -> isize {
    match (done, ret) {
        (0, ret) => ret,
        (done, ret) if ret > 0 => (done + ret as usize) as isize,
        (done, _) => done as isize,
    }
}

/// Records whether `RWF_NOWAIT` works on the file, from an attempt's
/// result: EOPNOTSUPP says it does not (ttys, FIFOs opened by name, pipe
/// ends that were spliced), a
/// device's first success or EAGAIN that it does. Returns whether the
/// attempt must be made again another way.
fn learn_nowait(entry: &FdEntry, generation: u32, kind: Kind, ret: isize) -> bool {
    let learned = match ret {
        ret if ret == -(libc::EOPNOTSUPP as isize) && kind.is_pipe() => Kind::PipeWaitFirst,
        ret if ret == -(libc::EOPNOTSUPP as isize) => Kind::DeviceWaitFirst,
        ret if kind == Kind::Device && (ret >= 0 || ret == -(libc::EAGAIN as isize)) => {
            Kind::DeviceNowait
        }
        _ => return false,
    };
    descriptor::learn_kind(entry, generation, learned);
    learned.waits_first()
}

/// The level state of `fd`, without taking anything from it.
pub(crate) fn revents(fd: c_int, events: libc::c_short) -> libc::c_short {
    let mut pollfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    match crate::sys::ppoll(&mut pollfd, 1, Some(Duration::ZERO)) > 0 {
        true => pollfd.revents,
        false => 0,
    }
}

/// Whether `kind` socket `fd` has an error pending, which a blocking call
/// that moved something leaves for the next call. POLLERR says so, or that
/// the error queue holds entries (zerocopy completions, timestamps, ICMP
/// errors with `IP_RECVERR`), which do not end a blocking call but which no
/// look can tell apart without taking them (an IP socket's error queue
/// ignores MSG_PEEK). A TCP connection that is not closed has no error
/// pending unless `IP_RECVERR` lets ICMP errors set one, so there POLLERR
/// is the queue's; elsewhere it ends the call, leaving the error and the
/// queue as they are.
fn error_pending(fd: c_int, kind: Kind) -> bool {
    if revents(fd, 0) & libc::POLLERR == 0 {
        return false;
    }
    kind != Kind::Tcp || tcp_state(fd) == Some(TCP_CLOSE) || receives_errors(fd)
}

/// `TCP_CLOSE` from the kernel's `tcp_states.h`.
const TCP_CLOSE: u8 = 7;

/// The state of TCP socket `fd`: the first byte of its `TCP_INFO`.
fn tcp_state(fd: c_int) -> Option<u8> {
    let mut state = 0u8;
    let mut size: libc::socklen_t = 1;
    let ret = syscall!(
        libc::SYS_getsockopt,
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_INFO,
        &mut state as *mut u8,
        &mut size as *mut libc::socklen_t
    );
    (ret == 0 && size == 1).then_some(state)
}

/// Whether IP socket `fd` has `IP_RECVERR` or `IPV6_RECVERR` set.
fn receives_errors(fd: c_int) -> bool {
    let set = |level, name| descriptor::int_option(fd, level, name).is_ok_and(|on| on != 0);
    set(libc::SOL_IP, libc::IP_RECVERR) || set(libc::SOL_IPV6, libc::IPV6_RECVERR)
}

/// Takes socket `fd`'s pending error (`SO_ERROR`): `-errno`, or 0 if none.
/// The error a send that is `continuing` (it moved bytes or waited) takes
/// first, if any. Such a send on a socket whose sends see errors late
/// checks the socket's error only once it is under way (each part first
/// takes it), where a fresh one checks the shutdown first.
fn continued_send_error(call: &Call, kind: Kind, continuing: bool) -> Option<isize> {
    if call.interest != Interest::Write || !continuing || !kind.sends_see_errors_late() {
        return None;
    }
    Some(take_error(call.fd)).filter(|&error| error != 0)
}

fn take_error(fd: c_int) -> isize {
    match descriptor::int_option(fd, libc::SOL_SOCKET, libc::SO_ERROR) {
        Ok(error) => -(error as isize),
        Err(ret) => ret,
    }
}

/// Whether `fd` is shut down or hung up for reading.
fn hung_up(fd: c_int) -> bool {
    revents(fd, libc::POLLIN | libc::POLLRDHUP) & (libc::POLLRDHUP | libc::POLLHUP) != 0
}

/// `ppoll` on one descriptor for `interest`, up to `timeout` (forever if
/// `None`); the raw result.
pub(crate) fn poll_one(fd: c_int, interest: Interest, timeout: Option<Duration>) -> isize {
    let events = match interest {
        Interest::Read => libc::POLLIN,
        Interest::Write => libc::POLLOUT,
    };
    let mut pollfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    crate::sys::ppoll(&mut pollfd, 1, timeout)
}

/// The number `fd` was just created as a `kind` file (`None`: unknown) by
/// a hook: a new generation, and what is known of it.
pub(crate) fn on_created(fd: c_int, kind: Option<Kind>) {
    if in_forked_child() {
        return;
    }
    if let Some(entry) = FD_TABLE.peek(fd) {
        // The number was closed behind the hooks' back, and is reused.
        let generation = entry.reset(Ended::Closed);
        if let Some(kind) = kind {
            descriptor::learn_kind(entry, generation, kind);
        }
    } else {
        on_replaced(fd, kind);
    }
}

/// The number `fd` now names a `kind` file (`None`: unknown) that a hook
/// put there after starting its generation itself (`dup2`, `dup3`).
pub(crate) fn on_replaced(fd: c_int, kind: Option<Kind>) {
    if let (Some(kind), false) = (kind, in_forked_child()) {
        if let Some(entry) = FD_TABLE.get(fd) {
            descriptor::learn_kind(entry, entry.generation(), kind);
        }
    }
}
