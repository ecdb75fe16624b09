//! A SmartAioPool whose handles are all gone is freed once it has nothing left to do, so
//! pools made per request or per test do not pile up in the process-wide list (with their
//! engines, idle workers and the runtimes they served). Before, every SmartAioPool stayed
//! listed until shut down: 4 file descriptors and about 18 KiB per pool made and dropped on
//! a runtime of its own, for the life of the process.
//!
//! The tests watch a pool's engine through its `on_panic` callback, which the engine owns:
//! the callback's captures are dropped when the engine is freed. They share process-wide
//! state (the list; the process's file descriptors), so they run one at a time.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt};
use nb_aiopool::{SmartAioPool, SmartAioPoolBuilder};
use support::{multi_thread_of, serial, within, Gate};

/// The pool `builder` builds, whose engine holds a clone of `alive`.
fn watched(alive: &Arc<()>, builder: SmartAioPoolBuilder) -> SmartAioPool {
    let held = Arc::clone(alive);
    builder
        .on_panic(move |_, _| {
            let _ = &held;
        })
        .build()
}

/// A watched pool with two idle workers kept (they hold its engine until told to exit).
fn watched_pool(alive: &Arc<()>) -> SmartAioPool {
    let builder = SmartAioPool::builder()
        .max_concurrency(4)
        .min_workers(2)
        .process_wide(false)
        .auto_shutdown(false);
    watched(alive, builder)
}

/// Waits (bounded) until the engine that held a clone of `alive` is freed.
async fn freed(alive: &Arc<()>) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while Arc::strong_count(alive) > 1 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Arc::strong_count(alive) == 1
}

#[test]
fn an_idle_pool_is_freed_when_its_last_handle_goes() {
    let _serial = serial();
    let alive = Arc::new(());
    multi_thread_of(2).block_on(async {
        let pool = watched_pool(&alive);
        assert_eq!(pool.run(|| async { 7 }).await.unwrap(), 7);
        let other = pool.clone();
        drop(pool);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            Arc::strong_count(&alive),
            2,
            "freed while a handle remained"
        );
        assert_eq!(other.run(|| async { 8 }).await.unwrap(), 8);
        drop(other);
        assert!(freed(&alive).await, "an idle pool without handles was kept");
    });
}

/// Six tasks that wait for `gate`, submitted to `pool`; their handles.
async fn gated_tasks(pool: &SmartAioPool, gate: &Gate) -> Vec<nb_aiopool::TaskHandle<u32>> {
    let mut handles = Vec::new();
    for i in 0..6u32 {
        let gate = gate.clone();
        let handle = pool
            .submit(move || {
                let gate = gate.clone();
                async move {
                    gate.wait().await;
                    i
                }
            })
            .await
            .unwrap();
        handles.push(handle);
    }
    handles
}

#[test]
fn a_pool_dropped_with_unfinished_tasks_finishes_them_and_is_freed_afterwards() {
    let _serial = serial();
    let alive = Arc::new(());
    multi_thread_of(2).block_on(async {
        let pool = watched_pool(&alive);
        let gate = Gate::default();
        let handles = gated_tasks(&pool, &gate).await;
        drop(pool);
        // Another pool comes and goes meanwhile: the first stays, its tasks unfinished.
        drop(SmartAioPool::builder().process_wide(false).build());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(Arc::strong_count(&alive), 2, "freed with tasks unfinished");
        gate.open();
        for (i, handle) in handles.into_iter().enumerate() {
            assert_eq!(within("a task", handle).await.unwrap(), i as u32);
        }
        // Nothing else happens in the process: the pool goes once its tasks have ended.
        assert!(
            freed(&alive).await,
            "a dropped pool was kept after its tasks ended"
        );
    });
}

