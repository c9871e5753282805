//! Stack memory carved from large mappings.
//!
//! The `generator` crate maps every stack itself: one `mmap`, one
//! `mprotect` for its guard page (which splits the mapping in two), and one
//! `munmap` at the end. Each of those takes the process's `mmap_lock` for
//! writing, so two workers starting coroutines queue behind each other and
//! behind every page fault of a fresh stack, and each stack costs two of the
//! kernel's `vm.max_map_count` mappings. The crate has no way to take a
//! stack from its caller, so the runtime answers those three calls itself
//! while it creates or drops a generator on the calling thread
//! ([`lend`], [`reclaim`]; the hooks in `hooks/memory.rs` ask
//! [`answer_map`], [`answer_protect`] and [`answer_unmap`]): the stack is a
//! slot of a chunk mapped for many, its guard page is a guard marker
//! (`MADV_GUARD_INSTALL`, Linux 6.13+: no mapping split; elsewhere
//! `mprotect` as before), and a dropped stack's slot is kept for the next
//! one, its pages given back to the kernel in batches (one system call per
//! batch, not one per stack). Every other `mmap`, `mprotect` and `munmap`
//! in the process, and these ones on any thread that is not lending, go to
//! the kernel untouched.

use core::cell::Cell;
use core::sync::atomic::{AtomicU8, Ordering};
use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::sys::{self, syscall};

/// What the calling thread is doing with the runtime's stacks, which is
/// what decides whether a hooked memory call is the `generator` crate's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lending {
    /// Nothing: every call is the caller's own.
    Idle,
    /// Creating a generator: its stack `mmap` is still to come.
    Map,
    /// Creating a generator whose stack is the slot at `low`, `len` bytes.
    Mapped { low: usize, len: usize },
    /// Dropping a generator whose stack is `len` bytes at `low`.
    Unmap { low: usize, len: usize },
}

thread_local! {
    static LENDING: Cell<Lending> = const { Cell::new(Lending::Idle) };
}

/// Runs `create`, which creates one generator, with its stack mapping served
/// from the arena.
pub(crate) fn lend<R>(create: impl FnOnce() -> R) -> R {
    let _idle = Arm::new(Lending::Map);
    create()
}

/// Runs `drop`, which drops one generator whose stack mapping is `len`
/// bytes at `low`; if the arena lent that mapping, it takes it back.
pub(crate) fn reclaim<R>(low: usize, len: usize, drop: impl FnOnce() -> R) -> R {
    let _idle = Arm::new(Lending::Unmap { low, len });
    drop()
}

/// Sets the calling thread's lending state and puts it back to idle when
/// dropped, unwinding included.
struct Arm;

impl Arm {
    fn new(state: Lending) -> Arm {
        LENDING.set(state);
        Arm
    }
}

impl Drop for Arm {
    fn drop(&mut self) {
        LENDING.set(Lending::Idle);
    }
}

/// The flags the `generator` crate maps a stack with.
const STACK_PROT: libc::c_int = libc::PROT_READ | libc::PROT_WRITE;
const STACK_FLAGS: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK;

/// The answer to an `mmap` call if it is the stack mapping of a generator
/// being created on this thread: a slot's address, or the kernel's error
/// number if no chunk could be mapped. `None`: not the arena's call.
pub(crate) fn answer_map(
    addr: usize,
    len: usize,
    prot: libc::c_int,
    flags: libc::c_int,
    fd: libc::c_int,
    offset: libc::off_t,
) -> Option<Result<usize, libc::c_int>> {
    let ours = (addr, prot, flags, fd, offset) == (0, STACK_PROT, STACK_FLAGS, -1, 0);
    if !ours || len == 0 || !len.is_multiple_of(PAGE) || LENDING.get() != Lending::Map {
        return None;
    }
    let slot = ARENA.take(len);
    if let Ok(low) = slot {
        LENDING.set(Lending::Mapped { low, len });
    }
    Some(slot)
}

/// The answer to an `mprotect` call if it is the guard page of the slot
/// just lent: 0, since slots carry their guard from the start.
pub(crate) fn answer_protect(addr: usize, len: usize, prot: libc::c_int) -> Option<libc::c_int> {
    match LENDING.get() {
        Lending::Mapped { low, .. } if (addr, len, prot) == (low, PAGE, libc::PROT_NONE) => Some(0),
        _ => None,
    }
}

