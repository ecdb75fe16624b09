//! Flow control's counts that go on from where the last one stopped (RELIABILITY.md, 379)
//! (`Limits::count_startable` and its memo, the queue's cursor, epoch and `ahead`,
//! `Engine::pop_startable`'s "counted" start, the parking of many keys): pool-level
//! sequences the unit tests of `src/engine/limits.rs` and `src/engine/queue.rs` do not
//! make, in the three pools, with queues under 512 jobs (where builds with debug
//! assertions check each count that goes on against a count from the head, and panic
//! with "nb_aiopool internal: a count that went on") and above (where only a hang or a
//! broken limit shows a wrong count).

mod support;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nb_aiopool::{CancelReason, SmartAioPool, SubmitErrorKind, SubmitOptions, TaskHandle};
use support::{flow_pools, per_pool, within, FlowLimits, Gate, Pool, Rng};

type Boxed = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The limits of a scenario's pools.
#[derive(Clone, Copy, Debug)]
struct Shape {
    conc: usize,
    queue: usize,
    per_key: Option<usize>,
    weight: Option<u64>,
    rate: Option<(u32, Duration)>,
}

/// The three pools of `shape`, each the test's own (NoQueue has no queue: its held tasks
/// take places of `conc`, so it gets `conc + queue` places).
fn pools(shape: Shape) -> Vec<Pool> {
    let Shape {
        conc,
        queue,
        per_key,
        weight,
        rate,
    } = shape;
    let limits = FlowLimits {
        max_per_key: per_key,
        weight_capacity: weight,
        rate,
    };
    flow_pools(conc, queue, conc + queue, limits)
}

/// What ran at once: per key, and the weight; and the order of starts.
#[derive(Default)]
struct Seen {
    /// The tasks running now (their bodies), by id: key and weight.
    live: HashMap<usize, (Option<String>, u64)>,
    per_key: HashMap<String, usize>,
    max_per_key: HashMap<String, usize>,
    weight: u64,
    max_weight: u64,
    starts: Vec<usize>,
}

#[derive(Clone, Default)]
struct Tracker(Arc<Mutex<Seen>>);

/// Takes its task out of what runs when the task's body ends or is dropped.
struct Leave(Tracker, usize);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.leave(self.1);
    }
}

impl Tracker {
    /// A task numbered `id`, of `key` and `weight`, that runs for `ms` (paused or real
    /// time), or until `gate` opens.
    fn task(
        &self,
        id: usize,
        key: Option<String>,
        weight: u64,
        ms: u64,
        gate: Option<Gate>,
    ) -> impl Fn() -> Boxed + Send + Sync + 'static {
        let me = self.clone();
        move || {
            let (me, key, gate) = (me.clone(), key.clone(), gate.clone());
            Box::pin(async move {
                me.enter(id, key, weight);
                let _leave = Leave(me.clone(), id);
                match gate {
                    Some(g) => g.wait().await,
                    None if ms == 0 => tokio::task::yield_now().await,
                    None => tokio::time::sleep(Duration::from_millis(ms)).await,
                }
            })
        }
    }

    fn enter(&self, id: usize, key: Option<String>, weight: u64) {
        let mut s = self.0.lock().unwrap();
        s.starts.push(id);
        s.weight += weight;
        s.max_weight = s.max_weight.max(s.weight);
        if let Some(k) = &key {
            let n = {
                let n = s.per_key.entry(k.clone()).or_default();
                *n += 1;
                *n
            };
            let m = s.max_per_key.entry(k.clone()).or_default();
            *m = (*m).max(n);
        }
        s.live.insert(id, (key, weight));
    }

    /// Task `id` no longer runs (its body ended or was dropped, or the test aborted it:
    /// on a current-thread runtime it is never polled again).
    fn leave(&self, id: usize) {
        let mut s = self.0.lock().unwrap();
        if let Some((key, weight)) = s.live.remove(&id) {
            s.weight -= weight;
            if let Some(k) = &key {
                *s.per_key.get_mut(k).unwrap() -= 1;
            }
        }
    }

    /// Every task running now stops (a `cancel_all` on a current-thread runtime).
    fn leave_all(&self) {
        let ids: Vec<usize> = self.0.lock().unwrap().live.keys().copied().collect();
        ids.into_iter().for_each(|id| self.leave(id));
    }

    /// The tasks whose bodies run now: id, key, weight.
    fn live(&self) -> Vec<(usize, Option<String>, u64)> {
        let s = self.0.lock().unwrap();
        s.live
            .iter()
            .map(|(id, (k, w))| (*id, k.clone(), *w))
            .collect()
    }

    fn started(&self, id: usize) -> bool {
        self.0.lock().unwrap().starts.contains(&id)
    }

    fn max_per_key(&self) -> usize {
        self.0
            .lock()
            .unwrap()
            .max_per_key
            .values()
            .copied()
            .max()
            .unwrap_or(0)
    }

    fn max_weight(&self) -> u64 {
        self.0.lock().unwrap().max_weight
    }

    fn starts(&self) -> Vec<usize> {
        self.0.lock().unwrap().starts.clone()
    }
}

