//! The crate's only `unsafe`: registering the process-exit hook with the C runtime.
//!
//! std has no at-exit API; the C runtime's `atexit` runs registered functions both when
//! `main` returns and when `std::process::exit` is called. It exists wherever Rust's std
//! links a C runtime (unix and Windows alike).
#![allow(unsafe_code)]

#[cfg(any(unix, windows))]
mod c {
    extern "C" {
        pub(super) fn atexit(hook: extern "C" fn()) -> std::ffi::c_int;
    }
}

/// Registers `hook` to run at process exit. Returns `false` where that is not supported,
/// or if the C runtime refused it.
#[cfg(any(unix, windows))]
pub(crate) fn register_at_exit(hook: extern "C" fn()) -> bool {
    // SAFETY: `atexit` only stores the function pointer; `hook` is a plain `extern "C" fn`
    // with no captured state, valid for the whole life of the program, and it catches every
    // panic itself so nothing unwinds into C.
    unsafe { c::atexit(hook) == 0 }
}

/// Registers `hook` to run at process exit. Returns `false` where that is not supported.
#[cfg(not(any(unix, windows)))]
pub(crate) fn register_at_exit(_hook: extern "C" fn()) -> bool {
    false
}
