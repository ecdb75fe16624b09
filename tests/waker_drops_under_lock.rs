//! A waker's `clone` and `drop` are the executor's code, as its `wake` is: the pool runs
//! none of them under a lock of its own. A waiting submitter's waker is cloned before the
//! engine's lock is taken, and the one it replaces (a re-poll with a new waker) or leaves
//! behind (a waiting submit dropped) is dropped after it is released, its panic caught as
//! a wake's is; a cancel-on-error group aborts its other tasks (which wakes the group's
//! poller) outside its registry's lock. A waker that re-enters the pool from its `clone`,
//! `drop` or `wake` (an executor whose waker pushes to a queue another pool call reads, or
//! polls the woken task at once) deadlocked on that lock, and one whose `drop` panicked
//! unwound through the engine's critical section. (What RELIABILITY.md's finding 163 left
//! alone.)
//!
//! A review of those fixes (finding 280's, and 277–278's) added pins of the races they
//! could open: a grant, a close or a freed place that comes between a waiting submit's
//! two looks under the lock (made to come there by the new waker's `clone`) is seen at
//! the second look, with no place counted twice and no wake-up lost; two tasks of a
//! cancel-on-error group failing at once end the group; a group submit dropped while it
//! waits takes nothing.
//!
//! Each test runs on a thread of its own, runtime included, and fails with a time-out
//! message if it deadlocks (the stuck thread is left behind).

mod support;

use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::Duration;

use futures_util::StreamExt;

use nb_aiopool::{CancelReason, CommonAioPool, NoQueueAioPool, PoolStats, TaskHandle};
use support::{on_thread_within, within, Gate};

const DROP_MESSAGE: &str = "this waker's drop panics";
const CLONE_MESSAGE: &str = "this waker's clone panics";

type Hook = Box<dyn Fn() + Send + Sync>;

/// The results a group's poller joined: a task's value, or why it was cancelled.
type Joined = Arc<Mutex<Vec<Result<Result<u32, String>, CancelReason>>>>;

/// What a [`hooked`] waker does, besides being a waker: `on_clone` at each clone,
/// `on_wake` at each wake, `on_drop` at each drop of any of its copies (a wake by value
/// is a wake, then a drop), while armed.
#[derive(Default)]
struct Hooks {
    armed: AtomicBool,
    fired: AtomicUsize,
    /// Wakes of any copy (by value or by reference), armed or not.
    wakes: AtomicUsize,
    on_clone: Option<Hook>,
    on_wake: Option<Hook>,
    on_drop: Option<Hook>,
}

impl Hooks {
    /// No hook: a waker that counts its wakes.
    fn counting() -> Arc<Self> {
        Arc::new(Hooks::default())
    }

    fn on_clone(f: impl Fn() + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Hooks {
            on_clone: Some(Box::new(f)),
            ..Hooks::default()
        })
    }

    fn on_wake(f: impl Fn() + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Hooks {
            on_wake: Some(Box::new(f)),
            ..Hooks::default()
        })
    }

    fn on_drop(f: impl Fn() + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Hooks {
            on_drop: Some(Box::new(f)),
            ..Hooks::default()
        })
    }

    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
    }

    /// How many times a hook ran.
    fn fired(&self) -> usize {
        self.fired.load(Ordering::SeqCst)
    }

    /// How many times a copy was woken.
    fn wakes(&self) -> usize {
        self.wakes.load(Ordering::SeqCst)
    }

    fn run(&self, hook: &Option<Hook>) {
        if let Some(f) = hook {
            if self.armed.load(Ordering::SeqCst) {
                self.fired.fetch_add(1, Ordering::SeqCst);
                f();
            }
        }
    }
}

static HOOKED: RawWakerVTable =
    RawWakerVTable::new(hooked_clone, hooked_wake, hooked_wake_by_ref, hooked_drop);

/// A waker of `hooks` (each copy holds a reference to them).
fn hooked(hooks: &Arc<Hooks>) -> Waker {
    let data = Arc::into_raw(Arc::clone(hooks)).cast::<()>();
    // SAFETY: `data` is a reference to `Hooks` given up by `Arc::into_raw`; each vtable
    // function takes it back as such (clone makes another, drop gives it up), as
    // `Waker::from(Arc<impl Wake>)` does.
    unsafe { Waker::from_raw(RawWaker::new(data, &HOOKED)) }
}

