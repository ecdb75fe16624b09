//! One surface for the three pools (issue 10, item 1, 4-7): builders and names, `wait` and
//! `cancel_all` everywhere, opting out of the process-wide functions, `Display` of the
//! reports, transparent `RunError`, `smart_run` misuse, and SmartAioPool without re-runs.

use std::error::Error as _;
use std::future::Future;
use std::time::Duration;

use nb_aiopool::{
    shutdown_all_common_aiopools, shutdown_all_smart_aiopools, wait_all_no_queue_aiopools,
    CancelReason, CommonAioPool, NoQueueAioPool, RunError, SmartAioPool,
};

async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("hang: {what}"))
}

#[test]
fn builders_set_sizes_and_names() {
    let common = CommonAioPool::builder()
        .max_concurrency(3)
        .max_queue_size(7)
        .name("fetch")
        .build();
    assert_eq!(
        (
            common.max_concurrency(),
            common.max_queue_size(),
            common.name()
        ),
        (3, 7, "fetch")
    );
    assert!(format!("{common:?}").contains("\"fetch\""));
    let no_queue = NoQueueAioPool::builder().max_concurrency(2).build();
    assert_eq!(
        (no_queue.max_concurrency(), no_queue.name()),
        (2, "NoQueueAioPool")
    );
    let smart = SmartAioPool::builder()
        .max_concurrency(4)
        .name("mailer")
        .auto_shutdown(false)
        .build();
    assert_eq!((smart.max_concurrency(), smart.name()), (4, "mailer"));
    assert!(format!("{smart:?}").contains("\"mailer\""));
    assert_eq!(CommonAioPool::new(5, 6).name(), "CommonAioPool");
}

#[test]
#[should_panic(expected = "nb_aiopool: CommonAioPool: max_concurrency must be at least 1, got 0")]
fn builder_rejects_zero_concurrency() {
    let _ = CommonAioPool::builder().max_concurrency(0).build();
}

#[test]
#[should_panic(expected = "nb_aiopool: NoQueueAioPool: max_concurrency must be at least 1, got 0")]
fn no_queue_builder_rejects_zero_concurrency() {
    let _ = NoQueueAioPool::builder().max_concurrency(0).build();
}

/// `wait` (everything submitted so far; the pool stays open) and `cancel_all` on every pool.
#[tokio::test(start_paused = true)]
async fn wait_and_cancel_all_on_every_pool() {
    let common = CommonAioPool::new(1, 10);
    let a = common
        .submit(tokio::time::sleep(Duration::from_millis(5)))
        .await
        .unwrap();
    within("common wait", common.wait()).await;
    assert!(a.is_finished() && !common.is_closed());
    let running = common.submit(std::future::pending::<()>()).await.unwrap();
    let queued = common.submit(async {}).await.unwrap();
    within("common cancel_all", common.cancel_all()).await;
    for h in [running, queued] {
        let err = h.await.unwrap_err();
        assert_eq!(err.cancel_reason(), Some(CancelReason::CancelAll));
    }
    assert_eq!(common.run(async { 1 }).await.unwrap(), 1, "still open");

    let no_queue = NoQueueAioPool::new(2);
    let h = no_queue.submit(std::future::pending::<()>()).await.unwrap();
    within("no-queue cancel_all", no_queue.cancel_all()).await;
    assert!(h.await.unwrap_err().is_cancelled());
    no_queue
        .submit(std::future::pending::<()>())
        .await
        .unwrap()
        .detach();
    let report = within(
        "no-queue shutdown_timeout",
        no_queue.shutdown_timeout(Duration::from_secs(1)),
    )
    .await;
    assert_eq!((report.finished(), report.abandoned()), (0, 1));
    assert_eq!(report.to_string(), "0 finished, 1 abandoned");

    let smart = SmartAioPool::builder()
        .max_concurrency(2)
        .auto_shutdown(false)
        .build();
    let h = smart.submit(|| async { 3 }).await.unwrap();
    within("smart wait", smart.wait()).await;
    assert!(h.is_finished() && !smart.is_closed());
    smart.shutdown().await;
    assert!(smart.is_closed());
}

