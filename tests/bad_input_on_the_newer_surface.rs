//! Bad and extreme input for the surface added after `tests/bad_input.rs`: `SubmitOptions`
//! at their extremes, rate limits, task groups and map streams at their edges, and the
//! pools' calls made from the wrong places (a task's output's `Drop`, a recipe building
//! its future, a panic hook, a `Drop` that a runtime's shutdown runs).
//!
//! Each test says what the user does, what the docs promise, and what happened ("Pinned:"
//! for a behaviour that held and is worth keeping).

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{FusedStream, StreamExt};
use nb_aiopool::{
    CancelReason, CommonAioPool, NoQueueAioPool, SmartAioPool, SubmitErrorKind, SubmitOptions,
};
use support::{on_thread_within, per_pool, within, Gate, Pool};

fn common(c: usize, q: usize) -> nb_aiopool::CommonAioPoolBuilder {
    CommonAioPool::builder()
        .max_concurrency(c)
        .max_queue_size(q)
        .process_wide(false)
}

fn no_queue(c: usize) -> nb_aiopool::NoQueueAioPoolBuilder {
    NoQueueAioPool::builder()
        .max_concurrency(c)
        .process_wide(false)
}

fn smart(c: usize, q: usize) -> nb_aiopool::SmartAioPoolBuilder {
    SmartAioPool::builder()
        .max_concurrency(c)
        .max_queue_size(q)
        .process_wide(false)
        .auto_shutdown(false)
}

// ----- SubmitOptions: priority ----------------------------------------------------------

/// The user queues tasks with `priority(i32::MIN)`, `priority(0)`, `priority(-1)` and two
/// of `priority(i32::MAX)` behind a busy slot. `SubmitOptions::priority` says "Higher runs
/// first; FIFO among equal priorities", whatever the value.
///
/// Pinned: CommonAioPool and SmartAioPool start them i32::MAX (in submission order), 0,
/// -1, i32::MIN.
#[tokio::test(flavor = "current_thread")]
async fn priorities_at_the_i32_extremes_start_highest_first() {
    let prios = [i32::MIN, 0, i32::MAX, -1, i32::MAX];
    let want = vec![2usize, 4, 1, 3, 0];
    for (pool, _) in Pool::all(1, 10) {
        let name = pool.name();
        if name == "no_queue" {
            continue; // no queue: see the next test
        }
        let order = Arc::new(Mutex::new(Vec::new()));
        let gate = Gate::new();
        let busy = per_pool!(&pool, |p| p.submit(gate.wait()).await.unwrap(), |p| {
            let g = gate.clone();
            p.submit(move || g.wait()).await.unwrap()
        });
        let mut handles = Vec::new();
        for (i, &prio) in prios.iter().enumerate() {
            let opts = SubmitOptions::new().priority(prio);
            let order = order.clone();
            let h = per_pool!(
                &pool,
                |p| p
                    .submit_with(async move { order.lock().unwrap().push(i) }, opts)
                    .await
                    .unwrap(),
                |p| p
                    .submit_with(
                        move || {
                            let order = order.clone();
                            async move { order.lock().unwrap().push(i) }
                        },
                        opts
                    )
                    .await
                    .unwrap()
            );
            handles.push(h);
        }
        gate.open();
        within("the busy task", busy).await.unwrap();
        for h in handles {
            within("a prioritised task", h).await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            want,
            "{name}: tasks with priorities {prios:?} did not start highest first, FIFO among equals"
        );
    }
}

/// The user has a full `NoQueueAioPool` and five submitters waiting with the priorities of
/// the test above. `SubmitOptions::priority`: "a higher one gets the next room first
/// (first come, first served among equals), also in a NoQueueAioPool".
///
/// Pinned: the room goes i32::MAX (in arrival order), 0, -1, i32::MIN.
#[tokio::test(flavor = "current_thread")]
async fn no_queue_waiters_at_the_i32_extremes_are_served_highest_first() {
    let prios = [i32::MIN, 0, i32::MAX, -1, i32::MAX];
    let pool = no_queue(1).build();
    let gate = Gate::new();
    let busy = pool.submit(gate.wait()).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for (i, &prio) in prios.iter().enumerate() {
        let (pool, order) = (pool.clone(), order.clone());
        waiters.push(tokio::spawn(async move {
            let opts = SubmitOptions::new().priority(prio);
            pool.submit_with(async move { order.lock().unwrap().push(i) }, opts)
                .await
                .unwrap()
                .await
                .unwrap()
        }));
        // Let it register in the line before the next one comes.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
    }
    gate.open();
    within("the busy task", busy).await.unwrap();
    for w in waiters {
        within("a waiting submitter", w).await.unwrap();
    }
    assert_eq!(
        *order.lock().unwrap(),
        vec![2usize, 4, 1, 3, 0],
        "waiting submitters with priorities {prios:?} were not served highest first"
    );
}

// ----- SubmitOptions: weight ------------------------------------------------------------

/// The user submits `weight(u32::MAX)` to pools with `weight_capacity(3)` and with
/// `weight_capacity(u64::MAX)`. `submit_with` / `try_submit_with` docs: "TooHeavy when
/// the weight exceeds the pool's weight_capacity; the task is handed back either way".
///
/// Pinned: on all three pools, the heavy task is refused with `TooHeavy` by both calls and
/// comes back (it runs when awaited by hand), and the same weight fits `u64::MAX`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_above_the_capacity_is_too_heavy_and_handed_back_on_every_pool() {
    let heavy = || SubmitOptions::new().weight(u32::MAX);
    let pools = |cap: u64| {
        vec![
            Pool::Common(common(2, 2).weight_capacity(cap).build()),
            Pool::NoQueue(no_queue(2).weight_capacity(cap).build()),
            Pool::Smart(smart(2, 2).weight_capacity(cap).build()),
        ]
    };
    for pool in pools(3) {
        let name = pool.name();
        per_pool!(
            &pool,
            |p| {
                let e = p.submit_with(async { 41 }, heavy()).await.unwrap_err();
                assert!(
                    e.is_too_heavy(),
                    "{name}: submit_with said {:?}, not TooHeavy",
                    e.kind()
                );
                assert_eq!(
                    e.into_inner().await,
                    41,
                    "{name}: the task handed back is not the one submitted"
                );
                let e = p.try_submit_with(async { 42 }, heavy()).unwrap_err();
                assert!(
                    e.is_too_heavy(),
                    "{name}: try_submit_with said {:?}, not TooHeavy",
                    e.kind()
                );
                assert_eq!(
                    e.into_inner().await,
                    42,
                    "{name}: the task handed back is not the one submitted"
                );
            },
            |p| {
                let e = p.submit_with(|| async { 41 }, heavy()).await.unwrap_err();
                assert!(
                    e.is_too_heavy(),
                    "{name}: submit_with said {:?}, not TooHeavy",
                    e.kind()
                );
                assert_eq!(
                    e.into_inner()().await,
                    41,
                    "{name}: the recipe handed back is not the one submitted"
                );
                let e = p.try_submit_with(|| async { 42 }, heavy()).unwrap_err();
                assert!(
                    e.is_too_heavy(),
                    "{name}: try_submit_with said {:?}, not TooHeavy",
                    e.kind()
                );
                assert_eq!(
                    e.into_inner()().await,
                    42,
                    "{name}: the recipe handed back is not the one submitted"
                );
            }
        );
        let s = per_pool!(&pool, |p| p.stats(), |p| p.stats());
        assert_eq!(
            s.submitted, 0,
            "{name}: a refused heavy task was counted as submitted"
        );
    }
    for pool in pools(u64::MAX) {
        let name = pool.name();
        let v = per_pool!(
            &pool,
            |p| within(
                "a task of weight u32::MAX",
                p.submit_with(async { 7 }, heavy()).await.unwrap()
            )
            .await,
            |p| within(
                "a task of weight u32::MAX",
                p.submit_with(|| async { 7 }, heavy()).await.unwrap()
            )
            .await
        );
        assert_eq!(
            v.unwrap(),
            7,
            "{name}: a task of weight u32::MAX did not run under weight_capacity(u64::MAX)"
        );
    }
}

