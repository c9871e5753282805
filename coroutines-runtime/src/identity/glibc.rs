//! Everything this crate knows about glibc's thread layout, and how each
//! piece is verified at run time.
//!
//! No other module hard-codes a glibc offset: they read them from
//! [`Layout`], which only [`discover`] builds, and `discover` fails (so the
//! runtime falls back to shared identity) as soon as one fact does not hold.
//!
//! # The facts (x86-64, glibc 2.34+; measured on 2.36)
//!
//! The thread pointer (TP, `fs_base`) points at the thread's `struct pthread`
//! (TLS_TCB_AT_TP). Its first bytes are `tcbhead_t`: `tcb` (fs:0) and `self`
//! (fs:0x10) both point at the TP itself, `dtv` (fs:8) at the thread's TLS
//! vector. The static TLS blocks of every module loaded at start-up (the
//! executable, libc, ...) plus a surplus for later `dlopen`s lie *below* the
//! TP. glibc allocates one area of `_dl_get_tls_static_info().size` bytes per
//! thread, `size - sizeof(struct pthread)` of TLS below the TP and the
//! descriptor above it. On the reference machine: 4352 bytes, align 64,
//! `struct pthread` = 2368 bytes, so the area is `[TP - 1984, TP + 2368)`.
//!
//! | fact | source (run-time) | verification |
//! |---|---|---|
//! | static TLS size / align | `_dl_get_tls_static_info` (ld.so, GLIBC_PRIVATE) | TP aligned; every start-up module's block and `errno` inside `[TP - below, TP)` |
//! | `sizeof(struct pthread)` | `_thread_db_sizeof_pthread` (libc, GLIBC_PRIVATE, libthread_db's descriptor) | `below = size - sizeof` is positive and aligned |
//! | `tcb` at fs:0, `self` at fs:0x10 | x86-64 TLS ABI (`tcbhead_t`) | both equal `pthread_self()` and `rdfsbase` |
//! | `dtv` at fs:8 | `_thread_db_pthread_dtvp` descriptor | `dtv[m].val` equals `dl_iterate_phdr`'s `dlpi_tls_data` for every module `m` |
//! | end of `tcbhead_t` union | `_thread_db_pthread_list` (first field after it) | `>= 0x18`, `<= tid` |
//! | `tid` | `_thread_db_pthread_tid` | equals `gettid()` |
//! | `robust_head` = `tid + 16` | descr.h field order (`tid`, `robust_prev`, `robust_head`) | the empty list points at itself |
//! | `specific[]`, `specific_1stblock` = `specific - 512` | `_thread_db_pthread_specific`, `_thread_db_sizeof_pthread_key_data_level2` | `specific[0] == &specific_1stblock` |
//! | `specific_used` | descr.h: the byte after `specific[]` | probe: cleared byte becomes 1 after `pthread_setspecific` |
//! | key table `__pthread_keys` | exported (GLIBC_PRIVATE) + `_thread_db___pthread_keys`, `_thread_db_pthread_key_struct_{seq,destr}` | a probe key shows its destructor and an odd (in use) sequence number |
//! | `pthread_key_data {seq, data}` | `_thread_db_pthread_key_data_{seq,data}` | probe key's value is found at `specific_1stblock[key].data` |
//! | `schedpolicy`, `schedparam` | `_thread_db_pthread_schedpolicy`, `..._schedparam_sched_priority` | inside the descriptor |
//! | `stackblock, stackblock_size, guardsize, reported_guardsize` | found by probing: a thread with a known stack and guard | unique 4-word match against `pthread_getattr_np` |
//! | `res` (resolver state) | `__res_state()` returns `&pd->res` on a new thread | inside the descriptor |
//! | `__resp` (libc TLS) | exported TLS symbol `__resp` | holds `__res_state()` |
//! | `tls_state.{strsignal_buf, strerror_l_buf}` | probe: the word holding `strsignal(999)` / `strerror(99999)` | unique match |
//! | `rseq_area` | `__rseq_offset`, `__rseq_size` (ld.so, public since 2.35); `cpu_id` at +4 (kernel ABI `struct rseq`) | inside the descriptor; `cpu_id` is a valid CPU |
//! | `errno`, `h_errno`, `__libc_dlerror_result` (libc TLS) | `__errno_location()`, `__h_errno_location()`, exported TLS symbols | inside libc's static block |
//! | the thread's locale and its cached character tables (`__libc_tsd_LOCALE`, `__libc_tsd_CTYPE_*`, libc TLS) | `uselocale(LC_GLOBAL_LOCALE)` sets both, as a new thread starts | none needed: it writes the calling thread's own |
//! | malloc's per-thread words (`tcache`, `thread_arena`) | probe: the words of the static area that a thread's first `malloc` changes | exactly two words, both in libc's block |
//! | static TLS in use: the start-up modules' blocks; the rest is surplus | `dl_iterate_phdr` (`dlpi_tls_data`, `PT_TLS`) | every block inside `[TP - below, TP)` |
//! | static TLS in use now (`dl_tls_static_used`: grows when a module takes static TLS, shrinks when the lowest is closed) and the modules loaded with the process (`_dl_tls_static_nelem`) | the two words after `_rtld_global._dl_tls_dtv_slotinfo_list` (`_thread_db_rtld_global__dl_tls_dtv_slotinfo_list`, via `__nptl_rtld_global`) | at start-up: the first counts at most the static modules, the second equals their span, the word before the list is the highest module id, the one after them at most the surplus; else copies take the whole area and reset only the executable's block |
//!
//! Everything else in `struct pthread` is left zero in a copy, which is the
//! state glibc gives a new thread (`allocate_stack` clears the descriptor).

