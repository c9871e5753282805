//! Coroutine stacks: sizing, pooling, fresh ones in batches, and clear
//! errors at the memory limits.

use core::sync::atomic::{AtomicUsize, Ordering};
use std::io;
use std::sync::OnceLock;

use generator::Gn;

use super::stack_arena;
use super::stack_floor::{self, FLOOR};
use crate::identity::{StackBounds, ThreadBlock};

/// A coroutine's generator: the stack plus its saved registers.
pub(crate) type Gen = generator::Generator<'static, (), ()>;

/// The address of `generator`'s own object, which the `generator` crate
/// places at the top of its stack; its saved registers come first.
pub(crate) fn generator_address(generator: Gen) -> (Gen, usize) {
    let raw = generator.into_raw();
    // SAFETY: `raw` came from `into_raw` just above, same type parameters.
    (unsafe { Gen::from_raw(raw) }, raw as usize)
}

/// The page size the `generator` crate maps stacks in.
const PAGE: usize = 4096;

/// The pattern the `generator` crate writes at the bottom of a new stack,
/// and how many words of it it checks when the stack is dropped
/// (`STACK_SENTINEL`, `STACK_USAGE_SAMPLE` in its `stack` module).
const SENTINEL: usize = 0xDEAD_BEEF;
const SENTINEL_WORDS: usize = 8;

/// The lowest usable page of an unmeasured stack of `bytes`, which holds
/// the `generator` crate's pattern.
fn sentinel_page(generator: Gen, bytes: usize) -> (Gen, usize) {
    let (generator, bounds) = StackBounds::of_generator(generator, words(bytes, false));
    (generator, bounds.low + bounds.guard)
}

/// Fresh unmeasured stacks of `bytes` with their lowest usable page given
/// back. The crate marks the bottom of a new stack with a pattern, which
/// makes the page that a coroutine touches last resident in every one: 4
/// KiB per coroutine. It is given back until the stack is dropped, in one
/// system call for the batch.
fn without_sentinel_pages(fresh: Vec<Gen>, bytes: usize) -> Vec<Gen> {
    let mut bottoms = Vec::with_capacity(fresh.len());
    let fresh = fresh
        .into_iter()
        .map(|generator| {
            let (generator, bottom) = sentinel_page(generator, bytes);
            bottoms.push((bottom, PAGE));
            generator
        })
        .collect();
    crate::memory::give_back(&bottoms);
    fresh
}

/// Mappings left for everything else in the process (libraries, heap arenas,
/// thread stacks); below this headroom every new stack is probed first.
const MAPPING_HEADROOM: usize = 8192;

/// Converts a stack size in bytes to the `generator` crate's unit, machine
/// words: an odd count if `measured`, which turns on the crate's usage
/// tracking (it fills the whole stack with a pattern, touching every page),
/// else an even one.
///
/// The crate maps the count rounded up to whole pages. A measured stack
/// takes one word less than the even count, never one more: one more would
/// round up to another page, and code that fits only while measured would
/// overflow unmeasured. One less maps the same pages, since an odd count of
/// words is never a whole page.
pub(crate) fn words(bytes: usize, measured: bool) -> usize {
    let words = bytes.div_ceil(core::mem::size_of::<usize>());
    let even = (words + (words & 1)).max(2);
    even - usize::from(measured)
}

/// Process-wide accounting of mapped stacks, to turn the kernel's map limit
/// into a clear error instead of a panic inside the `generator` crate.
pub(crate) struct Stacks;

/// Stacks mapped on their own (two memory mappings each: the stack and its
/// guard page), and stacks lent by the stack arena.
static OWN: AtomicUsize = AtomicUsize::new(0);
static LENT: AtomicUsize = AtomicUsize::new(0);

/// The memory mappings the process's coroutine stacks take.
fn stack_mappings() -> usize {
    OWN.load(Ordering::Relaxed) * 2
        + LENT.load(Ordering::Relaxed) * stack_arena::mappings_per_stack()
}

