//! Aborting running tasks (finding 281, RELIABILITY.md): an abort finds the slot that runs
//! its task through the number the pool gave the task when a slot took it, instead of
//! searching every slot under the pool's lock (which made aborting many running tasks
//! quadratic: 50,000 of them took 2.3 s, the pool stalled meanwhile). What a user relies
//! on, on every path by which a slot comes to run a task: the aborted task ends (its
//! slot drops it, `wait()` returns, `stats()` counts it cancelled) and its slot runs the
//! next one. The speed itself is measured by `bench/src/bin/abort_many.rs`, not here.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{current_thread, multi_thread_of, on_thread_within, until, Gate};

/// A task that never ends by itself; counts its first polls in `started` and its drops
/// in `dropped`.
fn forever(
    started: &Arc<AtomicUsize>,
    dropped: &Arc<AtomicUsize>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let started = Arc::clone(started);
    let guard = support::Counted(Arc::clone(dropped));
    async move {
        let _guard = guard;
        started.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<()>().await
    }
}

/// Waits (bounded) until `n` tasks have started.
async fn until_started(started: &AtomicUsize, n: usize) {
    support::within("every task started", async {
        while started.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}

/// Many running tasks aborted one by one, the newest first (the order that searched the
/// most slots): each is dropped, `wait()` returns, the stats count them all, and the
/// slots take new tasks after.
#[test]
fn many_running_tasks_aborted_one_by_one_all_end() {
    const N: usize = 3_000;
    let rt = multi_thread_of(2);
    rt.block_on(async {
        let pool = support::common_local(N, N);
        let (started, dropped) = (Arc::default(), Arc::default());
        let mut handles = Vec::with_capacity(N);
        for _ in 0..N {
            handles.push(pool.submit(forever(&started, &dropped)).await.unwrap());
        }
        until_started(&started, N).await;
        for h in handles.iter().rev() {
            h.abort();
        }
        support::within("wait() after the aborts", pool.wait()).await;
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            N,
            "every aborted future dropped"
        );
        let s = pool.stats();
        assert_eq!(
            (s.running, s.cancelled, s.completed),
            (0, N as u64, 0),
            "{s:?}"
        );
        for h in handles {
            assert!(matches!(h.await, Err(e) if e.is_cancelled()));
        }
        // The slots run new tasks.
        let after = pool.run(async { 7 }).await.unwrap();
        assert_eq!(after, 7);
    });
}

/// The same through a SmartAioPool group dropped with all its tasks running.
#[test]
fn a_dropped_smart_group_of_running_tasks_ends_them_all() {
    const N: usize = 3_000;
    let rt = multi_thread_of(2);
    rt.block_on(async {
        let pool = support::smart_local(N);
        let (started, dropped) = (Arc::default(), Arc::default());
        let mut group = pool.group();
        for _ in 0..N {
            let (s, d) = (Arc::clone(&started), Arc::clone(&dropped));
            group.submit(move || forever(&s, &d)).await.unwrap();
        }
        until_started(&started, N).await;
        drop(group);
        support::within("wait() after the group's drop", pool.wait()).await;
        assert_eq!(dropped.load(Ordering::SeqCst), N, "every run dropped");
        let s = pool.stats();
        assert_eq!((s.running, s.cancelled), (0, N as u64), "{s:?}");
    });
}

/// A task submitted from runtime B while the pool's only slot ran a task on runtime A:
/// when A's task ends, A's slot hands B's task over to a new slot on B (a task runs on
/// its submitter's runtime). Aborted there, it ends: B's `wait()` returns, and the pool
/// runs the next task. (A pool that gave the task's number only to the slots that take
/// a task from the queue would miss this one: the abort would find no slot to wake.)
#[test]
fn a_running_task_handed_over_to_its_own_runtime_ends_when_aborted() {
    for smart in [false, true] {
        let common = support::common_local(1, 10);
        let smart_pool = support::smart_local(1);
        let gate = Gate::default();
        let started = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        // Runtime A, on its own thread: the slot's first task, until the gate opens.
        let a = {
            let (common, smart_pool, gate) = (common.clone(), smart_pool.clone(), gate.clone());
            std::thread::spawn(move || {
                current_thread().block_on(async move {
                    let h = if smart {
                        smart_pool
                            .submit(move || {
                                let gate = gate.clone();
                                async move { gate.wait().await }
                            })
                            .await
                            .unwrap()
                    } else {
                        common
                            .submit(async move { gate.wait().await })
                            .await
                            .unwrap()
                    };
                    h.await.unwrap();
                })
            })
        };
        until("the first task running on A", || {
            let s = if smart {
                smart_pool.stats()
            } else {
                common.stats()
            };
            s.running == 1
        });
        let (common2, smart2, started2, dropped2, gate2) = (
            common.clone(),
            smart_pool.clone(),
            Arc::clone(&started),
            Arc::clone(&dropped),
            gate.clone(),
        );
        on_thread_within("runtime B: the handed-over task aborted", 20, move || {
            current_thread().block_on(async move {
                let body = {
                    let (started, dropped) = (Arc::clone(&started2), Arc::clone(&dropped2));
                    move || forever(&started, &dropped)
                };
                let b = if smart {
                    smart2.submit(body).await.unwrap()
                } else {
                    common2.submit(async move { body().await }).await.unwrap()
                };
                // Queued behind A's task; A's slot hands it over when that ends.
                gate2.open();
                support::within("B's task running", async {
                    while started2.load(Ordering::SeqCst) == 0 {
                        tokio::task::yield_now().await;
                    }
                })
                .await;
                b.abort();
                let stats = || {
                    if smart {
                        smart2.stats()
                    } else {
                        common2.stats()
                    }
                };
                support::within("wait() after the abort", async {
                    if smart {
                        smart2.wait().await
                    } else {
                        common2.wait().await
                    }
                })
                .await;
                assert_eq!(dropped2.load(Ordering::SeqCst), 1, "its future dropped");
                let s = stats();
                assert_eq!((s.running, s.cancelled, s.completed), (0, 1, 1), "{s:?}");
                assert!(matches!(b.await, Err(e) if e.is_cancelled()));
            })
        });
        a.join().unwrap();
        assert_eq!(started.load(Ordering::SeqCst), 1, "smart: {smart}");
    }
}
