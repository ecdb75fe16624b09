//! Futures that submit jobs holding a `dyn Future + Send` can be spawned (a regression test:
//! the generic core once made rustc fail with "higher-ranked lifetime error" there).
#![allow(clippy::redundant_async_block)] // the wrapping async blocks are the case under test

use nb_aiopool::CommonAioPool;
use std::future::Future;
use std::pin::Pin;

type BoxFut = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

async fn dispatch(
    pool: &CommonAioPool,
    handler: std::sync::Arc<dyn Fn(u32) -> BoxFut + Send + Sync>,
) {
    for i in 0..3 {
        let fut = handler(i);
        pool.submit(async move { fut.await })
            .await
            .unwrap()
            .detach();
    }
}

#[test]
fn spawnable() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pool = CommonAioPool::new(2, 2);
    let h: std::sync::Arc<dyn Fn(u32) -> BoxFut + Send + Sync> =
        std::sync::Arc::new(|_| Box::pin(async { Ok(()) }));
    rt.block_on(async move {
        tokio::spawn(async move { dispatch(&pool, h).await })
            .await
            .unwrap();
    });
}

type H = std::sync::Arc<dyn Fn(u32) -> BoxFut + Send + Sync>;

async fn d_run(pool: &CommonAioPool, handler: H) {
    let fut = handler(0);
    pool.run(async move { fut.await }).await.unwrap().unwrap();
}
async fn d_with(pool: &CommonAioPool, handler: H) {
    let fut = handler(1);
    pool.submit_with(async move { fut.await }, nb_aiopool::SubmitOptions::new())
        .await
        .unwrap()
        .detach();
}
async fn d_smart(smart: &nb_aiopool::SmartAioPool, handler: H) {
    smart.submit(move || handler(2)).await.unwrap().detach();
}
async fn d_batch(pool: &CommonAioPool, handler: H) {
    let futs: Vec<_> = (3..5)
        .map(|i| {
            let f = handler(i);
            async move { f.await }
        })
        .collect();
    pool.batch_run(futs).await.unwrap();
}
async fn d_group(pool: &CommonAioPool, handler: H) {
    let mut g = pool.group();
    let f = handler(5);
    g.submit(async move { f.await }).await.unwrap();
    g.join_all().await;
}

fn assert_send<T: Send>(_: T) {}

#[test]
fn spawnable_everything() {
    let pool = CommonAioPool::new(2, 2);
    let smart = nb_aiopool::SmartAioPool::builder()
        .auto_shutdown(false)
        .build();
    let h: H = std::sync::Arc::new(|_| Box::pin(async { Ok(()) }));
    let (p, s2) = (pool.clone(), smart.clone());
    let h2 = h.clone();
    assert_send(async move { d_run(&p, h2).await });
    let (p, h2) = (pool.clone(), h.clone());
    assert_send(async move { d_with(&p, h2).await });
    let h2 = h.clone();
    assert_send(async move { d_smart(&s2, h2).await });
    let (p, h2) = (pool.clone(), h.clone());
    assert_send(async move { d_batch(&p, h2).await });
    let (p, h2) = (pool.clone(), h.clone());
    assert_send(async move { d_group(&p, h2).await });
}
