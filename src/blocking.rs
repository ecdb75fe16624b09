//! Waiting from plain threads: a minimal `block_on` that parks the calling thread, and the
//! check that refuses to block a thread that drives async tasks.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `fut` on the current thread, parking between polls; gives up (`None`, the
/// future dropped) when, after a pending poll, `give_up()` says the wait can never end.
pub(crate) fn block_on_unless<F: Future>(fut: F, give_up: impl Fn() -> bool) -> Option<F::Output> {
    match block_on_until(fut, give_up, None) {
        Blocked::Done(out) => Some(out),
        Blocked::GaveUp | Blocked::TimedOut => None,
    }
}

/// How [`block_on_until`] ended.
pub(crate) enum Blocked<T> {
    Done(T),
    GaveUp,
    TimedOut,
}

/// [`block_on_unless`] that also gives up at `deadline` (the system clock's: a blocked
/// thread has no runtime's clock), the future dropped.
pub(crate) fn block_on_until<F: Future>(
    fut: F,
    give_up: impl Fn() -> bool,
    deadline: Option<std::time::Instant>,
) -> Blocked<F::Output> {
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return Blocked::Done(out);
        }
        if give_up() {
            return Blocked::GaveUp;
        }
        // Spurious unparks only cost one extra poll.
        match deadline {
            None => thread::park(),
            Some(deadline) => match deadline.checked_duration_since(std::time::Instant::now()) {
                Some(left) if !left.is_zero() => thread::park_timeout(left),
                _ => return Blocked::TimedOut,
            },
        }
    }
}

/// Polls `fut` on the current thread, parking between polls, for a wait that a runtime
/// may have to serve: once a poll returns pending and `stranded()` says that what it
/// waits for is queued where no live runtime can run it (the poll offered the current
/// thread's runtime, if it had a live one), the rest of the wait runs on a current-thread
/// runtime of its own, on this thread, whose polls offer it. Without that, a
/// `spawn_blocking` thread of a runtime that ended would wait for ever, and that
/// runtime's drop, which waits for its blocking threads, with it.
///
/// A current-thread runtime the thread has entered (`Handle::enter`) is not offered
/// meanwhile: this thread, blocked here, could not drive it, and nothing may (finding
/// 227); with nothing else to offer, the wait makes its own. A `spawn_blocking` thread's
/// own live runtime is offered, as any awaiting runtime (see [`cannot_drive`]).
pub(crate) fn block_on_serving<F: Future + Unpin>(
    mut fut: F,
    stranded: impl Fn() -> bool,
) -> F::Output {
    let waited = blocked(|| block_on_unless(&mut fut, stranded));
    if let Some(out) = waited {
        return out;
    }
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => {
            let out = rt.block_on(fut);
            // Not a drop, which would wait for every blocking task spawned on it: other
            // re-runs that started there (cut off now, and queued again) may have left
            // blocking work running, maybe waiting for the caller itself.
            rt.shutdown_background();
            out
        }
        // No runtime to be had: wait as before, for some runtime to come.
        Err(_) => block_on_unless(fut, || false).expect("never gives up"),
    }
}

/// Panics with a clear message if the current thread drives async tasks (a runtime
/// worker, or a thread inside `block_on`), where blocking could stall (or, on a
/// current-thread runtime, deadlock) the very tasks it waits for. Plain threads and
/// `spawn_blocking` threads pass, as with tokio's own `blocking_send`.
#[track_caller]
pub(crate) fn assert_not_async(what: &str, instead: &str) {
    if tokio::runtime::Handle::try_current().is_err() {
        return; // no runtime context at all: a plain thread
    }
    // A runtime context: a `spawn_blocking` thread (fine) or a thread driving tasks (not).
    // Only tokio's own blocking calls tell them apart, by panicking in the latter; ask one
    // that returns at once, with its panic message silenced.
    if tokio_refuses_to_block() {
        panic!(
            "nb_aiopool: `{what}` was called from an async context (a tokio worker thread or \
             `block_on`), where blocking the thread can deadlock the tasks it waits for. Use \
             `{instead}` there; blocking calls are for plain threads and `spawn_blocking`."
        );
    }
}

thread_local! {
    static PROBING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set while [`block_on_serving`] parks this thread between polls of its own, and
    /// while a `blocking_submit` waits for room (see [`blocked`]).
    static BLOCKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, a wait that blocks this thread, marked as such (see [`cannot_drive`]).
pub(crate) fn blocked<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = BLOCKED.try_with(|b| b.set(self.0));
        }
    }
    let _restore = Restore(BLOCKED.try_with(|b| b.replace(true)).unwrap_or(false));
    f()
}

/// Whether `handle`'s runtime is a current-thread one that this thread, blocked in a wait
/// of ours ([`blocked`]), entered (`Handle::enter`) and so cannot drive: it is not to be
/// offered to a pool, which would leave the jobs there for a thread that cannot drive it
/// (finding 227, and its case for `blocking_submit`). A `spawn_blocking` thread's own
/// runtime (the thread runs a tokio task) is offered: another thread may drive it.
pub(crate) fn cannot_drive(handle: &tokio::runtime::Handle) -> bool {
    handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
        && BLOCKED.try_with(std::cell::Cell::get).unwrap_or(false)
        && tokio::task::try_id().is_none()
}

/// Whether this thread is in a blocking wait of the crate's ([`blocked`]): a
/// `blocking_wait`, which serves a stranded pool itself ([`block_on_serving`]), or a
/// `blocking_submit` waiting for room.
pub(crate) fn is_blocked() -> bool {
    BLOCKED.try_with(std::cell::Cell::get).unwrap_or(false)
}

/// Whether tokio refuses to block this thread (its blocking-region check).
fn tokio_refuses_to_block() -> bool {
    if std::thread::panicking() {
        return false; // no probe while unwinding (see `panics_quietly`): not checked
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let _ = tx.send(());
    panics_quietly(|| drop(rx.blocking_recv()))
}

/// Whether `probe` panics, with its panic message silenced: for asking tokio something it
/// tells only by panicking. Never call it under a lock of ours, nor while the thread is
/// unwinding (installing the hook would panic, and a second panic aborts). A panic hook
/// the program sets after the first probe replaces the silencing one: later probes then
/// reach it.
///
/// Built with `panic = "abort"`, a probe that panics aborts the process whatever it does:
/// its message is not silenced then (the panic hook prints it), or the process would end
/// with no word of why.
pub(crate) fn panics_quietly(probe: impl FnOnce()) -> bool {
    debug_assert!(!std::thread::panicking(), "a probe while unwinding");
    if cfg!(panic = "abort") {
        probe();
        return false;
    }
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    QUIET_HOOK.call_once(|| {
        // Installed once, at the first probe: it forwards every panic to the hook that was
        // set before, except a probe's own.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !PROBING.with(|p| p.get()) {
                previous(info);
            }
        }));
    });
    PROBING.with(|p| p.set(true));
    let panicked = crate::unwind::quietly(probe);
    PROBING.with(|p| p.set(false));
    panicked
}