use core::ffi::{c_char, c_int, c_void, CStr};
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::fmt;

use super::fs;
use crate::coroutine::stack_floor::FLOOR;

/// `RSEQ_CPU_ID_UNINITIALIZED`: `sched_getcpu` falls back to the vDSO.
pub(crate) const RSEQ_CPU_ID_UNINITIALIZED: u32 = u32::MAX; // (u32)-1
/// `TLS_DTV_UNALLOCATED`: a dtv entry whose block `__tls_get_addr` allocates.
pub(crate) const TLS_DTV_UNALLOCATED: usize = usize::MAX; // (void *)-1
/// `LC_GLOBAL_LOCALE` (`<locale.h>`: `(locale_t) -1`): the process's locale.
pub(crate) const LC_GLOBAL_LOCALE: libc::locale_t = usize::MAX as libc::locale_t;
/// `PTHREAD_DESTRUCTOR_ITERATIONS` on Linux.
pub(crate) const DESTRUCTOR_ITERATIONS: usize = 4;
/// `sizeof(struct __res_state)` on x86-64: public ABI (`<resolv.h>`).
pub(crate) const RES_STATE_SIZE: usize = 568;
/// Offset of `nscount` in `struct __res_state` (public ABI: `retrans`,
/// `retry`, `options`, then `nscount`). Zero means `res_ninit` never ran.
pub(crate) const RES_NSCOUNT: usize = 16;
/// `HWCAP2_FSGSBASE` in `AT_HWCAP2`: the kernel allows `wrfsbase`.
const HWCAP2_FSGSBASE: u64 = 1 << 1;
/// Largest static TLS area below the TP each coroutine gets a copy of
/// (bytes): programs rarely have more than a few KiB; one with more than
/// this keeps shared identity rather than pay it per coroutine.
const MAX_TLS_BELOW: usize = 256 * 1024;

/// A verification step that did not hold, in words for the one-time
/// fallback message.
#[derive(Clone, Debug)]
pub(crate) struct Failure(pub(crate) String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! fail {
    ($($arg:tt)*) => { return Err(Failure(format!($($arg)*))) };
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => { if !$cond { fail!($($arg)*) } };
}

/// One static-TLS module, as offsets from the TP.
#[derive(Clone, Debug)]
pub(crate) struct Module {
    pub(crate) modid: usize,
    /// Block start minus TP (negative: below the TP).
    pub(crate) tp_offset: isize,
    /// A copy of its initial image (`.tdata`), taken at start-up.
    pub(crate) image: Box<[u8]>,
    pub(crate) memsz: usize,
    /// libc's block is copied (it holds malloc's and the locale's per-thread
    /// pointers, shared with the worker); see [`Layout::resets`].
    pub(crate) is_libc: bool,
}

/// The verified layout of this process's threads. Built once by
/// [`discover`]; every offset is in bytes from the thread pointer.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    /// `_dl_get_tls_static_info`: bytes per thread area, and its alignment.
    pub(crate) static_size: usize,
    pub(crate) static_align: usize,
    /// `sizeof(struct pthread)`: the descriptor above the TP.
    pub(crate) tcb_size: usize,
    /// Static TLS below the TP: `static_size - tcb_size`.
    pub(crate) tls_below: usize,
    /// `tcbhead_t` (and its padding union): copied from the worker.
    pub(crate) header_size: usize,
    pub(crate) off_dtv: usize,
    pub(crate) off_tid: usize,
    pub(crate) off_robust_head: usize,
    pub(crate) off_specific: usize,
    pub(crate) off_specific_1st: usize,
    pub(crate) off_specific_used: usize,
    pub(crate) key_1st_count: usize,
    pub(crate) key_2nd_count: usize,
    pub(crate) key_data_size: usize,
    pub(crate) key_data_seq: usize,
    pub(crate) key_data_data: usize,
    pub(crate) keys: usize,
    pub(crate) keys_max: usize,
    pub(crate) key_struct_size: usize,
    pub(crate) key_struct_seq: usize,
    pub(crate) key_struct_destr: usize,
    pub(crate) off_schedpolicy: usize,
    pub(crate) off_sched_priority: usize,
    /// `stackblock`; `stackblock_size`, `guardsize`, `reported_guardsize`
    /// follow as consecutive words.
    pub(crate) off_stackblock: usize,
    pub(crate) off_res: usize,
    pub(crate) off_strsignal_buf: usize,
    pub(crate) off_strerror_l_buf: usize,
    /// `rseq_area.cpu_id`, if rseq is registered.
    pub(crate) off_rseq_cpu_id: Option<usize>,
    /// libc TLS words, as offsets from the TP (negative).
    pub(crate) tp_errno: isize,
    pub(crate) tp_h_errno: isize,
    pub(crate) tp_resp: isize,
    pub(crate) tp_dlerror: isize,
    /// malloc's per-thread words (`tcache` .. `thread_arena`), one range.
    pub(crate) tp_malloc: isize,
    pub(crate) malloc_len: usize,
    /// Static TLS modules present at start-up.
    pub(crate) modules: Vec<Module>,
    /// Bytes below the TP that the start-up modules' blocks span; the
    /// rest of `tls_below` is glibc's surplus for modules loaded later.
    tls_in_use: usize,
    /// glibc's `dl_tls_static_used` (see [`static_tls_used`]); `None` if it
    /// could not be found, and then copies take the whole area.
    static_used: Option<usize>,
    /// Modules `1..=n` were loaded with the process: the executable only
    /// where `static_tls_used` could not tell.
    process_modules: usize,
    /// This crate's own thread-local (`CURRENT_BLOCK`), from the TP.
    pub(crate) tp_current_block: isize,
    /// What a resumed coroutine reads of its copy first, from the TP: the
    /// descriptor's header (`%fs:0`), `errno`, `CURRENT_BLOCK` and the
    /// scheduler's current coroutine.
    pub(crate) tp_hot: [isize; 4],
}

