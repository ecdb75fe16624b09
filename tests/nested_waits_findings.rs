//! A review of nested submission and the deadlock breaker (2026-12-05, on f6d5747): jobs
//! that submit to their own pool and await the handles, `CancelReason::WouldDeadlock`,
//! shrinks while jobs wait on each other. The regression tests of what it found, and the
//! pins of what it checked.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_util::FutureExt;
use nb_aiopool::{
    CancelReason, CommonAioPool, NoQueueAioPool, SmartAioPool, SubmitErrorKind, SubmitOptions,
    TaskError, TaskHandle,
};
use proptest::prelude::*;

type R = Result<u32, Option<CancelReason>>;

fn reason(r: Result<u32, TaskError>) -> R {
    r.map_err(|e| e.cancel_reason())
}

/// Polls `h` once inside the current task (counts the wait if in a job of its pool).
async fn poll_once(h: &mut TaskHandle<u32>) -> Poll<Result<u32, TaskError>> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *h).poll(cx))).await
}

/// A waker that, the first time it is woken, runs `hook` (on the waking thread) before it
/// wakes `inner`.
struct HookedWaker {
    inner: Waker,
    fired: Arc<AtomicBool>,
    hook: Arc<dyn Fn() + Send + Sync>,
}

impl Wake for HookedWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.fired.swap(true, Ordering::SeqCst) {
            (self.hook)();
        }
        self.inner.wake_by_ref();
    }
}

/// Awaits `h`, polling it with a waker that runs `hook` at its first wake-up; says on
/// `polled` when its first poll has left that waker with the handle (the last thing that
/// poll does: a second poll racing the wake-up could wake the job before the hook
/// returns).
async fn await_hooked(
    mut h: TaskHandle<u32>,
    hook: Arc<dyn Fn() + Send + Sync>,
    polled: tokio::sync::oneshot::Sender<()>,
) -> Result<u32, TaskError> {
    let fired = Arc::new(AtomicBool::new(false));
    let mut polled = Some(polled);
    std::future::poll_fn(move |cx| {
        let w = Waker::from(Arc::new(HookedWaker {
            inner: cx.waker().clone(),
            fired: fired.clone(),
            hook: hook.clone(),
        }));
        let r = Pin::new(&mut h).poll(&mut Context::from_waker(&w));
        if r.is_pending() {
            if let Some(tx) = polled.take() {
                let _ = tx.send(());
            }
        }
        r
    })
    .await
}

/// Finding 1: a job B waits on a task E of its pool; E ends. Until E's handle has been
/// woken (after the pool's lock, on E's thread), B still counts as waiting; a job A that
/// begins a wait on a queued task in that window, on another thread, sees every slot
/// "waiting" and its child is cancelled with `WouldDeadlock`, though B is about to go on
/// and free its slot. Here the window is held open by B's waker (run on E's thread),
/// which lets A begin its wait and waits for A's first poll of its child's handle.
#[test]
fn a_wait_on_a_task_that_just_ended_does_not_make_a_false_deadlock() {
    support::on_thread_within("the scenario", 30, || {
        let rt = support::multi_thread_of(2);
        rt.block_on(async {
            let pool = support::common_local(3, 4);
            let (e_tx, e_rx) = tokio::sync::oneshot::channel::<()>();
            let e = pool
                .submit(async move {
                    let _ = e_rx.await;
                    1u32
                })
                .await
                .unwrap();
            // A waits for `a_go`, then submits C (queued: the pool is full after the
            // shrink) and awaits it; it says when its first poll of C's handle is over.
            let (a_go_tx, a_go_rx) = tokio::sync::oneshot::channel::<()>();
            let (polled_tx, polled_rx) = std::sync::mpsc::channel::<bool>();
            let p = pool.clone();
            let a = pool
                .submit(async move {
                    let _ = a_go_rx.await;
                    let mut c = p.submit(async { 3u32 }).await.unwrap();
                    let first = poll_once(&mut c).await;
                    let _ = polled_tx.send(first.is_ready());
                    match first {
                        Poll::Ready(r) => reason(r),
                        Poll::Pending => reason(c.await),
                    }
                })
                .await
                .unwrap();
            // B awaits E; E's end wakes B's waker on E's thread, which starts A (from a
            // plain thread, so that another worker runs it) and waits for A's first poll.
            let a_go = Arc::new(Mutex::new(Some(a_go_tx)));
            let polled_rx = Arc::new(Mutex::new(Some(polled_rx)));
            let held = Arc::new(AtomicBool::new(false));
            let h = held.clone();
            let hook: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
                let go = a_go.lock().unwrap().take();
                std::thread::spawn(move || {
                    if let Some(go) = go {
                        let _ = go.send(());
                    }
                });
                if let Some(rx) = polled_rx.lock().unwrap().take() {
                    let polled = rx.recv_timeout(Duration::from_secs(10)).is_ok();
                    h.store(polled, Ordering::SeqCst);
                }
            });
            let (b_polled_tx, b_polled_rx) = tokio::sync::oneshot::channel::<()>();
            let b = pool
                // Its first poll counts the wait and leaves the hooked waker with E.
                .submit(async move { reason(await_hooked(e, hook, b_polled_tx).await) })
                .await
                .unwrap();
            b_polled_rx.await.unwrap();
            assert_eq!(pool.stats().running, 3);
            pool.set_max_concurrency(2); // E's end leaves B and A every slot
            let _ = e_tx.send(());
            let within = Duration::from_secs(10);
            let b = tokio::time::timeout(within, b).await.expect("hang: B");
            let a = tokio::time::timeout(within, a).await.expect("hang: A");
            pool.shutdown().await;
            assert!(
                held.load(Ordering::SeqCst),
                "setup: A's first poll did not come while E's end held B's wake-up"
            );
            assert_eq!(b.unwrap(), Ok(1));
            assert_eq!(
                a.unwrap(),
                Ok(3),
                "A's child was cancelled, though B (which waited on E, ended) was about to \
                 end and free its slot"
            );
        });
    });
}

