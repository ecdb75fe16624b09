//! Task groups and streams, as a review of them (2026-12-05, on aefe117) tried them:
//! random streams and groups on 2 workers (every input out once, in order for
//! `map_ordered`, never more pulled than the pool holds, the stats agreeing), a group
//! submit granted room then dropped, streams moved between runtimes or polled outside any;
//! and the regression tests of the two faults it found (RELIABILITY.md, findings 192-193).

mod support;

use support::Rng;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::Poll;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use nb_aiopool::{CancelReason, CommonAioPool, NoQueueAioPool, SmartAioPool};

/// Finding 192: a cancel-on-error group whose running task is aborted by `abort_all` (its
/// handle says `Aborted` at once; joined, or not yet), then used again ("the group stays
/// usable"):
/// the aborted task, still inside its poll on another thread, returns `Err` afterwards.
/// On aefe117 it trips the group: a task submitted after the abort is aborted, and later
/// submits are refused with `Closed`.
#[test]
fn an_aborted_task_failing_late_does_not_trip_the_group() {
    for join_first in [true, false] {
        let rt = support::multi_thread_of(2);
        rt.block_on(async {
            let pool = support::common_local(4, 4);
            let mut group = pool
                .group::<Result<u32, &'static str>>()
                .cancel_on_error(true);
            let (entered_tx, entered_rx) = mpsc::channel::<()>();
            let (go_tx, go_rx) = mpsc::channel::<()>();
            // Blocks its worker thread inside its poll until told to go on, then fails.
            group
                .submit(async move {
                    entered_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    Err("late failure")
                })
                .await
                .unwrap();
            entered_rx.recv().unwrap(); // the task is inside its poll, on a worker
            group.abort_all();
            if join_first {
                let r = group.join_next().await.unwrap();
                assert_eq!(r.unwrap_err().cancel_reason(), Some(CancelReason::Aborted));
            }
            // The group stays usable: new tasks.
            for _ in 0..2 {
                group
                    .submit(std::future::pending::<Result<u32, &str>>())
                    .await
                    .unwrap();
            }
            // The aborted task's poll now returns its `Err`.
            go_tx.send(()).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            let later = group.submit(async { Ok(1) }).await;
            assert!(
                later.is_ok(),
                "join_first {join_first}: a submit after the abort was refused: the group tripped"
            );
            if !join_first {
                let r = group.join_next().await.unwrap();
                assert_eq!(r.unwrap_err().cancel_reason(), Some(CancelReason::Aborted));
            }
            assert_eq!(group.join_next().await.unwrap().unwrap(), Ok(1));
            // The two pending tasks were not aborted by the aborted task's failure.
            let next = tokio::time::timeout(Duration::from_millis(100), group.join_next()).await;
            assert!(
                next.is_err(),
                "join_first {join_first}: a new task was aborted: {next:?}"
            );
        });
    }
}

// ----- probes ------------------------------------------------------------------------

enum P {
    C(CommonAioPool),
    N(NoQueueAioPool),
    S(SmartAioPool),
}

impl P {
    fn make(kind: u64, conc: usize, q: usize) -> (P, usize) {
        match kind {
            0 => (P::C(support::common_local(conc, q)), conc + q),
            1 => (
                P::N(
                    NoQueueAioPool::builder()
                        .max_concurrency(conc)
                        .process_wide(false)
                        .build(),
                ),
                conc,
            ),
            _ => (
                P::S(
                    SmartAioPool::builder()
                        .max_concurrency(conc)
                        .max_queue_size(q)
                        .auto_shutdown(false)
                        .process_wide(false)
                        .build(),
                ),
                conc + q,
            ),
        }
    }
    fn stats(&self) -> nb_aiopool::PoolStats {
        match self {
            P::C(p) => p.stats(),
            P::N(p) => p.stats(),
            P::S(p) => p.stats(),
        }
    }
    async fn wait(&self) {
        match self {
            P::C(p) => p.wait().await,
            P::N(p) => p.wait().await,
            P::S(p) => p.wait().await,
        }
    }
    fn room(&self) -> usize {
        let mut taken = Vec::new();
        loop {
            let h = match self {
                P::C(p) => p
                    .try_submit(std::future::pending::<()>())
                    .map(|h| h.abort_handle())
                    .ok(),
                P::N(p) => p
                    .try_submit(std::future::pending::<()>())
                    .map(|h| h.abort_handle())
                    .ok(),
                P::S(p) => p
                    .try_submit(std::future::pending::<()>)
                    .map(|h| h.abort_handle())
                    .ok(),
            };
            match h {
                Some(h) => taken.push(h),
                None => break,
            }
        }
        for h in &taken {
            h.abort();
        }
        taken.len()
    }
    fn stream(
        &self,
        ordered: bool,
        n: u64,
        ms: Arc<Vec<u64>>,
        pulls: Arc<AtomicUsize>,
    ) -> std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<u64, nb_aiopool::TaskError>> + Send>,
    > {
        let inputs = stream::iter(0..n).inspect(move |_| {
            pulls.fetch_add(1, Ordering::SeqCst);
        });
        let job = move |i: u64| {
            let d = ms[i as usize];
            async move {
                if d == 7 {
                    panic!("review probe panic");
                }
                tokio::time::sleep(Duration::from_millis(d)).await;
                i
            }
        };
        macro_rules! mk {
            ($p:expr, $f:expr) => {
                if ordered {
                    Box::pin($p.map_ordered(inputs, $f))
                } else {
                    Box::pin($p.map_unordered(inputs, $f))
                }
            };
        }
        match self {
            P::C(p) => mk!(p, job),
            P::N(p) => mk!(p, job),
            P::S(p) => mk!(p, move |i| {
                let job = job.clone();
                move || job(i)
            }),
        }
    }
}

