//! A review of what the observability features (`tracing`, `metrics`) and `stats()` see of
//! the options surface: a task group's `submit_with` / `try_submit_with` (with and without
//! a watcher, the three pools) and a map stream's `with_options` (unordered and ordered).
//! One finding (RELIABILITY.md, 392: `a_fan_out_that_retries_in_its_own_pool_reports_no_refusal`,
//! which failed before its fix) and pins.
//!
//! Each refusal is made through the pool's own `submit_with` and through each of these,
//! on a pool of its own, and what the features and `stats()` saw is compared; groups and
//! streams are dropped half-way through flow-controlled work and the gauges, counters and
//! events checked; the task spans are matched to the ids the groups return.
//!
//! `cargo nextest run -p nb-aiopool --all-features --test observing_the_options_surface` (the tests need
//! both features).

mod support;

#[cfg(feature = "tracing")]
mod collector;
#[cfg(feature = "metrics")]
mod metric_figures;

#[cfg(all(feature = "tracing", feature = "metrics"))]
mod with_both {
    use std::collections::HashSet;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;
    use std::time::Duration;

    use futures_util::{stream, StreamExt};
    use nb_aiopool::{
        CommonAioPool, NoQueueAioPool, PoolStats, SmartAioPool, SubmitErrorKind, SubmitOptions,
    };
    use tracing::Instrument;

    use super::collector::Collector;
    use super::metric_figures::Figures;
    use super::support::{self, make, per_pool, within, BoxFut, Gate, Group, Make, Pool};

    // ----- helpers ----------------------------------------------------------------------------

    /// Runs `f` with this thread's `metrics` recorder and `tracing` subscriber set to a
    /// fresh recorder and collector (one test at a time: `serial`), giving it the
    /// collector and the recorder's snapshotter.
    fn observed(f: impl FnOnce(&Collector, &metrics_util::debugging::Snapshotter)) {
        let _serial = support::serial();
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let log = Collector::default();
        metrics::with_local_recorder(&recorder, || {
            tracing::subscriber::with_default(log.clone(), || f(&log, &snapshotter));
        });
    }

    /// The task spans of pool `name`, and its (queue-wait, run-time) histogram samples:
    /// each task that started has one of each.
    fn spans_and_samples(
        log: &Collector,
        figures: &Figures,
        name: &str,
    ) -> (usize, (usize, usize)) {
        let spans = log.task_spans(name).values().map(Vec::len).sum();
        let hist = |n: &str| figures.get(metrics_util::MetricKind::Histogram, n) as usize;
        let samples = (
            hist("nb_aiopool_queue_wait_seconds"),
            hist("nb_aiopool_run_time_seconds"),
        );
        (spans, samples)
    }

    /// A job that returns `v` at once.
    fn value(v: u32) -> Make<u32> {
        make(move || std::future::ready(v))
    }

    /// A job that waits at `gate`, then returns `v`.
    fn gated(gate: &Gate, v: u32) -> Make<u32> {
        let gate = gate.clone();
        make(move || {
            let wait = gate.wait();
            async move {
                wait.await;
                v
            }
        })
    }

