//! A coroutine that overflows its stack fails alone: its join handle gets
//! an error naming it, and the runtime keeps running others.

fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth as u8; 1024]);
    if depth == 0 {
        return frame[0] as u64;
    }
    recurse(depth - 1) + frame[(depth % 1024) as usize] as u64
}

#[test]
fn an_overflow_is_reported_through_join_by_name() {
    let runtime = coroutines::Runtime::builder().workers(1).build().unwrap();
    let (message, after) = runtime.block_on(|| {
        let deep = coroutines::Builder::new()
            .name("deep".into())
            .stack_size(64 * 1024)
            .spawn(|| recurse(1_000_000))
            .unwrap();
        let payload = deep.join().unwrap_err();
        let message = payload.downcast::<String>().map(|m| *m);
        (message, coroutines::spawn(|| 5).join().unwrap())
    });
    let message = message.expect("the payload is a String");
    assert!(
        message.contains("coroutine 'deep' overflowed its 64 KiB stack"),
        "{message}"
    );
    assert_eq!(after, 5, "the runtime keeps working");
}
