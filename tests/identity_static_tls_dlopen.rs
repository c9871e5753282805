//! Static TLS of a library loaded with `dlopen`: a library built for the
//! initial-exec model gets a block in glibc's static surplus, below the
//! start-up modules' blocks, in every thread glibc knows. A coroutine's
//! copy of the static area leaves the surplus out while no module has
//! taken part of it (it would cost a page per coroutine); from the moment
//! one may have, copies take the surplus too. Each case compares what new
//! coroutines read of the library's thread-locals with what a new thread
//! reads, with the library loaded before the runtime is built and while
//! it runs. Each runs in a child process of its own: loading is for good.

mod support;

use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use support::child::{child_case, rerun, wait_bounded};
use support::identity::{joined, on_runtime, workers};
use support::library::{compile, dlerror, dlopen, sym};

/// A library whose thread-locals sit in static TLS, in a block larger than
/// the start-up modules' (so it reaches below what copies take without
/// it): `marker` starts at 0x5eed, `filler` at zeros.
const LIBRARY_C: &str = r#"
__attribute__((tls_model("initial-exec"))) __thread int marker = 0x5eed;
__attribute__((tls_model("initial-exec"))) __thread char filler[1000];
int get_marker(void) { return marker; }
void set_marker(int value) { marker = value; }
int filler_sum(void) { int s = 0; for (int i = 0; i < 1000; i++) s += filler[i]; return s; }
void fill(void) { for (int i = 0; i < 1000; i++) filler[i] = 1; }
"#;

const CASE_BEFORE: &str = "loaded before the runtime";
const CASE_WHILE: &str = "loaded while it runs";
const LIBRARY_ENV: &str = "STATIC_TLS_LIBRARY";

/// The library's functions, as addresses so that they cross threads.
#[derive(Clone, Copy)]
struct Library {
    get_marker: usize,
    set_marker: usize,
    filler_sum: usize,
    fill: usize,
}

impl Library {
    /// Loads the library at `path`, for good.
    fn load(path: &Path) -> Library {
        let handle = dlopen(path, libc::RTLD_NOW);
        assert!(!handle.is_null(), "dlopen failed: {}", dlerror());
        Library {
            get_marker: sym(handle, c"get_marker"),
            set_marker: sym(handle, c"set_marker"),
            filler_sum: sym(handle, c"filler_sum"),
            fill: sym(handle, c"fill"),
        }
    }

    /// What a new thread of control sees of the library's thread-locals,
    /// after which it writes them (as a coroutine whose stack, and block,
    /// the next one gets would leave them).
    fn observe_then_dirty(self) -> (i32, i32) {
        // SAFETY: the library's functions, with the signatures of
        // `LIBRARY_C`, loaded for good.
        unsafe {
            let get: extern "C" fn() -> i32 = std::mem::transmute(self.get_marker);
            let set: extern "C" fn(i32) = std::mem::transmute(self.set_marker);
            let sum: extern "C" fn() -> i32 = std::mem::transmute(self.filler_sum);
            let fill: extern "C" fn() = std::mem::transmute(self.fill);
            let seen = (get(), sum());
            set(7);
            fill();
            seen
        }
    }
}

/// What new threads and new coroutines, one after another on one worker,
/// see of the library's thread-locals.
fn compare(runtime: &coroutines::Runtime, library: Library) -> Vec<String> {
    let mut failures = Vec::new();
    for round in 0..20 {
        let thread = thread::spawn(move || library.observe_then_dirty())
            .join()
            .unwrap();
        let coroutine = joined(runtime.spawn(move || library.observe_then_dirty()));
        if coroutine != thread || thread != (0x5eed, 0) {
            failures.push(format!(
                "round {round}: a new thread sees {thread:?}, a new coroutine {coroutine:?}"
            ));
        }
    }
    failures
}

fn child(case: &str) {
    let path = PathBuf::from(std::env::var(LIBRARY_ENV).unwrap());
    let failures = match case {
        CASE_BEFORE => {
            let library = Library::load(&path);
            on_runtime(workers(1), Duration::from_secs(30), move |runtime| {
                compare(runtime, library)
            })
        }
        _ => on_runtime(workers(1), Duration::from_secs(30), move |runtime| {
            // Coroutines first, so that copies are made before the load.
            joined(runtime.spawn(|| thread::sleep(Duration::from_millis(1))));
            compare(runtime, Library::load(&path))
        }),
    };
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!("STATIC TLS OK");
}

#[test]
fn a_dlopened_librarys_static_thread_locals_start_as_in_a_new_thread() {
    if let Some(case) = child_case() {
        child(&case);
        return;
    }
    let dir = std::env::temp_dir().join(format!("static-tls-dlopen-{}", std::process::id()));
    let Some(library) = compile(&dir, "statictls", LIBRARY_C, &[]) else {
        eprintln!("no C compiler: skipped");
        return;
    };
    let mut failures = Vec::new();
    for case in [CASE_BEFORE, CASE_WHILE] {
        let mut command = rerun(case);
        command.env(LIBRARY_ENV, &library);
        let (out, ended) = wait_bounded(command.spawn().unwrap(), Duration::from_secs(60));
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !ended || !out.status.success() || !stdout.contains("STATIC TLS OK") {
            failures.push(format!(
                "{case}: ended {ended}, {}\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}
