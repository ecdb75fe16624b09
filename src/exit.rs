//! The process-exit hook: runs what the pools registered, once, when `main` returns or
//! `std::process::exit` is called.
//!
//! Knows nothing of the pools: each pool module registers its own exit work, and its
//! report of what the exit lost; every report runs after all the work, so that it counts
//! what the work did (a SmartAioPool task run at the exit may submit into, or wait for,
//! a CommonAioPool), whichever pool was built first.

use std::sync::{Mutex, MutexGuard, Once};

static HOOKS: Mutex<Vec<fn()>> = Mutex::new(Vec::new());
static REPORTS: Mutex<Vec<fn()>> = Mutex::new(Vec::new());
static REGISTER: Once = Once::new();

fn locked(list: &'static Mutex<Vec<fn()>>) -> MutexGuard<'static, Vec<fn()>> {
    list.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `hook` at process exit (each distinct function once, in registration order; also
/// one registered while those run, such as the first SmartAioPool's, built by a thread
/// still going), before the reports ([`at_exit_report`]).
pub(crate) fn at_exit(hook: fn()) {
    register(&HOOKS, hook);
}

/// Runs `hook` at process exit once every [`at_exit`] hook has run (each distinct
/// function once, in registration order; also one registered while those run).
pub(crate) fn at_exit_report(hook: fn()) {
    register(&REPORTS, hook);
}

fn register(list: &'static Mutex<Vec<fn()>>, hook: fn()) {
    REGISTER.call_once(|| {
        if !crate::sys::register_at_exit(run_hooks) {
            warn_stderr!(
                "nb_aiopool: warning: this platform offers no at-exit hook; SmartAioPool tasks \
                 left unfinished when main returns will not be completed: use smart_run or \
                 shutdown the pools before returning"
            );
        }
    });
    let mut hooks = locked(list);
    if !hooks.iter().any(|h| std::ptr::fn_addr_eq(*h, hook)) {
        hooks.push(hook);
    }
}

extern "C" fn run_hooks() {
    for list in [&HOOKS, &REPORTS] {
        // By index, the lock not held while a hook runs (it may register one): a hook
        // registered meanwhile runs too.
        for i in 0.. {
            let next = locked(list).get(i).copied();
            let Some(hook) = next else { break };
            // Nothing may unwind into the C runtime.
            if crate::unwind::quietly(hook) {
                warn_stderr!(
                    "nb_aiopool: the process-exit hook panicked; some tasks may not have run"
                );
            }
        }
    }
}
