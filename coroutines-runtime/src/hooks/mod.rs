//! The hook layer: `#[no_mangle]` definitions of the libc functions that
//! libstd calls to block, so that a blocking call made inside a coroutine
//! parks the coroutine instead of its worker.
//!
//! Every hook has the same shape: outside a coroutine (one thread-local
//! load) it makes the system call exactly as libc would; inside one it goes
//! through [`blocking::blocking_io`], which tries the call without blocking
//! and, if it would block, waits in the reactor before trying again. The
//! real operations are raw system calls: no loader lookups, no recursion,
//! and they work in static builds.
//!
//! Known limits: writes to stdout and stderr block the worker (std's stdout
//! lock is re-entrant per OS thread, so parking inside it would let another
//! coroutine on the same worker into it); `ppoll`, `pselect` and
//! `epoll_wait` are not hooked and block the worker;
//! descriptors closed by paths the hooks do not see (e.g. `fclose`) keep
//! their record until the number is created again through a hook.

mod blocking;
mod fd;
mod futex;
mod nonblock;
mod poll;
mod socket;
mod thread;
mod time;
