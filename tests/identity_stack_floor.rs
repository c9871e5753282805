//! Where a coroutine's thread area lies. A coroutine on a stack of the
//! runtime's size has its area in the floor of its stack, the two pages
//! under the guard page (the page the `generator` crate writes its pattern
//! on is then the area's, not one faulted in for nothing); any other
//! stack has it in a slot of its own. Either way glibc reports the
//! coroutine's stack as all of the size asked for, above a guard page,
//! with the thread area outside it. Running into the guard page is an
//! overflow that leaves the area whole: `identity_stack_overflow.rs`.

mod support;

use std::time::Duration;

use support::identity::{joined, on_runtime, stack_and_thread_pointer, workers};

const PAGE: usize = 4096;
const RUNTIME_STACK: usize = 64 * 1024;

#[test]
fn the_thread_area_lies_in_the_floor_of_a_runtime_sized_stack() {
    let (pooled, other) = on_runtime(
        workers(1).stack_size(RUNTIME_STACK),
        Duration::from_secs(30),
        |runtime| {
            runtime.block_on(|| {
                let pooled = joined(coroutines::spawn(stack_and_thread_pointer));
                let other = coroutines::Builder::new()
                    .stack_size(2 * RUNTIME_STACK)
                    .spawn(stack_and_thread_pointer)
                    .unwrap();
                (pooled, joined(other))
            })
        },
    );
    let (low, size, guard, tp) = pooled;
    assert_eq!((size, guard), (RUNTIME_STACK, PAGE), "{pooled:x?}");
    let floor = low - guard - 2 * PAGE;
    assert!(
        (floor..low - guard).contains(&tp),
        "thread pointer {tp:#x} not in the floor [{floor:#x}, {:#x})",
        low - guard
    );
    let (low, size, guard, tp) = other;
    assert_eq!((size, guard), (2 * RUNTIME_STACK, PAGE), "{other:x?}");
    assert!(
        !(low - guard - 2 * PAGE..low + size).contains(&tp),
        "thread pointer {tp:#x} on or under a stack of its own size: {other:x?}"
    );
}
