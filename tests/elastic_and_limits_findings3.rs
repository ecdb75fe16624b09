//! Regression tests of a review of 1406ae8 (findings 235–237's fixes: reservations of
//! queued jobs checked against what may start; RELIABILITY.md, finding 238), each failing
//! before its fix, and a randomized model with bursts and `cancel_all`.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nb_aiopool::{CommonAioPool, PoolStats, SubmitOptions};
use support::*;

/// How a pool holds the last queued job back in [`a_slot_out_of_budget_reserves_nothing_for_a_job_that_cannot_start`].
#[derive(Clone, Copy, Debug)]
enum HeldBy {
    Key,
    Weight,
    Rate,
}

/// Finding 238. A slot task runs at most 32 jobs that end at once in one poll; after the 32nd, with
/// queued jobs left beyond the reservations, its slot became a reservation it claimed
/// itself after yielding, without asking whether any of those jobs may start. A job held
/// back by its key, its weight or the rate window then counted as running (2 running, 0
/// queued where 1 and 1 are true) until that slot task was polled again, as 213 did.
fn budget_case(held: HeldBy) {
    let rt = paused_runtime();
    rt.block_on(async move {
        let mut b = CommonAioPool::builder()
            .max_concurrency(2)
            .max_queue_size(100)
            .process_wide(false);
        b = match held {
            HeldBy::Key => b.max_per_key(1),
            HeldBy::Weight => b.weight_capacity(10),
            // The long job and the 32 quick ones take the 33 starts of the window.
            HeldBy::Rate => b.rate_limit(33, Duration::from_secs(3600)),
        };
        let pool = b.build();
        let long = match held {
            HeldBy::Key => SubmitOptions::new().key("a"),
            HeldBy::Weight => SubmitOptions::new().weight(9),
            HeldBy::Rate => SubmitOptions::new(),
        };
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let g = gate.clone();
        let _long = pool
            .try_submit_with(
                async move {
                    let _ = g.acquire().await;
                },
                long,
            )
            .unwrap();
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        assert_eq!((pool.stats().running, pool.stats().queued), (1, 0));
        // An observer, woken by the 32nd quick job: it runs before the slot task that
        // ran that job is polled again.
        let seen: Arc<Mutex<Option<PoolStats>>> = Arc::default();
        let notify = Arc::new(tokio::sync::Notify::new());
        let observer = {
            let (pool, seen, notify) = (pool.clone(), seen.clone(), notify.clone());
            tokio::spawn(async move {
                notify.notified().await;
                *seen.lock().unwrap() = Some(pool.stats());
            })
        };
        tokio::task::yield_now().await;
        let mut quick = Vec::new();
        for i in 0..32 {
            let notify = notify.clone();
            let o = match held {
                HeldBy::Weight => SubmitOptions::new().weight(1),
                _ => SubmitOptions::new(),
            };
            quick.push(
                pool.try_submit_with(
                    async move {
                        if i == 31 {
                            notify.notify_one();
                        }
                    },
                    o,
                )
                .unwrap(),
            );
        }
        let held_back = match held {
            HeldBy::Key => SubmitOptions::new().key("a"),
            HeldBy::Weight => SubmitOptions::new().weight(2),
            HeldBy::Rate => SubmitOptions::new(),
        };
        let last = pool.try_submit_with(async {}, held_back).unwrap();
        within("the observer", observer).await.unwrap();
        for h in quick {
            within("a quick job", h).await.unwrap();
        }
        let s = seen.lock().unwrap().take().unwrap();
        let settled = pool.stats();
        assert_eq!(
            (settled.running, settled.queued),
            (1, 1),
            "{held:?}: settled: {settled}"
        );
        assert_eq!(
            (s.running, s.queued),
            (1, 1),
            "{held:?}: right after the 32nd quick job ended: {s}"
        );
        gate.add_permits(1);
        if matches!(held, HeldBy::Rate) {
            tokio::time::advance(Duration::from_secs(3601)).await;
        }
        within("the held-back job", last).await.unwrap();
        let s = pool.stats();
        assert_eq!((s.running, s.queued), (0, 0), "{s}");
    });
}

#[test]
fn a_slot_out_of_budget_reserves_nothing_for_a_job_held_back_by_its_key() {
    budget_case(HeldBy::Key);
}

#[test]
fn a_slot_out_of_budget_reserves_nothing_for_a_job_held_back_by_its_weight() {
    budget_case(HeldBy::Weight);
}

#[test]
fn a_slot_out_of_budget_reserves_nothing_for_a_job_held_back_by_the_rate_window() {
    budget_case(HeldBy::Rate);
}

// ----- randomized: the count where slots are reserved against what starts (1406ae8's ----
// model, found 235's second form and 237; with bursts of quick jobs and cancel_all) ------

