//! Tests written by a hand-made mutation review of the surface (task groups, map streams,
//! task handles, the process-wide registry and SmartAioPool's at-exit path): each pins a
//! behaviour that a plausible one-token change to `src/pool/group/`, `src/pool/stream/`,
//! `src/task/handle.rs`, `src/pool/registry.rs` or `src/pool/smart/process_wide.rs`
//! altered while the rest of the suite still passed (see the doc comment of each test for
//! the mutation it catches).

mod support;

use std::time::Duration;

use futures_util::{stream, Stream, StreamExt};
use nb_aiopool::{CommonAioPool, SubmitErrorKind, SubmitOptions};
use support::Gate;

/// A cancel-on-error group's submit that waits for room is refused (`Closed`) as soon as
/// a task of the group fails, even when the room that task frees goes to another
/// submitter waiting ahead of it (so room never comes for the group's submit).
///
/// Catches `Trip::trip` (src/pool/group/mod.rs) without its last line,
/// `self.failed.notify_waiters()`: the group's waiting submit is then told nothing, the
/// failed task's slot goes to the other submitter first in line, and the submit waits for
/// ever.
#[tokio::test(start_paused = true)]
async fn a_waiting_group_submit_is_refused_when_a_task_fails_even_if_room_never_comes() {
    let pool = CommonAioPool::new(1, 0);
    let mut group = pool.group::<Result<(), ()>>().cancel_on_error(true);
    group
        .submit(async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Err(())
        })
        .await
        .unwrap();
    // Another submitter, first in line for the pool's one place.
    let other = tokio::spawn({
        let pool = pool.clone();
        async move { pool.submit(std::future::pending::<()>()).await.unwrap() }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let refused = tokio::time::timeout(Duration::from_secs(60), group.submit(async { Ok(()) }))
        .await
        .expect("the submit was refused when the task failed, not left waiting")
        .unwrap_err();
    assert!(refused.is_closed(), "{refused:?}");
    // The other submitter got the failed task's place, and holds it.
    let other = other.await.unwrap();
    assert!(!other.is_finished());
    other.abort();
    let results = tokio::time::timeout(Duration::from_secs(60), group.join_all())
        .await
        .unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].as_ref().unwrap(), &Err(()));
}

/// A group's `len` counts every task not joined yet, also once `join_next` has begun to
/// poll them together (a `join_next` cut short by a timeout moves them there).
///
/// Catches `Group::len` (src/pool/group/mod.rs) counting only the tasks awaited in order
/// (`self.tasks.len() + self.fresh.len()` cut to `self.fresh.len()`): after a timed-out
/// `join_next` the group said it was empty while three tasks ran.
#[tokio::test(start_paused = true)]
async fn a_group_counts_its_tasks_after_a_join_next_was_cut_short() {
    let pool = CommonAioPool::new(2, 4);
    let mut group = pool.group::<u32>();
    let gate = Gate::new();
    for i in 0..3 {
        let gate = gate.clone();
        group
            .submit(async move {
                gate.wait().await;
                i
            })
            .await
            .unwrap();
    }
    assert_eq!(group.len(), 3);
    assert!(
        tokio::time::timeout(Duration::from_millis(10), group.join_next())
            .await
            .is_err(),
        "no task has ended"
    );
    assert_eq!(group.len(), 3, "three tasks not joined yet");
    assert!(!group.is_empty());
    gate.open();
    let mut sum = 0;
    while let Some(r) = tokio::time::timeout(Duration::from_secs(60), group.join_next())
        .await
        .unwrap()
    {
        sum += r.unwrap();
        assert!(group.len() < 3);
    }
    assert_eq!(sum, 3);
    assert_eq!(group.len(), 0);
    assert!(group.is_empty());
}

/// A stream's `refused()` keeps saying why the pool stopped taking its jobs after the
/// stream's `abort_all`.
///
/// Catches `Mapper::stop_intake` (src/pool/stream/mod.rs) storing its reason
/// unconditionally (`if refused.is_some()` dropped): `abort_all`, which stops the intake
/// with no reason, then wiped the `Closed` the stream had been refused with.
#[tokio::test(start_paused = true)]
async fn a_streams_refusal_stays_after_abort_all() {
    let pool = CommonAioPool::new(2, 2);
    pool.shutdown().await;
    let mut unordered = pool.map_unordered(stream::iter(0..3), |i| async move { i });
    let mut ordered = pool.map_ordered(stream::iter(0..3), |i| async move { i });
    let bound = Duration::from_secs(60);
    assert!(tokio::time::timeout(bound, unordered.next())
        .await
        .unwrap()
        .is_none());
    assert!(tokio::time::timeout(bound, ordered.next())
        .await
        .unwrap()
        .is_none());
    assert_eq!(unordered.refused(), Some(SubmitErrorKind::Closed));
    assert_eq!(ordered.refused(), Some(SubmitErrorKind::Closed));
    unordered.abort_all();
    ordered.abort_all();
    assert_eq!(unordered.refused(), Some(SubmitErrorKind::Closed));
    assert_eq!(ordered.refused(), Some(SubmitErrorKind::Closed));
}

/// A stream given options that pulled an input and waits for room for it (the pool is
/// full) counts that input in its `size_hint`'s upper bound: the stream then yields as
/// many results as the bound says at most.
///
/// Catches `Mapper::size_hint` (src/pool/stream/mod.rs) leaving out the staged input
/// (`held + usize::from(self.staged)` cut to `held`): the upper bound was one short of
/// what the stream went on to yield.
#[tokio::test(start_paused = true)]
async fn a_streams_size_hint_counts_the_input_waiting_for_room() {
    let pool = CommonAioPool::new(1, 0);
    let gate = Gate::new();
    let blocker = pool.submit(gate.wait()).await.unwrap();
    let mut results = pool
        .map_unordered(stream::iter(0..3u32), |i| async move { i })
        .with_options(|_| SubmitOptions::new());
    // The pool is full: the first input is pulled and waits for room.
    assert!(
        tokio::time::timeout(Duration::from_millis(10), results.next())
            .await
            .is_err(),
        "the pool is full"
    );
    let (_, most) = results.size_hint();
    gate.open();
    tokio::time::timeout(Duration::from_secs(60), blocker)
        .await
        .unwrap()
        .unwrap();
    let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(60), results.collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(rest.len(), 3);
    let most = most.expect("the inputs' count is known");
    assert!(
        most >= rest.len(),
        "size_hint said at most {most}, the stream yielded {}",
        rest.len()
    );
}