/// Random streams on 2 workers, dropped at random points: every item once, in order for
/// ordered, never more pulled than the pool holds ahead of the consumer, and the pool's
/// counts and room agree afterwards.
#[test]
fn probe_streams_random() {
    support::hide_panics(&["review probe panic"]);
    let rounds: u64 = std::env::var("PROBE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let rt = support::multi_thread_of(2);
    for seed in 1..=rounds {
        let mut rng = Rng::new(seed);
        let kind = rng.below(3);
        let conc = 1 + rng.below(3) as usize;
        let q = rng.below(4) as usize;
        let ordered = rng.below(2) == 0;
        let n = 1 + rng.below(60);
        let ms: Arc<Vec<u64>> = Arc::new((0..n).map(|_| rng.below(9)).collect());
        let stop_at = if rng.below(3) == 0 {
            Some(rng.below(n))
        } else {
            None
        };
        let desc = format!(
            "seed {seed} kind {kind} conc {conc} q {q} ordered {ordered} n {n} stop {stop_at:?}"
        );
        rt.block_on(async {
            let (pool, cap) = P::make(kind, conc, q);
            let pulls = Arc::new(AtomicUsize::new(0));
            let mut s = pool.stream(ordered, n, ms.clone(), pulls.clone());
            let mut seen = Vec::new();
            let mut yielded = 0usize;
            loop {
                if Some(yielded as u64) == stop_at {
                    break;
                }
                let next = tokio::time::timeout(Duration::from_secs(10), s.next())
                    .await
                    .unwrap_or_else(|_| panic!("{desc}: stream hung"));
                let Some(r) = next else { break };
                yielded += 1;
                let pulled = pulls.load(Ordering::SeqCst);
                assert!(
                    pulled <= yielded - 1 + cap.max(1),
                    "{desc}: pulled {pulled} yielded {yielded} cap {cap}"
                );
                match r {
                    Ok(i) => seen.push(i),
                    Err(e) => {
                        assert!(e.is_panic(), "{desc}: {e:?}");
                        seen.push(u64::MAX);
                    }
                }
            }
            drop(s);
            if stop_at.is_none() {
                assert_eq!(seen.len() as u64, n, "{desc}");
                let mut got: Vec<u64> = (0..n).filter(|&i| ms[i as usize] != 7).collect();
                let mut mine: Vec<u64> = seen.iter().copied().filter(|&i| i != u64::MAX).collect();
                if !ordered {
                    mine.sort();
                    got.sort();
                }
                assert_eq!(mine, got, "{desc}");
            }
            tokio::time::timeout(Duration::from_secs(10), pool.wait())
                .await
                .unwrap_or_else(|_| panic!("{desc}: wait hung"));
            tokio::time::sleep(Duration::from_millis(5)).await;
            let st = pool.stats();
            assert_eq!((st.running, st.queued), (0, 0), "{desc}: {st:?}");
            assert_eq!(
                st.submitted,
                st.completed + st.cancelled + st.panicked,
                "{desc}: {st:?}"
            );
            assert_eq!(
                st.submitted as usize,
                pulls.load(Ordering::SeqCst),
                "{desc}: {st:?}"
            );
            assert_eq!(pool.room(), cap, "{desc}: room");
        });
    }
}

/// Random groups on 2 workers: submits (some dropped by a timeout while waiting for room),
/// try_submits, join_next (some dropped), abort_all, then join_all: every accepted task's
/// result once, none of a submit that was dropped or refused.
#[test]
fn probe_groups_random() {
    let rounds: u64 = std::env::var("PROBE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let rt = support::multi_thread_of(2);
    for seed in 1..=rounds {
        let mut rng = Rng::new(seed);
        let kind = rng.below(2); // Common, NoQueue (futures)
        let conc = 1 + rng.below(3) as usize;
        let q = rng.below(3) as usize;
        let coe = rng.below(2) == 0;
        let ops = 1 + rng.below(60);
        let desc = format!("seed {seed} kind {kind} conc {conc} q {q} coe {coe}");
        rt.block_on(async {
            let (pool, cap) = P::make(kind, conc, q);
            let mut group = match &pool {
                P::C(p) => p.group::<Result<u64, u64>>(),
                P::N(p) => p.group::<Result<u64, u64>>(),
                _ => unreachable!(),
            };
            if coe {
                group = group.cancel_on_error(true);
            }
            let mut accepted = std::collections::HashSet::new();
            let mut got: Vec<Result<Result<u64, u64>, nb_aiopool::TaskError>> = Vec::new();
            for i in 0..ops {
                let d = rng.below(6);
                let fail = rng.below(20) == 0;
                let fut = async move {
                    tokio::time::sleep(Duration::from_millis(d)).await;
                    if fail {
                        Err(i)
                    } else {
                        Ok(i)
                    }
                };
                match rng.below(6) {
                    0 | 1 => {
                        if let Ok(r) = tokio::time::timeout(
                            Duration::from_millis(rng.below(3)),
                            group.submit(fut),
                        )
                        .await
                        {
                            if r.is_ok() {
                                accepted.insert(i);
                            }
                        }
                    }
                    2 => {
                        if group.try_submit(fut).is_ok() {
                            accepted.insert(i);
                        }
                    }
                    3 => {
                        if let Ok(Some(r)) = tokio::time::timeout(
                            Duration::from_millis(rng.below(3)),
                            group.join_next(),
                        )
                        .await
                        {
                            got.push(r);
                        }
                    }
                    4 => {
                        if rng.below(4) == 0 {
                            group.abort_all();
                        }
                    }
                    _ => tokio::task::yield_now().await,
                }
            }
            let left = group.len();
            let rest = tokio::time::timeout(Duration::from_secs(10), group.join_all())
                .await
                .unwrap_or_else(|_| panic!("{desc}: join_all hung"));
            assert_eq!(rest.len(), left, "{desc}");
            got.extend(rest);
            assert_eq!(got.len(), accepted.len(), "{desc}: results vs accepted");
            let mut values = std::collections::HashSet::new();
            for v in got.iter().flatten() {
                let i = match v {
                    Ok(i) | Err(i) => *i,
                };
                assert!(
                    accepted.contains(&i),
                    "{desc}: result of a task not accepted: {i}"
                );
                assert!(values.insert(i), "{desc}: result twice: {i}");
            }
            tokio::time::timeout(Duration::from_secs(10), pool.wait())
                .await
                .unwrap_or_else(|_| panic!("{desc}: wait hung"));
            tokio::time::sleep(Duration::from_millis(5)).await;
            let st = pool.stats();
            assert_eq!((st.running, st.queued), (0, 0), "{desc}: {st:?}");
            assert_eq!(
                st.submitted,
                st.completed + st.cancelled + st.panicked,
                "{desc}: {st:?}"
            );
            assert_eq!(st.submitted as usize, accepted.len(), "{desc}: {st:?}");
            assert_eq!(pool.room(), cap, "{desc}: room");
        });
    }
}

/// A stream polled on one runtime, which then ends, and polled on to its end on another:
/// every input yields one item, nothing hangs, and the counts agree.
#[test]
fn probe_stream_moves_between_runtimes() {
    for kind in 0..3u64 {
        for ordered in [false, true] {
            let (pool, cap) = P::make(kind, 2, 2);
            let pulls = Arc::new(AtomicUsize::new(0));
            let ms = Arc::new(vec![50u64; 20]);
            let mut s = pool.stream(ordered, 20, ms, pulls.clone());
            let rt_a = support::multi_thread_of(1);
            let mut items = Vec::new();
            rt_a.block_on(async {
                items.push(s.next().await.unwrap());
            });
            drop(rt_a);
            let rt_b = support::current_thread();
            rt_b.block_on(async {
                while let Some(r) = tokio::time::timeout(Duration::from_secs(10), s.next())
                    .await
                    .unwrap_or_else(|_| panic!("kind {kind} ordered {ordered}: hung"))
                {
                    items.push(r);
                }
                drop(s);
                tokio::time::timeout(Duration::from_secs(10), pool.wait())
                    .await
                    .unwrap();
                let st = pool.stats();
                eprintln!(
                    "kind {kind} ordered {ordered}: {} items, {st:?}",
                    items.len()
                );
                assert_eq!(items.len(), 20, "kind {kind} ordered {ordered}");
                assert_eq!(st.submitted, st.completed + st.cancelled + st.panicked);
                assert_eq!(pool.room(), cap);
            });
        }
    }
}

/// A stream polled from a plain executor (no tokio runtime), the pool's runtime alive on
/// another thread.
#[test]
fn probe_stream_polled_outside_any_runtime() {
    let rt = support::multi_thread_of(1);
    for kind in 0..3u64 {
        for ordered in [false, true] {
            let (pool, _cap) = rt.block_on(async { P::make(kind, 2, 2) });
            rt.block_on(pool.wait());
            let pulls = Arc::new(AtomicUsize::new(0));
            let ms = Arc::new(vec![5u64; 20]);
            let s = pool.stream(ordered, 20, ms, pulls.clone());
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let items: Vec<_> = support::plain_block_on(s.collect::<Vec<_>>());
                tx.send(items.len()).unwrap();
            });
            let n = rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("kind {kind} ordered {ordered}: hung"));
            assert_eq!(n, 20, "kind {kind} ordered {ordered}");
        }
    }
}

