//! A waker that panics when woken (an executor's fault: a handle, a submit or a `wait()`
//! polled by it) costs nobody else anything: the pool catches the panic where it wakes
//! that waker (the panic hook has shown it), as tokio's own tasks do with a `JoinHandle`'s
//! waker, and goes on with its other wake-ups and its next jobs. (Before, the panic
//! unwound the slot task that woke it, past what the job's end left to do: the next queued
//! task was cancelled as if its runtime had shut down, a handle woken after the faulty one
//! never was, and the `wait()` callers woken in the same batch of tokio's `Notify` hung.)
//! RELIABILITY.md, finding 163.

mod support;

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Wake, Waker};
use std::time::Duration;

use futures_util::StreamExt;

use nb_aiopool::{CommonAioPool, NoQueueAioPool, PoolStats, SmartAioPool};
use support::{within, Gate};

const MESSAGE: &str = "this waker panics";
const CLONE_MESSAGE: &str = "this waker's clone panics";
const F_MESSAGE: &str = "the mapping function fails";

/// A waker whose `wake` panics.
struct Boom;

impl Wake for Boom {
    fn wake(self: Arc<Self>) {
        panic!("{MESSAGE}");
    }
}

/// Polls `fut` once with a waker that panics when woken.
fn poll_with_boom<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    poll_with(fut, &Waker::from(Arc::new(Boom)))
}

fn poll_with<F: Future + Unpin>(fut: &mut F, waker: &Waker) -> Poll<F::Output> {
    support::hide_panics(&[MESSAGE, CLONE_MESSAGE, F_MESSAGE]);
    Pin::new(fut).poll(&mut Context::from_waker(waker))
}

/// Whether [`clone_panics`]'s wakers panic when cloned (once they have been registered).
static CLONE_ARMED: AtomicBool = AtomicBool::new(false);

static CLONE_PANICS: RawWakerVTable = RawWakerVTable::new(clone_or_panic, |_| {}, |_| {}, |_| {});

fn clone_or_panic(_: *const ()) -> RawWaker {
    if CLONE_ARMED.load(Ordering::SeqCst) {
        panic!("{CLONE_MESSAGE}");
    }
    RawWaker::new(std::ptr::null(), &CLONE_PANICS)
}

/// A waker that does nothing when woken, and whose clone panics while [`CLONE_ARMED`].
fn clone_panics() -> Waker {
    // SAFETY: the vtable's functions ignore the data pointer (null), do nothing when
    // woken or dropped, and a clone returns the same kind of waker: the `RawWaker`
    // contract holds.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &CLONE_PANICS)) }
}

/// A task that waits for `gate` to open, then returns 1.
fn gated(gate: &Gate) -> impl Future<Output = u32> + Send + 'static {
    let gate = gate.clone();
    async move {
        gate.wait().await;
        1
    }
}

fn assert_all_completed(stats: PoolStats, n: u64) {
    assert_eq!(
        (stats.completed, stats.cancelled, stats.panicked),
        (n, 0, 0),
        "{stats:?}"
    );
}

