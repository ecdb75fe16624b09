//! The process-wide functions. They act on every pool in the process, so they live in
//! their own test binary, apart from tests that own pools.

mod support;

use nb_aiopool::{
    shutdown_all_common_aiopools, shutdown_all_smart_aiopools, wait_all_no_queue_aiopools,
    CommonAioPool, NoQueueAioPool, SmartAioPool,
};
use support::{within, Counter};

#[tokio::test]
async fn shutdown_all_common_aiopools_drains_every_pool() {
    let a = CommonAioPool::new(2, 10);
    let b = CommonAioPool::new(3, 10);
    let done = Counter::default();
    for pool in [&a, &b] {
        for _ in 0..5 {
            pool.submit(done.task()).await.unwrap().detach();
        }
    }
    within("shutdown all", shutdown_all_common_aiopools()).await;
    assert_eq!(done.get(), 10);
    assert!(a.is_closed() && b.is_closed());

    // Finding 185: the pools close at the call, so a future dropped unpolled (a `select!`
    // whose other branch was ready first) still shut them down, as its docs say.
    let c = CommonAioPool::new(1, 1);
    drop(shutdown_all_common_aiopools());
    assert!(c.is_closed(), "dropped unpolled, it left the pool open");
}

#[tokio::test]
async fn wait_all_no_queue_aiopools_waits_and_leaves_pools_open() {
    let a = NoQueueAioPool::new(2);
    let b = NoQueueAioPool::new(1);
    let done = Counter::default();
    for pool in [&a, &b] {
        for _ in 0..4 {
            pool.submit(done.task()).await.unwrap().detach();
        }
    }
    within("wait all", wait_all_no_queue_aiopools()).await;
    assert_eq!(done.get(), 8);
    assert_eq!(a.run(async { 1 }).await.unwrap(), 1, "the pool was closed");

    // Finding 185: the tasks waited for are fixed at the call, not at the first poll: a
    // task submitted in between (here one that never ends) is not waited for.
    let wait = wait_all_no_queue_aiopools();
    let never = a.submit(std::future::pending::<()>()).await.unwrap();
    within("wait all, fixed at the call", wait).await;
    never.abort();
}

#[tokio::test]
async fn shutdown_all_smart_aiopools_drains_every_pool() {
    let a = SmartAioPool::new(2);
    let b = SmartAioPool::builder().auto_shutdown(false).build();
    let done = Counter::default();
    for pool in [&a, &b] {
        for _ in 0..4 {
            let done = done.clone();
            pool.submit(move || done.task()).await.unwrap().detach();
        }
    }
    within("shutdown all", shutdown_all_smart_aiopools()).await;
    assert_eq!(done.get(), 8);
    assert!(a.submit(|| async {}).await.unwrap_err().is_closed());

    // Finding 185: the pools close at the call (a future dropped unpolled shut them down).
    let c = SmartAioPool::new(1);
    drop(shutdown_all_smart_aiopools());
    assert!(c.submit(|| async {}).await.unwrap_err().is_closed());
}
