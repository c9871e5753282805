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
//! batch, not one per stack) once more than a few MiB of them are
//! resident; a chunk whose slots are all free is unmapped, so address space
//! and commit charge come back too (`memory::Slots`). A runtime with
//! thread identities asks for floored slots (`stack_floor`), whose guard
//! page lies two pages up; they are kept apart from the others. Only the
//! stacks of the workers' pools (the runtime's default size, unmeasured)
//! are lent: other sizes come and go one by one and gain nothing from
//! chunks. Every other `mmap`,
//! `mprotect` and `munmap` in the process, and these ones on a thread that
//! is not lending or while a signal handler runs, go to the kernel
//! untouched.

use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;

use super::{stack_floor, switch};
use crate::memory::{self, Slots, PAGE};
use crate::sys::{self, syscall};

/// What the calling thread is doing with the runtime's stacks, which is
/// what decides whether a hooked memory call is the `generator` crate's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lending {
    /// Nothing: every call is the caller's own.
    Idle,
    /// Creating a generator: its stack `mmap` is still to come; with a
    /// floor (`stack_floor`) or not.
    Map { floored: bool },
    /// Answering that `mmap`: a call made meanwhile (by a signal handler
    /// the hooks did not install) is not the crate's.
    Taking,
    /// Creating a generator whose stack is the slot at `low`, `len` bytes.
    Mapped { low: usize, len: usize },
    /// Dropping a generator whose stack is `len` bytes at `low`.
    Unmap { low: usize, len: usize },
    /// Dropping a generator whose stack the arena has taken back.
    Reclaimed,
}

thread_local! {
    static LENDING: Cell<Lending> = const { Cell::new(Lending::Idle) };
}

/// Runs `create`, which creates one generator, with its stack mapping served
/// from the arena, `floored` (its guard page above the floor) or not;
/// whether it was. Memory locked for the future (`mlockall(MCL_FUTURE)`)
/// would lock whole chunks, so then the stack maps its own.
pub(crate) fn lend<R>(floored: bool, create: impl FnOnce() -> R) -> (R, bool) {
    if memory_locked() {
        return (create(), false);
    }
    let arm = Arm::new(Lending::Map { floored });
    let created = create();
    (created, matches!(arm.state(), Lending::Mapped { .. }))
}

/// Runs `drop`, which drops one generator whose stack mapping is `len`
/// bytes at `low`; if the arena lent that mapping, it takes it back.
/// Returns whether it did.
pub(crate) fn reclaim(low: usize, len: usize, drop: impl FnOnce()) -> bool {
    let arm = Arm::new(Lending::Unmap { low, len });
    drop();
    arm.state() == Lending::Reclaimed
}

/// The calling thread's lending state as the hooks see it: idle while a
/// signal handler runs, whose calls are its own.
fn state() -> Lending {
    match switch::in_signal_handler() {
        true => Lending::Idle,
        false => LENDING.get(),
    }
}

/// Sets the calling thread's lending state and puts the one before back
/// when dropped, unwinding included (a generator's drop may run code that
/// creates or drops another).
struct Arm(Lending);

impl Arm {
    fn new(state: Lending) -> Arm {
        Arm(LENDING.replace(state))
    }

    fn state(&self) -> Lending {
        LENDING.get()
    }
}