unsafe fn hooked_clone(data: *const ()) -> RawWaker {
    // SAFETY: `data` is a live reference (see `hooked`), borrowed here, not given up.
    let this = ManuallyDrop::new(unsafe { Arc::from_raw(data.cast::<Hooks>()) });
    let copy = Arc::clone(&this);
    this.run(&this.on_clone);
    RawWaker::new(Arc::into_raw(copy).cast(), &HOOKED)
}

unsafe fn hooked_wake(data: *const ()) {
    // SAFETY: as in `hooked_wake_by_ref` and `hooked_drop`: the waker is consumed.
    unsafe {
        hooked_wake_by_ref(data);
        hooked_drop(data);
    }
}

unsafe fn hooked_wake_by_ref(data: *const ()) {
    // SAFETY: `data` is a live reference (see `hooked`), borrowed here.
    let this = ManuallyDrop::new(unsafe { Arc::from_raw(data.cast::<Hooks>()) });
    this.wakes.fetch_add(1, Ordering::SeqCst);
    this.run(&this.on_wake);
}

unsafe fn hooked_drop(data: *const ()) {
    // SAFETY: `data` is a live reference (see `hooked`), given up here (also if the hook
    // panics: `this` is dropped while unwinding).
    let this = unsafe { Arc::from_raw(data.cast::<Hooks>()) };
    this.run(&this.on_drop);
}

fn poll_with<F: Future + Unpin>(fut: &mut F, waker: &Waker) -> Poll<F::Output> {
    support::hide_panics(&[DROP_MESSAGE, CLONE_MESSAGE]);
    Pin::new(fut).poll(&mut Context::from_waker(waker))
}

/// A task that waits for `gate` to open, then returns `v`.
fn gated(gate: &Gate, v: u32) -> impl Future<Output = u32> + Send + 'static {
    let gate = gate.clone();
    async move {
        gate.wait().await;
        v
    }
}

/// A one-slot NoQueueAioPool whose slot a task held by the returned gate takes (it
/// returns 1): a submit now waits for room.
async fn full_no_queue_pool() -> (NoQueueAioPool, Gate, TaskHandle<u32>) {
    let pool = NoQueueAioPool::new(1);
    let gate = Gate::default();
    let running = pool.submit(gated(&gate, 1)).await.unwrap();
    (pool, gate, running)
}

/// Submits a task returning `v` from a tokio task of its own (it waits for room behind
/// the submits waiting already); the join handle gives that task's result.
fn submit_behind(
    pool: &NoQueueAioPool,
    v: u32,
) -> tokio::task::JoinHandle<Result<u32, nb_aiopool::TaskError>> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.submit(async move { v }).await.unwrap().await })
}

/// Runs `test` on a runtime of its own, on a thread of its own: a deadlock fails the test
/// after 20 s instead of hanging it.
fn bounded<F: Future<Output = ()> + 'static>(
    what: &str,
    test: impl FnOnce() -> F + Send + 'static,
) {
    on_thread_within(what, 20, move || {
        support::multi_thread_of(2).block_on(test());
    });
}

/// Opens `gate`: the task it held (`running`, 1) completes, then the waiting submit gets
/// its place and its task (2) completes, the pool waits them out, and its stats count the
/// two as completed, nothing else.
async fn both_complete<E: std::fmt::Debug>(
    pool: &NoQueueAioPool,
    gate: &Gate,
    running: TaskHandle<u32>,
    waiting: impl Future<Output = Result<TaskHandle<u32>, E>>,
) {
    gate.open();
    assert_eq!(within("the running task", running).await.unwrap(), 1);
    let handle = within("the waiting submit", waiting).await.unwrap();
    assert_eq!(within("its task", handle).await.unwrap(), 2);
    within("wait", pool.wait()).await;
    assert_eq!(counts(pool.stats()), (2, 2, 0, 0), "{:?}", pool.stats());
}

