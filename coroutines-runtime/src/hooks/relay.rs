//! The driver shared by the calls that move bytes through a pipe: `splice`
//! and `tee` between two descriptors, `vmsplice` between a pipe and the
//! caller's memory. As [`super::driver`] does for one descriptor, it gives
//! the call's result as the blocking call would give it on a thread, with
//! the coroutine parked in the reactor instead of the worker (or a helper
//! thread) whenever the call would block.
//!
//! # One attempt
//! An attempt is made with SPLICE_F_NONBLOCK, which keeps the pipe ends
//! from blocking, and with a socket end held non-blocking for that one
//! system call (`descriptor::held`, as `accept` does): TCP reads and every
//! socket write follow only the socket's O_NONBLOCK. A pipe end stays one
//! when Linux refuses it `RWF_NOWAIT` (`Kind::PipeWaitFirst`, as it does
//! once a pipe file was spliced): the flag still works on it. Regular files
//! never wait. Ends of any other kind (ttys, devices, datagram sockets),
//! ends the runtime does not track, and a socket read that a low-water
//! mark would hold back make the call as made on a helper thread
//! (`crate::blocking`); so does `sendfile` ([`relay_on_helper`]).
//!
//! # Which end, and whether to wait
//! On EAGAIN, a zero-timeout poll finds the end the blocking call would
//! wait for, in the kernel's order: the input first, except that a call
//! into a pipe from anything else waits for room in the pipe before it
//! reads. The user's call waits there unless that end is non-blocking for
//! it, as Linux decides: a pipe end is if SPLICE_F_NONBLOCK was passed or,
//! in a splice or tee (not a vmsplice), if any pipe end of the call has
//! the user's O_NONBLOCK (the kernel turns that into the flag; a socket's
//! O_NONBLOCK does not count for the pipe); a socket end is if it has the
//! user's O_NONBLOCK, or, for a Unix stream read, with that same flag (TCP
//! reads ignore it). Then the call fails with EAGAIN, as the kernel's
//! would; else the coroutine parks on that end (a socket's `SO_RCVTIMEO`
//! or `SO_SNDTIMEO` bounding the wait, from its first wait there; a splice
//! into a socket is a series of sends, each with a timeout of its own, and
//! ends at one that sent nothing) and tries again. A TCP read at the
//! urgent mark returns 0, as the kernel's blocking one does.
//!
//! # How much
//! The blocking call returns once it moved something, and so does this,
//! after the attempt that moved it: never more than the kernel's call
//! would move. The one call that goes on is a splice into a socket: the
//! kernel's sends everything its pipe holds (up to the length), waiting
//! for room, so after a part the next attempt follows while the pipe still
//! holds bytes, parking on the socket in between; an error then is left
//! for the next call, after what was sent.

use std::time::Instant;

use libc::{c_int, c_uint};

use super::descriptor::{self, Kind, View};
use super::driver::{progress, revents, Recheck};
use crate::blocking;
use crate::coroutine::{in_coroutine, switch};
use crate::reactor::fd_table::{FdEntry, Interest, FD_TABLE};
use crate::reactor::{wait_fd, wait_fds, FdWait, Outcome};
use crate::sys::syscall;

/// What a relay call moves between.
#[derive(Clone, Copy, Debug)]
enum Ends {
    /// From `input` to `output` (`splice`, `tee`).
    Pair { input: c_int, output: c_int },
    /// Between a pipe and the caller's memory (`vmsplice`): into the pipe
    /// if it is open for writing, else out of it.
    Memory(c_int),
}

/// A call that moves bytes through a pipe, as the user made it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Relay {
    ends: Ends,
    /// The call's length argument.
    len: usize,
    /// The call's flags.
    flags: c_uint,
}

/// One attempt of a relay call: the arguments to make it with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pass {
    /// The user's flags, with SPLICE_F_NONBLOCK if it must not block.
    pub(crate) flags: c_uint,
    /// What is left of the length (a splice into a socket that moved a
    /// part goes on with the rest).
    pub(crate) len: usize,
}

impl Relay {
    /// `splice` or `tee` of `len` bytes from `input` to `output`.
    pub(crate) fn between(input: c_int, output: c_int, len: usize, flags: c_uint) -> Relay {
        Relay {
            ends: Ends::Pair { input, output },
            len,
            flags,
        }
    }

