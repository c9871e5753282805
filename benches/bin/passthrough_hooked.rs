//! The `passthrough` bench's measurements in a binary that links
//! `coroutines`: its libc calls resolve to the runtime's hooks, made here
//! outside any coroutine. Started by the bench as
//! `passthrough_hooked BATCHES PER_BATCH`.

#[path = "../support/passthrough.rs"]
mod passthrough;

// Links the runtime, and with it the hooks, without starting it.
use coroutines as _;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .expect("usage: passthrough_hooked BATCHES PER_BATCH")
        })
        .collect();
    passthrough::child(args[0] as usize, args[1] as u32);
}
