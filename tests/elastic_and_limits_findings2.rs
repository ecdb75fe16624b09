//! Regression tests of a review of a16b9b5 (findings 212–214's fixes: retired elastic
//! workers end their slot tasks; `Limits::counter` where slots are reserved; RELIABILITY.md,
//! findings 235–237), each failing before its fix, with a randomized model of the counts
//! (which failed before too) and a pin of retiring workers under bursts.

mod support;

use std::time::Duration;

use nb_aiopool::{CommonAioPool, SmartAioPool, SubmitOptions};
use support::*;

/// Finding 235. 213's fix counts each job against the ones counted before it where slots are
/// reserved, but a reservation made before a job of higher priority arrived is not looked
/// at again: two tasks of weight 3 reserved two slots (capacity 10), then a task of weight
/// 8 and priority 5 went before them. Only it can start (8 + 3 > 10), yet `stats()` said
/// 2 running, 1 queued until the second slot task found its job could not start.
#[test]
fn a_reservation_overtaken_by_a_heavier_prioritised_task_is_counted_queued_at_once() {
    let rt = current_thread();
    rt.block_on(async {
        let pool = CommonAioPool::builder()
            .max_concurrency(3)
            .max_queue_size(10)
            .weight_capacity(10)
            .process_wide(false)
            .build();
        let w = |n| SubmitOptions::new().weight(n);
        let _w1 = pool
            .submit_with(std::future::pending::<()>(), w(3))
            .await
            .unwrap();
        let _w2 = pool
            .submit_with(std::future::pending::<()>(), w(3))
            .await
            .unwrap();
        let s = pool.stats();
        assert_eq!((s.running, s.queued), (2, 0), "both fit: {s}");
        let _h = pool
            .submit_with(std::future::pending::<()>(), w(8).priority(5))
            .await
            .unwrap();
        let s = pool.stats();
        assert_eq!(
            (s.running, s.queued),
            (1, 2),
            "only the heavy one starts: {s}"
        );
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let s = pool.stats();
        assert_eq!((s.running, s.queued), (1, 2), "settled: {s}");
    });
}

/// The same with no priorities: a job of priority 0 goes before a reserved one of
/// priority -1 (found by the randomized test below).
#[test]
fn a_reservation_overtaken_by_a_heavier_task_of_the_default_priority_is_counted_queued() {
    let rt = current_thread();
    rt.block_on(async {
        let pool = CommonAioPool::builder()
            .max_concurrency(2)
            .max_queue_size(10)
            .weight_capacity(5)
            .process_wide(false)
            .build();
        let w = |n| SubmitOptions::new().weight(n);
        let _a = pool
            .submit_with(std::future::pending::<()>(), w(2))
            .await
            .unwrap();
        let _low = pool
            .submit_with(std::future::pending::<()>(), w(1).priority(-1))
            .await
            .unwrap();
        let _b = pool
            .submit_with(std::future::pending::<()>(), w(4))
            .await
            .unwrap();
        let s = pool.stats();
        assert_eq!(
            (s.running, s.queued),
            (1, 2),
            "2 + 4 > 5, and the 1 waits behind: {s}"
        );
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let s = pool.stats();
        assert_eq!((s.running, s.queued), (1, 2), "settled: {s}");
    });
}

/// Finding 236. A runtime's end takes the reserved jobs submitted from it out of the queue; the
/// reservations were clamped to the queue's length, not to what may start, so a job of
/// another runtime held back by its key counted as running (until a slot task of its
/// runtime found it could not start: none while that runtime is not driven).
#[test]
fn a_runtimes_end_leaves_no_reservation_to_a_job_held_back_by_its_key() {
    let pool = CommonAioPool::builder()
        .max_concurrency(3)
        .max_queue_size(10)
        .max_per_key(1)
        .process_wide(false)
        .build();
    let key = |k: &str| SubmitOptions::new().key(k);
    let home = current_thread();
    let (gate, x) = home.block_on(async {
        let gate = Gate::default();
        let g = gate.clone();
        let x = pool
            .submit_with(async move { g.wait().await }, key("a"))
            .await
            .unwrap();
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        (gate, x)
    });
    assert_eq!((pool.stats().running, pool.stats().queued), (1, 0));
    let other = current_thread();
    // Reserved, their slot tasks spawned on `other` and not run: its `block_on` returns first.
    let (_b, _c) = other.block_on(async {
        let b = pool
            .submit_with(std::future::pending::<()>(), key("b"))
            .await
            .unwrap();
        let c = pool
            .submit_with(std::future::pending::<()>(), key("c"))
            .await
            .unwrap();
        (b, c)
    });
    let held = home
        .block_on(pool.submit_with(async { 5 }, key("a")))
        .unwrap();
    let s = pool.stats();
    assert_eq!((s.running, s.queued), (3, 1), "a's second waits: {s}");
    drop(other);
    let s = pool.stats();
    assert_eq!(
        (s.running, s.queued),
        (1, 1),
        "b and c lost; a's second still held back: {s}"
    );
    home.block_on(async {
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let s = pool.stats();
        assert_eq!((s.running, s.queued), (1, 1), "settled: {s}");
        gate.open();
        within("a", x).await.unwrap();
        assert_eq!(within("a's second", held).await.unwrap(), 5);
    });
}

