//! The rate window's hand-overs and timers (findings 320–323 and 325–327, and pins;
//! RELIABILITY.md), from a helper's review of 312–317's fixes: a task's start taken again when its own
//! runtime begins to run it (`Slot::restart`, `Limits::restart`, `Queue::put_back`), and the
//! rate timers kept per runtime (`RateTimers`).
//!
//! The faults have a test each, failing before their fixes (at 58619a0):
//! - 320: tasks handed over to a runtime that was not driven started out of submission
//!   order once it was: the last one handed over, whose start was still in the window, ran
//!   first, and the earlier ones (whose starts had left it) went back to the queue;
//! - 321–323: a runtime driven all along, waiting for its own task, waited for another
//!   current-thread runtime (not driven) to be driven, when the only timer armed was
//!   there: armed for the queue's head, that runtime's task, by a job's end whose second
//!   arming, on the driven runtime, `RateTimers::arm` refused (one timer per critical
//!   section, ce53624: 321); by a resize (`fill`'s first arming goes to the head's
//!   runtime, and the "one more" rule was an `else`: 322); or by a timer lost with its
//!   multi-thread runtime (re-armed on the head's: 323).
//!
//! Two more, from a read-only review of 206bbc2 (failing at 30e97e4): a timer lost with
//! its runtime was armed again only on runtimes with jobs of their own queued, not where
//! a task left to any runtime (a SmartAioPool re-run, a plain thread's task) is awaited
//! (326); and a task handed over gave its start to a job of its runtime queued ahead, which
//! the claimer then did not take, the job restarting having hidden, by its key, another
//! runtime's job ahead of that one (325).
//!
//! One more (327), from a read-only review of 6789e6c (failing with 30e97e4's guard
//! put back): a task handed over kept its start when that start left the window less room
//! than the jobs reserved a slot ahead of it, so one of those waited a whole window.
//!
//! The pins check what the review found sound: a SmartAioPool task put back runs once and
//! its elastic worker goes idle; the `metrics` figures count a task put back once; a
//! `shutdown()` on the runtime of a task put back ends.
//!
//! Two runtimes are needed to hand a task over, so these run in real time, with windows of
//! 200–500 ms next to steps of a few milliseconds; every wait is bounded. A hand-over is
//! waited for by its slot task on the runtime it goes to, not by `stats()` alone, which
//! counts a task as running from its slot's reservation (finding 413).

mod support;

#[cfg(feature = "metrics")]
mod metric_figures;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nb_aiopool::{SmartAioPool, SubmitOptions, TaskHandle};
use support::{came_by, common_builder, counted, drive, in_time, TooLate};

/// The output of `handle`'s task, awaited on a runtime driven all along; fails, with the
/// pool's stats, if the task has not ended within 5 windows of `per`.
async fn within_5_windows<T>(
    what: &str,
    handle: TaskHandle<T>,
    per: Duration,
    stats: impl Fn() -> nb_aiopool::PoolStats,
) -> T {
    tokio::time::timeout(per * 5, handle)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{what} did not start within 5 windows, a driven all along ({})",
                stats()
            )
        })
        .unwrap()
}

/// Runs `f` on a thread of its own, failing if it takes more than 30 s.
fn bounded(what: &'static str, f: impl FnOnce() + Send + 'static) {
    support::on_thread_within(what, 30, f);
}

/// Waits until a task of `v` (a current-thread runtime not driven), queued behind a full
/// rate window, has been handed over to `v` by another runtime's claimer once the window
/// let it start: its start charged, its slot task spawned on `v`, one task more there than
/// `v_tasks` (read after its submit), and `stats` holds. The stats count a task as running
/// from when a slot is reserved for it, a moment before a claimer takes it: a task queued
/// ahead of it meanwhile would take that slot (finding 413).
fn until_handed_over(v: &tokio::runtime::Runtime, v_tasks: usize, stats: impl Fn() -> bool) {
    support::until("the task handed over", || {
        stats() && v.metrics().num_alive_tasks() > v_tasks
    });
}