mod randomized {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use nb_aiopool::{CommonAioPool, PoolStats, SmartAioPool, SubmitOptions, TaskHandle};
    use proptest::prelude::*;

    use super::support::paused_runtime;

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Submit {
            key: Option<u8>,
            weight: u32,
            prio: i32,
        },
        Finish(u8),
        Abort(u8),
        Count,
        Advance(u16),
        Resize(u8),
        /// `n` jobs that end at their first poll (a slot runs up to 32 in one poll).
        Burst {
            n: u8,
            key: Option<u8>,
            weight: u32,
        },
        CancelAll,
    }

    #[derive(Debug, Clone)]
    struct Case {
        smart: bool,
        max: usize,
        min_workers: usize,
        per_key: Option<usize>,
        capacity: Option<u64>,
        /// `rate_limit(.0, .1 ms)`.
        rate: Option<(u32, u64)>,
        /// Each op, and whether the pool's tasks run before the next one.
        ops: Vec<(Op, bool)>,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (prop::option::of(0u8..3), 1u32..5, prop_oneof![3 => Just(0), 1 => -1i32..3])
                .prop_map(|(key, weight, prio)| Op::Submit { key, weight, prio }),
            4 => any::<u8>().prop_map(Op::Finish),
            1 => any::<u8>().prop_map(Op::Abort),
            1 => Just(Op::Count),
            1 => (100u16..1500).prop_map(Op::Advance),
            1 => (1u8..7).prop_map(Op::Resize),
            1 => (20u8..40, prop::option::of(0u8..3), 1u32..3)
                .prop_map(|(n, key, weight)| Op::Burst { n, key, weight }),
            1 => Just(Op::CancelAll),
        ]
    }

    fn case() -> impl Strategy<Value = Case> {
        (
            any::<bool>(),
            1usize..6,
            0usize..3,
            prop::option::of(1usize..3),
            prop::option::of(4u64..9),
            prop::option::weighted(0.25, (1u32..4, 200u64..2000)),
            prop::collection::vec((op(), prop::bool::weighted(0.6)), 1..60),
        )
            .prop_map(
                |(smart, max, min_workers, per_key, capacity, rate, ops)| Case {
                    rate,
                    smart,
                    max,
                    min_workers: min_workers.min(max),
                    per_key,
                    capacity,
                    ops,
                },
            )
    }

    struct Job {
        key: Option<u8>,
        weight: u32,
        prio: i32,
        started: bool,
        ended: bool,
        aborted_queued: bool,
        /// Ends at its first poll.
        quick: bool,
        gate: Arc<tokio::sync::Semaphore>,
    }

    #[derive(Default)]
    struct Model {
        jobs: Vec<Job>,
        size: usize,
        violations: Vec<String>,
    }

    impl Model {
        fn running(&self) -> impl Iterator<Item = (usize, &Job)> {
            self.jobs
                .iter()
                .enumerate()
                .filter(|(_, j)| j.started && !j.ended)
        }

        fn queued(&self) -> Vec<(usize, &Job)> {
            let mut q: Vec<_> = self
                .jobs
                .iter()
                .enumerate()
                .filter(|(_, j)| !j.started && !j.aborted_queued)
                .collect();
            q.sort_by_key(|(i, j)| (std::cmp::Reverse(j.prio), *i));
            q
        }
    }

    struct Ended(Arc<Mutex<Model>>, usize);
    impl Drop for Ended {
        fn drop(&mut self) {
            self.0.lock().unwrap().jobs[self.1].ended = true;
        }
    }

    enum Pool {
        Smart(SmartAioPool),
        Common(CommonAioPool),
    }

    impl Pool {
        fn stats(&self) -> PoolStats {
            match self {
                Pool::Smart(p) => p.stats(),
                Pool::Common(p) => p.stats(),
            }
        }
        fn resize(&self, n: usize) {
            match self {
                Pool::Smart(p) => p.set_max_concurrency(n),
                Pool::Common(p) => p.set_max_concurrency(n),
            }
        }
    }

    #[allow(clippy::manual_async_fn)]
    fn job_future(
        model: Arc<Mutex<Model>>,
        i: usize,
        per_key: Option<usize>,
        capacity: Option<u64>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        async move {
            let gate = {
                let mut m = model.lock().unwrap();
                if m.jobs[i].started {
                    m.violations.push(format!("job {i} started twice"));
                }
                m.jobs[i].started = true;
                let (key, gate) = (m.jobs[i].key, m.jobs[i].gate.clone());
                let running: Vec<_> = m.running().map(|(_, j)| (j.key, j.weight)).collect();
                if running.len() > m.size {
                    let v = format!("job {i}: {} running, size {}", running.len(), m.size);
                    m.violations.push(v);
                }
                if let (Some(k), Some(max)) = (key, per_key) {
                    let n = running.iter().filter(|r| r.0 == Some(k)).count();
                    if n > max {
                        m.violations
                            .push(format!("job {i}: key {k} has {n} running"));
                    }
                }
                if let Some(cap) = capacity {
                    let w: u64 = running.iter().map(|r| u64::from(r.1)).sum();
                    if w > cap {
                        m.violations.push(format!("job {i}: weight {w} running"));
                    }
                }
                gate
            };
            let _ended = Ended(model, i);
            let _ = gate.acquire().await;
        }
    }

    async fn settle() {
        for _ in 0..24 {
            tokio::task::yield_now().await;
        }
    }

    fn run_case(c: Case) -> Result<(), TestCaseError> {
        let rt = paused_runtime();
        rt.block_on(async move {
            let model = Arc::new(Mutex::new(Model {
                size: c.max,
                ..Default::default()
            }));
            let pool = if c.smart {
                let mut b = SmartAioPool::builder()
                    .max_concurrency(c.max)
                    .min_workers(c.min_workers)
                    .max_queue_size(5000)
                    .idle_timeout(Duration::from_secs(1))
                    .auto_shutdown(false)
                    .process_wide(false);
                if let Some(n) = c.per_key {
                    b = b.max_per_key(n);
                }
                if let Some(w) = c.capacity {
                    b = b.weight_capacity(w);
                }
                if let Some((n, ms)) = c.rate {
                    b = b.rate_limit(n, Duration::from_millis(ms));
                }
                Pool::Smart(b.build())
            } else {
                let mut b = CommonAioPool::builder()
                    .max_concurrency(c.max)
                    .max_queue_size(5000)
                    .process_wide(false);
                if let Some(n) = c.per_key {
                    b = b.max_per_key(n);
                }
                if let Some(w) = c.capacity {
                    b = b.weight_capacity(w);
                }
                if let Some((n, ms)) = c.rate {
                    b = b.rate_limit(n, Duration::from_millis(ms));
                }
                Pool::Common(b.build())
            };
            settle().await;
            let base = tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks();
            let mut handles: Vec<Option<TaskHandle<()>>> = Vec::new();
            let mut same_count = true;
            for (n, (op, run)) in c.ops.iter().enumerate() {
                let last = n + 1 == c.ops.len();
                match *op {
                    Op::Submit { key, weight, prio } => {
                        let i = {
                            let mut m = model.lock().unwrap();
                            m.jobs.push(Job {
                                key,
                                weight,
                                prio,
                                started: false,
                                ended: false,
                                aborted_queued: false,
                                quick: false,
                                gate: Arc::new(tokio::sync::Semaphore::new(0)),
                            });
                            m.jobs.len() - 1
                        };
                        let mut o = SubmitOptions::new().weight(weight).priority(prio);
                        if let Some(k) = key {
                            o = o.key(format!("k{k}"));
                        }
                        let (pk, cap) = (c.per_key, c.capacity);
                        let h = match &pool {
                            Pool::Smart(p) => {
                                let m = model.clone();
                                p.try_submit_with(move || job_future(m.clone(), i, pk, cap), o)
                                    .unwrap_or_else(|e| panic!("submit: {e}"))
                            }
                            Pool::Common(p) => p
                                .try_submit_with(job_future(model.clone(), i, pk, cap), o)
                                .unwrap_or_else(|e| panic!("submit: {e}")),
                        };
                        handles.push(Some(h));
                    }
                    Op::Finish(k) => {
                        same_count = false;
                        let m = model.lock().unwrap();
                        let running: Vec<_> = m.running().map(|(i, _)| i).collect();
                        if !running.is_empty() {
                            let i = running[k as usize % running.len()];
                            m.jobs[i].gate.add_permits(1);
                        }
                    }
                    Op::Abort(k) => {
                        same_count = false;
                        let live: Vec<usize> = {
                            let m = model.lock().unwrap();
                            (0..handles.len())
                                .filter(|&i| handles[i].is_some() && !m.jobs[i].ended)
                                .collect()
                        };
                        if !live.is_empty() {
                            let i = live[k as usize % live.len()];
                            let h = handles[i].take().unwrap();
                            let queued = !model.lock().unwrap().jobs[i].started;
                            h.abort();
                            if queued {
                                model.lock().unwrap().jobs[i].aborted_queued = true;
                            }
                        }
                    }
                    Op::Burst {
                        n: count,
                        key,
                        weight,
                    } => {
                        // Its jobs end as they start.
                        same_count = false;
                        for _ in 0..count {
                            let i = {
                                let mut m = model.lock().unwrap();
                                m.jobs.push(Job {
                                    key,
                                    weight,
                                    prio: 0,
                                    started: false,
                                    ended: false,
                                    aborted_queued: false,
                                    quick: true,
                                    gate: Arc::new(tokio::sync::Semaphore::new(1)),
                                });
                                m.jobs.len() - 1
                            };
                            let mut o = SubmitOptions::new().weight(weight);
                            if let Some(k) = key {
                                o = o.key(format!("k{k}"));
                            }
                            let (pk, cap) = (c.per_key, c.capacity);
                            let h = match &pool {
                                Pool::Smart(p) => {
                                    let m = model.clone();
                                    p.try_submit_with(move || job_future(m.clone(), i, pk, cap), o)
                                        .unwrap_or_else(|e| panic!("submit: {e}"))
                                }
                                Pool::Common(p) => p
                                    .try_submit_with(job_future(model.clone(), i, pk, cap), o)
                                    .unwrap_or_else(|e| panic!("submit: {e}")),
                            };
                            handles.push(Some(h));
                        }
                    }
                    Op::CancelAll => {
                        same_count = false;
                        {
                            let mut m = model.lock().unwrap();
                            for j in m.jobs.iter_mut() {
                                if !j.started {
                                    j.aborted_queued = true;
                                }
                            }
                        }
                        // Cancels at the call; the future only waits for the ends.
                        match &pool {
                            Pool::Smart(p) => drop(p.cancel_all()),
                            Pool::Common(p) => drop(p.cancel_all()),
                        }
                    }
                    Op::Count => {
                        if let Pool::Smart(p) = &pool {
                            p.worker_count();
                        }
                    }
                    Op::Advance(ms) => {
                        // A rate window reopening starts jobs.
                        same_count &= c.rate.is_none();
                        tokio::time::advance(Duration::from_millis(u64::from(ms))).await;
                    }
                    Op::Resize(s) => {
                        let s = (s as usize).min(c.max + 2);
                        let mut m = model.lock().unwrap();
                        m.size = s;
                        drop(m);
                        pool.resize(s);
                    }
                }
                if !run && !last {
                    continue;
                }
                let s1 = pool.stats();
                // Quick jobs queued may start (and end) in the settle.
                same_count &= !model.lock().unwrap().queued().iter().any(|(_, j)| j.quick);
                settle().await;
                let s2 = pool.stats();
                let _ = &s1;
                let m = model.lock().unwrap();
                prop_assert!(m.violations.is_empty(), "op {n} {op:?}: {:?}", m.violations);
                let running: Vec<_> = m.running().collect();
                let queued = m.queued();
                prop_assert_eq!(
                    (s2.running, s2.queued),
                    (running.len(), queued.len()),
                    "op {} {:?}: settled stats against the jobs ({})",
                    n,
                    op,
                    s2
                );
                if std::mem::replace(&mut same_count, true) {
                    prop_assert_eq!(
                        (s1.running, s1.queued),
                        (s2.running, s2.queued),
                        "op {} {:?}: counted at once, then settled",
                        n,
                        op
                    );
                }
                // Work conserving: no queued job that could start while a slot is free.
                if running.len() < m.size && c.rate.is_none() {
                    let mut keys: HashMap<u8, usize> = HashMap::new();
                    let mut weight: u64 = 0;
                    for (_, j) in &running {
                        if let Some(k) = j.key {
                            *keys.entry(k).or_default() += 1;
                        }
                        weight += u64::from(j.weight);
                    }
                    for (i, j) in &queued {
                        if let (Some(k), Some(max)) = (j.key, c.per_key) {
                            if keys.get(&k).copied().unwrap_or(0) >= max {
                                continue;
                            }
                        }
                        if let Some(cap) = c.capacity {
                            if weight + u64::from(j.weight) > cap {
                                break;
                            }
                        }
                        prop_assert!(
                            false,
                            "op {} {:?}: job {} could start, {} of {} running",
                            n,
                            op,
                            i,
                            running.len(),
                            m.size
                        );
                    }
                }
            }
            // Everything ends.
            for j in &model.lock().unwrap().jobs {
                j.gate.add_permits(1000);
            }
            for h in handles.into_iter().flatten() {
                let r = tokio::time::timeout(Duration::from_secs(3600), h).await;
                prop_assert!(r.is_ok(), "a task never ended");
            }
            settle().await;
            let s = pool.stats();
            prop_assert_eq!((s.running, s.queued), (0, 0), "{}", s);
            if let Pool::Smart(p) = &pool {
                tokio::time::advance(Duration::from_secs(5)).await;
                let workers = p.worker_count();
                settle().await;
                let alive = tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks();
                prop_assert!(
                    alive <= base + workers,
                    "{} tokio tasks for {} workers (base {})",
                    alive,
                    workers,
                    base
                );
            }
            Ok(())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(200),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn counted_reservations_agree_with_what_starts_with_bursts_and_cancels(c in case()) {
            run_case(c)?;
        }
    }
}
