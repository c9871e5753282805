//! Slots of one size carved from chunk mappings.
//!
//! Mapping memory piece by piece takes the process's `mmap_lock` for
//! writing on every call, and each piece is one of the kernel's
//! `vm.max_map_count` mappings; slots of a chunk take neither. A released
//! slot is kept for the next one (most recent first, its pages still warm)
//! until more than [`DIRTY_BYTES`] of released slots are resident; then the
//! oldest slots' spare pages go back to the kernel in one batch. A chunk
//! whose slots are all free is unmapped if as many free slots stay in the
//! others (and not the newest, which is where new slots come from; `trim`
//! unmaps every empty one), so address space and commit charge come back
//! too.

use std::collections::BTreeMap;

use super::{give_back, PAGE};
use crate::sys::{self, syscall};

/// Bytes of released slots whose pages may stay resident; past this, the
/// oldest go back to the kernel until half of it is left.
const DIRTY_BYTES: usize = 4 << 20;

/// The most slots a chunk holds, and the most bytes it spans: a few slots
/// still in use keep their whole chunks mapped, so chunks stay small (and
/// neighbouring ones merge into one of the kernel's mappings anyway).
const CHUNK_SLOTS: usize = 64;
const CHUNK_BYTES: usize = 128 << 20;

/// `madvise` advice that faults pages in as if written (Linux 5.14+).
const MADV_POPULATE_WRITE: libc::c_int = 23;

/// Chunks are mapped as thread stacks are (`MAP_STACK` also keeps
/// transparent huge pages out: a slot's memory is what it touches).
const PROT: libc::c_int = libc::PROT_READ | libc::PROT_WRITE;
const FLAGS: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK;

/// The pages of a free slot of a stride at an address that may go back to
/// the kernel: up to two `(address, length)` ranges (a stack slot with a
/// floor keeps its guard page between them); an unused one is empty.
pub(super) type Spare = fn(usize, usize) -> [(usize, usize); 2];

/// The slots of one size, and their chunks.
pub(crate) struct Slots {
    stride: usize,
    spare: Spare,
    /// Released slots, most recent last; their pages may be resident.
    dirty: Vec<Slot>,
    /// Released slots whose spare pages were given back.
    clean: Vec<Slot>,
    /// Bytes of the valid slots in `dirty`.
    dirty_bytes: usize,
    /// Entries of the lists whose chunk is gone.
    stale: usize,
    /// Entries of the lists whose chunk is mapped: free slots.
    free: usize,
    /// Every chunk, by start address.
    chunks: BTreeMap<usize, Chunk>,
    /// The newest chunk, whose unused part `[next, end)` is carved next; it
    /// stays mapped while empty.
    newest: usize,
    next: usize,
    end: usize,
    /// Slots in the next chunk: doubles up to [`CHUNK_SLOTS`].
    chunk_slots: usize,
    chunk_ids: u64,
}

/// A free slot, and the chunk it was carved from: a chunk unmapped since
/// leaves its slots behind in the lists, and a later chunk may be mapped
/// at the same addresses.
#[derive(Clone, Copy)]
struct Slot {
    low: usize,
    chunk: u64,
}

/// One mapping of slots.
struct Chunk {
    id: u64,
    end: usize,
    /// Slots handed out and not back.
    live: usize,
    /// Its slots in the `dirty` list.
    dirty: usize,
}

impl Slots {
    /// Slots of `stride` bytes (a multiple of every alignment they need, up
    /// to a page), whose `spare` pages are given back once they are free.
    pub(crate) const fn new(stride: usize, spare: Spare) -> Slots {
        Slots {
            stride,
            spare,
            dirty: Vec::new(),
            clean: Vec::new(),
            dirty_bytes: 0,
            stale: 0,
            free: 0,
            chunks: BTreeMap::new(),
            newest: 0,
            next: 0,
            end: 0,
            chunk_slots: 4,
            chunk_ids: 0,
        }
    }

    pub(crate) fn stride(&self) -> usize {
        self.stride
    }

    /// A slot's address: a released one if any, else a new one, which
    /// `prepare` readies (with all the other slots of its chunk) when their
    /// chunk is mapped. Fails with the kernel's error number.
    pub(crate) fn take(
        &mut self,
        prepare: impl FnOnce(&[usize]) -> Result<(), libc::c_int>,
    ) -> Result<usize, libc::c_int> {
        while let Some((slot, dirty)) = self.pop_free() {
            let stride = self.stride;
            if let Some(chunk) = self.chunk_of(slot) {
                chunk.live += 1;
                chunk.dirty -= usize::from(dirty);
                self.free -= 1;
                if dirty {
                    self.dirty_bytes -= stride;
                }
                return Ok(slot.low);
            }
            self.stale -= 1;
        }
        if self.end - self.next < self.stride {
            self.map_chunk(prepare)?;
        }
        let low = self.next;
        self.next += self.stride;
        let newest = self.newest;
        self.chunks.get_mut(&newest).expect("mapped").live += 1;
        Ok(low)
    }