/// Looks a symbol up in the global scope (the executable, then libraries).
fn sym(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym with a NUL-terminated name; RTLD_DEFAULT is valid.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

/// A libthread_db field descriptor: `{ size in bits, count, offset }`.
#[derive(Clone, Copy, Debug)]
struct Desc {
    bits: u32,
    count: u32,
    offset: u32,
}

fn desc(name: &CStr) -> Result<Desc, Failure> {
    let p = sym(name).ok_or_else(|| Failure(format!("symbol {name:?} not found")))?;
    // SAFETY: glibc defines each `_thread_db_*` descriptor as `uint32_t[3]`.
    let d = unsafe { *(p as *const [u32; 3]) };
    Ok(Desc {
        bits: d[0],
        count: d[1],
        offset: d[2],
    })
}

fn sizeof(name: &CStr) -> Result<usize, Failure> {
    let p = sym(name).ok_or_else(|| Failure(format!("symbol {name:?} not found")))?;
    // SAFETY: `_thread_db_sizeof_*` is a `uint32_t`.
    Ok(unsafe { *(p as *const u32) } as usize)
}

/// Static TLS size and alignment, from ld.so's private accessor (the GCC
/// sanitizers use the same one).
fn static_tls_info() -> Result<(usize, usize), Failure> {
    let f = sym(c"_dl_get_tls_static_info")
        .ok_or_else(|| Failure("_dl_get_tls_static_info (GLIBC_PRIVATE) not found".into()))?;
    // SAFETY: the symbol is `void _dl_get_tls_static_info(size_t *, size_t *)`.
    let f: extern "C" fn(*mut usize, *mut usize) = unsafe { core::mem::transmute(f) };
    let (mut size, mut align) = (0usize, 0usize);
    f(&mut size, &mut align);
    Ok((size, align))
}

/// What the probe thread observed before anything else could allocate.
struct MallocProbe {
    changed: [usize; 8],
    n_changed: usize,
    below_bytes: usize,
}

/// Context handed to the probe thread.
struct Probe {
    tls_below: usize,
    /// Where the probe keeps its copy of the area: allocated here, as the
    /// probe thread must not allocate before its snapshots.
    snapshot: Vec<usize>,
    malloc: MallocProbe,
    /// Set by the probe once cancellation is disabled and it waits.
    ready_for_cancel: core::sync::atomic::AtomicBool,
    cancelled: core::sync::atomic::AtomicBool,
    result: Option<Result<Layout, Failure>>,
    /// Filled in by `discover` before the probe starts.
    tcb_size: usize,
    static_size: usize,
    static_align: usize,
    stack_size: usize,
    guard_size: usize,
}

/// Builds and verifies the [`Layout`] on a fresh, raw pthread (the shape of
/// a worker), and makes glibc install its SIGCANCEL handler so that
/// `signals` can wrap it.
pub(crate) fn discover() -> Result<Layout, Failure> {
    // SAFETY: getauxval has no preconditions.
    let hwcap2 = unsafe { libc::getauxval(libc::AT_HWCAP2) };
    ensure!(
        hwcap2 & HWCAP2_FSGSBASE != 0,
        "the kernel does not enable FSGSBASE (AT_HWCAP2 = {hwcap2:#x}): wrfsbase would fault"
    );
    let (static_size, static_align) = static_tls_info()?;
    let tcb_size = sizeof(c"_thread_db_sizeof_pthread")?;
    ensure!(
        static_size > tcb_size && static_align.is_power_of_two() && static_align >= 16,
        "implausible static TLS info: size {static_size}, align {static_align}, struct pthread {tcb_size}"
    );
    ensure!(
        static_align <= 4096,
        "static TLS aligned to {static_align} bytes: thread areas are packed in pages"
    );
    let tls_below = static_size - tcb_size;
    ensure!(
        tls_below.is_multiple_of(static_align),
        "static TLS below the thread pointer ({tls_below} bytes) is not a multiple of {static_align}"
    );
    ensure!(
        tls_below <= MAX_TLS_BELOW,
        "the program's static thread-local storage ({} KiB) is more than the {} KiB the runtime \
         copies for each coroutine; keep large thread_local! values on the heap (a Box or \
         a Vec) to have identities",
        tls_below / 1024,
        MAX_TLS_BELOW / 1024
    );

    let mut probe = Box::new(Probe {
        tls_below,
        snapshot: vec![0; tls_below / 8],
        malloc: MallocProbe {
            changed: [0; 8],
            n_changed: 0,
            below_bytes: 0,
        },
        ready_for_cancel: Default::default(),
        cancelled: Default::default(),
        result: None,
        tcb_size,
        static_size,
        static_align,
        // glibc carves static TLS out of the thread's stack.
        stack_size: 256 * 1024 + static_size.next_multiple_of(4096),
        guard_size: 3 * 4096,
    });

    // SAFETY: plain pthread attribute calls on a local attribute object.
    let thread = unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setstacksize(&mut attr, probe.stack_size);
        libc::pthread_attr_setguardsize(&mut attr, probe.guard_size);
        let mut thread: libc::pthread_t = 0;
        let rc = libc::pthread_create(
            &mut thread,
            &attr,
            probe_main,
            &mut *probe as *mut Probe as *mut c_void,
        );
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 {
            fail!("pthread_create for the layout probe failed: {rc}");
        }
        thread
    };
    // glibc installs its SIGCANCEL handler lazily, in the first
    // pthread_cancel; cancel the probe (cancellation disabled, so nothing
    // happens to it) so the handler exists before `signals` wraps it.
    while !probe
        .ready_for_cancel
        .load(core::sync::atomic::Ordering::Acquire)
    {
        std::thread::yield_now();
    }
    // SAFETY: the probe is alive (it waits for `cancelled`) and has
    // cancellation disabled.
    unsafe { libc::pthread_cancel(thread) };
    probe
        .cancelled
        .store(true, core::sync::atomic::Ordering::Release);
    // SAFETY: joins the thread created above exactly once.
    unsafe { libc::pthread_join(thread, ptr::null_mut()) };
    probe
        .result
        .take()
        .unwrap_or_else(|| Err(Failure("layout probe produced no result".into())))
}

