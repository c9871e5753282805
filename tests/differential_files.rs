//! Regular files, differentially (issue item 7): a regular file reads and
//! writes exactly as on a thread, whatever its page cache holds and
//! whatever flags it was opened with. O_NONBLOCK means nothing for regular
//! files, and a read returns the whole request up to end of file, waiting
//! for the disk if it must.
//!
//! The cases drop the file's pages from the page cache first (written,
//! synced, then `POSIX_FADV_DONTNEED`), so that reading it needs the disk:
//! a per-call non-blocking read (`RWF_NOWAIT`) then fails or stops short.
//! The temporary directory here is on ext4 (see /work/shared/facts.md); on
//! tmpfs nothing could be dropped and the cases would pass vacuously, so
//! each checks that the pages are gone.

mod support;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use support::differential::*;

const MIB: usize = 1 << 20;

/// A file in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    /// A new file of `len` bytes (byte `i` is `i % 251`), on disk and not in
    /// the page cache.
    fn uncached(len: usize) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "coroutines-differential-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut file = File::create(&path).unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        file.write_all(&data).unwrap();
        file.sync_all().unwrap();
        let temp = TempFile(path);
        temp.drop_cache(&file);
        temp
    }

    /// Drops the file's clean pages from the page cache, and checks that
    /// its first page is gone.
    fn drop_cache(&self, file: &File) {
        // SAFETY: advice on a live descriptor.
        let ret = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(ret, 0, "posix_fadvise");
        assert!(
            !first_page_cached(file),
            "{:?}: the page cache kept the file (tmpfs?)",
            self.0
        );
    }

    fn open(&self, flags: i32) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(flags)
            .open(&self.0)
            .unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Whether reading the first byte of `file` needs no disk access: a raw
/// `preadv2(RWF_NOWAIT)`, which no hook sees, fails with EAGAIN otherwise.
fn first_page_cached(file: &File) -> bool {
    let mut byte = [0u8];
    let iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: one iovec over a live byte.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_preadv2,
            file.as_raw_fd(),
            &iov,
            1,
            0,
            0,
            libc::RWF_NOWAIT,
        )
    };
    ret == 1
}

/// Whether `data` is the content [`TempFile::uncached`] wrote, from 0.
fn is_content(data: &[u8]) -> bool {
    data.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8)
}

/// What a read returned: its count (or error) and whether the bytes are
/// the file's.
#[derive(Debug, PartialEq)]
struct ReadBack {
    result: Result<usize, Errno>,
    content: bool,
}

#[test]
fn read_to_end_of_an_uncached_file_opened_nonblocking() {
    let got = differential("read_to_end, O_NONBLOCK, not cached", |_| {
        let temp = TempFile::uncached(MIB);
        let mut file = temp.open(libc::O_NONBLOCK);
        let mut data = Vec::new();
        let result = outcome(file.read_to_end(&mut data));
        ReadBack {
            result,
            content: is_content(&data),
        }
    });
    assert_eq!(
        got,
        ReadBack {
            result: Ok(MIB),
            content: true,
        }
    );
}

#[test]
fn read_of_a_file_whose_head_only_is_cached_returns_the_whole_request() {
    let got = differential("read with only the head cached", |_| {
        let temp = TempFile::uncached(4 * MIB);
        let mut file = temp.open(0);
        // Read ahead nothing: only the page read next is cached.
        // SAFETY: advice on a live descriptor.
        let ret = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
        assert_eq!(ret, 0);
        file.read_exact_at(&mut [0u8; 4096], 0).unwrap();
        assert!(first_page_cached(&file));
        let mut data = vec![0u8; MIB];
        let result = outcome(file.read(&mut data));
        ReadBack {
            result,
            content: is_content(&data),
        }
    });
    assert_eq!(
        got,
        ReadBack {
            result: Ok(MIB),
            content: true,
        }
    );
}

/// Passes today: the per-call non-blocking read fails with EAGAIN, the
/// hook then finds that epoll refuses the file and makes the plain read.
#[test]
fn read_of_an_uncached_file_returns_the_whole_request() {
    let got = differential("read, not cached", |_| {
        let temp = TempFile::uncached(MIB);
        let mut file = temp.open(0);
        let mut data = vec![0u8; MIB];
        let result = outcome(file.read(&mut data));
        ReadBack {
            result,
            content: is_content(&data),
        }
    });
    assert_eq!(
        got,
        ReadBack {
            result: Ok(MIB),
            content: true,
        }
    );
}

/// What a single `write` of `len` bytes at the end of an uncached file
/// opened with `flags` returned, and how long the file is afterwards.
fn append_once(len: usize, flags: i32) -> (Result<usize, Errno>, u64) {
    let temp = TempFile::uncached(MIB);
    let mut file = temp.open(flags | libc::O_APPEND);
    let result = outcome(file.write(&vec![1u8; len]));
    (result, file.metadata().unwrap().len())
}

/// Passes today, as the next one: ext4 refuses `RWF_NOWAIT` for buffered
/// writes (EOPNOTSUPP), and the hook then makes the plain write.
#[test]
fn write_to_an_uncached_file_writes_the_whole_request() {
    let got = differential("write, 4 MiB appended", |_| append_once(4 * MIB, 0));
    assert_eq!(got, (Ok(4 * MIB), 5 * MIB as u64));
}

#[test]
fn write_to_an_uncached_file_opened_nonblocking_writes_the_whole_request() {
    let got = differential("write, 4 MiB appended, O_NONBLOCK", |_| {
        append_once(4 * MIB, libc::O_NONBLOCK)
    });
    assert_eq!(got, (Ok(4 * MIB), 5 * MIB as u64));
}