impl Stacks {
    /// Fails with a clear error if a stack of `bytes` could not be mapped
    /// now. Free far from the map limit; near it, maps a probe stack.
    pub(crate) fn check_room(bytes: usize) -> io::Result<()> {
        if stack_mappings() + MAPPING_HEADROOM > max_map_count() {
            probe(bytes)?;
        }
        Ok(())
    }

    /// Maps a fresh stack of `bytes` running `body`, `measured` or not: a
    /// slot of the stack arena if `lent` says so (`Some(floored)`: with a
    /// floor below or not, see `stack_floor`), else a mapping of its own.
    fn map(
        bytes: usize,
        measured: bool,
        lent: Option<bool>,
        body: impl FnOnce() + Send + 'static,
    ) -> io::Result<Gen> {
        let floored = lent == Some(true);
        let mapped = mapped_bytes(bytes, floored);
        Stacks::check_room(bytes)?;
        let create = || Gn::<()>::new_opt(words(mapped, measured), body);
        let (generator, in_arena) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            super::panic_report::quietly(|| match lent {
                Some(floored) => stack_arena::lend(floored, create),
                None => (create(), false),
            })
        }))
        .map_err(|_| map_error(bytes, io::Error::from_raw_os_error(libc::ENOMEM)))?;
        let counter = if in_arena { &LENT } else { &OWN };
        counter.fetch_add(1, Ordering::Relaxed);
        if floored && !in_arena {
            return raise_guard(generator, bytes);
        }
        Ok(generator)
    }

    /// Maps fresh stacks for a worker's pool (its size `bytes`, unmeasured,
    /// `floored` or not), their bodies to come (`init_code`): `count` of
    /// them, or fewer (at least one) if memory runs out after the first.
    pub(crate) fn create_pooled(bytes: usize, floored: bool, count: usize) -> io::Result<Vec<Gen>> {
        let mut fresh = Vec::with_capacity(count);
        for _ in 0..count.max(1) {
            match Stacks::map(bytes, false, Some(floored), || {}) {
                Ok(generator) => fresh.push(generator),
                Err(error) if fresh.is_empty() => return Err(error),
                Err(_) => break,
            }
        }
        // A floor holds its thread area on the pattern's page.
        match floored {
            true => Ok(fresh),
            false => Ok(without_sentinel_pages(fresh, bytes)),
        }
    }

    /// Maps a fresh stack of a size the pools do not keep, or a measured
    /// one, running `body`.
    pub(crate) fn create(
        bytes: usize,
        measured: bool,
        body: impl FnOnce() + Send + 'static,
    ) -> io::Result<Gen> {
        let generator = Stacks::map(bytes, measured, None, body)?;
        if measured {
            return Ok(generator);
        }
        let mut fresh = without_sentinel_pages(vec![generator], bytes);
        Ok(fresh.pop().expect("one stack"))
    }

    /// Unmaps every chunk of the stack arena none of whose stacks is in use,
    /// and of the thread areas: a runtime, and the stacks it cached, have
    /// gone.
    pub(crate) fn trim() {
        stack_arena::trim();
        crate::identity::trim_areas();
    }

    /// Unmaps a stack of `bytes` (`measured` or not).
    pub(crate) fn release(generator: Gen, bytes: usize, measured: bool) {
        let (generator, bounds) = StackBounds::of_generator(generator, words(bytes, measured));
        if !measured {
            // Dropping a finished generator checks the pattern.
            let words = (bounds.low + bounds.guard) as *mut usize;
            for i in 0..SENTINEL_WORDS {
                // SAFETY: the stack's lowest usable page, unused: its
                // coroutine has ended or never ran.
                unsafe { words.add(i).write(SENTINEL) };
            }
        }
        let lent = stack_arena::reclaim(bounds.low, bounds.len, || drop(generator));
        let counter = if lent { &LENT } else { &OWN };
        counter.fetch_sub(1, Ordering::Relaxed);
    }

    /// Accounts for a stack that is leaked on purpose (a suspended coroutine
    /// at shutdown: dropping it would unwind it).
    pub(crate) fn leak(generator: Gen) {
        core::mem::forget(generator);
    }

    /// Checks that a stack of `bytes` is one a coroutine can run on and the
    /// `generator` crate can map.
    pub(crate) fn validate(bytes: usize) -> io::Result<()> {
        let max = max_stack_size();
        if (MIN_STACK_SIZE..=max).contains(&bytes) {
            return Ok(());
        }
        let why = match max_stack_rlimit() {
            Some(limit) if max < MAX_STACK_SIZE => {
                format!(" (the RLIMIT_STACK hard limit is {})", size_text(limit))
            }
            _ => String::new(),
        };
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a coroutine stack size must be between {} and {}{why}; got {bytes} bytes",
                size_text(MIN_STACK_SIZE as u64),
                size_text(max as u64),
            ),
        ))
    }
}

