//! Name lookups: `getaddrinfo` (what `ToSocketAddrs` calls), `getnameinfo`
//! and the `gethostby*` family wait inside glibc (DNS over its own
//! sockets, NSS modules) where no hook reaches. In a coroutine they run on
//! a helper thread of the runtime (`crate::blocking`) while the coroutine
//! parks, in the coroutine's locale (`uselocale`: IDN conversion, as
//! `AI_IDN` asks, reads `LC_CTYPE`); results, `errno` and `h_errno` are
//! the call's own. What they allocate is glibc's, so `freeaddrinfo` frees
//! it as ever.
//!
//! The hooks reach glibc's functions through `dlsym(RTLD_NEXT, ..)`, looked
//! up once. A static build (`+crt-static`) has no loader to ask, and its
//! libc archive defines these functions alongside `freeaddrinfo`, so there
//! the hooks are left out and lookups block the worker as they would block
//! a thread.

use core::sync::atomic::{AtomicUsize, Ordering};

use libc::{addrinfo, c_char, c_int, c_void, hostent, sockaddr, socklen_t};

use crate::blocking;
use crate::coroutine::in_coroutine;
use crate::sys;

/// glibc's function `name`, looked up once: its address, or 0.
fn real(slot: &AtomicUsize, name: &core::ffi::CStr) -> usize {
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

/// Defines a hook that makes glibc's `$name` on a helper thread.
/// `$fail` is what it returns when glibc's function cannot be found.
macro_rules! lookup_hook {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty, fail: $fail:expr) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// As glibc's function of the same name.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            static REAL: AtomicUsize = AtomicUsize::new(usize::MAX);
            const NAME: &core::ffi::CStr =
                match core::ffi::CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                    Ok(name) => name,
                    Err(_) => panic!("a function name has no NUL inside"),
                };
            let address = real(&REAL, NAME);
            if address == 0 {
                return $fail;
            }
            // SAFETY: dlsym found glibc's function of this name, which has
            // this signature.
            let real: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { core::mem::transmute(address) };
            // SAFETY: the caller's arguments, passed on unchanged.
            let call = || unsafe { real($($arg),*) };
            if !in_coroutine() {
                return call();
            }
            // Raw pointers are not `Send`; the caller keeps what they point
            // to alive and untouched until the helper has returned.
            let args = ($($arg as usize,)*);
            let locale = current_locale();
            let (ret, errno, h_errno) = blocking::run(move || {
                let ($($arg,)*) = args;
                let helpers = use_locale(locale);
                // SAFETY: the caller's arguments, passed on unchanged.
                let ret = unsafe { real($($arg as $ty),*) };
                let result = (ret as usize, sys::errno(), h_errno());
                use_locale(helpers);
                result
            });
            sys::set_errno(errno);
            set_h_errno(h_errno);
            ret as $ret
        }
    };
}

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

fn set_h_errno(value: c_int) {
    // SAFETY: as above.
    unsafe { *__h_errno_location() = value };
}

/// `NO_RECOVERY` from `<netdb.h>`.
const NO_RECOVERY: c_int = 3;

fn no_lookup() -> c_int {
    sys::set_errno(libc::ENOSYS);
    libc::EAI_SYSTEM
}

fn no_host() -> *mut hostent {
    set_h_errno(NO_RECOVERY);
    core::ptr::null_mut()
}

fn no_host_r() -> c_int {
    libc::ENOSYS
}

lookup_hook! {
    /// Hooked: `ToSocketAddrs`.
    fn getaddrinfo(node: *const c_char, service: *const c_char, hints: *const addrinfo, res: *mut *mut addrinfo) -> c_int,
    fail: no_lookup()
}

lookup_hook! {
    /// Hooked: reverse lookups.
    fn getnameinfo(addr: *const sockaddr, addrlen: socklen_t, host: *mut c_char, hostlen: socklen_t, serv: *mut c_char, servlen: socklen_t, flags: c_int) -> c_int,
    fail: no_lookup()
}

lookup_hook! {
    /// Hooked: the legacy lookup (its result lives in glibc's static
    /// buffer, as for any caller).
    fn gethostbyname(name: *const c_char) -> *mut hostent,
    fail: no_host()
}

lookup_hook! {
    /// Hooked: as `gethostbyname`, for an address family.
    fn gethostbyname2(name: *const c_char, family: c_int) -> *mut hostent,
    fail: no_host()
}

lookup_hook! {
    /// Hooked: the legacy reverse lookup.
    fn gethostbyaddr(addr: *const c_void, len: socklen_t, family: c_int) -> *mut hostent,
    fail: no_host()
}

lookup_hook! {
    /// Hooked: the reentrant legacy lookup.
    fn gethostbyname_r(name: *const c_char, ret: *mut hostent, buf: *mut c_char, buflen: usize, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int,
    fail: no_host_r()
}

lookup_hook! {
    /// Hooked: as `gethostbyname_r`, for an address family.
    fn gethostbyname2_r(name: *const c_char, family: c_int, ret: *mut hostent, buf: *mut c_char, buflen: usize, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int,
    fail: no_host_r()
}

lookup_hook! {
    /// Hooked: the reentrant legacy reverse lookup.
    fn gethostbyaddr_r(addr: *const c_void, len: socklen_t, family: c_int, ret: *mut hostent, buf: *mut c_char, buflen: usize, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int,
    fail: no_host_r()
}