/// The task after the one whose handle's waker panics (queued behind it, or waiting for a
/// slot in a pool without a queue) runs and completes, the faulty handle still gets its
/// result, `wait()` returns and the pool takes new work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_whose_waker_panics_costs_the_next_task_nothing() {
    // CommonAioPool: the next task queued.
    let pool = CommonAioPool::new(1, 10);
    let gate = Gate::default();
    let mut first = pool.submit(gated(&gate)).await.unwrap();
    let next = pool.submit(async { 2 }).await.unwrap();
    assert!(poll_with_boom(&mut first).is_pending());
    gate.open();
    assert_eq!(within("the next task", next).await.unwrap(), 2);
    within("wait", pool.wait()).await;
    assert_eq!(within("the faulty handle", first).await.unwrap(), 1);
    assert_eq!(pool.run(async { 3 }).await.unwrap(), 3);
    assert_all_completed(pool.stats(), 3);

    // SmartAioPool: the same with recipes.
    let pool = SmartAioPool::builder().max_concurrency(1).build();
    let gate = Gate::default();
    let mut first = {
        let gate = gate.clone();
        pool.submit(move || gated(&gate)).await.unwrap()
    };
    let next = pool.submit(|| async { 2 }).await.unwrap();
    assert!(poll_with_boom(&mut first).is_pending());
    gate.open();
    assert_eq!(within("the next task", next).await.unwrap(), 2);
    within("wait", pool.wait()).await;
    assert_eq!(within("the faulty handle", first).await.unwrap(), 1);
    assert_eq!(pool.run(|| async { 3 }).await.unwrap(), 3);
    assert_all_completed(pool.stats(), 3);

    // NoQueueAioPool: the next task's submit waits for the slot.
    let pool = NoQueueAioPool::new(1);
    let gate = Gate::default();
    let mut first = pool.submit(gated(&gate)).await.unwrap();
    let next = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.submit(async { 2 }).await.unwrap().await })
    };
    assert!(poll_with_boom(&mut first).is_pending());
    tokio::time::sleep(Duration::from_millis(20)).await; // the submit waits for the slot
    gate.open();
    assert_eq!(within("the next task", next).await.unwrap().unwrap(), 2);
    within("wait", pool.wait()).await;
    assert_eq!(within("the faulty handle", first).await.unwrap(), 1);
    assert_eq!(pool.run(async { 3 }).await.unwrap(), 3);
    assert_all_completed(pool.stats(), 3);
}

/// A submit waiting for room whose waker panics when the room is granted: the task whose
/// end gave the room back still tells its handle (woken after the submitter), and the
/// room comes back when the faulty submit is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitter_whose_waker_panics_costs_the_ending_task_nothing() {
    let pool = NoQueueAioPool::new(1);
    let gate = Gate::default();
    let running = pool.submit(gated(&gate)).await.unwrap();
    let awaited = tokio::spawn(running);
    let mut faulty = Box::pin(pool.submit(async { 2 }));
    assert!(
        poll_with_boom(&mut faulty).is_pending(),
        "the slot is taken"
    );
    tokio::time::sleep(Duration::from_millis(20)).await; // `awaited` polls its handle
    gate.open();
    assert_eq!(
        within("the ended task's handle", awaited)
            .await
            .unwrap()
            .unwrap(),
        1
    );
    drop(faulty);
    assert_eq!(
        within("a new task", pool.run(async { 3 })).await.unwrap(),
        3
    );
    within("wait", pool.wait()).await;
    assert_all_completed(pool.stats(), 2);
}

/// `wait()` callers woken together with one whose waker panics all return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_whose_waker_panics_costs_the_other_waits_nothing() {
    let hung = waits_around_a_faulty_one(&Waker::from(Arc::new(Boom)), || ()).await;
    assert!(hung.is_empty(), "waits {hung:?} hung");
}

/// A `wait()` caller whose waker's *clone* panics: the pool clones it only inside the
/// catch, so the other waits woken in the same batch return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_whose_waker_clone_panics_costs_the_other_waits_nothing() {
    let hung = waits_around_a_faulty_one(&clone_panics(), || {
        CLONE_ARMED.store(true, Ordering::SeqCst)
    })
    .await;
    CLONE_ARMED.store(false, Ordering::SeqCst);
    assert!(hung.is_empty(), "waits {hung:?} hung");
}

/// Six `wait()` callers of a pool running one task, three waiting before and three after
/// one polled with `faulty_waker` (then `arm` runs); once the task ends, returns the
/// indexes of the six that did not return within 10 s. The faulty wait returns when
/// polled again.
async fn waits_around_a_faulty_one(faulty_waker: &Waker, arm: impl FnOnce()) -> Vec<usize> {
    let pool = CommonAioPool::new(1, 10);
    let gate = Gate::default();
    let task = pool.submit(gated(&gate)).await.unwrap();
    let spawn_waits = |n| {
        (0..n)
            .map(|_| tokio::spawn(pool.wait()))
            .collect::<Vec<_>>()
    };
    let mut waits = spawn_waits(3);
    tokio::time::sleep(Duration::from_millis(20)).await; // they wait
    let mut faulty = Box::pin(pool.wait());
    assert!(poll_with(&mut faulty, faulty_waker).is_pending());
    arm();
    waits.extend(spawn_waits(3));
    tokio::time::sleep(Duration::from_millis(20)).await;
    gate.open();
    let mut hung = Vec::new();
    for (i, wait) in waits.into_iter().enumerate() {
        if tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .is_err()
        {
            hung.push(i);
        }
    }
    assert_eq!(within("the task", task).await.unwrap(), 1);
    within("the faulty wait, polled again", faulty).await;
    assert_all_completed(pool.stats(), 1);
    hung
}