/// The user gives a task `weight(0)` in a pool with `weight_capacity(1)` whose one unit is
/// taken by a running task. `weight`: "How much of the pool's weight_capacity the task
/// takes while it runs"; the README: "the running tasks' weights never sum above n".
///
/// Pinned: a task of weight 0 takes nothing, so it starts beside the running one (the sum
/// stays 1), on all three pools.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_of_zero_takes_no_capacity() {
    for pool in [
        Pool::Common(common(4, 4).weight_capacity(1).build()),
        Pool::NoQueue(no_queue(4).weight_capacity(1).build()),
        Pool::Smart(smart(4, 4).weight_capacity(1).build()),
    ] {
        let name = pool.name();
        let gate = Gate::new();
        let holder = per_pool!(&pool, |p| p.submit(gate.wait()).await.unwrap(), |p| {
            let g = gate.clone();
            p.submit(move || g.wait()).await.unwrap()
        });
        let light = per_pool!(
            &pool,
            |p| p
                .submit_with(async { 3 }, SubmitOptions::new().weight(0))
                .await
                .unwrap(),
            |p| p
                .submit_with(|| async { 3 }, SubmitOptions::new().weight(0))
                .await
                .unwrap()
        );
        let v = within(
            &format!("{name}: a task of weight 0 beside a full weight capacity"),
            light,
        )
        .await;
        assert_eq!(v.unwrap(), 3, "{name}: the weight-0 task failed");
        gate.open();
        within("the holder", holder).await.unwrap();
    }
}

// ----- SubmitOptions: timeout -----------------------------------------------------------

/// The user submits with `timeout(Duration::ZERO)`: to a pool with room, and to a full
/// one. `timeout`: "Gives up waiting for room after `timeout`: the submit fails with
/// TimedOut and hands the task back"; a submit that finds room makes no timer.
///
/// Pinned: with room the task is accepted and runs; full, the submit fails at once with
/// `TimedOut` and the task comes back, on all three pools; nothing is counted submitted.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_zero_timeout_accepts_with_room_and_times_out_at_once_when_full() {
    for (pool, _) in Pool::all(1, 0) {
        let name = pool.name();
        let zero = || SubmitOptions::new().timeout(Duration::ZERO);
        let v = per_pool!(
            &pool,
            |p| p.submit_with(async { 1 }, zero()).await.unwrap().await,
            |p| p.submit_with(|| async { 1 }, zero()).await.unwrap().await
        );
        assert_eq!(
            v.unwrap(),
            1,
            "{name}: a zero timeout with room did not run the task"
        );
        let gate = Gate::new();
        let busy = per_pool!(&pool, |p| p.submit(gate.wait()).await.unwrap(), |p| {
            let g = gate.clone();
            p.submit(move || g.wait()).await.unwrap()
        });
        let t0 = tokio::time::Instant::now();
        per_pool!(
            &pool,
            |p| {
                let e = p.submit_with(async { 2 }, zero()).await.unwrap_err();
                assert!(
                    e.is_timed_out(),
                    "{name}: a full pool's zero timeout said {:?}",
                    e.kind()
                );
                assert_eq!(
                    e.into_inner().await,
                    2,
                    "{name}: the timed-out task was not handed back"
                );
            },
            |p| {
                let e = p.submit_with(|| async { 2 }, zero()).await.unwrap_err();
                assert!(
                    e.is_timed_out(),
                    "{name}: a full pool's zero timeout said {:?}",
                    e.kind()
                );
                assert_eq!(
                    e.into_inner()().await,
                    2,
                    "{name}: the timed-out recipe was not handed back"
                );
            }
        );
        assert_eq!(
            t0.elapsed(),
            Duration::ZERO,
            "{name}: a zero timeout waited"
        );
        let s = per_pool!(&pool, |p| p.stats(), |p| p.stats());
        assert_eq!(
            s.submitted, 2,
            "{name}: the timed-out task was counted as submitted"
        );
        gate.open();
        busy.await.unwrap();
    }
}

/// The user submits with `timeout(Duration::MAX)` ("wait as long as it takes", spelled
/// out) to a full pool. No `# Panics` section of `submit_with` mentions a long timeout.
///
/// Pinned: no overflow panic; the submit waits, and is accepted when the room comes, on
/// all three pools (paused time: the runtime idles with the timer armed ~30 years out).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_duration_max_timeout_waits_for_room_without_panicking() {
    for (pool, _) in Pool::all(1, 0) {
        let name = pool.name();
        let gate = Gate::new();
        let busy = per_pool!(&pool, |p| p.submit(gate.wait()).await.unwrap(), |p| {
            let g = gate.clone();
            p.submit(move || g.wait()).await.unwrap()
        });
        let opener = {
            let gate = gate.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                gate.open();
            })
        };
        let max = SubmitOptions::new().timeout(Duration::MAX);
        let v = per_pool!(
            &pool,
            |p| p.submit_with(async { 5 }, max).await.unwrap().await,
            |p| p.submit_with(|| async { 5 }, max).await.unwrap().await
        );
        assert_eq!(
            v.unwrap(),
            5,
            "{name}: a Duration::MAX timeout did not wait for room"
        );
        busy.await.unwrap();
        opener.await.unwrap();
    }
}

// ----- rate limits ------------------------------------------------------------------------

