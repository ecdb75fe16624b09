//! A panic whose payload panics again when it is dropped (`std::panic::panic_any` of a
//! value whose `Drop` panics: rare, but std's and tokio's own code expect it). The pool
//! catches a task's panics (in its `poll`, its `Drop`, a waker's `wake`) and drops what it
//! caught; a payload that panicked again there escaped every catch: the task's handle was
//! never resolved (the run unwound before deciding its outcome) and the panic unwound
//! into the pool's own code. Now a second panic is caught too and its payload kept
//! (leaked), never dropped. RELIABILITY.md, finding 328.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use nb_aiopool::{CancelReason, CommonAioPool, NoQueueAioPool, SmartAioPool};
use support::{within, Gate};

/// The second panic's message (the first's payload is a [`Bomb`], not a string).
const AGAIN: &str = "the panic payload's own drop panics";

fn hide() {
    // "": the first panics, whose payload is a `Bomb`, not a message.
    support::hide_panics(&[AGAIN, ""]);
}

/// A panic payload whose `Drop` panics.
struct Bomb(Arc<AtomicUsize>);

impl Drop for Bomb {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("{AGAIN}");
    }
}

/// Held by a task: its `Drop` panics with a [`Bomb`].
struct PanicsOnDrop(Arc<AtomicUsize>);

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        std::panic::panic_any(Bomb(self.0.clone()));
    }
}

/// A task that never ends by itself and panics with a [`Bomb`] when dropped; `started`
/// counts its start.
fn pending_bomb(
    bombs: &Arc<AtomicUsize>,
    started: &Arc<AtomicUsize>,
) -> impl Future<Output = u32> + Send + 'static {
    let guard = PanicsOnDrop(bombs.clone());
    let started = started.clone();
    async move {
        let _guard = guard;
        started.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<u32>().await
    }
}