    /// Takes a slot back; false if `low` is none of these slots.
    pub(crate) fn put(&mut self, low: usize) -> bool {
        let Some((start, chunk)) = self.chunk_at(low) else {
            return false;
        };
        chunk.live -= 1;
        chunk.dirty += 1;
        let (id, empty) = (chunk.id, chunk.live == 0);
        self.dirty.push(Slot { low, chunk: id });
        self.dirty_bytes += self.stride;
        self.free += 1;
        // An empty chunk goes only if as many free slots would be left:
        // slots come and go in waves, and mapping a chunk again costs its
        // guard pages and first faults anew.
        let slots = (self.chunks[&start].end - start) / self.stride;
        if empty && start != self.newest && self.free >= 2 * slots {
            self.unmap_chunk(start);
        }
        if self.dirty_bytes > DIRTY_BYTES {
            // The caller holds these slots' lock: a slot whose pages are
            // being given back is not handed out, nor its chunk unmapped
            // and mapped again, meanwhile.
            self.give_back_oldest();
        }
        if self.stale > self.dirty.len().max(self.clean.len()) {
            self.drop_stale();
        }
        true
    }

    /// The most recently released slot, dirty first; whether it was.
    fn pop_free(&mut self) -> Option<(Slot, bool)> {
        match self.dirty.pop() {
            Some(slot) => Some((slot, true)),
            None => self.clean.pop().map(|slot| (slot, false)),
        }
    }

    /// The chunk holding the slot at `low`, with its start.
    fn chunk_at(&mut self, low: usize) -> Option<(usize, &mut Chunk)> {
        let stride = self.stride;
        let (&start, chunk) = self.chunks.range_mut(..=low).next_back()?;
        let slot = (low - start).is_multiple_of(stride) && low + stride <= chunk.end;
        slot.then_some((start, chunk))
    }

    /// The chunk `slot` came from, if it is still mapped.
    fn chunk_of(&mut self, slot: Slot) -> Option<&mut Chunk> {
        self.chunk_at(slot.low)
            .map(|(_, chunk)| chunk)
            .filter(|chunk| chunk.id == slot.chunk)
    }

    /// Maps the next chunk; smaller ones, down to one slot, if the address
    /// space or the locked-memory allowance is short.
    fn map_chunk(
        &mut self,
        prepare: impl FnOnce(&[usize]) -> Result<(), libc::c_int>,
    ) -> Result<(), libc::c_int> {
        let mut slots = self.chunk_slots.min(CHUNK_BYTES / self.stride).max(1);
        let (start, bytes) = loop {
            let bytes = (slots * self.stride).next_multiple_of(PAGE);
            let ret = syscall!(libc::SYS_mmap, 0, bytes, PROT, FLAGS, -1i32, 0);
            match sys::check(ret) {
                Ok(start) => break (start, bytes),
                Err(libc::ENOMEM | libc::EAGAIN) if slots > 1 => slots /= 2,
                Err(error) => return Err(error),
            }
        };
        let lows: Vec<usize> = (start..=start + bytes - self.stride)
            .step_by(self.stride)
            .collect();
        if let Err(error) = prepare(&lows) {
            let _ = syscall!(libc::SYS_munmap, start, bytes);
            return Err(error);
        }
        if self.chunks.get(&self.newest).is_some_and(|c| c.live == 0) {
            self.unmap_chunk(self.newest);
        }
        self.chunk_ids += 1;
        let chunk = Chunk {
            id: self.chunk_ids,
            end: start + bytes,
            live: 0,
            dirty: 0,
        };
        self.chunks.insert(start, chunk);
        (self.newest, self.next, self.end) = (start, start, start + bytes);
        self.chunk_slots = (self.chunk_slots * 2).min(CHUNK_SLOTS);
        Ok(())
    }

    /// Unmaps the chunk at `start`, all of whose slots are free; their
    /// entries in the lists go stale.
    fn unmap_chunk(&mut self, start: usize) {
        let chunk = self.chunks.remove(&start).expect("a mapped chunk");
        let carved_to = match start == self.newest {
            true => self.next,
            false => chunk.end,
        };
        // Whole slots only: a dense chunk's tail holds none.
        let carved = (carved_to - start) / self.stride;
        self.stale += carved;
        self.free -= carved;
        self.dirty_bytes -= chunk.dirty * self.stride;
        if start == self.newest {
            (self.newest, self.next, self.end) = (0, 0, 0);
        }
        let _ = syscall!(libc::SYS_munmap, start, chunk.end - start);
    }