fn counts(stats: PoolStats) -> (u64, u64, u64, u64) {
    (
        stats.submitted,
        stats.completed,
        stats.cancelled,
        stats.panicked,
    )
}

/// A submit waiting for room, polled again with another waker: the pool keeps the new
/// one and drops the old one, whose drop reads the pool's stats and tries a submit (the
/// pool is still full). The drop ran under the engine's lock, and deadlocked on it.
#[test]
fn a_waiting_submit_polled_with_a_new_waker_drops_the_old_one_outside_the_lock() {
    bounded(
        "a re-polled submit whose old waker's drop re-enters the pool",
        || async {
            let (pool, gate, running) = full_no_queue_pool().await;
            let mut waiting = Box::pin(pool.submit(async { 2 }));
            let seen = Arc::new(Mutex::new(None));
            let hooks = {
                let (pool, seen) = (pool.clone(), Arc::clone(&seen));
                Hooks::on_drop(move || {
                    let full = pool.try_submit(async { 0 }).unwrap_err().is_full();
                    *seen.lock().unwrap() = Some((pool.stats().submitted, full));
                })
            };
            let first = hooked(&hooks);
            assert!(poll_with(&mut waiting, &first).is_pending());
            hooks.arm();
            assert!(poll_with(&mut waiting, Waker::noop()).is_pending());
            hooks.disarm();
            assert_eq!(
                hooks.fired(),
                1,
                "the pool's copy of the first waker was dropped"
            );
            assert_eq!(*seen.lock().unwrap(), Some((1, true)));
            drop(first);
            both_complete(&pool, &gate, running, waiting).await;
        },
    );
}

/// A waiting submit dropped: its waker, left in the line of waiters, is dropped, and that
/// drop aborts a queued task and submits in its place. The drop ran under the engine's
/// lock, and the abort deadlocked on it.
#[test]
fn a_waiting_submit_dropped_drops_its_waker_outside_the_lock() {
    bounded(
        "a dropped submit whose waker's drop aborts and submits",
        || async {
            let pool = CommonAioPool::new(1, 1);
            let gate = Gate::default();
            let running = pool.submit(gated(&gate, 1)).await.unwrap();
            let queued = pool.submit(async { 5 }).await.unwrap();
            let mut waiting = Box::pin(pool.submit(async { 2 }));
            let late: Arc<Mutex<Option<TaskHandle<u32>>>> = Arc::default();
            let hooks = {
                let (pool, late) = (pool.clone(), Arc::clone(&late));
                let abort = queued.abort_handle();
                Hooks::on_drop(move || {
                    abort.abort();
                    // The queued task's place is free again, the waiter gone: taken at once.
                    *late.lock().unwrap() = pool.try_submit(async { 3 }).ok();
                })
            };
            let waker = hooked(&hooks);
            assert!(poll_with(&mut waiting, &waker).is_pending());
            hooks.arm();
            drop(waiting);
            hooks.disarm();
            assert_eq!(hooks.fired(), 1, "the pool's copy of the waker was dropped");
            let queued = within("the aborted task", queued).await.unwrap_err();
            assert_eq!(queued.cancel_reason(), Some(CancelReason::Aborted));
            let late = late
                .lock()
                .unwrap()
                .take()
                .expect("the submit from the drop");
            gate.open();
            assert_eq!(within("the running task", running).await.unwrap(), 1);
            assert_eq!(within("the late task", late).await.unwrap(), 3);
            within("wait", pool.wait()).await;
            assert_eq!(counts(pool.stats()), (3, 2, 1, 0), "{:?}", pool.stats());
        },
    );
}

/// A submit that has to wait, first polled with a waker whose clone reads the pool's
/// stats and tries a submit: the pool keeps a clone of it. The clone was made under the
/// engine's lock, and deadlocked on it.
#[test]
fn a_submit_that_waits_clones_its_waker_outside_the_lock() {
    bounded(
        "a waiting submit whose waker's clone re-enters the pool",
        || async {
            let (pool, gate, running) = full_no_queue_pool().await;
            let mut waiting = Box::pin(pool.submit(async { 2 }));
            let hooks = {
                let pool = pool.clone();
                Hooks::on_clone(move || {
                    assert_eq!(pool.stats().submitted, 1);
                    assert!(pool.try_submit(async { 0 }).unwrap_err().is_full());
                })
            };
            let waker = hooked(&hooks);
            hooks.arm();
            assert!(poll_with(&mut waiting, &waker).is_pending());
            hooks.disarm();
            assert!(hooks.fired() >= 1, "the pool keeps a clone of the waker");
            both_complete(&pool, &gate, running, waiting).await;
        },
    );
}

