// The simplest use: the body runs, in a coroutine.

static RAN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[coroutines::main]
fn main() {
    assert!(
        coroutines::in_coroutine(),
        "main's body must run in a coroutine"
    );
    RAN.store(true, std::sync::atomic::Ordering::SeqCst);
    check();
}

fn check() {
    assert!(RAN.load(std::sync::atomic::Ordering::SeqCst));
}
