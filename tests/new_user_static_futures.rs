//! A new user's walkthrough (2026-12-05, on f6d5747): `SmartAioPool::shutdown` and
//! `shutdown_timeout` returned futures that borrow the pool (`+ '_`), while the other two
//! pools' (and every pool's `wait` and `cancel_all`) are `'static`: the README's "one
//! surface" code `tokio::spawn(pool.shutdown())` compiled for a CommonAioPool and not for
//! a SmartAioPool ("`pool` does not live long enough"). On f6d5747 this file does not
//! compile (E0597); it is kept apart from `tests/new_user_findings.rs` so that that file's
//! tests still run there.

use std::time::Duration;

use nb_aiopool::{CommonAioPool, SmartAioPool};

fn assert_static<F: std::future::Future + Send + 'static>(f: F) -> F {
    f
}

#[tokio::test(start_paused = true)]
async fn smart_shutdown_futures_can_be_spawned_as_the_other_pools_can() {
    let common = CommonAioPool::builder().process_wide(false).build();
    tokio::spawn(common.shutdown()).await.unwrap();

    let smart = SmartAioPool::builder()
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    smart.submit(|| async {}).await.unwrap().detach();
    // Spawned, and the handle dropped before the shutdown has finished.
    let wait = tokio::spawn(assert_static(smart.shutdown()));
    assert!(smart.is_closed(), "closed at the call");
    drop(smart);
    wait.await.unwrap();

    let smart = SmartAioPool::builder()
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    smart
        .submit(|| tokio::time::sleep(Duration::from_secs(60)))
        .await
        .unwrap()
        .detach();
    let report = tokio::spawn(assert_static(
        smart.shutdown_timeout(Duration::from_secs(1)),
    ));
    drop(smart);
    assert_eq!(report.await.unwrap().abandoned(), 1);
}
