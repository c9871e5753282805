//! `__cxa_thread_atexit_impl`: thread-local destructors registered inside
//! a coroutine run when the coroutine ends, with its thread-locals active,
//! never at its worker's exit.
//!
//! Rust's `thread_local!` (and C++ `thread_local`) register their
//! destructors here. glibc keeps the list in a libc thread-local that a
//! coroutine's copy shares with its worker by value, and runs it only when
//! the kernel thread exits. So inside a coroutine with its own identity
//! the hook records the destructor on the coroutine's thread block
//! (`identity`); anywhere else it forwards to glibc's. pthread key
//! destructors need no hook: the copy has its own key storage, which the
//! block's thread exit walks as glibc does.
//!
//! The symbol is in the executable's dynamic symbol table, so calls from
//! shared libraries are routed here too. Destructors registered by a
//! dlopen'ed library inside a coroutine do not pin that library against
//! `dlclose` (glibc's own list does).

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::identity::{self, Destructor};

type CxaImpl = unsafe extern "C" fn(Destructor, *mut c_void, *mut c_void) -> c_int;

/// glibc's `__cxa_thread_atexit_impl`, found with `dlsym(RTLD_NEXT)`.
static NEXT: AtomicUsize = AtomicUsize::new(0);

fn next() -> Option<CxaImpl> {
    let mut f = NEXT.load(Ordering::Acquire);
    if f == 0 {
        // SAFETY: dlsym with a NUL-terminated name.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"__cxa_thread_atexit_impl".as_ptr()) } as usize;
        NEXT.store(f, Ordering::Release);
    }
    // SAFETY: glibc's symbol has this signature.
    (f != 0).then(|| unsafe { core::mem::transmute::<usize, CxaImpl>(f) })
}

/// Hooked: see the module documentation.
///
/// # Safety
/// As glibc's: a destructor, its object, and the registering DSO's handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __cxa_thread_atexit_impl(
    func: Destructor,
    obj: *mut c_void,
    dso: *mut c_void,
) -> c_int {
    if identity::defer_destructor(func, obj) {
        return 0;
    }
    match next() {
        // SAFETY: forwards the caller's arguments unchanged.
        Some(f) => unsafe { f(func, obj, dso) },
        None => -1,
    }
}

/// Checks that this definition is the one everybody binds to, with
/// glibc's reachable behind it.
pub(crate) fn verify() -> Result<(), String> {
    let ours = __cxa_thread_atexit_impl as *const () as usize;
    // SAFETY: dlsym with a NUL-terminated name.
    let global =
        unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__cxa_thread_atexit_impl".as_ptr()) } as usize;
    if global != ours {
        return Err(format!(
            "the __cxa_thread_atexit_impl hook is not in effect (global symbol {global:#x}, \
             ours {ours:#x}): coroutines' thread-local destructors would run at worker exit"
        ));
    }
    if next().is_none() {
        return Err("glibc's __cxa_thread_atexit_impl is not found behind the hook".into());
    }
    Ok(())
}
