//! Finding 158 (RELIABILITY.md), written by the review of its fix: other ways of awaiting
//! a stranded pool's task: a task cut off twice, awaited from a job of another pool, and
//! `blocking_wait` from a `spawn_blocking` thread.
//!
//!   cargo nextest run --test stranded_reruns_paths

mod support;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nb_aiopool::{CommonAioPool, SmartAioPool, TaskHandle};
use support::{current_thread, multi_thread_of};

fn rt_id() -> u64 {
    format!("{}", tokio::runtime::Handle::current().id())
        .parse()
        .unwrap()
}

/// A pool and a task that pends on every runtime whose id is in `hang_on`, else returns 7.
fn setup(hang_on: Arc<Vec<AtomicU64>>) -> (SmartAioPool, TaskHandle<u32>, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let a = current_thread();
    let r = Arc::clone(&runs);
    let (pool, h) = a.block_on(async move {
        hang_on[0].store(rt_id(), Ordering::SeqCst);
        let pool = SmartAioPool::builder()
            .max_concurrency(1)
            .auto_shutdown(false)
            .process_wide(false)
            .build();
        let r2 = Arc::clone(&r);
        let h = pool
            .submit(move || {
                let hang_on = Arc::clone(&hang_on);
                let r = Arc::clone(&r2);
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                    let id = rt_id();
                    if hang_on.iter().any(|x| x.load(Ordering::SeqCst) == id) {
                        std::future::pending::<()>().await;
                    }
                    7u32
                }
            })
            .await
            .unwrap();
        support::reach(&r, 1, Duration::from_secs(5)).await;
        (pool, h)
    });
    drop(a);
    (pool, h, runs)
}

/// Stranded twice: the re-run on b is cut off by b's end too; c then runs it.
#[test]
fn stranded_twice() {
    let hang_on = Arc::new(vec![AtomicU64::new(0), AtomicU64::new(0)]);
    let (pool, mut h, runs) = setup(Arc::clone(&hang_on));
    let b = current_thread();
    let hb = Arc::clone(&hang_on);
    b.block_on(async {
        hb[1].store(rt_id(), Ordering::SeqCst);
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut h)
            .await
            .is_err());
    });
    assert_eq!(runs.load(Ordering::SeqCst), 2, "re-run started on b");
    drop(b);
    let got =
        current_thread().block_on(async { tokio::time::timeout(Duration::from_secs(10), h).await });
    assert!(matches!(got, Ok(Ok(7))), "{got:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    drop(pool);
}

/// From a job of another pool running on a multi-thread runtime.
#[test]
fn awaited_from_a_job_of_another_pool() {
    let hang_on = Arc::new(vec![AtomicU64::new(0)]);
    let (pool, h, _runs) = setup(hang_on);
    let c = multi_thread_of(2);
    let got = c.block_on(async {
        let other = CommonAioPool::new(2, 2);
        let inner = other.submit(h).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), inner).await
    });
    assert!(matches!(got, Ok(Ok(Ok(7)))), "{got:?}");
    drop(pool);
}

/// `blocking_wait` from a `spawn_blocking` thread of a runtime.
#[test]
fn blocking_wait_from_spawn_blocking() {
    let hang_on = Arc::new(vec![AtomicU64::new(0)]);
    let (pool, h, _runs) = setup(hang_on);
    let c = multi_thread_of(2);
    let got = c.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(10),
            tokio::task::spawn_blocking(move || h.blocking_wait()),
        )
        .await
    });
    assert!(matches!(got, Ok(Ok(Ok(7)))), "{got:?}");
    drop(pool);
}