/// The smallest stack a coroutine gets: glibc's `PTHREAD_STACK_MIN`, room
/// for the runtime's own frames under the user's.
pub const MIN_STACK_SIZE: usize = 16 * 1024;

/// The largest stack a coroutine gets: address space is plentiful, but a
/// larger request is almost surely a unit mistake.
pub const MAX_STACK_SIZE: usize = 1 << 30;

/// The main thread's stack size when `RLIMIT_STACK` does not say.
const DEFAULT_MAIN_STACK_SIZE: usize = 8 << 20;

/// The largest stack the `generator` crate maps: within the hard
/// `RLIMIT_STACK`, less its guard page and rounding page.
fn max_stack_size() -> usize {
    let within_rlimit = max_stack_rlimit().map_or(usize::MAX, |limit| {
        usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .saturating_sub(2 * 4096)
    });
    MAX_STACK_SIZE.min(within_rlimit)
}

/// The size of the main thread's stack: the soft `RLIMIT_STACK` (8 MiB
/// when unlimited), within the bounds every coroutine stack keeps.
pub(crate) fn main_thread_stack_size() -> usize {
    let soft = rlimit_stack().map(|limit| limit.rlim_cur);
    let bytes = match soft {
        Some(bytes) if bytes != libc::RLIM_INFINITY => usize::try_from(bytes).unwrap_or(usize::MAX),
        _ => DEFAULT_MAIN_STACK_SIZE,
    };
    bytes.clamp(MIN_STACK_SIZE, max_stack_size())
}

/// `bytes` for a message: in the largest unit that divides it.
pub(crate) fn size_text(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b.is_multiple_of(1 << 30) => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b.is_multiple_of(1 << 20) => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b.is_multiple_of(1 << 10) => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// The hard `RLIMIT_STACK`, `None` if unlimited.
fn max_stack_rlimit() -> Option<u64> {
    rlimit_stack()
        .map(|limit| limit.rlim_max)
        .filter(|&max| max != libc::RLIM_INFINITY)
}

/// `RLIMIT_STACK`, read once, as the `generator` crate does, rather than on
/// every spawn.
fn rlimit_stack() -> Option<libc::rlimit> {
    static LIMIT: OnceLock<Option<libc::rlimit>> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        let mut limit = core::mem::MaybeUninit::<libc::rlimit>::uninit();
        // SAFETY: getrlimit writes one rlimit into the buffer.
        let ret = unsafe { libc::getrlimit(libc::RLIMIT_STACK, limit.as_mut_ptr()) };
        // SAFETY: initialised when getrlimit returned 0.
        (ret == 0).then(|| unsafe { limit.assume_init() })
    })
}

/// Maps and unmaps a stack the way the `generator` crate does, to learn
/// whether its allocation would fail and why.
fn probe(bytes: usize) -> io::Result<()> {
    let page = 4096;
    let len = bytes.div_ceil(page) * page + 2 * page;
    // SAFETY: an anonymous private mapping that nothing else references.
    let ptr = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(map_error(bytes, io::Error::last_os_error()));
    }
    // SAFETY: the first page of the mapping made above.
    let protect = unsafe { libc::mprotect(ptr, page, libc::PROT_NONE) };
    let result = if protect == 0 {
        Ok(())
    } else {
        Err(map_error(bytes, io::Error::last_os_error()))
    };
    // SAFETY: unmaps exactly the mapping made above.
    unsafe { libc::munmap(ptr, len) };
    result
}

