//! The runtime's futex table, as the futex probes see it from outside: its
//! geometry (`futex/bucket.rs`), words that share a bucket with a given
//! one, and `syscall(SYS_futex, ..)` through the hook.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// 512 buckets, Fibonacci hashing of the word index.
pub const BUCKETS: usize = 512;

/// More than `DISARM_AFTER` (256) wakes in a row to nobody: enough to
/// disarm a bucket.
pub const IDLE: usize = 300;

/// The bucket of the futex word at `addr`.
pub fn bucket_of(addr: usize) -> usize {
    (((addr >> 2) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 55) as usize
}

/// Words to wake nobody on: enough that every bucket has some.
static NOISE: [AtomicU32; 16 * 1024] = [const { AtomicU32::new(0) }; 16 * 1024];

/// A noise word in each bucket.
pub fn noise_per_bucket() -> Vec<&'static AtomicU32> {
    let mut found: Vec<Option<&'static AtomicU32>> = vec![None; BUCKETS];
    for word in &NOISE {
        found[bucket_of(word.as_ptr() as usize)].get_or_insert(word);
    }
    found
        .into_iter()
        .map(|w| w.expect("a bucket without noise"))
        .collect()
}

/// A noise word, other than `addr`, that shares `addr`'s bucket (a hash
/// collision).
pub fn noise_beside(addr: usize) -> &'static AtomicU32 {
    NOISE
        .iter()
        .find(|w| w.as_ptr() as usize != addr && bucket_of(w.as_ptr() as usize) == bucket_of(addr))
        .expect("no noise word in the bucket")
}

/// `n` words of `words` after the first, all in the first one's bucket.
pub fn bucket_mates(words: &'static [AtomicU32], n: usize) -> Vec<&'static AtomicU32> {
    let bucket = bucket_of(words[0].as_ptr() as usize);
    let mates: Vec<_> = words[1..]
        .iter()
        .filter(|w| bucket_of(w.as_ptr() as usize) == bucket)
        .take(n)
        .collect();
    assert_eq!(mates.len(), n, "not enough words in the first one's bucket");
    mates
}

/// `syscall(SYS_futex, ..)` through libc, i.e. the hook, with full-width
/// argument words.
pub fn futex(
    uaddr: usize,
    op: usize,
    val: usize,
    timeout: usize,
    uaddr2: usize,
    val3: usize,
) -> i64 {
    // SAFETY: the probes pass words the kernel validates; no wait here
    // can block for long (values differ, or timeouts are zero or short).
    unsafe { libc::syscall(libc::SYS_futex, uaddr, op, val, timeout, uaddr2, val3) }
}

/// A private `FUTEX_WAIT` on `word` through the hook, with a relative
/// `timeout` or none; the raw result.
pub fn private_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> i64 {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(0, |ts| ts as *const libc::timespec as usize);
    let op = (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as usize;
    futex(word.as_ptr() as usize, op, expected as usize, ts_ptr, 0, 0)
}

/// A private `FUTEX_WAKE` of up to `n` waiters of `word` through the hook;
/// the raw result.
pub fn private_wake(word: &AtomicU32, n: usize) -> i64 {
    let op = (libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as usize;
    futex(word.as_ptr() as usize, op, n, 0, 0, 0)
}