/// Finding 320. Four tasks submitted from `v`, a current-thread runtime then left undriven,
/// are handed to it one per window by the slots of `main` (each start charged then). When
/// `v` is driven again, the first three find their starts gone from the window, which
/// holds the fourth's: they go back to the queue, and the fourth, which finds its own,
/// runs first. "Queued jobs start in submission order" (README): the start the fourth
/// found should go to the first. At bd77fe2 this fails with `v's tasks started out of
/// submission order: [3, 0, 1, 2]`.
#[test]
fn tasks_handed_over_to_a_runtime_not_driven_start_in_submission_order() {
    bounded("the hand-over order scenario", || {
        let per = Duration::from_millis(200);
        let pool = common_builder(8, 10).rate_limit(1, per).build();
        let starts: Arc<Mutex<Vec<(u32, std::time::Instant)>>> = Default::default();
        let rec = |tag: u32| {
            let s = starts.clone();
            async move { s.lock().unwrap().push((tag, std::time::Instant::now())) }
        };
        let v = support::current_thread();
        let xs: Vec<_> = v.block_on(async {
            let mut hs = Vec::new();
            for i in 0..4 {
                hs.push(pool.submit(rec(i)).await.unwrap());
            }
            hs
        });
        // `main`'s slots hand `v`'s tasks over at 0, 1, 2 and 3 windows; `v` is driven
        // again half a window after the last.
        let main = support::multi_thread_of(2);
        main.block_on(async {
            pool.submit(rec(99)).await.unwrap().detach();
            tokio::time::sleep(per * 3 + per / 2).await;
        });
        v.block_on(async {
            for x in xs {
                tokio::time::timeout(Duration::from_secs(10), x)
                    .await
                    .expect("a task of v did not end within 10 s")
                    .unwrap();
            }
        });
        let s = starts.lock().unwrap().clone();
        let order: Vec<u32> = s.iter().map(|x| x.0).filter(|&t| t != 99).collect();
        assert_eq!(
            order,
            [0, 1, 2, 3],
            "v's tasks started out of submission order: {order:?}"
        );
        for w in s.windows(2) {
            assert!(
                w[1].1 - w[0].1 >= per / 2,
                "two starts {:?} apart under rate_limit(1, {per:?})",
                w[1].1 - w[0].1
            );
        }
        drop(main);
    });
}

/// Finding 321. `a` and `b` are current-thread runtimes; `b` is not driven after its
/// submit. Two tasks fill the window (`rate_limit(2, ..)`) and both slots, one of them
/// holding key `k`; `b`'s task (key `k`) is the queue's head, `a`'s task behind it. The
/// other task ends on `a` while the window is full: its slot's `pop_startable` arms the
/// timer for the head, on `b`, and `fill`'s "one more here" (finding 317) for `a`, in the
/// same critical section, which `RateTimers::arm` refuses (one timer per record since
/// ce53624). `a`, driven all along and awaiting its task (which key `k` does not hold
/// back), waits for `b` to be driven. At bd77fe2 this fails with `a's task did not start
/// within 5 windows`.
#[test]
fn a_jobs_end_in_a_full_window_arms_a_timer_on_its_driven_runtime_too() {
    bounded("the two armings scenario", || {
        let per = Duration::from_millis(300);
        let pool = common_builder(2, 10)
            .rate_limit(2, per)
            .max_per_key(1)
            .build();
        let a = support::current_thread();
        let b = support::current_thread();
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let (_hold_k, held_k) = tokio::sync::oneshot::channel::<()>();
        let holds_k = async move {
            let _ = held_k.await;
            0u32
        };
        a.block_on(pool.submit_with(holds_k, SubmitOptions::new().key("k")))
            .unwrap()
            .detach();
        let first = a
            .block_on(pool.submit(async move {
                let _ = held.await;
                1u32
            }))
            .unwrap();
        // Let their slots start them (the window's two starts).
        a.block_on(async {
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
        });
        assert_eq!(pool.stats().running, 2, "{}", pool.stats());
        let xb = b
            .block_on(pool.submit_with(async { 2u32 }, SubmitOptions::new().key("k")))
            .unwrap();
        a.block_on(async {
            let xa = pool.submit(async { 3u32 }).await.unwrap();
            release.send(()).unwrap();
            assert_eq!(first.await.unwrap(), 1);
            assert_eq!(
                within_5_windows("a's task", xa, per, || pool.stats()).await,
                3
            );
        });
        drop(xb);
    });
}