/// The same when a waiting submit is polled again with a new waker whose clone re-enters
/// the pool: the pool keeps a clone of the new waker, made under its lock before.
#[test]
fn a_waiting_submit_polled_with_a_new_waker_clones_it_outside_the_lock() {
    bounded(
        "a re-polled submit whose new waker's clone re-enters the pool",
        || async {
            let (pool, gate, running) = full_no_queue_pool().await;
            let mut waiting = Box::pin(pool.submit(async { 2 }));
            assert!(poll_with(&mut waiting, Waker::noop()).is_pending());
            let hooks = {
                let pool = pool.clone();
                Hooks::on_clone(move || {
                    assert_eq!(pool.stats().submitted, 1);
                    assert!(pool.try_submit(async { 0 }).unwrap_err().is_full());
                })
            };
            let waker = hooked(&hooks);
            hooks.arm();
            assert!(poll_with(&mut waiting, &waker).is_pending());
            // Polled again with the same waker: kept, not cloned again.
            let fired = hooks.fired();
            assert!(fired >= 1, "the pool keeps a clone of the new waker");
            assert!(poll_with(&mut waiting, &waker).is_pending());
            assert_eq!(
                hooks.fired(),
                fired,
                "the waker kept will wake the same task"
            );
            hooks.disarm();
            both_complete(&pool, &gate, running, waiting).await;
        },
    );
}

/// A map stream waiting for room in a full pool, polled by hand, then dropped: its wait
/// for room leaves the line, and its waker's drop (every copy's, while armed) reads the
/// stats and tries a submit. The copy in the line of waiters was dropped under the
/// engine's lock, and deadlocked on it.
#[test]
fn a_stream_waiting_for_room_dropped_drops_its_waker_outside_the_lock() {
    bounded(
        "a dropped stream whose waker's drop re-enters the pool",
        || async {
            let pool = CommonAioPool::new(1, 0);
            let gate = Gate::default();
            let running = pool.submit(gated(&gate, 1)).await.unwrap();
            let mut stream =
                pool.map_unordered(futures_util::stream::iter(0..3u32), |i| async move { i });
            let hooks = {
                let pool = pool.clone();
                Hooks::on_drop(move || {
                    let _ = pool.stats();
                    let _ = pool.try_submit(async { 0 });
                })
            };
            let waker = hooked(&hooks);
            let polled = stream.poll_next_unpin(&mut Context::from_waker(&waker));
            assert!(polled.is_pending(), "the stream waits for room");
            hooks.arm();
            drop(stream);
            hooks.disarm();
            assert!(hooks.fired() >= 1);
            drop(waker);
            gate.open();
            assert_eq!(within("the running task", running).await.unwrap(), 1);
            assert_eq!(pool.run(async { 3 }).await.unwrap(), 3);
            within("wait", pool.wait()).await;
            let stats = pool.stats();
            assert_eq!(
                (stats.completed, stats.cancelled),
                (stats.submitted, 0),
                "{stats:?}"
            );
        },
    );
}

