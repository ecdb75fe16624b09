//! `blocking_submit_with`: a sync producer (a plain thread) submits with per-task options,
//! blocking while the pool is full, in line with its priority, for at most its timeout.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nb_aiopool::{
    CommonAioPool, NoQueueAioPool, SmartAioPool, SubmitErrorKind, SubmitOptions, TaskHandle,
};
use support::{flow_pools, multi_thread_of, on_thread_within, FlowLimits, Gate, Gauge, Pool};

impl Pool {
    /// The pool's `blocking_submit_with` of `make()` (for SmartAioPool, `make` as the
    /// recipe); the refusal's kind if refused.
    fn blocking_submit_with<T, F, M>(
        &self,
        make: M,
        opts: SubmitOptions,
    ) -> Result<TaskHandle<T>, SubmitErrorKind>
    where
        T: Send + 'static,
        F: std::future::Future<Output = T> + Send + 'static,
        M: Fn() -> F + Send + Sync + 'static,
    {
        match self {
            Pool::Common(p) => p.blocking_submit_with(make(), opts).map_err(|e| e.kind()),
            Pool::NoQueue(p) => p.blocking_submit_with(make(), opts).map_err(|e| e.kind()),
            Pool::Smart(p) => p.blocking_submit_with(make, opts).map_err(|e| e.kind()),
        }
    }
}

/// A sync producer keys its tasks by host (`max_per_key(1)`, 4 hosts) and submits 40 of
/// them from a plain thread into pools of 4 slots and 4 queue places, so that it blocks
/// for room again and again. The user expects every task to run, never two of one host
/// at once (`max_per_key`'s docs), and the producer to return once all are queued.
#[test]
fn a_sync_producer_keys_its_tasks_and_blocks_for_room() {
    let rt = multi_thread_of(2);
    let pools = rt.block_on(async { flow_pools(4, 4, 8, FlowLimits::keys(1)) });
    for pool in pools {
        let name = pool.name();
        // Makes the pool's home `rt`, where a plain thread's tasks run.
        rt.block_on(pool.wait_within());
        let gauges: Arc<Vec<Gauge>> = Arc::new((0..4).map(|_| Gauge::default()).collect());
        let handles = {
            let (pool, gauges) = (pool.clone(), gauges.clone());
            on_thread_within(&format!("{name}: the producer"), 30, move || {
                (0..40)
                    .map(|i| {
                        let gauges = gauges.clone();
                        let opts = SubmitOptions::new().key(format!("host-{}", i % 4));
                        let make = move || {
                            let gauges = gauges.clone();
                            async move {
                                let _in = gauges[i % 4].enter();
                                tokio::time::sleep(Duration::from_millis(2)).await;
                                i
                            }
                        };
                        pool.blocking_submit_with(make, opts)
                            .unwrap_or_else(|kind| panic!("{name}: submit {i} refused: {kind:?}"))
                    })
                    .collect::<Vec<_>>()
            })
        };
        let sum: usize = rt.block_on(async {
            let mut sum = 0;
            for h in handles {
                sum += support::within("a task", h).await.unwrap();
            }
            sum
        });
        assert_eq!(
            sum,
            (0..40).sum::<usize>(),
            "{name}: a task's result is missing"
        );
        for (host, g) in gauges.iter().enumerate() {
            assert_eq!(
                g.started(),
                10,
                "{name}: host-{host}'s tasks did not all run"
            );
            assert_eq!(
                g.max(),
                1,
                "{name}: host-{host} ran {} tasks at once",
                g.max()
            );
        }
        assert_eq!(pool.stats().completed, 40, "{name}: {:?}", pool.stats());
    }
}