/// Finding 2: a SmartAioPool job W counted a wait on its queued child C and handed C's
/// handle out of the job (here to the test); W's runtime ends: W is queued again for a
/// re-run, but its count ("W waits on C") stays, as if W still ran and waited. W's re-run,
/// alone in the pool (shrunk to one slot), submits D and awaits it: the wait is added to
/// the stale count without the check a first wait gets, so the only slot waits on a queued
/// task (for good, unless a later change of the pool happens to make it look again: a
/// hang in most runs of this scenario), where a first run is told `WouldDeadlock` at
/// once. The test looks at that first poll, which does not depend on timing.
#[test]
fn a_rerun_whose_interrupted_run_handed_a_counted_handle_away_is_still_checked() {
    support::on_thread_within("the scenario", 30, || {
        let pool = SmartAioPool::builder()
            .max_concurrency(2)
            .max_queue_size(4)
            .process_wide(false)
            .auto_shutdown(false)
            .build();
        let runs = Arc::new(AtomicUsize::new(0));
        let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel::<TaskHandle<u32>>();
        let (p, r) = (pool.clone(), runs.clone());
        let w_recipe = move || {
            let (p, out_tx) = (p.clone(), out_tx.clone());
            let n = r.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    // The pool is full (X and W run): C is queued; W's wait on it counts.
                    // (A low priority: after the runtime's end, W and X start before it.)
                    let mut c = p
                        .submit_with(|| async { 7u32 }, SubmitOptions::new().priority(-1))
                        .await
                        .unwrap();
                    assert!(poll_once(&mut c).await.is_pending(), "C is queued");
                    let _ = out_tx.send(c); // handed out of the job, still counted
                    std::future::pending::<()>().await;
                    unreachable!()
                }
                // The re-run, alone in a pool of one slot: D is queued, and the only slot
                // would wait on it. A first run's wait is refused at its first poll.
                let mut d = p.submit(|| async { 9u32 }).await.unwrap();
                match poll_once(&mut d).await {
                    Poll::Ready(r) => reason(r),
                    Poll::Pending => Ok(0), // counted: D runs once W has ended
                }
            }
        };
        let x_runs = Arc::new(AtomicUsize::new(0));
        let xr = x_runs.clone();
        let x_recipe = move || {
            let n = xr.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    std::future::pending::<()>().await; // holds a slot until the runtime ends
                }
            }
        };
        let rt1 = support::current_thread();
        let (w, c) = rt1.block_on(async {
            let mut out_rx = out_rx;
            pool.submit(x_recipe).await.unwrap().detach();
            let w = pool.submit(w_recipe).await.unwrap();
            let c = out_rx.recv().await.unwrap();
            (w, c)
        });
        drop(rt1); // W and X interrupted: queued again (before C)
        pool.set_max_concurrency(1);
        let rt2 = support::paused_runtime();
        let r = rt2.block_on(async {
            let r = tokio::time::timeout(Duration::from_secs(60), w).await;
            pool.cancel_all().await;
            r
        });
        drop(c);
        let r = r.expect("hang: W's handle");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(
            r.unwrap(),
            Err(Some(CancelReason::WouldDeadlock)),
            "W's re-run holds the only slot and its wait on its queued child D was not \
             refused (Ok(0): counted, added to the count its interrupted run left; the \
             pool is then stuck until something else makes it look again)"
        );
    });
}

/// Finding 3 (documentation; pins the limitation): a wait the pool cannot see is not
/// broken. The job never polls its child's handle itself: a spawned tokio task awaits it
/// (or a channel, a `spawn_blocking` thread's `blocking_wait`, a job of another pool), and
/// the job awaits that. Every slot then waits on a queued task of the pool, and the
/// pool hangs, as a `Semaphore` would; the docs list keys, weights and a cycle whose pick
/// never polls as the cases not broken, not waits through something else.
#[tokio::test(start_paused = true)]
async fn a_wait_through_a_spawned_task_is_not_seen_and_hangs() {
    let pool = support::common_local(1, 4);
    let p = pool.clone();
    let parent = pool
        .submit(async move {
            let child = p.submit(async { 1u32 }).await.unwrap(); // queued: no free slot
            reason(tokio::spawn(child).await.unwrap())
        })
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(60), parent).await;
    assert!(r.is_err(), "the wait was seen after all: {r:?}");
    let s = pool.stats();
    assert_eq!((s.running, s.queued), (1, 1), "{s:?}");
    pool.cancel_all().await;
}

