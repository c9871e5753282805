//! Probes: FIFOs (named pipes) opened with open(2), which the hooks do not
//! see, read and written in coroutines.

mod attack_common;

use std::time::Duration;

use attack_common::*;

fn fifo() -> std::ffi::CString {
    let p = std::env::temp_dir().join(format!(
        "attack-fifo2-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    c
}

fn rw(fd: i32, data: Option<&[u8]>) -> Result<isize, i32> {
    let mut b = [0u8; 16];
    res(match data {
        Some(d) => unsafe { libc::write(fd, d.as_ptr().cast(), d.len()) },
        None => unsafe { libc::read(fd, b.as_mut_ptr().cast(), 16) },
    })
}

/// A FIFO opened O_RDWR: write 3 bytes, read them back.
#[test]
fn attack_fifo_rdwr_write_then_read() {
    let limit = Duration::from_secs(3);
    let body = || {
        let path = fifo();
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR) };
        let w = rw(fd, Some(b"abc"));
        let r = rw(fd, None);
        unsafe {
            libc::close(fd);
            libc::unlink(path.as_ptr());
        }
        (w, r)
    };
    let t = on_thread(limit, body);
    let c = in_coroutine(1, limit, body);
    compare("FIFO O_RDWR write+read", &t, &c);
}

/// A FIFO opened with separate reader and writer (the writer opened
/// O_RDWR first so that neither open blocks).
#[test]
fn attack_fifo_separate_ends() {
    let limit = Duration::from_secs(3);
    let body = || {
        let path = fifo();
        let keep = unsafe { libc::open(path.as_ptr(), libc::O_RDWR) };
        let r = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
        let w = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY) };
        let wr = rw(w, Some(b"abc"));
        let rd = rw(r, None);
        // Now a read that must wait for a late write from a thread.
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            unsafe { libc::write(w, b"late".as_ptr().cast(), 4) };
            w
        });
        let rd2 = rw(r, None);
        let w = late.join().unwrap();
        unsafe {
            libc::close(keep);
            libc::close(r);
            libc::close(w);
            libc::unlink(path.as_ptr());
        }
        (wr, rd, rd2)
    };
    let t = on_thread(limit, body);
    let c = in_coroutine(1, limit, body);
    compare("FIFO separate ends", &t, &c);
}