/// Two plain threads block for room in a full pool (one slot, no queue), one with
/// priority 0 and, after it, one with priority 5. The user expects the room freed next to
/// go to the higher priority (`SubmitOptions::priority`: "a higher one gets the next room
/// first"), as it does for `submit_with(..).await`.
#[test]
fn blocked_submitters_get_room_by_priority() {
    let rt = multi_thread_of(2);
    let pools = rt.block_on(async {
        vec![
            Pool::Common(CommonAioPool::new(1, 0)),
            Pool::NoQueue(NoQueueAioPool::new(1)),
            Pool::Smart(
                SmartAioPool::builder()
                    .max_concurrency(1)
                    .max_queue_size(0)
                    .auto_shutdown(false)
                    .build(),
            ),
        ]
    });
    for pool in pools {
        let name = pool.name();
        let gate = Gate::new();
        let started = Arc::new(Mutex::new(Vec::new()));
        let holder = {
            let gate = gate.clone();
            rt.block_on(pool.try_submit_with(SubmitOptions::new(), move || gate.wait()))
                .unwrap()
        };
        let submitter = |label: &'static str, priority: i32| {
            let (pool, started) = (pool.clone(), started.clone());
            std::thread::spawn(move || {
                let opts = SubmitOptions::new().priority(priority);
                let make = move || {
                    let started = started.clone();
                    async move { started.lock().unwrap().push(label) }
                };
                pool.blocking_submit_with(make, opts)
                    .unwrap_or_else(|kind| panic!("{label} refused: {kind:?}"))
            })
        };
        let low = submitter("low", 0);
        // Both wait before the room frees (the order they came in does not matter to
        // the answer: the higher priority goes first either way).
        std::thread::sleep(Duration::from_millis(100));
        let high = submitter("high", 5);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            started.lock().unwrap().is_empty(),
            "{name}: a blocked submit ran while the pool was full"
        );
        gate.open();
        let (low, high) = (low.join().unwrap(), high.join().unwrap());
        rt.block_on(async {
            for h in [holder, low, high] {
                support::within("a task", h).await.unwrap();
            }
        });
        assert_eq!(
            *started.lock().unwrap(),
            ["high", "low"],
            "{name}: the room went to the lower priority first"
        );
    }
}

/// A plain thread's `blocking_submit_with` with a 50 ms timeout into a full pool. The user
/// expects (`SubmitOptions::timeout`, `blocking_submit_with`'s docs) `TimedOut` after
/// about that long, the task handed back (it can still be run), and the pool's room
/// untouched: once the pool frees up, a submit is admitted at once.
#[test]
fn a_blocked_submit_times_out_and_hands_its_task_back() {
    let rt = multi_thread_of(1);
    let pool = rt.block_on(async { CommonAioPool::new(1, 0) });
    let gate = Gate::new();
    let holder = rt.block_on(pool.submit(gate.wait())).unwrap();
    let (kind, elapsed, fut) = {
        let pool = pool.clone();
        on_thread_within("the timed submit", 10, move || {
            let t0 = Instant::now();
            let opts = SubmitOptions::new().timeout(Duration::from_millis(50));
            let err = pool
                .blocking_submit_with(async { 7 }, opts)
                .expect_err("a full pool admitted a submit");
            (err.kind(), t0.elapsed(), err.into_inner())
        })
    };
    assert_eq!(kind, SubmitErrorKind::TimedOut);
    assert!(
        elapsed >= Duration::from_millis(50),
        "gave up after {elapsed:?}, before its 50 ms timeout"
    );
    assert_eq!(
        rt.block_on(fut),
        7,
        "the task handed back is not the one submitted"
    );
    gate.open();
    rt.block_on(support::within("the holder", holder)).unwrap();
    rt.block_on(pool.wait());
    let s = pool.stats();
    assert_eq!(
        (s.submitted, s.completed, s.queued, s.running),
        (1, 1, 0, 0),
        "{s:?}"
    );
    assert!(
        pool.try_submit(async {}).is_ok(),
        "the timed-out submit kept a place: {:?}",
        pool.stats()
    );
}

/// A weight above the pool's `weight_capacity` can never fit: the user expects
/// `TooHeavy` at once, not a wait (as `submit_with`), even while the pool is full.
#[test]
fn a_weight_above_the_capacity_is_refused_at_once() {
    let rt = multi_thread_of(1);
    let pool = rt.block_on(async {
        CommonAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(0)
            .weight_capacity(2)
            .build()
    });
    let gate = Gate::new();
    let holder = rt.block_on(pool.submit(gate.wait())).unwrap();
    let kind = {
        let pool = pool.clone();
        on_thread_within("a too heavy submit", 10, move || {
            pool.blocking_submit_with(async {}, SubmitOptions::new().weight(3))
                .expect_err("a task heavier than the capacity was admitted")
                .kind()
        })
    };
    assert_eq!(kind, SubmitErrorKind::TooHeavy);
    gate.open();
    rt.block_on(support::within("the holder", holder)).unwrap();
}

/// Called from async code, where blocking could deadlock the tasks it waits for, it
/// panics with a message that names the async call to use instead, as `blocking_submit`
/// does.
#[test]
fn from_async_code_it_panics_and_names_submit_with() {
    let rt = support::current_thread();
    let pool = CommonAioPool::new(1, 1);
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let _ = pool.blocking_submit_with(async {}, SubmitOptions::new());
        })
    }))
    .expect_err("blocking_submit_with from async code did not panic");
    let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        text.contains("`blocking_submit_with`") && text.contains("`submit_with(..).await`"),
        "the panic does not say what to call instead: {text:?}"
    );
}
