//! Flow control by key at scale (`SubmitOptions::key` with `max_per_key`, with priorities
//! and weights), in the three pools: a crawler feeding many distinct hosts (keys) through
//! one pool, most with a single task, some with thousands queued (parked by the queue,
//! `src/engine/queue.rs`, "Parked jobs"). Key names, aborts, `cancel_all`, timeouts,
//! resizes, priorities and the exit with parked tasks, and the memory per key once keys
//! go idle (RELIABILITY.md, 378; what a start costs with many saturated keys is measured
//! by `bench/src/bin/key_scan.rs`, not here).

mod counting_alloc;
mod support;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nb_aiopool::{CancelReason, SmartAioPool, SubmitErrorKind, SubmitOptions, TaskHandle};
use support::{flow_pools, per_pool, within, FlowLimits, Gate, Pool};

/// The three pools, each the test's own, with `conc` slots, a queue of `queue` (NoQueue
/// has none: its held tasks take places of `conc`) and `max_per_key(per_key)`.
fn keyed_pools(conc: usize, queue: usize, per_key: usize) -> Vec<Pool> {
    flow_pools(conc, queue, conc, FlowLimits::keys(per_key))
}

fn key(k: impl Into<String>) -> SubmitOptions {
    SubmitOptions::new().key(k)
}

/// Counts how many tasks of each label run at once, and the highest.
#[derive(Clone, Default)]
struct PerLabel(Arc<Mutex<std::collections::HashMap<String, (usize, usize)>>>);