/// A task that panics with a [`Bomb`] at the end of its last poll (its async block's
/// locals are dropped inside that poll).
fn ending_bomb(bombs: &Arc<AtomicUsize>) -> impl Future<Output = u32> + Send + 'static {
    let guard = PanicsOnDrop(bombs.clone());
    async move {
        let _guard = guard;
        1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_a_running_task_whose_drop_panics_with_a_panicking_payload_resolves_its_handle() {
    hide();
    let bombs = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let pool = CommonAioPool::new(1, 4);
    let h = pool.submit(pending_bomb(&bombs, &started)).await.unwrap();
    support::reach(&started, 1, Duration::from_secs(30)).await;
    h.abort();
    let err = within("the aborted task's handle", h).await.unwrap_err();
    assert_eq!(err.cancel_reason(), Some(CancelReason::Aborted));
    // The pool's one slot goes on (it drops the aborted future first).
    let next = pool.submit(async { 7 }).await.unwrap();
    assert_eq!(within("the next task", next).await.unwrap(), 7);
    within("wait", pool.wait()).await;
    assert_eq!(bombs.load(Ordering::SeqCst), 1, "dropped once");
    let stats = pool.stats();
    assert_eq!((stats.cancelled, stats.completed, stats.running), (1, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_tasks_cancelled_by_shutdown_timeout_resolve_their_handles_whatever_their_drop_panics_with(
) {
    hide();
    let bombs = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let gate = Gate::default();
    let pool = CommonAioPool::new(1, 8);
    let blocker = pool
        .submit({
            let gate = gate.clone();
            async move { gate.wait().await }
        })
        .await
        .unwrap();
    let mut queued = Vec::new();
    for _ in 0..3 {
        queued.push(pool.submit(pending_bomb(&bombs, &started)).await.unwrap());
    }
    // A queued task whose drop does not panic: the reason every queued one gets.
    let plain = pool.submit(std::future::pending::<u32>()).await.unwrap();
    within(
        "shutdown_timeout",
        pool.shutdown_timeout(Duration::from_millis(50)),
    )
    .await;
    let reason = within("the plain queued task's handle", plain)
        .await
        .unwrap_err()
        .cancel_reason();
    assert!(reason.is_some());
    for h in queued {
        let err = within("a queued task's handle", h).await.unwrap_err();
        assert_eq!(err.cancel_reason(), reason, "{err:?}");
    }
    assert_eq!(started.load(Ordering::SeqCst), 0);
    assert_eq!(bombs.load(Ordering::SeqCst), 3);
    let err = within("the running task's handle", blocker)
        .await
        .unwrap_err();
    assert!(err.is_cancelled(), "{err:?}");
}

#[test]
#[allow(clippy::async_yields_async)] // the block hands back a handle to await later
fn a_task_cut_off_by_its_runtime_resolves_its_handle_whatever_its_drop_panics_with() {
    hide();
    let bombs = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let pool = NoQueueAioPool::new(2);
    let rt = support::current_thread();
    let h = rt.block_on(async {
        let h = pool.submit(pending_bomb(&bombs, &started)).await.unwrap();
        support::reach(&started, 1, Duration::from_secs(30)).await;
        h
    });
    drop(rt);
    let err = support::on_thread_within("the cut-off task's handle", 30, move || h.blocking_wait())
        .unwrap_err();
    assert_eq!(err.cancel_reason(), Some(CancelReason::RuntimeShutdown));
    assert_eq!(bombs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_drop_panics_with_a_panicking_payload_at_its_end_is_a_panic_of_its_own() {
    hide();
    let bombs = Arc::new(AtomicUsize::new(0));
    let pool = SmartAioPool::builder().max_concurrency(1).build();
    let h = pool
        .submit({
            let bombs = bombs.clone();
            move || ending_bomb(&bombs)
        })
        .await
        .unwrap();
    let err = within("the task's handle", h).await.unwrap_err();
    assert!(err.is_panic(), "{err:?}");
    // The payload is the user's now, in the error: dropping it panics, as theirs.
    std::mem::forget(err);
    let next = pool.submit(|| async { 7 }).await.unwrap();
    assert_eq!(within("the next task", next).await.unwrap(), 7);
}

/// A waker whose `wake` panics with a [`Bomb`].
struct WakesWithBomb(Arc<AtomicUsize>);

impl Wake for WakesWithBomb {
    fn wake(self: Arc<Self>) {
        std::panic::panic_any(Bomb(self.0.clone()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_waker_that_panics_with_a_panicking_payload_costs_the_pool_nothing() {
    hide();
    let bombs = Arc::new(AtomicUsize::new(0));
    let gate = Gate::default();
    let pool = CommonAioPool::new(1, 4);
    let mut first = pool
        .submit({
            let gate = gate.clone();
            async move {
                gate.wait().await;
                1
            }
        })
        .await
        .unwrap();
    let second = pool.submit(async { 2 }).await.unwrap();
    // The first handle polled once by an executor whose waker panics when woken.
    let waker = Waker::from(Arc::new(WakesWithBomb(bombs.clone())));
    assert!(Pin::new(&mut first)
        .poll(&mut Context::from_waker(&waker))
        .is_pending());
    gate.open();
    // The pool woke that waker at the first task's end, then goes on with the next task.
    assert_eq!(within("the second task", second).await.unwrap(), 2);
    assert_eq!(within("the first task", first).await.unwrap(), 1);
    assert_eq!(bombs.load(Ordering::SeqCst), 1);
    within("wait", pool.wait()).await;
    let stats = pool.stats();
    assert_eq!(
        (stats.completed, stats.cancelled, stats.panicked),
        (2, 0, 0)
    );
}

/// Ends (`Ready`) and only then panics with a [`Bomb`] in its own `Drop` (not in `poll`,
/// as an async block's locals do), with a value whose `Drop` panics too: the task is a
/// panic of its own, the value is dropped quietly, and the slot goes on.
struct ReadyThenBomb(Arc<AtomicUsize>);

/// A task's value whose `Drop` panics.
struct LoudValue;

impl Drop for LoudValue {
    fn drop(&mut self) {
        panic!("{AGAIN}");
    }
}

impl Future for ReadyThenBomb {
    type Output = LoudValue;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> std::task::Poll<LoudValue> {
        std::task::Poll::Ready(LoudValue)
    }
}

impl Drop for ReadyThenBomb {
    fn drop(&mut self) {
        std::panic::panic_any(Bomb(self.0.clone()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_drop_panics_after_it_ended_drops_its_value_quietly() {
    hide();
    let bombs = Arc::new(AtomicUsize::new(0));
    let pool = CommonAioPool::new(1, 4);
    let h = pool.submit(ReadyThenBomb(bombs.clone())).await.unwrap();
    let err = match within("the task's handle", h).await {
        Ok(v) => {
            std::mem::forget(v);
            panic!("the task completed although its future's Drop panicked");
        }
        Err(e) => e,
    };
    assert!(err.is_panic(), "{err:?}");
    std::mem::forget(err); // its payload is a Bomb: the user's to drop
    let next = pool.submit(async { 7 }).await.unwrap();
    assert_eq!(within("the next task", next).await.unwrap(), 7);
    within("wait", pool.wait()).await;
    let stats = pool.stats();
    assert_eq!((stats.panicked, stats.completed, stats.running), (1, 1, 0));
}

/// A detached task that panics with a [`Bomb`]: the pool hands the error to `on_panic`
/// (which panics with a Bomb of its own), then drops the error nobody took; both second
/// panics are caught, and the slot goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_tasks_panicking_payload_and_a_panicking_on_panic_cost_the_pool_nothing() {
    hide();
    let bombs = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    let (b, s) = (bombs.clone(), seen.clone());
    let pool = CommonAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(4)
        .process_wide(false)
        .on_panic(move |_, err| {
            assert!(err.is_panic());
            s.fetch_add(1, Ordering::SeqCst);
            std::panic::panic_any(Bomb(b.clone()));
        })
        .build();
    // Detached before it runs to its panic (a gate), so that the error is nobody's.
    let gate = Gate::default();
    let (b, g) = (bombs.clone(), gate.clone());
    pool.submit(async move {
        g.wait().await;
        if true {
            std::panic::panic_any(Bomb(b));
        }
        1u32
    })
    .await
    .unwrap()
    .detach();
    gate.open();
    within("wait", pool.wait()).await;
    assert_eq!(seen.load(Ordering::SeqCst), 1, "on_panic called once");
    // The task's payload (dropped with the error nobody took) and on_panic's.
    assert_eq!(bombs.load(Ordering::SeqCst), 2);
    let next = pool.submit(async { 7 }).await.unwrap();
    assert_eq!(within("the next task", next).await.unwrap(), 7);
    let stats = pool.stats();
    assert_eq!((stats.panicked, stats.completed), (1, 1));
}