/// Finding 322. The same class through a resize: with the pool full, `b`'s task (the head)
/// and `a`'s queued, and the window full, `a` grows the pool. `fill` arms the one timer
/// on the runtime of the job that starts next, `b`, and its "one more on the runtime
/// driven now" is an `else` of that arming, so `a` gets none. At bd77fe2 this fails with
/// `a's task did not start within 5 windows`.
#[test]
fn a_resize_in_a_full_window_arms_a_timer_on_its_driven_runtime_too() {
    bounded("the resize scenario", || {
        let per = Duration::from_millis(300);
        let pool = common_builder(1, 10).rate_limit(1, per).build();
        let a = support::current_thread();
        let b = support::current_thread();
        let (_release, held) = tokio::sync::oneshot::channel::<()>();
        a.block_on(async {
            let h = pool.submit(async move {
                let _ = held.await;
            });
            h.await.unwrap().detach();
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
        });
        assert_eq!(pool.stats().running, 1, "{}", pool.stats());
        let xb = b.block_on(pool.submit(async { 2u32 })).unwrap();
        a.block_on(async {
            let xa = pool.submit(async { 3u32 }).await.unwrap();
            pool.set_max_concurrency(3);
            assert_eq!(
                within_5_windows("a's task", xa, per, || pool.stats()).await,
                3
            );
        });
        drop(xb);
    });
}

/// Finding 323. The timer is armed on `m`, a multi-thread runtime (`driven_handle`), and `m`
/// is dropped while it is armed: `rate_timer_lost` arms another with `fill_free(None)`,
/// which puts it on the runtime of the queue's head, `b`, a current-thread runtime not
/// driven. `a`, driven all along and awaiting its task, armed none of its own (`m`'s was a
/// multi-thread runtime's) and waits for `b`. At bd77fe2 this fails with `a's task did
/// not start within 5 windows`.
#[test]
fn a_rate_timer_lost_with_its_runtime_is_armed_again_where_a_driven_runtime_waits() {
    bounded("the lost timer scenario", || {
        let per = Duration::from_millis(500);
        let pool = common_builder(4, 10).rate_limit(1, per).build();
        let m = support::multi_thread_of(1);
        let a = support::current_thread();
        let b = support::current_thread();
        // `m` fills the window; `b`'s task is queued first, then `a`'s: the timer goes to `m`.
        m.block_on(async { pool.run(async {}).await.unwrap() });
        let xb = b.block_on(pool.submit(async { 2u32 })).unwrap();
        let xa = a.block_on(pool.submit(async { 3u32 })).unwrap();
        assert_eq!(pool.stats().queued, 2, "{}", pool.stats());
        drop(m);
        a.block_on(async {
            assert_eq!(
                within_5_windows("a's task", xa, per, || pool.stats()).await,
                3
            );
        });
        drop(xb);
    });
}

/// Finding 326: the class of finding 323 for jobs left to any runtime. `a`, `b`
/// (current-thread) and `m` (multi-thread) each run one task, the window's three starts
/// (`a` first, so `b` is the newest runtime after `m`); `m` then submits `x`, which the
/// full window holds back, and the timer goes to `m`. `m` is dropped: `x`, a SmartAioPool
/// task, is left to any runtime (`settle_dead`), and `rate_timer_lost` arms the timer on
/// the runtime `fill_free(None)` picks, the newest live one, `b`, not driven;
/// `arm_where_queued` skipped `x` (its runtime is `ANY`, never alive), so `a`, driven and
/// awaiting `x` (the pool is not stranded: awaiting a handle offers nothing), waited for
/// `b`. At 30e97e4 this fails with `x did not start within 5 windows, a driven all along`.
#[test]
fn a_rate_timer_lost_with_its_runtime_is_armed_again_where_a_task_left_to_any_runtime_is_awaited() {
    bounded("the lost timer scenario, a re-run pool", || {
        let per = Duration::from_millis(400);
        let pool = SmartAioPool::builder()
            .max_concurrency(4)
            .rate_limit(3, per)
            .process_wide(false)
            .auto_shutdown(false)
            .build();
        let a = support::current_thread();
        let b = support::current_thread();
        let m = support::multi_thread_of(1);
        a.block_on(pool.run(|| async {})).unwrap();
        b.block_on(pool.run(|| async {})).unwrap();
        m.block_on(pool.run(|| async {})).unwrap();
        let x = m.block_on(pool.submit(|| async { 3u32 })).unwrap();
        assert_eq!(pool.stats().queued, 1, "{}", pool.stats());
        drop(m);
        a.block_on(async {
            assert_eq!(within_5_windows("x", x, per, || pool.stats()).await, 3);
        });
        drop(b);
    });
}