impl Drop for Arm {
    fn drop(&mut self) {
        LENDING.set(self.0);
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
    let Lending::Map { floored } = state() else {
        return None;
    };
    if !ours || len == 0 || !len.is_multiple_of(PAGE) {
        return None;
    }
    LENDING.set(Lending::Taking);
    let slot = ARENA.take(len, floored);
    LENDING.set(match slot {
        Ok(low) => Lending::Mapped { low, len },
        Err(_) => Lending::Map { floored },
    });
    Some(slot)
}

/// The answer to an `mprotect` call if it is the guard page of the slot
/// just lent: 0, since slots carry their guard from the start (a floored
/// slot's two pages above, where the crate asks for it).
pub(crate) fn answer_protect(addr: usize, len: usize, prot: libc::c_int) -> Option<libc::c_int> {
    if (len, prot) != (PAGE, libc::PROT_NONE) {
        return None;
    }
    match state() {
        Lending::Mapped { low, .. } if addr == low => Some(0),
        _ => None,
    }
}

/// The answer to a `munmap` call if it releases a slot the arena lent
/// (a generator dropped, or one whose creation failed): 0, the slot kept.
pub(crate) fn answer_unmap(addr: usize, len: usize) -> Option<libc::c_int> {
    match state() {
        Lending::Mapped { low, len: lent } | Lending::Unmap { low, len: lent }
            if (addr, len) == (low, lent) && ARENA.put(low, len) =>
        {
            LENDING.set(Lending::Reclaimed);
            Some(0)
        }
        _ => None,
    }
}

/// Whether memory is locked for the future (`mlockall(MCL_FUTURE)`).
static LOCKED_FUTURE: AtomicBool = AtomicBool::new(false);

/// Follows a successful `mlockall(flags)`: lent stacks are made resident
/// (locking the process's memory stops at the first guard marker of a
/// chunk), and with `MCL_FUTURE` no more are lent.
pub(crate) fn on_mlockall(flags: libc::c_int) {
    if flags & libc::MCL_FUTURE != 0 {
        LOCKED_FUTURE.store(true, Ordering::Relaxed);
    }
    if flags & libc::MCL_CURRENT != 0 {
        let mut classes = ARENA.classes.lock().unwrap_or_else(|e| e.into_inner());
        for class in classes.iter_mut() {
            class.slots.populate();
        }
    }
}

/// Whether future memory is locked: every fresh stack is then resident
/// and locked at once, so none is made ahead of need.
pub(crate) fn memory_locked() -> bool {
    LOCKED_FUTURE.load(Ordering::Relaxed)
}

/// Follows a successful `munlockall()`.
pub(crate) fn on_munlockall() {
    LOCKED_FUTURE.store(false, Ordering::Relaxed);
}

/// Unmaps every chunk none of whose slots is lent: a runtime has gone, and
/// with it the stacks it cached.
pub(crate) fn trim() {
    let mut classes = ARENA.classes.lock().unwrap_or_else(|e| e.into_inner());
    classes.iter_mut().for_each(|class| class.slots.trim());
    classes.retain(|class| !class.slots.is_empty());
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

static ARENA: Arena = Arena {
    classes: Mutex::new(Vec::new()),
};

/// Slots of every stack size, and layout, lent so far.
struct Arena {
    classes: Mutex<Vec<Class>>,
}

/// The slots of one size and layout: with a floor (guard page two pages
/// up) or without (guard page lowest).
struct Class {
    floored: bool,
    slots: Slots,
}

impl Arena {
    /// A slot of `len` bytes, `floored` or not, with its guard page in place.
    fn take(&self, len: usize, floored: bool) -> Result<usize, libc::c_int> {
        let mut classes = self.classes.lock().unwrap_or_else(|e| e.into_inner());
        let i = match classes
            .iter()
            .position(|c| (c.slots.stride(), c.floored) == (len, floored))
        {
            Some(i) => i,
            None => {
                let spare = match floored {
                    true => stack_floor::spare,
                    false => above_guard,
                };
                let slots = Slots::new(len, spare);
                classes.push(Class { floored, slots });
                classes.len() - 1
            }
        };
        let guard_of = match floored {
            true => stack_floor::guard,
            false => core::convert::identity,
        };
        classes[i]
            .slots
            .take(|lows| install_guards(&lows.iter().map(|&low| guard_of(low)).collect::<Vec<_>>()))
    }

    /// Keeps a released slot; false if `low` is no slot of `len` bytes.
    fn put(&self, low: usize, len: usize) -> bool {
        let mut classes = self.classes.lock().unwrap_or_else(|e| e.into_inner());
        classes
            .iter_mut()
            .filter(|c| c.slots.stride() == len)
            .any(|class| class.slots.put(low))
    }
}

/// A free stack slot's pages that go back to the kernel: all but the
/// guard page, whose marker stays.
fn above_guard(low: usize, len: usize) -> [(usize, usize); 2] {
    [(low + PAGE, len - PAGE), (0, 0)]
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

/// Makes the pages at `pages` (one per slot of a new chunk) guard pages:
/// markers in one `process_madvise` where the kernel takes them so, else
/// one slot at a time. A marker survives `MADV_DONTNEED` and stays for the
/// slot's life.
fn install_guards(pages: &[usize]) -> Result<(), libc::c_int> {
    if GuardKind::get() != GuardKind::Protect {
        let guards: Vec<(usize, usize)> = pages.iter().map(|&page| (page, PAGE)).collect();
        if memory::advise(&guards, sys::MADV_GUARD_INSTALL) {
            GUARD_KIND.store(GuardKind::Marker as u8, Ordering::Relaxed);
            return Ok(());
        }
    }
    pages.iter().try_for_each(|&page| install_guard(page))
}

/// Makes the page at `low` a guard page.
fn install_guard(low: usize) -> Result<(), libc::c_int> {
    let kind = GuardKind::get();
    if kind != GuardKind::Protect {
        let ret = syscall!(libc::SYS_madvise, low, PAGE, sys::MADV_GUARD_INSTALL);
        if ret == 0 {
            GUARD_KIND.store(GuardKind::Marker as u8, Ordering::Relaxed);
            return Ok(());
        }
        if ret != -(libc::EINVAL as isize) {
            return Err(-ret as libc::c_int);
        }
        // A kernel older than 6.13, or locked memory (`mlockall`), which
        // takes no markers.
        if kind == GuardKind::Unknown {
            GUARD_KIND.store(GuardKind::Protect as u8, Ordering::Relaxed);
        }
    }
    let ret = syscall!(libc::SYS_mprotect, low, PAGE, libc::PROT_NONE);
    sys::check(ret).map(drop)
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

    /// A generator's stack made and dropped as the runtime does.
    fn lend_one(len: usize) -> usize {
        lend(false, || map_like_generator(len)).0
    }

    fn reclaim_one(low: usize, len: usize) {
        assert!(reclaim(low, len, || unmap(low, len)));
    }

    /// Whether `low` is a slot of a chunk the arena has mapped.
    fn in_arena(low: usize, len: usize) -> bool {
        let mut classes = ARENA.classes.lock().unwrap();
        classes
            .iter_mut()
            .any(|c| c.slots.stride() == len && c.slots.holds(low))
    }

    /// Lent stacks are slots of one chunk, and a slot given back is the
    /// next one lent.
    #[test]
    fn slots_come_from_chunks_and_are_reused() {
        let len = 40 * PAGE;
        let first = lend_one(len);
        let second = lend_one(len);
        assert!(in_arena(first, len) && in_arena(second, len));
        assert_eq!(second, first + len, "slots are carved in order");
        // SAFETY: the slot's stack pages, writable.
        unsafe { ((first + PAGE) as *mut u8).write(1) };
        reclaim_one(first, len);
        assert_eq!(lend_one(len), first);
        reclaim_one(second, len);
        reclaim_one(first, len);
    }

    /// Calls made while not lending, or not shaped like the crate's, are
    /// the kernel's: a mapping of its own, really unmapped.
    #[test]
    fn other_calls_pass_through() {
        let len = 24 * PAGE;
        let own = map_like_generator(len);
        assert!(!in_arena(own, len), "not lending: a mapping of its own");
        unmap(own, len);
        let (other, lent) = lend(false, || {
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
        let other = other as usize;
        assert!(
            !lent && !in_arena(other, len),
            "other flags: not the crate's call"
        );
        unmap(other, len);
        // A slot taken back only with its exact range.
        let slot = lend_one(len);
        let mut ret = 0;
        let reclaimed = reclaim(slot, len, || {
            // SAFETY: an unaligned address: the kernel refuses it.
            ret = unsafe { libc::munmap((slot + 1) as *mut libc::c_void, len) };
        });
        assert_eq!((reclaimed, ret, sys::errno()), (false, -1, libc::EINVAL));
        reclaim_one(slot, len);
    }

    /// A signal handler's calls while the runtime lends a stack are the
    /// handler's own (and cannot wait for the arena's lock, which its
    /// thread may hold).
    #[test]
    fn signal_handlers_calls_are_their_own() {
        let len = 12 * PAGE;
        let ((handlers, slot), lent) = lend(false, || {
            let handlers = switch::in_handler(|| map_like_generator(len));
            (handlers, map_like_generator(len))
        });
        assert!(lent);
        assert!(!in_arena(handlers, len));
        assert!(in_arena(slot, len));
        unmap(handlers, len);
        reclaim_one(slot, len);
    }

    /// Whether reading the byte at `address` kills a child process with
    /// SIGSEGV (the child only reads and exits).
    fn faults(address: usize) -> bool {
        // SAFETY: fork; the child only touches memory and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: a read of mapped (or guard) memory of this test.
            unsafe { core::ptr::read_volatile(address as *const u8) };
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV
    }

    /// The guard page of a lent slot faults.
    #[test]
    fn guard_pages_fault() {
        let len = 16 * PAGE;
        let low = lend_one(len);
        assert!(faults(low));
        assert!(!faults(low + PAGE));
        reclaim_one(low, len);
    }

    /// A floored slot's guard page is two pages up, its floor is writable,
    /// and slots of the same length with and without a floor are told
    /// apart when they come back.
    #[test]
    fn floored_slots_guard_above_the_floor() {
        let len = 20 * PAGE;
        let (floored, lent) = lend(true, || map_like_generator(len));
        assert!(lent);
        let plain = lend_one(len);
        assert!(faults(stack_floor::guard(floored)));
        assert!(faults(plain));
        for page in [floored, floored + PAGE, stack_floor::guard(floored) + PAGE] {
            // SAFETY: a writable page of the floored slot.
            unsafe { (page as *mut u8).write(1) };
        }
        reclaim_one(plain, len);
        reclaim_one(floored, len);
        assert_eq!(lend(true, || map_like_generator(len)).0, floored);
        assert_eq!(lend_one(len), plain);
        reclaim_one(plain, len);
        reclaim_one(floored, len);
    }
}