/// The user builds each pool with `rate_limit(0, 1s)` and with `rate_limit(5,
/// Duration::ZERO)`. `rate_limit`'s `# Panics`: "build panics if count is 0 or per is
/// zero".
///
/// Pinned: each `build` panics with the crate's message naming `rate_limit` and the values.
#[test]
fn zero_rate_limits_panic_at_build_on_every_pool() {
    let cases: [(u32, Duration); 3] = [
        (0, Duration::from_secs(1)),
        (5, Duration::ZERO),
        (0, Duration::ZERO),
    ];
    for (count, per) in cases {
        type Build = Box<dyn FnOnce() + std::panic::UnwindSafe>;
        let builds: [(&str, Build); 3] = [
            (
                "common",
                Box::new(move || drop(common(1, 1).rate_limit(count, per).build())),
            ),
            (
                "no_queue",
                Box::new(move || drop(no_queue(1).rate_limit(count, per).build())),
            ),
            (
                "smart",
                Box::new(move || drop(smart(1, 1).rate_limit(count, per).build())),
            ),
        ];
        for (name, build) in builds {
            let p = std::panic::catch_unwind(build)
                .err()
                .unwrap_or_else(|| panic!("{name}: rate_limit({count}, {per:?}) was accepted"));
            let msg = support::panic_message(&*p);
            assert!(
                msg.starts_with("nb_aiopool: rate_limit(") && msg.contains("above zero"),
                "{name}: rate_limit({count}, {per:?}) panicked with {msg:?}, not the crate's message"
            );
        }
    }
}

// ----- groups -------------------------------------------------------------------------------

/// The user joins a group that never had a task, and joins again after it emptied.
/// `join_next` docs ("None once the group is empty", as tokio's `JoinSet`).
///
/// Pinned: `join_next`, `join_next_with_id` and `poll_join_next` give `None` at once,
/// every time; `join_all` gives an empty vector; for both group types.
#[tokio::test(flavor = "current_thread")]
async fn joining_an_empty_group_returns_none_at_once_every_time() {
    let pool = common(1, 1).build();
    let mut g = pool.group::<u32>();
    for _ in 0..3 {
        assert!(within("join_next of an empty group", g.join_next())
            .await
            .is_none());
        assert!(
            within("join_next_with_id of an empty group", g.join_next_with_id())
                .await
                .is_none()
        );
        let polled =
            futures_util::future::poll_fn(|cx| std::task::Poll::Ready(g.poll_join_next(cx))).await;
        assert!(
            polled.is_ready(),
            "poll_join_next of an empty group was Pending"
        );
    }
    g.submit(async { 1 }).await.unwrap();
    assert_eq!(g.join_next().await.unwrap().unwrap(), 1);
    assert!(within("join_next after the last task", g.join_next())
        .await
        .is_none());
    assert!(within("join_all of an emptied group", g.join_all())
        .await
        .is_empty());

    let spool = smart(1, 1).build();
    let mut sg = spool.group::<u32>();
    assert!(within("smart join_next of an empty group", sg.join_next())
        .await
        .is_none());
    sg.submit(|| async { 2 }).await.unwrap();
    assert_eq!(sg.join_next().await.unwrap().unwrap(), 2);
    assert!(
        within("smart join_next after the last task", sg.join_next())
            .await
            .is_none()
    );
    assert!(within("smart join_all", sg.join_all()).await.is_empty());
}

// ----- map streams --------------------------------------------------------------------------

/// The user polls a map stream again after it ended (`None`), as `select!` loops do.
/// `MapUnordered`/`MapOrdered` implement `FusedStream`.
///
/// Pinned: every later poll gives `None` at once and `is_terminated()` says `true`, on all
/// three pools, for both streams.
#[tokio::test(flavor = "current_thread")]
async fn a_map_stream_polled_after_its_end_stays_ended() {
    for (pool, _) in Pool::all(2, 2) {
        let name = pool.name();
        let mut s = pool.unordered(futures_util::stream::iter(0..5u32), |i| async move { i });
        let mut n = 0;
        while let Some(r) = within("an unordered result", s.next()).await {
            r.unwrap();
            n += 1;
        }
        assert_eq!(n, 5, "{name}: unordered lost results");
        assert!(
            s.is_terminated(),
            "{name}: an ended unordered stream says it is not terminated"
        );
        for _ in 0..3 {
            assert!(
                within("a poll after the end", s.next()).await.is_none(),
                "{name}: unordered yielded after its end"
            );
        }
        let mut s = pool.ordered(futures_util::stream::iter(0..5u32), |i| async move { i });
        let got: Vec<u32> = within(
            "the ordered stream",
            (&mut s).map(Result::unwrap).collect::<Vec<_>>(),
        )
        .await;
        assert_eq!(got, [0, 1, 2, 3, 4], "{name}: ordered results out of order");
        assert!(
            s.is_terminated(),
            "{name}: an ended ordered stream says it is not terminated"
        );
        assert!(
            within("a poll after the end", s.next()).await.is_none(),
            "{name}: ordered yielded after its end"
        );
    }
}

/// The user's input stream panics in `poll_next` after two inputs. The stream docs ("#
/// Panics") promise only for `f`: "The place taken for that input is not lost: the stream
/// gives it back when dropped"; the same is expected of the input's own panic.
///
/// Pinned: the panic reaches the poller with the user's message; once the stream is
/// dropped, the pool's whole room is free again (as many `try_submit`s as it holds
/// succeed), on all three pools.
#[tokio::test(flavor = "current_thread")]
async fn an_input_stream_that_panics_gives_its_place_back() {
    support::hide_panics(&["the input stream broke"]);
    for (pool, holds) in Pool::all(1, 1) {
        let name = pool.name();
        let inputs = futures_util::stream::iter(0..10u32).map(|i| {
            if i == 2 {
                panic!("the input stream broke");
            }
            i
        });
        let mut s = pool.unordered(inputs, |i| async move { i });
        let mut got = Vec::new();
        let caught = loop {
            let next = std::panic::AssertUnwindSafe(s.next());
            match futures_util::FutureExt::catch_unwind(next).await {
                Ok(Some(r)) => got.push(r.unwrap()),
                Ok(None) => panic!("{name}: the stream ended without the input's panic"),
                Err(p) => break support::panic_message(&*p),
            }
        };
        assert_eq!(
            caught, "the input stream broke",
            "{name}: the poller saw another panic"
        );
        drop(s);
        within(
            "the pool's jobs",
            per_pool!(
                &pool,
                |p| Box::pin(p.wait()) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
                |p| Box::pin(p.wait())
            ),
        )
        .await;
        let mut held = Vec::new();
        for k in 0..holds {
            let gate = Gate::new();
            let ok = per_pool!(
                &pool,
                |p| p.try_submit(gate.wait()).map(drop).is_ok(),
                |p| {
                    let g = gate.clone();
                    p.try_submit(move || g.wait()).map(drop).is_ok()
                }
            );
            assert!(
                ok,
                "{name}: after the input stream's panic, place {k} of {holds} was not free"
            );
            held.push(gate);
        }
        for g in held {
            g.open();
        }
        within(
            "the fillers",
            per_pool!(
                &pool,
                |p| Box::pin(p.wait()) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
                |p| Box::pin(p.wait())
            ),
        )
        .await;
    }
}