extern "C" fn probe_main(arg: *mut c_void) -> *mut c_void {
    // SAFETY: `discover` passes a live `Probe` and joins before freeing it.
    let probe = unsafe { &mut *(arg as *mut Probe) };
    // Must come first: nothing may allocate on this thread before it.
    // SAFETY: runs on a fresh pthread that has not called malloc yet.
    unsafe { probe_malloc_words(probe) };
    // SAFETY: sets this thread's own cancellation state.
    unsafe { pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, ptr::null_mut()) };
    // A bug here must become a fallback, not an abort (extern "C").
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| probe_layout(probe)))
        .unwrap_or_else(|_| Err(Failure("the layout probe panicked".into())));
    probe
        .ready_for_cancel
        .store(true, core::sync::atomic::Ordering::Release);
    while !probe.cancelled.load(core::sync::atomic::Ordering::Acquire) {
        std::thread::yield_now();
    }
    probe.result = Some(result);
    ptr::null_mut()
}

/// Diffs the static TLS area around a thread's first `malloc`: the words it
/// changes are malloc's per-thread cache and arena pointers. No allocation
/// may happen here before the second snapshot.
unsafe fn probe_malloc_words(probe: &mut Probe) {
    let tp = fs::base();
    let words = probe.tls_below / 8;
    let area = (tp - probe.tls_below) as *const usize;
    let before = &mut probe.snapshot;
    for (i, w) in before.iter_mut().enumerate().take(words) {
        // SAFETY: the area below the TP is this thread's static TLS.
        *w = unsafe { ptr::read_volatile(area.add(i)) };
    }
    // SAFETY: malloc/free of a small block. black_box: the optimizer may
    // otherwise delete an unused malloc/free pair.
    let p = core::hint::black_box(unsafe { libc::malloc(core::hint::black_box(40)) });
    let mut n = 0;
    for (i, &old) in before.iter().enumerate().take(words) {
        // SAFETY: as above.
        let now = unsafe { ptr::read_volatile(area.add(i)) };
        if now != old {
            if n < probe.malloc.changed.len() {
                probe.malloc.changed[n] = i * 8;
            }
            n += 1;
        }
    }
    // SAFETY: frees the block allocated above.
    unsafe { libc::free(p) };
    probe.malloc.n_changed = n;
    probe.malloc.below_bytes = probe.tls_below;
}

/// Collected by `dl_iterate_phdr`.
struct PhdrModule {
    name: String,
    modid: usize,
    tls_data: usize,
    image: usize,
    filesz: usize,
    memsz: usize,
}

fn tls_modules() -> Vec<PhdrModule> {
    unsafe extern "C" fn cb(info: *mut libc::dl_phdr_info, _: usize, data: *mut c_void) -> c_int {
        // SAFETY: dl_iterate_phdr passes a valid info and our Vec.
        let (info, out) = unsafe { (&*info, &mut *(data as *mut Vec<PhdrModule>)) };
        if info.dlpi_tls_modid == 0 {
            return 0;
        }
        // SAFETY: dlpi_phdr points at dlpi_phnum program headers.
        let phdrs =
            unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        let Some(tls) = phdrs.iter().find(|p| p.p_type == libc::PT_TLS) else {
            return 0;
        };
        let name = if info.dlpi_name.is_null() {
            String::new()
        } else {
            // SAFETY: a NUL-terminated path owned by the loader.
            unsafe { CStr::from_ptr(info.dlpi_name as *const c_char) }
                .to_string_lossy()
                .into_owned()
        };
        out.push(PhdrModule {
            name,
            modid: info.dlpi_tls_modid,
            tls_data: info.dlpi_tls_data as usize,
            image: info.dlpi_addr as usize + tls.p_vaddr as usize,
            filesz: tls.p_filesz as usize,
            memsz: tls.p_memsz as usize,
        });
        0
    }
    let mut out: Vec<PhdrModule> = Vec::new();
    // SAFETY: the callback only touches `out`.
    unsafe { libc::dl_iterate_phdr(Some(cb), &mut out as *mut Vec<PhdrModule> as *mut c_void) };
    out
}

fn rd<T: Copy>(addr: usize) -> T {
    // SAFETY: callers pass addresses inside this thread's verified area.
    unsafe { ptr::read(addr as *const T) }
}

