//! Tests written by a hand-made mutation review of the surface (task groups, map streams,
//! task handles, the process-wide registry and SmartAioPool's at-exit path): each pins a
//! behaviour that a plausible one-token change to `src/pool/group/`, `src/pool/stream/`,
//! `src/task/handle.rs`, `src/pool/registry.rs` or `src/pool/smart/process_wide.rs`
//! altered while the rest of the suite still passed (see the doc comment of each test for
//! the mutation it catches). 40 mutations: 32 caught by the suite before, these eight
//! tests written for the rest (one each; each checked to fail with its mutation).

mod support;

use std::time::Duration;

use futures_util::{stream, Stream, StreamExt};
use nb_aiopool::{CommonAioPool, SubmitErrorKind, SubmitOptions};
use support::Gate;

/// A stream's `refused()` keeps saying why the pool stopped taking its jobs after the
/// stream's `abort_all`.
///
/// Catches `Mapper::stop_intake` (src/pool/stream/mod.rs) storing its reason
/// unconditionally (`if refused.is_some()` dropped): `abort_all`, which stops the intake
/// with no reason, then wiped the `Closed` the stream had been refused with.
#[tokio::test(start_paused = true)]
async fn a_streams_refusal_stays_after_abort_all() {
    let pool = CommonAioPool::new(2, 2);
    pool.shutdown().await;
    let mut unordered = pool.map_unordered(stream::iter(0..3), |i| async move { i });
    let mut ordered = pool.map_ordered(stream::iter(0..3), |i| async move { i });
    let bound = Duration::from_secs(60);
    assert!(tokio::time::timeout(bound, unordered.next())
        .await
        .unwrap()
        .is_none());
    assert!(tokio::time::timeout(bound, ordered.next())
        .await
        .unwrap()
        .is_none());
    assert_eq!(unordered.refused(), Some(SubmitErrorKind::Closed));
    assert_eq!(ordered.refused(), Some(SubmitErrorKind::Closed));
    unordered.abort_all();
    ordered.abort_all();
    assert_eq!(unordered.refused(), Some(SubmitErrorKind::Closed));
    assert_eq!(ordered.refused(), Some(SubmitErrorKind::Closed));
}

/// A stream given options that pulled an input and waits for room for it (the pool is
/// full) counts that input in its `size_hint`'s upper bound: the stream then yields as
/// many results as the bound says at most.
///
/// Catches `Mapper::size_hint` (src/pool/stream/mod.rs) leaving out the staged input
/// (`held + usize::from(self.staged)` cut to `held`): the upper bound was one short of
/// what the stream went on to yield.
#[tokio::test(start_paused = true)]
async fn a_streams_size_hint_counts_the_input_waiting_for_room() {
    let pool = CommonAioPool::new(1, 0);
    let gate = Gate::new();
    let blocker = pool.submit(gate.wait()).await.unwrap();
    let mut results = pool
        .map_unordered(stream::iter(0..3u32), |i| async move { i })
        .with_options(|_| SubmitOptions::new());
    // The pool is full: the first input is pulled and waits for room.
    assert!(
        tokio::time::timeout(Duration::from_millis(10), results.next())
            .await
            .is_err(),
        "the pool is full"
    );
    let (_, most) = results.size_hint();
    gate.open();
    tokio::time::timeout(Duration::from_secs(60), blocker)
        .await
        .unwrap()
        .unwrap();
    let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(60), results.collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(rest.len(), 3);
    let most = most.expect("the inputs' count is known");
    assert!(
        most >= rest.len(),
        "size_hint said at most {most}, the stream yielded {}",
        rest.len()
    );
}

/// A group's `join_all` gives the remaining results in submission order, also for tasks a
/// `join_next` had begun to poll together (a `join_next` cut short by a timeout moves them
/// there), which end in another order.
///
/// Catches `Group::join_all` (src/pool/group/mod.rs) without its sort of the results of
/// the tasks polled together (`joined.0.sort_unstable_by_key(|(seq, _)| *seq)` dropped):
/// they came in the order they ended, the last submitted first.
#[tokio::test(start_paused = true)]
async fn join_all_keeps_submission_order_after_a_join_next_was_cut_short() {
    let pool = CommonAioPool::new(4, 4);
    let mut group = pool.group::<u64>();
    for i in 0..4u64 {
        group
            .submit(async move {
                // The later submitted, the sooner it ends.
                tokio::time::sleep(Duration::from_millis(100 * (4 - i))).await;
                i
            })
            .await
            .unwrap();
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(10), group.join_next())
            .await
            .is_err(),
        "no task has ended"
    );
    let results: Vec<u64> = tokio::time::timeout(Duration::from_secs(60), group.join_all())
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(results, vec![0, 1, 2, 3]);
}

