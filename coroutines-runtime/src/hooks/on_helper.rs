//! Calls that wait inside glibc, where no hook reaches (name lookups over
//! its own sockets, `system`'s wait for its shell): in a coroutine,
//! glibc's own function runs on a helper thread of the runtime
//! (`crate::blocking`) while the coroutine parks, in the coroutine's
//! locale (`uselocale`: IDN conversion, as `AI_IDN` asks, reads
//! `LC_CTYPE`); the result, `errno` and `h_errno` are the call's own.
//! Outside coroutines, glibc's function is called in place.
//!
//! The hooks reach glibc's functions through `dlsym(RTLD_NEXT, ..)`, looked
//! up once. A static build (`+crt-static`) has no loader to ask, and its
//! libc archive defines these functions alongside others the program
//! needs, so there these hooks are left out and the calls block the worker
//! as they would block a thread.

use core::ffi::CStr;
use core::sync::atomic::{AtomicUsize, Ordering};

use libc::c_int;

use crate::blocking;
use crate::coroutine::in_coroutine;
use crate::sys;

/// glibc's function `name`, looked up once into `slot` (which starts at
/// `usize::MAX`): its address, or 0.
pub(super) fn real(slot: &AtomicUsize, name: &CStr) -> usize {
    const UNKNOWN: usize = usize::MAX;
    let known = slot.load(Ordering::Acquire);
    if known != UNKNOWN {
        return known;
    }
    // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT finds the next
    // definition after this object's, glibc's.
    let found = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    slot.store(found, Ordering::Release);
    found
}

/// Makes `call` (glibc's function with the caller's arguments): in a
/// coroutine on a helper thread, in the coroutine's locale, with `errno`
/// and `h_errno` taken there and brought back; elsewhere in place.
pub(super) fn run<T: Send>(call: impl FnOnce() -> T) -> T {
    if !in_coroutine() {
        return call();
    }
    let (locale, errno, h_errno_before) = (current_locale(), sys::errno(), h_errno());
    let (ret, errno, h_errno) = blocking::run_borrowed(|| {
        let helpers = use_locale(locale);
        // A call that succeeds leaves them as they were.
        sys::set_errno(errno);
        set_h_errno(h_errno_before);
        let ret = call();
        let result = (ret, sys::errno(), h_errno());
        use_locale(helpers);
        result
    });
    sys::set_errno(errno);
    set_h_errno(h_errno);
    ret
}

/// Defines a hook that makes glibc's `$name` with [`run`]. `$fail` is what
/// it returns when glibc's function cannot be found.
macro_rules! helper_hook {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty, fail: $fail:expr) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// As glibc's function of the same name.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            static REAL: core::sync::atomic::AtomicUsize =
                core::sync::atomic::AtomicUsize::new(usize::MAX);
            const NAME: &core::ffi::CStr =
                match core::ffi::CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                    Ok(name) => name,
                    Err(_) => panic!("a function name has no NUL inside"),
                };
            let address = $crate::hooks::on_helper::real(&REAL, NAME);
            if address == 0 {
                return $fail;
            }
            // SAFETY: dlsym found glibc's function of this name, which has
            // this signature.
            let real: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { core::mem::transmute(address) };
            // SAFETY: the caller's arguments, passed on unchanged; the
            // caller keeps what they point to alive until this returns. The
            // result crosses threads as an integer (pointers are not `Send`).
            $crate::hooks::on_helper::run(|| unsafe { real($($arg),*) } as usize) as $ret
        }
    };
}
pub(super) use helper_hook;

unsafe extern "C" {
    fn __h_errno_location() -> *mut c_int;
}

/// The calling thread's locale (`LC_GLOBAL_LOCALE` if it uses the
/// process's), as an address that can cross threads.
fn current_locale() -> usize {
    // SAFETY: uselocale(0) only reads the calling thread's locale.
    unsafe { libc::uselocale(core::ptr::null_mut()) as usize }
}

/// Makes the calling thread use `locale` (from [`current_locale`], still
/// alive: its owner waits for this call); returns the one it used before.
fn use_locale(locale: usize) -> usize {
    // SAFETY: a locale object or LC_GLOBAL_LOCALE, valid for the call.
    unsafe { libc::uselocale(locale as libc::locale_t) as usize }
}

fn h_errno() -> c_int {
    // SAFETY: the calling thread's h_errno slot.
    unsafe { *__h_errno_location() }
}

pub(super) fn set_h_errno(value: c_int) {
    // SAFETY: as above.
    unsafe { *__h_errno_location() = value };
}