/// Finding 326, the other way into it: a plain thread's task, sent to the pool's home `m`
/// (a multi-thread runtime, where the timer goes), is left to any runtime when `m` ends
/// while another runtime lives (`settle_dead`). As above, the timer went to `b` only, and
/// `a`, driven and awaiting the task, waited for `b`. At 30e97e4 this fails with `x did
/// not start within 5 windows, a driven all along`.
#[test]
fn a_rate_timer_lost_with_its_runtime_is_armed_again_where_a_plain_threads_task_is_awaited() {
    bounded("the lost timer scenario, a plain thread's task", || {
        let per = Duration::from_millis(400);
        let pool = common_builder(4, 10).rate_limit(3, per).build();
        let a = support::current_thread();
        let b = support::current_thread();
        let m = support::multi_thread_of(1);
        a.block_on(pool.run(async {})).unwrap();
        b.block_on(pool.run(async {})).unwrap();
        m.block_on(pool.run(async {})).unwrap();
        // From this (plain) thread: to the home, `m`; the window is full.
        let x = pool.blocking_submit(async { 3u32 }).unwrap();
        assert_eq!(pool.stats().queued, 1, "{}", pool.stats());
        drop(m);
        a.block_on(async {
            assert_eq!(within_5_windows("x", x, per, || pool.stats()).await, 3);
        });
        drop(b);
    });
}