/// A submit granted room and then dropped (a timeout, a `select!`) passes the room to the
/// next submitter: that one's faulty waker does not panic out of the drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_submit_passes_its_room_on_quietly() {
    let pool = NoQueueAioPool::new(1);
    let gate = Gate::default();
    let running = pool.submit(gated(&gate)).await.unwrap();
    let mut granted = Box::pin(pool.submit(async { 2 }));
    assert!(poll_with(&mut granted, Waker::noop()).is_pending());
    let mut faulty = Box::pin(pool.submit(async { 3 }));
    assert!(poll_with_boom(&mut faulty).is_pending());
    gate.open();
    assert_eq!(within("the running task", running).await.unwrap(), 1);
    // The room went to `granted`, which was not woken (a no-op waker) and is dropped.
    let dropped = catch_unwind(AssertUnwindSafe(|| drop(granted)));
    assert!(
        dropped.is_ok(),
        "the faulty waker's panic came out of another submit's drop"
    );
    // `faulty` holds the room now; its submit goes through when polled again.
    let handle = within("the faulty submit, polled again", faulty)
        .await
        .unwrap();
    assert_eq!(within("its task", handle).await.unwrap(), 3);
    within("wait", pool.wait()).await;
    assert_all_completed(pool.stats(), 2);
}

/// A stream holding a place, dropped, gives it to a submitter whose waker panics: the
/// panic does not come out of the stream's drop. (The place is held by a stream whose
/// mapping function panicked: one waiting for its input no longer holds one, a review of
/// the streams found; see `a_stream_finding_no_input_gives_its_place_back_quietly`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_gives_its_place_back_quietly() {
    let pool = NoQueueAioPool::new(2);
    let gate = Gate::default();
    let running = pool.submit(gated(&gate)).await.unwrap();
    // Takes the second place for its input, then `f` panics on it.
    let mut stream = pool.map_unordered(
        futures_util::stream::iter(0..1u32),
        |_| -> std::future::Ready<u32> { std::panic::panic_any(F_MESSAGE) },
    );
    let polled = catch_unwind(AssertUnwindSafe(|| {
        poll_with(&mut stream.next(), Waker::noop()).is_pending()
    }));
    assert!(polled.is_err(), "f panicked");
    let mut faulty = Box::pin(pool.submit(async { 3 }));
    assert!(
        poll_with_boom(&mut faulty).is_pending(),
        "the stream holds the place"
    );
    let dropped = catch_unwind(AssertUnwindSafe(|| drop(stream)));
    assert!(
        dropped.is_ok(),
        "the faulty waker's panic came out of the stream's drop"
    );
    let handle = within("the faulty submit, polled again", faulty)
        .await
        .unwrap();
    assert_eq!(within("its task", handle).await.unwrap(), 3);
    gate.open();
    assert_eq!(within("the running task", running).await.unwrap(), 1);
    within("wait", pool.wait()).await;
    assert_all_completed(pool.stats(), 2);
}

