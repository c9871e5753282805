//! Panic messages that name the coroutine, as std's name the thread.
//!
//! std's default hook names the panicking thread from its `Thread` handle.
//! A coroutine has none under its own name (std cannot name a thread it did
//! not start), so std would print `'<unnamed>'` or the worker's name. Before
//! `main`, the runtime installs a hook that writes std's message with the
//! coroutine in place of the thread, and hands every panic outside
//! coroutines to the hook it replaced. A hook the program sets replaces it,
//! as it replaces std's.

use core::cell::Cell;
use std::backtrace::Backtrace;
use std::fmt::Write as _;
use std::io::Write as _;
use std::panic::{self, PanicHookInfo};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use super::switch;
use super::task::Task;

/// Runs `body`, the user's code of a coroutine. Its frame is where a
/// backtrace of a coroutine's panic stops, as std's stop at the frame that
/// starts a thread's closure.
#[inline(never)]
pub fn begin_short_backtrace<R>(body: impl FnOnce() -> R) -> R {
    let result = body();
    // Keeps this frame on the stack: no tail call into `body`.
    std::hint::black_box(());
    result
}

/// The name of [`begin_short_backtrace`] in a backtrace.
const BEGIN_MARKER: &str = "begin_short_backtrace";
/// Where std's panic machinery ends and the panicking code's frames begin.
const END_MARKER: &str = "__rust_end_short_backtrace";

#[used]
#[unsafe(link_section = ".init_array")]
static INSTALL: extern "C" fn() = install;

thread_local! {
    /// A panic the runtime expects and catches is under way (see
    /// [`quietly`]).
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, whose panics the caller catches and turns into errors, with
/// no panic message: a dependency's `expect` that the runtime reports in
/// its own words (a stack that cannot be mapped).
pub(crate) fn quietly<R>(f: impl FnOnce() -> R) -> R {
    let was = QUIET.with(|quiet| quiet.replace(true));
    let result = f();
    QUIET.with(|quiet| quiet.set(was));
    result
}

/// Wraps the hook in place before `main` (std's default one).
extern "C" fn install() {
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if QUIET.with(Cell::get) {
            return;
        }
        match switch::current() {
            Some(task) => report(task, info),
            None => previous(info),
        }
    }));
}

/// Writes std's panic message for `task`'s panic, in one write.
fn report(task: &Task, info: &PanicHookInfo<'_>) {
    let name = task.name.as_deref().unwrap_or("<unnamed>");
    let message = info.payload_as_str().unwrap_or("Box<dyn Any>");
    let mut text = String::new();
    let _ = write!(
        text,
        "\ncoroutine '{name}' ({}) panicked at ",
        task.id.as_u64()
    );
    if let Some(location) = info.location() {
        let _ = write!(text, "{location}");
    }
    let _ = writeln!(text, ":\n{message}");
    match BacktraceStyle::from_env() {
        BacktraceStyle::Off => {
            static FIRST: AtomicBool = AtomicBool::new(true);
            if FIRST.swap(false, Ordering::Relaxed) {
                text.push_str(
                    "note: run with `RUST_BACKTRACE=1` environment variable to display a \
                     backtrace\n",
                );
            }
        }
        BacktraceStyle::Short => {
            let backtrace = Backtrace::force_capture().to_string();
            text.push_str("stack backtrace:\n");
            text.push_str(&short(&backtrace));
            text.push_str(
                "note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose \
                 backtrace.\n",
            );
        }
        BacktraceStyle::Full => {
            let _ = write!(text, "stack backtrace:\n{:#}", Backtrace::force_capture());
        }
    }
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// What `RUST_BACKTRACE` asks for, read once as std reads it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BacktraceStyle {
    Off = 1,
    Short,
    Full,
}

impl BacktraceStyle {
    fn from_env() -> BacktraceStyle {
        static STYLE: AtomicU8 = AtomicU8::new(0);
        let style = match STYLE.load(Ordering::Relaxed) {
            1 => return BacktraceStyle::Off,
            2 => return BacktraceStyle::Short,
            3 => return BacktraceStyle::Full,
            _ => match std::env::var_os("RUST_BACKTRACE") {
                Some(value) if value == "full" => BacktraceStyle::Full,
                Some(value) if value != "0" => BacktraceStyle::Short,
                _ => BacktraceStyle::Off,
            },
        };
        STYLE.store(style as u8, Ordering::Relaxed);
        style
    }
}

/// The frames of `backtrace` (as `Backtrace` displays it) between std's
/// panic machinery and [`begin_short_backtrace`], numbered from 0.
fn short(backtrace: &str) -> String {
    let mut frames: Vec<Vec<&str>> = Vec::new();
    for line in backtrace.lines() {
        let header = line
            .trim_start()
            .split_once(": ")
            .is_some_and(|(number, _)| {
                !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
            });
        match frames.last_mut() {
            Some(frame) if !header => frame.push(line),
            _ => frames.push(vec![line]),
        }
    }
    let start = frames
        .iter()
        .position(|frame| frame[0].contains(END_MARKER))
        .map_or(0, |end| end + 1);
    let mut text = String::new();
    let kept = frames[start..]
        .iter()
        .take_while(|frame| !frame[0].contains(BEGIN_MARKER));
    for (number, frame) in kept.enumerate() {
        let symbol = frame[0]
            .trim_start()
            .split_once(": ")
            .map_or("", |(_, s)| s);
        let _ = writeln!(text, "{number:>4}: {symbol}");
        for line in &frame[1..] {
            let _ = writeln!(text, "{line}");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::short;

    #[test]
    fn short_keeps_the_frames_between_the_markers() {
        let backtrace = "   0: std::backtrace::Backtrace::create\n\
             \x20  1: std::panicking::__rust_end_short_backtrace\n\
             \x20            at /rustc/library/std/src/panicking.rs:1:1\n\
             \x20  2: user::inner\n\
             \x20            at src/main.rs:3:5\n\
             \x20  3: user::outer\n\
             \x20  4: coroutines_runtime::coroutine::panic_report::begin_short_backtrace\n\
             \x20  5: generator::gen_init\n";
        assert_eq!(
            short(backtrace),
            "   0: user::inner\n             at src/main.rs:3:5\n   1: user::outer\n"
        );
    }
}