    /// Lets the runtime run everything that is ready (paused time does not move).
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    /// Polls `fut` once.
    async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
    }

    /// The three kinds of pool.
    const KINDS: [&str; 3] = ["common", "no_queue", "smart"];

    /// Flow-control settings of a pool built by [`build`].
    #[derive(Clone, Copy, Default)]
    struct Limits {
        max_per_key: Option<usize>,
        weight_capacity: Option<u64>,
        rate: Option<(u32, Duration)>,
    }

    /// A pool of `kind` named `name`, with `conc` slots and `queue` queue places (none for
    /// NoQueueAioPool), and `limits`; built where it is called (the recorder in place then
    /// receives its metrics).
    fn build(kind: &str, name: &str, conc: usize, queue: usize, limits: Limits) -> Pool {
        macro_rules! limited {
            ($b:expr) => {{
                let mut b = $b.name(name).max_concurrency(conc).process_wide(false);
                if let Some(k) = limits.max_per_key {
                    b = b.max_per_key(k);
                }
                if let Some(w) = limits.weight_capacity {
                    b = b.weight_capacity(w);
                }
                if let Some((n, per)) = limits.rate {
                    b = b.rate_limit(n, per);
                }
                b
            }};
        }
        match kind {
            "common" => Pool::Common(
                limited!(CommonAioPool::builder())
                    .max_queue_size(queue)
                    .build(),
            ),
            "no_queue" => Pool::NoQueue(limited!(NoQueueAioPool::builder()).build()),
            _ => Pool::Smart(
                limited!(SmartAioPool::builder())
                    .max_queue_size(queue)
                    .auto_shutdown(false)
                    .build(),
            ),
        }
    }

    /// The pool's `shutdown()`: intake closes at the call.
    fn shutdown(pool: &Pool) -> BoxFut<()> {
        per_pool!(pool, |p| Box::pin(p.shutdown()), |p| Box::pin(p.shutdown()))
    }

    /// The pool's own `submit_with(job, opts)`, the handle dropped (the task detached).
    async fn own_submit_with(
        pool: &Pool,
        job: Make<u32>,
        opts: SubmitOptions,
    ) -> Result<(), SubmitErrorKind> {
        per_pool!(
            pool,
            |p| p
                .submit_with(job(), opts)
                .await
                .map(drop)
                .map_err(|e| e.kind()),
            |p| p
                .submit_with(move || job(), opts)
                .await
                .map(drop)
                .map_err(|e| e.kind())
        )
    }

    /// How a task is submitted.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Via {
        /// The pool's own `submit_with`.
        Pool,
        /// A task group's `submit_with`.
        Group,
        /// A task group's `submit_with` with cancel-on-panic (its watcher).
        Watched,
        /// `map_unordered(..).with_options(..)` of one input.
        Unordered,
        /// `map_ordered(..).with_options(..)` of one input.
        Ordered,
    }

    const VIAS: [Via; 5] = [
        Via::Pool,
        Via::Group,
        Via::Watched,
        Via::Unordered,
        Via::Ordered,
    ];

    /// A new group of `pool` (watched: cancel-on-panic).
    fn group_of(pool: &Pool, watched: bool) -> Group<u32> {
        let g = pool.task_group::<u32>();
        if watched {
            g.cancel_on_panic(true)
        } else {
            g
        }
    }

    /// A stream of `pool` over `inputs` mapping each to `job`, each input with `opts`.
    fn stream_of(
        pool: &Pool,
        ordered: bool,
        inputs: Vec<u32>,
        job: impl Fn(u32) -> Make<u32> + Clone + Send + Sync + 'static,
        opts: impl Fn(&u32) -> SubmitOptions + Send + 'static,
    ) -> Pin<Box<dyn futures_util::Stream<Item = Result<u32, nb_aiopool::TaskError>> + Send>> {
        let f = move |i: u32| job(i)();
        if ordered {
            Box::pin(pool.ordered(stream::iter(inputs), f).with_options(opts))
        } else {
            Box::pin(pool.unordered(stream::iter(inputs), f).with_options(opts))
        }
    }

    /// One submit of `job` with `opts` through `via`: `Ok` if the pool accepted it, else the
    /// refusal's kind. A group is kept in `keep` (its tasks run on); a stream of the one
    /// input is read to its end (so `job` must end) and its `refused()` read.
    async fn attempt(
        pool: &Pool,
        via: Via,
        job: Make<u32>,
        opts: SubmitOptions,
        keep: &mut Vec<Group<u32>>,
    ) -> Result<(), SubmitErrorKind> {
        match via {
            Via::Pool => own_submit_with(pool, job, opts).await,
            Via::Group | Via::Watched => {
                let mut g = group_of(pool, via == Via::Watched);
                let r = g.submit_with(job, opts).await.map(drop).map_err(|r| r.kind);
                keep.push(g);
                r
            }
            Via::Unordered | Via::Ordered => {
                let ordered = via == Via::Ordered;
                macro_rules! read {
                    ($s:expr) => {{
                        let mut s = $s;
                        let mut n = 0;
                        while s.next().await.is_some() {
                            n += 1;
                        }
                        match s.refused() {
                            Some(kind) => Err(kind),
                            None => {
                                assert_eq!(n, 1, "a stream of one input accepted gave no item");
                                Ok(())
                            }
                        }
                    }};
                }
                let f = move |_: u32| job();
                let o = move |_: &u32| opts.clone();
                if ordered {
                    read!(pool.ordered(stream::iter([0u32]), f).with_options(o))
                } else {
                    read!(pool.unordered(stream::iter([0u32]), f).with_options(o))
                }
            }
        }
    }

    /// What the features and `stats()` saw of one scenario's pool.
    #[derive(Debug, PartialEq)]
    struct Seen {
        /// The attempt's result.
        result: Result<(), SubmitErrorKind>,
        /// The `submit rejected` events of the pool: (reason, name of the span it was in).
        rejected: Vec<(String, Option<String>)>,
        /// `stats()` once the scenario's work ended.
        stats: PoolStats,
        /// Where the metrics disagreed with `stats()` then, if they did.
        metrics_vs_stats: Option<String>,
        /// The `nb_aiopool_submits_rejected` counts by reason.
        rejected_counted: Vec<(String, u64)>,
        /// The gauges (queued, running) once the pool was dropped.
        gauges_after_drop: (f64, f64),
    }

    /// The `submit rejected` events of pool `name`, with the name of the span each was in.
    fn rejections(log: &Collector, name: &str) -> Vec<(String, Option<String>)> {
        log.events_of(name)
            .into_iter()
            .filter(|e| e.fields.get("message") == Some("submit rejected"))
            .map(|e| {
                (
                    e.fields.get("reason").unwrap_or("<none>").to_string(),
                    e.span.map(|s| log.span(s).0),
                )
            })
            .collect()
    }

    /// The refusals a submit can meet, each made on a fresh pool of one slot and no queue,
    /// `weight_capacity(2)`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Refusal {
        /// Weight 3, with room.
        HeavyWithRoom,
        /// Weight 3, the pool full.
        HeavyWhenFull,
        /// A 20 ms timeout, the pool full.
        TimedOut,
        /// After `shutdown()`.
        ClosedBefore,
        /// Waiting for room when `shutdown()` is called.
        ClosedWhileWaiting,
        /// From inside a job of the full pool.
        WouldDeadlock,
        /// Outside any runtime, into a pool that knows none.
        NoRuntime,
    }

    const REFUSALS: [Refusal; 7] = [
        Refusal::HeavyWithRoom,
        Refusal::HeavyWhenFull,
        Refusal::TimedOut,
        Refusal::ClosedBefore,
        Refusal::ClosedWhileWaiting,
        Refusal::WouldDeadlock,
        Refusal::NoRuntime,
    ];

    impl Refusal {
        fn kind(self) -> SubmitErrorKind {
            match self {
                Refusal::HeavyWithRoom | Refusal::HeavyWhenFull => SubmitErrorKind::TooHeavy,
                Refusal::TimedOut => SubmitErrorKind::TimedOut,
                Refusal::ClosedBefore | Refusal::ClosedWhileWaiting => SubmitErrorKind::Closed,
                Refusal::WouldDeadlock => SubmitErrorKind::WouldDeadlock,
                Refusal::NoRuntime => SubmitErrorKind::NoRuntime,
            }
        }
    }

    /// Runs `refusal` through `via` on a new pool of `kind` named `name`.
    fn run_refusal(
        refusal: Refusal,
        kind: &str,
        name: &str,
        via: Via,
        log: &Collector,
        snapshotter: &metrics_util::debugging::Snapshotter,
    ) -> Seen {
        let limits = Limits {
            weight_capacity: Some(2),
            ..Limits::default()
        };
        let mut figures = Figures::default();
        let submitter = tracing::info_span!("submitter");
        let (result, stats, pool) = if refusal == Refusal::NoRuntime {
            // No runtime anywhere: the pool is built and used from this plain thread.
            let pool = build(kind, name, 1, 0, limits);
            let mut keep = Vec::new();
            let result = support::plain_block_on(
                attempt(&pool, via, value(1), SubmitOptions::new(), &mut keep)
                    .instrument(submitter),
            );
            drop(keep);
            (result, pool.stats(), pool)
        } else {
            support::paused_runtime().block_on(async {
                let pool = build(kind, name, 1, 0, limits);
                let gate = Gate::new();
                let fill = || async {
                    own_submit_with(&pool, gated(&gate, 0), SubmitOptions::new())
                        .await
                        .expect("the filler was refused");
                    settle().await;
                };
                let heavy = SubmitOptions::new().weight(3);
                let mut keep = Vec::new();
                let result = match refusal {
                    Refusal::HeavyWithRoom => {
                        attempt(&pool, via, value(1), heavy, &mut keep)
                            .instrument(submitter)
                            .await
                    }
                    Refusal::HeavyWhenFull => {
                        fill().await;
                        attempt(&pool, via, value(1), heavy, &mut keep)
                            .instrument(submitter)
                            .await
                    }
                    Refusal::TimedOut => {
                        fill().await;
                        let opts = SubmitOptions::new().timeout(Duration::from_millis(20));
                        within(
                            "a timed submit",
                            attempt(&pool, via, value(1), opts, &mut keep),
                        )
                        .instrument(submitter)
                        .await
                    }
                    Refusal::ClosedBefore => {
                        within("a shutdown", shutdown(&pool)).await;
                        attempt(&pool, via, value(1), SubmitOptions::new(), &mut keep)
                            .instrument(submitter)
                            .await
                    }
                    Refusal::ClosedWhileWaiting => {
                        fill().await;
                        let mut waiting = Box::pin(
                            attempt(&pool, via, value(1), SubmitOptions::new(), &mut keep)
                                .instrument(submitter),
                        );
                        assert!(
                            poll_once(&mut waiting).await.is_pending(),
                            "{name}: a submit into a full pool did not wait"
                        );
                        let closing = shutdown(&pool);
                        let r = within("a submit refused by the shutdown", waiting).await;
                        gate.open();
                        within("the shutdown", closing).await;
                        r
                    }
                    Refusal::WouldDeadlock => {
                        let inner = pool.clone();
                        let job = make(move || {
                            let pool = inner.clone();
                            async move {
                                let mut keep = Vec::new();
                                match attempt(&pool, via, value(1), SubmitOptions::new(), &mut keep)
                                    .await
                                {
                                    Ok(()) => 0,
                                    Err(SubmitErrorKind::WouldDeadlock) => 1,
                                    Err(_) => 2,
                                }
                            }
                        });
                        let handle = per_pool!(&pool, |p| p.submit(job()).await.unwrap(), |p| p
                            .submit(move || job())
                            .await
                            .unwrap());
                        let code = within("the job that submits", handle).await.unwrap();
                        match code {
                            0 => Ok(()),
                            1 => Err(SubmitErrorKind::WouldDeadlock),
                            _ => Err(SubmitErrorKind::Closed),
                        }
                    }
                    Refusal::NoRuntime => unreachable!(),
                };
                gate.open();
                drop(keep);
                pool.wait_within().await;
                settle().await;
                (result, pool.stats(), pool)
            })
        };
        figures.take(snapshotter, name);
        let metrics_vs_stats = figures.against(&stats);
        drop(pool);
        figures.take(snapshotter, name);
        Seen {
            result,
            rejected: rejections(log, name),
            stats,
            metrics_vs_stats,
            rejected_counted: figures.rejected_by_reason(),
            gauges_after_drop: (
                figures.gauge("nb_aiopool_tasks_queued"),
                figures.gauge("nb_aiopool_tasks_running"),
            ),
        }
    }

    /// Each refusal (too heavy with room and when full, a timed-out wait, closed before and
    /// while waiting, a nested submit into the full pool, no runtime) made through a
    /// group's `submit_with` (plain and watched) and a stream's `with_options` (unordered,
    /// ordered), on the three pools. The docs: a group's `submit_with` refuses "as the
    /// pool's own `submit_with` does"; a stream's refusal "is counted by the observability
    /// features as `submit_with`'s is"; the crate docs promise one `submit rejected` event
    /// per refusal, with its reason, and metrics "as `PoolStats` counts them".
    ///
    /// Pinned: each way sees what the pool's own `submit_with` sees: the same kind, one
    /// event with the same reason in the same span (the submitter's, or the job's for the
    /// nested one), the same `stats()`, metrics that agree with them, one count of
    /// `nb_aiopool_submits_rejected` under the event's reason (398), gauges at 0 once the
    /// pool is dropped.
    #[test]
    fn every_refusal_through_groups_and_streams_is_seen_as_the_pools_own() {
        let mut wrong = Vec::new();
        observed(|log, snapshotter| {
            for refusal in REFUSALS {
                for kind in KINDS {
                    let mut own: Option<Seen> = None;
                    for via in VIAS {
                        let name = format!("ref-{refusal:?}-{kind}-{via:?}");
                        let seen = run_refusal(refusal, kind, &name, via, log, snapshotter);
                        if via == Via::Pool {
                            let want_span = if refusal == Refusal::WouldDeadlock {
                                "task"
                            } else {
                                "submitter"
                            };
                            let reason = super::reason_of(refusal.kind());
                            if seen.result != Err(refusal.kind())
                                || seen.rejected
                                    != [(reason.to_string(), Some(want_span.to_string()))]
                                || seen.metrics_vs_stats.is_some()
                                || seen.rejected_counted != [(reason.to_string(), 1)]
                                || seen.gauges_after_drop != (0.0, 0.0)
                            {
                                wrong.push(format!(
                                    "{kind}: the pool's own submit_with, {refusal:?}: {seen:?}"
                                ));
                            }
                            own = Some(seen);
                        } else if Some(&seen) != own.as_ref() {
                            wrong.push(format!(
                                "{kind}, {refusal:?}: {via:?} saw {seen:?}, the pool's own \
                                 submit_with {:?}",
                                own.as_ref().unwrap()
                            ));
                        }
                    }
                }
            }
        });
        assert!(
            wrong.is_empty(),
            "a refusal through a group or stream was observed unlike the pool's own \
             submit_with's:\n{}",
            wrong.join("\n")
        );
    }

    // ----- try_submit_with ------------------------------------------------------------------

    /// A `try_submit_with` of `job` with `opts`: the pool's own (`group` `None`) or a
    /// group's; the refusal's kind as `Debug` text (the kinds of `TrySubmitErrorKind`).
    fn try_via(
        pool: &Pool,
        group: Option<&mut Group<u32>>,
        job: Make<u32>,
        opts: SubmitOptions,
    ) -> Result<(), String> {
        match group {
            Some(g) => g
                .try_submit_with(job, opts)
                .map(drop)
                .map_err(|(k, _)| format!("{k:?}")),
            None => per_pool!(
                pool,
                |p| p
                    .try_submit_with(job(), opts)
                    .map(drop)
                    .map_err(|e| format!("{:?}", e.kind())),
                |p| p
                    .try_submit_with(move || job(), opts)
                    .map(drop)
                    .map_err(|e| format!("{:?}", e.kind()))
            ),
        }
    }

    /// A group's `try_submit_with` (plain, watched) refused too heavy (with room and when
    /// full), full, closed, and with no runtime, each on a pool of its own, beside the
    /// pool's own `try_submit_with`. The docs: the group's "as the pool's own"; the crate
    /// docs: a `submit rejected` event per refusal (`full` for a `try_submit` of a full
    /// pool).
    ///
    /// Pinned: the same kind, one event with the same reason and one count of
    /// `nb_aiopool_submits_rejected` under it, the same `stats()` and metrics that agree
    /// with them, on the three pools.
    #[test]
    fn every_refusal_of_a_groups_try_submit_with_is_seen_as_the_pools_own() {
        let mut wrong = Vec::new();
        let cases = ["heavy", "heavy-full", "full", "closed", "no-runtime"];
        observed(|log, snapshotter| {
            for case in cases {
                for kind in KINDS {
                    let mut own = None;
                    for via in [Via::Pool, Via::Group, Via::Watched] {
                        let name = format!("try-{case}-{kind}-{via:?}");
                        let limits = Limits {
                            weight_capacity: Some(2),
                            ..Limits::default()
                        };
                        let run = |pool: &Pool| {
                            let mut group =
                                (via != Via::Pool).then(|| group_of(pool, via == Via::Watched));
                            let opts = if case.starts_with("heavy") {
                                SubmitOptions::new().weight(3)
                            } else {
                                SubmitOptions::new().priority(2)
                            };
                            try_via(pool, group.as_mut(), value(1), opts)
                        };
                        let (result, stats, pool) = if case == "no-runtime" {
                            let pool = build(kind, &name, 1, 0, limits);
                            let r = run(&pool);
                            (r, pool.stats(), pool)
                        } else {
                            support::paused_runtime().block_on(async {
                                let pool = build(kind, &name, 1, 0, limits);
                                let gate = Gate::new();
                                if case != "heavy" && case != "closed" {
                                    own_submit_with(&pool, gated(&gate, 0), SubmitOptions::new())
                                        .await
                                        .unwrap();
                                    settle().await;
                                }
                                if case == "closed" {
                                    within("a shutdown", shutdown(&pool)).await;
                                }
                                let r = run(&pool);
                                gate.open();
                                pool.wait_within().await;
                                settle().await;
                                (r, pool.stats(), pool)
                            })
                        };
                        let mut figures = Figures::default();
                        figures.take(snapshotter, &name);
                        let metrics_vs_stats = figures.against(&stats);
                        drop(pool);
                        let counted = figures.rejected_by_reason();
                        let seen = (
                            result,
                            rejections(log, &name),
                            stats,
                            metrics_vs_stats,
                            counted,
                        );
                        match &own {
                            None => {
                                // One event, and the counter counts it under its reason.
                                let one: Vec<(String, u64)> =
                                    seen.1.iter().map(|(r, _)| (r.clone(), 1)).collect();
                                if seen.1.len() != 1 || seen.3.is_some() || seen.4 != one {
                                    wrong.push(format!("{name}: the pool's own: {seen:?}"));
                                }
                                own = Some(seen);
                            }
                            Some(o) if *o != seen => wrong.push(format!(
                                "{name}: {seen:?}; the pool's own try_submit_with: {o:?}"
                            )),
                            Some(_) => {}
                        }
                    }
                }
            }
        });
        assert!(
            wrong.is_empty(),
            "a group's try_submit_with refusal was observed unlike the pool's own:\n{}",
            wrong.join("\n")
        );
    }

    // ----- groups and streams dropped half-way ---------------------------------------------

    /// The task ids of the `task cancelled` events of pool `name` (the event's own
    /// `task_id`, for a task cancelled before it started, else its span's).
    fn cancelled_ids(log: &Collector, name: &str) -> Vec<String> {
        log.events_of(name)
            .into_iter()
            .filter(|e| e.fields.get("message") == Some("task cancelled"))
            .map(|e| {
                e.fields
                    .get("task_id")
                    .or_else(|| e.span_fields.as_ref().and_then(|f| f.get("task_id")))
                    .unwrap_or("<no task_id>")
                    .to_string()
            })
            .collect()
    }

    /// What the pool's flow control holds back in [`dropped_half_way`].
    #[derive(Clone, Copy, Debug)]
    enum Held {
        /// `max_per_key(1)`, two keys.
        Keys,
        /// `weight_capacity(3)`, each task of weight 2.
        Weights,
        /// `rate_limit(1, 1 s)`.
        Rate,
    }

    /// A group (plain or watched) or a stream (unordered or ordered) given options, filled
    /// with tasks that wait at a gate (those flow control holds back queued with a slot
    /// free), a submit (or a staged input) waiting for room, then dropped; the gate opens
    /// after the drop. Returns what went wrong, if anything.
    fn dropped_half_way(
        kind: &str,
        held: Held,
        via: Via,
        log: &Collector,
        snapshotter: &metrics_util::debugging::Snapshotter,
    ) -> Vec<String> {
        let name = format!("drop-{kind}-{held:?}-{via:?}");
        let limits = match held {
            Held::Keys => Limits {
                max_per_key: Some(1),
                ..Limits::default()
            },
            Held::Weights => Limits {
                weight_capacity: Some(3),
                ..Limits::default()
            },
            Held::Rate => Limits {
                rate: Some((1, Duration::from_secs(1))),
                ..Limits::default()
            },
        };
        let opts = move |i: u32| match held {
            Held::Keys => SubmitOptions::new().key(if i % 2 == 0 { "a" } else { "b" }),
            Held::Weights => SubmitOptions::new().weight(2),
            Held::Rate => SubmitOptions::new().priority(i as i32 % 3),
        };
        let mut wrong = Vec::new();
        let mut figures = Figures::default();
        let rt = support::paused_runtime();
        let pool = rt.block_on(async {
            let pool = build(kind, &name, 2, 4, limits);
            let cap = if kind == "no_queue" { 2 } else { 6 };
            let gate = Gate::new();
            let job = {
                let gate = gate.clone();
                move |i: u32| gated(&gate, i)
            };
            let mut check = |what: &str, figures: &mut Figures| {
                figures.take(snapshotter, &name);
                let stats = pool.stats();
                if let Some(w) = figures.against(&stats) {
                    wrong.push(format!("{name}: {what}: {w}"));
                }
                stats
            };
            match via {
                Via::Group | Via::Watched => {
                    let mut group = group_of(&pool, via == Via::Watched);
                    for i in 0..cap as u32 {
                        within(
                            "a submit_with with room",
                            group.submit_with(job(i), opts(i)),
                        )
                        .await
                        .expect("a submit_with with room was refused");
                    }
                    settle().await;
                    {
                        let mut waiting = group.submit_with(job(99), opts(99));
                        assert!(
                            poll_once(&mut waiting).await.is_pending(),
                            "{name}: a submit_with into a full pool did not wait"
                        );
                    }
                    settle().await;
                    let stats = check("the group filled the pool", &mut figures);
                    assert_eq!(stats.unfinished(), cap, "{name}: {stats}");
                    drop(group);
                }
                Via::Unordered | Via::Ordered => {
                    let mut s = stream_of(
                        &pool,
                        via == Via::Ordered,
                        (0..100).collect(),
                        job,
                        move |i: &u32| opts(*i),
                    );
                    for _ in 0..5 {
                        assert!(
                            poll_once(&mut s.next()).await.is_pending(),
                            "{name}: the stream gave an item before its gate opened"
                        );
                        settle().await;
                    }
                    let stats = check("the stream filled the pool", &mut figures);
                    assert_eq!(stats.unfinished(), cap, "{name}: {stats}");
                    drop(s);
                }
                Via::Pool => unreachable!(),
            }
            settle().await;
            gate.open();
            pool.wait_within().await;
            settle().await;
            let stats = check("the drop and the end of the tasks", &mut figures);
            if stats.unfinished() != 0
                || stats.submitted != stats.completed + stats.cancelled + stats.panicked
            {
                wrong.push(format!("{name}: stats after the end: {stats}"));
            }
            let ids = cancelled_ids(log, &name);
            let distinct: HashSet<&String> = ids.iter().collect();
            if ids.len() as u64 != stats.cancelled || distinct.len() != ids.len() {
                wrong.push(format!(
                    "{name}: {} cancelled in stats, `task cancelled` events for the task ids \
                     {ids:?}",
                    stats.cancelled
                ));
            }
            if stats.cancelled == 0 {
                wrong.push(format!("{name}: the drop cancelled nothing ({stats})"));
            }
            // Each task that started: one span, one queue-wait sample, one run-time sample.
            let (spans, samples) = spans_and_samples(log, &figures, &name);
            if samples != (spans, spans) {
                wrong.push(format!(
                    "{name}: {spans} tasks started (spans), samples (queue wait, run time) \
                     {samples:?}"
                ));
            }
            pool
        });
        drop(pool);
        drop(rt);
        figures.take(snapshotter, &name);
        let gauges = (
            figures.gauge("nb_aiopool_tasks_queued"),
            figures.gauge("nb_aiopool_tasks_running"),
        );
        if gauges != (0.0, 0.0) {
            wrong.push(format!(
                "{name}: the gauges (queued, running) after the pool's drop: {gauges:?}"
            ));
        }
        wrong
    }

    /// A group's `submit_with` (plain, watched) and a stream's `with_options` (unordered,
    /// ordered) fill a flow-controlled pool (keys, weights, a rate window: tasks held back
    /// queued with a slot free), one more waits for room, and the group or stream is
    /// dropped half-way. The docs: dropping a group or stream aborts its tasks ("`stats()`
    /// counts them cancelled"); the metrics count "as `PoolStats` counts them"; a `task
    /// cancelled` event per cancelled task, with its `task_id`.
    ///
    /// Pinned: the metrics agree with `stats()` while full and after; every task ends
    /// counted; one `task cancelled` event per cancelled task, each for a different task;
    /// the gauges at 0 once the pool is dropped; on the three pools.
    #[test]
    fn groups_and_streams_dropped_half_way_leave_figures_that_agree() {
        let mut wrong = Vec::new();
        observed(|log, snapshotter| {
            for kind in KINDS {
                for held in [Held::Keys, Held::Weights, Held::Rate] {
                    for via in [Via::Group, Via::Watched, Via::Unordered, Via::Ordered] {
                        wrong.extend(dropped_half_way(kind, held, via, log, snapshotter));
                    }
                }
            }
        });
        assert!(
            wrong.is_empty(),
            "after a group or stream was dropped half-way:\n{}",
            wrong.join("\n")
        );
    }

    /// As [`groups_and_streams_dropped_half_way_leave_figures_that_agree`], but the user
    /// drops every handle of the pool first: the group or stream keeps it open ("The group
    /// counts as a handle of its pool"; "The stream counts as a handle of its pool"), and
    /// its drop lets the pool go. The crate docs: the pool's drop "takes its share of the
    /// gauges back to 0".
    ///
    /// Pinned: once everything is dropped, submitted = completed + cancelled in the
    /// metrics, the gauges at 0, one `task cancelled` event per cancelled task; on the
    /// three pools.
    #[test]
    fn a_group_or_stream_that_outlived_its_pools_handles_leaves_the_gauges_at_zero() {
        let mut wrong = Vec::new();
        observed(|log, snapshotter| {
            for kind in KINDS {
                for via in [Via::Group, Via::Watched, Via::Unordered, Via::Ordered] {
                    let name = format!("orphan-{kind}-{via:?}");
                    let rt = support::paused_runtime();
                    rt.block_on(async {
                        let limits = Limits {
                            max_per_key: Some(1),
                            ..Limits::default()
                        };
                        let pool = build(kind, &name, 2, 4, limits);
                        let gate = Gate::new();
                        let job = {
                            let gate = gate.clone();
                            move |i: u32| gated(&gate, i)
                        };
                        let opts =
                            |i: u32| SubmitOptions::new().key(if i % 2 == 0 { "a" } else { "b" });
                        match via {
                            Via::Group | Via::Watched => {
                                let mut group = group_of(&pool, via == Via::Watched);
                                drop(pool);
                                let cap = if kind == "no_queue" { 2 } else { 4 };
                                for i in 0..cap {
                                    within("a submit_with", group.submit_with(job(i), opts(i)))
                                        .await
                                        .expect("a submit_with with room was refused");
                                }
                                settle().await;
                                drop(group);
                            }
                            _ => {
                                let mut s = stream_of(
                                    &pool,
                                    via == Via::Ordered,
                                    (0..100).collect(),
                                    job,
                                    move |i: &u32| opts(*i),
                                );
                                drop(pool);
                                for _ in 0..5 {
                                    assert!(poll_once(&mut s.next()).await.is_pending());
                                    settle().await;
                                }
                                drop(s);
                            }
                        }
                        settle().await;
                        gate.open();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    });
                    drop(rt);
                    let mut figures = Figures::default();
                    figures.take(snapshotter, &name);
                    let c = |n: &str| figures.counter(n);
                    let (submitted, completed, cancelled) = (
                        c("nb_aiopool_tasks_submitted"),
                        c("nb_aiopool_tasks_completed"),
                        c("nb_aiopool_tasks_cancelled"),
                    );
                    let gauges = (
                        figures.gauge("nb_aiopool_tasks_queued"),
                        figures.gauge("nb_aiopool_tasks_running"),
                    );
                    let events = cancelled_ids(log, &name).len() as f64;
                    if submitted == 0.0
                        || submitted != completed + cancelled
                        || gauges != (0.0, 0.0)
                        || events != cancelled
                    {
                        wrong.push(format!(
                            "{name}: submitted {submitted}, completed {completed}, \
                             cancelled {cancelled}, gauges (queued, running) {gauges:?}, \
                             {events} `task cancelled` events"
                        ));
                    }
                }
            }
        });
        assert!(
            wrong.is_empty(),
            "after a group or stream that outlived its pool's handles was dropped:\n{}",
            wrong.join("\n")
        );
    }

    // ----- spans ---------------------------------------------------------------------------

    /// A job that emits the event `ran` with field `v` (inside its task's span), then returns
    /// `v`.
    fn telling(v: u32) -> Make<u32> {
        make(move || async move {
            tracing::info!(v, "ran");
            v
        })
    }

    /// For each `ran` event of pool `name`'s tasks: (v, the task_id of the span it was in,
    /// that span's parent).
    fn runs(log: &Collector, name: &str) -> Vec<(u32, Option<String>)> {
        log.events_with("ran")
            .into_iter()
            .filter(|e| e.span_fields.as_ref().and_then(|f| f.get("pool")) == Some(name))
            .map(|e| {
                let v = e.fields.get("v").unwrap().parse().unwrap();
                let id = e
                    .span_fields
                    .as_ref()
                    .and_then(|f| f.get("task_id"))
                    .map(String::from);
                (v, id)
            })
            .collect()
    }

    /// A group's `submit_with` and `try_submit_with` (plain and watched; one of them waits
    /// for room first) and a stream's `with_options` (unordered, ordered), in a span of the
    /// caller's. The crate docs: "every task runs inside a span named `task` ... with the
    /// fields `pool` ... and `task_id` (its `TaskId`), a child of the span current where it
    /// was submitted"; `submit_with` "returns the task's id", as `join_next_with_id` does.
    ///
    /// Pinned: each task has one span, with the id the group's submit returned and
    /// `join_next_with_id` gives with its value, the task's own events inside it, and the
    /// caller's span as its parent (the stream's consumer's for a stream); on the three
    /// pools.
    #[test]
    fn a_task_span_carries_the_id_its_group_returned_and_the_callers_parent() {
        let _serial = support::serial();
        let log = Collector::default();
        let mut wrong = Vec::new();
        tracing::subscriber::with_default(log.clone(), || {
            for kind in KINDS {
                for via in [Via::Group, Via::Watched, Via::Unordered, Via::Ordered] {
                    let name = format!("span-{kind}-{via:?}");
                    support::paused_runtime().block_on(async {
                        let pool = build(kind, &name, 1, 2, Limits::default());
                        let caller = tracing::info_span!("caller");
                        let caller_id = caller.id().expect("the collector's span").into_u64();
                        // v -> the id the group returned for it.
                        let mut returned: Vec<(u32, String)> = Vec::new();
                        let mut joined: Vec<(u32, String)> = Vec::new();
                        let opts = |v: u32| SubmitOptions::new().priority(v as i32).key("k");
                        match via {
                            Via::Group | Via::Watched => {
                                let mut group = group_of(&pool, via == Via::Watched);
                                async {
                                    let gate = Gate::new();
                                    own_submit_with(&pool, gated(&gate, 0), SubmitOptions::new())
                                        .await
                                        .unwrap();
                                    settle().await;
                                    if kind != "no_queue" {
                                        let id = group
                                            .try_submit_with(telling(1), opts(1))
                                            .map_err(|(k, _)| k)
                                            .unwrap();
                                        returned.push((1, id.to_string()));
                                    }
                                    let mut waiting = group.submit_with(telling(2), opts(2));
                                    if kind == "no_queue" {
                                        assert!(poll_once(&mut waiting).await.is_pending());
                                    }
                                    gate.open();
                                    let id = within("a submit_with", waiting).await.unwrap();
                                    returned.push((2, id.to_string()));
                                    let id = within("a submit_with", group.submit_with(telling(3), opts(3)))
                                        .await
                                        .unwrap();
                                    returned.push((3, id.to_string()));
                                }
                                .instrument(caller.clone())
                                .await;
                                while let Some((id, r)) =
                                    within("join_next_with_id", group.join_next_with_id()).await
                                {
                                    joined.push((r.unwrap(), id.to_string()));
                                }
                            }
                            _ => {
                                let s = stream_of(
                                    &pool,
                                    via == Via::Ordered,
                                    vec![1, 2, 3, 4],
                                    telling,
                                    move |v: &u32| opts(*v),
                                );
                                let got: Vec<u32> = within("the stream", s.map(Result::unwrap).collect::<Vec<u32>>())
                                    .instrument(caller.clone())
                                    .await;
                                assert_eq!(got.len(), 4, "{name}: the stream's items");
                            }
                        }
                        pool.wait_within().await;
                        let spans = log.task_spans(&name);
                        let ran = runs(&log, &name);
                        for (v, id) in &ran {
                            let Some(id) = id else {
                                wrong.push(format!("{name}: the task of {v} ran outside its span"));
                                continue;
                            };
                            let of_id = spans.get(&id.parse::<u64>().unwrap()).cloned().unwrap_or_default();
                            if of_id.len() != 1 || of_id[0].parent != Some(caller_id) {
                                wrong.push(format!(
                                    "{name}: the task of {v} (task_id {id}): spans {:?}, the caller's span is {caller_id}",
                                    of_id.iter().map(|s| s.parent).collect::<Vec<_>>()
                                ));
                            }
                        }
                        for (v, id) in returned.iter().chain(&joined) {
                            if !ran.contains(&(*v, Some(id.clone()))) {
                                wrong.push(format!(
                                    "{name}: the group gave the id {id} for the task of {v}, whose span \
                                     says otherwise: {ran:?}"
                                ));
                            }
                        }
                        let n = if matches!(via, Via::Group | Via::Watched) {
                            returned.len()
                        } else {
                            4
                        };
                        if ran.len() != n {
                            wrong.push(format!("{name}: {n} tasks, runs seen: {ran:?}"));
                        }
                    });
                }
            }
        });
        assert!(wrong.is_empty(), "task spans:\n{}", wrong.join("\n"));
    }

    // ----- a stream's retries inside its own pool ---------------------------------------------

    /// Finding: a job maps six inputs through its own pool (two slots, no queue: the job
    /// holds one), with and without `with_options`, each input's job taking 10 ms; the
    /// stream waits for its own jobs to end and tries again, and every input is accepted.
    /// The stream's docs: "the stream instead waits for one of its own jobs to end (or for
    /// the pool to grow) and tries again; only when it has no job of its own in the pool is
    /// the input refused"; the crate docs list `submit rejected` events for refusals (reason
    /// `would_deadlock` among them), and `with_options`: "The refusal is counted by the
    /// observability features as `submit_with`'s is". Nothing is refused here, so no
    /// `submit rejected` event is expected, as `stats()` and the stream's `refused()` say.
    ///
    /// What happened (on the three pools, both streams, with and without options): "every
    /// input accepted (queued 0, running 0, submitted 7, completed 7, ...), yet 24 `submit
    /// rejected` events: [\"would_deadlock\", ...]": each retry's admission reported a
    /// refusal (several per input). Fixed: the stream's admission leaves a `WouldDeadlock`
    /// unreported, and the stream reports the one it stops on.
    #[test]
    fn a_fan_out_that_retries_in_its_own_pool_reports_no_refusal() {
        let _serial = support::serial();
        let log = Collector::default();
        let mut wrong = Vec::new();
        tracing::subscriber::with_default(log.clone(), || {
            for kind in KINDS {
                for ordered in [false, true] {
                    for options in [false, true] {
                        let name = format!("fan-{kind}-ordered:{ordered}-options:{options}");
                        let refused = support::paused_runtime().block_on(async {
                            let pool = build(kind, &name, 2, 0, Limits::default());
                            let inner = pool.clone();
                            let job = make(move || {
                                let pool = inner.clone();
                                async move {
                                    let f = |i: u32| {
                                        make(move || async move {
                                            tokio::time::sleep(Duration::from_millis(10)).await;
                                            i
                                        })
                                    };
                                    let inputs: Vec<u32> = (0..6).collect();
                                    let mut s: Pin<Box<dyn futures_util::Stream<Item = _> + Send>> =
                                        if options {
                                            stream_of(&pool, ordered, inputs, f, |_: &u32| {
                                                SubmitOptions::new().priority(1)
                                            })
                                        } else if ordered {
                                            Box::pin(
                                                pool.ordered(stream::iter(inputs), move |i| f(i)()),
                                            )
                                        } else {
                                            Box::pin(
                                                pool.unordered(stream::iter(inputs), move |i| {
                                                    f(i)()
                                                }),
                                            )
                                        };
                                    let mut n = 0;
                                    while let Some(r) = s.next().await {
                                        r.unwrap();
                                        n += 1;
                                    }
                                    n
                                }
                            });
                            let handle =
                                per_pool!(&pool, |p| p.submit(job()).await.unwrap(), |p| p
                                    .submit(move || job())
                                    .await
                                    .unwrap());
                            let n = within("the fan-out", handle).await.unwrap();
                            assert_eq!(n, 6, "{name}: the fan-out lost inputs");
                            pool.wait_within().await;
                            pool.stats()
                        });
                        let events = rejections(&log, &name);
                        if !events.is_empty() {
                            wrong.push(format!(
                                "{name}: every input accepted ({refused}), yet {} `submit rejected` \
                                 events: {:?}",
                                events.len(),
                                events.iter().map(|e| e.0.as_str()).collect::<Vec<_>>()
                            ));
                        }
                    }
                }
            }
        });
        assert!(
            wrong.is_empty(),
            "a fan-out that refused nothing reported refusals:\n{}",
            wrong.join("\n")
        );
    }

    // ----- on two workers ----------------------------------------------------------------------

    /// On a runtime of two workers, each pool (two slots, one queue place;
    /// `max_per_key(1)`, `weight_capacity(4)`) takes 60 rounds of a group's `submit_with`
    /// (plain, watched) or a stream's `with_options` (unordered, ordered) with keys,
    /// weights, priorities and short timeouts (some time out), read for a random few
    /// milliseconds and dropped. The docs as in the tests above.
    ///
    /// Pinned: at the end, the metrics agree with `stats()`; one `submit rejected` event
    /// per refusal the caller saw; one `task cancelled` event per cancelled task, each for
    /// a different task; a queue-wait and a run-time sample per started task; the gauges
    /// at 0 once the pool is dropped.
    #[test]
    fn groups_and_streams_dropped_at_random_on_two_workers_leave_figures_that_agree() {
        let _serial = support::serial();
        let log = Collector::default();
        // Events come from the workers' threads too.
        tracing::subscriber::set_global_default(log.clone())
            .expect("no other global subscriber in this test's process");
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let mut wrong = Vec::new();
        metrics::with_local_recorder(&recorder, || {
            let rt = support::multi_thread_of(2);
            for (seed, kind) in KINDS.into_iter().enumerate() {
                let name = format!("mt-{kind}");
                let limits = Limits {
                    max_per_key: Some(1),
                    weight_capacity: Some(4),
                    ..Limits::default()
                };
                let pool = rt.block_on(async { build(kind, &name, 2, 1, limits) });
                let refusals = rt.block_on(async {
                    let mut rng = support::Rng::new(seed as u64 + 11);
                    let mut refusals = 0u64;
                    for round in 0..60u32 {
                        let via = [Via::Group, Via::Watched, Via::Unordered, Via::Ordered]
                            [round as usize % 4];
                        let micros = rng.below(3000);
                        let opts = move |i: u32| {
                            let o = SubmitOptions::new()
                                .key(["a", "b", "c"][i as usize % 3])
                                .weight(1 + i % 3)
                                .priority(i as i32 % 2);
                            if i % 4 == 3 {
                                o.timeout(Duration::from_micros(500))
                            } else {
                                o
                            }
                        };
                        let job = move |i: u32| {
                            make(move || async move {
                                tokio::time::sleep(Duration::from_micros(700 * u64::from(i % 4)))
                                    .await;
                                i
                            })
                        };
                        let read_for = Duration::from_micros(micros);
                        match via {
                            Via::Group | Via::Watched => {
                                let mut group = group_of(&pool, via == Via::Watched);
                                let _ = tokio::time::timeout(read_for, async {
                                    for i in 0..8 {
                                        if group.submit_with(job(i), opts(i)).await.is_err() {
                                            refusals += 1;
                                        }
                                    }
                                    while group.join_next().await.is_some() {}
                                })
                                .await;
                                drop(group);
                            }
                            _ => {
                                macro_rules! read {
                                    ($s:expr) => {{
                                        let mut s = $s.with_options(move |i: &u32| opts(*i));
                                        let _ = tokio::time::timeout(read_for, async {
                                            while s.next().await.is_some() {}
                                        })
                                        .await;
                                        refusals += u64::from(s.refused().is_some());
                                        s
                                    }};
                                }
                                let f = move |i: u32| job(i)();
                                let s: Box<dyn Send> = if via == Via::Ordered {
                                    Box::new(read!(pool.ordered(stream::iter(0..20u32), f)))
                                } else {
                                    Box::new(read!(pool.unordered(stream::iter(0..20u32), f)))
                                };
                                drop(s);
                            }
                        }
                    }
                    pool.wait_within().await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    refusals
                });
                let stats = pool.stats();
                let mut figures = Figures::default();
                figures.take(&snapshotter, &name);
                if let Some(w) = figures.against(&stats) {
                    wrong.push(format!("{name}: at the end: {w}"));
                }
                if stats.unfinished() != 0 {
                    wrong.push(format!("{name}: unfinished at the end: {stats}"));
                }
                let ids = cancelled_ids(&log, &name);
                let distinct: HashSet<&String> = ids.iter().collect();
                if ids.len() as u64 != stats.cancelled || distinct.len() != ids.len() {
                    wrong.push(format!(
                        "{name}: {} cancelled in stats, {} `task cancelled` events ({} tasks)",
                        stats.cancelled,
                        ids.len(),
                        distinct.len()
                    ));
                }
                let (spans, samples) = spans_and_samples(&log, &figures, &name);
                if samples != (spans, spans) {
                    wrong.push(format!(
                        "{name}: {spans} task spans, samples (queue wait, run time) {samples:?}"
                    ));
                }
                let events = rejections(&log, &name).len() as u64;
                if events != refusals {
                    wrong.push(format!(
                        "{name}: the groups and streams saw {refusals} refusals, {events} \
                         `submit rejected` events"
                    ));
                }
                drop(pool);
                figures.take(&snapshotter, &name);
                let gauges = (
                    figures.gauge("nb_aiopool_tasks_queued"),
                    figures.gauge("nb_aiopool_tasks_running"),
                );
                if gauges != (0.0, 0.0) {
                    wrong.push(format!("{name}: gauges after the pool's drop: {gauges:?}"));
                }
            }
        });
        assert!(wrong.is_empty(), "on two workers:\n{}", wrong.join("\n"));
    }
}

/// The `reason` field of a `submit rejected` event for `kind` (the crate docs' names).
#[cfg(all(feature = "tracing", feature = "metrics"))]
fn reason_of(kind: nb_aiopool::SubmitErrorKind) -> &'static str {
    use nb_aiopool::SubmitErrorKind as K;
    match kind {
        K::Closed => "closed",
        K::WouldDeadlock => "would_deadlock",
        K::NoRuntime => "no_runtime",
        K::TimedOut => "timed_out",
        K::TooHeavy => "too_heavy",
        _ => "<unknown>",
    }
}
