//! glibc functions the `libc` crate does not declare: the fortified
//! `__*_chk` entry points that C code built with `_FORTIFY_SOURCE` calls,
//! C11's `thrd_sleep`, BSD's `wait3` and the `h_errno` slot.

unsafe extern "C" {
    /// The calling thread's `h_errno`.
    pub fn __h_errno_location() -> *mut libc::c_int;
    /// A semaphore wait on a chosen clock (glibc 2.30 and later).
    pub fn sem_clockwait(
        sem: *mut libc::sem_t,
        clock: libc::clockid_t,
        at: *const libc::timespec,
    ) -> libc::c_int;
    /// C11's sleep (glibc 2.28 and later).
    pub fn thrd_sleep(
        duration: *const libc::timespec,
        remaining: *mut libc::timespec,
    ) -> libc::c_int;
    /// BSD's wait for any child, with its resource usage.
    pub fn wait3(
        status: *mut libc::c_int,
        options: libc::c_int,
        usage: *mut libc::rusage,
    ) -> libc::pid_t;
    /// Fortified `read`: aborts if `nbytes` exceeds `buflen`.
    pub fn __read_chk(fd: i32, buf: *mut libc::c_void, nbytes: usize, buflen: usize) -> isize;
    /// Fortified `recv`: aborts if `len` exceeds `buflen`.
    pub fn __recv_chk(
        fd: i32,
        buf: *mut libc::c_void,
        len: usize,
        buflen: usize,
        flags: i32,
    ) -> isize;
    /// Fortified `recvfrom`: aborts if `len` exceeds `buflen`.
    pub fn __recvfrom_chk(
        fd: i32,
        buf: *mut libc::c_void,
        len: usize,
        buflen: usize,
        flags: i32,
        addr: *mut libc::sockaddr,
        addrlen: *mut libc::socklen_t,
    ) -> isize;
    /// Fortified `poll`: aborts if `nfds` entries exceed `fdslen` bytes.
    pub fn __poll_chk(
        fds: *mut libc::pollfd,
        nfds: libc::nfds_t,
        timeout: i32,
        fdslen: usize,
    ) -> i32;
    /// Fortified `ppoll`: aborts if `nfds` entries exceed `fdslen` bytes.
    pub fn __ppoll_chk(
        fds: *mut libc::pollfd,
        nfds: libc::nfds_t,
        timeout: *const libc::timespec,
        sigmask: *const libc::sigset_t,
        fdslen: usize,
    ) -> i32;
}