fn map_error(bytes: usize, cause: io::Error) -> io::Error {
    let limit = max_map_count();
    let stacks = OWN.load(Ordering::Relaxed) + LENT.load(Ordering::Relaxed);
    let mappings = stack_mappings();
    let why = if mappings + MAPPING_HEADROOM > limit {
        "the process is at its memory-map limit"
    } else {
        "memory or address space (ulimit -v) ran out, or the memory-map limit was reached"
    };
    io::Error::new(
        cause.kind(),
        format!(
            "could not map a {} coroutine stack ({cause}): {why}; {stacks} coroutine stacks \
             are mapped, taking {mappings} memory mappings, and vm.max_map_count = {limit} \
             (raise it with sysctl -w vm.max_map_count=...); give the process more memory or \
             keep fewer coroutines alive at once",
            size_text(bytes as u64)
        ),
    )
}

/// The kernel's per-process mapping limit, read once.
fn max_map_count() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(65530)
    })
}

/// What a new coroutine's thread identity is made from.
pub(crate) enum Identity {
    /// The block of its stack's last coroutine, recycled.
    Recycled(ThreadBlock),
    /// A new block, for a stack whose bounds as glibc records them are
    /// `mapping`; its area in the stack's floor (mapped at `floor`) if it
    /// has one, else in a slot of its own.
    New {
        mapping: StackBounds,
        floor: Option<usize>,
    },
}

/// The bytes the `generator` crate maps for a stack of `bytes`: a floor
/// more if `floored`.
fn mapped_bytes(bytes: usize, floored: bool) -> usize {
    bytes + if floored { FLOOR } else { 0 }
}

/// Moves the guard page of a floored stack of `bytes` that maps its own
/// (memory is locked) above its floor: the floor is writable, the page
/// above guards.
fn raise_guard(generator: Gen, bytes: usize) -> io::Result<Gen> {
    let mapped = mapped_bytes(bytes, true);
    let (generator, bounds) = StackBounds::of_generator(generator, words(mapped, false));
    let guard = stack_floor::guard(bounds.low);
    // SAFETY: pages of the stack mapping just made, which nothing uses
    // yet: its lowest (the crate's guard page) and the floor's top one.
    let ret = unsafe {
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        match libc::mprotect(bounds.low as *mut libc::c_void, PAGE, rw) {
            0 => libc::mprotect(guard as *mut libc::c_void, PAGE, libc::PROT_NONE),
            error => error,
        }
    };
    if ret != 0 {
        let error = map_error(bytes, io::Error::last_os_error());
        Stacks::release(generator, mapped, false);
        return Err(error);
    }
    Ok(generator)
}

/// A worker's cache of finished generators of one stack size, with the
/// thread identities that went with them: re-using one costs ~40 ns where
/// mapping a fresh stack costs ~10 us, and refilling an identity block
/// avoids its allocations.
pub(crate) struct StackPool {
    bytes: usize,
    /// Whether its stacks have a floor for their coroutines' thread areas.
    floored: bool,
    capacity: usize,
    free: Vec<(Gen, Option<ThreadBlock>)>,
    /// Fresh stacks the next refill maps.
    batch: usize,
}

/// The most fresh stacks a cache maps at once.
const FRESH_BATCH: usize = 16;

impl StackPool {
    /// A cache of up to `capacity` stacks of `bytes`, with a floor each if
    /// `floored` (for a runtime whose thread areas fit one:
    /// `Layout::fits_floor`).
    pub(crate) fn new(bytes: usize, floored: bool, capacity: usize) -> StackPool {
        StackPool {
            bytes,
            floored,
            capacity,
            free: Vec::new(),
            batch: 1,
        }
    }

