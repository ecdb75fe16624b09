//! Flow control's memory and bookkeeping over long runs with many distinct keys
//! (RELIABILITY.md, 380; a review on 52b4552): a crawler passes each host, or by mistake
//! each URL (every key unique), as `SubmitOptions::key`, with `max_per_key`, weights,
//! priorities and a `rate_limit`, for hours. What flow control keeps per key or per task
//! (the running counts by key, the queue's parked jobs, `Limits`' memo and its list of
//! freed keys, the rate window) must be given back: the heap a pool holds is bounded by
//! the pool's size, not by the number of keys or tasks it has seen, while it is busy and
//! once it is idle.
//!
//! The heap is measured with this binary's counting allocator: the live bytes of the
//! test's own thread (`counting_alloc::live_bytes`), where a current-thread runtime runs
//! the pools and their tasks, so that a map that grows its capacity counts (a count of
//! blocks would not see it), and no other test's heap does. The faults' tests come first;
//! the pins after them.

// The submits' futures hand back handles.
#![allow(clippy::async_yields_async)]
// Each test holds `support::serial()` for its whole run (on a current-thread runtime, whose
// awaits never need the lock), so that the one counting the whole process's blocks runs
// alone under `cargo test` too.
#![allow(clippy::await_holding_lock)]

mod counting_alloc;
mod support;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nb_aiopool::{CancelReason, SubmitErrorKind, SubmitOptions};
use support::{flow_pools, per_pool, within, FlowLimits, Gate, Pool};

/// The three pools, each the test's own, with `conc` slots, a queue of `queue` and
/// `limits`; NoQueueAioPool, which has no queue, with `conc + queue` slots (its held
/// tasks take places of its slots, as the others' queued tasks take places of the queue).
fn pools(conc: usize, queue: usize, limits: FlowLimits) -> Vec<Pool> {
    let mut all = flow_pools(conc, queue, conc, limits);
    all[1] = flow_pools(conc, queue, conc + queue, limits).remove(1);
    all
}

/// A URL of a crawl: a key of its own for every task when used as the key by mistake.
fn url(round: u64, i: u64) -> String {
    format!("https://host-{round}-{i}.example.com/some/path/to/page-{i}.html")
}

/// What runs, by key and by weight: the most tasks of one key and the most weight seen
/// running at once. Running tasks hold a [`Running`], which a task's drop (an abort, a
/// `cancel_all`) gives back as its end does.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<SeenInner>>);

#[derive(Default)]
struct SeenInner {
    by_key: HashMap<String, usize>,
    weight: u64,
    most_of_a_key: usize,
    most_weight: u64,
}

struct Running(Seen, String, u64);

impl Drop for Running {
    fn drop(&mut self) {
        let mut s = (self.0).0.lock().unwrap();
        let n = s.by_key.get_mut(&self.1).expect("entered");
        *n -= 1;
        if *n == 0 {
            s.by_key.remove(&self.1);
        }
        s.weight -= self.2;
    }
}

impl Seen {
    fn enter(&self, key: &str, weight: u64) -> Running {
        let mut s = self.0.lock().unwrap();
        let n = s.by_key.entry(key.to_string()).or_default();
        *n += 1;
        let n = *n;
        s.most_of_a_key = s.most_of_a_key.max(n);
        s.weight += weight;
        s.most_weight = s.most_weight.max(s.weight);
        drop(s);
        Running(self.clone(), key.to_string(), weight)
    }