// ----- calls from the wrong places ----------------------------------------------------------

/// Everything a synchronous callback can call on a pool: its figures, a `try_submit` (the
/// docs' advice for a `Drop`: "Use try_submit in a Drop: it never waits"), a resize to
/// the same size, and a shutdown (closes at the call, its future dropped unpolled) when
/// `close`. Returns what the `try_submit` said.
fn poke(pool: &Pool, close: bool) -> &'static str {
    let said = per_pool!(
        pool,
        |p| {
            let _ = p.stats();
            let _ = p.is_closed();
            p.set_max_concurrency(p.max_concurrency());
            match p.try_submit(async {}) {
                Ok(h) => {
                    h.detach();
                    "accepted"
                }
                Err(e) if e.is_full() => "full",
                Err(e) if e.is_closed() => "closed",
                Err(e) if e.is_no_runtime() => "no_runtime",
                Err(_) => "other",
            }
        },
        |p| {
            let _ = p.stats();
            let _ = p.is_closed();
            let _ = p.pending_count();
            p.set_max_concurrency(p.max_concurrency());
            match p.try_submit(|| async {}) {
                Ok(h) => {
                    h.detach();
                    "accepted"
                }
                Err(e) if e.is_full() => "full",
                Err(e) if e.is_closed() => "closed",
                Err(e) if e.is_no_runtime() => "no_runtime",
                Err(_) => "other",
            }
        }
    );
    if close {
        drop(per_pool!(
            pool,
            |p| Box::pin(p.shutdown()) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
            |p| Box::pin(p.shutdown())
        ));
    }
    said
}

fn wait_of(pool: &Pool) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    per_pool!(pool, |p| Box::pin(p.wait()), |p| Box::pin(p.wait()))
}

fn shutdown_of(pool: &Pool) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    per_pool!(pool, |p| Box::pin(p.shutdown()), |p| Box::pin(p.shutdown()))
}

/// A task's output whose `Drop` calls into the pool that ran the task.
struct CallsBack {
    pool: Pool,
    close: bool,
    dropped: Arc<AtomicUsize>,
}

impl Drop for CallsBack {
    fn drop(&mut self) {
        poke(&self.pool, self.close);
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

fn pools_for_callbacks() -> Vec<Pool> {
    vec![
        Pool::Common(common(2, 64).build()),
        Pool::NoQueue(no_queue(2).build()),
        Pool::Smart(smart(2, 64).build()),
    ]
}

/// Submits `n` detached tasks returning a [`CallsBack`] (the pool drops their outputs
/// where it chooses: a later submit, its reap timer, `wait()`), then waits.
async fn detached_outputs_that_call_back(pool: &Pool, n: usize, close: bool) -> usize {
    let dropped = Arc::new(AtomicUsize::new(0));
    for _ in 0..n {
        let out = CallsBack {
            pool: pool.clone(),
            close,
            dropped: dropped.clone(),
        };
        let out = Arc::new(Mutex::new(Some(out)));
        let r = per_pool!(
            pool,
            |p| p
                .submit(async move { out.lock().unwrap().take() })
                .await
                .map(|h| h.detach())
                .is_ok(),
            |p| p
                .submit(move || {
                    let out = out.clone();
                    async move {
                        tokio::task::yield_now().await;
                        out.lock().unwrap().take()
                    }
                })
                .await
                .map(|h| h.detach())
                .is_ok()
        );
        if !r {
            break; // closed by an output's drop
        }
    }
    wait_of(pool).await;
    dropped.load(Ordering::SeqCst)
}

/// The user's detached tasks return values whose `Drop` calls the pool (`stats`,
/// `try_submit`, `set_max_concurrency`): the pool drops them on a submitting thread, in a
/// later submit, its reap timer or `wait()` (crate docs, "Where an ended job is freed").
/// The crate docs: "The pool wakes, clones and drops wakers outside its locks"; the
/// same is expected of the results it drops (finding 81 fixed it for recipes).
///
/// Pinned: no deadlock on a multi-thread or a current-thread runtime, on all three pools;
/// `wait()` returns once every output was dropped.
#[test]
fn a_detached_tasks_output_whose_drop_calls_the_pool_does_not_deadlock() {
    for flavor in ["multi_thread", "current_thread"] {
        for pool in pools_for_callbacks() {
            let name = pool.name();
            let dropped = on_thread_within(
                &format!("{flavor} {name}: outputs calling back"),
                30,
                move || {
                    let rt = if flavor == "multi_thread" {
                        support::multi_thread_of(2)
                    } else {
                        support::current_thread()
                    };
                    rt.block_on(detached_outputs_that_call_back(&pool, 200, false))
                },
            );
            assert_eq!(
                dropped, 200,
                "{flavor} {name}: wait() returned before every output was dropped"
            );
        }
    }
}

/// The same, with each output's `Drop` also shutting the pool down (`drop(pool.shutdown())`:
/// it "close[s] the pools when [it is] called").
///
/// Pinned: the pool closes, later submits are refused, and a `shutdown().await` after it
/// returns, on all three pools and both runtimes.
#[test]
fn a_detached_tasks_output_whose_drop_shuts_the_pool_down_does_not_deadlock() {
    for flavor in ["multi_thread", "current_thread"] {
        for pool in pools_for_callbacks() {
            let name = pool.name();
            let p2 = pool.clone();
            on_thread_within(
                &format!("{flavor} {name}: outputs closing the pool"),
                30,
                move || {
                    let rt = if flavor == "multi_thread" {
                        support::multi_thread_of(2)
                    } else {
                        support::current_thread()
                    };
                    rt.block_on(async {
                        detached_outputs_that_call_back(&p2, 50, true).await;
                        shutdown_of(&p2).await;
                    })
                },
            );
            assert!(
                per_pool!(&pool, |p| p.is_closed(), |p| p.is_closed()),
                "{flavor} {name}: not closed"
            );
        }
    }
}

/// The user's SmartAioPool recipe, while it builds its future, calls its own pool
/// (`stats`, `pending_count`, `try_submit`, `set_max_concurrency`) and then shuts it down
/// (`drop(pool.shutdown())`). The recipe runs on the slot's thread (crate docs, "Where an
/// ended job is freed"); nothing says it may not call its pool.
///
/// Pinned: no deadlock; the task runs to its value, the two tasks the recipe submitted
/// before the shutdown are accepted and run, the one after it is refused `Closed`, the pool closes, and `shutdown().await` returns.
#[test]
fn a_recipe_that_calls_its_pool_while_building_its_future_does_not_deadlock() {
    for flavor in ["multi_thread", "current_thread"] {
        let pool = smart(2, 8).build();
        let said = Arc::new(Mutex::new(Vec::new()));
        let (p, s) = (pool.clone(), said.clone());
        let v = on_thread_within(
            &format!("{flavor}: a recipe calling its pool"),
            30,
            move || {
                let rt = if flavor == "multi_thread" {
                    support::multi_thread_of(2)
                } else {
                    support::current_thread()
                };
                rt.block_on(async {
                    let inner = p.clone();
                    let said = s.clone();
                    let h = p
                        .submit(move || {
                            let w = Pool::Smart(inner.clone());
                            said.lock().unwrap().push(poke(&w, false));
                            said.lock().unwrap().push(poke(&w, true));
                            said.lock().unwrap().push(poke(&w, false));
                            async { 9 }
                        })
                        .await
                        .unwrap();
                    let v = h.await;
                    p.shutdown().await;
                    v
                })
            },
        );
        assert_eq!(v.unwrap(), 9, "{flavor}: the recipe's task failed");
        assert_eq!(
            *said.lock().unwrap(),
            ["accepted", "accepted", "closed"],
            "{flavor}: the recipe's calls"
        );
        assert!(pool.is_closed(), "{flavor}: the pool was not closed");
        assert_eq!(
            pool.stats().completed,
            3,
            "{flavor}: the recipe's own submits did not run"
        );
    }
}

/// The pool a panic hook calls into (tests run in processes of their own under nextest;
/// `serial` keeps them apart under `cargo test`).
static HOOKED: Mutex<Option<Pool>> = Mutex::new(None);
static HOOK_CALLS: AtomicUsize = AtomicUsize::new(0);

/// A panic payload whose `Drop` panics is not used: each panic below is a plain message.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("an output's drop panicked");
        }
    }
}