/// Verifies every fact on the probe thread and returns the layout.
fn probe_layout(probe: &Probe) -> Result<Layout, Failure> {
    let tp = fs::base();
    let below = probe.tls_below;
    let (area_lo, area_hi) = (tp - below, tp + probe.tcb_size);
    // SAFETY: pthread_self has no preconditions.
    let self_ = unsafe { libc::pthread_self() } as usize;
    ensure!(
        tp == self_ && rd::<usize>(tp) == tp && rd::<usize>(tp + 0x10) == tp,
        "thread pointer mismatch: rdfsbase {tp:#x}, pthread_self {self_:#x}, fs:0 {:#x}, fs:0x10 {:#x}",
        rd::<usize>(tp),
        rd::<usize>(tp + 0x10)
    );
    ensure!(
        tp.is_multiple_of(probe.static_align),
        "thread pointer {tp:#x} is not {}-aligned",
        probe.static_align
    );

    // dtv and modules.
    let d_dtv = desc(c"_thread_db_pthread_dtvp")?;
    ensure!(
        d_dtv.offset == 8 && d_dtv.bits == 64,
        "dtv is not at fs:8 ({d_dtv:?})"
    );
    let off_dtv = d_dtv.offset as usize;
    // dtv entries: 16 bytes, `pointer.val` (and `counter`) in the first word.
    let (d_elem, d_val) = (
        desc(c"_thread_db_dtv_dtv")?,
        desc(c"_thread_db_dtv_t_pointer_val")?,
    );
    ensure!(
        d_elem.bits == 128 && d_val.offset == 0 && desc(c"_thread_db_dtv_t_counter")?.offset == 0,
        "dtv entries are not 16-byte {{val, to_free}} pairs ({d_elem:?}, {d_val:?})"
    );
    let dtv = rd::<usize>(tp + off_dtv);
    let dtv_len = rd::<usize>(dtv - 16);
    let mods = tls_modules();
    ensure!(
        !mods.is_empty() && mods[0].name.is_empty(),
        "the executable has no static TLS block"
    );
    // SAFETY: __errno_location has no preconditions.
    let errno_addr = unsafe { libc::__errno_location() } as usize;
    let mut modules = Vec::new();
    for m in &mods {
        ensure!(
            m.modid <= dtv_len,
            "module {} (id {}) beyond the dtv ({dtv_len})",
            m.name,
            m.modid
        );
        let val = rd::<usize>(dtv + 16 * m.modid);
        // A module loaded with dynamic TLS that this thread has not used
        // yet has no block: unallocated in the dtv, null to dl_iterate_phdr.
        let unallocated = val == TLS_DTV_UNALLOCATED && m.tls_data == 0;
        ensure!(
            val == m.tls_data || unallocated,
            "dtv[{}] = {val:#x} but dl_iterate_phdr reports {:#x} for {:?}",
            m.modid,
            m.tls_data,
            m.name
        );
        if m.tls_data >= area_lo && m.tls_data + m.memsz <= tp {
            modules.push(Module {
                modid: m.modid,
                tp_offset: m.tls_data as isize - tp as isize,
                // SAFETY: the module's PT_TLS image, mapped while it is
                // loaded (it is: it was just reported).
                image: unsafe { core::slice::from_raw_parts(m.image as *const u8, m.filesz) }
                    .into(),
                memsz: m.memsz,
                is_libc: errno_addr >= m.tls_data && errno_addr < m.tls_data + m.memsz,
            });
        } else {
            ensure!(
                m.modid > 1 && !m.name.is_empty(),
                "start-up module {:?} has its TLS outside the static area",
                m.name
            );
            // A dlopen'ed module with dynamic TLS: its dtv entry is reset in
            // copies and allocated lazily by __tls_get_addr.
        }
    }
    let libc_block = modules
        .iter()
        .find(|m| m.is_libc)
        .ok_or_else(|| {
            Failure(format!(
                "errno ({errno_addr:#x}) is not inside any static TLS block"
            ))
        })?
        .clone();
    ensure!(
        modules.iter().filter(|m| m.is_libc).count() == 1,
        "errno lies in several TLS blocks"
    );
    let in_libc = |addr: usize, len: usize| {
        let lo = (tp as isize + libc_block.tp_offset) as usize;
        addr >= lo && addr + len <= lo + libc_block.memsz
    };

    // Our own thread-local must be in the executable's block, or copies
    // could not be told apart from worker threads.
    let cur = super::current_block_addr();
    let exe = &modules[0];
    let exe_lo = (tp as isize + exe.tp_offset) as usize;
    ensure!(
        exe.modid == 1 && !exe.is_libc && cur >= exe_lo && cur + 8 <= exe_lo + exe.memsz,
        "the identity module's thread-local ({cur:#x}) is not in the executable's static TLS block"
    );

    // tcbhead_t extent and tid.
    let header_size = desc(c"_thread_db_pthread_list")?.offset as usize;
    let d_tid = desc(c"_thread_db_pthread_tid")?;
    let off_tid = d_tid.offset as usize;
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    ensure!(
        header_size >= 0x18
            && header_size <= off_tid
            && d_tid.bits == 32
            && rd::<i32>(tp + off_tid) == tid,
        "tid field (offset {off_tid}) holds {} but gettid() = {tid}",
        rd::<i32>(tp + off_tid)
    );
    // robust_head follows tid and robust_prev; an empty list is a pointer
    // to the list head itself (set by start_thread).
    let off_robust_head = off_tid + 16;
    ensure!(
        rd::<usize>(tp + off_robust_head) == tp + off_robust_head,
        "robust_head (tid + 16) is not an empty self-referencing list"
    );

    // Thread-specific data.
    let d_spec = desc(c"_thread_db_pthread_specific")?;
    let level2 = sizeof(c"_thread_db_sizeof_pthread_key_data_level2")?;
    let key_data_size = sizeof(c"_thread_db_sizeof_pthread_key_data")?;
    let d_kd_seq = desc(c"_thread_db_pthread_key_data_seq")?;
    let d_kd_data = desc(c"_thread_db_pthread_key_data_data")?;
    let off_specific = d_spec.offset as usize;
    let off_specific_1st = off_specific - level2;
    // `specific` is described as one field of `bits` bits (the whole array).
    let key_1st_count = d_spec.bits as usize / 64;
    let key_2nd_count = desc(c"_thread_db_pthread_key_data_level2_data")?.count as usize;
    ensure!(
        d_spec.count == 1 && key_2nd_count * key_data_size == level2 && key_data_size == 16 && rd::<usize>(tp + off_specific) == tp + off_specific_1st,
        "specific[0] does not point at specific_1stblock (specific at {off_specific}, level2 {level2})"
    );
    let off_specific_used = off_specific + 8 * key_1st_count;
    let keys =
        sym(c"__pthread_keys").ok_or_else(|| Failure("__pthread_keys not found".into()))? as usize;
    let d_keys = desc(c"_thread_db___pthread_keys")?;
    let key_struct_size = sizeof(c"_thread_db_sizeof_pthread_key_struct")?;
    let key_struct_seq = desc(c"_thread_db_pthread_key_struct_seq")?.offset as usize;
    let key_struct_destr = desc(c"_thread_db_pthread_key_struct_destr")?.offset as usize;
    let keys_max = d_keys.count as usize;
    ensure!(
        d_keys.bits as usize == 8 * key_struct_size && keys_max == key_1st_count * key_2nd_count,
        "__pthread_keys descriptor {d_keys:?} does not match the specific[] geometry"
    );
    {
        extern "C" fn probe_dtor(_: *mut c_void) {}
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: creates and (below) deletes one key.
        ensure!(
            unsafe { libc::pthread_key_create(&mut key, Some(probe_dtor)) } == 0,
            "pthread_key_create failed"
        );
        let k = key as usize;
        let ks = keys + k * key_struct_size;
        let seq: usize = rd(ks + key_struct_seq);
        let destr: usize = rd(ks + key_struct_destr);
        // SAFETY: clears specific_used of this (probe) thread, a bool.
        unsafe { ptr::write((tp + off_specific_used) as *mut u8, 0) };
        // SAFETY: sets a value for the key created above.
        unsafe { libc::pthread_setspecific(key, 0x5eed as *const c_void) };
        let ok = k < key_2nd_count
            && destr == probe_dtor as *const () as usize
            && seq & 1 == 1
            && rd::<u8>(tp + off_specific_used) == 1
            && rd::<usize>(tp + off_specific_1st + k * key_data_size + d_kd_data.offset as usize)
                == 0x5eed
            && rd::<usize>(tp + off_specific_1st + k * key_data_size + d_kd_seq.offset as usize)
                == seq;
        // SAFETY: clears and deletes the probe key.
        unsafe {
            libc::pthread_setspecific(key, ptr::null());
            libc::pthread_key_delete(key);
        }
        ensure!(
            ok,
            "probe key {k}: __pthread_keys / specific_1stblock / specific_used do not match"
        );
    }

    let off_schedpolicy = desc(c"_thread_db_pthread_schedpolicy")?.offset as usize;
    let off_sched_priority = desc(c"_thread_db_pthread_schedparam_sched_priority")?.offset as usize;
    ensure!(
        off_schedpolicy < probe.tcb_size && off_sched_priority < probe.tcb_size,
        "scheduling fields outside struct pthread"
    );

    // Stack fields: find the 4 consecutive words that match what
    // pthread_getattr_np reports for this thread's known stack.
    let off_stackblock = {
        // SAFETY: getattr_np on ourselves with a local attribute object.
        let (addr, size, guard) = unsafe {
            let mut attr: libc::pthread_attr_t = core::mem::zeroed();
            ensure!(
                libc::pthread_getattr_np(libc::pthread_self(), &mut attr) == 0,
                "pthread_getattr_np failed"
            );
            let (mut addr, mut size, mut guard) = (ptr::null_mut(), 0usize, 0usize);
            libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
            libc::pthread_attr_getguardsize(&attr, &mut guard);
            libc::pthread_attr_destroy(&mut attr);
            (addr as usize, size, guard)
        };
        ensure!(
            guard == probe.guard_size,
            "probe guard size {guard} != requested {}",
            probe.guard_size
        );
        let top = addr + size;
        let hits: Vec<usize> = (header_size..probe.tcb_size - 32)
            .step_by(8)
            .filter(|&o| {
                let (b, s, g, r) = (
                    rd::<usize>(tp + o),
                    rd::<usize>(tp + o + 8),
                    rd::<usize>(tp + o + 16),
                    rd::<usize>(tp + o + 24),
                );
                b.wrapping_add(s) == top && s.checked_sub(g) == Some(size) && r == guard
            })
            .collect();
        ensure!(
            hits.len() == 1,
            "stackblock fields: {} candidates for the probe stack",
            hits.len()
        );
        hits[0]
    };

    // Resolver state: a new thread's __resp points at its own pd->res.
    // SAFETY: __res_state has no preconditions.
    let res = unsafe { __res_state() } as usize;
    ensure!(
        res >= tp + header_size && res + RES_STATE_SIZE <= area_hi,
        "__res_state() = {res:#x} is not inside this thread's descriptor"
    );
    let off_res = res - tp;
    let resp = sym(c"__resp").ok_or_else(|| Failure("__resp not found".into()))? as usize;
    ensure!(
        in_libc(resp, 8) && rd::<usize>(resp) == res,
        "__resp is not libc TLS holding __res_state()"
    );
    let tp_resp = resp as isize - tp as isize;

    // tls_state buffers: the words that hold strsignal's / strerror's
    // dynamically formatted messages.
    let find_word = |value: usize, what: &str| -> Result<usize, Failure> {
        let hits: Vec<usize> = (header_size..probe.tcb_size)
            .step_by(8)
            .filter(|&o| rd::<usize>(tp + o) == value)
            .collect();
        ensure!(
            hits.len() == 1,
            "{what}: {} candidate words in struct pthread",
            hits.len()
        );
        Ok(hits[0])
    };
    // SAFETY: strsignal/strerror with out-of-range numbers format into the
    // thread's tls_state buffers.
    let off_strsignal_buf = find_word(
        unsafe { libc::strsignal(999) } as usize,
        "tls_state.strsignal_buf",
    )?;
    // SAFETY: as above.
    let off_strerror_l_buf = find_word(
        unsafe { libc::strerror(99999) } as usize,
        "tls_state.strerror_l_buf",
    )?;

    // rseq.
    let rseq_size = sym(c"__rseq_size")
        .map(|p| rd::<u32>(p as usize))
        .unwrap_or(0) as usize;
    let rseq_offset = sym(c"__rseq_offset").map(|p| rd::<isize>(p as usize));
    let off_rseq_cpu_id = if rseq_size >= 8 {
        let off = rseq_offset
            .ok_or_else(|| Failure("__rseq_size set but __rseq_offset missing".into()))?;
        ensure!(
            off > header_size as isize && off as usize + rseq_size <= probe.tcb_size,
            "rseq area (TP + {off}) is not inside struct pthread"
        );
        let cpu = rd::<i32>(tp + off as usize + 4);
        // SAFETY: sysconf has no preconditions.
        let ncpu = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) } as i32;
        ensure!(
            cpu >= 0 && cpu < ncpu.max(1),
            "rseq cpu_id {cpu} is not a CPU number (ncpu {ncpu})"
        );
        Some(off as usize + 4)
    } else {
        None
    };

    // libc TLS words.
    ensure!(in_libc(errno_addr, 4), "errno outside libc's block");
    let tp_errno = errno_addr as isize - tp as isize;
    // SAFETY: __h_errno_location has no preconditions.
    let h_errno_addr = unsafe { __h_errno_location() } as usize;
    ensure!(in_libc(h_errno_addr, 4), "h_errno outside libc's block");
    let tp_h_errno = h_errno_addr as isize - tp as isize;
    let dlerr = sym(c"__libc_dlerror_result")
        .ok_or_else(|| Failure("__libc_dlerror_result not found".into()))?;
    ensure!(
        in_libc(dlerr as usize, 8),
        "__libc_dlerror_result outside libc's block"
    );
    let tp_dlerror = dlerr as isize - tp as isize;

    // malloc's per-thread words (see probe_malloc_words).
    let mp = &probe.malloc;
    ensure!(
        mp.n_changed == 2 && mp.below_bytes == below,
        "a thread's first malloc changed {} words of static TLS (expected tcache and arena)",
        mp.n_changed
    );
    let (a, b) = (
        mp.changed[0].min(mp.changed[1]),
        mp.changed[0].max(mp.changed[1]),
    );
    let (lo, hi) = (area_lo + a, area_lo + b + 8);
    ensure!(
        in_libc(lo, hi - lo)
            && rd::<usize>(lo) != 0
            && rd::<usize>(area_lo + b) != 0
            && hi - lo <= 64,
        "malloc's per-thread words are not two non-null words close together in libc's block"
    );
    let tp_malloc = lo as isize - tp as isize;

    let tp_current_block = cur as isize - tp as isize;
    let modules_span = modules
        .iter()
        .map(|m| m.tp_offset.unsigned_abs())
        .max()
        .unwrap_or(0);
    let static_used = static_tls_used(&mods, modules.len(), modules_span, below - modules_span);
    let process_modules = static_used.map_or(1, |(_, nelem)| nelem);
    Ok(Layout {
        static_size: probe.static_size,
        static_align: probe.static_align,
        tcb_size: probe.tcb_size,
        tls_below: below,
        header_size,
        off_dtv,
        off_tid,
        off_robust_head,
        off_specific,
        off_specific_1st,
        off_specific_used,
        key_1st_count,
        key_2nd_count,
        key_data_size,
        key_data_seq: d_kd_seq.offset as usize,
        key_data_data: d_kd_data.offset as usize,
        keys,
        keys_max,
        key_struct_size,
        key_struct_seq,
        key_struct_destr,
        off_schedpolicy,
        off_sched_priority,
        off_stackblock,
        off_res,
        off_strsignal_buf,
        off_strerror_l_buf,
        off_rseq_cpu_id,
        tp_errno,
        tp_h_errno,
        tp_resp,
        tp_dlerror,
        tp_malloc,
        malloc_len: hi - lo,
        modules,
        tls_in_use: modules_span.next_multiple_of(16).min(below),
        static_used: static_used.map(|(address, _)| address),
        process_modules,
        tp_current_block,
        tp_hot: [
            0,
            tp_errno,
            tp_current_block,
            crate::coroutine::switch::current_addr() as isize - tp as isize,
        ],
    })
}

