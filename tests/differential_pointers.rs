//! Bad user pointers, differentially (issue item 12): the kernel validates
//! every pointer it is given and fails with EFAULT; no hook may dereference
//! one before the kernel has seen it, on a plain thread or in a coroutine.
//! A hook that does kills the process, so each side runs in a child
//! process (`isolated`), where a crash is a result ("Killed(11)") to
//! compare with the thread's EFAULT.

mod support;

use std::io::Write;
use std::os::fd::AsRawFd;

use support::differential::*;

/// An address in the first page, which is never mapped: the kernel answers
/// EFAULT for it, and a dereference in user space faults.
const UNMAPPED: usize = 8;

/// Asserts that the plain thread got EFAULT, as from the kernel: a hook
/// that crashes on both sides agrees with itself.
#[track_caller]
fn assert_efault(reference: Ended) {
    let efault: Result<i64, Errno> = Err(Errno(libc::EFAULT));
    assert_eq!(
        reference,
        Ended::Value(format!("{efault:?}")),
        "the plain thread (left) did not get the kernel's EFAULT (right)"
    );
}

#[test]
fn poll_with_null_fds_fails_with_efault() {
    let reference = isolated(|_| {
        // SAFETY: poll validates the array; nothing is written on failure.
        c_outcome(unsafe { libc::poll(std::ptr::null_mut(), 1, 10) })
    });
    assert_efault(reference);
}

/// Not only null: a hook that checks for null and reads any other pointer
/// crashes here.
#[test]
fn poll_with_an_unmapped_array_fails_with_efault() {
    let reference = isolated(|_| {
        let fds = UNMAPPED as *mut libc::pollfd;
        // SAFETY: poll validates the array; nothing is written on failure.
        c_outcome(unsafe { libc::poll(fds, 1, 100) })
    });
    assert_efault(reference);
}

#[test]
fn readv_with_an_unmapped_iovec_fails_with_efault() {
    let reference = isolated(|_| {
        let (reader, _writer) = std::io::pipe().unwrap();
        let iov = UNMAPPED as *const libc::iovec;
        // SAFETY: readv validates the iovec array before reading.
        c_outcome(unsafe { libc::readv(reader.as_raw_fd(), iov, 1) } as i64)
    });
    assert_efault(reference);
}

/// A valid first iovec does not make a write with an unmapped second one
/// partial: the kernel fails the whole pipe write.
#[test]
fn writev_with_an_unmapped_second_iovec_fails_with_efault() {
    let reference = isolated(|_| {
        let (_reader, mut writer) = std::io::pipe().unwrap();
        writer.write_all(b"abcd").unwrap();
        let mut valid = [0u8; 4];
        let iov = [
            libc::iovec {
                iov_base: valid.as_mut_ptr().cast(),
                iov_len: valid.len(),
            },
            libc::iovec {
                iov_base: UNMAPPED as *mut libc::c_void,
                iov_len: 4,
            },
        ];
        // SAFETY: writev validates each iovec as it copies from it.
        c_outcome(unsafe { libc::writev(writer.as_raw_fd(), iov.as_ptr(), 2) } as i64)
    });
    assert_efault(reference);
}

#[test]
fn select_with_an_unmapped_read_set_fails_with_efault() {
    let reference = isolated(|_| {
        let (reader, _writer) = std::io::pipe().unwrap();
        let read = UNMAPPED as *mut libc::fd_set;
        let null = std::ptr::null_mut();
        let mut timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 10_000,
        };
        // SAFETY: select validates the sets; the timeout is valid (glibc
        // itself reads it).
        let ret = unsafe { libc::select(reader.as_raw_fd() + 1, read, null, null, &mut timeout) };
        c_outcome(ret)
    });
    assert_efault(reference);
}

#[test]
fn fionbio_with_an_unmapped_argument_fails_with_efault() {
    let reference = isolated(|_| {
        let (reader, _writer) = std::io::pipe().unwrap();
        let arg = UNMAPPED as *mut libc::c_int;
        // SAFETY: ioctl validates its argument pointer.
        c_outcome(unsafe { libc::ioctl(reader.as_raw_fd(), libc::FIONBIO, arg) })
    });
    assert_efault(reference);
}

#[test]
fn clock_nanosleep_with_an_unmapped_request_fails_with_efault() {
    let reference = isolated(|_| {
        let request = UNMAPPED as *const libc::timespec;
        // SAFETY: clock_nanosleep validates its request pointer.
        let error = unsafe {
            libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, request, std::ptr::null_mut())
        };
        // It returns the error number itself.
        match error {
            0 => Ok(0),
            error => Err(Errno(error)),
        }
    });
    assert_efault(reference);
}

#[test]
fn nanosleep_with_an_unmapped_request_fails_with_efault() {
    let reference = isolated(|_| {
        let request = UNMAPPED as *const libc::timespec;
        // SAFETY: nanosleep validates its request pointer.
        c_outcome(unsafe { libc::nanosleep(request, std::ptr::null_mut()) })
    });
    assert_efault(reference);
}
