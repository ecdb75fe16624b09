//! Findings of review redisfix (of cbda49b, the fixes of 53-55), and tests that pin the
//! behaviour of a worker's `shutdown()`/`shutdown_timeout()` made inside a handler.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nb_aiopool_redis::{RedisQueue, Worker};
use support::*;

/// A worker whose single task `stop` runs `body(worker)` as its handler.
async fn worker_with(
    url: &str,
    queue: &str,
    me: Arc<OnceLock<Worker>>,
    body: impl Fn(Worker) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync
        + 'static,
) -> Worker {
    let body = Arc::new(body);
    let w = {
        let me = me.clone();
        Worker::builder(url, queue)
            .concurrency(2)
            .task("stop", move |_: u64| {
                let me = me.clone();
                let body = body.clone();
                async move {
                    let w = me.get().expect("worker set").clone();
                    body(w).await;
                    Ok::<(), String>(())
                }
            })
            .build()
            .await
            .unwrap()
    };
    me.set(w.clone()).unwrap();
    w
}

/// Pinned (documented by finding 56's fix): task-locals do not cross `tokio::spawn`, so a
/// graceful `shutdown()` called in a task the handler spawns is not "inside" the handler:
/// it waits for the drain, which waits for the handler, which awaits that task. Neither
/// ends until a deadline is set from outside: then the handler is aborted and its job put
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_called_in_a_task_the_handler_awaits_waits_for_the_handler() {
    let server = RedisServer::start();
    let url = server.url();
    let q = RedisQueue::connect(&url, "spawnstop").await.unwrap();
    let me = Arc::new(OnceLock::new());
    let worker = worker_with(&url, "spawnstop", me, |w| {
        Box::pin(async move {
            tokio::spawn(async move { w.shutdown().await })
                .await
                .unwrap();
        })
    })
    .await;
    q.submit("stop", &1u64).await.unwrap();
    let run = {
        let w = worker.clone();
        tokio::spawn(async move { w.run().await })
    };
    eventually(5, "the stop job running", || worker.stats().held == 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !run.is_finished(),
        "documented: the handler and the shutdown wait for each other"
    );
    let r = within(
        10,
        "a deadline from outside",
        worker.shutdown_timeout(Duration::from_millis(100)),
    )
    .await;
    assert!(!r.drained && r.released == 1, "{r:?}");
    let report = within(5, "run", run).await.unwrap().unwrap();
    assert_eq!(report, r);
    let s = q.stats().await.unwrap();
    assert_eq!((s.waiting, s.in_flight), (1, 0), "{s:?}");
}

