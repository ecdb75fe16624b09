//! Panics of user code the pool catches (a future's `poll` or `Drop`, a waker, a dropped
//! result, an observer), and their payloads.
//!
//! A caught panic's payload is a value of the user's too: its `Drop` may panic again
//! (`std::panic::panic_any` of such a value). Dropped where it was caught, outside the
//! catch, that second panic would unwind through the pool's own code: a run would end
//! before deciding its task's outcome (the handle left pending), a slot task would end
//! (the tasks behind it cancelled). So every payload the pool drops goes through
//! [`drop_payload`], which catches that panic too and leaks its payload unless it is a
//! plain message (RELIABILITY.md, finding 328).

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Drops `value`, catching a panic in its `Drop` (user code: a task's output, a recipe,
/// a waker), as [`quietly`] does.
pub(crate) fn drop_quietly<T>(value: T) {
    quietly(move || drop(value));
}

/// Drops `a`, then `b`, each as [`drop_quietly`] does: a panic in `a`'s `Drop` does not
/// unwind through `b`'s. Dropped together (a tuple), `b` would be dropped while that panic
/// unwinds, and a second panic there aborts the process (finding 401). Out of line: the
/// two catches inlined into a slot's poll cost it more than the call (16–21 instructions
/// per job against one call's few, callgrind, 2026-12-07).
#[inline(never)]
pub(crate) fn drop_apart_quietly<A, B>(a: A, b: B) {
    drop_quietly(a);
    drop_quietly(b);
}

/// A caught panic's payload.
pub(crate) type Payload = Box<dyn Any + Send>;

/// Runs `f`, catching a panic in it; a caught panic's payload is dropped here
/// ([`drop_payload`]). Returns whether `f` panicked.
#[inline]
pub(crate) fn quietly(f: impl FnOnce()) -> bool {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => false,
        Err(payload) => {
            drop_payload(payload);
            true
        }
    }
}

/// Drops a caught panic's payload. A panic of its `Drop` is caught too, and that second
/// payload is leaked, not dropped, as it could panic again, unless it is a message (a
/// `String` or a `&str`, what `panic!` makes: the common case), whose drop cannot.
#[cold]
pub(crate) fn drop_payload(payload: Payload) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        if again.is::<String>() || again.is::<&'static str>() {
            drop(again);
        } else {
            std::mem::forget(again);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Panics when dropped.
    struct Bomb;

    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("the payload's own drop");
        }
    }

    #[test]
    fn a_payload_that_panics_when_dropped_does_not_unwind_further() {
        assert!(quietly(|| std::panic::panic_any(Bomb)));
        assert!(!quietly(|| ()));
    }
}
