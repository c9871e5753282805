//! Name lookups: `getaddrinfo` (what `ToSocketAddrs` calls), `getnameinfo`
//! and the `gethostby*` family wait inside glibc (DNS over its own
//! sockets, NSS modules): in a coroutine they run on a helper thread
//! (`on_helper`). What they allocate is glibc's, so `freeaddrinfo` frees
//! it as ever.

use libc::{addrinfo, c_char, c_int, c_void, hostent, sockaddr, socklen_t};

use super::on_helper::{helper_hook, set_h_errno};
use crate::sys;

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

helper_hook! {
    /// Hooked: `ToSocketAddrs`.
    fn getaddrinfo(node: *const c_char, service: *const c_char, hints: *const addrinfo, res: *mut *mut addrinfo) -> c_int,
    fail: no_lookup()
}

helper_hook! {
    /// Hooked: reverse lookups.
    fn getnameinfo(addr: *const sockaddr, addrlen: socklen_t, host: *mut c_char, hostlen: socklen_t, serv: *mut c_char, servlen: socklen_t, flags: c_int) -> c_int,
    fail: no_lookup()
}

helper_hook! {
    /// Hooked: the legacy lookup (its result lives in glibc's static
    /// buffer, as for any caller).
    fn gethostbyname(name: *const c_char) -> *mut hostent,
    fail: no_host()
}

helper_hook! {
    /// Hooked: as `gethostbyname`, for an address family.
    fn gethostbyname2(name: *const c_char, family: c_int) -> *mut hostent,
    fail: no_host()
}

helper_hook! {
    /// Hooked: the legacy reverse lookup.
    fn gethostbyaddr(addr: *const c_void, len: socklen_t, family: c_int) -> *mut hostent,
    fail: no_host()
}

helper_hook! {
    /// Hooked: the reentrant legacy lookup.
    fn gethostbyname_r(name: *const c_char, ret: *mut hostent, buf: *mut c_char, buflen: usize, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int,
    fail: no_host_r()
}

helper_hook! {
    /// Hooked: as `gethostbyname_r`, for an address family.
    fn gethostbyname2_r(name: *const c_char, family: c_int, ret: *mut hostent, buf: *mut c_char, buflen: usize, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int,
    fail: no_host_r()
}

helper_hook! {
    /// Hooked: the reentrant legacy reverse lookup.
    fn gethostbyaddr_r(addr: *const c_void, len: socklen_t, family: c_int, ret: *mut hostent, buf: *mut c_char, buflen: usize, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int,
    fail: no_host_r()
}
