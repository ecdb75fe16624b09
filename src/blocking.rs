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

/// Polls `fut` on the current thread, parking between polls.
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        // Spurious unparks only cost one extra poll.
        thread::park();
    }
}

/// Panics with a clear message if the current thread has a tokio runtime context, where
/// blocking could stall (or, on a current-thread runtime, deadlock) the very tasks it waits
/// for.
#[track_caller]
pub(crate) fn assert_not_in_runtime(what: &str, instead: &str) {
    if tokio::runtime::Handle::try_current().is_ok() {
        panic!(
            "nb_aiopool: `{what}` was called from a thread that has a tokio runtime context \
             (an async task, `block_on`, or `spawn_blocking`); blocking there can deadlock. \
             Use `{instead}` instead, or call it from a plain std::thread."
        );
    }
}