    /// `vmsplice` on `pipe`; `count` is the iovec count, never reduced (a
    /// pipe end never goes on after a part).
    pub(crate) fn memory(pipe: c_int, count: usize, flags: c_uint) -> Relay {
        Relay {
            ends: Ends::Memory(pipe),
            len: count,
            flags,
        }
    }

    /// The call as the user made it.
    fn as_made(&self) -> Pass {
        Pass {
            flags: self.flags,
            len: self.len,
        }
    }

    /// `(input, output)`; `None` for the caller's memory. A `vmsplice`
    /// moves into its pipe if the pipe is open for writing (as the kernel
    /// decides); `None` if the descriptor is not open.
    fn ends(&self) -> Option<[Option<c_int>; 2]> {
        match self.ends {
            Ends::Pair { input, output } => Some([Some(input), Some(output)]),
            Ends::Memory(fd) => match syscall!(libc::SYS_fcntl, fd, libc::F_GETFL) {
                flags if flags < 0 => None,
                flags if flags as c_int & libc::O_ACCMODE == libc::O_RDONLY => {
                    Some([Some(fd), None])
                }
                _ => Some([None, Some(fd)]),
            },
        }
    }

    /// The end the hooks know to be a socket, if any, and its direction:
    /// the end a coroutine's hold may make non-blocking under a call on a
    /// helper thread.
    fn known_socket(&self) -> Option<(c_int, Interest)> {
        let Ends::Pair { input, output } = self.ends else {
            return None;
        };
        let socket = |fd| descriptor::known_kind(fd).is_some_and(Kind::is_socket);
        match (socket(input), socket(output)) {
            (true, _) => Some((input, Interest::Read)),
            (_, true) => Some((output, Interest::Write)),
            _ => None,
        }
    }
}

/// Makes a relay call; in a coroutine, parks it instead of blocking the
/// worker. `attempt` makes the system call with a [`Pass`]'s arguments and
/// returns the raw result (`-errno` on failure), as does this. Outside
/// coroutines the call is made once, as made.
#[inline(always)]
pub(crate) fn relay_io(relay: Relay, mut attempt: impl FnMut(Pass) -> isize) -> isize {
    if !in_coroutine() {
        return attempt(relay.as_made());
    }
    coroutine_relay(relay, attempt)
}

/// Makes a call that cannot park (`sendfile`): in a coroutine on a helper
/// thread ([`on_helper`]), else in place.
pub(crate) fn relay_on_helper(relay: Relay, mut call: impl FnMut() -> isize) -> isize {
    match in_coroutine() {
        true => on_helper(relay, |_| call(), 0),
        false => call(),
    }
}

/// How one end of a call is kept from blocking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    /// A pipe: SPLICE_F_NONBLOCK.
    Flag,
    /// A regular file or block device: it never waits.
    Never,
    /// A TCP or Unix stream socket: held non-blocking for the attempt.
    Hold,
    /// Anything else: the call runs on a helper thread.
    Helper,
}

impl Way {
    fn of(kind: Kind) -> Way {
        match kind {
            Kind::Pipe | Kind::PipeWaitFirst => Way::Flag,
            Kind::File => Way::Never,
            Kind::Tcp | Kind::UnixStream => Way::Hold,
            _ => Way::Helper,
        }
    }
}

/// One tracked end of a call in a coroutine.
#[derive(Clone, Copy)]
struct End {
    fd: c_int,
    interest: Interest,
    entry: &'static FdEntry,
}

const INPUT: usize = 0;
const OUTPUT: usize = 1;