/// The answer to a `munmap` call if it releases a slot the arena lent
/// (a generator dropped, or one whose creation failed): 0, the slot kept.
pub(crate) fn answer_unmap(addr: usize, len: usize) -> Option<libc::c_int> {
    match LENDING.get() {
        Lending::Mapped { low, len: lent } | Lending::Unmap { low, len: lent }
            if (addr, len) == (low, lent) && ARENA.put(low, len) =>
        {
            Some(0)
        }
        _ => None,
    }
}

/// How many of the kernel's memory mappings a lent stack takes: none with
/// guard markers (its chunk is one mapping for many), two without (the
/// guard page and the stack).
pub(crate) fn mappings_per_stack() -> usize {
    match GuardKind::get() {
        GuardKind::Marker => 0,
        GuardKind::Unknown | GuardKind::Protect => 2,
    }
}

const PAGE: usize = 4096;

/// The most slots a chunk holds, and the most bytes it spans.
const CHUNK_SLOTS: usize = 1024;
const CHUNK_BYTES: usize = 128 << 20;

/// Released slots whose pages are still resident, per stack size, before
/// the oldest [`RELEASE_BATCH`] of them are given back to the kernel.
const DIRTY_SLOTS: usize = 64;
const RELEASE_BATCH: usize = 32;

static ARENA: Arena = Arena {
    classes: Mutex::new(Vec::new()),
};

/// Slots of every stack size, each size with chunks of its own.
struct Arena {
    classes: Mutex<Vec<Class>>,
}

/// The slots of one mapping length.
struct Class {
    len: usize,
    /// Released slots, most recent last; their pages may be resident.
    dirty: Vec<usize>,
    /// Released slots whose pages were given back.
    clean: Vec<usize>,
    /// The unused part of the newest chunk: `[next, end)`.
    next: usize,
    end: usize,
    /// Slots in the next chunk: grows up to [`CHUNK_SLOTS`].
    chunk_slots: usize,
    /// Every chunk's range (start to end), to recognise a slot when it
    /// comes back.
    chunks: BTreeMap<usize, usize>,
}

impl Arena {
    /// A slot of `len` bytes with its guard page in place.
    fn take(&self, len: usize) -> Result<usize, libc::c_int> {
        let mut classes = self.classes.lock().unwrap_or_else(|e| e.into_inner());
        let class = match classes.iter().position(|c| c.len == len) {
            Some(i) => &mut classes[i],
            None => {
                classes.push(Class::new(len));
                classes.last_mut().expect("just pushed")
            }
        };
        if let Some(low) = class.dirty.pop().or_else(|| class.clean.pop()) {
            return Ok(low);
        }
        if class.next == class.end {
            class.map_chunk()?;
        }
        let low = class.next;
        install_guard(low)?;
        class.next += len;
        Ok(low)
    }

    /// Keeps a released slot; false if `low` is no slot of `len` bytes.
    fn put(&self, low: usize, len: usize) -> bool {
        let mut classes = self.classes.lock().unwrap_or_else(|e| e.into_inner());
        let Some(class) = classes.iter_mut().find(|c| c.len == len && c.owns(low)) else {
            return false;
        };
        class.dirty.push(low);
        if class.dirty.len() < DIRTY_SLOTS {
            return true;
        }
        let batch: Vec<usize> = class.dirty.drain(..RELEASE_BATCH).collect();
        drop(classes);
        // Outside the lock: the kernel's work is the expensive part, and the
        // batch is in no list meanwhile, so nobody else can take its slots.
        release_pages(&batch, len);
        let mut classes = self.classes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(class) = classes.iter_mut().find(|c| c.len == len) {
            class.clean.extend(batch);
        }
        true
    }
}

impl Class {
    fn new(len: usize) -> Class {
        Class {
            len,
            dirty: Vec::new(),
            clean: Vec::new(),
            next: 0,
            end: 0,
            chunk_slots: 4,
            chunks: BTreeMap::new(),
        }
    }

    fn owns(&self, low: usize) -> bool {
        self.chunks
            .range(..=low)
            .next_back()
            .is_some_and(|(&start, &end)| low < end && (low - start).is_multiple_of(self.len))
    }

