//! A stack's floor: the two pages at the bottom of a pooled stack that hold
//! its coroutine's thread area, when the runtime gives identities.
//!
//! The `generator` crate writes a pattern on the lowest usable page of
//! every new stack, so that page is faulted in (and, without a floor, given
//! back at once: `without_sentinel_pages`) although a coroutine reaches it
//! last, if ever. A thread area is 4.4 KiB with glibc 2.36, of which
//! ~2.8 KiB is in use (the start-up modules' TLS and `struct pthread`); the
//! rest is glibc's surplus for modules loaded later, which a copy leaves
//! untouched while none is (`Layout::tls_to_copy`). So the area's in-use
//! part shares the pattern's page and its surplus reaches into the page
//! below, never touched: one fault and one page for both, where apart they
//! cost a page of an area slot and a page faulted and given back. The guard
//! page goes above the floor, so the stack overflows into it, never into
//! the area:
//!
//! ```text
//!  low              low + PAGE                    low + 2 PAGE  + 3 PAGE        top
//!  | area: surplus   | pattern, surplus, TLS, struct pthread | guard | stack ...  |
//!  \__ the crate's guard page __/\__ the crate's lowest usable page __/
//! ```
//!
//! The crate is asked for a stack [`FLOOR`] bytes larger, so the coroutine
//! still has all of its stack size above the guard page; the crate's own
//! overflow check covers its whole mapping, guard page included.

use crate::memory::PAGE;

/// The bytes a floor adds below a stack's guard page.
pub(crate) const FLOOR: usize = 2 * PAGE;

/// The guard page of the floored stack mapped at `low`.
pub(crate) fn guard(low: usize) -> usize {
    low + FLOOR
}

/// The pages of a free floored stack slot of `len` bytes at `low` that go
/// back to the kernel: all but its guard page, whose marker stays.
pub(crate) fn spare(low: usize, len: usize) -> [(usize, usize); 2] {
    let above = guard(low) + PAGE;
    [(low, FLOOR), (above, low + len - above)]
}
