//! The crate's only `unsafe`: registering the process-exit hook with the C runtime.
//!
//! std has no at-exit API; `atexit(3)` runs registered functions both when `main` returns
//! and when `std::process::exit` is called.

/// Registers `hook` to run at process exit. Returns `false` where that is not supported.
#[cfg(unix)]
pub(crate) fn register_at_exit(hook: extern "C" fn()) -> bool {
    // SAFETY: `atexit` only stores the function pointer; `hook` is a plain `extern "C" fn`
    // with no captured state, valid for the whole life of the program, and it catches every
    // panic itself so nothing unwinds into C.
    unsafe { libc::atexit(hook) == 0 }
}

/// Registers `hook` to run at process exit. Returns `false` where that is not supported.
#[cfg(not(unix))]
pub(crate) fn register_at_exit(_hook: extern "C" fn()) -> bool {
    false
}