    /// Maps the next chunk, with the `generator` crate's protection and
    /// flags (`MAP_STACK` also keeps transparent huge pages out of stacks);
    /// smaller ones, down to one slot, if the address space is short.
    fn map_chunk(&mut self) -> Result<(), libc::c_int> {
        let mut slots = self.chunk_slots.min(CHUNK_BYTES / self.len).max(1);
        let (start, bytes) = loop {
            let bytes = slots * self.len;
            let ret = syscall!(libc::SYS_mmap, 0, bytes, STACK_PROT, STACK_FLAGS, -1i32, 0);
            match sys::check(ret) {
                Ok(start) => break (start, bytes),
                Err(libc::ENOMEM) if slots > 1 => slots /= 2,
                Err(error) => return Err(error),
            }
        };
        self.chunks.insert(start, start + bytes);
        self.next = start;
        self.end = start + bytes;
        self.chunk_slots = (self.chunk_slots * 2).min(CHUNK_SLOTS);
        Ok(())
    }
}

/// How guard pages are made, learnt from the first one.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum GuardKind {
    Unknown = 0,
    /// `MADV_GUARD_INSTALL`: a marker in the page tables, no new mapping.
    Marker = 1,
    /// `mprotect(PROT_NONE)`: splits the chunk's mapping.
    Protect = 2,
}

static GUARD_KIND: AtomicU8 = AtomicU8::new(GuardKind::Unknown as u8);

impl GuardKind {
    fn get() -> GuardKind {
        match GUARD_KIND.load(Ordering::Relaxed) {
            1 => GuardKind::Marker,
            2 => GuardKind::Protect,
            _ => GuardKind::Unknown,
        }
    }
}

/// Makes the lowest page of the slot at `low` a guard page. A marker
/// survives `MADV_DONTNEED` and stays for the slot's life.
fn install_guard(low: usize) -> Result<(), libc::c_int> {
    if GuardKind::get() != GuardKind::Protect {
        let ret = syscall!(libc::SYS_madvise, low, PAGE, sys::MADV_GUARD_INSTALL);
        if ret == 0 {
            GUARD_KIND.store(GuardKind::Marker as u8, Ordering::Relaxed);
            return Ok(());
        }
        if ret != -(libc::EINVAL as isize) {
            return Err(-ret as libc::c_int);
        }
        // A kernel older than 6.13.
        GUARD_KIND.store(GuardKind::Protect as u8, Ordering::Relaxed);
    }
    let ret = syscall!(libc::SYS_mprotect, low, PAGE, libc::PROT_NONE);
    sys::check(ret).map(drop)
}

/// Gives back the pages of released slots of `len` bytes; guard pages
/// keep their markers.
fn release_pages(slots: &[usize], len: usize) {
    let ranges: Vec<(usize, usize)> = slots.iter().map(|&low| (low + PAGE, len - PAGE)).collect();
    give_back(&ranges);
}