/// The user's panic hook calls into the pool (its figures, a `try_submit`, a resize to
/// the same size), as a hook that reports the pool's state might. Panics come from a
/// task's poll, a detached task's output's `Drop` (which the pool drops quietly: "the panic
/// hook still prints it"), a SmartAioPool recipe, and a queued future's `Drop` when it is
/// aborted. The crate docs: such panics "only fail that job"; finding 59 fixed a hook that
/// touched the pool under the engine's lock for the timer probe.
///
/// Pinned: no deadlock on any of the three pools; the panicking task's handle says it
/// panicked, and `wait()` returns. (Before the fix of
/// `detaching_an_ended_task_whose_output_panics_when_dropped_does_not_panic_the_caller`
/// it failed 3 runs in 9, with no message: a detached output's panic, hidden by this
/// hook, came out of `detach()`.)
#[test]
fn a_panic_hook_that_calls_the_pool_does_not_deadlock() {
    let _serial = support::serial();
    let previous: Arc<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync> =
        Arc::from(std::panic::take_hook());
    let forward = previous.clone();
    std::panic::set_hook(Box::new(move |info| {
        HOOK_CALLS.fetch_add(1, Ordering::SeqCst);
        // Only the test's setup locks it, before and after the panics.
        if let Some(pool) = HOOKED.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            poke(&pool, false);
        }
        let msg = support::panic_message(info.payload());
        if ![
            "a task panicked",
            "an output's drop panicked",
            "a recipe panicked",
        ]
        .contains(&msg.as_str())
        {
            forward(info); // a failure of the test: shown
        }
    }));
    for pool in pools_for_callbacks() {
        let name = pool.name();
        *HOOKED.lock().unwrap() = Some(pool.clone());
        let calls_before = HOOK_CALLS.load(Ordering::SeqCst);
        let p = pool.clone();
        on_thread_within(
            &format!("{name}: a panic hook calling the pool"),
            30,
            move || {
                let rt = support::multi_thread_of(2);
                rt.block_on(async {
                    // A task that panics in its poll.
                    let h = per_pool!(
                        &p,
                        |q| q.submit(async { panic!("a task panicked") }).await.unwrap(),
                        |q| q
                            .submit(|| async { panic!("a task panicked") })
                            .await
                            .unwrap()
                    );
                    assert!(
                        within("the panicking task", h)
                            .await
                            .unwrap_err()
                            .is_panic(),
                        "{name}: not a panic"
                    );
                    // Detached tasks whose outputs panic when dropped.
                    for _ in 0..5 {
                        per_pool!(
                            &p,
                            |q| q.submit(async { PanicsOnDrop }).await.unwrap().detach(),
                            |q| q.submit(|| async { PanicsOnDrop }).await.unwrap().detach()
                        );
                    }
                    // A queued future that panics when dropped, aborted.
                    let gate = Gate::new();
                    let busy: Vec<_> = {
                        let mut v = Vec::new();
                        for _ in 0..2 {
                            v.push(per_pool!(
                                &p,
                                |q| q.submit(gate.wait()).await.unwrap(),
                                |q| {
                                    let g = gate.clone();
                                    q.submit(move || g.wait()).await.unwrap()
                                }
                            ));
                        }
                        v
                    };
                    if let Pool::Common(q) = &p {
                        let guard = PanicsOnDrop;
                        let h = q
                            .submit(async move {
                                let _g = &guard;
                            })
                            .await
                            .unwrap();
                        h.abort();
                        assert!(within("the aborted task", h)
                            .await
                            .unwrap_err()
                            .is_cancelled());
                    }
                    if let Pool::Smart(q) = &p {
                        let h = q
                            .submit(|| -> std::future::Ready<()> { panic!("a recipe panicked") })
                            .await;
                        gate.open();
                        let r = within("the panicking recipe", h.unwrap()).await;
                        assert!(
                            r.unwrap_err().is_panic(),
                            "{name}: a panicking recipe is not a panic"
                        );
                    }
                    gate.open();
                    for b in busy {
                        within("a busy task", b).await.unwrap();
                    }
                    within("wait() after the panics", wait_of(&p)).await;
                });
            },
        );
        *HOOKED.lock().unwrap() = None;
        assert!(
            HOOK_CALLS.load(Ordering::SeqCst) > calls_before,
            "{name}: the panic hook never ran"
        );
    }
    drop(std::panic::take_hook());
    std::panic::set_hook(Box::new(move |info| previous(info)));
}

/// Held by a task's future: its `Drop` (run when the runtime's shutdown drops the task)
/// calls into the pool and records what `try_submit` said.
struct DropCallsPool {
    pool: Pool,
    said: Arc<Mutex<Vec<&'static str>>>,
}

impl Drop for DropCallsPool {
    fn drop(&mut self) {
        let s = poke(&self.pool, false);
        self.said.lock().unwrap().push(s);
    }
}