/// A group submit waiting for room, granted a place, then dropped before it is polled
/// again: the place is not lost, the future is dropped once, and nothing is submitted.
#[tokio::test(start_paused = true)]
async fn probe_group_submit_granted_then_dropped() {
    for coe in [false, true] {
        for kind in 0..2u64 {
            let (pool, cap) = P::make(kind, 1, 1);
            let mut group = match &pool {
                P::C(p) => p.group::<Result<(), ()>>(),
                P::N(p) => p.group::<Result<(), ()>>(),
                _ => unreachable!(),
            };
            if coe {
                group = group.cancel_on_error(true);
            }
            let mut other = match &pool {
                P::C(p) => p.group::<Result<(), ()>>(),
                P::N(p) => p.group::<Result<(), ()>>(),
                _ => unreachable!(),
            };
            // Fill the pool with tasks of `other`.
            while other.try_submit(std::future::pending()).is_ok() {}
            let dropped = Arc::new(AtomicUsize::new(0));
            let d = support::Counted(dropped.clone());
            let mut submit = Box::pin(group.submit(async move {
                let _d = d;
                Ok(())
            }));
            assert!(
                std::future::poll_fn(|cx| Poll::Ready(submit.as_mut().poll(cx)))
                    .await
                    .is_pending()
            );
            other.abort_all(); // room: granted to the waiting submit
            tokio::task::yield_now().await;
            drop(submit);
            assert_eq!(dropped.load(Ordering::SeqCst), 1, "coe {coe} kind {kind}");
            assert_eq!(group.len(), 0);
            while other.join_next().await.is_some() {}
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(
                pool.stats().submitted as usize,
                cap,
                "coe {coe} kind {kind}"
            );
            assert_eq!(pool.room(), cap, "coe {coe} kind {kind}: room");
        }
    }
}