/// A stream polled inside a job of its own pool, which took a place and waits for its
/// input, does not pull an input that arrives once the pool was shut down: the input is
/// not consumed (`f` is not called for it) for a job the pool would refuse, and the stream
/// ends with `refused() == Some(Closed)` (the docs' "Refusal": "one that took a place
/// checks that the pool is still open right before it pulls an input").
///
/// Catches `Mapper::fill` (src/pool/stream/mod.rs) without that check
/// (`if self.feed.is_closed()` before the pull dropped): the input was pulled, `f` ran on
/// it, and its job was refused and dropped.
#[tokio::test(start_paused = true)]
async fn a_stream_holding_a_place_pulls_no_input_once_its_pool_is_shut_down() {
    use futures_util::FutureExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let pool = CommonAioPool::new(2, 2);
    let calls = Arc::new(AtomicUsize::new(0));
    let job = {
        let (pool, calls) = (pool.clone(), Arc::clone(&calls));
        async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
            let inputs = stream::poll_fn(move |cx| rx.poll_recv(cx));
            let counted = Arc::clone(&calls);
            let mut results = pool.map_unordered(inputs, move |i| {
                counted.fetch_add(1, Ordering::SeqCst);
                async move { i }
            });
            // Takes a place, then waits for the input (inside the pool: the place is kept).
            assert!(results.next().now_or_never().is_none(), "no input yet");
            tx.send(1).unwrap();
            drop(pool.shutdown());
            let next = results.next().await;
            (next.is_none(), results.refused())
        }
    };
    let handle = pool.submit(job).await.unwrap();
    let (ended, refused) = tokio::time::timeout(Duration::from_secs(60), handle)
        .await
        .expect("the job ended")
        .unwrap();
    assert!(ended, "the stream yielded nothing");
    assert_eq!(refused, Some(SubmitErrorKind::Closed));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the input was pulled for a job the closed pool refused"
    );
}

/// An ordered stream polled inside a job of its own pool (where it polls its jobs
/// together and puts results that come early aside) is not terminated (`FusedStream`)
/// while results put aside are still to be yielded: a `select!` would otherwise stop
/// polling it and lose them.
///
/// Catches `Mapper::is_done` (src/pool/stream/mod.rs) without its look at the results put
/// aside (`&& self.buffer.is_empty()` dropped): after the first result, with the last
/// two put aside, the stream said it was terminated.
#[tokio::test(start_paused = true)]
async fn an_ordered_stream_in_its_own_pool_is_not_terminated_while_results_wait() {
    use futures_util::stream::FusedStream;

    let pool = CommonAioPool::new(4, 4);
    let job = {
        let pool = pool.clone();
        async move {
            let mut results = pool.map_ordered(stream::iter(0..3u64), |i| async move {
                // The later the input, the sooner its job ends.
                tokio::time::sleep(Duration::from_millis(100 * (3 - i))).await;
                i
            });
            let mut seen = Vec::new();
            let mut terminated_early = Vec::new();
            while let Some(r) = results.next().await {
                seen.push(r.unwrap());
                if seen.len() < 3 && results.is_terminated() {
                    terminated_early.push(seen.len());
                }
            }
            assert!(results.is_terminated());
            (seen, terminated_early)
        }
    };
    let handle = pool.submit(job).await.unwrap();
    let (seen, terminated_early) = tokio::time::timeout(Duration::from_secs(60), handle)
        .await
        .expect("the job ended")
        .unwrap();
    assert_eq!(seen, vec![0, 1, 2]);
    assert!(
        terminated_early.is_empty(),
        "terminated after {terminated_early:?} of 3 results"
    );
}

// ----- the exit report and the at-exit run (child processes) ------------------------------

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let (scenario, dir) = support::child_scenario();
    match scenario.as_str() {
        "unlike-dropped-pools" => unlike_dropped_pools(),
        "cut-shut-down-dropped" => cut_shut_down_dropped(),
        "stranded-orphan-then-a-build" => stranded_orphan_then_a_build(&dir),
        other => panic!("unknown scenario {other}"),
    }
}

/// Two CommonAioPools of one name, one of 1 slot and one of 2, each dropped with three
/// tasks its runtime's end cancels.
fn unlike_dropped_pools() {
    for slots in [1, 2] {
        let rt = support::current_thread();
        rt.block_on(async {
            let pool = CommonAioPool::builder()
                .max_concurrency(slots)
                .name("per-request")
                .build();
            for _ in 0..3 {
                pool.submit(tokio::time::sleep(Duration::from_secs(3600)))
                    .await
                    .unwrap()
                    .detach();
            }
        });
    }
}