/// Finding 325: `Slot::restart` looked for the job the window's next start goes
/// to while the job restarting still held its key. With `max_per_key(2)`, `r` (key `k`)
/// runs on `main`, and `q` (key `k`), a task of `b` (a current-thread runtime left
/// undriven), is handed over to `b` by `main`'s timer, its start charged then. Within
/// that window, `z` (key `k`, priority 5) is submitted from `c`, a current-thread runtime
/// left undriven, and `x` (priority 5, no key) from `b`: the window holds both back. `b`
/// is driven: `q` finds its start, which fills the window; the first job the picker
/// accepted, with `q` counted for `k`, was `x` (`z`'s key full), queued ahead of `q` and
/// of `b`: `q` gave its start back to it. But once `q` was back in the queue, its key
/// given back, the claimer's `pop_startable` took `z`, ahead of `x`, and handed it over
/// to `c`: neither `q` nor `x` started while `b` was driven, and the start went to a
/// runtime not driven. At 30e97e4 this fails with `none of b's tasks started while b
/// was driven (q 0, x 0)`.
#[test]
fn a_handed_over_task_keeps_its_start_when_the_job_ahead_is_held_back_only_by_its_key() {
    bounded("the key-held give-back scenario", || {
        in_time("the key-held give-back scenario", || {
            let per = Duration::from_millis(400);
            let pool = common_builder(8, 10)
                .rate_limit(1, per)
                .max_per_key(2)
                .build();
            let main = support::multi_thread_of(2);
            let b = support::current_thread();
            let c = support::current_thread();
            let (q_runs, x_runs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let r_runs = Arc::new(AtomicUsize::new(0));
            let (_release_r, held) = tokio::sync::oneshot::channel::<()>();
            let r = {
                let r_runs = r_runs.clone();
                async move {
                    r_runs.fetch_add(1, Ordering::SeqCst);
                    let _ = held.await;
                    0u32
                }
            };
            // `r` starts after this, `q` is handed over a window after `r`'s start, and
            // `q`'s start fills the window for one more: until then, all below holds.
            let window_full_until = std::time::Instant::now() + 2 * per;
            main.block_on(pool.submit_with(r, SubmitOptions::new().key("k")))
                .unwrap()
                .detach();
            // Started, not only given a slot (counted as running a moment before `main`'s
            // claimer takes it): a submit meanwhile would add a claimer on its own runtime
            // (`claim_here`), and `b`'s, left there, would take the start meant for `q`.
            support::until("r started", || r_runs.load(Ordering::SeqCst) == 1);
            // Queued (the window is full); `main`'s timer hands it to `b` a window later.
            let xq = b
                .block_on(pool.submit_with(counted(&q_runs), SubmitOptions::new().key("k")))
                .unwrap();
            // Handed over, not only reserved a slot: `z`, queued ahead, would take that,
            // through a claimer its submit adds on `c`.
            until_handed_over(&b, b.metrics().num_alive_tasks(), || {
                let s = pool.stats();
                (s.queued, s.running) == (0, 2)
            });
            let xz = c
                .block_on(
                    pool.submit_with(async { 1u32 }, SubmitOptions::new().key("k").priority(5)),
                )
                .unwrap();
            let xx = b
                .block_on(pool.submit_with(counted(&x_runs), SubmitOptions::new().priority(5)))
                .unwrap();
            let s = pool.stats();
            came_by(window_full_until)?;
            assert_eq!((s.queued, s.running), (2, 2), "z and x held back: {s}");
            drive(&b);
            let (qn, xn) = (q_runs.load(Ordering::SeqCst), x_runs.load(Ordering::SeqCst));
            came_by(window_full_until)?;
            assert_eq!(
                qn + xn,
                1,
                "none of b's tasks started while b was driven (q {qn}, x {xn}; {})",
                pool.stats()
            );
            drop((xq, xz, xx));
            Ok(())
        });
    });
}

/// Finding 327, from a read-only review of 6789e6c: a task handed over gives its start to
/// the job queued ahead when its start leaves the window no room beyond the jobs reserved a
/// slot, not only when it fills the window. `q` (priority 0), a task of `b` (a
/// current-thread runtime left undriven), is handed over to `b` by `main`'s timer, its
/// start charged then; `x1` and `x2` (priority 5, so ahead of `q`), tasks of `b` too, are
/// queued behind the pool's one slot (`q`'s). Once `q`'s start has left the window, a
/// resize from a plain thread reserves two slots, the window's two starts, for `x1` and
/// `x2`: its claimers go to `b`, behind `q`'s slot. `b` is driven: `q`'s slot takes its
/// start again, which leaves the window one start for two reserved jobs ahead of it. With
/// 30e97e4's guard ("this start fills the window") put back in 0936c98, `q` kept it and
/// ran first, `x1` took the last start, and `x2`, reserved a slot before `q`'s runtime was
/// driven, waited a whole window: this fails with `b's tasks started out of priority
/// order: ["q", "x1", "x2"] (x2 started 401ms after q)`.
#[test]
fn a_handed_over_task_gives_its_start_to_reserved_jobs_queued_ahead() {
    bounded("the reserved jobs ahead scenario", || {
        in_time("the reserved jobs ahead scenario", || {
            let per = Duration::from_millis(400);
            let pool = common_builder(1, 10).rate_limit(2, per).build();
            let main = support::multi_thread_of(2);
            let b = support::current_thread();
            let starts: Arc<Mutex<Vec<(&'static str, std::time::Instant)>>> = Default::default();
            let rec = |tag: &'static str| {
                let s = starts.clone();
                async move { s.lock().unwrap().push((tag, std::time::Instant::now())) }
            };
            // `main` fills the window; `q`, queued, goes to `b` when `main`'s timer fires.
            // `main`'s starts come after this; `q`'s submit must come before they leave it.
            let window_full_until = std::time::Instant::now() + per;
            main.block_on(async {
                pool.run(async {}).await.unwrap();
                pool.run(async {}).await.unwrap();
            });
            let xq = b.block_on(pool.submit(rec("q"))).unwrap();
            let queued = pool.stats().queued;
            came_by(window_full_until)?;
            assert_eq!(queued, 1, "q held back: {}", pool.stats());
            // Handed over, not only reserved a slot: `x1`, queued meanwhile, would take that.
            until_handed_over(&b, b.metrics().num_alive_tasks(), || {
                let s = pool.stats();
                (s.queued, s.running) == (0, 1)
            });
            let handed = std::time::Instant::now();
            // Behind the one slot (`q`'s): queued, no slot reserved, no timer armed.
            let high = || SubmitOptions::new().priority(5);
            let x1 = b.block_on(pool.submit_with(rec("x1"), high())).unwrap();
            let x2 = b.block_on(pool.submit_with(rec("x2"), high())).unwrap();
            let s = pool.stats();
            assert_eq!((s.queued, s.running), (2, 1), "x1 and x2 queued: {s}");
            // `q`'s start (and `main`'s) leave the window; the resize reserves its two
            // starts for `x1` and `x2`, with claimers on `b` (the runtime of the job that
            // starts next), spawned after `q`'s slot.
            let gone = handed + per + Duration::from_millis(50);
            std::thread::sleep(gone.saturating_duration_since(std::time::Instant::now()));
            pool.set_max_concurrency(3);
            assert!(starts.lock().unwrap().is_empty(), "nothing ran yet");
            b.block_on(async {
                for (what, h) in [("x1", x1), ("x2", x2), ("q", xq)] {
                    tokio::time::timeout(Duration::from_secs(10), h)
                        .await
                        .unwrap_or_else(|_| {
                            panic!("{what} did not end within 10 s ({})", pool.stats())
                        })
                        .unwrap();
                }
            });
            let s = starts.lock().unwrap().clone();
            let order: Vec<&str> = s.iter().map(|x| x.0).collect();
            let at = |tag| s.iter().find(|x| x.0 == tag).unwrap().1;
            assert_eq!(
                order,
                ["x1", "x2", "q"],
                "b's tasks started out of priority order: {order:?} (x2 started {:?} after q)",
                at("x2").saturating_duration_since(at("q"))
            );
            assert!(
                at("x2") - at("x1") < per / 2,
                "x2, reserved a slot with x1, started {:?} after it",
                at("x2") - at("x1")
            );
            assert!(
                at("q") - at("x1") >= per / 2,
                "three starts {:?} apart under rate_limit(2, {per:?})",
                at("q") - at("x1")
            );
            drop(main);
            Ok(())
        });
    });
}

/// The set-up of the pins: `x`, a task of `v` (a current-thread runtime then left
/// undriven), is handed over by `main`'s slot (its start charged then); `main`'s task `w`
/// starts a window later; `v`, driven then, puts `x` back (its start left the window,
/// `w`'s fills it). `v` must be driven while `w`'s start is in the window, up to `PER`
/// after it: [`put_back`] returns `Err(TooLate)` for a run whose thread was held up past
/// that (a loaded machine; `x` then finds room and runs), which the pin, played by
/// `in_time`, plays again. So must a pin's reads that need `x` still put back.
type PutBack<H> = support::HandedToV<H>;

const PER: Duration = Duration::from_millis(300);

fn put_back<H>(
    submit_x: impl FnOnce(&tokio::runtime::Runtime, &Arc<AtomicUsize>) -> H,
    submit_w: impl FnOnce(&Arc<AtomicUsize>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>,
    stats: impl Fn() -> nb_aiopool::PoolStats,
) -> Result<PutBack<H>, TooLate> {
    let handed = support::hand_x_over_to_v(PER, submit_x, submit_w, || stats().completed);
    drive(&handed.v);
    let s = stats();
    let runs = handed.x_runs.load(Ordering::SeqCst);
    // `v` polled `x`'s slot while `w`'s start filled the window.
    came_by(handed.w_start + PER)?;
    assert_eq!((s.queued, s.running), (1, 0), "x put back: {s}");
    assert_eq!(runs, 0);
    Ok(handed)
}

/// Pin: a SmartAioPool task put back counts as queued, its elastic worker goes idle
/// meanwhile (no worker busy), and it runs once when the window reopens; `wait()` ends and
/// the workers stay within `max_concurrency`.
#[test]
fn pin_a_smart_task_put_back_runs_once_and_frees_its_worker() {
    bounded("the smart put-back pin", || {
        in_time("the smart put-back pin", || {
            let pool = SmartAioPool::builder()
                .max_concurrency(4)
                .rate_limit(1, PER)
                .process_wide(false)
                .auto_shutdown(false)
                .build();
            let p = pool.clone();
            let p2 = pool.clone();
            let p3 = pool.clone();
            let PutBack {
                v,
                main,
                x,
                x_runs,
                w_start,
            } = put_back(
                move |v, runs| {
                    let runs = runs.clone();
                    v.block_on(p.submit(move || counted(&runs))).unwrap()
                },
                move |runs| {
                    let runs = runs.clone();
                    Box::pin(async move {
                        p2.submit(move || counted(&runs)).await.unwrap().detach();
                    })
                },
                move || p3.stats(),
            )?;
            let (busy, s) = (pool.busy_worker_count(), pool.stats());
            // Read while `x` was still put back (the window reopens `PER` after `w`'s start).
            came_by(w_start + PER)?;
            assert_eq!(busy, 0, "{s}");
            v.block_on(async {
                let got = tokio::time::timeout(Duration::from_secs(10), x)
                    .await
                    .expect("the task put back did not run within 10 s");
                assert_eq!(got.unwrap(), 7);
                tokio::time::timeout(Duration::from_secs(10), pool.wait())
                    .await
                    .expect("wait() did not return within 10 s");
            });
            assert_eq!(
                x_runs.load(Ordering::SeqCst),
                1,
                "runs of the task put back"
            );
            let s = pool.stats();
            assert_eq!((s.queued, s.running, s.completed), (0, 0, 2), "{s}");
            assert!(pool.worker_count() <= 4, "{} workers", pool.worker_count());
            drop(main);
            Ok(())
        });
    });
}

/// Pin: the `metrics` figures agree with `stats()` while a task is put back and after it
/// ran, and the queue-wait and run-time histograms have one sample per task that ran (a
/// task put back is started once).
#[cfg(feature = "metrics")]
#[test]
fn pin_metrics_count_a_task_put_back_once() {
    use metrics_util::debugging::DebuggingRecorder;
    use metrics_util::MetricKind;

    // A recorder of its own for each run `in_time` plays (the figures add up).
    in_time("the metrics put-back pin", || {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let name = "review-ratetimers-put-back";
            let pool = common_builder(8, 10).rate_limit(1, PER).name(name).build();
            let (p, p2, p3) = (pool.clone(), pool.clone(), pool.clone());
            let PutBack {
                v,
                main,
                x,
                w_start,
                ..
            } = put_back(
                move |v, runs| v.block_on(p.submit(counted(runs))).unwrap(),
                move |runs| {
                    let runs = runs.clone();
                    Box::pin(async move { p2.submit(counted(&runs)).await.unwrap().detach() })
                },
                move || p3.stats(),
            )?;
            let mut figs = metric_figures::Figures::default();
            figs.take(&snapshotter, name);
            let while_put_back = figs.against(&pool.stats());
            // Read while `x` was still put back (the window reopens `PER` after `w`'s start).
            came_by(w_start + PER)?;
            if let Some(m) = while_put_back {
                panic!("with the task put back: {m}");
            }
            v.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), x)
                    .await
                    .expect("the task put back did not run within 10 s")
                    .unwrap();
                tokio::time::timeout(Duration::from_secs(10), pool.wait())
                    .await
                    .expect("wait() did not return within 10 s");
            });
            figs.take(&snapshotter, name);
            if let Some(m) = figs.against(&pool.stats()) {
                panic!("after it ran: {m}");
            }
            assert_eq!(pool.stats().completed, 2, "{}", pool.stats());
            let waits = figs.get(MetricKind::Histogram, "nb_aiopool_queue_wait_seconds");
            let runs = figs.get(MetricKind::Histogram, "nb_aiopool_run_time_seconds");
            assert_eq!(
                (waits, runs),
                (2.0, 2.0),
                "samples of queue wait and run time"
            );
            drop(main);
            Ok(())
        })
    });
}