impl PerLabel {
    fn task(
        &self,
        label: &str,
        gate: Option<Gate>,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static
    {
        let (me, label) = (self.clone(), label.to_string());
        move || {
            let (me, label, gate) = (me.clone(), label.clone(), gate.clone());
            Box::pin(async move {
                {
                    let mut m = me.0.lock().unwrap();
                    let e = m.entry(label.clone()).or_default();
                    e.0 += 1;
                    e.1 = e.1.max(e.0);
                }
                match gate {
                    Some(g) => g.wait().await,
                    None => tokio::task::yield_now().await,
                }
                me.0.lock().unwrap().get_mut(&label).unwrap().0 -= 1;
            })
        }
    }

    fn max(&self, label: &str) -> usize {
        self.0.lock().unwrap().get(label).map_or(0, |e| e.1)
    }
}

/// Records the order in which tasks start.
#[derive(Clone, Default)]
struct Starts(Arc<Mutex<Vec<String>>>);

impl Starts {
    fn task(
        &self,
        label: impl Into<String>,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static
    {
        let (me, label) = (self.clone(), label.into());
        move || {
            let (me, label) = (me.clone(), label.clone());
            Box::pin(async move {
                me.0.lock().unwrap().push(label);
                tokio::task::yield_now().await;
            })
        }
    }

    fn get(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A task that waits on `gate`.
fn gated(
    gate: &Gate,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static {
    let gate = gate.clone();
    move || {
        let g = gate.wait();
        Box::pin(g)
    }
}

/// Lets the pool's slot tasks run (paused time: no clock moves unless all are idle).
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// Pinned: the user submits tasks of one host with keys made from different `String`s
/// (`key("h")`, `key(String::from("h"))`, `key(format!(..))`) to a pool with
/// `max_per_key(2)`. `SubmitOptions::key`: "at most `n` running tasks share a key": the
/// key is its name, not the `String` it came from; at most 2 run at once, in all three
/// pools. Also an empty key, two keys that differ in their last byte of 64 KiB, and
/// non-ASCII keys ("é" precomposed and decomposed are different names, hence different keys).
#[tokio::test(start_paused = true)]
async fn keys_are_their_names_whatever_string_they_were_made_from() {
    let long_a = "x".repeat(64 * 1024) + "a";
    let long_b = "x".repeat(64 * 1024) + "b";
    for pool in keyed_pools(24, 64, 2) {
        let per = PerLabel::default();
        let gate = Gate::new();
        let mut handles = Vec::new();
        // Three labels per name, six tasks each through differently made Strings.
        let names: Vec<(&str, String)> = vec![
            ("h", "h".to_string()),
            ("empty", String::new()),
            ("long_a", long_a.clone()),
            ("long_b", long_b.clone()),
            ("e_acute", "\u{e9}".to_string()),
            ("e_combining", "e\u{301}".to_string()),
        ];
        for round in 0..3 {
            for (label, name) in &names {
                let k = match round {
                    0 => key(name.as_str()),
                    1 => key(name.chars().collect::<String>()),
                    _ => key(String::from(name.as_str())),
                };
                handles.push(
                    pool.submit_with(k, per.task(label, Some(gate.clone())))
                        .await,
                );
            }
        }
        settle().await;
        for (label, _) in &names {
            assert_eq!(
                per.max(label),
                2,
                "{}: tasks of key {label:?} made from different Strings did not run as one key \
                 (max_per_key(2))",
                pool.name()
            );
        }
        gate.open();
        for h in handles {
            within("a keyed task", h).await.unwrap();
        }
        let s = pool.stats();
        assert_eq!((s.queued, s.running), (0, 0), "{}: {s}", pool.name());
    }
}

/// Fills `pool` (max_per_key(1)) with one gated task of key "busy" and `n` more of it,
/// held back by their key (parked by the queue once a scan walks past more than 32),
/// each recording its start in `starts` as "busy{i}". Returns the running one's handle
/// and the held ones'.
async fn busy_key_with_held(
    pool: &Pool,
    gate: &Gate,
    n: usize,
    starts: &Starts,
    priority: i32,
) -> (TaskHandle<()>, Vec<TaskHandle<()>>) {
    let first = pool.submit_with(key("busy"), gated(gate)).await;
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let opts = key("busy").priority(priority);
        held.push(
            pool.submit_with(opts, starts.task(format!("busy{i}")))
                .await,
        );
    }
    settle().await;
    (first, held)
}

/// The user's crawler: one busy host (`max_per_key(1)`, 3000 of its tasks held back by
/// the key: parked) and other hosts' tasks with priorities queued behind a full pool.
/// The user aborts every other task of the busy host, then lets the pool go on.
/// Expected: every aborted handle says `Aborted` ("every accepted job's `TaskHandle`
/// resolves exactly once (value, panic, or a cancellation with its reason)"), `stats()`
/// counts them cancelled and no longer queued at once ("An abort ... resolves the handle
/// at once"), the other hosts' tasks start by priority, FIFO among equals, and the busy
/// host's tasks left start in their order, one at a time.
#[tokio::test(start_paused = true)]
async fn aborting_thousands_of_a_parked_keys_tasks_keeps_handles_stats_and_priority_order() {
    const HELD: usize = 3000;
    for pool in keyed_pools(2, HELD + 200, 1) {
        if pool.name() == "no_queue" {
            continue; // below, with places instead of a queue
        }
        let starts = Starts::default();
        let busy_gate = Gate::new();
        let (busy, held) = busy_key_with_held(&pool, &busy_gate, HELD, &starts, 0).await;
        // The second slot: a gated task of another host.
        let other_gate = Gate::new();
        let other = pool.submit_with(key("other"), gated(&other_gate)).await;
        settle().await;
        // Other hosts' tasks, one each, with priorities 0, 5, 10 in turn.
        let mut hosts = Vec::new();
        for i in 0..60 {
            let p = [0, 5, 10][i % 3];
            let opts = key(format!("host{i}")).priority(p);
            hosts.push(
                pool.submit_with(opts, starts.task(format!("p{p}-host{i}")))
                    .await,
            );
        }
        settle().await;
        let before = pool.stats();
        assert_eq!(
            (before.running, before.queued),
            (2, HELD + 60),
            "{}: before the aborts: {before}",
            pool.name()
        );
        let mut kept = Vec::new();
        for (i, h) in held.into_iter().enumerate() {
            if i % 2 == 0 {
                h.abort();
                let r = within("an aborted held task's handle", h).await;
                assert_eq!(
                    r.err().and_then(|e| e.cancel_reason()),
                    Some(CancelReason::Aborted),
                    "{}: a task of the busy host, held back by its key and aborted, did not \
                     say Aborted",
                    pool.name()
                );
            } else {
                kept.push((i, h));
            }
        }
        let after = pool.stats();
        assert_eq!(
            (after.running, after.queued, after.cancelled),
            (2, HELD / 2 + 60, (HELD / 2) as u64),
            "{}: stats() after aborting {} held tasks of the busy host: {after}",
            pool.name(),
            HELD / 2
        );
        // The other host's slot frees first: the other hosts' tasks run there in priority
        // order while the busy host's first task still runs.
        other_gate.open();
        within("the other host's gated task", other).await.unwrap();
        for h in hosts {
            within("another host's task", h).await.unwrap();
        }
        let order = starts.get();
        let mut want: Vec<String> = Vec::new();
        for p in [10, 5, 0] {
            for i in 0..60 {
                if [0, 5, 10][i % 3] == p {
                    want.push(format!("p{p}-host{i}"));
                }
            }
        }
        assert_eq!(
            order,
            want,
            "{}: the other hosts' tasks did not start by priority (FIFO among equals) beside \
             a busy host's parked tasks",
            pool.name()
        );
        busy_gate.open();
        within("the busy host's first task", busy).await.unwrap();
        for (_, h) in kept.iter_mut() {
            within("a busy host's task left", h).await.unwrap();
        }
        let busy_order: Vec<String> = starts.get().split_off(60);
        let want: Vec<String> = kept.iter().map(|(i, _)| format!("busy{i}")).collect();
        assert_eq!(
            busy_order,
            want,
            "{}: the busy host's tasks left did not start in their order",
            pool.name()
        );
        pool.wait_within().await;
        let end = pool.stats();
        assert_eq!(
            (end.queued, end.running, end.completed, end.cancelled),
            (0, 0, (2 + HELD / 2 + 60) as u64, (HELD / 2) as u64),
            "{}: stats() at the end: {end}",
            pool.name()
        );
    }
}

/// The same for NoQueueAioPool, whose held tasks take places: 3002 places, one busy host
/// with 3000 held tasks (parked), the user aborts every other one. Expected: `Aborted`
/// handles, `stats()` agreeing at once, the rest run in order, and the places given back
/// (a submit of another host starts at once).
#[tokio::test(start_paused = true)]
async fn no_queue_aborting_a_parked_keys_held_tasks_keeps_handles_and_stats() {
    const HELD: usize = 3000;
    let pool = keyed_pools(HELD + 2, 0, 1).remove(1);
    assert_eq!(pool.name(), "no_queue");
    let starts = Starts::default();
    let gate = Gate::new();
    let (busy, held) = busy_key_with_held(&pool, &gate, HELD, &starts, 0).await;
    let s = pool.stats();
    assert_eq!((s.running, s.queued), (1, HELD), "before the aborts: {s}");
    let mut kept = Vec::new();
    for (i, h) in held.into_iter().enumerate() {
        if i % 2 == 0 {
            h.abort();
            let r = within("an aborted held task's handle", h).await;
            assert_eq!(
                r.err().and_then(|e| e.cancel_reason()),
                Some(CancelReason::Aborted),
                "a held task of the busy host, aborted, did not say Aborted"
            );
        } else {
            kept.push((i, h));
        }
    }
    let s = pool.stats();
    assert_eq!(
        (s.running, s.queued, s.cancelled),
        (1, HELD / 2, (HELD / 2) as u64),
        "stats() after the aborts: {s}"
    );
    let other = pool.submit_with(key("other"), starts.task("other")).await;
    within("another host's task, with places free", other)
        .await
        .unwrap();
    gate.open();
    within("the busy host's first task", busy).await.unwrap();
    for (_, h) in kept.iter_mut() {
        within("a busy host's task left", h).await.unwrap();
    }
    let want: Vec<String> = std::iter::once("other".to_string())
        .chain(kept.iter().map(|(i, _)| format!("busy{i}")))
        .collect();
    assert_eq!(starts.get(), want, "the tasks did not start in their order");
    pool.wait_within().await;
    let end = pool.stats();
    assert_eq!((end.queued, end.running), (0, 0), "{end}");
}

/// `cancel_all` with one busy host's 3000 tasks held back by their key (parked), and
/// other hosts' tasks queued. Expected (`cancel_all`'s docs: queued and running tasks are
/// cancelled with `CancelAll`): every handle says `CancelAll`, `stats()` shows nothing
/// queued or running, every task counted cancelled; after it the key's limit still holds
/// (two new tasks of the busy host: one runs at a time) and a new task of it runs.
#[tokio::test(start_paused = true)]
async fn cancel_all_with_a_parked_key_cancels_every_held_task_and_keeps_the_key_limit() {
    const HELD: usize = 3000;
    for pool in keyed_pools(2, HELD + 100, 1) {
        let pool = if pool.name() == "no_queue" {
            keyed_pools(HELD + 60, 0, 1).remove(1)
        } else {
            pool
        };
        let starts = Starts::default();
        let gate = Gate::new();
        let (busy, held) = busy_key_with_held(&pool, &gate, HELD, &starts, 0).await;
        let other = pool.submit_with(key("other"), gated(&gate)).await;
        settle().await;
        let mut hosts = Vec::new();
        for i in 0..50 {
            hosts.push(
                pool.submit_with(key(format!("host{i}")).priority(i % 3), gated(&gate))
                    .await,
            );
        }
        settle().await;
        within("cancel_all", pool.cancel_all_now()).await;
        let mut reasons = std::collections::BTreeMap::new();
        for h in std::iter::once(busy)
            .chain(held)
            .chain(std::iter::once(other))
            .chain(hosts)
        {
            let r = within("a handle after cancel_all", h).await;
            *reasons
                .entry(format!("{:?}", r.err().and_then(|e| e.cancel_reason())))
                .or_insert(0) += 1;
        }
        let all = HELD + 52;
        assert_eq!(
            reasons,
            [(format!("{:?}", Some(CancelReason::CancelAll)), all)]
                .into_iter()
                .collect(),
            "{}: after cancel_all, the handles said other than CancelAll",
            pool.name()
        );
        let s = pool.stats();
        assert_eq!(
            (s.queued, s.running, s.cancelled),
            (0, 0, all as u64),
            "{}: stats() after cancel_all: {s}",
            pool.name()
        );
        // The key's limit after it: one at a time.
        let per = PerLabel::default();
        let gate2 = Gate::new();
        let a = pool
            .submit_with(key("busy"), per.task("busy", Some(gate2.clone())))
            .await;
        let b = pool
            .submit_with(key("busy"), per.task("busy", Some(gate2.clone())))
            .await;
        settle().await;
        assert_eq!(
            per.max("busy"),
            1,
            "{}: after cancel_all the key's limit did not hold",
            pool.name()
        );
        gate2.open();
        within("a new task of the busy host", a).await.unwrap();
        within("a second new task of the busy host", b)
            .await
            .unwrap();
        assert!(
            starts.get().is_empty(),
            "{}: cancelled tasks ran: {:?}",
            pool.name(),
            starts.get()
        );
    }
}

/// A full pool whose queue is all one busy host's tasks, held back by their key (parked):
/// the user submits another host's task with `SubmitOptions::timeout(1 s)`. Expected
/// ("Gives up waiting for room after `timeout`: the submit fails with
/// `SubmitErrorKind::TimedOut` and hands the task back"): `TimedOut`, the task handed
/// back, `stats()` unchanged; once one held task is aborted, the same submit is accepted
/// and the task runs in the free slot.
#[tokio::test(start_paused = true)]
async fn a_timed_submit_behind_a_parked_key_times_out_then_runs_once_a_place_frees() {
    const HELD: usize = 200;
    for pool in keyed_pools(2, HELD, 1) {
        let pool = if pool.name() == "no_queue" {
            keyed_pools(HELD + 2, 0, 1).remove(1)
        } else {
            pool
        };
        let starts = Starts::default();
        let gate = Gate::new();
        // One running, HELD + 1 held: every place taken, one slot free.
        let (busy, mut held) = busy_key_with_held(&pool, &gate, HELD + 1, &starts, 0).await;
        let before = pool.stats();
        assert_eq!(
            (before.running, before.queued),
            (1, HELD + 1),
            "{}: {before}",
            pool.name()
        );
        let opts = key("x").timeout(Duration::from_secs(1));
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let kind = per_pool!(
            &pool,
            |p| {
                let r = r.clone();
                within(
                    "a timed submit",
                    p.submit_with(
                        async move {
                            r.fetch_add(1, Ordering::SeqCst);
                        },
                        opts.clone(),
                    ),
                )
                .await
                .err()
                .map(|e| e.kind())
            },
            |p| {
                let r = r.clone();
                within(
                    "a timed submit",
                    p.submit_with(
                        move || {
                            let r = r.clone();
                            async move {
                                r.fetch_add(1, Ordering::SeqCst);
                            }
                        },
                        opts.clone(),
                    ),
                )
                .await
                .err()
                .map(|e| e.kind())
            }
        );
        assert_eq!(
            kind,
            Some(SubmitErrorKind::TimedOut),
            "{}: the timed submit was not refused TimedOut",
            pool.name()
        );
        let s = pool.stats();
        assert_eq!(
            (s.running, s.queued, s.submitted),
            (before.running, before.queued, before.submitted),
            "{}: stats() changed by a timed-out submit: {s}",
            pool.name()
        );
        let h = held.pop().unwrap();
        h.abort();
        let _ = within("an aborted held task", h).await;
        let h = pool
            .submit_with(opts.clone(), {
                let r = ran.clone();
                move || {
                    let r = r.clone();
                    async move {
                        r.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
            .await;
        within("the other host's task, in the free slot", h)
            .await
            .unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1, "{}", pool.name());
        gate.open();
        within("the busy host's first task", busy).await.unwrap();
        for h in held {
            within("a held task", h).await.unwrap();
        }
        pool.wait_within().await;
    }
}

/// Resizes while a busy host (`max_per_key(2)`) has 500 tasks parked: the user grows the
/// pool by 4, then shrinks it to 1. Expected ("growing starts queued tasks at once;
/// shrinking lets running tasks finish and starts none until fewer than `n` run"): the
/// other hosts' tasks start at once on the grow, the busy host never has more than 2
/// running, and after the shrink its tasks run one at a time, all of them.
#[tokio::test(start_paused = true)]
async fn resizes_while_a_key_is_parked_keep_the_key_limit_and_run_everything() {
    const HELD: usize = 500;
    for pool in keyed_pools(2, HELD + 100, 2) {
        let pool = if pool.name() == "no_queue" {
            keyed_pools(2, 0, 2).remove(1)
        } else {
            pool
        };
        if pool.name() == "no_queue" {
            // Places are slots there: grow first so that the held tasks are accepted.
            pool.set_max_concurrency(HELD + 2);
        }
        let per = PerLabel::default();
        let gate = Gate::new();
        let mut busy = Vec::new();
        for _ in 0..2 {
            busy.push(
                pool.submit_with(key("busy"), per.task("busy-first", Some(gate.clone())))
                    .await,
            );
        }
        for _ in 0..HELD {
            busy.push(pool.submit_with(key("busy"), per.task("busy", None)).await);
        }
        settle().await;
        if pool.name() == "no_queue" {
            pool.set_max_concurrency(2);
        }
        // Others queued behind the two running busy tasks.
        let others_gate = Gate::new();
        let mut others = Vec::new();
        for i in 0..4i32 {
            let opts = key(format!("host{i}")).priority(i);
            others.push(per_pool!(
                &pool,
                |p| p
                    .try_submit_with(per.task("others", Some(others_gate.clone()))(), opts)
                    .ok(),
                |p| p
                    .try_submit_with(per.task("others", Some(others_gate.clone())), opts)
                    .ok()
            ));
        }
        let others: Vec<TaskHandle<()>> = others.into_iter().flatten().collect();
        settle().await;
        pool.set_max_concurrency(6);
        settle().await;
        if !others.is_empty() {
            assert_eq!(
                per.max("others"),
                4,
                "{}: the grow did not start the other hosts' tasks",
                pool.name()
            );
        }
        assert_eq!(
            per.max("busy"),
            0,
            "{}: a held task of the busy host started over its limit",
            pool.name()
        );
        pool.set_max_concurrency(1);
        gate.open();
        others_gate.open();
        for h in others {
            within("another host's task", h).await.unwrap();
        }
        for h in busy {
            within("a busy host's task", h).await.unwrap();
        }
        assert_eq!(
            per.max("busy"),
            1,
            "{}: after the shrink to 1 the busy host's tasks did not run one at a time",
            pool.name()
        );
        let s = pool.stats();
        assert_eq!(
            (s.queued, s.running, s.completed as usize),
            (
                0,
                0,
                HELD + 2 + if pool.name() == "no_queue" { 0 } else { 4 }
            ),
            "{}: {s}",
            pool.name()
        );
    }
}

/// Priorities across a parked key: a busy host's 100 tasks of priority 10 held back by its
/// key (parked), other hosts' tasks of priorities 5 and 0 behind them, one slot free for
/// them all. Expected ("Priorities: strict ... FIFO among equals"; keys skipped past): each
/// time the busy host's running task ends, its next one (priority 10) goes first; the
/// others by priority after them, FIFO among equals.
#[tokio::test(start_paused = true)]
async fn a_parked_keys_high_priority_tasks_go_first_when_their_key_frees() {
    for pool in keyed_pools(2, 400, 1) {
        if pool.name() == "no_queue" {
            continue; // no queue: its held tasks are started by key room, not queue order
        }
        let starts = Starts::default();
        let gate = Gate::new();
        let g_gate = Gate::new();
        let (busy, held) = busy_key_with_held(&pool, &gate, 100, &starts, 10).await;
        let g = pool.submit_with(key("g"), gated(&g_gate)).await;
        settle().await;
        let mut hosts = Vec::new();
        for i in 0..60 {
            let p = if i % 2 == 0 { 5 } else { 0 };
            hosts.push(
                pool.submit_with(
                    key(format!("host{i}")).priority(p),
                    starts.task(format!("p{p}-host{i}")),
                )
                .await,
            );
        }
        settle().await;
        // Slot 1 frees: from now on it runs everything, one at a time.
        gate.open();
        within("the busy host's first task", busy).await.unwrap();
        for h in held {
            within("a busy host's task", h).await.unwrap();
        }
        for h in hosts {
            within("another host's task", h).await.unwrap();
        }
        let mut want: Vec<String> = (0..100).map(|i| format!("busy{i}")).collect();
        want.extend((0..60).step_by(2).map(|i| format!("p5-host{i}")));
        want.extend((1..60).step_by(2).map(|i| format!("p0-host{i}")));
        assert_eq!(
            starts.get(),
            want,
            "{}: tasks did not start by priority across a parked key",
            pool.name()
        );
        g_gate.open();
        within("g", g).await.unwrap();
    }
}

// ----- the process exit with parked tasks -------------------------------------------------

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let (scenario, dir) = support::child_scenario();
    match scenario.as_str() {
        // A default SmartAioPool (auto_shutdown), max_per_key(1): the busy host's task
        // runs, 500 more of it are held back (parked), 100 other hosts' tasks with
        // priorities are queued; `main` calls `std::process::exit`.
        "exit-parked" => {
            let pool = SmartAioPool::builder()
                .name("exit-parked")
                .max_concurrency(4)
                .max_queue_size(1000)
                .max_per_key(1)
                .build();
            let rt = support::multi_thread_of(2);
            rt.block_on(async {
                let record = |label: String, busy: bool| {
                    let dir = dir.clone();
                    move || {
                        let (dir, label) = (dir.clone(), label.clone());
                        async move {
                            if busy {
                                support::append(&dir.join("busy_events"), &format!("s {label}"));
                            }
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            support::append(&dir.join("ran"), &label);
                            if busy {
                                support::append(&dir.join("busy_events"), &format!("e {label}"));
                            }
                        }
                    }
                };
                for i in 0..501 {
                    let opts = key("busy");
                    pool.submit_with(record(format!("busy{i}"), true), opts)
                        .await
                        .unwrap()
                        .detach();
                }
                for i in 0..100 {
                    let opts = key(format!("host{i}")).priority(i % 3);
                    pool.submit_with(record(format!("host{i}"), false), opts)
                        .await
                        .unwrap()
                        .detach();
                }
            });
            // Runs in progress now are frozen by the exit (never dropped, never ended).
            support::append(&dir.join("busy_events"), "exit");
            support::exit_from_main(&dir, rt);
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// The user's `main` (a default SmartAioPool, `max_per_key(1)`) calls `std::process::exit`
/// while one host's 500 tasks are held back by their key (parked) and 100 other hosts'
/// tasks are queued. Expected (README: "after a plain `#[tokio::main]` returns, or
/// `std::process::exit` is called: an at-exit hook runs what is left"): every task runs
/// at the exit, the host's tasks one at a time, and the process exits.
#[test]
fn the_exit_runs_every_parked_task_of_a_key_one_at_a_time() {
    let played = support::play("exit-parked", 120);
    assert_eq!(
        played.code,
        Some(0),
        "the child did not exit cleanly: {}",
        played.stderr
    );
    let ran: std::collections::BTreeSet<String> = played.lines("ran").into_iter().collect();
    let missing: Vec<String> = (0..501)
        .map(|i| format!("busy{i}"))
        .chain((0..100).map(|i| format!("host{i}")))
        .filter(|l| !ran.contains(l))
        .collect();
    assert!(
        missing.is_empty(),
        "{} tasks never ran at the exit, e.g. {:?}; stderr: {}",
        missing.len(),
        &missing[..missing.len().min(5)],
        played.stderr
    );
    // The busy host's runs at once: replayed from the start and end lines (the runs in
    // progress at the `exit` line are frozen there, and re-run from their recipes).
    let (mut now, mut most) = (std::collections::BTreeSet::new(), 0);
    let mut at_once = Vec::new();
    for l in played.lines("busy_events") {
        match l.split_once(' ') {
            Some(("s", label)) => {
                now.insert(label.to_string());
                most = most.max(now.len());
                if now.len() > 1 {
                    at_once.push(now.clone());
                }
            }
            Some(("e", label)) => drop(now.remove(label)),
            _ => now.clear(),
        }
    }
    assert_eq!(
        most,
        1,
        "the busy host's tasks ran over max_per_key(1), e.g. {:?}",
        at_once.first()
    );
}

// ----- memory after keys go idle ------------------------------------------------------------

/// One crawl round: `hosts` distinct hosts, one task each, every 8th with 3 more (held
/// back by the key while its first runs), priorities mixed; waits for the pool.
async fn crawl_round(pool: &Pool, round: usize, hosts: usize) {
    for i in 0..hosts {
        let n = if i % 8 == 0 { 4 } else { 1 };
        for j in 0..n {
            let opts = key(format!("host-{round}-{i}.example.com")).priority((i % 3) as i32 - j);
            let h = pool
                .submit_with(opts, || async {
                    tokio::task::yield_now().await;
                })
                .await;
            h.detach();
        }
    }
    pool.wait_within().await;
}

/// Pinned: a crawler feeds rounds of distinct hosts (keys) through one pool
/// (`max_per_key(1)`, priorities, every 8th host with 4 tasks, held back by its key):
/// 2,000 hosts, then 20,000 new ones, then 20,000 more. Expected (README: "memory that
/// depends on the pool's size and never on the number of jobs"): what flow control keeps
/// per key (the running counts, the parked map) goes with the keys' last tasks: the heap
/// this thread holds after a round of 20,000 hosts is what it held after one of 2,000.
#[tokio::test(start_paused = true)]
async fn memory_kept_for_keys_comes_back_once_they_go_idle() {
    // `live_bytes` counts this thread's heap only: no other test's to keep out.
    for pool in keyed_pools(16, 256, 1) {
        let pool = if pool.name() == "no_queue" {
            keyed_pools(272, 0, 1).remove(1)
        } else {
            pool
        };
        crawl_round(&pool, 0, 200).await; // warm up: lazily made parts
        crawl_round(&pool, 1, 2_000).await;
        let small = counting_alloc::live_bytes();
        crawl_round(&pool, 2, 20_000).await;
        let big = counting_alloc::live_bytes();
        crawl_round(&pool, 3, 20_000).await;
        let again = counting_alloc::live_bytes();
        let s = pool.stats();
        assert_eq!((s.queued, s.running), (0, 0), "{}: {s}", pool.name());
        eprintln!(
            "{}: live bytes after 2k hosts {small}, 20k {big}, 20k more {again}",
            pool.name()
        );
        assert!(
            big - small < 16 * 1024 && again - small < 16 * 1024,
            "{}: the heap grew with the number of distinct keys: {small} bytes after 2,000 \
             hosts, {big} after 20,000, {again} after 20,000 more",
            pool.name()
        );
    }
}