/// Finding 193: a stream first polled outside the pool, waiting for room, then moved into a
/// job of that pool (which another job awaits): on aefe117 it keeps waiting there for good (the
/// nested check was made when its wait began), where a stream made in the job is
/// refused with `WouldDeadlock` and ends.
#[tokio::test(start_paused = true)]
async fn a_stream_moved_into_a_job_while_waiting_for_room_does_not_deadlock_silently() {
    let pool = support::common_local(2, 0);
    let (tx, rx) = tokio::sync::oneshot::channel::<nb_aiopool::MapUnordered<_, u32>>();
    let x = pool
        .submit(async move {
            let s = rx.await.unwrap();
            s.count().await
        })
        .await
        .unwrap();
    let b = pool.submit(async move { x.await.unwrap() }).await.unwrap();
    tokio::task::yield_now().await;
    let mut s = pool.map_unordered(stream::iter(0..3u32), |i| async move { i });
    assert!(
        std::future::poll_fn(|cx| Poll::Ready(s.poll_next_unpin(cx)))
            .await
            .is_pending()
    );
    tx.send(s).ok().unwrap();
    let r = tokio::time::timeout(Duration::from_secs(60), b).await;
    assert_eq!(
        r.ok().map(Result::ok),
        Some(Some(0)),
        "the two jobs deadlocked silently"
    );
}