/// [`relay_io`] in a coroutine.
#[inline(never)]
fn coroutine_relay(relay: Relay, mut attempt: impl FnMut(Pass) -> isize) -> isize {
    switch::spend_budget();
    let as_made = |attempt: &mut dyn FnMut(Pass) -> isize, done: usize| {
        let pass = Pass {
            len: relay.len - done,
            ..relay.as_made()
        };
        progress(done, attempt(pass))
    };
    let Some(fds) = relay.ends() else {
        // Not open: the kernel says so.
        return attempt(relay.as_made());
    };
    let interests = [Interest::Read, Interest::Write];
    let mut ends: [Option<End>; 2] = [None; 2];
    for (side, fd) in fds.into_iter().enumerate() {
        let Some(fd) = fd else { continue };
        let Some(entry) = FD_TABLE.get(fd) else {
            return on_helper(relay, &mut attempt, 0);
        };
        let interest = interests[side];
        ends[side] = Some(End {
            fd,
            interest,
            entry,
        });
    }
    let mut done = 0;
    // The user's settings of each end, read once per call as the kernel
    // reads them when the call starts; the deadline of each end's timeout,
    // from the call's first wait there.
    let mut views: [Option<View>; 2] = [None; 2];
    let mut deadlines: [Option<Option<Instant>>; 2] = [None; 2];
    // What was moved when the output's timeout started: the kernel's
    // splice into a socket is a series of sends, each timed on its own,
    // and ends at a send that timed out having sent nothing.
    let mut done_at_send = 0;
    let mut recheck = Recheck::HIDDEN;
    loop {
        let waits = ends.map(|end| end.map(|e| FdWait::new(e.fd, e.entry, e.interest)));
        let mut kinds: [Option<Kind>; 2] = [None; 2];
        for side in [INPUT, OUTPUT] {
            let (Some(end), Some(wait)) = (ends[side], &waits[side]) else {
                continue;
            };
            match descriptor::kind(end.fd, end.entry, wait.generation()) {
                Some(kind) => kinds[side] = Some(kind),
                // Not open: the kernel says so.
                None => return as_made(&mut attempt, done),
            }
        }
        let ways = kinds.map(|kind| kind.map(Way::of));
        let mut view = |side: usize| {
            let (end, kind, wait) = (ends[side]?, kinds[side]?, waits[side].as_ref()?);
            Some(*views[side].get_or_insert_with(|| {
                descriptor::view(end.fd, end.entry, wait.generation(), kind)
            }))
        };
        // A socket read that a low-water mark holds back returns at it,
        // which attempts made in parts cannot tell (as in the driver).
        let held_back = kinds[INPUT].is_some_and(Kind::is_socket)
            && view(INPUT).is_some_and(|v| v.rcvlowat > 1);
        if ways.contains(&Some(Way::Helper)) || held_back {
            return on_helper(relay, &mut attempt, done);
        }
        if !ways.contains(&Some(Way::Flag)) {
            // No pipe: the kernel refuses the call at once.
            return as_made(&mut attempt, done);
        }
        let nonblocking = Pass {
            flags: relay.flags | libc::SPLICE_F_NONBLOCK,
            len: relay.len - done,
        };
        let held = [INPUT, OUTPUT]
            .into_iter()
            .find(|&s| ways[s] == Some(Way::Hold));
        let ret = match held {
            Some(side) => {
                let (end, generation) = (ends[side].unwrap(), waits[side].as_ref().unwrap());
                match descriptor::held(end.fd, end.entry, generation.generation(), || {
                    attempt(nonblocking)
                }) {
                    Some(ret) => ret,
                    // The number changed files: the kernel has its say on
                    // the next round.
                    None => continue,
                }
            }
            None => attempt(nonblocking),
        };
        let into_socket = kinds[OUTPUT].is_some_and(Kind::is_socket);
        match ret {
            n if n > 0 => {
                done += n as usize;
                if into_socket && done < relay.len && readable(ends[INPUT]) {
                    continue;
                }
                return done as isize;
            }
            n if n != -(libc::EAGAIN as isize) => return progress(done, n),
            _ => {}
        }
        let Some(side) = blocked(&ends, &kinds) else {
            if done > 0 {
                return done as isize;
            }
            if kinds[INPUT] == Some(Kind::Tcp) && at_urgent_mark(ends[INPUT]) {
                // A TCP read stops at the urgent mark, where the blocking
                // call returns 0 at once, though the socket is readable
                // and a non-blocking one says EAGAIN.
                return 0;
            }
            // Both ends look ready, yet the attempt would block: what it
            // waits for changed meanwhile (the wait returns at once), or
            // raises no event; look again shortly either way.
            let waits: Vec<FdWait> = waits.into_iter().flatten().collect();
            match wait_fds(&waits, Some(recheck.next(None))) {
                Outcome::Closed => return -(libc::EBADF as isize),
                _ => continue,
            }
        };
        if done > 0 && side == INPUT {
            // The pipe ran dry after a part: the kernel's call returns it.
            return done as isize;
        }
        let kind = kinds[side].unwrap();
        // A pipe end is non-blocking for the user's call with the flag,
        // which the kernel also sets for any pipe end's O_NONBLOCK in a
        // splice or tee (not in a vmsplice); a socket end with its own
        // O_NONBLOCK, and a Unix stream's read with the flag too.
        let pipe_nonblocking = relay.flags & libc::SPLICE_F_NONBLOCK != 0
            || matches!(relay.ends, Ends::Pair { .. })
                && [INPUT, OUTPUT]
                    .into_iter()
                    .any(|s| kinds[s].is_some_and(Kind::is_pipe) && view(s).unwrap().nonblocking);
        let user_nonblocking = match kind {
            _ if kind.is_pipe() => pipe_nonblocking,
            Kind::UnixStream if side == INPUT => {
                pipe_nonblocking || view(side).unwrap().nonblocking
            }
            _ => view(side).unwrap().nonblocking,
        };
        if user_nonblocking {
            return progress(done, -(libc::EAGAIN as isize));
        }
        let timeout = view(side).unwrap().timeout(interests[side]);
        let deadline = *deadlines[side]
            .get_or_insert_with(|| timeout.and_then(|t| Instant::now().checked_add(t)));
        // A shutdown that ends a blocked send raises no event on some
        // sockets (see `Kind::hides_write_shutdown`): look again now and
        // then, as the driver does.
        let until = match side == OUTPUT && kind.hides_write_shutdown() {
            true => Some(recheck.next(deadline)),
            false => deadline,
        };
        match wait_fd(waits[side].as_ref().unwrap(), until) {
            Outcome::Ready => {}
            Outcome::TimedOut if until != deadline => {}
            Outcome::TimedOut if side == OUTPUT && done > done_at_send => {
                deadlines[OUTPUT] = None;
                done_at_send = done;
            }
            Outcome::TimedOut => return progress(done, -(libc::EAGAIN as isize)),
            Outcome::Closed => return progress(done, -(libc::EBADF as isize)),
            Outcome::NotPollable => return on_helper(relay, &mut attempt, done),
        }
    }
}

