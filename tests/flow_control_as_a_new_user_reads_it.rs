//! A new user's programs written from the README's and the crate docs' flow-control
//! sections alone (`SubmitOptions`: priority, weight, key, timeout; the builders' rate
//! limits; `TaskGroup::submit_with`; the map streams' `with_options`), each checking one
//! promise of those docs, on the three pools where the docs say they behave alike. Four
//! tests failed before their fixes (RELIABILITY.md, 393–395); the `pin_*` tests pass.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{stream, StreamExt};
use nb_aiopool::{CommonAioPool, SubmitErrorKind, SubmitOptions};
use support::{multi_thread_of, within};

/// A group of prioritised jobs, cancelled on the first error, as the crate docs' "Cancel
/// on error" promises: "the first task that fails aborts every other task of the group at
/// once (... the newest first, so that the slot a running task's abort frees does not
/// start one of those still queued ...)". The user gives one urgent job a higher priority
/// (`submit_with(.., SubmitOptions::new().priority(10))`, which `TaskGroup::submit_with`
/// documents: "the task is queued by its priority"), so it overtakes the group's older
/// queued jobs and runs beside the job that then fails. The job that fails aborts the
/// urgent one first (it is the newest), whose slot, on the other worker, takes the next
/// queued job of the group and starts it before its abort comes: with priorities,
/// "newest" is no longer "still queued". One pool of 2 slots, a 2-worker runtime, 300
/// rounds.
///
/// Failed before the fix: "a job queued in a cancel-on-error group started after another
/// job of the group failed, in 153 of 300 rounds (the urgent job, newer, was aborted
/// before the older queued ones)" (76 and 12 in two later runs: it depends on the load).
#[test]
fn a_failed_groups_queued_jobs_never_start_when_a_newer_urgent_job_runs() {
    let rt = multi_thread_of(2);
    let rounds = 300;
    let bad = rt.block_on(async move {
        let mut bad = 0;
        for _ in 0..rounds {
            if within(
                "a round of a failing prioritised group",
                failing_prioritised_group(),
            )
            .await
            {
                bad += 1;
            }
        }
        bad
    });
    assert_eq!(
        bad, 0,
        "a job queued in a cancel-on-error group started after another job of the group \
         failed, in {bad} of {rounds} rounds (the urgent job, newer, was aborted before the \
         older queued ones)"
    );
}

/// One round: true if a queued job of the group started after the failure.
async fn failing_prioritised_group() -> bool {
    let pool = CommonAioPool::builder()
        .max_concurrency(2)
        .max_queue_size(16)
        .process_wide(false)
        .build();
    let started_after = Arc::new(AtomicUsize::new(0));
    let urgent_running = Arc::new(tokio::sync::Notify::new());
    let mut group = pool
        .group::<Result<(), &'static str>>()
        .cancel_on_error(true);
    let (fail, failing) = tokio::sync::oneshot::channel::<()>();
    let (release, blocker) = tokio::sync::oneshot::channel::<()>();
    let normal = SubmitOptions::new();
    group
        .submit_with(
            async move {
                let _ = failing.await;
                Err("the first error")
            },
            normal.clone(),
        )
        .await
        .unwrap();
    group
        .submit_with(
            async move {
                let _ = blocker.await;
                Ok(())
            },
            normal.clone(),
        )
        .await
        .unwrap();
    for _ in 0..8 {
        let s = started_after.clone();
        group
            .submit_with(
                async move {
                    s.fetch_add(1, SeqCst);
                    tokio::task::yield_now().await;
                    Ok(())
                },
                normal.clone(),
            )
            .await
            .unwrap();
    }
    let u = urgent_running.clone();
    group
        .submit_with(
            async move {
                u.notify_one();
                std::future::pending::<()>().await;
                Ok(())
            },
            SubmitOptions::new().priority(10),
        )
        .await
        .unwrap();
    let running = urgent_running.notified();
    release.send(()).unwrap(); // the blocker ends: its slot takes the urgent job
    running.await;
    assert_eq!(
        started_after.load(SeqCst),
        0,
        "a queued job started before the failure"
    );
    fail.send(()).unwrap();
    let results = group.join_all().await;
    assert_eq!(results[0].as_ref().unwrap(), &Err("the first error"));
    started_after.load(SeqCst) > 0
}

