//! Probe: one blocking send(MSG_ZEROCOPY) is one zerocopy notification ID
//! on a thread; a coroutine's send made of several attempts uses several.

mod attack_common;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use attack_common::*;

const SO_ZEROCOPY: i32 = 60;
const MSG_ZEROCOPY: i32 = 0x4000000;

/// Drains the error queue (non-blocking): the highest notification ID seen.
fn zerocopy_ids(fd: i32) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for _ in 0..200 {
        let mut ctl = [0u64; 16];
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_control = ctl.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&ctl);
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
        if n < 0 {
            if out.is_empty() {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            break;
        }
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            if !c.is_null() {
                let ee = libc::CMSG_DATA(c) as *const libc::sock_extended_err;
                out.push(((*ee).ee_info, (*ee).ee_data));
            }
        }
    }
    out
}

#[test]
fn attack_zerocopy_one_call_one_id() {
    let body = || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut b, _) = l.accept().unwrap();
        let one: libc::c_int = 1;
        let ok = unsafe {
            libc::setsockopt(
                a.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_ZEROCOPY,
                (&one as *const libc::c_int).cast(),
                4,
            )
        };
        let small: libc::c_int = 16384;
        unsafe {
            libc::setsockopt(
                a.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&small as *const libc::c_int).cast(),
                4,
            )
        };
        b.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            let mut total = 0;
            std::thread::sleep(Duration::from_millis(50));
            while total < (1 << 20) {
                match b.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
            total
        });
        let data = vec![3u8; 1 << 20];
        let sent = unsafe {
            libc::send(
                a.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                MSG_ZEROCOPY,
            )
        };
        let got = reader.join().unwrap();
        let ids = zerocopy_ids(a.as_raw_fd());
        let hi = ids.iter().map(|&(_, hi)| hi).max();
        (ok, sent, got, hi)
    };
    let limit = Duration::from_secs(6);
    let t = on_thread(limit, body);
    let c = in_coroutine(1, limit, body);
    compare(
        "one blocking send(MSG_ZEROCOPY): highest notification ID",
        &t,
        &c,
    );
}

/// The same with TX software timestamps (SO_TIMESTAMPING) instead of
/// zerocopy: each sent segment queues a timestamp on the error queue.
#[test]
fn attack_tx_timestamps_make_blocking_send_short() {
    let body = || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut b, _) = l.accept().unwrap();
        // SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE | SOF_TIMESTAMPING_OPT_TSONLY
        let flags: libc::c_int = (1 << 1) | (1 << 4) | (1 << 11);
        let ok = unsafe {
            libc::setsockopt(
                a.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPING,
                (&flags as *const libc::c_int).cast(),
                4,
            )
        };
        let small: libc::c_int = 16384;
        unsafe {
            libc::setsockopt(
                a.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&small as *const libc::c_int).cast(),
                4,
            )
        };
        b.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            let mut total = 0;
            std::thread::sleep(Duration::from_millis(50));
            while total < (1 << 20) {
                match b.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
            total
        });
        let data = vec![3u8; 1 << 20];
        let sent = unsafe { libc::send(a.as_raw_fd(), data.as_ptr().cast(), data.len(), 0) };
        let got = reader.join().unwrap();
        (ok, sent, got)
    };
    let limit = Duration::from_secs(6);
    let t = on_thread(limit, body);
    let c = in_coroutine(1, limit, body);
    compare("blocking send of 1 MiB with TX timestamps on", &t, &c);
}