unsafe extern "C" {
    fn __res_state() -> *mut c_void;
    fn __h_errno_location() -> *mut c_int;
    fn pthread_setcancelstate(state: c_int, old: *mut c_int) -> c_int;
}

/// `PTHREAD_CANCEL_DISABLE` (`<pthread.h>`).
const PTHREAD_CANCEL_DISABLE: c_int = 1;

/// Where glibc's `_rtld_global._dl_tls_static_used` is, and the number of
/// modules loaded with the process (`_dl_tls_static_nelem`: ids `1..=n`,
/// never unloaded). `dl_tls_static_used` is the bytes of static TLS below
/// the thread pointer that modules use: a module loaded later with static
/// TLS, or given static TLS when another one refers to its thread-locals
/// with the initial-exec model, takes the next bytes of the surplus, and
/// closing the lowest one gives its bytes back. So it bounds every static
/// block in use. It has no libthread_db descriptor, but in glibc 2.32 and
/// later it is the second word after `_dl_tls_dtv_slotinfo_list`, which
/// has one (`ldsodefs.h`:
/// `_dl_tls_max_dtv_idx`, `_dl_tls_dtv_slotinfo_list`,
/// `_dl_tls_static_nelem`, `_dl_tls_static_used`,
/// `_dl_tls_static_optional`); it is taken only if the words around it
/// hold what they must: the highest module id, the start-up module count,
/// the bytes the start-up modules span (`in_use`) and a surplus for
/// optimisation within the area (`surplus`), checked against
/// `dl_iterate_phdr`. Older glibcs fail the check: copies then take the
/// whole area.
fn static_tls_used(
    mods: &[PhdrModule],
    static_modules: usize,
    in_use: usize,
    surplus: usize,
) -> Option<(usize, usize)> {
    let rtld = rd::<usize>(sym(c"__nptl_rtld_global")? as usize);
    let list = rtld
        + desc(c"_thread_db_rtld_global__dl_tls_dtv_slotinfo_list")
            .ok()?
            .offset as usize;
    if rtld == 0 || !list.is_multiple_of(8) {
        return None;
    }
    let max_modid = mods.iter().map(|m| m.modid).max()?;
    let (max_dtv_idx, slotinfo, nelem, used, optional) = (
        rd::<usize>(list - 8),
        rd::<usize>(list),
        rd::<usize>(list + 8),
        rd::<usize>(list + 16),
        rd::<usize>(list + 24),
    );
    let plausible = max_dtv_idx == max_modid
        && slotinfo != 0
        && (1..=static_modules).contains(&nelem)
        && used == in_use
        && optional <= surplus;
    plausible.then_some((list + 16, nelem))
}

