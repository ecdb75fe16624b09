//! The process-exit hook: runs what the pools registered, once, when `main` returns or
//! `std::process::exit` is called.
//!
//! Knows nothing of the pools: each pool module registers its own exit work.

use std::sync::{Mutex, Once};

static HOOKS: Mutex<Vec<fn()>> = Mutex::new(Vec::new());
static REGISTER: Once = Once::new();

/// Runs `hook` at process exit (each distinct function once, in registration order).
pub(crate) fn at_exit(hook: fn()) {
    REGISTER.call_once(|| {
        if !crate::sys::register_at_exit(run_hooks) {
            warn_stderr!(
                "nb_aiopool: warning: this platform offers no at-exit hook; SmartAioPool tasks \
                 left unfinished when main returns will not be completed: use smart_run or \
                 shutdown the pools before returning"
            );
        }
    });
    let mut hooks = HOOKS.lock().unwrap_or_else(|e| e.into_inner());
    if !hooks.iter().any(|h| std::ptr::fn_addr_eq(*h, hook)) {
        hooks.push(hook);
    }
}

extern "C" fn run_hooks() {
    let hooks = HOOKS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for hook in hooks {
        // Nothing may unwind into the C runtime.
        if crate::unwind::quietly(hook) {
            warn_stderr!("nb_aiopool: the process-exit hook panicked; some tasks may not have run");
        }
    }
}