/// A cancel-on-error group whose task fails aborts the others, which wakes the group's
/// poller: here an executor that polls the group at once, in its waker's `wake` (so the
/// task aborted is joined, and leaves the group's abort registry). The aborts, and so the
/// wake, ran under that registry's lock, and the join deadlocked on it (in the failing
/// task's slot: the group never heard of either end).
#[test]
fn a_failing_group_task_aborts_the_others_outside_the_registry_lock() {
    bounded(
        "a group whose poller's waker joins it when woken",
        || async {
            let pool = CommonAioPool::new(2, 2);
            let mut group = pool.group().cancel_on_error(true);
            let gate = Gate::default();
            group
                .submit(async { std::future::pending::<Result<u32, String>>().await })
                .await
                .unwrap();
            {
                let gate = gate.clone();
                group
                    .submit(async move {
                        gate.wait().await;
                        Err::<u32, _>("no".to_string())
                    })
                    .await
                    .unwrap();
            }
            let group = Arc::new(Mutex::new(group));
            let joined: Joined = Arc::default();
            let hooks = {
                let (group, joined) = (Arc::clone(&group), Arc::clone(&joined));
                Hooks::on_wake(move || {
                    let mut g = group.lock().unwrap();
                    while let Poll::Ready(Some(r)) =
                        g.poll_join_next(&mut Context::from_waker(Waker::noop()))
                    {
                        joined
                            .lock()
                            .unwrap()
                            .push(r.map_err(|e| e.cancel_reason().unwrap()));
                    }
                })
            };
            let waker = hooked(&hooks);
            let polled = group
                .lock()
                .unwrap()
                .poll_join_next(&mut Context::from_waker(&waker));
            assert!(polled.is_pending());
            hooks.arm();
            gate.open();
            within("the aborted task's join, by the waker", async {
                while joined.lock().unwrap().is_empty() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
            .await;
            hooks.disarm();
            assert_eq!(*joined.lock().unwrap(), vec![Err(CancelReason::Aborted)]);
            let failed = within(
                "the failing task",
                std::future::poll_fn(|cx| group.lock().unwrap().poll_join_next(cx)),
            )
            .await;
            assert_eq!(failed.unwrap().unwrap(), Err("no".to_string()));
            within("wait", pool.wait()).await;
            assert_eq!(counts(pool.stats()), (2, 1, 1, 0), "{:?}", pool.stats());
        },
    );
}

/// A waiting submit polled again with a new waker, the old one's drop panicking: the
/// panic is caught as a wake's is (it unwound through the engine's critical section, out
/// of the submit's poll, which could not be polled again: "`async fn` resumed after
/// panicking"); the submit goes on waiting and gets its place, and the pool's figures add
/// up.
#[test]
fn a_waiting_submit_whose_old_waker_panics_when_dropped_still_gets_its_place() {
    bounded(
        "a re-polled submit whose old waker's drop panics",
        || async {
            let (pool, gate, running) = full_no_queue_pool().await;
            let mut waiting = Box::pin(pool.submit(async { 2 }));
            let hooks = Hooks::on_drop(|| panic!("{DROP_MESSAGE}"));
            let first = hooked(&hooks);
            assert!(poll_with(&mut waiting, &first).is_pending());
            hooks.arm();
            let repoll = catch_unwind(AssertUnwindSafe(|| poll_with(&mut waiting, Waker::noop())));
            hooks.disarm();
            assert_eq!(hooks.fired(), 1);
            assert!(
                matches!(repoll, Ok(Poll::Pending)),
                "the old waker's panic came out of the submit's poll"
            );
            drop(first);
            gate.open();
            assert_eq!(within("the running task", running).await.unwrap(), 1);
            let handle = within("the waiting submit", waiting).await.unwrap();
            assert_eq!(within("its task", handle).await.unwrap(), 2);
            assert_eq!(pool.run(async { 3 }).await.unwrap(), 3);
            within("wait", pool.wait()).await;
            assert_eq!(counts(pool.stats()), (3, 3, 0, 0), "{:?}", pool.stats());
        },
    );
}

/// A waiting submit dropped, its waker's drop panicking: nothing comes out of the drop
/// (it unwound through the engine's critical section, out of the submit's drop: an abort
/// if that drop was itself part of an unwinding), and the submitter behind it gets the
/// place.
#[test]
fn a_waiting_submit_whose_waker_panics_when_dropped_leaves_quietly() {
    bounded("a dropped submit whose waker's drop panics", || async {
        let (pool, gate, running) = full_no_queue_pool().await;
        let mut faulty = Box::pin(pool.submit(async { 2 }));
        let hooks = Hooks::on_drop(|| panic!("{DROP_MESSAGE}"));
        let waker = hooked(&hooks);
        assert!(poll_with(&mut faulty, &waker).is_pending());
        let next = submit_behind(&pool, 3);
        tokio::time::sleep(Duration::from_millis(20)).await; // `next` waits behind it
        hooks.arm();
        let dropped = catch_unwind(AssertUnwindSafe(|| drop(faulty)));
        hooks.disarm();
        assert_eq!(hooks.fired(), 1);
        assert!(
            dropped.is_ok(),
            "the waker's panic came out of the submit's drop"
        );
        drop(waker);
        gate.open();
        assert_eq!(within("the running task", running).await.unwrap(), 1);
        assert_eq!(within("the next submit", next).await.unwrap().unwrap(), 3);
        within("wait", pool.wait()).await;
        assert_eq!(counts(pool.stats()), (2, 2, 0, 0), "{:?}", pool.stats());
    });
}

/// A submit that has to wait, polled with a waker whose clone panics: the panic comes out
/// of that poll (the submit cannot wait without a waker), and nothing of the pool's is
/// left half-done: the submitter behind it is served, no place is lost, the figures add
/// up. (Passes before the fix too: the clone, made under the lock then, changed nothing
/// before it panicked, and the lock ignores its poisoning.)
#[test]
fn a_submit_whose_waker_panics_when_cloned_costs_the_pool_nothing() {
    bounded("a waiting submit whose waker's clone panics", || async {
        let (pool, gate, running) = full_no_queue_pool().await;
        let mut faulty = Box::pin(pool.submit(async { 2 }));
        let hooks = Hooks::on_clone(|| panic!("{CLONE_MESSAGE}"));
        let waker = hooked(&hooks);
        hooks.arm();
        let polled = catch_unwind(AssertUnwindSafe(|| poll_with(&mut faulty, &waker)));
        hooks.disarm();
        assert!(polled.is_err(), "the submit cannot wait without its waker");
        drop(faulty);
        let next = submit_behind(&pool, 3);
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.open();
        assert_eq!(within("the running task", running).await.unwrap(), 1);
        assert_eq!(within("the next submit", next).await.unwrap().unwrap(), 3);
        assert_eq!(pool.run(async { 4 }).await.unwrap(), 4);
        within("wait", pool.wait()).await;
        assert_eq!(counts(pool.stats()), (3, 3, 0, 0), "{:?}", pool.stats());
    });
}

/// Fills the idle `pool` (nothing running or queued) with tasks held by a closed gate
/// using `try_submit`, and returns how many it took: its room, if no place leaked.
async fn room_now(pool: &CommonAioPool) -> usize {
    let gate = Gate::default();
    let mut handles = Vec::new();
    while let Ok(h) = pool.try_submit(gated(&gate, 0)) {
        handles.push(h);
        assert!(handles.len() <= 64, "the pool admits without bound");
    }
    let n = handles.len();
    gate.open();
    for h in handles {
        within("a filler task", h).await.unwrap();
    }
    within("wait", pool.wait()).await;
    n
}

// ----- Admit: between the two looks under the lock -----------------------------------------

/// A waiting submit re-polled with a new waker; that waker's clone (made between
/// `poll_wait`, which found the waker changed, and `poll_wait_with`) grows the pool, which
/// grants the waiter a place at once. The second look finds it granted: the submit goes
/// through in that same poll, holding that one place (no second one taken, none leaked).
#[test]
fn a_grant_between_the_waker_check_and_its_clone_is_taken_once() {
    bounded(
        "a grant that comes while the new waker is cloned",
        || async {
            let pool = CommonAioPool::new(1, 1);
            let gate = Gate::default();
            let running = pool.submit(gated(&gate, 1)).await.unwrap();
            let queued = pool.submit(gated(&gate, 2)).await.unwrap();
            let mut waiting = Box::pin(pool.submit(async { 3 }));
            assert!(poll_with(&mut waiting, Waker::noop()).is_pending());
            let hooks = {
                let pool = pool.clone();
                Hooks::on_clone(move || pool.set_max_concurrency(2))
            };
            let waker = hooked(&hooks);
            hooks.arm();
            let polled = poll_with(&mut waiting, &waker);
            hooks.disarm();
            assert!(hooks.fired() >= 1, "the new waker was cloned");
            let Poll::Ready(Ok(third)) = polled else {
                panic!("the place granted between the two looks was not seen");
            };
            // Room 3 (2 + 1 queued), all taken.
            assert!(pool.try_submit(async { 0 }).unwrap_err().is_full());
            gate.open();
            assert_eq!(within("running", running).await.unwrap(), 1);
            assert_eq!(within("queued", queued).await.unwrap(), 2);
            assert_eq!(within("the granted submit's task", third).await.unwrap(), 3);
            within("wait", pool.wait()).await;
            assert_eq!(counts(pool.stats()), (3, 3, 0, 0), "{:?}", pool.stats());
            assert_eq!(
                room_now(&pool).await,
                3,
                "a place leaked or was counted twice"
            );
        },
    );
}

/// The same with a close in between (the clone shuts the pool down): the submit is
/// refused in that poll, its future given back, and no place is kept for it.
#[test]
fn a_close_between_the_waker_check_and_its_clone_refuses_the_submit() {
    bounded(
        "a close that comes while the new waker is cloned",
        || async {
            let pool = CommonAioPool::new(1, 0);
            let gate = Gate::default();
            let running = pool.submit(gated(&gate, 1)).await.unwrap();
            let mut waiting = Box::pin(pool.submit(async { 7 }));
            assert!(poll_with(&mut waiting, Waker::noop()).is_pending());
            let hooks = {
                let pool = pool.clone();
                // Closes at the call; the future (its wait) is dropped unpolled.
                Hooks::on_clone(move || drop(pool.shutdown()))
            };
            let waker = hooked(&hooks);
            hooks.arm();
            let polled = poll_with(&mut waiting, &waker);
            hooks.disarm();
            assert!(hooks.fired() >= 1, "the new waker was cloned");
            let Poll::Ready(Err(refused)) = polled else {
                panic!("the close between the two looks was not seen");
            };
            assert!(refused.is_closed(), "{refused:?}");
            assert_eq!(
                within("its future, given back", refused.into_inner()).await,
                7
            );
            gate.open();
            assert_eq!(within("running", running).await.unwrap(), 1);
            within("shutdown", pool.shutdown()).await;
            assert_eq!(counts(pool.stats()), (1, 1, 0, 0), "{:?}", pool.stats());
        },
    );
}

/// Two waiters; the second is re-polled with a new waker whose clone aborts the queued
/// task, freeing one place: it goes to the first waiter (woken through the waker it
/// holds), not to the one being polled, which waits on with its new waker, and gets the
/// next place. No wake-up lost, no place taken twice.
#[test]
fn a_place_freed_while_another_waiter_clones_its_waker_goes_to_the_first_in_line() {
    bounded(
        "a place freed while the second waiter's waker is cloned",
        || async {
            let pool = CommonAioPool::new(1, 1);
            let gate = Gate::default();
            let running = pool.submit(gated(&gate, 1)).await.unwrap();
            let queued = pool.submit(gated(&gate, 2)).await.unwrap();
            let first_waker = Hooks::counting();
            let mut first = Box::pin(pool.submit(async { 3 }));
            assert!(poll_with(&mut first, &hooked(&first_waker)).is_pending());
            let mut second = Box::pin(pool.submit(async { 4 }));
            assert!(poll_with(&mut second, Waker::noop()).is_pending());
            let abort = queued.abort_handle();
            let hooks = Hooks::on_clone(move || abort.abort());
            let second_waker = hooked(&hooks);
            hooks.arm();
            assert!(
                poll_with(&mut second, &second_waker).is_pending(),
                "the place freed is the first waiter's"
            );
            hooks.disarm();
            assert_eq!(first_waker.wakes(), 1, "the first waiter was woken");
            let Poll::Ready(Ok(third)) = poll_with(&mut first, &hooked(&first_waker)) else {
                panic!("the first waiter did not get the freed place");
            };
            let err = within("the aborted task", queued).await.unwrap_err();
            assert_eq!(err.cancel_reason(), Some(CancelReason::Aborted));
            // The second waits on, with its new waker: woken when the next place frees.
            assert_eq!(hooks.wakes(), 0);
            gate.open();
            assert_eq!(within("running", running).await.unwrap(), 1);
            assert_eq!(within("the first waiter's task", third).await.unwrap(), 3);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while hooks.wakes() == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the second waiter's new waker was never woken"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let Poll::Ready(Ok(fourth)) = poll_with(&mut second, &second_waker) else {
                panic!("the second waiter was woken but got no place");
            };
            assert_eq!(within("the second waiter's task", fourth).await.unwrap(), 4);
            within("wait", pool.wait()).await;
            assert_eq!(counts(pool.stats()), (4, 3, 1, 0), "{:?}", pool.stats());
            assert_eq!(
                room_now(&pool).await,
                2,
                "a place leaked or was counted twice"
            );
        },
    );
}

// ----- cancel-on-error group: two failures at once -----------------------------------------

/// A cancel-on-error group whose two tasks fail at the same moment (one gate releases
/// both, on two workers), with a third task that never ends by itself: the first failure
/// aborts the others outside the registry lock, the second trips nothing more. Every task
/// ends (the third aborted), the join returns, and the pool's stats add up. 50 rounds.
#[test]
fn two_tasks_of_a_cancel_on_error_group_failing_at_once_end_the_group() {
    bounded("two failures at once", || async {
        let pool = CommonAioPool::new(4, 4);
        for round in 0..50u64 {
            let gate = Gate::default();
            let mut group = pool.group::<Result<u32, String>>().cancel_on_error(true);
            for i in 0..2u32 {
                let gate = gate.clone();
                group
                    .submit(async move {
                        gate.wait().await;
                        Err(format!("task {i} fails"))
                    })
                    .await
                    .unwrap();
            }
            group
                .submit(async {
                    std::future::pending::<()>().await;
                    Ok(9)
                })
                .await
                .unwrap();
            gate.open();
            let all = within("the group's join", group.join_all()).await;
            assert_eq!(all.len(), 3);
            let aborted = |r: &Result<Result<u32, String>, nb_aiopool::TaskError>| {
                r.as_ref()
                    .err()
                    .and_then(|e| e.cancel_reason())
                    .is_some_and(|c| c == CancelReason::Aborted)
            };
            assert!(aborted(&all[2]), "round {round}: {all:?}");
            let failed = all[..2].iter().filter(|r| matches!(r, Ok(Err(_)))).count();
            assert!(failed >= 1, "round {round}: no failure seen: {all:?}");
            assert!(
                all[..2]
                    .iter()
                    .all(|r| matches!(r, Ok(Err(_))) || aborted(r)),
                "round {round}: {all:?}"
            );
            within("wait", pool.wait()).await;
            let s = pool.stats();
            assert_eq!(
                s.submitted,
                s.completed + s.cancelled + s.panicked,
                "round {round}: {s:?}"
            );
            assert_eq!(s.submitted, 3 * (round + 1), "{s:?}");
        }
    });
}

/// A cancel-on-error group's submit dropped while it waits for room (polled once by
/// hand): it takes no place and leaves no registry entry behind; a later failure of the
/// group's running task still aborts only what the group holds (nothing), and the room
/// is whole afterwards.
#[test]
fn a_watched_group_submit_dropped_while_it_waits_takes_nothing() {
    bounded("a watched group submit dropped while waiting", || async {
        let pool = CommonAioPool::new(1, 0);
        let gate = Gate::default();
        let mut group = pool.group::<Result<u32, String>>().cancel_on_error(true);
        {
            let gate = gate.clone();
            group
                .submit(async move {
                    gate.wait().await;
                    Err("fails".to_owned())
                })
                .await
                .unwrap();
        }
        {
            let mut waiting = Box::pin(group.submit(async { Ok(2) }));
            assert!(poll_with(&mut waiting, &hooked(&Hooks::counting())).is_pending());
        }
        assert!(pool.try_submit(async { 0 }).unwrap_err().is_full());
        gate.open();
        let all = within("the group's join", group.join_all()).await;
        assert_eq!(all.len(), 1, "{all:?}");
        assert!(matches!(all[0], Ok(Err(_))), "{all:?}");
        within("wait", pool.wait()).await;
        assert_eq!(counts(pool.stats()), (1, 1, 0, 0), "{:?}", pool.stats());
        assert_eq!(room_now(&pool).await, 1, "a place leaked");
    });
}
