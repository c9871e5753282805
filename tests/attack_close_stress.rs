//! Probes: closing descriptors that coroutines on two workers wait on, with
//! the numbers reused at once.

mod attack_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use attack_common::*;

#[test]
fn attack_close_and_reuse_under_waiters_two_workers() {
    let r = in_coroutine(2, Duration::from_secs(60), || {
        let stolen = Arc::new(AtomicUsize::new(0));
        let ebadf = Arc::new(AtomicUsize::new(0));
        let other = Arc::new(AtomicUsize::new(0));
        let mut hs = Vec::new();
        for i in 0..200usize {
            let (stolen, ebadf, other) = (stolen.clone(), ebadf.clone(), other.clone());
            hs.push(coroutines::spawn(move || {
                let mut p = [0; 2];
                unsafe { libc::pipe(p.as_mut_ptr()) };
                let (r, w) = (p[0], p[1]);
                let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let st = started.clone();
                let reader = coroutines::spawn(move || {
                    let mut b = [0u8; 16];
                    st.store(true, Ordering::SeqCst);
                    let n = unsafe { libc::read(r, b.as_mut_ptr().cast(), 16) };
                    if n < 0 {
                        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
                    } else {
                        Ok(b[..n as usize].to_vec())
                    }
                });
                while !started.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_micros(200));
                }
                std::thread::sleep(Duration::from_micros(2000 + (i as u64 * 37) % 3000));
                unsafe { libc::close(r) };
                // Reuse the number at once with a pipe full of "new".
                let mut q = [0; 2];
                unsafe { libc::pipe(q.as_mut_ptr()) };
                unsafe { libc::write(q[1], b"new".as_ptr().cast(), 3) };
                let got = reader.join().unwrap();
                match got {
                    Err(libc::EBADF) => ebadf.fetch_add(1, Ordering::Relaxed),
                    Ok(ref v) if v == b"new" => stolen.fetch_add(1, Ordering::Relaxed),
                    _ => other.fetch_add(1, Ordering::Relaxed),
                };
                unsafe {
                    libc::close(w);
                    libc::close(q[0]);
                    libc::close(q[1]);
                }
            }));
        }
        for h in hs {
            h.join().unwrap();
        }
        (
            ebadf.load(Ordering::Relaxed),
            stolen.load(Ordering::Relaxed),
            other.load(Ordering::Relaxed),
        )
    });
    eprintln!("[close+reuse] (EBADF, read the new file, other) = {r:?}");
    assert!(r.is_some(), "hung");
}