impl Layout {
    /// Bytes of static TLS below the TP that a copy takes: what glibc has
    /// given modules now (at least the blocks of the modules there were at
    /// start-up), or the whole area if that cannot be read.
    #[inline]
    pub(crate) fn tls_to_copy(&self) -> usize {
        let Some(used) = self.static_used else {
            return self.tls_below;
        };
        // SAFETY: glibc's `dl_tls_static_used` (verified by
        // `static_tls_used`), read racily as glibc's own readers do.
        let used = unsafe { AtomicUsize::from_ptr(used as *mut usize) }.load(Ordering::Relaxed);
        used.next_multiple_of(16)
            .clamp(self.tls_in_use, self.tls_below)
    }

    /// Where the area of a thread block lies in the floor of a stack
    /// mapped at `low` (see `coroutine::stack_floor`): its descriptor ends
    /// at the floor's top, and its surplus reaches down into the floor's
    /// lower page.
    pub(crate) fn area_in_floor(&self, low: usize) -> usize {
        self.area_in_floor_checked(low)
            .expect("a thread area that fits the floor (Layout::fits_floor)")
    }

    /// Whether a thread area fits a stack's floor (`area_in_floor`).
    pub(crate) fn fits_floor(&self) -> bool {
        let page = crate::memory::PAGE;
        self.static_align <= page && self.area_in_floor_checked(page).is_some()
    }