/// Gives the pages of `(address, length)` ranges back to the kernel
/// (`MADV_DONTNEED`): in one `process_madvise` where the kernel allows it
/// on the calling process (Linux 6.13+; one TLB flush for the batch on
/// 6.16+), else one `madvise` each.
pub(crate) fn give_back(ranges: &[(usize, usize)]) {
    let vectors: Vec<libc::iovec> = ranges
        .iter()
        .map(|&(address, len)| libc::iovec {
            iov_base: address as *mut libc::c_void,
            iov_len: len,
        })
        .collect();
    let total: usize = ranges.iter().map(|&(_, len)| len).sum();
    let ret = syscall!(
        libc::SYS_process_madvise,
        sys::PIDFD_SELF,
        vectors.as_ptr(),
        vectors.len(),
        libc::MADV_DONTNEED,
        0
    );
    if ret == total as isize {
        return;
    }
    for &(address, len) in ranges {
        let _ = syscall!(libc::SYS_madvise, address, len, libc::MADV_DONTNEED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stack mapping of `len` bytes as the `generator` crate makes one,
    /// through the hooked `mmap` and `mprotect`.
    fn map_like_generator(len: usize) -> usize {
        // SAFETY: an anonymous mapping request; the hook or the kernel
        // answers it.
        let low = unsafe { libc::mmap(core::ptr::null_mut(), len, STACK_PROT, STACK_FLAGS, -1, 0) };
        assert_ne!(low, libc::MAP_FAILED);
        // SAFETY: the lowest page of the mapping just made.
        assert_eq!(unsafe { libc::mprotect(low, PAGE, libc::PROT_NONE) }, 0);
        low as usize
    }

    fn unmap(low: usize, len: usize) {
        // SAFETY: the mapping (or slot) made by `map_like_generator`.
        assert_eq!(unsafe { libc::munmap(low as *mut libc::c_void, len) }, 0);
    }

    fn lent(len: usize) -> bool {
        let classes = ARENA.classes.lock().unwrap();
        classes.iter().any(|c| c.len == len && c.next != 0)
    }

    /// Lent stacks are slots of one chunk, and a slot given back is the
    /// next one lent.
    #[test]
    fn slots_come_from_chunks_and_are_reused() {
        let len = 40 * PAGE;
        let first = lend(|| map_like_generator(len));
        let second = lend(|| map_like_generator(len));
        assert!(lent(len));
        assert_eq!(second, first + len, "slots are carved in order");
        // SAFETY: the slot's stack pages, writable.
        unsafe { ((first + PAGE) as *mut u8).write(1) };
        reclaim(first, len, || unmap(first, len));
        assert_eq!(lend(|| map_like_generator(len)), first);
        reclaim(second, len, || unmap(second, len));
        reclaim(first, len, || unmap(first, len));
    }

    /// Calls made while not lending, or not shaped like the crate's, are
    /// the kernel's: a mapping of its own, really unmapped.
    #[test]
    fn other_calls_pass_through() {
        let len = 24 * PAGE;
        let own = map_like_generator(len);
        assert!(!lent(len), "not lending: a mapping of its own");
        unmap(own, len);
        let other = lend(|| {
            // SAFETY: an anonymous mapping request without MAP_STACK.
            unsafe {
                libc::mmap(
                    core::ptr::null_mut(),
                    len,
                    STACK_PROT,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            }
        });
        assert!(!lent(len), "other flags: not the crate's call");
        unmap(other as usize, len);
        // A slot taken back only with its exact range.
        let slot = lend(|| map_like_generator(len));
        // SAFETY: an unaligned address: the kernel refuses it.
        let ret = reclaim(slot, len, || unsafe {
            libc::munmap((slot + 1) as *mut libc::c_void, len)
        });
        assert_eq!((ret, sys::errno()), (-1, libc::EINVAL));
        reclaim(slot, len, || unmap(slot, len));
    }

    /// Released slots past the dirty allowance have their pages given
    /// back, in batches.
    #[test]
    fn released_pages_are_given_back() {
        let len = 8 * PAGE;
        let slots: Vec<usize> = (0..DIRTY_SLOTS)
            .map(|_| lend(|| map_like_generator(len)))
            .collect();
        for &low in &slots {
            // SAFETY: the slot's top page, writable.
            unsafe { ((low + len - PAGE) as *mut u8).write(1) };
        }
        for &low in &slots {
            reclaim(low, len, || unmap(low, len));
        }
        let resident = |low: usize| {
            let mut vec = [0u8; 1];
            // SAFETY: one page of a mapped slot; `vec` holds its one byte.
            let ret = unsafe {
                libc::mincore(
                    (low + len - PAGE) as *mut libc::c_void,
                    PAGE,
                    vec.as_mut_ptr(),
                )
            };
            assert_eq!(ret, 0);
            vec[0] & 1 == 1
        };
        let given_back = slots.iter().filter(|&&low| !resident(low)).count();
        assert_eq!(given_back, RELEASE_BATCH, "the oldest batch is given back");
        assert!(slots[..RELEASE_BATCH].iter().all(|&low| !resident(low)));
    }

    /// The guard page of a lent slot faults; the check runs in a child so
    /// the fault ends only that process.
    #[test]
    fn guard_pages_fault() {
        let len = 16 * PAGE;
        let low = lend(|| map_like_generator(len));
        // SAFETY: fork; the child only touches memory and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: the guard page: this faults and kills the child.
            unsafe { core::ptr::read_volatile(low as *const u8) };
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV);
        reclaim(low, len, || unmap(low, len));
    }
}