    /// A task of `key` and `weight` that runs for `micros` µs.
    fn task(
        &self,
        key: &str,
        weight: u64,
        micros: u64,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = u64> + Send>> + Send + Sync + 'static
    {
        let (seen, key) = (self.clone(), key.to_string());
        move || {
            let (seen, key) = (seen.clone(), key.clone());
            Box::pin(async move {
                let _run = seen.enter(&key, weight);
                if micros == 0 {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(Duration::from_micros(micros)).await;
                }
                1
            })
        }
    }

    fn most_of_a_key(&self) -> usize {
        self.0.lock().unwrap().most_of_a_key
    }

    fn most_weight(&self) -> u64 {
        self.0.lock().unwrap().most_weight
    }
}

/// Fails unless the heap held after the marks `marks` (live bytes, the first taken after a
/// warm-up) grew by less than `bound` bytes from the first.
fn assert_bounded(what: &str, marks: &[isize], bound: isize) {
    let grown: Vec<isize> = marks.iter().map(|m| m - marks[0]).collect();
    assert!(
        grown.iter().all(|g| *g < bound),
        "{what}: the heap grew with the number of keys seen, not bounded by the pool's size \
         (bytes held at each mark, against the first: {grown:?})"
    );
}

// ----- the faults -----------------------------------------------------------------------

/// How a crawl submits.
#[derive(Clone, Copy)]
enum Crawl {
    /// A task of 2 ms submitted every 0.25 ms, so the pool of 16 slots always has slots
    /// free (a crawler waiting on the network more than on the pool).
    Underloaded,
    /// Tasks that yield once, submitted as fast as the pool takes them (each submit waits
    /// for room).
    Saturated,
}

/// One crawl of `n` URLs, each its own key, submitted as `how` says. Returns the live
/// bytes after every `n / 5` submits, and once idle.
async fn crawl(pool: &Pool, seen: &Seen, how: Crawl, round: u64, n: u64) -> Vec<isize> {
    let micros = match how {
        Crawl::Underloaded => 2_000,
        Crawl::Saturated => 0,
    };
    let mut marks = Vec::new();
    for i in 0..n {
        let key = url(round, i);
        let h = pool
            .submit_with(
                SubmitOptions::new().key(key.clone()),
                seen.task(&key, 1, micros),
            )
            .await;
        h.detach();
        if matches!(how, Crawl::Underloaded) && i % 4 == 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if i % (n / 5) == n / 5 - 1 {
            marks.push(counting_alloc::live_bytes());
        }
    }
    pool.wait_within().await;
    marks.push(counting_alloc::live_bytes());
    marks
}

/// The user crawls URLs through a pool with `max_per_key(1)`, and by mistake keys each
/// task by its URL (every key unique). The pool has slots free most of the time. They
/// expect memory bounded by the pool's size, not by how many URLs it has seen (README:
/// "memory that depends on the pool's size and never on the number of jobs"; the
/// `max_per_key` docs: "What the pool keeps for a key goes with the key's last task").
///
/// What happened (before the fix), in all three pools: the heap grew by about 100 bytes a
/// task, and stayed grown once the pool was idle: "common: the heap grew with the number
/// of keys seen, not bounded by the pool's size (bytes held at each mark, against the
/// first: [0, 590368, 910416, 1771088, 2091088, 2086292])" (20,000 URLs; no_queue and
/// smart grew alike). Each start with free slots counted the queue (`Limits::count_startable`),
/// and the count went on from the last one (its `Memo`), adding the key of every job it
/// counted to the memo's totals (`Tally::keys`), with the key's name; a job's end took
/// its key's total down to 0 but left the entry (`Limits::ended`), and only a count from
/// the head clears them, which this pool never made.
#[tokio::test(start_paused = true)]
async fn a_key_per_url_in_a_pool_with_free_slots_keeps_no_memory_per_url_seen() {
    let _serial = support::serial();
    for pool in pools(16, 64, FlowLimits::keys(1)) {
        let seen = Seen::default();
        crawl(&pool, &seen, Crawl::Underloaded, 0, 1_000).await; // warm up: lazily made parts
        let marks = crawl(&pool, &seen, Crawl::Underloaded, 1, 20_000).await;
        let s = pool.stats();
        assert_eq!(
            (s.queued, s.running, s.completed),
            (0, 0, 21_000),
            "{}: not every URL's task ran: {s}",
            pool.name()
        );
        assert_eq!(seen.most_of_a_key(), 1, "{}", pool.name());
        assert_bounded(pool.name(), &marks, 32 * 1024);
    }
}

/// The user crawls URLs, each its own key (`max_per_key(1)`), submitting as fast as the
/// pool takes them, into a NoQueueAioPool of 72 slots ("submit waits for a free slot").
/// They expect memory bounded by the pool's size (README, as above), as the other two
/// pools keep it.
///
/// What happened (before the fix): "no_queue: the heap grew with the number of keys
/// seen, not bounded by the pool's size (bytes held at each mark, against the first: [0,
/// 1190330, 1821869, 3552593, 4186984, 4156363])" (40,000 URLs: 4 MB more held once
/// idle);
/// CommonAioPool and SmartAioPool held their level. A NoQueueAioPool's held submits are
/// started as slots free, and each start counts the queue, going on from the last count:
/// the same cause as
/// [`a_key_per_url_in_a_pool_with_free_slots_keeps_no_memory_per_url_seen`].
#[tokio::test(start_paused = true)]
async fn a_key_per_url_in_a_busy_pool_keeps_no_memory_per_url_seen() {
    let _serial = support::serial();
    for pool in pools(8, 64, FlowLimits::keys(1)) {
        let seen = Seen::default();
        crawl(&pool, &seen, Crawl::Saturated, 0, 1_000).await; // warm up
        let marks = crawl(&pool, &seen, Crawl::Saturated, 1, 40_000).await;
        let s = pool.stats();
        assert_eq!(
            (s.queued, s.running, s.completed),
            (0, 0, 41_000),
            "{}: not every URL's task ran: {s}",
            pool.name()
        );
        assert_eq!(seen.most_of_a_key(), 1, "{}", pool.name());
        assert_bounded(pool.name(), &marks, 32 * 1024);
    }
}

/// The user crawls 30,000 URLs, each its own key, through a pool with a `rate_limit`
/// (100 starts a ms) and `max_per_key(1)`, submitting as fast as the pool takes them,
/// for 300 ms of (paused) time. They expect the heap held while it is busy, and once
/// idle, to stay bounded by the pool's size (README, as above; the rate window keeps the
/// last 100 starts, not one per task), and no URL's task lost.
///
/// What happened (before the fix), in NoQueueAioPool (the other two held their level):
/// "no_queue: the heap grew with the number of keys seen, not bounded by the pool's size
/// (bytes held at each mark, against the first: [0, 750538, 1771210, 2251210, 3812554,
/// 3788125])": the memo's keys of
/// [`a_key_per_url_in_a_pool_with_free_slots_keeps_no_memory_per_url_seen`], not the
/// rate window. Since the fix it passes: a pin of the window as well.
#[tokio::test(start_paused = true)]
async fn a_rate_limited_crawl_of_unique_keys_keeps_its_window_bounded() {
    let _serial = support::serial();
    let limits = FlowLimits {
        max_per_key: Some(1),
        weight_capacity: None,
        rate: Some((100, Duration::from_millis(1))),
    };
    for pool in pools(8, 64, limits) {
        let seen = Seen::default();
        crawl(&pool, &seen, Crawl::Saturated, 0, 1_000).await;
        let marks = crawl(&pool, &seen, Crawl::Saturated, 1, 30_000).await;
        let s = pool.stats();
        assert_eq!(
            (s.queued, s.running, s.completed),
            (0, 0, 31_000),
            "{}: not every URL's task ran: {s}",
            pool.name()
        );
        assert_bounded(pool.name(), &marks, 32 * 1024);
    }
}

// ----- the pins -------------------------------------------------------------------------

/// What a churn round ended with: tasks completed, aborted, cancelled by `cancel_all`,
/// submits timed out.
#[derive(Debug, Default, Clone, Copy)]
struct Ends {
    completed: u64,
    aborted: u64,
    cancel_all: u64,
    timed_out: u64,
}

/// One round of a long crawl with churn: `n` tasks of 0.7 ms, hosts of 1 to 4 tasks on
/// even rounds and a key per task on odd ones, random priorities and weights 1 to 3;
/// every 7th handle aborted just after its submit (queued, parked or running), every 11th
/// submit timed out after 0.3 ms (it times out while the pool is full), a shrink to 1 slot
/// at a third and back to `conc` at half, `cancel_all` at two thirds on every third round;
/// beside them, a group of 20 plain tasks (CommonAioPool and NoQueueAioPool) and a
/// stream of 50. Checks every handle's answer, and waits for the pool.
async fn churn_round(pool: &Pool, r: u64, n: u64, conc: usize, seen: &Seen) -> Ends {
    let name = pool.name();
    let mut handles = Vec::new();
    let mut ends = Ends::default();
    let mut rng = support::Rng::new(r * 7919 + 1);
    let mut group = per_pool!(pool, |p| Some(p.group::<u64>()), |_p| None);
    for i in 0..n {
        let host = if r % 2 == 0 {
            format!("https://host-{r}-{}.example.com/", i / (1 + i % 4))
        } else {
            url(r, i)
        };
        let weight = 1 + rng.below(3);
        let mut opts = SubmitOptions::new()
            .key(host.clone())
            .priority(rng.below(5) as i32 - 2)
            .weight(weight as u32);
        if i % 11 == 5 {
            opts = opts.timeout(Duration::from_micros(300));
        }
        match pool
            .try_submit_with(opts, seen.task(&host, weight, 700))
            .await
        {
            Ok(h) => {
                let aborted = i % 7 == 3;
                if aborted {
                    h.abort();
                }
                handles.push((h, if aborted { "aborted" } else { "left alone" }));
            }
            Err(SubmitErrorKind::TimedOut) => ends.timed_out += 1,
            Err(e) => panic!("{name}: round {r}: a submit was refused ({e:?})"),
        }
        if i == n / 3 {
            pool.set_max_concurrency(1);
        }
        if i == n / 2 {
            pool.set_max_concurrency(conc);
            if let Some(g) = &mut group {
                for j in 0..20 {
                    within("a group's submit", g.submit(async move { j }))
                        .await
                        .unwrap_or_else(|e| panic!("{name}: a group's submit refused: {e}"));
                }
            }
        }
        if r % 3 == 2 && i == 2 * n / 3 {
            pool.cancel_all_now().await;
            for (_, how) in handles.iter_mut() {
                if *how == "left alone" {
                    *how = "cancel_all";
                }
            }
        }
    }
    {
        use futures_util::StreamExt;
        let inputs = futures_util::stream::iter(0..50u64);
        let got: Vec<_> = within(
            "a stream beside keyed tasks",
            pool.unordered(inputs, |x| async move { x })
                .collect::<Vec<_>>(),
        )
        .await;
        let ok = got.iter().filter(|r| r.is_ok()).count();
        assert_eq!(
            ok, 50,
            "{name}: round {r}: a stream beside keyed tasks lost items: {got:?}"
        );
    }
    if let Some(g) = group {
        let all = within("a group's join_all", g.join_all()).await;
        let ok = all.iter().filter(|r| r.is_ok()).count();
        assert_eq!(
            ok, 20,
            "{name}: round {r}: a group beside keyed tasks lost tasks"
        );
    }
    for (h, how) in handles {
        let res = within("a keyed task's handle", h).await;
        match (&res, how) {
            (Ok(1), _) => ends.completed += 1,
            (Err(e), "aborted") if e.cancel_reason() == Some(CancelReason::Aborted) => {
                ends.aborted += 1
            }
            (Err(e), "cancel_all") if e.cancel_reason() == Some(CancelReason::CancelAll) => {
                ends.cancel_all += 1
            }
            _ => panic!(
                "{name}: round {r}: a keyed task {how} resolved with {:?}",
                res.map_err(|e| e.to_string())
            ),
        }
    }
    pool.wait_within().await;
    ends
}

/// Pinned: a long crawl with churn (14 rounds of 600 keyed tasks: hosts of 1 to 4 tasks
/// or a key per URL, priorities, weights; aborts of queued, parked and running tasks,
/// submits timed out while the pool is full, `set_max_concurrency(1)` and back,
/// `cancel_all`, a group and a stream beside), in the three pools, with three sets of
/// limits (`max_per_key(2)` with a `rate_limit` of 40 a ms; `max_per_key(2)` with
/// `weight_capacity(6)`; `max_per_key(1)` alone). Every handle resolves as the test
/// expects (completed, or `Aborted`, or `CancelAll`), the group's and stream's tasks all
/// complete, no key ever runs more than `max_per_key` tasks at once nor the pool more
/// than its weight capacity, `stats()` agrees with the handles, and the heap held by the
/// idle pool after each round stays within 16 KiB of its level after round 2.
#[tokio::test(start_paused = true)]
async fn a_long_crawl_with_aborts_timeouts_resizes_and_cancels_keeps_its_bookkeeping_bounded() {
    let _serial = support::serial();
    let configs = [
        FlowLimits {
            max_per_key: Some(2),
            weight_capacity: None,
            rate: Some((40, Duration::from_millis(1))),
        },
        FlowLimits {
            max_per_key: Some(2),
            weight_capacity: Some(6),
            rate: None,
        },
        FlowLimits::keys(1),
    ];
    for limits in configs {
        for pool in pools(8, 48, limits) {
            let name = pool.name();
            let seen = Seen::default();
            let mut marks = Vec::new();
            let mut sum = Ends::default();
            let mut beside = 0;
            for r in 0..14 {
                let ends = churn_round(&pool, r, 600, 8, &seen).await;
                sum.completed += ends.completed;
                sum.aborted += ends.aborted;
                sum.cancel_all += ends.cancel_all;
                sum.timed_out += ends.timed_out;
                beside += if name == "smart" { 50 } else { 70 };
                if r >= 2 {
                    marks.push(counting_alloc::live_bytes());
                }
            }
            let what = format!("{name} with {limits:?}");
            assert!(
                sum.aborted > 0 && sum.cancel_all > 0 && sum.timed_out > 0,
                "{what}: the churn did not churn: {sum:?}"
            );
            let s = pool.stats();
            assert_eq!(
                (s.queued, s.running, s.completed, s.cancelled),
                (0, 0, sum.completed + beside, sum.aborted + sum.cancel_all),
                "{what}: stats() disagree with the handles ({sum:?}, {beside} group and \
                 stream tasks): {s}"
            );
            assert!(
                seen.most_of_a_key() <= limits.max_per_key.unwrap(),
                "{what}: {} tasks of one key ran at once",
                seen.most_of_a_key()
            );
            if let Some(cap) = limits.weight_capacity {
                assert!(
                    seen.most_weight() <= cap,
                    "{what}: a weight of {} ran at once",
                    seen.most_weight()
                );
            }
            assert_bounded(&what, &marks, 16 * 1024);
        }
    }
}

/// One round in which `hosts` new hosts each submit 6 tasks (`max_per_key(1)`): each
/// host's first task runs and waits on a gate, and its 5 others wait behind it for their
/// key (parked by the queue's scans, or held by NoQueueAioPool). Then the test aborts 4
/// of each host's waiting tasks, in an order that mixes the hosts, opens the gate, and
/// checks that each host's first two tasks complete and the aborted ones say `Aborted`.
async fn parked_round(pool: &Pool, r: u64, hosts: u64, seen: &Seen) {
    let name = pool.name();
    let gate = Gate::new();
    let mut handles = Vec::new();
    for j in 0..6 {
        for h in 0..hosts {
            let host = format!("host-{r}-{h}.example.com");
            let opts = SubmitOptions::new()
                .key(host.clone())
                .priority((h % 3) as i32);
            let handle = if j == 0 {
                let (seen, gate) = (seen.clone(), gate.clone());
                pool.submit_with(opts, move || {
                    let run = seen.enter(&host, 1);
                    let wait = gate.wait();
                    async move {
                        wait.await;
                        drop(run);
                        1u64
                    }
                })
                .await
            } else {
                pool.submit_with(opts, seen.task(&host, 1, 0)).await
            };
            handles.push((h, j, handle));
        }
    }
    // Let the slots' scans look at the queue (and park what they pass over).
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    let s = pool.stats();
    assert_eq!(
        (s.running, s.queued),
        (hosts as usize, 5 * hosts as usize),
        "{name}: round {r}: each host's first task should run and its others wait: {s}"
    );
    let mut rng = support::Rng::new(r + 11);
    let mut order: Vec<usize> = (0..handles.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for &i in &order {
        if handles[i].1 >= 2 {
            handles[i].2.abort();
        }
    }
    gate.open();
    for (h, j, handle) in handles {
        let res = within("a host's task", handle).await;
        match (j, &res) {
            (0 | 1, Ok(1)) => {}
            (2.., Err(e)) if e.cancel_reason() == Some(CancelReason::Aborted) => {}
            _ => panic!(
                "{name}: round {r}: host {h}'s task {j} resolved with {:?}",
                res.map_err(|e| e.to_string())
            ),
        }
    }
    pool.wait_within().await;
}

/// Pinned: 20 rounds in which 100 new hosts each have 5 tasks waiting behind their
/// first (`max_per_key(1)`, 100 slots; parked by the queue's scans, or held by
/// NoQueueAioPool), and 4 of each host's 5 are aborted while they wait, in mixed order. Every handle says what
/// happened to its task (each host's first two complete; the aborted ones `Aborted`),
/// no host runs two tasks at once, `stats()` agrees, and the heap held by the idle pool
/// stays within 16 KiB across the rounds (the parked jobs' index by key, its `heads` and
/// `dirty` lists, the memo's keys and the freed keys' list are given back), in the three
/// pools.
#[tokio::test(start_paused = true)]
async fn parked_tasks_of_many_hosts_aborted_leave_no_memory_per_host() {
    let _serial = support::serial();
    let hosts = 100;
    for pool in pools(hosts as usize, 5 * hosts as usize, FlowLimits::keys(1)) {
        let name = pool.name();
        let seen = Seen::default();
        let mut marks = Vec::new();
        let rounds = 20;
        for r in 0..rounds {
            parked_round(&pool, r, hosts, &seen).await;
            if r >= 2 {
                marks.push(counting_alloc::live_bytes());
            }
        }
        let s = pool.stats();
        assert_eq!(
            (s.queued, s.running, s.completed, s.cancelled),
            (0, 0, rounds * 2 * hosts, rounds * 4 * hosts),
            "{name}: stats() disagree with the handles ({} tasks a round): {s}",
            6 * hosts
        );
        assert_eq!(
            seen.most_of_a_key(),
            1,
            "{name}: a host ran two tasks at once"
        );
        assert_bounded(name, &marks, 16 * 1024);
    }
}

/// The user's crawl on a multi-thread runtime (`#[tokio::main]`'s, 2 workers, real time):
/// 20,000 URLs, each its own key, through the three pools (`max_per_key(1)`, 16 slots),
/// the submitter yielding after every 4 submits so that slots are free. They expect the
/// heap blocks held once the pool is idle not to grow with the URLs seen (README, as
/// above). Counted in live blocks of the whole process (each key kept holds its name's
/// block), so the test takes `support::serial()` and settles the count first.
///
/// What happened (before the fix): "no_queue: the heap held 20000 blocks more after 20,000
/// more URLs (each its own key) than after 2,000: it grows with the keys seen" (a block a
/// URL: the name each key of the memo's kept alive; CommonAioPool and SmartAioPool held
/// their level here).
#[test]
fn a_key_per_url_on_a_multi_thread_runtime_keeps_no_blocks_per_url_seen() {
    let _serial = support::serial();
    let rt = support::multi_thread_of(2);
    let pools = rt.block_on(async { pools(16, 64, FlowLimits::keys(1)) });
    for pool in pools {
        let name = pool.name();
        let crawl = |round: u64, n: u64| {
            rt.block_on(async {
                for i in 0..n {
                    let h = pool
                        .submit_with(SubmitOptions::new().key(url(round, i)), || async {
                            tokio::task::yield_now().await;
                        })
                        .await;
                    h.detach();
                    if i % 4 == 3 {
                        tokio::task::yield_now().await;
                    }
                }
                pool.wait_within().await;
            });
            counting_alloc::settled_blocks()
        };
        crawl(0, 2_000);
        let before = crawl(1, 2_000);
        let after = crawl(2, 20_000);
        assert!(
            after - before < 200,
            "{name}: the heap held {} blocks more after 20,000 more URLs (each its own key) \
             than after 2,000: it grows with the keys seen",
            after - before
        );
    }
}
