//! Finding 412 of RELIABILITY.md (a read-only review of the session's diff, 2026-12-07): a
//! run the exit gave up (busy in one poll past its 5 s deadline) went on in that poll and
//! awaited a task of its own pool; the wait was counted although the run held no slot any
//! more, and the deadlock breaker then refused the wait of a running task that would have
//! gone on. Pool P (three slots) under `process::exit`: G sleeps 6 s inside one poll; C
//! and H wait between polls and are run again at the exit. H's re-run queues B (a 4 s
//! sleep), which starts once G is given up; at 6 s G submits T and awaits it ("stale"; in
//! the control G detaches it); H then submits U and awaits it; C shrinks P to two slots
//! and ends: H and B run, and B is not waiting, so H's wait must not be refused.
//! `a_run_the_exit_gave_up_does_not_count_as_a_waiting_slot` failed before the fix
//! (`H Err(Some(WouldDeadlock))`, 1 ms after the shrink). Each run takes about 9 s.

// Some blocks hand back handles, to await elsewhere.
#![allow(clippy::async_yields_async)]

mod support;

use std::time::Duration;

use nb_aiopool::SmartAioPool;

static POOL: std::sync::OnceLock<SmartAioPool> = std::sync::OnceLock::new();

#[test]
#[ignore = "run as a child process"]
fn child() {
    let (scenario, dir) = support::child_scenario();
    let g_waits = scenario == "stale";
    let rt = support::multi_thread_of(2);
    rt.block_on(async {
        let pool = POOL.get_or_init(|| SmartAioPool::builder().max_concurrency(3).build());
        for (i, name) in ["G", "C", "H"].into_iter().enumerate() {
            let d = dir.clone();
            pool.submit(support::numbered_recipe(move |run| {
                let d = d.clone();
                Box::pin(async move {
                    let pool = POOL.get().unwrap();
                    if name == "G" {
                        if run == 0 {
                            support::append(&d.join("starts"), "G");
                            // Busy in this poll past the exit's 5 s deadline.
                            std::thread::sleep(Duration::from_secs(6));
                            support::event(&d, "G", "woke");
                            let t = pool.submit(|| async { 7usize }).await.unwrap();
                            if g_waits {
                                support::append(&d.join("gwait"), "G");
                                let _ = t.await;
                            } else {
                                support::append(&d.join("gwait"), "G");
                                t.detach();
                            }
                            return;
                        }
                        support::append(&d.join("starts"), "G again");
                        return;
                    }
                    if run == 0 {
                        support::append(&d.join("starts"), name);
                        std::future::pending::<()>().await;
                    }
                    if name == "H" {
                        let b = pool
                            .submit(|| async {
                                tokio::time::sleep(Duration::from_secs(4)).await;
                            })
                            .await
                            .unwrap();
                        b.detach();
                        while support::lines(&d.join("gwait")).is_empty() {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let u = pool.submit(|| async { 1usize }).await.unwrap();
                        support::append(&d.join("hwait"), "H");
                        let got = u.await.map_err(|e| e.cancel_reason());
                        support::event(&d, "H", "result");
                        support::append(&d.join("results"), &format!("H {got:?}"));
                    } else {
                        // C
                        while support::lines(&d.join("hwait")).is_empty() {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        pool.set_max_concurrency(2);
                        support::event(&d, "C", "shrunk");
                    }
                })
            }))
            .await
            .unwrap()
            .detach();
            support::until_lines(&dir.join("starts"), i + 1).await;
        }
    });
    support::exit_from_main(&dir, rt);
}

/// What H's wait gave, with the exit code and the child's events for a failure's message.
fn play(scenario: &str) -> (Vec<String>, String) {
    let played = support::play(scenario, 40);
    let said = format!(
        "{scenario}: code {:?} events {:?} stderr {}",
        played.code,
        played.events(),
        support::stderr_head(&played.stderr)
    );
    assert_eq!(played.code, Some(0), "{said}");
    (played.lines("results"), said)
}

/// The control: G detaches T (no wait of a given-up run): H gets U's value.
#[test]
fn a_shrink_at_the_exit_beside_a_task_that_goes_on_refuses_no_wait() {
    let (results, said) = play("control");
    assert_eq!(results, ["H Ok(1)"], "{said}");
}

/// G, given up by the exit, awaits T in the poll it was given up in: H still gets U's
/// value (before the fix: `WouldDeadlock`).
#[test]
fn a_run_the_exit_gave_up_does_not_count_as_a_waiting_slot() {
    let (results, said) = play("stale");
    assert_eq!(
        results,
        ["H Ok(1)"],
        "the given-up run's wait was counted as a slot that waits, and H's wait refused: {said}"
    );
}
