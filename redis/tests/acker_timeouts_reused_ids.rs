//! Finding 71 (redis/RELIABILITY.md), from a review of finding 70's fix (d95fa3d): after
//! a lost call, the acker reads whether a lone record's entry is still pending under the
//! worker (`OWNED`) before it sends the record again. The records of a run whose id a new
//! entry took since (the stream was lost, ids restarted from the clock: findings 65 and
//! 67) are left out of each try by the `live` check; that check was made before the
//! read, not after it, so a new entry with the record's id read by this worker while the
//! read was on its way was finished with the old run's record. The worker talks to Redis
//! through a small TCP proxy (`support::proxy`) that can close a connection at a given
//! call (the call is lost, not applied) and hold back the calls that name a given entry
//! for as long as the test says (a slow round trip). Every test starts its own
//! `redis-server` and bounds its waits.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nb_aiopool_redis::{RedisQueue, Worker};
use support::proxy::{proxy, OnCall};
use support::*;

/// What the proxy does, set by the test.
#[derive(Default)]
struct Control {
    /// The first call carrying these bytes is not forwarded: its connection is closed.
    drop_marker: Mutex<Option<Vec<u8>>>,
    /// Set once that call was dropped.
    dropped: AtomicBool,
    /// After the drop: calls with an argument equal to this (an entry id) that do not
    /// carry the marker are held back (with the calls behind them on their connection)
    /// until `release`.
    hold_arg: Mutex<Option<Vec<u8>>>,
    /// Set once a call was held back.
    held: AtomicBool,
    release: Arc<AtomicBool>,
}

/// A proxy to Redis at `port`, doing what `control` says. Returns its URL.
async fn controlled_proxy(port: u16, control: Arc<Control>) -> String {
    proxy(port, move |args| {
        let marker = control.drop_marker.lock().unwrap().clone();
        let marked = marker
            .as_ref()
            .is_some_and(|m| args.iter().any(|a| a.windows(m.len()).any(|w| w == &m[..])));
        if marked && !control.dropped.swap(true, Ordering::SeqCst) {
            return OnCall::Close;
        }
        let hold = control.hold_arg.lock().unwrap().clone();
        let named = hold.as_ref().is_some_and(|h| args.iter().any(|a| a == h));
        if control.dropped.load(Ordering::SeqCst) && named && !marked {
            control.held.store(true, Ordering::SeqCst);
            return OnCall::HoldUntil(Arc::clone(&control.release));
        }
        OnCall::Forward
    })
    .await
}

/// Fault (suspected by reading, confirmed here). Job J1 ended; its record's call is lost
/// (the connection closed before Redis read it: not applied). Before the fix of finding
/// 70 the record was sent again right after the `live` check (no await between). Now the
/// acker first reads whether the entry is still pending (`OWNED`), and sends the record
/// if it is, without checking `live` again. Here that read takes a while (the proxy
/// holds it back, as a slow link or a reconnection would), and meanwhile the entry is
/// delivered anew to the same worker (the group was reset: a stand-in, which needs no
/// lost stream, for a new entry that took J1's id, findings 65 and 67; both go through
/// `Inner::supersede`, which removes J1's insertion so that its record is dropped). The
/// read then finds the new delivery pending under the worker, and J1's record is sent:
/// it records the old run's outcome for the new delivery's entry and deletes it while
/// the new run is still going (whose own record then finds nothing: a failure of that
/// run would never be retried, its success not counted).
///
/// Expected: J1's record is dropped (its run's id was taken), as it is when the new
/// delivery is read before the `live` check: the entry stays in the stream, pending,
/// while the new run goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_delivered_anew_while_the_pending_check_is_on_its_way_is_not_finished_by_the_old_record(
) {
    let server = RedisServer::start();
    let q = "r281owned";
    let control = Arc::new(Control::default());
    let url = controlled_proxy(server.port, control.clone()).await;
    let queue = RedisQueue::connect(&server.url(), q).await.unwrap();
    let runs = Arc::new(AtomicU64::new(0));
    let gate1 = Arc::new(tokio::sync::Notify::new());
    let open2 = Arc::new(AtomicBool::new(false));
    let handler = {
        let (r, g1, o2) = (runs.clone(), gate1.clone(), open2.clone());
        move |_j: Job| {
            let (r, g1, o2) = (r.clone(), g1.clone(), o2.clone());
            async move {
                if r.fetch_add(1, Ordering::SeqCst) == 0 {
                    g1.notified().await;
                    return Ok::<String, String>("MARKJ1".to_owned());
                }
                while !o2.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok("second run".to_owned())
            }
        }
    };
    let w = Worker::builder(&url, q)
        .concurrency(2)
        .block(Duration::from_millis(50))
        .task("t", handler)
        .build()
        .await
        .unwrap();
    let run = spawn_run(&w);
    queue
        .submit_with_result("t", &Job { n: 1 }, Duration::from_secs(60))
        .await
        .unwrap();
    eventually(10, "J1 running", || runs.load(Ordering::SeqCst) == 1).await;
    let mut c = server.conn();
    let ids: Vec<(String, std::collections::HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(stream_key(q))
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    let j1 = ids[0].0.clone();
    *control.drop_marker.lock().unwrap() = Some(b"MARKJ1".to_vec());
    *control.hold_arg.lock().unwrap() = Some(j1.as_bytes().to_vec());
    gate1.notify_one();
    // J1's record is lost (not applied); the pending check that follows is held back.
    eventually(
        10,
        "J1's record's call lost and the pending check held",
        || control.held.load(Ordering::SeqCst),
    )
    .await;
    assert_eq!(
        xlen(&mut c, &stream_key(q)),
        1,
        "J1's entry still there (its record was lost)"
    );
    // The group is reset (atomically, so that the worker's read meets no NOGROUP): the
    // entry is delivered anew, to the same worker, and runs again.
    let _: () = redis::pipe()
        .atomic()
        .cmd("XGROUP")
        .arg("DESTROY")
        .arg(stream_key(q))
        .arg("workers")
        .ignore()
        .cmd("XGROUP")
        .arg("CREATE")
        .arg(stream_key(q))
        .arg("workers")
        .arg("0")
        .ignore()
        .query(&mut c)
        .unwrap();
    eventually(10, "the entry delivered anew and running", || {
        runs.load(Ordering::SeqCst) == 2
    })
    .await;
    // The pending check goes through now.
    control.release.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let len = xlen(&mut c, &stream_key(q));
    let pending = pending_per_consumer(&mut c, q);
    open2.store(true, Ordering::SeqCst);
    within(15, "shutdown", w.shutdown_timeout(Duration::from_secs(2))).await;
    let _ = within(15, "run", run).await;
    assert_eq!(
        len, 1,
        "J1's record, sent after its pending check found the new delivery pending (read \
         meanwhile by the same worker, J1's insertion removed), deleted the entry while \
         its new run went on (pending per consumer then: {pending:?})"
    );
}