/// The call (what is left of it after `done` bytes) as made, on a helper
/// thread. If a coroutine's hold made its socket end non-blocking during
/// the call while the user's mode is blocking, it waits for that end and
/// tries again (`descriptor::thread_call`), as the runtime's other calls
/// on helper threads do; a plain thread's call is the kernel's alone.
fn on_helper(relay: Relay, mut attempt: impl FnMut(Pass) -> isize, done: usize) -> isize {
    let pass = Pass {
        len: relay.len - done,
        ..relay.as_made()
    };
    let call = || match relay.known_socket() {
        Some((fd, interest)) => descriptor::thread_call(fd, interest, || attempt(pass)),
        None => attempt(pass),
    };
    progress(done, blocking::run_borrowed(call))
}

/// Whether `end` (a TCP input) is at the urgent mark.
fn at_urgent_mark(end: Option<End>) -> bool {
    let mut at: c_int = 0;
    end.is_some_and(|end| {
        syscall!(
            libc::SYS_ioctl,
            end.fd,
            crate::sys::SIOCATMARK,
            &mut at as *mut c_int
        ) == 0
            && at != 0
    })
}

/// Whether `end` (an input) has bytes to read, or its end of file.
fn readable(end: Option<End>) -> bool {
    end.is_some_and(|end| revents(end.fd, libc::POLLIN) & libc::POLLIN != 0)
}

/// The end the blocking call would wait for now, in the kernel's order:
/// the input first, except that a call into a pipe from anything else
/// waits for room in the pipe before it reads. `None` if neither end looks
/// blocked.
fn blocked(ends: &[Option<End>; 2], kinds: &[Option<Kind>; 2]) -> Option<usize> {
    let stuck = |side: usize| {
        let Some(end) = ends[side] else {
            return false;
        };
        let (events, ready) = match end.interest {
            Interest::Read => (
                libc::POLLIN,
                libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLRDHUP,
            ),
            Interest::Write => (libc::POLLOUT, libc::POLLOUT | libc::POLLHUP | libc::POLLERR),
        };
        revents(end.fd, events) & ready == 0
    };
    let pipe = |side: usize| kinds[side].is_some_and(Kind::is_pipe);
    let room_first = pipe(OUTPUT) && !pipe(INPUT);
    let order = match room_first {
        true => [OUTPUT, INPUT],
        false => [INPUT, OUTPUT],
    };
    order.into_iter().find(|&side| stuck(side))
}