/// Finding 237. `set_max_concurrency` below the reserved jobs (submitted, their slot tasks not run
/// yet) kept their reservations: `stats()` said 3 running after a shrink to 1, until the
/// slot tasks found they could not start them. They count as queued at once now. (Older
/// than a16b9b5, and in every pool; found by the randomized test below.)
#[test]
fn a_shrink_gives_back_the_reservations_beyond_the_new_size() {
    let rt = current_thread();
    rt.block_on(async {
        let pool = CommonAioPool::builder()
            .max_concurrency(3)
            .max_queue_size(10)
            .process_wide(false)
            .build();
        let mut handles = Vec::new();
        for _ in 0..3 {
            handles.push(pool.submit(std::future::pending::<()>()).await.unwrap());
        }
        let s = pool.stats();
        assert_eq!((s.running, s.queued), (3, 0), "{s}");
        pool.set_max_concurrency(1);
        let s = pool.stats();
        assert_eq!((s.running, s.queued), (1, 2), "after the shrink: {s}");
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let s = pool.stats();
        assert_eq!((s.running, s.queued), (1, 2), "settled: {s}");

        let smart = nb_aiopool::SmartAioPool::builder()
            .max_concurrency(3)
            .min_workers(3)
            .max_queue_size(10)
            .auto_shutdown(false)
            .process_wide(false)
            .build();
        let mut handles = Vec::new();
        for _ in 0..3 {
            handles.push(smart.submit(std::future::pending::<()>).await.unwrap());
        }
        smart.set_max_concurrency(1);
        let s = smart.stats();
        assert_eq!(
            (s.running, s.queued),
            (1, 2),
            "smart, after the shrink: {s}"
        );
        assert_eq!((smart.worker_count(), smart.busy_worker_count()), (1, 1));
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let s = smart.stats();
        assert_eq!((s.running, s.queued), (1, 2), "smart, settled: {s}");
        smart.set_max_concurrency(3);
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let s = smart.stats();
        assert_eq!((s.running, s.queued), (3, 0), "smart, grown back: {s}");
    });
}

// ----- randomized: the count where slots are reserved against what starts -------------

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
                    .max_queue_size(100)
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
                    .max_queue_size(100)
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
                settle().await;
                let s2 = pool.stats();
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
        fn counted_reservations_agree_with_what_starts(c in case()) {
            run_case(c)?;
        }
    }
}

/// Pinned (passes): an elastic pool on a multi-thread runtime, its workers retired (by a
/// count from another thread, and by shrinks) while bursts of tasks come and go, never
/// strands a task and ends up with no more slot tasks than live workers.
#[test]
fn retiring_workers_under_bursts_strands_nothing_and_leaves_no_extra_slot_tasks() {
    let rt = multi_thread_of(2);
    let pool = SmartAioPool::builder()
        .max_concurrency(16)
        .min_workers(1)
        .max_queue_size(1000)
        .idle_timeout(Duration::from_millis(1))
        .auto_shutdown(false)
        .process_wide(false)
        .max_per_key(2)
        .build();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counter = {
        let (pool, stop) = (pool.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += pool.worker_count() as u64;
                if n % 7 == 0 {
                    pool.set_max_concurrency(1 + (n as usize % 16));
                }
                std::thread::yield_now();
            }
        })
    };
    let base = rt.block_on(async {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    });
    rt.block_on(async {
        for round in 0..200u64 {
            let mut handles = Vec::new();
            for i in 0..(round % 23 + 1) {
                let opts = SubmitOptions::new().key(format!("k{}", i % 3));
                let recipe = move || async move {
                    if i % 2 == 0 {
                        tokio::task::yield_now().await;
                    }
                    i
                };
                handles.push(pool.submit_with(recipe, opts).await.unwrap());
            }
            for h in handles {
                within("a task", h).await.unwrap();
            }
            if round % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    counter.join().unwrap();
    pool.set_max_concurrency(16);
    rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let workers = pool.worker_count();
        let mut alive = usize::MAX;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            alive = tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks();
            // And the pool's sentinel on this runtime (made by the first submit).
            if alive <= base + 1 + workers {
                break;
            }
        }
        assert!(
            alive <= base + 1 + workers,
            "{alive} tasks, {workers} workers, base {base}"
        );
        let s = pool.stats();
        assert_eq!((s.running, s.queued), (0, 0), "{s}");
    });
}
