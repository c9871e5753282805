//! The hook layer: `#[no_mangle]` definitions of the libc functions that
//! libstd calls to block, so that a blocking call made inside a coroutine
//! parks the coroutine instead of its worker.
//!
//! Every hook has the same shape: outside a coroutine (one thread-local
//! load) it does exactly what libc does; inside one it tries the operation
//! without blocking and, if it would block, waits through one shared
//! mechanism before trying again.

mod futex;