/// Pin: `shutdown()` on the runtime of a task put back (which drives it) ends, with the
/// task run once: the window reopens, `main`'s timer hands it over again, and `v`, driven
/// by the shutdown, runs it.
#[test]
fn pin_shutdown_on_the_runtime_of_a_task_put_back_ends_with_it_run() {
    bounded("the shutdown pin", || {
        in_time("the shutdown pin", || {
            let pool = common_builder(8, 10).rate_limit(1, PER).build();
            let (p, p2, p3) = (pool.clone(), pool.clone(), pool.clone());
            let PutBack {
                v, main, x, x_runs, ..
            } = put_back(
                move |v, runs| v.block_on(p.submit(counted(runs))).unwrap(),
                move |runs| {
                    let runs = runs.clone();
                    Box::pin(async move { p2.submit(counted(&runs)).await.unwrap().detach() })
                },
                move || p3.stats(),
            )?;
            let x: TaskHandle<u32> = x;
            v.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), pool.shutdown())
                    .await
                    .expect("shutdown() did not return within 10 s");
            });
            assert_eq!(
                x_runs.load(Ordering::SeqCst),
                1,
                "runs of the task put back"
            );
            assert!(x.is_finished());
            let s = pool.stats();
            assert_eq!((s.queued, s.running, s.completed), (0, 0, 2), "{s}");
            drop(main);
            Ok(())
        });
    });
}