    /// Gives back the spare pages of the oldest dirty slots until half of
    /// [`DIRTY_BYTES`] is left resident.
    fn give_back_oldest(&mut self) {
        let mut batch = Vec::new();
        let mut taken = 0;
        while self.dirty_bytes > DIRTY_BYTES / 2 && taken < self.dirty.len() {
            let slot = self.dirty[taken];
            taken += 1;
            match self.chunk_of(slot) {
                Some(chunk) => chunk.dirty -= 1,
                None => {
                    self.stale -= 1;
                    continue;
                }
            }
            self.dirty_bytes -= self.stride;
            batch.push(slot);
        }
        self.dirty.drain(..taken);
        let ranges: Vec<(usize, usize)> = batch
            .iter()
            .flat_map(|slot| (self.spare)(slot.low, self.stride))
            .collect();
        give_back(&ranges);
        self.clean.extend(batch);
    }

    /// Drops the list entries of unmapped chunks.
    fn drop_stale(&mut self) {
        let mut dirty = core::mem::take(&mut self.dirty);
        let mut clean = core::mem::take(&mut self.clean);
        dirty.retain(|&slot| self.is_valid(slot));
        clean.retain(|&slot| self.is_valid(slot));
        (self.dirty, self.clean, self.stale) = (dirty, clean, 0);
    }

    /// Unmaps every chunk none of whose slots is handed out, the newest
    /// too.
    pub(crate) fn trim(&mut self) {
        let empty: Vec<usize> = self
            .chunks
            .iter()
            .filter(|(_, chunk)| chunk.live == 0)
            .map(|(&start, _)| start)
            .collect();
        empty.into_iter().for_each(|start| self.unmap_chunk(start));
        self.drop_stale();
    }

    /// Whether no chunk is mapped.
    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Makes the spare pages of every slot carved so far resident
    /// (`MADV_POPULATE_WRITE`).
    pub(crate) fn populate(&self) {
        for (&start, chunk) in &self.chunks {
            let carved_to = match start == self.newest {
                true => self.next,
                false => chunk.end - (chunk.end - start) % self.stride,
            };
            for low in (start..carved_to).step_by(self.stride) {
                for (address, len) in (self.spare)(low, self.stride) {
                    if len > 0 {
                        let _ = syscall!(libc::SYS_madvise, address, len, MADV_POPULATE_WRITE);
                    }
                }
            }
        }
    }

    /// Whether `low` is one of these slots, for tests.
    #[cfg(test)]
    pub(crate) fn holds(&mut self, low: usize) -> bool {
        self.chunk_at(low).is_some()
    }

    fn is_valid(&self, slot: Slot) -> bool {
        self.chunks
            .range(..=slot.low)
            .next_back()
            .is_some_and(|(_, chunk)| chunk.id == slot.chunk && slot.low < chunk.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the page at `address` is mapped and resident.
    fn resident(address: usize) -> bool {
        let mut vec = [0u8; 1];
        // SAFETY: one page; `vec` holds its one byte. Unmapped: ENOMEM.
        let ret = unsafe { libc::mincore(address as *mut libc::c_void, PAGE, vec.as_mut_ptr()) };
        ret == 0 && vec[0] & 1 == 1
    }

    fn whole(low: usize, stride: usize) -> [(usize, usize); 2] {
        [(low, stride), (0, 0)]
    }

    fn touch(address: usize) {
        // SAFETY: a page of a slot handed out by the test's `Slots`.
        unsafe { (address as *mut u8).write(1) };
    }

    /// At most [`DIRTY_BYTES`] of released slots stay resident; the rest
    /// are given back, and chunks whose slots are all free (but the
    /// newest) are unmapped. Slots of unmapped chunks are never handed out
    /// again unless a new chunk holds them.
    #[test]
    fn released_memory_is_given_back() {
        let stride = 8 * PAGE;
        let mut slots = Slots::new(stride, whole);
        let count = 3 * DIRTY_BYTES / stride;
        let taken: Vec<usize> = (0..count)
            .map(|_| slots.take(|_| Ok(())).unwrap())
            .collect();
        taken.iter().for_each(|&low| touch(low));
        // Newest first, so the older chunks empty last.
        for &low in taken.iter().rev() {
            assert!(slots.put(low));
        }
        let kept = taken.iter().filter(|&&low| resident(low)).count();
        assert!(kept * stride <= DIRTY_BYTES, "{kept} slots still resident");
        let mapped = taken.iter().filter(|&&low| slots.holds(low)).count();
        assert!(mapped < count / 2, "{mapped} of {count} slots still mapped");
        let again: Vec<usize> = (0..count)
            .map(|_| slots.take(|_| Ok(())).unwrap())
            .collect();
        assert!(again.iter().all(|&low| slots.holds(low)));
        let mut distinct = again.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), count, "a slot handed out twice");
        again.iter().for_each(|&low| touch(low));
        again.iter().for_each(|&low| assert!(slots.put(low)));
        assert!(!slots.put(again[0] + 1), "not a slot");
    }