/// The panic message of `f()` (a `String` or `&str` payload).
fn panic_message_of(f: impl FnOnce()) -> String {
    let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .expect_err("the call was expected to panic");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// A new user writes `pool.submit_with(job, opts).await.unwrap()` (as every example in
/// the docs does) and gets a refusal. The errors' messages were written to say what to do
/// (finding 259's test calls the `Display` "what an `unwrap` shows"; 389's gave `Full`
/// and `WouldDeadlock` advice), but `unwrap()` and `expect()` print the error's `Debug`,
/// and so does a `main` returning `Result<(), Box<dyn Error>>` with `?`. A `NoRuntime`
/// refusal (a pool made and used from a plain thread, `blocking_submit_with`) and a
/// `submit_with` that timed out.
///
/// Failed before the fix: "unwrap() on a NoRuntime refusal prints `called
/// `Result::unwrap()` on an `Err` value: SubmitError { kind: NoRuntime, .. }`, without the
/// message's advice (`enter one first (Handle::enter)`)".
#[test]
fn unwrap_on_a_refused_submit_shows_what_to_do() {
    support::hide_panics(&[]);
    let pool = CommonAioPool::new(1, 0);
    let opts = SubmitOptions::new().key("example.com");
    let shown = panic_message_of(|| {
        pool.blocking_submit_with(async {}, opts.clone())
            .unwrap()
            .detach();
    });
    assert!(
        shown.contains("enter one first (Handle::enter)"),
        "unwrap() on a NoRuntime refusal prints `{shown}`, without the message's advice \
         (`enter one first (Handle::enter)`)"
    );
    let rt = support::paused_runtime();
    let err = rt.block_on(async {
        let _busy = pool.submit(std::future::pending::<()>()).await.unwrap();
        let opts = opts.timeout(Duration::from_millis(10));
        pool.submit_with(async {}, opts).await.unwrap_err()
    });
    let shown = panic_message_of(move || {
        let submitted: Result<(), _> = std::hint::black_box(Err(err));
        submitted.expect("submitting the page");
    });
    assert!(
        shown.contains("timeout passed before the pool had room"),
        "expect() on a timed-out submit_with prints `{shown}`, without the message"
    );
    // And `?` out of a `main` returning `Box<dyn Error>` prints the same `Debug`.
    let fresh = CommonAioPool::new(1, 0); // made and used outside any runtime
    let boxed: Box<dyn std::error::Error> = Box::new(fresh.blocking_submit(async {}).unwrap_err());
    let shown = format!("{boxed:?}");
    assert!(
        shown.contains("Handle::enter"),
        "a `main` returning Err(Box<dyn Error>) from `?` prints `Error: {shown}`, without \
         the advice"
    );
}

/// The refusals a flow-controlled submit adds say what to do as the others do (389): a
/// user whose `submit_with` times out, or whose weight is above the capacity, reads the
/// message and should learn that the task is handed back and what to change.
///
/// Failed before the fix: "the TimedOut message `the submit's timeout passed before the
/// pool had room` does not say what to do".
#[test]
fn flow_control_refusals_say_what_to_do() {
    let timed_out = SubmitErrorKind::TimedOut.to_string();
    assert!(
        timed_out.contains("into_inner") && timed_out.contains("longer timeout"),
        "the TimedOut message `{timed_out}` does not say what to do"
    );
    // A map stream's `refused()` kind prints this message too, to a user who called no
    // submit of their own: it names the option that set the timeout (397).
    assert!(
        timed_out.contains("SubmitOptions::timeout"),
        "the TimedOut message `{timed_out}` does not name the option whose timeout passed \
         (a stream's user set it through with_options, and called no submit)"
    );
    let too_heavy = SubmitErrorKind::TooHeavy.to_string();
    assert!(
        too_heavy.contains("lower") && too_heavy.contains("raise"),
        "the TooHeavy message `{too_heavy}` does not say what to do"
    );
}

use support::{flow_pools, FlowLimits, Pool};

/// The README's crawler, on each pool: URLs of three hosts streamed through
/// `map_unordered(..).with_options(|url| SubmitOptions::new().key(host(url)))`, in a pool
/// built with `max_per_key(2)` and `rate_limit(5, 100 ms)`. The README promises "at most
/// 4 per host; other hosts go on" (here 2) and "at most 50 starts in any second" (here 5
/// in any 100 ms, "Exact, tested with paused time"), and the stream "results as they
/// complete". Pinned: every URL fetched once, never more than 2 at once per host, never
/// more than 5 starts in a 100 ms window, on the three pools.
#[test]
fn pin_the_readme_crawler_keeps_its_per_host_and_rate_limits_on_every_pool() {
    let rt = support::paused_runtime();
    rt.block_on(async {
        let limits = FlowLimits {
            max_per_key: Some(2),
            rate: Some((5, Duration::from_millis(100))),
            ..FlowLimits::default()
        };
        for pool in flow_pools(6, 6, 6, limits) {
            let name = pool.name();
            let hosts = ["a.example", "b.example", "c.example"];
            let urls: Vec<String> = (0..30)
                .map(|i| format!("https://{}/page/{i}", hosts[i % 3]))
                .collect();
            let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
            let per_host = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
            let most = Arc::new(AtomicUsize::new(0));
            let (s, p, m) = (starts.clone(), per_host.clone(), most.clone());
            let fetch = move |url: String| {
                let (starts, per_host, most) = (s.clone(), p.clone(), m.clone());
                async move {
                    let host = url.split('/').nth(2).unwrap().to_string();
                    starts.lock().unwrap().push(tokio::time::Instant::now());
                    {
                        let mut ph = per_host.lock().unwrap();
                        let n = ph.entry(host.clone()).or_insert(0usize);
                        *n += 1;
                        most.fetch_max(*n, SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(30)).await; // the request
                    *per_host.lock().unwrap().get_mut(&host).unwrap() -= 1;
                    url.len()
                }
            };
            let pages = pool
                .unordered(stream::iter(urls), fetch)
                .with_options(|url: &String| {
                    SubmitOptions::new().key(url.split('/').nth(2).unwrap_or_default())
                });
            let fetched: Vec<_> = within(name, pages.collect::<Vec<_>>()).await;
            assert_eq!(fetched.len(), 30, "{name}: not every URL was fetched");
            assert!(fetched.iter().all(Result::is_ok), "{name}: a fetch failed");
            assert!(
                most.load(SeqCst) <= 2,
                "{name}: {} requests ran at once to one host, with max_per_key(2)",
                most.load(SeqCst)
            );
            let mut starts = starts.lock().unwrap().clone();
            starts.sort();
            for w in starts.windows(6) {
                assert!(
                    w[5] - w[0] >= Duration::from_millis(100),
                    "{name}: 6 requests started within {:?}, with rate_limit(5, 100 ms)",
                    w[5] - w[0]
                );
            }
            pool.wait_within().await;
        }
    });
}

/// A stream of inputs with per-input timeouts, as a user writes it from
/// `MapUnordered::with_options`: "when the pool is full, the stream waits for room with
/// the input's priority ... for at most its timeout", and on a refusal "the stream stops
/// pulling, yields the results of the jobs already accepted and ends, and `refused` says
/// why ... That input was pulled and produces no item". Pinned on the three pools: a
/// pool held full but for `room` places by a long job; the stream's first `room` inputs
/// take them, the next one waits 50 ms and is refused `TimedOut`; the accepted ones'
/// results come out (after their 10 s), then the end; the inputs after it are never
/// pulled.
#[test]
fn pin_a_stream_with_per_input_timeouts_ends_at_the_first_timed_out_input() {
    let rt = support::paused_runtime();
    rt.block_on(async {
        let rooms = [3, 1, 3]; // Common 2 + 2, NoQueue 2, Smart 2 + 2; one taken
        for (pool, room) in flow_pools(2, 2, 2, FlowLimits::default())
            .into_iter()
            .zip(rooms)
        {
            let name = pool.name();
            let gate = Arc::new(tokio::sync::Semaphore::new(0));
            let g = gate.clone();
            let _long = pool
                .submit_with(SubmitOptions::new(), move || {
                    let g = g.clone();
                    async move {
                        let _ = g.acquire().await;
                    }
                })
                .await;
            let pulled = Arc::new(AtomicUsize::new(0));
            let p = pulled.clone();
            let inputs = stream::iter(0..10u32).inspect(move |_| {
                p.fetch_add(1, SeqCst);
            });
            let results = pool
                .unordered(inputs, |i| async move {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    i
                })
                .with_options(|_| SubmitOptions::new().timeout(Duration::from_millis(50)));
            let mut results = std::pin::pin!(results);
            let t0 = tokio::time::Instant::now();
            let mut got = Vec::new();
            while let Some(r) = within(name, results.next()).await {
                got.push(r.expect("an accepted job failed"));
            }
            assert_eq!(
                got.len(),
                room,
                "{name}: the accepted inputs' results did not all come out"
            );
            assert_eq!(
                results.refused(),
                Some(SubmitErrorKind::TimedOut),
                "{name}: the stream ended without saying an input timed out"
            );
            assert_eq!(
                pulled.load(SeqCst),
                room + 1,
                "{name}: the stream pulled inputs past the one that timed out"
            );
            assert!(
                t0.elapsed() >= Duration::from_secs(10),
                "{name}: ended before the jobs"
            );
            gate.add_permits(1);
            pool.wait_within().await;
        }
    });
}

/// The same with a group simply dropped (the crate docs: "Dropping the group **aborts**
/// its unfinished tasks ... queued ones leave the pool's queue at once ... each future
/// is dropped unpolled"), and a map stream with per-input priorities dropped (its
/// "Dropping" section promises the same). A newer urgent job runs while older ones are
/// queued; the drop aborts the urgent one first, and its slot, on the other worker,
/// starts a queued one: a job the user dropped runs its first step (sends its request)
/// after the drop. 300 rounds each, a 2-worker runtime.
///
/// Failed before the fix: "a queued job of a dropped group started after the drop, in
/// 66 of 300 rounds; of a dropped stream, in 108 of 300 rounds" (the group: 161 in an
/// earlier run; the counts depend on the load).
#[test]
fn a_dropped_groups_or_streams_queued_jobs_never_start_when_a_newer_urgent_job_runs() {
    let rt = multi_thread_of(2);
    let rounds = 300;
    let (group_bad, stream_bad) = rt.block_on(async move {
        let (mut g, mut s) = (0, 0);
        for _ in 0..rounds {
            if within("a dropped prioritised group", dropped_prioritised(false)).await {
                g += 1;
            }
            if within("a dropped prioritised stream", dropped_prioritised(true)).await {
                s += 1;
            }
        }
        (g, s)
    });
    assert!(
        group_bad == 0 && stream_bad == 0,
        "a queued job of a dropped group started after the drop, in {group_bad} of {rounds} \
         rounds; of a dropped stream, in {stream_bad} of {rounds} rounds"
    );
}

/// One round: a blocker and a pending job take the 2 slots; 8 jobs queued at priority
/// 0, then an urgent one at 10; the blocker ends, its slot takes the urgent one; the
/// group (or the stream) is dropped. True if one of the 8 started after the drop.
async fn dropped_prioritised(as_stream: bool) -> bool {
    let pool = CommonAioPool::builder()
        .max_concurrency(2)
        .max_queue_size(16)
        .process_wide(false)
        .build();
    let started = Arc::new(AtomicUsize::new(0));
    let urgent_running = Arc::new(tokio::sync::Notify::new());
    let (release, blocker) = tokio::sync::oneshot::channel::<()>();
    let blocker = Arc::new(std::sync::Mutex::new(Some(blocker)));
    // Input 0: the blocker; 1: pending; 2..=9: the queued ones; 10: the urgent one.
    let job = {
        let (started, urgent_running) = (started.clone(), urgent_running.clone());
        move |i: usize| {
            let (started, urgent_running, blocker) =
                (started.clone(), urgent_running.clone(), blocker.clone());
            async move {
                match i {
                    0 => {
                        let b = blocker.lock().unwrap().take().unwrap();
                        let _ = b.await;
                    }
                    1 => std::future::pending::<()>().await,
                    10 => {
                        urgent_running.notify_one();
                        std::future::pending::<()>().await
                    }
                    _ => {
                        started.fetch_add(1, SeqCst);
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
    };
    let priority = |i: usize| if i == 10 { 10 } else { 0 };
    let running = urgent_running.notified();
    tokio::pin!(running);
    running.as_mut().enable();
    if as_stream {
        let mut results = pool
            .map_unordered(stream::iter(0..=10usize), job)
            .with_options(move |&i: &usize| SubmitOptions::new().priority(priority(i)));
        // Pull all 11 inputs (2 running, 9 queued), then let the blocker end.
        tokio::select! {
            biased;
            _ = results.next() => unreachable!("no job ends before the blocker"),
            _ = tokio::task::yield_now() => {}
        }
        assert_eq!(
            results.in_flight(),
            11,
            "the stream did not pull every input"
        );
        release.send(()).unwrap();
        // The blocker's result, then the urgent job runs.
        within("the blocker's result", results.next()).await;
        running.await;
        assert_eq!(
            started.load(SeqCst),
            0,
            "a queued job started before the drop"
        );
        drop(results);
    } else {
        let mut group = pool.group::<()>();
        for i in 0..=10usize {
            let opts = SubmitOptions::new().priority(priority(i));
            group.submit_with(job(i), opts).await.unwrap();
        }
        release.send(()).unwrap();
        running.await;
        assert_eq!(
            started.load(SeqCst),
            0,
            "a queued job started before the drop"
        );
        drop(group);
    }
    // A started job counts itself at its first poll: give the slots their turn.
    within("the pool's wait", pool.cancel_all()).await;
    within("the pool's wait", pool.wait()).await;
    started.load(SeqCst) > 0
}

/// A pool of one running slot holding `gate`'s job (a task of `key` if given), for pins.
async fn hold_one(pool: &Pool, key: Option<&str>) -> Arc<tokio::sync::Semaphore> {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let opts = match key {
        Some(k) => SubmitOptions::new().key(k),
        None => SubmitOptions::new(),
    };
    pool.submit_with(opts, move || {
        let g = g.clone();
        async move {
            let _ = g.acquire().await;
        }
    })
    .await
    .detach();
    gate
}

/// `SubmitOptions::timeout`: "It bounds the wait for admission only: once accepted, a task
/// queued or held back by its key, weight or the rate window waits as long as that
/// takes." A crawler user who sets `.key(host).timeout(5 s)` may read it as "give up on
/// this host after 5 s". Pinned on the three pools (`max_per_key(1)`): with room in the
/// pool, a task of a busy host is accepted at once and then waits past its timeout
/// without being refused; it starts when its host frees up. In a NoQueueAioPool it holds
/// its place meanwhile ("in a NoQueueAioPool they hold a place"): a task of another host
/// then waits for room though a slot is idle, and its own timeout refuses it.
#[test]
fn pin_a_timeout_bounds_admission_not_the_wait_for_a_busy_key() {
    let rt = support::paused_runtime();
    rt.block_on(async {
        for pool in flow_pools(2, 2, 2, FlowLimits::keys(1)) {
            let name = pool.name();
            let gate = hold_one(&pool, Some("a.example")).await;
            let t0 = tokio::time::Instant::now();
            let opts = SubmitOptions::new()
                .key("a.example")
                .timeout(Duration::from_millis(50));
            let held = pool
                .try_submit_with(opts, || async { tokio::time::Instant::now() })
                .await
                .unwrap_or_else(|k| panic!("{name}: a task of a busy host was refused: {k:?}"));
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(
                !held.is_finished(),
                "{name}: the held task ran while its host was busy"
            );
            if let Pool::NoQueue(_) = pool {
                // Both places are taken (one running, one held by its key): another
                // host's task cannot get in, though only one job runs.
                let other = SubmitOptions::new()
                    .key("b.example")
                    .timeout(Duration::from_millis(50));
                let r = pool.try_submit_with(other, || async {}).await;
                assert_eq!(
                    r.err(),
                    Some(SubmitErrorKind::TimedOut),
                    "{name}: another host's task got in beside a held one"
                );
                assert_eq!(pool.stats().running, 1, "{name}: more than one job ran");
            }
            gate.add_permits(1);
            let started = within(name, held).await.expect("the held task failed");
            assert!(
                started - t0 >= Duration::from_secs(1),
                "{name}: started before its host was free"
            );
            pool.wait_within().await;
        }
    });
}

/// `weight_capacity`: "Weights keep FIFO order: a heavy task at the head of the queue
/// waits for room and is not overtaken by lighter ones" (the README: "a heavy task at the
/// head waits for room rather than being overtaken forever", which reads as if lighter
/// ones could overtake it for a while). Pinned on the three pools (capacity 10): a task
/// of weight 6 runs, one of 8 waits at the head, and one of 2 behind it (which would fit)
/// does not start before it.
#[test]
fn pin_a_heavy_task_at_the_head_is_not_overtaken_by_lighter_ones() {
    let rt = support::paused_runtime();
    rt.block_on(async {
        let limits = FlowLimits {
            weight_capacity: Some(10),
            ..FlowLimits::default()
        };
        for pool in flow_pools(4, 4, 4, limits) {
            let name = pool.name();
            let gate = Arc::new(tokio::sync::Semaphore::new(0));
            let g = gate.clone();
            pool.submit_with(SubmitOptions::new().weight(6), move || {
                let g = g.clone();
                async move {
                    let _ = g.acquire().await;
                }
            })
            .await
            .detach();
            let order = Arc::new(std::sync::Mutex::new(Vec::new()));
            let mut handles = Vec::new();
            for w in [8u32, 2] {
                let o = order.clone();
                handles.push(
                    pool.submit_with(SubmitOptions::new().weight(w), move || {
                        let o = o.clone();
                        async move { o.lock().unwrap().push(w) }
                    })
                    .await,
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(
                *order.lock().unwrap(),
                Vec::<u32>::new(),
                "{name}: the light task overtook the heavy one waiting at the head"
            );
            gate.add_permits(1);
            for h in handles {
                within(name, h).await.unwrap();
            }
            assert_eq!(*order.lock().unwrap(), [8, 2], "{name}: not in FIFO order");
        }
    });
}

/// `SubmitOptions::priority`: "Higher runs first; FIFO among equal priorities", and the
/// README: "The queue stays a plain FIFO ring until the first task with a priority other
/// than 0". A user gives background jobs a negative priority. Pinned (CommonAioPool and
/// SmartAioPool, one slot): tasks queued at 0 before the first -1 (in the ring), then a
/// -1, then more at 0 and one at 5: the 5 first, then every 0 in submission order, then
/// the -1.
#[test]
fn pin_negative_priorities_go_after_the_zeros_queued_before_and_after_them() {
    let rt = support::paused_runtime();
    rt.block_on(async {
        for pool in flow_pools(1, 16, 1, FlowLimits::default()) {
            if let Pool::NoQueue(_) = pool {
                continue; // no queue
            }
            let name = pool.name();
            let gate = hold_one(&pool, None).await;
            let order = Arc::new(std::sync::Mutex::new(Vec::new()));
            let mut handles = Vec::new();
            for (label, prio) in [
                ("a0", 0),
                ("b0", 0),
                ("c-1", -1),
                ("d0", 0),
                ("e5", 5),
                ("f0", 0),
            ] {
                let o = order.clone();
                handles.push(
                    pool.submit_with(SubmitOptions::new().priority(prio), move || {
                        let o = o.clone();
                        async move { o.lock().unwrap().push(label) }
                    })
                    .await,
                );
            }
            gate.add_permits(1);
            for h in handles {
                within(name, h).await.unwrap();
            }
            assert_eq!(
                *order.lock().unwrap(),
                ["e5", "a0", "b0", "d0", "f0", "c-1"],
                "{name}: the queue did not run by priority, FIFO among equals"
            );
        }
    });
}

/// A stream with per-input timeouts that the user wants to go on after a timeout: the
/// docs say "the inputs after it stay in the input stream", which only helps if the user
/// kept the input stream (`inputs.by_ref()`), and "That input was pulled and produces no
/// item; its job is dropped without running": unlike `submit_with`'s `TimedOut`, which
/// hands the task back, the stream gives the timed-out input to nobody, and does not say
/// which it was. Pinned (CommonAioPool): mapping `by_ref()` again after the refusal runs
/// the rest; exactly one input is lost.
#[test]
fn pin_a_stream_resumed_after_a_timeout_loses_exactly_the_timed_out_input() {
    let rt = support::paused_runtime();
    rt.block_on(async {
        let pool = support::common_local(1, 1);
        let gate = hold_one(&Pool::Common(pool.clone()), None).await;
        let mut inputs = stream::iter(0..6u32);
        // The slot frees up after the timeout: input 0, queued, then runs.
        let g = gate.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            g.add_permits(1);
        });
        let first: Vec<u32> = within(
            "the first stream",
            pool.map_unordered(inputs.by_ref(), |i| async move { i })
                .with_options(|_| SubmitOptions::new().timeout(Duration::from_millis(50)))
                .map(Result::unwrap)
                .collect(),
        )
        .await;
        assert_eq!(
            first,
            [0],
            "the queue place should take input 0, and input 1 time out"
        );
        let rest: Vec<u32> = within(
            "the second stream",
            pool.map_ordered(inputs.by_ref(), |i| async move { i })
                .map(Result::unwrap)
                .collect(),
        )
        .await;
        assert_eq!(
            rest,
            [2, 3, 4, 5],
            "input 1 timed out and was lost; the rest remain"
        );
    });
}

/// Dropping a stream (or a group) whose tasks wait for their key ("Dropping the stream
/// aborts its unfinished jobs ... queued ones leave the pool's queue at once, their
/// places free"): the key's count is back too. Pinned on the three pools
/// (`max_per_key(1)`): a stream of one host's URLs, dropped after its first result; a
/// new task of that host then starts at once.
#[test]
fn pin_dropping_a_stream_of_one_host_frees_the_host() {
    let rt = support::paused_runtime();
    rt.block_on(async {
        for pool in flow_pools(4, 4, 4, FlowLimits::keys(1)) {
            let name = pool.name();
            let mut pages = pool
                .unordered(stream::iter(0..8u32), |i| async move {
                    tokio::time::sleep(Duration::from_millis(10 * (u64::from(i) + 1))).await;
                    i
                })
                .with_options(|_| SubmitOptions::new().key("a.example"));
            let first = within(name, pages.next()).await.unwrap().unwrap();
            assert_eq!(first, 0, "{name}");
            let in_flight = pages.in_flight();
            drop(pages);
            let stats = pool.stats();
            assert!(
                stats.queued == 0,
                "{name}: {} tasks stayed queued after the stream ({in_flight} in flight) was dropped",
                stats.queued
            );
            let t0 = tokio::time::Instant::now();
            let h = pool
                .submit_with(SubmitOptions::new().key("a.example"), || async {
                    tokio::time::Instant::now()
                })
                .await;
            let started = within(name, h).await.unwrap();
            assert!(
                started - t0 <= Duration::from_millis(20),
                "{name}: the host stayed busy for {:?} after the stream was dropped",
                started - t0
            );
            pool.wait_within().await;
        }
    });
}