async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// How many seeds a randomised test runs: `n`, or `REVIEW_MEMO_SEEDS` for a longer run.
fn seeds(n: u64) -> u64 {
    std::env::var("REVIEW_MEMO_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(n)
}

/// How handles ended.
#[derive(Default, Debug, PartialEq, Eq)]
struct Ends {
    ok: u64,
    cancelled: u64,
    aborted: u64,
}

/// Waits for every handle (bounded), and checks that `stats()` agrees with them.
async fn end_all(pool: &Pool, what: &str, handles: Vec<TaskHandle<()>>, accepted: u64) -> Ends {
    let mut ends = Ends::default();
    for h in handles {
        match within(&format!("{}: {what}: a task's handle", pool.name()), h).await {
            Ok(()) => ends.ok += 1,
            Err(e) => {
                let r = e.cancel_reason();
                assert!(
                    r.is_some(),
                    "{}: {what}: a task ended with a panic none of them makes",
                    pool.name()
                );
                ends.cancelled += 1;
                ends.aborted += u64::from(r == Some(CancelReason::Aborted));
            }
        }
    }
    // A slot gives its place back a moment after its task's handle resolves.
    settle().await;
    let s = pool.stats();
    assert_eq!(
        (s.queued, s.running, s.submitted, s.completed, s.cancelled),
        (0, 0, accepted, ends.ok, ends.cancelled),
        "{}: {what}: stats() do not agree with the handles once every task ended \
         ({} ok, {} cancelled of {accepted} accepted): {s}",
        pool.name(),
        ends.ok,
        ends.cancelled
    );
    ends
}

/// An accepted task, as the test submitted it: id (its submit order), priority, key,
/// weight.
type Info = (usize, i32, Option<String>, u64);

/// At a quiet moment (current-thread runtime, every slot task has run): `stats()` counts
/// the task bodies running and the tasks waiting, and no waiting task could start now
/// (the first one in queue order whose key has room, if its weight fits, would have
/// started in a free slot). No rate limit.
fn check_quiet(
    pool: &Pool,
    what: &str,
    tracker: &Tracker,
    info: &[Info],
    gone: &std::collections::HashSet<usize>,
    max_now: usize,
    shape: Shape,
) {
    let s = pool.stats();
    let live = tracker.live();
    let started: std::collections::HashSet<usize> = tracker.starts().into_iter().collect();
    let mut queued: Vec<&Info> = info
        .iter()
        .filter(|t| !started.contains(&t.0) && !gone.contains(&t.0))
        .collect();
    queued.sort_by_key(|t| (std::cmp::Reverse(t.1), t.0));
    assert_eq!(
        (s.running, s.queued),
        (live.len(), queued.len()),
        "{}: {what}: stats() ({s}) does not count the {} tasks running and {} waiting",
        pool.name(),
        live.len(),
        queued.len()
    );
    if s.running >= max_now {
        return;
    }
    let mut per_key: HashMap<&str, usize> = HashMap::new();
    let mut weight = 0;
    for (_, k, w) in &live {
        if let Some(k) = k {
            *per_key.entry(k.as_str()).or_default() += 1;
        }
        weight += w;
    }
    let has_room = |t: &&&Info| match (&t.2, shape.per_key) {
        (Some(k), Some(max)) => per_key.get(k.as_str()).copied().unwrap_or(0) < max,
        _ => true,
    };
    if let Some(t) = queued.iter().find(has_room) {
        let fits = shape.weight.is_none_or(|cap| weight + t.3 <= cap);
        assert!(
            !fits,
            "{}: {what}: task {} (priority {}, key {:?}, weight {}) waits with a slot free \
             ({} of {max_now} run, weight {weight}) and nothing holding it back ({s})",
            pool.name(),
            t.0,
            t.1,
            t.2,
            t.3,
            s.running
        );
    }
}

/// One random scenario on `pool`: `n` tasks of random keys (of `keys`), weights,
/// priorities and lengths, submitted with the pool's slots busy; random aborts of queued
/// and running tasks, resizes (shrinks and grows), timed submits, `cancel_all` and more
/// submits while it drains. Checks that every task ends, the limits held, and `stats()`.
async fn scenario(pool: &Pool, shape: Shape, seed: u64, n: usize, keys: u64, paused: bool) {
    let mut rng = Rng::new(seed);
    let tracker = Tracker::default();
    let what = format!("seed {seed}, {n} tasks, {shape:?}");
    let mut handles: Vec<TaskHandle<()>> = Vec::new();
    let mut ids: Vec<usize> = Vec::new();
    let mut info: Vec<Info> = Vec::new();
    let gone = std::cell::RefCell::new(std::collections::HashSet::new());
    let mut max_now = match pool {
        Pool::NoQueue(_) => shape.conc + shape.queue,
        _ => shape.conc,
    };
    let quiet = paused && shape.rate.is_none();
    // An abort of a running task: on a current-thread runtime its body is never polled
    // again, and ends now; on a multi-thread one it may be inside a poll: only queued
    // tasks are aborted there.
    let abort = |handles: &[TaskHandle<()>], ids: &[usize], i: usize| {
        if paused {
            handles[i].abort();
            tracker.leave(ids[i]);
            gone.borrow_mut().insert(ids[i]);
        } else if !tracker.started(ids[i]) {
            handles[i].abort();
        }
    };
    let mut accepted = 0u64;
    let max_w = shape.weight.unwrap_or(4).max(1);
    let make = |rng: &mut Rng, id: usize| {
        let k = (rng.below(keys)) as usize;
        let key = (!rng.chance(10)).then(|| format!("k{k}"));
        let weight = 1 + rng.below(max_w.div_ceil(2));
        let prio = [0, 0, 0, 5, -3, 9][rng.below(6) as usize];
        let ms = if paused { rng.below(4) } else { 0 };
        let mut opts = SubmitOptions::new().priority(prio).weight(weight as u32);
        if let Some(k) = &key {
            opts = opts.key(k.clone());
        }
        let info: Info = (id, prio, key.clone(), weight);
        (opts, tracker.task(id, key, weight, ms, None), info)
    };
    for id in 0..n {
        let (mut opts, task, this) = make(&mut rng, id);
        let timed = rng.chance(5);
        if timed {
            opts = opts.timeout(Duration::from_millis(rng.below(5)));
        }
        match pool.try_submit_with(opts, task).await {
            Ok(h) => {
                accepted += 1;
                handles.push(h);
                ids.push(id);
                info.push(this);
            }
            Err(SubmitErrorKind::TimedOut) if timed => {}
            Err(k) => panic!("{}: {what}: a submit was refused ({k:?})", pool.name()),
        }
        if rng.chance(3) && !handles.is_empty() {
            let i = rng.below(handles.len() as u64) as usize;
            abort(&handles, &ids, i);
        }
        if rng.chance(1) {
            max_now = 1 + rng.below(shape.conc as u64 * 2) as usize;
            pool.set_max_concurrency(max_now);
        }
        if quiet && id % 50 == 49 {
            settle().await;
            check_quiet(pool, &what, &tracker, &info, &gone.borrow(), max_now, shape);
        }
        if rng.chance(2) {
            tokio::task::yield_now().await;
        }
    }
    // While it drains.
    for round in 0..40 {
        match rng.below(10) {
            0 | 1 if !handles.is_empty() => {
                let i = rng.below(handles.len() as u64) as usize;
                abort(&handles, &ids, i);
            }
            2 => {
                max_now = 1 + rng.below(shape.conc as u64 * 2) as usize;
                pool.set_max_concurrency(max_now);
            }
            3 if paused && round % 20 == 0 => {
                pool.cancel_all_now().await;
                tracker.leave_all();
                gone.borrow_mut().extend(ids.iter().copied());
            }
            4 | 5 => {
                let id = n + round;
                let (opts, task, this) = make(&mut rng, id);
                let r = per_pool!(
                    pool,
                    |p| p.try_submit_with(task(), opts).map_err(|e| e.kind()),
                    |p| p.try_submit_with(task, opts).map_err(|e| e.kind())
                );
                if let Ok(h) = r {
                    accepted += 1;
                    handles.push(h);
                    ids.push(id);
                    info.push(this);
                }
            }
            _ => {
                if paused {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    if quiet {
                        settle().await;
                        check_quiet(pool, &what, &tracker, &info, &gone.borrow(), max_now, shape);
                    }
                } else {
                    tokio::task::yield_now().await;
                }
            }
        }
    }
    pool.set_max_concurrency(shape.conc);
    let _ = end_all(pool, &what, handles, accepted).await;
    if let Some(k) = shape.per_key {
        assert!(
            tracker.max_per_key() <= k,
            "{}: {what}: {} tasks of one key ran at once, with max_per_key({k})",
            pool.name(),
            tracker.max_per_key()
        );
    }
    if let Some(w) = shape.weight {
        assert!(
            tracker.max_weight() <= w,
            "{}: {what}: tasks of weight {} ran at once, with weight_capacity({w})",
            pool.name(),
            tracker.max_weight()
        );
    }
}

/// The user mixes keys, weights and priorities in one pool (a crawler with hosts, bytes
/// in flight and urgent pages) while aborting tasks, resizing the pool, submitting with
/// timeouts and now and then calling `cancel_all`, with up to 600 tasks queued (counts
/// checked against counts from the head in debug builds). Expected: "every accepted
/// job's `TaskHandle` resolves exactly once", at most `max_per_key` tasks of a key and at
/// most `weight_capacity` of weight run at once, and `stats()` agrees with the handles.
/// Pinned: no count that went on disagreed, no hang, in all three pools (paused time,
/// current-thread).
#[tokio::test(start_paused = true)]
async fn random_mixes_of_keys_weights_priorities_aborts_and_resizes_end_every_task() {
    for seed in 0..seeds(12) {
        let mut rng = Rng::new(seed * 7 + 1);
        let shape = Shape {
            conc: 1 + rng.below(6) as usize,
            // Now and then a queue that fills: submits wait, and timed ones time out.
            queue: if seed % 4 == 1 { 40 } else { 700 },
            per_key: Some(1 + rng.below(3) as usize),
            weight: rng.chance(70).then(|| 3 + rng.below(8)),
            rate: None,
        };
        let n = if seed % 3 == 0 { 600 } else { 120 };
        let keys = 1 + rng.below(12);
        for pool in pools(shape) {
            scenario(&pool, shape, seed, n, keys, true).await;
        }
    }
}

/// As above, with queues of 1,500 to 3,000 tasks: beyond the 512 jobs the debug check
/// counts from the head, so a count that said too few would leave a task waiting with a
/// slot free (a hang, caught by the bounded waits) and one that said too many would let a
/// limit be broken or `stats()` disagree. Pinned: every task ended, the limits held.
#[tokio::test(start_paused = true)]
async fn queues_beyond_the_checked_512_jobs_end_every_task_within_the_limits() {
    for seed in 0..seeds(4) {
        let mut rng = Rng::new(seed * 13 + 5);
        let shape = Shape {
            conc: 2 + rng.below(6) as usize,
            queue: 3200,
            per_key: Some(1 + rng.below(2) as usize),
            weight: rng.chance(60).then(|| 4 + rng.below(6)),
            rate: None,
        };
        let n = [1500, 3000][seed as usize % 2];
        let keys = [1, 3, 40, 700][seed as usize % 4];
        for pool in pools(shape) {
            scenario(&pool, shape, 100 + seed, n, keys, true).await;
        }
    }
}

/// As above, with a rate limit beside the keys and weights (`rate_limit(count, per)`).
/// Pinned: every task ended, the limits held, `stats()` agreed.
#[tokio::test(start_paused = true)]
async fn rate_limits_beside_keys_and_weights_end_every_task() {
    for seed in 0..seeds(6) {
        let mut rng = Rng::new(seed * 3 + 11);
        let shape = Shape {
            conc: 1 + rng.below(6) as usize,
            queue: 1700,
            per_key: Some(1 + rng.below(3) as usize),
            weight: rng.chance(60).then(|| 3 + rng.below(8)),
            rate: Some((
                1 + rng.below(6) as u32,
                Duration::from_millis(1 + rng.below(5)),
            )),
        };
        let n = if seed % 2 == 0 { 800 } else { 150 };
        for pool in pools(shape) {
            scenario(&pool, shape, 200 + seed, n, 1 + rng.below(10), true).await;
        }
    }
}

/// The same random scenarios on a 2-worker multi-thread runtime (real time, tasks that
/// yield), where slot tasks run beside the submitter and starts race the counts.
/// Pinned: every task ended, the limits held.
#[test]
fn random_mixes_on_a_multi_thread_runtime_end_every_task() {
    support::on_thread_within("the multi-thread scenarios", 240, || {
        let rt = support::multi_thread_of(2);
        rt.block_on(async {
            for seed in 0..seeds(6) {
                let mut rng = Rng::new(seed * 5 + 3);
                let shape = Shape {
                    conc: 1 + rng.below(6) as usize,
                    queue: 1300,
                    per_key: Some(1 + rng.below(3) as usize),
                    weight: rng.chance(70).then(|| 3 + rng.below(8)),
                    rate: None,
                };
                let n = if seed % 2 == 0 { 1200 } else { 200 };
                for pool in pools(shape) {
                    scenario(&pool, shape, 300 + seed, n, 1 + rng.below(20), false).await;
                }
            }
        });
    });
}

/// The user's pool is fed from three runtimes at once (three threads, each a
/// current-thread runtime of its own submitting 450 tasks of three keys, random weights
/// and priorities, and awaiting them), with 1,350 tasks queued at the peak: jobs of one
/// runtime taken by another's slots are handed over, and counts go on between submits
/// of different runtimes. Expected: every handle resolves ("every accepted job's
/// `TaskHandle` resolves exactly once"), `max_per_key` and `weight_capacity` hold,
/// `stats()` agrees; also with a rate limit (7 starts a millisecond), where a job handed
/// to its own runtime's slot may find the window full and go back to its place. Pinned,
/// in all three pools.
#[test]
fn several_runtimes_submitting_keyed_weighted_tasks_at_once_end_every_task() {
    for rate in [None, Some((7, Duration::from_millis(1)))] {
        several_runtimes(Shape {
            conc: 4,
            queue: 1400,
            per_key: Some(2),
            weight: Some(5),
            rate,
        });
    }
}

fn several_runtimes(shape: Shape) {
    for pool in pools(shape) {
        let name = pool.name();
        let tracker = Tracker::default();
        let threads: Vec<_> = (0..3u64)
            .map(|t| {
                let (pool, tracker) = (pool.clone(), tracker.clone());
                std::thread::spawn(move || {
                    let rt = support::current_thread();
                    rt.block_on(async {
                        let mut rng = Rng::new(t + 40);
                        let mut handles = Vec::new();
                        for i in 0..450 {
                            let id = (t as usize) * 1000 + i;
                            let key = format!("k{}", rng.below(3));
                            let weight = 1 + rng.below(3);
                            let opts = SubmitOptions::new()
                                .key(key.clone())
                                .weight(weight as u32)
                                .priority([0, 3, -1][rng.below(3) as usize]);
                            let task = tracker.task(id, Some(key), weight, 0, None);
                            handles.push(pool.try_submit_with(opts, task).await.expect("accepted"));
                            if rng.chance(10) {
                                tokio::task::yield_now().await;
                            }
                        }
                        for h in handles {
                            within("a task submitted from one of three runtimes", h)
                                .await
                                .expect("the task ran");
                        }
                    });
                })
            })
            .collect();
        support::on_thread_within("three runtimes' tasks", 120, move || {
            for t in threads {
                t.join().expect("a submitting thread");
            }
        });
        support::until("the slots to give their places back", || {
            let s = pool.stats();
            s.running == 0 && s.queued == 0
        });
        let s = pool.stats();
        assert_eq!(
            (s.submitted, s.completed, s.cancelled),
            (1350, 1350, 0),
            "{name}: stats() after three runtimes' 1,350 tasks all ended well ({shape:?}): {s}"
        );
        assert!(
            tracker.max_per_key() <= 2 && tracker.max_weight() <= 5,
            "{name}: limits broken with three runtimes submitting: {} of a key (max 2), \
             weight {} (capacity 5)",
            tracker.max_per_key(),
            tracker.max_weight()
        );
    }
}

/// The user's SmartAioPool (`rerun_interrupted`, the default) runs keyed, weighted
/// tasks on a runtime that ends while 3 run and 700 wait: the runs cut off are queued
/// again at the front (before every waiting task, "interrupted runs queued again ...
/// go first"), then a second runtime drives the pool to the end. Expected: every task
/// ends well, the re-runs first, and the limits hold. Pinned.
#[test]
fn smart_re_runs_put_back_at_the_front_of_a_long_keyed_queue_end_every_task() {
    for (per_key, weight) in [(1, None), (2, Some(4u64)), (1, Some(3u64))] {
        let pool = SmartAioPool::builder()
            .max_concurrency(3)
            .max_queue_size(800)
            .max_per_key(per_key)
            .process_wide(false)
            .auto_shutdown(false);
        let pool = match weight {
            Some(w) => pool.weight_capacity(w),
            None => pool,
        }
        .build();
        let tracker = Tracker::default();
        let runs = Arc::new(Mutex::new(HashMap::<usize, usize>::new()));
        let gate = Gate::new();
        // While the first runtime lives, runs wait (to be cut off by its end).
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let recipe = |id: usize, key: String, w: u64| {
            let (tracker, runs, gate, cut) =
                (tracker.clone(), runs.clone(), gate.clone(), cut.clone());
            move || {
                runs.lock()
                    .unwrap()
                    .entry(id)
                    .and_modify(|n| *n += 1)
                    .or_insert(1);
                let first = cut.load(std::sync::atomic::Ordering::SeqCst);
                let body = tracker.task(id, Some(key.clone()), w, 0, None);
                let gate = gate.clone();
                Box::pin(async move {
                    if first {
                        gate.wait().await; // never opened: cut off by the runtime's end
                    }
                    body().await;
                }) as Boxed
            }
        };
        let rt_a = support::multi_thread_of(1);
        let handles: Vec<TaskHandle<()>> = rt_a.block_on(async {
            let mut rng = Rng::new(per_key as u64 + 7);
            let mut handles = Vec::new();
            for id in 0..703 {
                let key = format!("k{}", rng.below(5));
                let w = 1 + rng.below(weight.unwrap_or(2).min(2));
                let opts = SubmitOptions::new()
                    .key(key.clone())
                    .weight(w as u32)
                    .priority([0, 2, -2][rng.below(3) as usize]);
                let h = within("a submit", pool.submit_with(recipe(id, key, w), opts))
                    .await
                    .expect("accepted");
                handles.push(h);
            }
            settle().await;
            handles
        });
        let before = pool.stats();
        assert!(
            before.running >= 1 && before.queued + before.running == 703,
            "setup: {before}"
        );
        // The runs inside their first poll are cut off: their tracker entries go with them.
        drop(rt_a);
        cut.store(false, std::sync::atomic::Ordering::SeqCst);
        tracker.leave_all();
        let rt_b = support::current_thread();
        let pool2 = pool.clone();
        rt_b.block_on(async move {
            // A submit from this runtime gives the stranded pool a runtime to run on.
            let wake = within(
                "a submit from the second runtime",
                pool2.submit(|| async {}),
            )
            .await
            .expect("accepted");
            within("the second runtime's task", wake).await.unwrap();
            for h in handles {
                within("a task after its runtime ended", h)
                    .await
                    .expect("the task ran to its end");
            }
            settle().await;
            let s = pool2.stats();
            assert_eq!(
                (s.queued, s.running, s.completed, s.cancelled),
                (0, 0, 704, 0),
                "per_key {per_key}, weight {weight:?}: stats() once the re-runs and the \
                 queue ran: {s}"
            );
        });
        assert!(
            tracker.max_per_key() <= per_key,
            "{} tasks of a key ran at once after the re-runs (max_per_key({per_key}))",
            tracker.max_per_key()
        );
        if let Some(w) = weight {
            assert!(
                tracker.max_weight() <= w,
                "weight {} ran at once after the re-runs (capacity {w})",
                tracker.max_weight()
            );
        }
    }
}

/// The user feeds a keyed, weighted pool from a stream (`map_unordered`, 700 items,
/// no key, weight 1) and a task group (600 tasks, aborted with `abort_all` while most
/// are queued) while keyed tasks hold a key at its limit with 600 more of it waiting.
/// Expected: the stream yields every item, the group's tasks all end (aborted or run),
/// the keyed tasks all run once their key frees, `stats()` agrees. Pinned.
#[tokio::test(start_paused = true)]
async fn streams_and_groups_feeding_a_keyed_pool_beside_a_saturated_key_end_every_task() {
    use futures_util::StreamExt;
    let shape = Shape {
        conc: 3,
        queue: 2000,
        per_key: Some(1),
        weight: Some(3),
        rate: None,
    };
    for pool in pools(shape) {
        let name = pool.name();
        let tracker = Tracker::default();
        let gate = Gate::new();
        let mut keyed = Vec::new();
        for id in 0..601 {
            let g = (id == 0).then(|| gate.clone());
            let t = tracker.task(id, Some("hot".into()), 1, 1, g);
            keyed.push(
                pool.try_submit_with(SubmitOptions::new().key("hot"), t)
                    .await
                    .unwrap(),
            );
        }
        // A group of 600 plain tasks, aborted while most wait.
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let group_ends = {
            let d = done.clone();
            let f = move || {
                let d = d.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    d.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            };
            per_pool!(
                &pool,
                |p| {
                    let mut g = p.group::<()>();
                    for _ in 0..600 {
                        within("a group submit", g.submit(f())).await.unwrap();
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    g.abort_all();
                    within("the group's join_all", g.join_all()).await
                },
                |p| {
                    let mut g = p.group::<()>();
                    for _ in 0..600 {
                        within("a group submit", g.submit(f.clone())).await.unwrap();
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    g.abort_all();
                    within("the group's join_all", g.join_all()).await
                }
            )
        };
        let ran = group_ends.iter().filter(|r| r.is_ok()).count();
        assert_eq!(
            group_ends.len(),
            600,
            "{name}: a group's join_all lost tasks beside a saturated key"
        );
        assert_eq!(
            ran,
            done.load(std::sync::atomic::Ordering::SeqCst),
            "{name}: the group's results do not match the tasks that ran"
        );
        let items: Vec<Result<u32, nb_aiopool::TaskError>> = within(
            "the stream beside a saturated key",
            pool.unordered(futures_util::stream::iter(0..700u32), |i| async move {
                tokio::task::yield_now().await;
                i
            })
            .collect::<Vec<_>>(),
        )
        .await;
        assert_eq!(
            items.iter().filter(|r| r.is_ok()).count(),
            700,
            "{name}: the stream beside a saturated key did not yield every item"
        );
        gate.open();
        let mut ok = 0;
        for h in keyed {
            within("a keyed task once its key freed", h).await.unwrap();
            ok += 1;
        }
        settle().await;
        let s = pool.stats();
        assert_eq!(
            (s.queued, s.running, s.completed + s.cancelled),
            (0, 0, s.submitted),
            "{name}: stats() once everything ended: {s}"
        );
        assert_eq!(ok, 601);
        assert!(
            tracker.max_per_key() <= 1,
            "{name}: {} tasks of the saturated key ran at once",
            tracker.max_per_key()
        );
    }
}

/// The user's crawler with `max_per_key(1)` and `weight_capacity(4)`, two slots: one
/// slot held by a gated task of key "hot", the other by a gated task of weight 3 (for
/// NoQueueAioPool, whose 1,002 places are slots, resized to 2 once all are held); 900
/// tasks queued, a third of them "hot", the
/// others of 30 keys, with random priorities and weights 1-2. Expected: the others start
/// in priority order, FIFO among equals ("Higher runs first; FIFO among equal
/// priorities") while "hot" is held, then the "hot" tasks in their order once the gate
/// opens; every task ends. Pinned, in all three pools.
#[tokio::test(start_paused = true)]
async fn priorities_start_in_order_beside_a_held_key_with_weights() {
    let shape = Shape {
        conc: 2,
        queue: 1000,
        per_key: Some(1),
        weight: Some(4),
        rate: None,
    };
    for pool in pools(shape) {
        let name = pool.name();
        let tracker = Tracker::default();
        let gate = Gate::new();
        let hold = pool
            .try_submit_with(
                SubmitOptions::new().key("hot"),
                tracker.task(usize::MAX, Some("hot".into()), 1, 0, Some(gate.clone())),
            )
            .await
            .unwrap();
        // The second slot: a blocker of weight 3 (the capacity's rest), so that all 900
        // queue before any starts.
        let gate2 = Gate::new();
        let blocker = pool
            .try_submit_with(
                SubmitOptions::new().weight(3),
                tracker.task(usize::MAX - 1, None, 3, 0, Some(gate2.clone())),
            )
            .await
            .unwrap();
        settle().await;
        let mut rng = Rng::new(99);
        let mut placed = Vec::new(); // (priority, id, hot)
        let mut handles = Vec::new();
        for id in 0..900 {
            let hot = rng.chance(33);
            let key = if hot {
                "hot".to_string()
            } else {
                format!("h{}", rng.below(30))
            };
            let prio = [0, 1, 7, -4][rng.below(4) as usize];
            let w = 1 + rng.below(2);
            let opts = SubmitOptions::new()
                .key(key.clone())
                .priority(prio)
                .weight(w as u32);
            handles.push(
                pool.try_submit_with(opts, tracker.task(id, Some(key), w, 0, None))
                    .await
                    .unwrap(),
            );
            placed.push((prio, id, hot));
        }
        settle().await;
        if pool.name() == "no_queue" {
            // NoQueue's 1,002 places are all slots: two, as the others, so that the other
            // keys' tasks run one at a time beside the hot one.
            pool.set_max_concurrency(2);
        }
        gate2.open();
        within("the blocker", blocker).await.unwrap();
        // The others run one at a time in the free slot (the hot one holds the other).
        for _ in 0..20 {
            settle().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut want_others: Vec<(i32, usize)> =
            placed.iter().filter(|p| !p.2).map(|p| (p.0, p.1)).collect();
        want_others.sort_by_key(|&(p, id)| (std::cmp::Reverse(p), id));
        let got: Vec<usize> = tracker
            .starts()
            .into_iter()
            .filter(|&id| id < 900)
            .collect();
        let want: Vec<usize> = want_others.iter().map(|p| p.1).collect();
        assert_eq!(
            got, want,
            "{name}: the other hosts' tasks did not start in priority order (FIFO among \
             equals) while the hot key was held"
        );
        gate.open();
        within("the hot key's gated task", hold).await.unwrap();
        for h in handles {
            within("a queued task", h).await.unwrap();
        }
        settle().await;
        let s = pool.stats();
        assert_eq!(
            (s.queued, s.running, s.submitted, s.completed),
            (0, 0, 902, 902),
            "{name}: stats() once all 902 ended: {s}"
        );
        let mut want_hot: Vec<(i32, usize)> =
            placed.iter().filter(|p| p.2).map(|p| (p.0, p.1)).collect();
        want_hot.sort_by_key(|&(p, id)| (std::cmp::Reverse(p), id));
        let got_hot: Vec<usize> = tracker
            .starts()
            .into_iter()
            .filter(|&id| id < 900)
            .skip(want.len())
            .collect();
        assert_eq!(
            got_hot,
            want_hot.iter().map(|p| p.1).collect::<Vec<_>>(),
            "{name}: the hot key's tasks did not start in priority order once it freed"
        );
    }
}
