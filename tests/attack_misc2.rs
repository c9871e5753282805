//! Probes: pidfds, vfork children, more poll flags.

mod attack_common;

use std::time::Duration;

use attack_common::*;

macro_rules! both {
    ($name:literal, $limit:expr, $body:expr) => {{
        let t = on_thread($limit, $body);
        let c = in_coroutine(1, $limit, $body);
        compare($name, &t, &c);
    }};
}

#[test]
fn attack_pidfd_poll() {
    both!(
        "poll on a pidfd until the child exits",
        Duration::from_secs(4),
        || {
            let child = std::process::Command::new("sleep")
                .arg("0.2")
                .spawn()
                .unwrap();
            let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as i32, 0) } as i32;
            let mut p = libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            };
            let (n, took) = timed(|| unsafe { libc::poll(&mut p, 1, 3000) });
            let mut child = child;
            let _ = child.wait();
            unsafe { libc::close(pidfd) };
            (
                n,
                p.revents,
                took >= Duration::from_millis(150) && took < Duration::from_millis(1500),
            )
        }
    );
}

/// A vfork child closes a descriptor (its own copy) before exec; the
/// parent's reader of that descriptor, a neighbour, must not notice.
#[test]
fn attack_vfork_child_close_does_not_touch_parent() {
    fn body(spawn: Spawner<(Result<isize, i32>, bool)>) -> (Result<isize, i32>, bool) {
        let mut p = [0; 2];
        unsafe { libc::pipe(p.as_mut_ptr()) };
        let (r, w) = (p[0], p[1]);
        let reader = spawn(Box::new(move || {
            let mut b = [0u8; 8];
            let (n, took) = timed(|| res(unsafe { libc::read(r, b.as_mut_ptr().cast(), 8) }));
            (n, took >= Duration::from_millis(250))
        }));
        std::thread::sleep(Duration::from_millis(50));
        let path = c"/bin/true";
        let argv = [path.as_ptr(), std::ptr::null()];
        // The call under test, deprecated in `libc` for its hazards.
        #[allow(deprecated)]
        let pid = unsafe { libc::vfork() };
        if pid == 0 {
            unsafe {
                libc::close(r);
                libc::execv(path.as_ptr(), argv.as_ptr());
                libc::_exit(127);
            }
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        std::thread::sleep(Duration::from_millis(250));
        unsafe { libc::write(w, b"ok".as_ptr().cast(), 2) };
        let got = reader();
        unsafe {
            libc::close(r);
            libc::close(w);
        }
        got
    }
    let limit = Duration::from_secs(4);
    let t = on_thread(limit, || {
        body(|f| {
            let h = std::thread::spawn(f);
            Box::new(move || h.join().unwrap())
        })
    });
    let c = in_coroutine(1, limit, || {
        body(|f| {
            let h = coroutines::spawn(f);
            Box::new(move || h.join().unwrap())
        })
    });
    compare("vfork child's close(fd) vs the parent's reader", &t, &c);
}

#[test]
fn attack_poll_wrband_only() {
    both!(
        "poll(POLLWRBAND) on a full pipe, drained at 100 ms",
        Duration::from_secs(4),
        || {
            let mut p = [0; 2];
            unsafe { libc::pipe(p.as_mut_ptr()) };
            let chunk = vec![0u8; 65536];
            unsafe {
                let fl = libc::fcntl(p[1], libc::F_GETFL);
                libc::fcntl(p[1], libc::F_SETFL, fl | libc::O_NONBLOCK);
                while libc::write(p[1], chunk.as_ptr().cast(), chunk.len()) > 0 {}
                libc::fcntl(p[1], libc::F_SETFL, fl);
            }
            let r = p[0];
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                let mut b = vec![0u8; 1 << 17];
                unsafe { libc::read(r, b.as_mut_ptr().cast(), b.len()) };
                std::thread::sleep(Duration::from_secs(3));
            });
            let mut q = libc::pollfd {
                fd: p[1],
                events: libc::POLLWRBAND,
                revents: 0,
            };
            let (n, took) = timed(|| unsafe { libc::poll(&mut q, 1, 2000) });
            (n, q.revents, took < Duration::from_millis(1000))
        }
    );
}
