//! Registering the process-exit hook with the C runtime (`unsafe`: a foreign function).
//!
//! std has no at-exit API; the C runtime's `atexit` runs registered functions both when
//! `main` returns and when `std::process::exit` is called. It exists wherever Rust's std
//! links a C runtime (unix and Windows alike). Miri cannot call it: there, as on other
//! targets, the pools run without the hook.
#![allow(unsafe_code)]

#[cfg(all(any(unix, windows), not(miri)))]
mod c {
    extern "C" {
        pub(super) fn atexit(hook: extern "C" fn()) -> std::ffi::c_int;
    }
}

/// Registers `hook` to run at process exit. Returns `false` where that is not supported,
/// or if the C runtime refused it.
#[cfg(all(any(unix, windows), not(miri)))]
pub(crate) fn register_at_exit(hook: extern "C" fn()) -> bool {
    // SAFETY: `atexit` only stores the function pointer; `hook` is a plain `extern "C" fn`
    // with no captured state, valid for the whole life of the program, and it catches every
    // panic itself so nothing unwinds into C.
    unsafe { c::atexit(hook) == 0 }
}

/// Registers `hook` to run at process exit. Returns `false` where that is not supported.
#[cfg(not(all(any(unix, windows), not(miri))))]
pub(crate) fn register_at_exit(_hook: extern "C" fn()) -> bool {
    false
}