    /// After a wave of slots comes back, a chunk's worth of them stays
    /// mapped for the next wave (mapping it again would cost its guard
    /// pages and first faults anew); the rest goes.
    #[test]
    fn a_chunks_worth_of_free_slots_stays_mapped() {
        let stride = 4 * PAGE;
        let mut slots = Slots::new(stride, whole);
        let taken: Vec<usize> = (0..600).map(|_| slots.take(|_| Ok(())).unwrap()).collect();
        taken.iter().for_each(|&low| assert!(slots.put(low)));
        let mapped = taken.iter().filter(|&&low| slots.holds(low)).count();
        assert!(mapped >= CHUNK_SLOTS, "{mapped} slots still mapped");
        assert!(mapped < 600 / 2, "{mapped} slots still mapped");
        let again: Vec<usize> = (0..CHUNK_SLOTS)
            .map(|_| slots.take(|_| Ok(())).unwrap())
            .collect();
        assert!(
            again.iter().all(|low| taken.contains(low)),
            "a new chunk was mapped"
        );
        again.iter().for_each(|&low| assert!(slots.put(low)));
    }

    /// Big slots (one per chunk) leave at most one spare chunk mapped
    /// besides the newest once they are all free: address space is what
    /// they cost.
    #[test]
    fn big_free_slots_leave_one_spare_chunk() {
        let stride = CHUNK_BYTES;
        let mut slots = Slots::new(stride, whole);
        let taken: Vec<usize> = (0..10).map(|_| slots.take(|_| Ok(())).unwrap()).collect();
        taken.iter().for_each(|&low| assert!(slots.put(low)));
        let mapped = taken.iter().filter(|&&low| slots.holds(low)).count();
        assert!(
            mapped <= 2,
            "{mapped} chunks of {} MiB still mapped",
            stride >> 20
        );
        slots.trim();
        assert!(slots.is_empty());
    }

    /// Slots of a stride that is no multiple of a page are packed, aligned
    /// to the stride's alignment, and the whole pages inside free slots (a
    /// slot of 4.75 KiB holds one in about a fifth of the places) are given
    /// back; live slots keep their contents.
    #[test]
    fn dense_slots_give_back_their_inner_pages() {
        fn inner(low: usize, stride: usize) -> (usize, usize) {
            let start = low.next_multiple_of(PAGE);
            let end = (low + stride) / PAGE * PAGE;
            (start, end.saturating_sub(start))
        }
        let stride = PAGE + 768;
        let mut slots = Slots::new(stride, |low, stride| [inner(low, stride), (0, 0)]);
        let count = 3 * DIRTY_BYTES / stride;
        let taken: Vec<usize> = (0..count)
            .map(|_| slots.take(|_| Ok(())).unwrap())
            .collect();
        assert!(taken.iter().all(|&low| low.is_multiple_of(256)));
        assert_eq!(taken[1], taken[0] + stride, "packed");
        for &low in &taken {
            // SAFETY: the slot's whole stride, handed out to this test.
            unsafe { core::ptr::write_bytes(low as *mut u8, 1, stride) };
        }
        // Every 50th stays live, so (but for the smallest) no chunk empties.
        let (live, released): (Vec<usize>, Vec<usize>) = (0..count).partition(|i| i % 50 == 0);
        released.iter().for_each(|&i| assert!(slots.put(taken[i])));
        assert!(live.iter().all(|&i| {
            let low = taken[i];
            // SAFETY: a live slot's first and last bytes, written above.
            unsafe { *(low as *const u8) == 1 && *((low + stride - 1) as *const u8) == 1 }
        }));
        // Those of them that still have a chunk and hold a whole page.
        let mapped: Vec<usize> = released
            .iter()
            .map(|&i| taken[i])
            .filter(|&low| slots.holds(low) && inner(low, stride).1 > 0)
            .collect();
        let warm = mapped
            .iter()
            .filter(|&&low| resident(inner(low, stride).0))
            .count();
        assert!(
            warm * stride <= DIRTY_BYTES,
            "{warm} released slots still resident"
        );
        assert!(
            warm < mapped.len() / 2,
            "{warm} of {} still resident",
            mapped.len()
        );
    }
}