/// A stream that took a place for its next input and found none ready gives the place
/// back, here to a submitter whose waker panics (it came while the stream polled its
/// input): the panic does not come out of the stream's poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_finding_no_input_gives_its_place_back_quietly() {
    let pool = NoQueueAioPool::new(2);
    let gate = Gate::default();
    let running = pool.submit(gated(&gate)).await.unwrap();
    let faulty = Arc::new(std::sync::Mutex::new(Some(Box::pin(
        pool.submit(async { 3 }),
    ))));
    // The input: on its first poll (the stream holds the second place), the faulty
    // submit comes and waits for room; then nothing is ready.
    let in_input = Arc::clone(&faulty);
    let inputs = futures_util::stream::poll_fn(move |_| {
        if let Some(f) = in_input.lock().unwrap().as_mut() {
            assert!(poll_with_boom(f).is_pending(), "the stream holds the place");
        }
        Poll::<Option<u32>>::Pending
    });
    let mut stream = pool.map_unordered(inputs, |i| async move { i });
    let polled = catch_unwind(AssertUnwindSafe(|| {
        poll_with(&mut stream.next(), Waker::noop()).is_pending()
    }));
    assert!(
        matches!(polled, Ok(true)),
        "the faulty waker's panic came out of the stream's poll"
    );
    let faulty = faulty.lock().unwrap().take().unwrap();
    let handle = within("the faulty submit, polled again", faulty)
        .await
        .unwrap();
    assert_eq!(within("its task", handle).await.unwrap(), 3);
    gate.open();
    assert_eq!(within("the running task", running).await.unwrap(), 1);
    drop(stream);
    within("wait", pool.wait()).await;
    assert_all_completed(pool.stats(), 2);
}

/// `shutdown` refuses every submitter waiting for room, also those after one whose waker
/// panics, and returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_refuses_the_submitters_after_a_faulty_one() {
    let pool = NoQueueAioPool::new(1);
    let gate = Gate::default();
    let running = pool.submit(gated(&gate)).await.unwrap();
    let mut faulty = Box::pin(pool.submit(async { 2 }));
    assert!(poll_with_boom(&mut faulty).is_pending());
    let other = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.submit(async { 3 }).await.is_err() })
    };
    tokio::time::sleep(Duration::from_millis(20)).await; // `other` waits for room
    let shutdown = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.shutdown().await })
    };
    assert!(within("the other submitter, refused", other).await.unwrap());
    gate.open();
    assert_eq!(within("the running task", running).await.unwrap(), 1);
    within("shutdown", shutdown).await.unwrap();
    assert!(within("the faulty submit, refused", faulty).await.is_err());
    assert_all_completed(pool.stats(), 1);
}

/// A SmartAioPool stranded by the end of its only runtime wakes the handles of its queued
/// tasks, so that their next poll offers a runtime: a handle whose waker panics among them
/// costs the others nothing (the panic does not come out of the runtime's drop, and a
/// handle awaited from a new runtime is still woken and runs its task there).
#[test]
fn a_stranded_pool_wakes_the_handles_after_a_faulty_one() {
    let runs = Arc::new(AtomicUsize::new(0));
    let a = support::current_thread();
    let (pool, cut_off, mut faulty, mut next) = a.block_on(async {
        let pool = SmartAioPool::builder()
            .max_concurrency(1)
            .auto_shutdown(false)
            .build();
        let cut_off = pool.submit(support::cut_off_once(&runs, 1)).await.unwrap();
        // Queued behind it, woken together (in queue order) when the pool is stranded.
        let faulty = pool.submit(|| async { 2 }).await.unwrap();
        let next = pool.submit(|| async { 3 }).await.unwrap();
        support::reach(&runs, 1, Duration::from_secs(10)).await;
        (pool, cut_off, faulty, next)
    });
    assert!(poll_with_boom(&mut faulty).is_pending());
    let (polled, was_polled) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        support::current_thread().block_on(async move {
            let once = tokio::time::timeout(Duration::from_millis(10), &mut next).await;
            assert!(once.is_err(), "queued behind a run that never ends");
            polled.send(()).unwrap();
            within("the handle awaited from a new runtime", next).await
        })
    });
    was_polled.recv().unwrap();
    drop(a);
    assert_eq!(waiter.join().unwrap().unwrap(), 3);
    let b = support::current_thread();
    assert_eq!(b.block_on(within("the faulty handle", faulty)).unwrap(), 2);
    assert_eq!(b.block_on(within("the cut-off task", cut_off)).unwrap(), 1);
    assert_all_completed(pool.stats(), 3);
}