#[tokio::test]
async fn stats_display_in_one_line() {
    let pool = CommonAioPool::new(2, 2);
    pool.run(async {}).await.unwrap();
    assert_eq!(
        pool.stats().to_string(),
        "queued 0, running 0, submitted 1, completed 1, panicked 0, cancelled 0"
    );
}

/// `RunError` is transparent: its message once, and no source repeating it.
#[tokio::test]
async fn run_error_is_transparent() {
    let pool = CommonAioPool::new(1, 1);
    let err: RunError<_> = pool
        .run(async { panic!("nope (intentional test panic)") })
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the task panicked: nope (intentional test panic)"
    );
    assert!(err.source().is_none());
    pool.shutdown().await;
    let err = pool.run(async {}).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "closed: the pool is shut down (or, for a task group with cancel-on-error, one of its tasks failed) and accepts no tasks"
    );
    assert!(err.source().is_none());
}

#[tokio::test]
#[should_panic(expected = "nb_aiopool: `smart_run` was called from an async context")]
async fn smart_run_inside_a_runtime_fails_with_the_crates_message() {
    nb_aiopool::smart_run(async {});
}

static LIBRARY_POOL: std::sync::LazyLock<CommonAioPool> = std::sync::LazyLock::new(|| {
    CommonAioPool::builder()
        .max_concurrency(2)
        .process_wide(false)
        .build()
});

/// A pool built with `process_wide(false)` (a library's own, a test's) is left alone by
/// the process-wide functions; the ones made by `new` are reached.
#[tokio::test]
async fn process_wide_functions_skip_pools_that_opt_out() {
    let mine = CommonAioPool::new(2, 2);
    LIBRARY_POOL.run(async {}).await.unwrap();
    shutdown_all_common_aiopools().await;
    assert!(mine.is_closed());
    assert!(!LIBRARY_POOL.is_closed());
    assert_eq!(LIBRARY_POOL.run(async { 5 }).await.unwrap(), 5);

    let private_no_queue = NoQueueAioPool::builder().process_wide(false).build();
    let stuck = private_no_queue
        .submit(std::future::pending::<()>())
        .await
        .unwrap();
    // Not waited for: returns although that pool has a job that never ends.
    within("wait_all_no_queue_aiopools", wait_all_no_queue_aiopools()).await;
    stuck.abort();

    let private_smart = SmartAioPool::builder()
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    shutdown_all_smart_aiopools().await;
    assert!(!private_smart.is_closed());
    private_smart.shutdown().await;
}

/// Without re-runs, a task cut mid-run by the end of its runtime is not run again: its
/// handle says `RuntimeShutdown`; a task that never started still runs (once).
#[test]
fn smart_without_reruns_runs_what_never_started_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let calls: Arc<Vec<AtomicUsize>> = Arc::new((0..2).map(|_| AtomicUsize::new(0)).collect());
    let pool = SmartAioPool::builder()
        .max_concurrency(1)
        .rerun_interrupted(false)
        .auto_shutdown(false)
        .build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handles = rt.block_on(async {
        let mut handles = Vec::new();
        for i in 0..2 {
            let calls = calls.clone();
            handles.push(
                pool.submit(move || {
                    calls[i].fetch_add(1, Ordering::SeqCst);
                    async move {
                        if i == 0 {
                            std::future::pending::<()>().await;
                        }
                        i
                    }
                })
                .await
                .unwrap(),
            );
        }
        tokio::task::yield_now().await; // the first one starts; the second waits
        handles
    });
    drop(rt);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut handles = handles.into_iter();
        let cut = handles.next().unwrap();
        let err = within("cut task", cut).await.unwrap_err();
        assert_eq!(err.cancel_reason(), Some(CancelReason::RuntimeShutdown));
        let never_started = handles.next().unwrap();
        within("wait", pool.wait()).await; // starts it on this runtime
        assert_eq!(never_started.await.unwrap(), 1);
        assert_eq!(calls[0].load(Ordering::SeqCst), 1, "the cut task ran again");
        assert_eq!(
            calls[1].load(Ordering::SeqCst),
            1,
            "the queued task did not run once"
        );
        pool.shutdown().await;
    });
}