    /// A generator running `body` on a stack of `bytes`, re-used if one of
    /// that size is cached (never for a `measured` one, whose usage starts
    /// from zero), and what its coroutine's identity is made from.
    pub(crate) fn get(
        &mut self,
        bytes: usize,
        measured: bool,
        body: impl FnOnce() + Send + 'static,
    ) -> io::Result<(Gen, Identity)> {
        if bytes != self.bytes || measured {
            let generator = Stacks::create(bytes, measured, body)?;
            let (generator, mapping) = StackBounds::of_generator(generator, words(bytes, measured));
            let floor = None;
            return Ok((generator, Identity::New { mapping, floor }));
        }
        if self.free.is_empty() {
            self.refill()?;
        }
        let (mut generator, block) = self.free.pop().expect("refilled");
        generator.init_code(body);
        let identity = match block {
            Some(block) => Identity::Recycled(block),
            None => {
                let (g, mapping) = StackBounds::of_generator(generator, self.words());
                generator = g;
                match self.floored {
                    true => Identity::New {
                        mapping: mapping.above_floor(),
                        floor: Some(mapping.low),
                    },
                    false => Identity::New {
                        mapping,
                        floor: None,
                    },
                }
            }
        };
        Ok((generator, identity))
    }

    /// The `generator` crate's size of this pool's stacks.
    fn words(&self) -> usize {
        words(mapped_bytes(self.bytes, self.floored), false)
    }

    /// Fills the empty cache with fresh stacks: one at first and after a
    /// stack came back, twice as many at each refill in between (up to
    /// [`FRESH_BATCH`]), so a burst of spawns maps its stacks in batches and
    /// a lone spawn, or a steady state of coroutines ending as others
    /// start, maps one; as does a process that locks its future memory.
    fn refill(&mut self) -> io::Result<()> {
        let count = match stack_arena::memory_locked() {
            true => 1,
            false => self.batch.clamp(1, self.capacity.max(1)),
        };
        let fresh = Stacks::create_pooled(self.bytes, self.floored, count)?;
        self.free
            .extend(fresh.into_iter().map(|generator| (generator, None)));
        self.batch = (self.batch * 2).min(FRESH_BATCH);
        Ok(())
    }

    /// Returns a finished generator's stack, and its coroutine's identity
    /// block, to the cache, or unmaps and frees them.
    pub(crate) fn put(
        &mut self,
        bytes: usize,
        measured: bool,
        generator: Gen,
        block: Option<ThreadBlock>,
    ) {
        if bytes == self.bytes && !measured && self.free.len() < self.capacity {
            self.batch = 1;
            if let Some(block) = &block {
                block.recycle();
            }
            self.free.push((generator, block));
        } else {
            drop(block);
            self.release(bytes, measured, generator);
        }
    }

    /// Unmaps a stack of `bytes` (`measured` or not) that `get` gave, with
    /// no identity block left on it.
    pub(crate) fn release(&self, bytes: usize, measured: bool, generator: Gen) {
        let mapped = match bytes == self.bytes && !measured {
            true => mapped_bytes(bytes, self.floored),
            false => bytes,
        };
        Stacks::release(generator, mapped, measured);
    }
}

impl StackPool {
    /// Unmaps every cached stack; returns how many.
    pub(crate) fn clear(&mut self) -> usize {
        let freed = self.free.len();
        let mapped = mapped_bytes(self.bytes, self.floored);
        for (generator, block) in self.free.drain(..) {
            drop(block);
            Stacks::release(generator, mapped, false);
        }
        freed
    }
}

impl Drop for StackPool {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::words;

    /// The pages the `generator` crate maps for `words` (its rounding).
    fn pages(words: usize) -> usize {
        let bytes = words * core::mem::size_of::<usize>();
        ((bytes - 1) & !4095) / 4096 + 1
    }

    #[test]
    fn measuring_a_stack_maps_the_same_pages() {
        for bytes in [
            1,
            8,
            16,
            4095,
            4096,
            4097,
            4104,
            5000,
            16 << 10,
            64 << 10,
            (64 << 10) + 8,
        ] {
            let (plain, measured) = (words(bytes, false), words(bytes, true));
            assert_eq!(plain % 2, 0, "{bytes}");
            assert_eq!(measured % 2, 1, "{bytes}");
            assert_eq!(pages(plain), pages(measured), "{bytes} bytes");
            assert!(plain * 8 >= bytes, "{bytes}");
        }
    }
}