/// Finding 3 (the same, across two pools): a job of pool 1 awaits a task of pool 2 that
/// awaits a queued task of pool 1. Pool 1's only slot waits, through pool 2, on its own
/// queued task: neither pool sees it.
#[tokio::test(start_paused = true)]
async fn a_wait_through_another_pool_is_not_seen_and_hangs() {
    let one = support::common_local(1, 4);
    let two = support::common_local(1, 4);
    let (o, t) = (one.clone(), two.clone());
    let parent = one
        .submit(async move {
            let inner = o.clone();
            let middle = t
                .submit(async move {
                    let child = inner.submit(async { 1u32 }).await.unwrap(); // queued in one
                    reason(child.await)
                })
                .await
                .unwrap();
            middle.await.map_err(|e| e.cancel_reason())
        })
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(60), parent).await;
    assert!(r.is_err(), "the wait was seen after all: {r:?}");
    assert_eq!(one.stats().queued, 1);
    two.cancel_all().await;
    one.cancel_all().await;
}

/// Pin (checked, sound): the same wait made by the job itself, through a `select!` with a
/// timer that keeps firing, is seen and broken (the handle is polled by the job).
#[tokio::test(start_paused = true)]
async fn a_wait_raced_against_a_timer_in_the_job_is_still_broken() {
    let pool = support::common_local(1, 4);
    let p = pool.clone();
    let parent = pool
        .submit(async move {
            let mut child = p.submit(async { 1u32 }).await.unwrap();
            loop {
                tokio::select! {
                    r = &mut child => return reason(r),
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
        })
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(60), parent)
        .await
        .expect("hang");
    assert_eq!(r.unwrap(), Err(Some(CancelReason::WouldDeadlock)));
    pool.shutdown().await;
    let s = pool.stats();
    assert_eq!((s.completed, s.cancelled), (1, 1), "{s:?}");
}

/// Pin (checked, sound): a job collecting its queued children with a group's `join_next`,
/// left holding the only slot by a shrink, has each wait refused in turn (`join_next`
/// polls the group's handles together: one refusal per call while the pool stays stuck),
/// gets every result, and the pool counts them.
#[tokio::test(start_paused = true)]
async fn group_join_next_of_queued_children_after_a_shrink_is_refused_in_turn() {
    let pool = support::common_local(2, 4);
    let gate = support::Gate::default();
    let g = gate.clone();
    pool.submit(async move { g.wait().await })
        .await
        .unwrap()
        .detach();
    let (queued_tx, queued_rx) = tokio::sync::oneshot::channel::<()>();
    let inner = pool.clone();
    let parent = pool
        .submit(async move {
            let mut group = inner.group();
            for i in 0..2u32 {
                group.submit(async move { i }).await.unwrap(); // queued: the pool is full
            }
            let _ = queued_tx.send(());
            let mut got = Vec::new();
            while let Some(r) = group.join_next().await {
                got.push(reason(r));
            }
            got
        })
        .await
        .unwrap();
    queued_rx.await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await; // the parent polls its group
    pool.set_max_concurrency(1);
    gate.open(); // the filler ends: the parent holds the only slot
    let got = tokio::time::timeout(Duration::from_secs(60), parent)
        .await
        .expect("hang: the parent waits on its queued children with the only slot")
        .unwrap();
    assert_eq!(
        got,
        [
            Err(Some(CancelReason::WouldDeadlock)),
            Err(Some(CancelReason::WouldDeadlock))
        ]
    );
    pool.shutdown().await;
    let s = pool.stats();
    assert_eq!(
        (s.completed, s.cancelled, s.queued, s.running),
        (2, 2, 0, 0),
        "{s:?}"
    );
}

// ----- randomised nested waits ----------------------------------------------------------
//
// Each case: one of the three pools (random sizes; SmartAioPool with random `min_workers`),
// on a paused current-thread runtime or a 2-worker multi-thread one. The test submits a
// few top-level jobs from outside, between random resizes (now, or later from a spawned
// task; shrinks below the running jobs included) and sleeps. Each job follows a random
// plan: sleep, yield, resize the pool, submit a child (its own plan, two levels deep at
// most), submit a child that first awaits one of the job's held children (a chain of
// siblings), await one held child, `select` over two (the other handle kept: counted as
// awaited, per the docs, until it ends or is dropped), await all held children at once
// (`join_all` of the handles), or drop one (detached); at the end it awaits or drops the
// rest. Checked: every handle resolves (a hang fails the case after a bounded wait); a
// top-level job always completes with its value; a child's handle gives its value or
// `WouldDeadlock`; on the current-thread runtime (where the check runs in the same poll
// as the refusal), a `WouldDeadlock` refusal happens only when the pool really is stuck
// (at least `max_concurrency` jobs running, each waiting on a task of the pool that has
// not ended: one not started, or itself waiting; none busy, but for a job holding a
// counted handle), its task is counted as cancelled when the handle says so, no job
// starts beyond the largest size, and a nested submit is refused only with
// `WouldDeadlock` and only when the pool is full; at the end, every accepted job ran at
// most once and ended exactly once (done, or cancelled as its handle said, or, its
// handle dropped unobserved, by the breaker), and the stats agree.
//
// `PROPTEST_CASES` sets the cases of each (default 96 and 24); `--nocapture` prints how
// many waits and submits were refused and shrinks went below the running jobs.

#[derive(Debug, Clone)]
enum Step {
    Sleep(u8),
    Yield,
    Child(Box<Plan>),
    /// A child that first awaits one of this job's held children (moved to it).
    Sibling(u8, Box<Plan>),
    /// `select` over two held handles; the other one is kept (still counted as awaited).
    Select(u8, u8),
    Await(u8),
    JoinAll,
    Drop(u8),
    /// `set_max_concurrency` from inside the job.
    Resize(u8),
}

#[derive(Debug, Clone)]
struct Plan {
    steps: Vec<Step>,
    /// At the end, await the children still held (else drop them).
    await_rest: bool,
}

#[derive(Debug, Clone)]
enum Drive {
    Submit(Plan),
    Resize(u8),
    /// A resize made by a spawned task after this many ticks.
    ResizeLater(u8, u8),
    Sleep(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PoolKind {
    Common,
    NoQueue,
    Smart,
}

#[derive(Debug, Clone)]
struct NestedCase {
    kind: PoolKind,
    conc: usize,
    queue: usize,
    min_workers: usize,
    drive: Vec<Drive>,
}

fn plan(depth: u32) -> BoxedStrategy<Plan> {
    let leaf = prop_oneof![
        3 => (0u8..6).prop_map(Step::Sleep),
        1 => Just(Step::Yield),
        2 => any::<u8>().prop_map(Step::Await),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Step::Select(a, b)),
        1 => Just(Step::JoinAll),
        1 => any::<u8>().prop_map(Step::Drop),
        1 => any::<u8>().prop_map(Step::Resize),
    ];
    let step = if depth == 0 {
        leaf.boxed()
    } else {
        prop_oneof![
            4 => leaf,
            3 => plan(depth - 1).prop_map(|p| Step::Child(Box::new(p))),
            1 => (any::<u8>(), plan(depth - 1)).prop_map(|(k, p)| Step::Sibling(k, Box::new(p))),
        ]
        .boxed()
    };
    (prop::collection::vec(step, 0..6), prop::bool::weighted(0.8))
        .prop_map(|(steps, await_rest)| Plan { steps, await_rest })
        .boxed()
}

fn nested_case() -> impl Strategy<Value = NestedCase> {
    let drive = prop_oneof![
        4 => plan(2).prop_map(Drive::Submit),
        1 => any::<u8>().prop_map(Drive::Resize),
        2 => (0u8..8, any::<u8>()).prop_map(|(t, k)| Drive::ResizeLater(t, k)),
        1 => (0u8..6).prop_map(Drive::Sleep),
    ];
    (
        prop_oneof![
            Just(PoolKind::Common),
            Just(PoolKind::NoQueue),
            Just(PoolKind::Smart)
        ],
        1usize..=4,
        0usize..=4,
        0usize..=4,
        prop::collection::vec(drive, 1..8),
    )
        .prop_map(|(kind, conc, queue, m, drive)| NestedCase {
            kind,
            conc,
            queue,
            min_workers: m.min(conc),
            drive,
        })
}

/// What the board knows of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
enum JobState {
    NotStarted,
    Busy,
    /// Awaiting these children (job ids).
    Waiting(Vec<usize>),
    Done,
    /// Its future was dropped before it ended (cancelled while running).
    Dropped,
    /// Its handle said `WouldDeadlock` and it never started.
    CancelledUnstarted,
}

#[derive(Debug)]
struct JobRec {
    state: JobState,
    starts: u32,
    top: bool,
    /// What its handle said: value, or the cancel reason.
    resolved: Option<R>,
    detached: bool,
    /// The job holding its handle.
    holder: Option<usize>,
    /// Children whose handles it polled and still holds (counted as awaited, per the
    /// docs, until they end or the handle is dropped).
    counted: Vec<usize>,
}

#[derive(Clone)]
enum AnyPool {
    Common(CommonAioPool),
    NoQueue(NoQueueAioPool),
    Smart(SmartAioPool),
}

struct Nest {
    pool: AnyPool,
    exact: bool,
    conc: usize,
    queue: usize,
    /// The size last set (and the largest ever).
    max_now: AtomicUsize,
    max_ever: AtomicUsize,
    /// The test's own submit may be waiting for room (a place freed goes to it first).
    driver_waiting: AtomicBool,
    closing: AtomicBool,
    jobs: Mutex<Vec<JobRec>>,
    violations: Mutex<Vec<String>>,
}

type BoxFut = Pin<Box<dyn Future<Output = u32> + Send>>;

impl Nest {
    fn violation(&self, msg: String) {
        self.violations.lock().unwrap().push(msg);
    }

    fn new_job(&self, parent: Option<usize>) -> usize {
        let mut jobs = self.jobs.lock().unwrap();
        jobs.push(JobRec {
            state: JobState::NotStarted,
            starts: 0,
            top: parent.is_none(),
            resolved: None,
            detached: false,
            holder: parent,
            counted: Vec::new(),
        });
        jobs.len() - 1
    }

    fn set(&self, id: usize, s: JobState) {
        self.jobs.lock().unwrap()[id].state = s;
    }

    fn stats(&self) -> nb_aiopool::PoolStats {
        match &self.pool {
            AnyPool::Common(p) => p.stats(),
            AnyPool::NoQueue(p) => p.stats(),
            AnyPool::Smart(p) => p.stats(),
        }
    }

    /// A resize to 1..=conc+1, picked by `k`.
    fn resize_to(&self, k: u8) {
        let to = 1 + k as usize % (self.conc + 1);
        if to < self.stats().running {
            COVER[2].fetch_add(1, Ordering::Relaxed);
        }
        self.resize(to)
    }

    fn resize(&self, n: usize) {
        self.max_now.store(n, Ordering::SeqCst);
        self.max_ever.fetch_max(n, Ordering::SeqCst);
        match &self.pool {
            AnyPool::Common(p) => p.set_max_concurrency(n),
            AnyPool::NoQueue(p) => p.set_max_concurrency(n),
            AnyPool::Smart(p) => p.set_max_concurrency(n),
        }
    }

    async fn shutdown(&self) {
        match &self.pool {
            AnyPool::Common(p) => p.shutdown().await,
            AnyPool::NoQueue(p) => p.shutdown().await,
            AnyPool::Smart(p) => p.shutdown().await,
        }
    }

    /// Submits job `id` with plan `plan`.
    async fn submit(
        self: &Arc<Self>,
        id: usize,
        plan: Arc<Plan>,
        first: Handed,
    ) -> Result<TaskHandle<u32>, SubmitErrorKind> {
        let (me, p) = (self.clone(), plan.clone());
        match &self.pool {
            AnyPool::Common(pool) => pool
                .submit(run_job(me, id, p, first))
                .await
                .map_err(|e| e.kind()),
            AnyPool::NoQueue(pool) => pool
                .submit(run_job(me, id, p, first))
                .await
                .map_err(|e| e.kind()),
            AnyPool::Smart(pool) => pool
                .submit(move || run_job(me.clone(), id, p.clone(), first.clone()))
                .await
                .map_err(|e| e.kind()),
        }
    }

    /// Called (current-thread runtime) in the poll where job `waiter`'s handle of `child`
    /// said `WouldDeadlock`: the pool must be stuck.
    fn check_refusal(&self, waiter: usize, child: usize) {
        let jobs = self.jobs.lock().unwrap();
        let max = self.max_now.load(Ordering::SeqCst);
        let mut problems = Vec::new();
        match &jobs[child].state {
            JobState::NotStarted | JobState::Waiting(_) => {}
            s => problems.push(format!("the refused child {child} was {s:?}")),
        }
        let live: Vec<usize> = (0..jobs.len())
            .filter(|&j| matches!(jobs[j].state, JobState::Busy | JobState::Waiting(_)))
            .collect();
        if live.len() < max {
            problems.push(format!(
                "only {} jobs running, max_concurrency {max}",
                live.len()
            ));
        }
        // Counted as waiting on a child (per the docs, also while busy with a polled
        // handle held) that has not ended and is not busy.
        let unfinished = |c: usize| {
            c == child
                || match &jobs[c].state {
                    JobState::NotStarted | JobState::Waiting(_) => true,
                    JobState::Busy => !jobs[c].counted.is_empty(),
                    _ => false,
                }
        };
        for &j in &live {
            let mut on = jobs[j].counted.clone();
            if let JobState::Waiting(w) = &jobs[j].state {
                on.extend(w);
            }
            if on.is_empty() {
                problems.push(format!("job {j} is busy (not waiting)"));
            } else if !on.iter().any(|&c| unfinished(c)) {
                let states: Vec<_> = on.iter().map(|&c| (c, &jobs[c].state)).collect();
                problems.push(format!("job {j} waits on ended or busy tasks: {states:?}"));
            }
        }
        if !problems.is_empty() {
            let all = format!(
                "{:?}",
                jobs.iter()
                    .enumerate()
                    .map(|(i, r)| (i, &r.state))
                    .collect::<Vec<_>>()
            );
            drop(jobs);
            self.violation(format!(
                "job {waiter}'s wait on {child} refused with WouldDeadlock, yet the pool was \
                 not stuck: {problems:?}; jobs: {all}"
            ));
        }
    }

    /// Records what child `child`'s handle said (in the poll that took it).
    fn resolved(&self, waiter: usize, child: usize, r: &Result<u32, TaskError>) {
        let r = match r {
            Ok(v) => Ok(*v),
            Err(e) => Err(e.cancel_reason()),
        };
        let refused = r == Err(Some(CancelReason::WouldDeadlock));
        {
            let mut jobs = self.jobs.lock().unwrap();
            let rec = &mut jobs[child];
            if rec.resolved.is_some() {
                drop(jobs);
                self.violation(format!("the handle of job {child} resolved twice"));
                return;
            }
            rec.resolved = Some(r);
            match r {
                Ok(v) if v == child as u32 => {}
                Ok(v) => {
                    drop(jobs);
                    self.violation(format!("job {child}'s handle gave {v}"));
                    return;
                }
                Err(Some(CancelReason::WouldDeadlock)) => {}
                Err(other) => {
                    drop(jobs);
                    self.violation(format!("job {child}'s handle said {other:?}"));
                    return;
                }
            }
        }
        // A handle counted by an earlier `select` and held while the job did other work:
        // the breaker may have cancelled its task then (the job counts as waiting on it,
        // per the docs), and the job sees it only now, when the picture may have changed.
        let was_counted = {
            let mut jobs = self.jobs.lock().unwrap();
            let was = jobs[waiter].counted.contains(&child);
            jobs[waiter].counted.retain(|&x| x != child);
            was
        };
        if refused {
            COVER[0].fetch_add(1, Ordering::Relaxed);
        }
        if refused && self.exact && !was_counted {
            self.check_refusal(waiter, child);
        }
        if refused {
            let mut jobs = self.jobs.lock().unwrap();
            if jobs[child].state == JobState::NotStarted {
                jobs[child].state = JobState::CancelledUnstarted;
                let unstarted = jobs
                    .iter()
                    .filter(|r| r.state == JobState::CancelledUnstarted && r.resolved.is_some())
                    .count() as u64
                    - jobs
                        .iter()
                        .filter(|r| r.resolved == Some(Err(None)))
                        .count() as u64;
                drop(jobs);
                // The handle resolved: its task is counted (it never started, so this is
                // no abort of a running task, which is counted when dropped).
                let s = self.stats();
                if self.exact && s.cancelled < unstarted {
                    self.violation(format!(
                        "job {child}'s handle said WouldDeadlock, but the stats count {} \
                         cancelled of {unstarted} such tasks: {s:?}",
                        s.cancelled
                    ));
                }
            }
        }
    }
}

/// Marks the job dropped if its future goes before it ends.
struct DropMark(Arc<Nest>, usize, bool);

impl Drop for DropMark {
    fn drop(&mut self) {
        if !self.2 {
            self.0.set(self.1, JobState::Dropped);
        }
    }
}

/// A handle handed to a child (`Step::Sibling`), taken by its run.
type Handed = Arc<Mutex<Option<(usize, TaskHandle<u32>)>>>;

fn run_job(nest: Arc<Nest>, id: usize, plan: Arc<Plan>, first: Handed) -> BoxFut {
    Box::pin(async move {
        {
            let mut jobs = nest.jobs.lock().unwrap();
            jobs[id].starts += 1;
            jobs[id].state = JobState::Busy;
            let running = jobs
                .iter()
                .filter(|r| matches!(r.state, JobState::Busy | JobState::Waiting(_)))
                .count();
            let ever = nest.max_ever.load(Ordering::SeqCst);
            if running > ever {
                drop(jobs);
                nest.violation(format!(
                    "job {id} started with {running} running, max {ever}"
                ));
            }
        }
        let mut mark = DropMark(nest.clone(), id, false);
        let mut held: Vec<(usize, TaskHandle<u32>)> = Vec::new();
        let handed = first.lock().unwrap().take();
        let mut steps: Vec<Option<&Step>> = plan.steps.iter().map(Some).collect();
        steps.push(None);
        if let Some(h) = handed {
            held.push(h);
            steps.insert(0, Some(&Step::Await(0)));
        }
        for step in steps {
            let step = match step {
                Some(s) => s.clone(),
                None if plan.await_rest => Step::JoinAll,
                None => {
                    let mut jobs = nest.jobs.lock().unwrap();
                    for (c, _) in held.drain(..) {
                        jobs[c].detached = true;
                    }
                    jobs[id].counted.clear();
                    break;
                }
            };
            match step {
                Step::Sleep(t) => tokio::time::sleep(Duration::from_millis(t.into())).await,
                Step::Yield => tokio::task::yield_now().await,
                Step::Child(_) | Step::Sibling(..) => {
                    let c = nest.new_job(Some(id));
                    let handed: Handed = Arc::new(Mutex::new(None));
                    let p = match step {
                        Step::Child(p) => p,
                        Step::Sibling(k, p) => {
                            if !held.is_empty() {
                                let (s, h) = held.remove(k as usize % held.len());
                                let mut jobs = nest.jobs.lock().unwrap();
                                jobs[s].holder = Some(c);
                                jobs[id].counted.retain(|&x| x != s);
                                *handed.lock().unwrap() = Some((s, h));
                            }
                            p
                        }
                        _ => unreachable!(),
                    };
                    let r = nest.submit(c, Arc::new(*p), handed.clone()).await;
                    if r.is_err() {
                        // Refused: the handed handle comes back (the job was dropped unrun).
                        if let Some((s, h)) = handed.lock().unwrap().take() {
                            nest.jobs.lock().unwrap()[s].holder = Some(id);
                            held.push((s, h));
                        }
                    }
                    match r {
                        Ok(h) => held.push((c, h)),
                        Err(kind) => {
                            if kind == SubmitErrorKind::Closed
                                && nest.closing.load(Ordering::SeqCst)
                            {
                                // Shut down while the job ran: fine.
                            } else if kind != SubmitErrorKind::WouldDeadlock {
                                nest.violation(format!("job {id}'s child refused: {kind:?}"));
                            } else if nest.exact && !nest.driver_waiting.load(Ordering::SeqCst) {
                                let s = nest.stats();
                                let room = nest.max_now.load(Ordering::SeqCst) + nest.queue;
                                if s.queued + s.running < room {
                                    nest.violation(format!(
                                        "job {id}'s child refused as WouldDeadlock with room: \
                                         {s:?}, room {room}"
                                    ));
                                }
                            }
                            COVER[1].fetch_add(1, Ordering::Relaxed);
                            nest.jobs.lock().unwrap()[c].state = JobState::CancelledUnstarted;
                            nest.jobs.lock().unwrap()[c].resolved = Some(Err(None));
                        }
                    }
                }
                Step::Await(k) => {
                    if held.is_empty() {
                        continue;
                    }
                    let (c, h) = held.remove(k as usize % held.len());
                    nest.set(id, JobState::Waiting(vec![c]));
                    let r = h.await;
                    nest.resolved(id, c, &r);
                    nest.set(id, JobState::Busy);
                }
                Step::JoinAll => {
                    if held.is_empty() {
                        continue;
                    }
                    let all: Vec<(usize, TaskHandle<u32>)> = std::mem::take(&mut held);
                    nest.set(id, JobState::Waiting(all.iter().map(|(c, _)| *c).collect()));
                    let n2 = nest.clone();
                    futures_util::future::join_all(all.into_iter().map(|(c, h)| {
                        let n3 = n2.clone();
                        h.inspect(move |r| {
                            n3.resolved(id, c, r);
                            // The waiter waits on the rest only.
                            let mut jobs = n3.jobs.lock().unwrap();
                            if let JobState::Waiting(on) = &mut jobs[id].state {
                                on.retain(|&x| x != c);
                            }
                        })
                    }))
                    .await;
                    nest.set(id, JobState::Busy);
                }
                Step::Resize(k) => nest.resize_to(k),
                Step::Select(a, b) => {
                    if held.len() < 2 {
                        continue;
                    }
                    let (c1, mut h1) = held.remove(a as usize % held.len());
                    let (c2, mut h2) = held.remove(b as usize % held.len());
                    nest.set(id, JobState::Waiting(vec![c1, c2]));
                    let (won, r) = match futures_util::future::select(&mut h1, &mut h2).await {
                        futures_util::future::Either::Left((r, _)) => (c1, r),
                        futures_util::future::Either::Right((r, _)) => (c2, r),
                    };
                    nest.resolved(id, won, &r);
                    // The other handle was polled: counted until it ends or is dropped.
                    let (c, h) = if won == c1 { (c2, h2) } else { (c1, h1) };
                    nest.jobs.lock().unwrap()[id].counted.push(c);
                    held.push((c, h));
                    nest.set(id, JobState::Busy);
                }
                Step::Drop(k) => {
                    if !held.is_empty() {
                        let (c, _) = held.remove(k as usize % held.len());
                        let mut jobs = nest.jobs.lock().unwrap();
                        jobs[c].detached = true;
                        jobs[id].counted.retain(|&x| x != c);
                    }
                }
            }
        }
        mark.2 = true;
        nest.set(id, JobState::Done);
        id as u32
    })
}

/// How often the cases refused a wait, refused a nested submit, shrank: printed with
/// `--nocapture`, to see that the cases reach what they check.
static COVER: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];

fn run_nested(case: NestedCase, multi: bool) {
    COVER[3].fetch_add(1, Ordering::Relaxed);
    if COVER[3].load(Ordering::Relaxed) % 50 == 0 {
        println!(
            "cases {}: waits refused {}, submits refused {}, shrinks below the running {}",
            COVER[3].load(Ordering::Relaxed),
            COVER[0].load(Ordering::Relaxed),
            COVER[1].load(Ordering::Relaxed),
            COVER[2].load(Ordering::Relaxed)
        );
    }
    let rt = if multi {
        support::multi_thread_of(2)
    } else {
        support::paused_runtime()
    };
    let pool = match case.kind {
        PoolKind::Common => AnyPool::Common(support::common_local(case.conc, case.queue)),
        PoolKind::NoQueue => AnyPool::NoQueue(
            NoQueueAioPool::builder()
                .max_concurrency(case.conc)
                .process_wide(false)
                .build(),
        ),
        PoolKind::Smart => AnyPool::Smart(
            SmartAioPool::builder()
                .max_concurrency(case.conc)
                .max_queue_size(case.queue)
                .min_workers(case.min_workers)
                .idle_timeout(Duration::from_millis(3))
                .process_wide(false)
                .auto_shutdown(false)
                .build(),
        ),
    };
    let queue = if case.kind == PoolKind::NoQueue {
        0
    } else {
        case.queue
    };
    let nest = Arc::new(Nest {
        pool,
        exact: !multi,
        conc: case.conc,
        queue,
        max_now: AtomicUsize::new(case.conc),
        max_ever: AtomicUsize::new(case.conc),
        driver_waiting: AtomicBool::new(false),
        closing: AtomicBool::new(false),
        jobs: Mutex::new(Vec::new()),
        violations: Mutex::new(Vec::new()),
    });
    let patience = if multi {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(100_000)
    };
    let n = nest.clone();
    let outcome = rt.block_on(async move {
        let mut tops = Vec::new();
        for (i, d) in case.drive.iter().enumerate() {
            match d {
                Drive::Submit(p) => {
                    let id = n.new_job(None);
                    n.driver_waiting.store(true, Ordering::SeqCst);
                    let first = Handed::default();
                    let r =
                        tokio::time::timeout(patience, n.submit(id, Arc::new(p.clone()), first))
                            .await;
                    n.driver_waiting.store(false, Ordering::SeqCst);
                    match r {
                        Ok(Ok(h)) => tops.push((id, h)),
                        Ok(Err(kind)) => return Err(format!("top job {id} refused: {kind:?}")),
                        Err(_) => {
                            return Err(format!("hang: drive step {i}: submitting top job {id}"))
                        }
                    }
                }
                Drive::Resize(k) => n.resize_to(*k),
                Drive::ResizeLater(t, k) => {
                    let (n2, t, k) = (n.clone(), *t, *k);
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(t.into())).await;
                        n2.resize_to(k);
                    });
                }
                Drive::Sleep(t) => tokio::time::sleep(Duration::from_millis((*t).into())).await,
            }
        }
        for (id, h) in tops {
            match tokio::time::timeout(patience, h).await {
                Ok(Ok(v)) if v == id as u32 => n.jobs.lock().unwrap()[id].resolved = Some(Ok(v)),
                Ok(r) => return Err(format!("top job {id}: {:?}", reason(r))),
                Err(_) => return Err(format!("hang: top job {id}'s handle")),
            }
        }
        n.closing.store(true, Ordering::SeqCst);
        if tokio::time::timeout(patience, n.shutdown()).await.is_err() {
            return Err("hang: shutdown".into());
        }
        Ok(n.stats())
    });
    let jobs = nest.jobs.lock().unwrap();
    let states: Vec<_> = jobs
        .iter()
        .enumerate()
        .map(|(i, r)| (i, &r.state))
        .collect();
    let stats = match outcome {
        Ok(s) => s,
        Err(e) => panic!("{e}; stats {:?}; jobs {states:?}", nest.stats()),
    };
    let violations = nest.violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "violations: {violations:#?}");
    let mut submitted = 0u64;
    let mut done = 0u64;
    let mut cancelled = 0u64;
    // Its handle is nobody's: detached, or held by a job that was dropped or never ran.
    let unheld = |r: &JobRec| {
        r.detached
            || r.holder.is_some_and(|p| {
                matches!(
                    jobs[p].state,
                    JobState::Dropped | JobState::CancelledUnstarted
                )
            })
    };
    for (i, r) in jobs.iter().enumerate() {
        assert!(r.starts <= 1, "job {i} started {} times", r.starts);
        if r.resolved == Some(Err(None)) {
            continue; // refused at submit
        }
        submitted += 1;
        match (&r.state, &r.resolved) {
            (JobState::Done, Some(Ok(_))) => done += 1,
            (JobState::Done, None)
                if unheld(r) =>
            {
                done += 1
            }
            (JobState::CancelledUnstarted | JobState::Dropped, Some(Err(Some(CancelReason::WouldDeadlock)))) => cancelled += 1,
            // Its handle, counted by a select and then held while its job did other work,
            // was dropped unpolled: the breaker may have cancelled it (the TaskHandle docs:
            // such a job counts as waiting; "if it polls none of them, the newest such task
            // is cancelled"). The stats below must say so.
            (JobState::NotStarted | JobState::Dropped, None)
                if unheld(r) =>
            {
                cancelled += 1
            }
            (s, res) => panic!(
                "job {i} (top: {}, detached: {}) ended {s:?}, its handle said {res:?}; jobs {states:?}",
                r.top, r.detached
            ),
        }
    }
    assert_eq!(
        (stats.submitted, stats.completed, stats.cancelled, stats.panicked, stats.queued, stats.running),
        (submitted, done, cancelled, 0, 0, 0),
        "stats (submitted, completed, cancelled, panicked, queued, running) disagree with the jobs: {stats:?}; jobs {states:?}"
    );
}

fn nested_config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(nested_config(96))]

    #[test]
    fn nested_waits_current_thread(case in nested_case()) {
        run_nested(case, false);
    }
}

proptest! {
    #![proptest_config(nested_config(24))]

    #[test]
    fn nested_waits_multi_thread(case in nested_case()) {
        run_nested(case, true);
    }
}