/// The user's tasks hold values whose `Drop` calls the pool ("Use try_submit in a Drop: it
/// never waits"); the runtime they run on shuts down (dropped) with one task running and
/// one queued. Then the same with the `Drop` also shutting the pool down.
///
/// Pinned: the runtime's drop returns (no deadlock), every such `Drop` ran, and the
/// CommonAioPool's and NoQueueAioPool's handles say `RuntimeShutdown`.
#[test]
fn a_drop_that_a_runtimes_shutdown_runs_may_call_the_pool() {
    for pool in pools_for_callbacks() {
        let name = pool.name();
        let said = Arc::new(Mutex::new(Vec::new()));
        let (p, s) = (pool.clone(), said.clone());
        let handles = on_thread_within(
            &format!("{name}: a runtime's drop running Drops that call the pool"),
            30,
            move || {
                let rt = support::multi_thread_of(1);
                let handles = rt.block_on(async {
                    let mut hs = Vec::new();
                    // Two slots: both busy, then more queued (NoQueue: none queued).
                    for _ in 0..4 {
                        let g = DropCallsPool {
                            pool: p.clone(),
                            said: s.clone(),
                        };
                        let g = Arc::new(Mutex::new(Some(g)));
                        let h = per_pool!(
                            &p,
                            |q| q
                                .try_submit(async move {
                                    let _g = g;
                                    std::future::pending::<()>().await
                                })
                                .ok(),
                            |q| q
                                .try_submit(move || {
                                    let g = g.clone();
                                    async move {
                                        let _g = g.lock().unwrap().take();
                                        std::future::pending::<()>().await
                                    }
                                })
                                .ok()
                        );
                        hs.extend(h);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    hs
                });
                drop(rt);
                handles
            },
        );
        let expect = if name == "no_queue" { 2 } else { 4 };
        assert_eq!(handles.len(), expect, "{name}: the setup's submits");
        if name != "smart" {
            for h in handles {
                let r = on_thread_within("a handle after its runtime ended", 10, move || {
                    h.blocking_wait()
                });
                assert_eq!(
                    r.unwrap_err().cancel_reason(),
                    Some(nb_aiopool::CancelReason::RuntimeShutdown),
                    "{name}: a task of a runtime that ended"
                );
            }
        }
        let said = said.lock().unwrap().clone();
        // Every guard is dropped: with its task's run (the runtime's end), or with a
        // future a full pool handed back (NoQueue: two of the four). A SmartAioPool's
        // queued tasks have not run: their recipes (and guards) wait in the pool for it.
        let want = if name == "smart" { 2 } else { 4 };
        assert_eq!(said.len(), want, "{name}: not every Drop ran: {said:?}");
    }
}

/// What a `try_submit` or `blocking_submit` made in a `Drop` gave: its handle, or the
/// refusal.
type Submitted = Result<nb_aiopool::TaskHandle<u32>, SubmitErrorKind>;

/// Held by a running task: its `Drop` (run by the runtime's shutdown) submits a task to
/// the pool, with `try_submit` or `blocking_submit`, and keeps what it got.
struct DropSubmits {
    pool: Pool,
    blocking: bool,
    got: Arc<Mutex<Vec<Submitted>>>,
}

impl Drop for DropSubmits {
    fn drop(&mut self) {
        let r: Submitted = per_pool!(
            &self.pool,
            |p| if self.blocking {
                p.blocking_submit(async { 11 }).map_err(|e| e.kind())
            } else {
                p.try_submit(async { 11 }).map_err(|e| match e.kind() {
                    nb_aiopool::TrySubmitErrorKind::Closed => SubmitErrorKind::Closed,
                    nb_aiopool::TrySubmitErrorKind::NoRuntime => SubmitErrorKind::NoRuntime,
                    _ => SubmitErrorKind::WouldDeadlock, // "full", told apart below
                })
            },
            |p| if self.blocking {
                p.blocking_submit(|| async { 11 }).map_err(|e| e.kind())
            } else {
                p.try_submit(|| async { 11 }).map_err(|e| match e.kind() {
                    nb_aiopool::TrySubmitErrorKind::Closed => SubmitErrorKind::Closed,
                    nb_aiopool::TrySubmitErrorKind::NoRuntime => SubmitErrorKind::NoRuntime,
                    _ => SubmitErrorKind::WouldDeadlock,
                })
            }
        );
        self.got.lock().unwrap().push(r);
    }
}

/// The user's running task holds a value whose `Drop` submits a task to the same pool
/// (`try_submit`: "Use try_submit in a Drop: it never waits"; and `blocking_submit`,
/// which may block there), and the task's runtime, current-thread or multi-thread, is
/// dropped with the pool half full. The README: "every accepted job's TaskHandle resolves
/// exactly once (value, panic, or a cancellation with its reason)"; "A submit that no
/// runtime can serve fails with SubmitErrorKind::NoRuntime and hands the job back".
///
/// Pinned: the runtime's drop returns; each submit made in the `Drop` is refused
/// (`NoRuntime`) or accepted, and an accepted task's handle resolves (a value, or
/// `RuntimeShutdown`). (`blocking_submit` is tried on the current-thread runtime only: a
/// multi-thread runtime drops its tasks on its workers, where it panics, as documented.)
#[test]
fn a_submit_made_in_a_drop_during_a_runtimes_shutdown_is_refused_or_resolves() {
    for flavor in ["current_thread", "multi_thread"] {
        for blocking in [false, true] {
            if blocking && flavor == "multi_thread" {
                // A multi-thread runtime drops its tasks on its worker threads, where
                // `blocking_submit` panics, as its docs say.
                continue;
            }
            for pool in [
                Pool::Common(common(4, 4).build()),
                Pool::NoQueue(no_queue(4).build()),
                Pool::Smart(smart(4, 4).build()),
            ] {
                let name = pool.name();
                let what = format!("{flavor} {name} blocking={blocking}");
                let got = Arc::new(Mutex::new(Vec::new()));
                let (p, g) = (pool.clone(), got.clone());
                on_thread_within(&format!("{what}: the runtime's drop"), 20, move || {
                    let rt = if flavor == "multi_thread" {
                        support::multi_thread_of(1)
                    } else {
                        support::current_thread()
                    };
                    rt.block_on(async {
                        let guard = DropSubmits {
                            pool: p.clone(),
                            blocking,
                            got: g.clone(),
                        };
                        let guard = Arc::new(Mutex::new(Some(guard)));
                        per_pool!(
                            &p,
                            |q| q
                                .submit(async move {
                                    let _g = guard.lock().unwrap().take();
                                    std::future::pending::<()>().await
                                })
                                .await
                                .unwrap()
                                .detach(),
                            |q| q
                                .submit(move || {
                                    let g = guard.lock().unwrap().take();
                                    async move {
                                        let _g = g;
                                        std::future::pending::<()>().await
                                    }
                                })
                                .await
                                .unwrap()
                                .detach()
                        );
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    });
                    drop(rt);
                });
                let got: Vec<Submitted> = std::mem::take(&mut *got.lock().unwrap());
                assert_eq!(got.len(), 1, "{what}: the Drop did not run once");
                for r in got {
                    match r {
                        Err(kind) => {
                            assert_eq!(kind, SubmitErrorKind::NoRuntime, "{what}: refused")
                        }
                        Ok(h) => {
                            let r = on_thread_within(
                                &format!("{what}: the handle of a task submitted in the Drop"),
                                10,
                                move || support::current_thread().block_on(h),
                            );
                            match r {
                                Ok(v) => assert_eq!(v, 11),
                                Err(e) => assert_eq!(
                                    e.cancel_reason(),
                                    Some(nb_aiopool::CancelReason::RuntimeShutdown),
                                    "{what}: the accepted task's handle said {e:?}"
                                ),
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The user shuts a pool down with `shutdown_timeout(Duration::ZERO)` while a task runs
/// for ever and one is queued, and another with `shutdown_timeout(Duration::MAX)` while a
/// task runs a while. `shutdown_timeout` docs: abandons what is left after the timeout;
/// no `# Panics` entry for a long one.
///
/// Pinned: ZERO abandons both at once (their handles say `Abandoned`); MAX waits for the
/// task like `shutdown()` (no overflow panic), on all three pools.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn shutdown_timeout_at_zero_and_at_duration_max() {
    for (pool, _) in Pool::all(1, 1) {
        let name = pool.name();
        let running = per_pool!(
            &pool,
            |p| p.submit(std::future::pending::<()>()).await.unwrap(),
            |p| p.submit(std::future::pending::<()>).await.unwrap()
        );
        tokio::task::yield_now().await;
        let report = within(
            "shutdown_timeout(ZERO)",
            pool.shutdown_timeout(Duration::ZERO),
        )
        .await;
        assert_eq!(
            report.abandoned(),
            1,
            "{name}: shutdown_timeout(ZERO) did not abandon the running task"
        );
        let r = within("the abandoned task", running).await;
        assert_eq!(
            r.unwrap_err().cancel_reason(),
            Some(CancelReason::Abandoned),
            "{name}: the running task's handle"
        );
    }
    for (pool, _) in Pool::all(1, 1) {
        let name = pool.name();
        let h = per_pool!(
            &pool,
            |p| p
                .submit(async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    4
                })
                .await
                .unwrap(),
            |p| p
                .submit(|| async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    4
                })
                .await
                .unwrap()
        );
        let report = within(
            "shutdown_timeout(MAX)",
            pool.shutdown_timeout(Duration::MAX),
        )
        .await;
        assert_eq!(
            report.abandoned(),
            0,
            "{name}: shutdown_timeout(MAX) abandoned a task"
        );
        assert_eq!(h.await.unwrap(), 4, "{name}: the task did not finish");
    }
}

/// The user's SmartAioPool recipe makes `pool.wait()` while it builds its future and
/// awaits it in the run (`move || { let w = pool.wait(); async move { w.await } }`).
/// `wait`: "Called from inside a job of this pool, it does not wait for that job"; the
/// recipe is called inside the job's context.
///
/// Pinned: the task completes (it does not wait for itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_made_while_a_recipe_builds_its_future_does_not_wait_for_its_own_task() {
    let pool = smart(2, 2).build();
    let p = pool.clone();
    let h = pool
        .submit(move || {
            let w = p.wait();
            async move {
                w.await;
                5
            }
        })
        .await
        .unwrap();
    assert_eq!(
        within("a task awaiting a wait() made by its recipe", h)
            .await
            .unwrap(),
        5
    );
}

/// The user's SmartAioPool recipe calls `blocking_submit` while it builds its future (on
/// the slot's thread, inside the runtime). `blocking_submit`'s `# Panics`: "Panics if
/// called from a thread that drives async tasks".
///
/// Pinned: the crate's panic, reported as the task's panic, and the pool keeps its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_submit_inside_a_recipe_is_the_crates_panic_and_keeps_the_slot() {
    let pool = smart(1, 1).build();
    let p = pool.clone();
    let h = pool
        .submit(move || {
            let _ = p.blocking_submit(|| async { 1 });
            async { 2 }
        })
        .await
        .unwrap();
    let e = within("the task", h).await.unwrap_err();
    assert!(e.is_panic(), "not a panic: {e:?}");
    let msg = support::panic_message(&*e.into_panic());
    assert!(
        msg.contains("nb_aiopool") && msg.contains("async context"),
        "the panic is not the crate's: {msg:?}"
    );
    assert_eq!(
        within("a task after it", pool.run(|| async { 3 }))
            .await
            .unwrap(),
        3
    );
}

/// The user submits through a group of a pool that was shut down, and through a
/// cancel-on-error group after a task failed. `TaskGroup::submit` `# Errors`: refused with
/// `Closed`, the task handed back.
///
/// Pinned: `Closed` from `submit` and `try_submit`, the future handed back unpolled.
#[tokio::test(flavor = "current_thread")]
async fn a_group_of_a_closed_pool_or_a_tripped_group_hands_the_task_back() {
    let pool = common(2, 2).build();
    let mut g = pool.group::<u32>();
    pool.shutdown().await;
    let e = g.submit(async { 1 }).await.unwrap_err();
    assert!(
        e.is_closed(),
        "a closed pool's group submit said {:?}",
        e.kind()
    );
    assert_eq!(e.into_inner().await, 1, "the future was not handed back");
    let e = g.try_submit(async { 2 }).unwrap_err();
    assert!(
        e.is_closed(),
        "a closed pool's group try_submit said {:?}",
        e.kind()
    );
    assert!(g.is_empty());

    let pool = common(2, 2).build();
    let mut g = pool.group::<Result<u32, &str>>().cancel_on_error(true);
    g.submit(async { Err("bad") }).await.unwrap();
    assert_eq!(g.join_next().await.unwrap().unwrap(), Err("bad"));
    let e = g.submit(async { Ok(3) }).await.unwrap_err();
    assert!(
        e.is_closed(),
        "a tripped group's submit said {:?}",
        e.kind()
    );
    assert_eq!(e.into_inner().await, Ok(3));
    let e = g.try_submit(async { Ok(4) }).unwrap_err();
    assert!(
        e.is_closed(),
        "a tripped group's try_submit said {:?}",
        e.kind()
    );
}

/// The user builds pools with the smallest rate window, `rate_limit(1,
/// Duration::from_nanos(1))` (below tokio's 1 ms timer resolution), and with the largest
/// count, `rate_limit(u32::MAX, Duration::from_nanos(1))`, and runs 50 tasks through each.
/// `rate_limit`: "at most `count` starts in any window of `per`"; only 0 is refused.
///
/// Pinned: every task completes (the window's timer, rounded up to tokio's resolution,
/// still fires), on all three pools; with a real-time runtime too.
#[test]
fn the_smallest_rate_window_and_the_largest_count_run_every_task() {
    for paused in [true, false] {
        for (count, per) in [
            (1u32, Duration::from_nanos(1)),
            (u32::MAX, Duration::from_nanos(1)),
        ] {
            let rt = if paused {
                support::paused_runtime()
            } else {
                support::current_thread()
            };
            rt.block_on(async {
                for pool in [
                    Pool::Common(common(2, 64).rate_limit(count, per).build()),
                    Pool::NoQueue(no_queue(2).rate_limit(count, per).build()),
                    Pool::Smart(smart(2, 64).rate_limit(count, per).build()),
                ] {
                    let name = pool.name();
                    let mut hs = Vec::new();
                    for i in 0..50u32 {
                        hs.push(per_pool!(
                            &pool,
                            |p| within("a submit", p.submit(async move { i }))
                                .await
                                .unwrap(),
                            |p| within("a submit", p.submit(move || async move { i }))
                                .await
                                .unwrap()
                        ));
                    }
                    for (i, h) in hs.into_iter().enumerate() {
                        let v = within(
                            &format!("{name}: task {i} under rate_limit({count}, {per:?})"),
                            h,
                        )
                        .await;
                        assert_eq!(
                            v.unwrap(),
                            i as u32,
                            "{name}: rate_limit({count}, {per:?}), paused={paused}"
                        );
                    }
                }
            });
        }
    }
}

/// The user passes a timeout to `try_submit_with` of a full pool: "the options' timeout
/// does not apply" (it never waits).
///
/// Pinned: `Full` at once, the task handed back, on all three pools, even with
/// `timeout(Duration::MAX)` and outside any runtime.
#[test]
#[allow(clippy::async_yields_async)] // the busy task's handle, awaited later
fn try_submit_with_a_timeout_never_waits() {
    let rt = support::current_thread();
    for (pool, _) in rt.block_on(async { Pool::all(1, 0) }) {
        let name = pool.name();
        let gate = Gate::new();
        let busy = rt.block_on(async {
            per_pool!(&pool, |p| p.submit(gate.wait()).await.unwrap(), |p| {
                let g = gate.clone();
                p.submit(move || g.wait()).await.unwrap()
            })
        });
        for t in [Duration::ZERO, Duration::from_secs(1), Duration::MAX] {
            let opts = SubmitOptions::new().timeout(t);
            let full = per_pool!(
                &pool,
                |p| p.try_submit_with(async { 1 }, opts).unwrap_err().is_full(),
                |p| p
                    .try_submit_with(|| async { 1 }, opts)
                    .unwrap_err()
                    .is_full()
            );
            assert!(
                full,
                "{name}: try_submit_with(timeout {t:?}) of a full pool was not refused Full"
            );
        }
        gate.open();
        rt.block_on(busy).unwrap();
    }
}

/// A task's output that holds a handle of the task's own pool, and counts its drop.
struct HoldsPool {
    _pool: Pool,
    dropped: Arc<AtomicUsize>,
}

impl Drop for HoldsPool {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// The user's detached tasks return values that hold their own pool (a handle captured
/// by the task, returned with its result), and the user drops their own handle of the
/// pool: the last handles of the pool are then in outputs that the pool itself drops
/// ("later submits free the leftovers ... or the pool does, about 2 ms later"), and the
/// last one's drop closes the pool from inside its own freeing.
///
/// Pinned: every output is dropped within a bounded time and nothing deadlocks, on all
/// three pools, on a multi-thread and a current-thread runtime.
#[test]
fn outputs_holding_the_last_handles_of_their_pool_are_dropped() {
    for flavor in ["multi_thread", "current_thread"] {
        for pool in pools_for_callbacks() {
            let name = pool.name();
            let dropped = Arc::new(AtomicUsize::new(0));
            let d = dropped.clone();
            on_thread_within(
                &format!("{flavor} {name}: outputs holding their pool"),
                20,
                move || {
                    let rt = if flavor == "multi_thread" {
                        support::multi_thread_of(2)
                    } else {
                        support::current_thread()
                    };
                    rt.block_on(async move {
                        for _ in 0..20 {
                            let out = Arc::new(Mutex::new(Some(HoldsPool {
                                _pool: pool.clone(),
                                dropped: d.clone(),
                            })));
                            per_pool!(
                                &pool,
                                |p| p
                                    .submit(async move { out.lock().unwrap().take() })
                                    .await
                                    .unwrap()
                                    .detach(),
                                |p| p
                                    .submit(move || {
                                        let out = out.clone();
                                        async move { out.lock().unwrap().take() }
                                    })
                                    .await
                                    .unwrap()
                                    .detach()
                            );
                        }
                        drop(pool);
                        let end = std::time::Instant::now() + Duration::from_secs(10);
                        while d.load(Ordering::SeqCst) < 20 && std::time::Instant::now() < end {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    });
                },
            );
            assert_eq!(
                dropped.load(Ordering::SeqCst),
                20,
                "{flavor} {name}: outputs holding the last handles of their pool were never dropped"
            );
        }
    }
}

/// The user detaches (or drops) the handle of a task that has already ended, whose
/// output panics when dropped: `pool.submit(job).await?.detach()` on a multi-thread
/// runtime, where the job may end before `detach` runs. `TaskHandle`'s docs ("#
/// Dropping"): "A result whose Drop panics is dropped quietly (the panic hook shows the
/// panic)" when the pool drops it, which it does when the task ends after the handle
/// went; the crate docs: "A panic in a job's poll or in its future's Drop only fails that
/// job"; tokio's `JoinHandle` drops a stored output inside `catch_unwind` for this reason.
///
/// What happened: the panic came out of `detach()` (and of `drop(handle)`) into the
/// caller ("common: detach() of an ended task whose output panics when dropped panicked
/// in the caller: \"an output's drop panicked\""), on all three pools. A race in real
/// use: a loop of `submit(async { PanicsOnDrop }).await.unwrap().detach()` on a 2-worker
/// runtime panicked in its 4th round of 5 tasks. Fixed: the handle drops a stored result
/// quietly, as the pool does.
#[test]
#[allow(clippy::async_yields_async)] // the handle, detached or dropped outside the runtime
fn detaching_an_ended_task_whose_output_panics_when_dropped_does_not_panic_the_caller() {
    support::hide_panics(&["an output's drop panicked"]);
    for how in ["detach()", "drop(handle)"] {
        for pool in pools_for_callbacks() {
            let name = pool.name();
            let rt = support::current_thread();
            let h = rt.block_on(async {
                let h = per_pool!(
                    &pool,
                    |p| p.submit(async { PanicsOnDrop }).await.unwrap(),
                    |p| p.submit(|| async { PanicsOnDrop }).await.unwrap()
                );
                within("the task's end", async {
                    while !h.is_finished() {
                        tokio::task::yield_now().await;
                    }
                })
                .await;
                h
            });
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match how {
                "detach()" => h.detach(),
                _ => drop(h),
            }));
            if let Err(p) = r {
                panic!(
                    "{name}: {how} of an ended task whose output panics when dropped panicked \
                     in the caller: {:?}",
                    support::panic_message(&*p)
                );
            }
            rt.block_on(within("the pool's wait", wait_of(&pool)));
        }
    }
}
