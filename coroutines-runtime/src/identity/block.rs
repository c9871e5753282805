//! One coroutine's thread block: its private copy of the worker's static TLS
//! area and glibc thread descriptor, and the thread pointer that selects it.
//!
//! Memory layout (one area, like glibc's own: in the floor of the
//! coroutine's stack, see `coroutine::stack_floor`, or a slot of
//! `memory::Slots` for a stack without one):
//!
//! ```text
//!  mem                         tp = mem + tls_below          mem + static_size
//!  | static TLS blocks (copied) | struct pthread (fresh)      |
//!                               ^ fs_base while the coroutine runs
//! ```
//!
//! What is copied from the worker, what is reset (the "new thread" image),
//! and what is patched is listed in [`ThreadBlock::new`]. All offsets come
//! from the verified [`Layout`].

use core::cell::{Cell, UnsafeCell};
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::io;
use std::sync::Mutex;

use super::glibc::{
    Layout, DESTRUCTOR_ITERATIONS, LC_GLOBAL_LOCALE, RES_NSCOUNT, RSEQ_CPU_ID_UNINITIALIZED,
    TLS_DTV_UNALLOCATED,
};
use super::{enter, fs, leave};

use super::Destructor as Dtor;
use crate::coroutine::stack_floor::FLOOR;
use crate::memory::{Slots, PAGE};

/// The coroutine's stack as glibc describes a thread's stack: the whole
/// mapping including the guard page. `pthread_getattr_np` reports
/// `[low + guard, low + len)` and glibc's alloca cut-off uses `len / 4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StackBounds {
    /// Lowest address of the mapping (the guard page).
    pub(crate) low: usize,
    /// Length of the mapping, guard included.
    pub(crate) len: usize,
    /// Guard bytes at `low`.
    pub(crate) guard: usize,
}

impl StackBounds {
    /// The stack of a `generator` 0.8.12 generator made with
    /// `Gn::new_opt(words, ..)`.
    ///
    /// The crate maps `((max(words * 8, page) - 1) & !(page - 1)) + 2 pages`
    /// with the lowest page as guard, and allocates the generator object
    /// itself (a few hundred bytes) at the top of that mapping, so the
    /// object's address rounded up to a page is the stack top. `run_body`
    /// checks on first entry that the stack pointer lies inside the result.
    pub(crate) fn of_generator(
        generator: generator::Generator<'static, (), ()>,
        words: usize,
    ) -> (generator::Generator<'static, (), ()>, StackBounds) {
        let page = page_size();
        let (generator, raw) = crate::coroutine::generator_address(generator);
        let top = (raw + page - 1) & !(page - 1);
        let bytes = (words * core::mem::size_of::<usize>()).max(page);
        let len = ((bytes - 1) & !(page - 1)) + 2 * page;
        (
            generator,
            StackBounds {
                low: top - len,
                len,
                guard: page,
            },
        )
    }