    /// The area's start in the floor at `low` if it fits there.
    fn area_in_floor_checked(&self, low: usize) -> Option<usize> {
        let tp = (low + FLOOR).checked_sub(self.tcb_size)? & !(self.static_align - 1);
        tp.checked_sub(self.tls_below).filter(|&mem| mem >= low)
    }

    /// Whether the block of `m` is reset from its initial image in a copy:
    /// a module loaded with the process, never unloaded. A module loaded
    /// before the runtime may be closed later and its bytes given to
    /// another; its block is copied from the worker, as libc's is.
    pub(crate) fn resets(&self, m: &Module) -> bool {
        !m.is_libc && m.modid <= self.process_modules
    }

    /// Checks, cheaply, that the calling thread can be a worker: a
    /// pthread-created thread (its descriptor records a stack; the main
    /// thread's does not) whose self pointers match this layout.
    pub(crate) fn check_worker(&self, tp: usize) -> Result<(), &'static str> {
        if rd::<usize>(tp) != tp || rd::<usize>(tp + 0x10) != tp {
            return Err(
                "the thread pointer is not a glibc thread descriptor (inside a coroutine?)",
            );
        }
        if rd::<usize>(tp + self.off_stackblock) == 0 {
            return Err("thread blocks can only be copied from pthread-created threads, not the main thread");
        }
        if rd::<usize>(tp + self.off_dtv) == 0 {
            return Err("the thread has no dtv");
        }
        Ok(())
    }
}