/// Dropped pools are reported together only when they are alike, sizes included: two
/// pools of one name but of 1 and 2 slots get a line each, each with its own size.
///
/// Catches `remember_dropped` (src/pool/registry.rs) matching dropped pools without their
/// size (`&& f.figures.max_concurrency == new.figures.max_concurrency` dropped): the two
/// were reported as "2 dropped CommonAioPools ... (max_concurrency 1)".
#[test]
fn dropped_pools_of_other_sizes_are_reported_apart() {
    let c = support::run_child("unlike-dropped-pools", 30);
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    let warnings: Vec<&str> = c
        .stderr
        .lines()
        .filter(|l| l.starts_with("nb_aiopool: warning"))
        .collect();
    assert_eq!(warnings.len(), 2, "stderr: {}", c.stderr);
    for slots in [1, 2] {
        let line = format!("a CommonAioPool named \"per-request\" (max_concurrency {slots})");
        assert_eq!(
            warnings.iter().filter(|w| w.contains(&line)).count(),
            1,
            "{line}; stderr: {}",
            c.stderr
        );
    }
}

/// A `rerun_interrupted(false)` pool: two runs cut by the end of their runtime, then the
/// pool is shut down (it remembers its cut runs) and dropped (its drop hook remembers them
/// again, if it forgot it had), and the process exits.
fn cut_shut_down_dropped() {
    let pool = nb_aiopool::SmartAioPool::builder()
        .name("dropped-mailer")
        .max_concurrency(2)
        .rerun_interrupted(false)
        .build();
    let rt = support::multi_thread_of(1);
    rt.block_on(async {
        let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..2 {
            let s = std::sync::Arc::clone(&started);
            pool.submit(move || {
                s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::future::pending::<()>()
            })
            .await
            .unwrap()
            .detach();
        }
        while started.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    drop(rt);
    support::multi_thread_of(1).block_on(pool.shutdown());
    drop(pool);
}

/// Runs cut by the end of their runtime are reported once at the exit, however many
/// times the pool remembered them (its shutdown, then its drop).
///
/// Catches `note_cut` (src/pool/smart/process_wide.rs) reading the count reported so far
/// without updating it (`told.swap(lost, ..)` turned into `told.load(..)`): the drop
/// remembered the two cut runs again, and the exit said 4.
#[test]
fn runs_cut_before_a_shutdown_and_a_drop_are_reported_once() {
    let c = support::run_child("cut-shut-down-dropped", 30);
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    let line = "2 task(s) of SmartAioPool \"dropped-mailer\" were interrupted by the end";
    assert_eq!(c.stderr.matches(line).count(), 1, "stderr: {:?}", c.stderr);
    assert_eq!(
        c.stderr.matches("dropped-mailer").count(),
        1,
        "stderr: {:?}",
        c.stderr
    );
}

/// An `auto_shutdown(true)`, `process_wide(false)` SmartAioPool: a task whose first run
/// is cut by the end of its runtime (re-runs on: it is stranded, with no runtime left),
/// its handle and the pool's dropped; then another pool is built (which looks at the
/// pools left without handles), and the process exits. The exit runs the task again.
fn stranded_orphan_then_a_build(dir: &std::path::Path) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let pool = nb_aiopool::SmartAioPool::builder()
        .name("orphan")
        .max_concurrency(1)
        .auto_shutdown(true)
        .process_wide(false)
        .build();
    let runs = Arc::new(AtomicUsize::new(0));
    let done = dir.join("done");
    let rt = support::multi_thread_of(1);
    rt.block_on(async {
        let r = Arc::clone(&runs);
        pool.submit(move || {
            let first = r.fetch_add(1, Ordering::SeqCst) == 0;
            let done = done.clone();
            async move {
                if first {
                    std::future::pending::<()>().await;
                }
                std::fs::write(done, "done").unwrap();
            }
        })
        .await
        .unwrap()
        .detach();
        while runs.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    drop(rt);
    drop(pool);
    let other = nb_aiopool::SmartAioPool::builder()
        .auto_shutdown(false)
        .process_wide(false)
        .build();
    drop(other);
}

/// A pool the exit runs (`auto_shutdown(true)`), left without handles with a task its
/// runtime's end stranded, is not forgotten when the next pool is built: the exit runs the
/// task to its end, even though the pool is not `process_wide`.
///
/// Catches `forget_if_unused` (src/pool/smart/process_wide.rs) asking for both settings
/// (`pool.auto_shutdown || pool.process_wide` turned into `&&`): the pool was judged by
/// the work it owes someone who can still see it, which leaves out a stranded task whose
/// handle is gone, so it was forgotten (closed, dropped) and the task cancelled unrun.
#[test]
fn a_stranded_task_of_an_auto_shutdown_pool_without_handles_runs_at_exit() {
    let c = support::run_child("stranded-orphan-then-a-build", 60);
    let done = std::fs::read_to_string(c.dir.join("done")).ok();
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert_eq!(
        done.as_deref(),
        Some("done"),
        "the stranded task did not run at exit; stderr: {:?}",
        c.stderr
    );
}
