//! Shared libraries built for a test with the system C compiler, and
//! loaded with `dlopen`: thread-locals of libraries loaded at run time, and
//! interposers for `LD_PRELOAD`.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Compiles `source` into `dir/lib{name}.so` (with `extra` compiler
/// arguments); its path, or `None` if there is no C compiler.
pub fn compile(dir: &Path, name: &str, source: &str, extra: &[&str]) -> Option<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let lib = dir.join(format!("lib{name}.so"));
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&lib)
        .arg(&src)
        .args(extra)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(lib)
}

/// `dlopen(path, flags)`: the handle, null if it failed (see [`dlerror`]).
pub fn dlopen(path: &Path, flags: libc::c_int) -> *mut libc::c_void {
    let path = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    unsafe { libc::dlopen(path.as_ptr(), flags) }
}

/// The message of the last failed `dl*` call on this thread.
pub fn dlerror() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated message.
    let message = unsafe { libc::dlerror() };
    if message.is_null() {
        return "(no dlerror)".into();
    }
    // SAFETY: non-null: a NUL-terminated message.
    unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned()
}

/// The address of `name` in the library `handle`, which must have it.
pub fn sym(handle: *mut libc::c_void, name: &CStr) -> usize {
    // SAFETY: dlsym on a live handle with a NUL-terminated name.
    let f = unsafe { libc::dlsym(handle, name.as_ptr()) };
    assert!(!f.is_null(), "{name:?} not found");
    f as usize
}

/// `dlopen(path, flags)`, which must succeed: the handle.
pub fn open(path: &Path, flags: libc::c_int) -> *mut libc::c_void {
    let handle = dlopen(path, flags);
    assert!(!handle.is_null(), "dlopen {path:?}: {}", dlerror());
    handle
}

/// A directory of this process's own for a test's libraries, named after
/// `tag`.
pub fn scratch_dir(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{tag}-{}", std::process::id()))
}

/// The path an environment variable of the child case names.
pub fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var(name).unwrap())
}

/// Source of a library whose thread-locals sit in static TLS
/// (initial-exec), in a block larger than the start-up modules':
/// `marker` starts at 0x5eed, `filler` at zeros.
pub const INITIAL_EXEC: &str = r#"
__attribute__((tls_model("initial-exec"))) __thread int marker = 0x5eed;
__attribute__((tls_model("initial-exec"))) __thread char filler[600];
int get_marker(void) { return marker; }
void set_marker(int value) { marker = value; }
void *marker_addr(void) { return &marker; }
"#;

/// Source of a small initial-exec library: `small_value` starts at 1.
pub const SMALL_INITIAL_EXEC: &str = r#"
__attribute__((tls_model("initial-exec"))) __thread int small_value = 1;
int small_get(void) { return small_value; }
"#;

/// Source of a library with dynamic (global-dynamic) TLS.
pub const DYNAMIC: &str = r#"
__thread int dyn_value = 0x5eed;
__thread char dyn_pad[64];
int dyn_get(void) { return dyn_value; }
"#;