/// Finding 56 (the same cause, outside a handler): `shutdown()`'s docs say "Cancel safe:
/// the stop request stays in effect; only the waiting ends", and the core crate's pools
/// stop at the call; but a `shutdown()` future dropped before its first poll (a `select!`
/// branch that lost at once, a `biased` select) requested nothing: the worker kept
/// running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_future_dropped_unpolled_still_stops_the_worker() {
    let server = RedisServer::start();
    let url = server.url();
    let me = Arc::new(OnceLock::new());
    let worker = worker_with(&url, "unpolled", me, |_| Box::pin(async {})).await;
    let run = {
        let w = worker.clone();
        tokio::spawn(async move { w.run().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::select! {
        biased;
        _ = std::future::ready(()) => {}
        _ = worker.shutdown() => unreachable!(),
    }
    let report = within(10, "run to return after an unpolled shutdown()", run)
        .await
        .unwrap()
        .unwrap();
    assert!(report.drained, "{report:?}");
}

/// Pinned (passed before): a handler of worker A that awaits worker B's `shutdown()` waits
/// for B's drain (it is not one of B's handlers) and gets B's real report; A keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_awaiting_another_workers_shutdown_gets_its_real_report() {
    let server = RedisServer::start();
    let url = server.url();
    let qa = RedisQueue::connect(&url, "wa").await.unwrap();
    let qb = RedisQueue::connect(&url, "wb").await.unwrap();
    let b_slot: Arc<OnceLock<Worker>> = Arc::new(OnceLock::new());
    let seen = Arc::new(std::sync::Mutex::new(None));
    let b = worker_with(&url, "wb", Arc::new(OnceLock::new()), |_| {
        Box::pin(tokio::time::sleep(Duration::from_millis(500)))
    })
    .await;
    b_slot.set(b.clone()).unwrap();
    let a = {
        let b_slot = b_slot.clone();
        let seen = seen.clone();
        worker_with(&url, "wa", Arc::new(OnceLock::new()), move |_| {
            let b = b_slot.get().unwrap().clone();
            let seen = seen.clone();
            Box::pin(async move {
                let r = b.shutdown().await;
                *seen.lock().unwrap() = Some(r);
            })
        })
        .await
    };
    let run_b = {
        let b = b.clone();
        tokio::spawn(async move { b.run().await })
    };
    let run_a = {
        let a = a.clone();
        tokio::spawn(async move { a.run().await })
    };
    qb.submit("stop", &1u64).await.unwrap();
    eventually(5, "B's job running", || b.stats().held == 1).await;
    qa.submit("stop", &1u64).await.unwrap();
    let rb = within(10, "B's run", run_b).await.unwrap().unwrap();
    assert!(rb.drained, "{rb:?}");
    eventually(5, "A's handler got B's report", || {
        seen.lock().unwrap().is_some()
    })
    .await;
    assert_eq!(
        *seen.lock().unwrap(),
        Some(rb),
        "A's handler saw B's real report"
    );
    assert_eq!(b.stats().succeeded, 1);
    eventually(5, "A's job acknowledged", || a.stats().succeeded == 1).await;
    assert!(!run_a.is_finished(), "A was not stopped");
    let ra = within(10, "A's shutdown", a.shutdown()).await;
    assert!(ra.drained, "{ra:?}");
    let _ = within(5, "A's run", run_a).await;
    let sa = qa.stats().await.unwrap();
    assert_eq!(
        (sa.waiting, sa.in_flight, sa.completed),
        (0, 0, 1),
        "{sa:?}"
    );
}

/// Pinned (passed before): a handler calls `shutdown_timeout(300 ms)` on its own worker
/// (returns at once, empty report) and then runs on for 3 s. At the deadline it is
/// aborted and its job put back once: `run`'s report says `drained: false, released: 1`,
/// and a second worker runs the job exactly once more, as a redelivery of attempt 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_past_its_own_shutdown_deadline_is_put_back_once() {
    let server = RedisServer::start();
    let url = server.url();
    let q = RedisQueue::connect(&url, "selfdeadline").await.unwrap();
    let me: Arc<OnceLock<Worker>> = Arc::new(OnceLock::new());
    let first_report = Arc::new(std::sync::Mutex::new(None));
    let finished = Arc::new(AtomicU64::new(0));
    let a = {
        let me = me.clone();
        let first_report = first_report.clone();
        let finished = finished.clone();
        Worker::builder(&url, "selfdeadline")
            .concurrency(2)
            .task("stop", move |_: u64| {
                let me = me.clone();
                let first_report = first_report.clone();
                let finished = finished.clone();
                async move {
                    let w = me.get().unwrap().clone();
                    let r = w.shutdown_timeout(Duration::from_millis(300)).await;
                    *first_report.lock().unwrap() = Some(r);
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), String>(())
                }
            })
            .build()
            .await
            .unwrap()
    };
    me.set(a.clone()).unwrap();
    let id = q.submit("stop", &1u64).await.unwrap();
    let report = within(10, "run after a deadline set from a handler", a.run())
        .await
        .unwrap();
    assert!(!report.drained, "{report:?}");
    assert_eq!(
        (report.released, report.leftover, report.left_pending),
        (1, 0, 0),
        "{report:?}"
    );
    let r = first_report
        .lock()
        .unwrap()
        .expect("shutdown_timeout returned in the handler");
    assert!(!r.drained && r.released == 0, "{r:?}");
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "the handler was aborted"
    );
    let s = q.stats().await.unwrap();
    assert_eq!((s.waiting, s.in_flight, s.completed), (1, 0, 0), "{s:?}");
    // A second worker runs it exactly once more.
    let runs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let b = {
        let runs = runs.clone();
        Worker::builder(&url, "selfdeadline")
            .task_with_ctx("stop", move |_: u64, ctx| {
                let runs = runs.clone();
                async move {
                    runs.lock().unwrap().push((
                        ctx.id().to_owned(),
                        ctx.attempt(),
                        ctx.is_redelivery(),
                    ));
                    Ok::<(), String>(())
                }
            })
            .build()
            .await
            .unwrap()
    };
    let run_b = {
        let b = b.clone();
        tokio::spawn(async move { b.run().await })
    };
    eventually(10, "the job ran again", || b.stats().succeeded == 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rb = within(10, "B's shutdown", b.shutdown()).await;
    assert!(rb.drained, "{rb:?}");
    let _ = within(5, "B's run", run_b).await;
    assert_eq!(*runs.lock().unwrap(), vec![(id.clone(), 2, true)]);
    let s = q.stats().await.unwrap();
    assert_eq!(
        (s.waiting, s.in_flight, s.completed, s.dead),
        (0, 0, 1, 0),
        "{s:?}"
    );
}

/// Pinned (documented by finding 56's fix): a handler that spawns a task which *calls*
/// its worker's `shutdown_timeout` there (task-locals do not cross `tokio::spawn`) and
/// awaits that task is waited for; with a deadline, it is aborted at the deadline and
/// put back, and the spawned task gets the real report: no hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_shutdown_called_in_a_task_the_handler_awaits_ends_at_the_deadline() {
    let server = RedisServer::start();
    let url = server.url();
    let q = RedisQueue::connect(&url, "spawncall").await.unwrap();
    let me = Arc::new(OnceLock::new());
    let seen = Arc::new(std::sync::Mutex::new(None));
    let worker = {
        let seen = seen.clone();
        worker_with(&url, "spawncall", me, move |w| {
            let seen = seen.clone();
            Box::pin(async move {
                let r =
                    tokio::spawn(
                        async move { w.shutdown_timeout(Duration::from_millis(300)).await },
                    );
                // Aborted here at the deadline; the spawned task goes on.
                let r = r.await.unwrap();
                *seen.lock().unwrap() = Some(r);
            })
        })
        .await
    };
    q.submit("stop", &1u64).await.unwrap();
    let report = within(10, "run", worker.run()).await.unwrap();
    assert!(!report.drained && report.released == 1, "{report:?}");
    assert!(seen.lock().unwrap().is_none(), "the handler was aborted");
    let s = q.stats().await.unwrap();
    assert_eq!((s.waiting, s.in_flight), (1, 0), "{s:?}");
}