/// The task that forgets a pool dropped while busy runs on a runtime the pool knows; when
/// that runtime ends first, the next `build` forgets it.
#[test]
fn a_pool_dropped_busy_whose_runtime_ended_is_freed_by_a_later_build() {
    let _serial = serial();
    let alive = Arc::new(());
    let gate = Gate::default();
    let handles = support::current_thread().block_on(async {
        let pool = watched_pool(&alive);
        let handles = gated_tasks(&pool, &gate).await;
        drop(pool);
        handles
    });
    // The runtime has ended: its tasks are queued again, to run where they are awaited.
    assert_eq!(Arc::strong_count(&alive), 2, "freed with tasks unfinished");
    multi_thread_of(2).block_on(async {
        gate.open();
        for (i, handle) in handles.into_iter().enumerate() {
            assert_eq!(within("a re-run task", handle).await.unwrap(), i as u32);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let next = SmartAioPool::builder().process_wide(false).build();
        assert!(
            freed(&alive).await,
            "a dropped pool was kept after its tasks ended"
        );
        drop(next);
    });
}

#[test]
fn streams_and_groups_keep_their_pool_after_its_handles_go() {
    let _serial = serial();
    let alive = Arc::new(());
    multi_thread_of(2).block_on(async {
        let pool = watched_pool(&alive);
        let results = pool.map_ordered(stream::iter(0..20u32), |i| move || async move { i * 2 });
        let unordered = pool.map_unordered(stream::iter(0..20u32), |i| move || async move { i });
        let mut group = pool.group();
        drop(pool);
        // A pool build between: it must not forget the pool the stream and group feed.
        drop(SmartAioPool::builder().process_wide(false).build());
        let results: Vec<u32> = within("the stream", results.map(Result::unwrap).collect()).await;
        assert_eq!(results, (0..20).map(|i| i * 2).collect::<Vec<_>>());
        let mut unordered: Vec<u32> =
            within("the other stream", unordered.map(Result::unwrap).collect()).await;
        unordered.sort_unstable();
        assert_eq!(unordered, (0..20).collect::<Vec<_>>());
        group
            .submit(|| async { 5 })
            .await
            .expect("the group's pool was closed");
        assert_eq!(
            within("the group", group.join_next())
                .await
                .unwrap()
                .unwrap(),
            5
        );
        assert_eq!(Arc::strong_count(&alive), 2, "freed while its group lived");
        drop(group);
        assert!(freed(&alive).await, "kept after its stream and group went");
    });
}

#[test]
fn the_last_handle_may_go_inside_one_of_the_pools_own_tasks() {
    let _serial = serial();
    let alive = Arc::new(());
    multi_thread_of(2).block_on(async {
        let pool = watched_pool(&alive);
        let inner = Arc::new(std::sync::Mutex::new(Some(pool.clone())));
        let handle = pool
            .submit(move || {
                let inner = inner.clone();
                async move {
                    // The task drops the pool's last handle while it runs.
                    tokio::task::yield_now().await;
                    drop(inner.lock().unwrap().take());
                    3
                }
            })
            .await
            .unwrap();
        drop(pool);
        assert_eq!(within("the task", handle).await.unwrap(), 3);
        assert!(
            freed(&alive).await,
            "kept after its last handle went in a task"
        );
    });
}

/// What a user saw: a test suite (or a server) making a SmartAioPool per runtime ran out
/// of file descriptors, each dropped pool holding its runtime's driver.
#[cfg(target_os = "linux")]
#[test]
fn pools_made_per_runtime_do_not_hold_file_descriptors() {
    let _serial = serial();
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let round = || {
        multi_thread_of(1).block_on(async {
            let pool = SmartAioPool::builder().max_concurrency(4).build();
            for i in 0..4u32 {
                assert_eq!(pool.run(move || async move { i }).await.unwrap(), i);
            }
        });
    };
    round();
    let before = fds();
    for _ in 0..100 {
        round();
    }
    let after = fds();
    // Before the fix: 4 more per pool (400 here).
    assert!(
        after <= before + 8,
        "{} file descriptors more after 100 pools",
        after - before
    );
}

/// The last two handles of an idle pool dropped at once on two threads: exactly one of
/// the drops is the last (a review found 757 of 20,000 such pools kept for good when the
/// drops counted the pool's references instead of its handles; 2,000 rounds here).
#[test]
fn last_handles_dropped_at_once_on_two_threads() {
    let _serial = serial();
    let rt = multi_thread_of(2);
    let _enter = rt.enter();
    for round in 0..2000 {
        let alive = Arc::new(());
        let a = watched_pool(&alive);
        let b = a.clone();
        // Both threads spin until both are there, then drop at once.
        let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let go = |ready: &std::sync::atomic::AtomicUsize| {
            ready.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            while ready.load(std::sync::atomic::Ordering::SeqCst) < 2 {
                std::hint::spin_loop();
            }
        };
        let other = {
            let ready = ready.clone();
            std::thread::spawn(move || {
                go(&ready);
                drop(b);
            })
        };
        go(&ready);
        drop(a);
        other.join().unwrap();
        assert!(
            rt.block_on(freed(&alive)),
            "round {round}: the pool was kept"
        );
    }
}

/// `smart_run` holds its pools while it waits for them; a task that drops the pool's last
/// handle then is counted all the same (the pool was kept for good when drops counted
/// references).
#[test]
fn the_last_handle_dropped_while_smart_run_waits() {
    let _serial = serial();
    let alive = Arc::new(());
    let watch = alive.clone();
    nb_aiopool::smart_run(async move {
        // `auto_shutdown` (the default): `smart_run` waits for it.
        let builder = SmartAioPool::builder()
            .max_concurrency(4)
            .process_wide(false);
        let pool = watched(&watch, builder);
        let last = Arc::new(std::sync::Mutex::new(Some(pool.clone())));
        pool.submit(move || {
            let last = last.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                drop(last.lock().unwrap().take());
            }
        })
        .await
        .unwrap()
        .detach();
        drop(pool);
    });
    multi_thread_of(1).block_on(async {
        let next = SmartAioPool::builder().process_wide(false).build();
        assert!(
            freed(&alive).await,
            "kept after smart_run and a later build"
        );
        drop(next);
    });
}