    /// The stack above the floor of a floored stack mapped as `self`:
    /// what its coroutine uses, guard page included.
    pub(crate) fn above_floor(self) -> StackBounds {
        StackBounds {
            low: self.low + FLOOR,
            len: self.len - FLOOR,
            guard: self.guard,
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// A coroutine's own thread identity. Create it on the worker, before the
/// coroutine's first run; switch to it with [`enter`]/[`leave`] (or the
/// wrappers `run_body` and `switch_out`); move it with its coroutine and call
/// [`ThreadBlock::migrate`] on the new worker before resuming there.
pub(crate) struct ThreadBlock {
    inner: Box<Inner>,
}

// SAFETY: a block moves between threads with its coroutine, which runs on
// one thread at a time; `migrate` re-targets its per-thread pointers.
unsafe impl Send for ThreadBlock {}

pub(crate) struct Inner {
    /// The thread pointer of the copy.
    pub(crate) tp: usize,
    mem: *mut u8,
    /// The worker's thread pointer: where `leave` and the signal wrappers
    /// switch back to. Written only while the coroutine is suspended.
    home: AtomicUsize,
    layout: &'static Layout,
    /// The coroutine's stack, as recorded in the descriptor.
    stack: StackBounds,
    /// `__cxa_thread_atexit_impl` registrations made inside the coroutine.
    dtors: UnsafeCell<Vec<(Dtor, *mut c_void)>>,
    /// Thread-exit processing ran (normal end of the body).
    exited: Cell<bool>,
    /// The area is a slot of `AREAS` (else it lies in the stack's floor).
    own_area: bool,
}

impl Inner {
    #[inline(always)]
    pub(crate) fn home(&self) -> usize {
        self.home.load(Ordering::Relaxed)
    }

    /// Records a thread-exit destructor for this coroutine. Called by the
    /// `__cxa_thread_atexit_impl` interposer while the block is active.
    #[cfg(not(target_feature = "crt-static"))]
    pub(crate) fn push_dtor(&self, f: Dtor, obj: *mut c_void) {
        // SAFETY: only the coroutine (the one thread running with this
        // block active) touches the list, and never re-entrantly: the push
        // does not call out.
        unsafe { (*self.dtors.get()).push((f, obj)) }
    }

    /// Takes the kernel thread id of the worker's descriptor: in a forked
    /// child, glibc recorded the child's there.
    pub(crate) fn adopt_thread_id(&self) {
        let l = self.layout;
        // SAFETY: both descriptors are live areas of this layout.
        unsafe { *self.at::<i32>(l.off_tid) = *((self.home() + l.off_tid) as *const i32) };
    }

    fn pop_dtor(&self) -> Option<(Dtor, *mut c_void)> {
        // SAFETY: as in `push_dtor`; the borrow ends before the call.
        unsafe { (*self.dtors.get()).pop() }
    }

    fn forget_dtors(&self) {
        // SAFETY: as in `push_dtor`.
        unsafe { (*self.dtors.get()).clear() }
    }

    fn at<T>(&self, offset: usize) -> *mut T {
        (self.tp + offset) as *mut T
    }

    fn at_tls<T>(&self, tp_offset: isize) -> *mut T {
        (self.tp as isize + tp_offset) as *mut T
    }
}

impl ThreadBlock {
    /// Builds a coroutine's thread block from the calling worker thread (see
    /// [`ThreadBlock::fill`]), for a coroutine on `stack`: its area in the
    /// floor of that stack if it has one (mapped at `floor`), else in a
    /// slot of its own.
    pub(crate) fn new(
        layout: &'static Layout,
        stack: StackBounds,
        floor: Option<usize>,
    ) -> io::Result<ThreadBlock> {
        let wtp = fs::base();
        layout.check_worker(wtp).map_err(io::Error::other)?;
        let mem = match floor {
            Some(low) => layout.area_in_floor(low) as *mut u8,
            None => area_alloc(layout)?,
        };
        let tp = mem as usize + layout.tls_below;
        let block = ThreadBlock {
            inner: Box::new(Inner {
                tp,
                mem,
                home: AtomicUsize::new(wtp),
                layout,
                stack,
                dtors: UnsafeCell::new(Vec::new()),
                exited: Cell::new(false),
                own_area: floor.is_none(),
            }),
        };
        // SAFETY: the dtv word of a fresh area; `fill` replaces it.
        unsafe { *block.inner.at::<usize>(layout.off_dtv) = 0 };
        block.fill(wtp)?;
        Ok(block)
    }

    /// Makes a block whose coroutine ended (see [`ThreadBlock::recycle`])
    /// the identity of a new coroutine on the same stack, run by the
    /// calling worker: the costs of a block are then two copies, no
    /// allocation.
    pub(crate) fn refill(&self) -> io::Result<()> {
        let wtp = fs::base();
        self.inner
            .layout
            .check_worker(wtp)
            .map_err(io::Error::other)?;
        self.inner.exited.set(false);
        self.fill(wtp)
    }

    /// Writes a new thread's state, as seen from the worker at `wtp`:
    ///
    /// * Static TLS below the TP, the part in use (`Layout::tls_to_copy`):
    ///   copied from the worker, then the block of every module loaded with
    ///   the process but libc reset to its initial image (`.tdata`, zeroed
    ///   `.tbss`), so std and the runtime see a new thread. libc's block
    ///   stays a copy (malloc's tcache and arena; the process's locale,
    ///   with the character tables of the locale in force now) except `errno`
    ///   and `h_errno` (0), `__resp` (the copy's own resolver state) and
    ///   `__libc_dlerror_result` (none).
    /// * `struct pthread`: zero (a new thread's state) except `tcbhead_t`
    ///   copied from the worker (stack guard, pointer guard, sysinfo,
    ///   multiple_threads...) with `tcb`/`self` pointing at the copy and its
    ///   own dtv; `tid` (the worker's kernel thread); an empty robust list;
    ///   `specific[0]` at the copy's own first key block; the worker's
    ///   scheduling fields; the coroutine's stack; `rseq.cpu_id = -1` (the
    ///   kernel updates only the worker's registered area, so `sched_getcpu`
    ///   must use the vDSO).
    /// * dtv: a copy whose entries for static blocks point into the copy;
    ///   lazily allocated (dlopen'ed) entries are reset to unallocated.
    /// * This crate's `CURRENT_BLOCK` thread-local in the copy points at the
    ///   block (the signal wrappers and the destructor interposer read it).
    fn fill(&self, wtp: usize) -> io::Result<()> {
        let inner = &*self.inner;
        let (l, tp) = (inner.layout, inner.tp);
        ensure_malloc_state(l, wtp);
        inner.home.store(wtp, Ordering::Relaxed);
        // SAFETY: `inner.mem` is this block's area of `static_size` bytes;
        // every write below is inside it (offsets verified by
        // `glibc::discover`), and the worker's area is the calling thread's
        // own, read-only here but for its locale, set and put back.
        unsafe {
            // The dtv is kept across refills: glibc may have grown it.
            let dtv = copy_dtv(l, wtp, tp, *inner.at::<usize>(l.off_dtv))?;
            // A new thread starts in the process's locale, with the
            // character tables of the locale in force then. The worker's
            // may be older (`setlocale` since) or another (`uselocale` in
            // code run on the worker): the copy takes them from the worker
            // set so, which is then put back.
            let worker_locale = libc::uselocale(LC_GLOBAL_LOCALE);
            // Static TLS: copy, then reset every block but libc's.
            let in_use = l.tls_to_copy();
            ptr::copy_nonoverlapping(
                (wtp - in_use) as *const u8,
                (tp - in_use) as *mut u8,
                in_use,
            );
            if worker_locale != LC_GLOBAL_LOCALE {
                libc::uselocale(worker_locale);
            }
            for m in l.modules.iter().filter(|m| l.resets(m)) {
                let dst = inner.at_tls::<u8>(m.tp_offset);
                let filesz = m.image.len();
                ptr::copy_nonoverlapping(m.image.as_ptr(), dst, filesz);
                ptr::write_bytes(dst.add(filesz), 0, m.memsz - filesz);
            }
            *inner.at_tls::<i32>(l.tp_errno) = 0;
            *inner.at_tls::<i32>(l.tp_h_errno) = 0;
            *inner.at_tls::<usize>(l.tp_resp) = tp + l.off_res;
            *inner.at_tls::<usize>(l.tp_dlerror) = 0;

            // struct pthread: a new thread's zeroes plus the fields below.
            ptr::write_bytes(tp as *mut u8, 0, l.tcb_size);
            ptr::copy_nonoverlapping(wtp as *const u8, tp as *mut u8, l.header_size);
            *inner.at::<usize>(0) = tp; // header.tcb
            *inner.at::<usize>(0x10) = tp; // header.self
            *inner.at::<usize>(l.off_dtv) = dtv;
            *inner.at::<i32>(l.off_tid) = *((wtp + l.off_tid) as *const i32);
            let rh = l.off_robust_head;
            *inner.at::<usize>(rh) = tp + rh; // empty list
            *inner.at::<usize>(rh + 8) = *((wtp + rh + 8) as *const usize); // futex_offset
            *inner.at::<usize>(l.off_specific) = tp + l.off_specific_1st;
            *inner.at::<i32>(l.off_schedpolicy) = *((wtp + l.off_schedpolicy) as *const i32);
            *inner.at::<i32>(l.off_sched_priority) = *((wtp + l.off_sched_priority) as *const i32);
            let sb = inner.at::<usize>(l.off_stackblock);
            *sb = inner.stack.low;
            *sb.add(1) = inner.stack.len;
            *sb.add(2) = inner.stack.guard;
            *sb.add(3) = inner.stack.guard;
            if let Some(off) = l.off_rseq_cpu_id {
                *inner.at::<u32>(off) = RSEQ_CPU_ID_UNINITIALIZED;
            }
            *inner.at_tls::<*const Inner>(l.tp_current_block) = inner;
        }
        Ok(())
    }

    /// Re-targets the block at the calling worker, for a coroutine that
    /// moved here: `leave` returns to this thread, `tid` names this kernel
    /// thread, and malloc's tcache/arena pointers are this worker's (sharing
    /// the old worker's cache while both run would corrupt it). Call on the
    /// new worker while the coroutine is suspended, before resuming it.
    pub(crate) fn migrate(&self) -> io::Result<()> {
        let wtp = fs::base();
        let l = self.inner.layout;
        l.check_worker(wtp).map_err(io::Error::other)?;
        ensure_malloc_state(l, wtp);
        self.retarget(wtp);
        Ok(())
    }

    fn retarget(&self, wtp: usize) {
        let l = self.inner.layout;
        // SAFETY: both areas are live thread areas of this layout, the
        // coroutine is suspended and the worker's fields are its own.
        unsafe {
            *self.inner.at::<i32>(l.off_tid) = *((wtp + l.off_tid) as *const i32);
            ptr::copy_nonoverlapping(
                (wtp as isize + l.tp_malloc) as *const u8,
                self.inner.at_tls::<u8>(l.tp_malloc),
                l.malloc_len,
            );
        }
        self.inner.home.store(wtp, Ordering::Relaxed);
    }

    /// The copy's instance of a thread-local whose address on the calling
    /// worker is `worker_addr` (static TLS lies at a fixed offset from the
    /// TP), e.g. to give the coroutine the runtime's `CURRENT` or `WORKER`.
    ///
    /// # Panics
    /// If `worker_addr` is not in the calling thread's static TLS area.
    pub(crate) fn local_ptr<T>(&self, worker_addr: *const T) -> *mut T {
        let wtp = fs::base();
        let l = self.inner.layout;
        let a = worker_addr as usize;
        assert!(
            a >= wtp - l.tls_below && a + core::mem::size_of::<T>() <= wtp,
            "not a static thread-local of the calling thread"
        );
        (self.inner.tp - (wtp - a)) as *mut T
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Thread exit for the coroutine, as glibc's: its TLS destructors
    /// (`__cxa_thread_atexit_impl` registrations, newest first, including
    /// those registered meanwhile) once, then its pthread key destructors.
    /// TLS destructors that key destructors register are never called, as
    /// glibc leaks them with the thread; nor may the next coroutine on this
    /// block call them. Must run with this block active.
    #[inline(never)]
    pub(crate) fn thread_exit(&self) {
        debug_assert_eq!(fs::base(), self.inner.tp);
        while let Some((f, obj)) = self.inner.pop_dtor() {
            // SAFETY: a destructor registered for this coroutine's
            // thread-locals, run once, with its TLS active.
            unsafe { f(obj) };
        }
        // SAFETY: the block is active and the layout verified.
        unsafe { self.run_key_destructors() };
        self.inner.forget_dtors();
        self.inner.exited.set(true);
    }

    /// glibc's `__nptl_deallocate_tsd` on the copy's key storage: for each
    /// key with a value whose sequence number still matches the key, clear
    /// it and call the key's destructor; up to 4 rounds.
    unsafe fn run_key_destructors(&self) {
        let l = self.inner.layout;
        let used = self.inner.at::<u8>(l.off_specific_used);
        for _round in 0..DESTRUCTOR_ITERATIONS {
            // SAFETY (block): offsets verified; the copy's own key storage.
            unsafe {
                if ptr::read_volatile(used) == 0 {
                    break;
                }
                ptr::write_volatile(used, 0);
                for i1 in 0..l.key_1st_count {
                    let level2 = *self.inner.at::<usize>(l.off_specific + 8 * i1);
                    if level2 == 0 {
                        continue;
                    }
                    for i2 in 0..l.key_2nd_count {
                        let idx = i1 * l.key_2nd_count + i2;
                        let entry = level2 + i2 * l.key_data_size;
                        let data = *((entry + l.key_data_data) as *const usize);
                        if data == 0 || idx >= l.keys_max {
                            continue;
                        }
                        *((entry + l.key_data_data) as *mut usize) = 0;
                        let seq = *((entry + l.key_data_seq) as *const usize);
                        let key = l.keys + idx * l.key_struct_size;
                        let destr = *((key + l.key_struct_destr) as *const usize);
                        if seq == *((key + l.key_struct_seq) as *const usize) && destr != 0 {
                            let destr: Dtor = core::mem::transmute(destr);
                            destr(data as *mut c_void);
                        }
                    }
                }
            }
        }
    }

    /// Runs `f` with this block active on the calling thread (used to run
    /// leftover destructors from `drop`, off the coroutine's stack).
    #[inline(never)]
    fn with_active(&self, f: impl FnOnce()) {
        let here = fs::base();
        if here != self.inner.home() {
            self.retarget(here);
        }
        // SAFETY: the block is complete and targets this thread.
        unsafe { enter(self) };
        f();
        // SAFETY: returns to this thread's own thread pointer.
        unsafe { leave(self) };
    }
}

impl ThreadBlock {
    /// Ends the coroutine's thread, keeping the block's memory for the next
    /// coroutine on its stack (see [`ThreadBlock::refill`]). If the body did
    /// not finish (stack overflow, or a coroutine abandoned at shutdown),
    /// its destructors run here, with the block active on the calling
    /// thread. Then what glibc allocated for the copy is freed:
    /// second-level key blocks, strsignal and strerror buffers, a pending
    /// dlerror result, resolver state, and lazily allocated TLS blocks.
    pub(crate) fn recycle(&self) {
        let l = self.inner.layout;
        let inner = &*self.inner;
        // Any real thread can host the destructors (the worker-only rule is
        // about copying a thread's state, not about running on it).
        let here = fs::base();
        // SAFETY: reads fs:0x10 of the calling thread.
        let can_enter = unsafe { *((here + 0x10) as *const usize) } == here;
        if !inner.exited.get() && can_enter {
            self.with_active(|| self.thread_exit());
        }
        // SAFETY: the coroutine no longer runs on this block; each pointer
        // freed was allocated by glibc's malloc for the copy only (reset to
        // null or unallocated when the copy was filled), and is forgotten.
        unsafe {
            if *inner.at_tls::<usize>(l.tp_dlerror) != 0 && can_enter {
                // dlerror() frees the pending result on its second call.
                self.with_active(|| {
                    libc::dlerror();
                    libc::dlerror();
                });
            }
            for i1 in 1..l.key_1st_count {
                take_and_free(inner.at::<*mut c_void>(l.off_specific + 8 * i1));
            }
            take_and_free(inner.at::<*mut c_void>(l.off_strsignal_buf));
            take_and_free(inner.at::<*mut c_void>(l.off_strerror_l_buf));
            if *inner.at::<i32>(l.off_res + RES_NSCOUNT) != 0 {
                res_nclose(inner.at::<c_void>(l.off_res));
                *inner.at::<i32>(l.off_res + RES_NSCOUNT) = 0;
            }
            free_dtv_blocks(*inner.at::<*mut usize>(l.off_dtv));
        }
        inner.exited.set(true);
    }
}

impl Drop for ThreadBlock {
    fn drop(&mut self) {
        self.recycle();
        let inner = &*self.inner;
        // SAFETY: the dtv array came from glibc's malloc (see `copy_dtv`)
        // and the area from `area_alloc`; nothing uses either any more.
        unsafe {
            let dtv = *inner.at::<*mut usize>(inner.layout.off_dtv);
            libc::free(dtv.sub(2) as *mut c_void);
        }
        if inner.own_area {
            area_free(inner.mem);
        }
    }
}

/// Frees the pointer at `slot`, if any, and forgets it.
///
/// # Safety
/// `slot` holds null or a pointer from glibc's malloc that nothing else
/// uses.
unsafe fn take_and_free(slot: *mut *mut c_void) {
    // SAFETY: per the contract.
    unsafe {
        if !(*slot).is_null() {
            libc::free(core::mem::replace(&mut *slot, ptr::null_mut()));
        }
    }
}

/// `free` without the call for the (usual) null pointer.
#[inline(always)]
unsafe fn free_nonnull(p: *mut c_void) {
    if !p.is_null() {
        // SAFETY: the caller's pointer came from glibc's malloc.
        unsafe { libc::free(p) }
    }
}

/// Thread areas, packed in slots of their size (`memory::Slots`): a new
/// coroutine's area costs no heap growth (from glibc's `posix_memalign`, the
/// worker's malloc arena grew by one `mprotect` per page or two), and the
/// areas of a burst of coroutines go back to the kernel when they end.
static AREAS: Mutex<Option<Slots>> = Mutex::new(None);

fn area_alloc(l: &Layout) -> io::Result<*mut u8> {
    let mut areas = AREAS.lock().unwrap_or_else(|e| e.into_inner());
    let stride = l.static_size.next_multiple_of(l.static_align);
    let slots = areas.get_or_insert_with(|| Slots::new(stride, whole_pages));
    match slots.take(|_| Ok(())) {
        Ok(low) => Ok(low as *mut u8),
        Err(error) => Err(io::Error::from_raw_os_error(error)),
    }
}

/// Unmaps the chunks of thread areas none of which is in use.
pub(crate) fn trim_areas() {
    let mut areas = AREAS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(slots) = areas.as_mut() {
        slots.trim();
    }
}

fn area_free(mem: *mut u8) {
    let mut areas = AREAS.lock().unwrap_or_else(|e| e.into_inner());
    let returned = areas.as_mut().is_some_and(|slots| slots.put(mem as usize));
    debug_assert!(returned, "a thread area from area_alloc");
}

/// The pages wholly inside a free area, which may go back to the kernel.
fn whole_pages(low: usize, stride: usize) -> [(usize, usize); 2] {
    let start = low.next_multiple_of(PAGE);
    let end = (low + stride) / PAGE * PAGE;
    [(start, end.saturating_sub(start)), (0, 0)]
}

unsafe extern "C" {
    #[link_name = "__res_nclose"]
    fn res_nclose(state: *mut c_void);
}

/// Makes sure the worker has its malloc tcache and arena, so the copy
/// shares them instead of creating a private cache on first use.
fn ensure_malloc_state(l: &Layout, wtp: usize) {
    let words = (wtp as isize + l.tp_malloc) as *const usize;
    // SAFETY: the malloc words are inside the worker's verified area.
    let first = unsafe { *words };
    if first == 0 {
        // SAFETY: a malloc/free pair initialises the calling thread's cache.
        unsafe { libc::free(libc::malloc(1)) };
    }
}

/// The worker's dtv for a copy at `tp`, written over `old` (a copy's dtv
/// from an earlier fill, or 0) if it has the same length. Entries for
/// static blocks are rebased into the copy; dynamically allocated ones are
/// reset to unallocated so `__tls_get_addr` allocates the coroutine its
/// own.
unsafe fn copy_dtv(l: &Layout, wtp: usize, tp: usize, old: usize) -> io::Result<usize> {
    // SAFETY (block): the worker's dtv is a calloc'ed array of 16-byte
    // entries whose element -1 holds its length (verified by `discover`);
    // `old`, if not 0, is a copy's, freed of its lazily allocated blocks.
    unsafe {
        let wdtv = *((wtp + l.off_dtv) as *const usize);
        let len = *((wdtv - 16) as *const usize);
        let bytes = (len + 2) * 16;
        let new = match old {
            0 => ptr::null_mut(),
            old if *((old - 16) as *const usize) == len => (old - 16) as *mut usize,
            old => {
                libc::free((old - 16) as *mut c_void);
                ptr::null_mut()
            }
        };
        // glibc may realloc() and free() this array (dtv resize), so it
        // must come from glibc's malloc.
        let new = match new.is_null() {
            true => libc::malloc(bytes) as *mut usize,
            false => new,
        };
        if new.is_null() {
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        ptr::copy_nonoverlapping((wdtv - 16) as *const u8, new as *mut u8, bytes);
        let (lo, hi) = (wtp - l.tls_below, wtp);
        for i in 1..=len {
            let e = new.add(2 * (i + 1));
            let val = *e;
            if val >= lo && val < hi {
                *e = tp - (wtp - val);
            } else if val != 0 {
                *e = TLS_DTV_UNALLOCATED;
            }
            *e.add(1) = 0; // to_free: nothing of the copy's is allocated yet
        }
        Ok(new as usize + 16)
    }
}

/// Frees the TLS blocks `__tls_get_addr` allocated for a copy's dtv
/// (possibly resized by glibc), and marks them unallocated.
unsafe fn free_dtv_blocks(dtv: *mut usize) {
    // SAFETY (block): a dtv made by `copy_dtv` or resized by glibc.
    unsafe {
        let len = *dtv.sub(2);
        for i in 1..=len {
            let to_free = dtv.add(2 * i + 1);
            if *to_free != 0 {
                free_nonnull(*to_free as *mut c_void);
                *to_free = 0;
                *dtv.add(2 * i) = TLS_DTV_UNALLOCATED;
            }
        }
    }
}
