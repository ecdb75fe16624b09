//! A helper's review of 5416bec (findings 272 and 273; it found 275 and 276): the serving
//! thread of a stranded SmartAioPool (`Engine::serve_stranded`) and the rate window's
//! clamp (`RateWindow::clamp`). Tests named `a_...` are the review's findings (failing on
//! 5416bec; `a_thread_exiting_...`, on the tests' own count of serving threads, on 077e1d9);
//! `pin_...` tests pin behaviour checked and found sound.
//!
//! Every test that may start a serving thread holds [`serial`]: some count the crate's
//! serving threads (`nb_aiopool-serve`, "nb_aiopool-serv" in `/proc`, where Linux keeps 15
//! bytes of a thread's name).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nb_aiopool::{CancelReason, CommonAioPool, SmartAioPool, SubmitOptions, TaskError, TaskHandle};
use support::*;

/// How many threads of this process are the crate's serving threads (`nb_aiopool-serve`,
/// "nb_aiopool-serv" in `/proc`). Counted with [`threads_named`], which a thread exiting
/// during the count cannot make miss one: a single listing of `/proc/self/task` did, when
/// the plain executor's thread, made before the serving thread it starts, exited just as
/// the test counted (RELIABILITY.md, finding 279).
fn serving_threads() -> usize {
    threads_named("nb_aiopool-serv")
}

/// How long a serving thread may outlive its work in these tests: it ends within
/// milliseconds. (Runs that seemed to show it outlive its re-run by about 5 s, one in CI
/// and 4 of 60 on an idle machine, had counted it with a single listing of the process's
/// threads, which missed it: RELIABILITY.md, finding 279.) The tests pin that the thread
/// ends, with room for a loaded machine.
const SERVE_END: u64 = 5;

/// Waits (bounded) until no more serving threads are left than `before` (those a failed
/// test left behind); returns how many more there are, as the count that ended the wait
/// found (a second count could differ from it).
fn no_serving_thread_within(before: usize, secs: u64) -> usize {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = serving_threads().saturating_sub(before);
        if left == 0 || Instant::now() >= end {
            return left;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A recipe whose first run never ends and whose later runs record the name of the thread
/// they run on, then return `value`.
fn cut_off_once_naming(
    runs: &Arc<AtomicUsize>,
    names: &Arc<Mutex<Vec<String>>>,
    value: u32,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = u32> + Send>> + Send + Sync + 'static
{
    let (runs, names) = (Arc::clone(runs), Arc::clone(names));
    move || {
        let first = runs.fetch_add(1, Ordering::SeqCst) == 0;
        let names = Arc::clone(&names);
        Box::pin(async move {
            if first {
                std::future::pending::<()>().await;
            }
            let name = std::thread::current().name().unwrap_or("").to_string();
            names.lock().unwrap().push(name);
            value
        })
    }
}

/// Strands `pool`: submits `n` tasks (task `i` returns `i`) from a runtime, waits until
/// each first run has started (it never ends), then drops the runtime. Returns their
/// handles and their run counters.
fn strand(pool: &SmartAioPool, n: usize) -> (Vec<TaskHandle<u32>>, Vec<Arc<AtomicUsize>>) {
    let rt = multi_thread_of(1);
    let counters: Vec<Arc<AtomicUsize>> = (0..n).map(|_| Arc::default()).collect();
    let handles = rt.block_on(async {
        let mut v = Vec::new();
        for (i, c) in counters.iter().enumerate() {
            v.push(pool.submit(cut_off_once(c, i as u32)).await.unwrap());
        }
        v
    });
    until("the first runs", || {
        counters.iter().all(|c| c.load(Ordering::SeqCst) == 1)
    });
    drop(rt);
    (handles, counters)
}

/// Strands `pool` as [`strand`] does, with one task of [`cut_off_once_naming`] (it returns
/// 5): its handle, and the names of the threads its later runs ran on.
fn strand_naming(pool: &SmartAioPool) -> (TaskHandle<u32>, Arc<Mutex<Vec<String>>>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let names: Arc<Mutex<Vec<String>>> = Arc::default();
    let rt = multi_thread_of(1);
    let h = rt
        .block_on(pool.submit(cut_off_once_naming(&runs, &names, 5)))
        .unwrap();
    until("the first run", || runs.load(Ordering::SeqCst) == 1);
    drop(rt);
    (h, names)
}

/// A test's own SmartAioPool (left alone by the exit hook and the process-wide calls).
fn private_smart(c: usize, q: usize) -> nb_aiopool::SmartAioPoolBuilder {
    SmartAioPool::builder()
        .max_concurrency(c)
        .max_queue_size(q)
        .process_wide(false)
        .auto_shutdown(false)
}

// ----- findings ---------------------------------------------------------------------------

/// Finding A (serve_stranded): a stranded pool whose `rate_limit` window never reopens
/// (`Duration::MAX`) holds a queued task back for ever. A handle awaited by a plain
/// executor starts a serving thread, whose `serve` waits (`wait_all`) for every task of
/// the pool, the held-back one too: the thread never ends (a parked thread and a
/// current-thread runtime, with the pool's engine, for the life of the process; for an
/// `auto_shutdown(false)` pool even the exit does not end it), although nothing is left
/// for it to run. (The held-back task's handle waits for ever as before: a SmartAioPool
/// dropped with unfinished tasks stays listed, and only the exit take-over cancels such
/// tasks, for `auto_shutdown` pools.)
///
/// Failing on 5416bec: a serving thread is left 5 s after the re-run returned (before
/// 5416bec, the plain executor's await of the re-run hung: finding 273).
#[test]
fn a_serving_thread_ends_when_only_tasks_held_back_for_ever_are_left() {
    let _serial = serial();
    let before = serving_threads();
    let runs = Arc::new(AtomicUsize::new(0));
    let pool = private_smart(2, 4).rate_limit(1, Duration::MAX).build();
    let rt = multi_thread_of(1);
    // The first task spends the window's only start; the second is held back for ever.
    let (first, held) = rt.block_on(async {
        let first = pool.submit(cut_off_once(&runs, 9)).await.unwrap();
        let held = pool.submit(|| async { 7u32 }).await.unwrap();
        (first, held)
    });
    until("the first run", || runs.load(Ordering::SeqCst) == 1);
    drop(rt);
    // The first task's re-run takes back its start, and runs where it is awaited.
    let got = on_thread_within("the re-run, awaited by a plain executor", 5, move || {
        plain_block_on(first)
    });
    assert_eq!(got.unwrap(), 9);
    assert_eq!(pool.stats().queued, 1);
    // Nothing is left that can run: the serving thread ends.
    assert_eq!(
        no_serving_thread_within(before, SERVE_END),
        0,
        "a serving thread is left for a task held back for ever"
    );
    // Polled again by a plain executor, the held-back task's handle starts no thread.
    let mut held = held;
    assert!(
        on_thread_within("a peek", 5, move || {
            let pending = plain_poll_once(&mut held).is_none();
            (pending, held)
        })
        .0
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(serving_threads(), before);
    drop(pool);
}

/// Finding 279 (the tests' own count, RELIABILITY.md): a serving thread
/// seemed, rarely (one CI run, 4 of 60 runs just after, then none in about 1,500), to
/// outlive its re-run by about 5 s in `pin_the_serving_thread_runs_the_rerun_and_ends`.
/// It did not: one listing of `/proc/self/task` had missed it. Linux stops listing a
/// process's threads at one that exits while the listing is on it, and the plain
/// executor's thread, made before the serving thread it starts, exits just as the test
/// counts. `no_serving_thread_within` then left its wait on a count of 0 and returned a
/// second count, 1, made while the serving thread was still ending (about a millisecond
/// later it was gone). Here a thread made first exits while a thread named as a serving
/// thread, made after it, is counted, until it has gone; the count must never miss it.
///
/// Failing with 077e1d9's count (one listing): it missed the thread in about 1% of the
/// rounds, so in each run within a few hundred rounds.
#[test]
fn a_thread_exiting_while_the_serving_threads_are_counted_hides_none() {
    let _serial = serial();
    let before = serving_threads();
    let end = Instant::now() + Duration::from_secs(3);
    let mut rounds = 0;
    while rounds < 2_000 && Instant::now() < end {
        rounds += 1;
        // Made first: earlier in the process's list of threads than the one counted.
        let (leave, left) = std::sync::mpsc::channel::<()>();
        let exiting = std::thread::spawn(move || {
            let _ = left.recv();
        });
        let (named, is_named) = std::sync::mpsc::channel();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let st = Arc::clone(&stop);
        let counted = std::thread::Builder::new()
            .name("nb_aiopool-serve".into())
            .spawn(move || {
                named.send(()).unwrap();
                while !st.load(Ordering::SeqCst) {
                    std::thread::park();
                }
            })
            .unwrap();
        is_named.recv().unwrap();
        drop(leave);
        let mut seen = Vec::new();
        while !exiting.is_finished() {
            seen.push(serving_threads());
        }
        seen.push(serving_threads());
        exiting.join().unwrap();
        stop.store(true, Ordering::SeqCst);
        counted.thread().unpark();
        counted.join().unwrap();
        assert!(
            seen.iter().all(|&n| n == before + 1),
            "round {rounds}: counts {seen:?} while a thread made before it exited (one thread \
             named as a serving thread alive throughout, {before} before)"
        );
    }
    assert_eq!(no_serving_thread_within(before, SERVE_END), 0);
}

/// The same with the crate's serving thread: a plain executor's await returns (its thread
/// then exits) while the serving thread it started still serves another task; the count
/// sees that thread until it has gone, in every round.
#[test]
fn pin_the_serving_thread_is_counted_while_the_plain_executors_thread_exits() {
    let _serial = serial();
    let before = serving_threads();
    let end = Instant::now() + Duration::from_secs(3);
    let mut rounds = 0;
    while rounds < 150 && Instant::now() < end {
        rounds += 1;
        let pool = private_smart(2, 2).build();
        let rt = multi_thread_of(1);
        let (quick_runs, slow_runs) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (sr, rl) = (Arc::clone(&slow_runs), Arc::clone(&release));
        let (quick, slow) = rt.block_on(async {
            let quick = pool.submit(cut_off_once(&quick_runs, 1)).await.unwrap();
            // Its re-run keeps the serving thread until released (it waits on the serving
            // runtime, which runs the quick task's re-run meanwhile).
            let slow = pool
                .submit(move || {
                    let first = sr.fetch_add(1, Ordering::SeqCst) == 0;
                    let rl = Arc::clone(&rl);
                    async move {
                        if first {
                            std::future::pending::<()>().await;
                        }
                        while !rl.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        2u32
                    }
                })
                .await
                .unwrap();
            (quick, slow)
        });
        until("the first runs", || {
            quick_runs.load(Ordering::SeqCst) == 1 && slow_runs.load(Ordering::SeqCst) == 1
        });
        drop(rt);
        // Made before the serving thread it starts; it exits once the quick task's
        // re-run has returned, while the slow one's holds the serving thread.
        let waiter = std::thread::spawn(move || plain_block_on(quick));
        let mut seen = Vec::new();
        while !waiter.is_finished() {
            if slow_runs.load(Ordering::SeqCst) == 2 {
                seen.push(serving_threads());
            }
        }
        seen.push(serving_threads());
        assert_eq!(waiter.join().unwrap().unwrap(), 1);
        until("the slow re-run", || slow_runs.load(Ordering::SeqCst) == 2);
        seen.push(serving_threads());
        release.store(true, Ordering::SeqCst);
        let got = on_thread_within("the slow re-run", 5, move || plain_block_on(slow));
        assert_eq!(got.unwrap(), 2);
        assert!(
            seen.iter().all(|&n| n == before + 1),
            "round {rounds}: counts {seen:?} while the serving thread ran ({before} before)"
        );
        assert_eq!(
            no_serving_thread_within(before, SERVE_END),
            0,
            "round {rounds}"
        );
        drop(pool);
    }
}

/// Polls `fut` once outside any runtime (a plain executor's poll).
fn plain_poll_once<F: std::future::Future + Unpin>(fut: &mut F) -> Option<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::Pin::new(fut).poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// Finding B (RateWindow::clamp): a real-time runtime sharing a rate-limited pool with a
/// paused runtime whose clock is behind (frozen since it was built) by more than `per`:
/// each time the paused runtime reads the window (a submit of its own, here held back by
/// its key), the clamp moves the real runtime's starts back to the paused clock's "now",
/// from where they have left the real runtime's window. The real runtime then starts
/// another `count` at once, every time: not "up to `count` more" (README, finding 272),
/// but `count` more per reading of the clock behind, without bound.
///
/// Failing on 5416bec: 5 starts within 4 ms, where the README allowed at most 2 (before
/// 5416bec, 1 per window: the real runtime's starts were never moved).
#[test]
fn a_paused_clock_behind_does_not_lift_a_real_runtimes_rate_limit_again_and_again() {
    let _serial = serial();
    let per = Duration::from_millis(500);
    let pool = CommonAioPool::builder()
        .max_concurrency(10)
        .max_queue_size(10)
        .max_per_key(1)
        .rate_limit(1, per)
        .process_wide(false)
        .build();
    // Its clock stays at the time it was built (nothing auto-advances it: it is never
    // left idle with a timer of its own).
    let paused = paused_runtime();
    std::thread::sleep(per + Duration::from_millis(200));
    let real = multi_thread_of(1);
    let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let record = |starts: &Arc<Mutex<Vec<Instant>>>| {
        let starts = Arc::clone(starts);
        async move {
            starts.lock().unwrap().push(Instant::now());
        }
    };
    // A task of the real runtime holds key "k" (and spends the window's start).
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = Arc::clone(&gate);
    let s = Arc::clone(&starts);
    let holder = real
        .block_on(pool.submit_with(
            async move {
                s.lock().unwrap().push(Instant::now());
                let _ = g.acquire().await;
            },
            SubmitOptions::new().key("k"),
        ))
        .unwrap();
    until("the holder's start", || starts.lock().unwrap().len() == 1);
    let mut keep = Vec::new();
    for i in 0..4 {
        // The paused runtime reads the window: its task is held back by the key.
        keep.push(
            paused
                .block_on(pool.submit_with(async {}, SubmitOptions::new().key("k")))
                .unwrap(),
        );
        keep.push(real.block_on(pool.submit(record(&starts))).unwrap());
        // Until it has started (with the limit kept, 500 ms later), so that the next
        // reading of the paused clock finds its start in the window.
        until("a start", || starts.lock().unwrap().len() == i + 2);
    }
    gate.add_permits(100);
    let starts = starts.lock().unwrap().clone();
    // The most starts of the real runtime in any window of `per` (less a margin for the
    // delay between a start and its record).
    let window = per - Duration::from_millis(100);
    let most = (0..starts.len())
        .map(|i| {
            starts[i..]
                .iter()
                .take_while(|&&t| t.duration_since(starts[i]) < window)
                .count()
        })
        .max()
        .unwrap_or(0);
    eprintln!(
        "starts at {:?}",
        starts
            .iter()
            .map(|t| t.duration_since(starts[0]))
            .collect::<Vec<_>>()
    );
    drop(holder);
    drop(keep);
    drop(paused);
    drop(real);
    assert!(
        most <= 2,
        "{most} starts of the real-time runtime within {window:?} (rate_limit(1, {per:?})): \
         at {:?}",
        starts
            .iter()
            .map(|t| t.duration_since(starts[0]))
            .collect::<Vec<_>>()
    );
}

// ----- pins -------------------------------------------------------------------------------

/// With one clock the clamp changes nothing: plain threads and a runtime's tasks starting
/// tasks of a rate-limited pool at once never start more than `count` in a window.
#[test]
fn pin_one_clock_keeps_the_rate_limit() {
    let per = Duration::from_millis(300);
    let pool = CommonAioPool::builder()
        .max_concurrency(8)
        .max_queue_size(32)
        .rate_limit(2, per)
        .process_wide(false)
        .build();
    let rt = multi_thread_of(2);
    let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let job = |starts: &Arc<Mutex<Vec<Instant>>>| {
        let starts = Arc::clone(starts);
        async move {
            starts.lock().unwrap().push(Instant::now());
        }
    };
    // The pool's home first (plain threads' tasks run there).
    let mut handles = vec![rt.block_on(pool.submit(job(&starts))).unwrap()];
    let mut threads = Vec::new();
    for _ in 0..3 {
        let (p, s) = (pool.clone(), Arc::clone(&starts));
        threads.push(std::thread::spawn(move || {
            (0..2)
                .map(|_| p.blocking_submit(job(&s)).unwrap())
                .collect::<Vec<_>>()
        }));
    }
    handles.extend(rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(pool.submit(job(&starts)).await.unwrap());
        }
        v
    }));
    for t in threads {
        handles.extend(t.join().unwrap());
    }
    let n = handles.len();
    rt.block_on(async {
        within("the tasks", async {
            for h in handles {
                h.await.unwrap();
            }
        })
        .await
    });
    let mut starts = starts.lock().unwrap().clone();
    starts.sort();
    assert_eq!(starts.len(), n);
    // A start's record comes after its stamp: a margin of 30 ms.
    let window = per - Duration::from_millis(30);
    for i in 0..starts.len() {
        let inside = starts[i..]
            .iter()
            .take_while(|&&t| t.duration_since(starts[i]) < window)
            .count();
        assert!(inside <= 2, "{inside} starts within {window:?} at {i}");
    }
    // Ten tasks, two a window: at least four windows.
    assert!(starts[n - 1].duration_since(starts[0]) >= per * 4 - Duration::from_millis(30));
}

/// A plain executor's await runs the re-run on the serving thread, which ends once the
/// pool has nothing queued or running; a second round starts one again.
#[test]
fn pin_the_serving_thread_runs_the_rerun_and_ends() {
    let _serial = serial();
    let before = serving_threads();
    for round in 0..2 {
        let pool = private_smart(1, 0).build();
        let (h, names) = strand_naming(&pool);
        let got = on_thread_within("the await", 5, move || plain_block_on(h));
        assert_eq!(got.unwrap(), 5, "round {round}");
        assert_eq!(
            *names.lock().unwrap(),
            ["nb_aiopool-serve"],
            "round {round}"
        );
        assert_eq!(
            no_serving_thread_within(before, SERVE_END),
            0,
            "round {round}"
        );
        drop(pool);
    }
}

/// A `blocking_wait` serves a stranded pool itself (finding 215): no serving thread, the
/// re-run runs on the waiting thread.
#[test]
fn pin_blocking_wait_runs_the_rerun_on_its_own_thread() {
    let _serial = serial();
    let before = serving_threads();
    let pool = private_smart(1, 0).build();
    let (h, names) = strand_naming(&pool);
    let got = std::thread::Builder::new()
        .name("review-waiter".into())
        .spawn(move || h.blocking_wait())
        .unwrap();
    let got = on_thread_within("blocking_wait", 5, move || got.join().unwrap());
    assert_eq!(got.unwrap(), 5);
    assert_eq!(*names.lock().unwrap(), ["review-waiter"]);
    assert_eq!(serving_threads(), before);
}

/// A stranded pool whose queue a `cancel_all` empties is no longer stranded: a plain
/// executor's await then resolves at once, and no serving thread starts.
#[test]
fn pin_a_cancel_all_on_a_stranded_pool_starts_no_serving_thread() {
    let _serial = serial();
    let before = serving_threads();
    let pool = private_smart(1, 0).build();
    let (mut handles, counters) = strand(&pool, 1);
    let (h, runs) = (handles.remove(0), &counters[0]);
    let cancel = pool.cancel_all();
    on_thread_within("cancel_all", 5, move || plain_block_on(cancel));
    let got = on_thread_within("the await", 5, move || plain_block_on(h));
    assert!(
        got.as_ref().err().and_then(TaskError::cancel_reason) == Some(CancelReason::CancelAll),
        "{got:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(serving_threads(), before);
}

/// Several handles of one stranded pool awaited by plain executors at once: one serving
/// thread at a time (sampled), every re-run runs once, and the thread ends.
#[test]
fn pin_one_serving_thread_at_a_time() {
    let _serial = serial();
    let before = serving_threads();
    let pool = private_smart(4, 8).build();
    let (handles, counters) = strand(&pool, 4);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = Arc::clone(&stop);
    let sampler = std::thread::spawn(move || {
        let mut most = 0;
        while !st.load(Ordering::SeqCst) {
            most = most.max(serving_threads());
            std::thread::sleep(Duration::from_micros(200));
        }
        most
    });
    let waiters: Vec<_> = handles
        .into_iter()
        .map(|h| std::thread::spawn(move || plain_block_on(h)))
        .collect();
    let got = on_thread_within("the awaits", 10, move || {
        waiters
            .into_iter()
            .map(|w| w.join().unwrap().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(got, [0, 1, 2, 3]);
    assert_eq!(no_serving_thread_within(before, SERVE_END), 0);
    stop.store(true, Ordering::SeqCst);
    assert!(sampler.join().unwrap() <= before + 1);
    for c in &counters {
        assert_eq!(c.load(Ordering::SeqCst), 2);
    }
}

/// The pool dropped while its re-run runs on the serving thread: the re-run finishes,
/// its handle gets its value, and the thread then ends (dropping the engine there).
#[test]
fn pin_a_pool_dropped_while_served_finishes_its_rerun() {
    let _serial = serial();
    let before = serving_threads();
    let runs = Arc::new(AtomicUsize::new(0));
    let pool = private_smart(1, 0).build();
    let rt = multi_thread_of(1);
    let r = Arc::clone(&runs);
    let h = rt
        .block_on(pool.submit(move || {
            let first = r.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                3u32
            }
        }))
        .unwrap();
    until("the first run", || runs.load(Ordering::SeqCst) == 1);
    drop(rt);
    let waiter = std::thread::spawn(move || plain_block_on(h));
    until("the re-run", || runs.load(Ordering::SeqCst) == 2);
    drop(pool);
    let got = on_thread_within("the await", 5, move || waiter.join().unwrap());
    assert_eq!(got.unwrap(), 3);
    assert_eq!(no_serving_thread_within(before, SERVE_END), 0);
}

/// A stranded rate-limited pool (a window that reopens): the serving runtime has timers,
/// runs the re-runs at the window's pace, and ends.
#[test]
fn pin_a_stranded_rate_limited_pool_is_served_at_its_pace() {
    let _serial = serial();
    let before = serving_threads();
    let per = Duration::from_millis(150);
    let pool = private_smart(3, 3).rate_limit(1, per).build();
    let (handles, _) = strand(&pool, 3);
    let t0 = Instant::now();
    let got = on_thread_within("the awaits", 10, move || {
        handles
            .into_iter()
            .map(|h| plain_block_on(h).unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(got, [0, 1, 2]);
    // Three starts, one a window: the last one at least two windows after the first.
    assert!(t0.elapsed() >= per * 2 - Duration::from_millis(20));
    assert_eq!(no_serving_thread_within(before, SERVE_END), 0);
}

/// Groups and streams await their tasks through the handles' path: a SmartTaskGroup's
/// `join_next` and a `map_unordered` stream, polled by a plain executor once their task was
/// cut off with its runtime, have its re-run served too (the closing note of 273's review
/// listed them as untested).
#[test]
fn pin_a_group_and_a_stream_polled_by_a_plain_executor_are_served() {
    use futures_util::StreamExt;
    let _serial = serial();
    let before = serving_threads();

    let runs = Arc::new(AtomicUsize::new(0));
    let pool = private_smart(1, 1).build();
    let rt = multi_thread_of(1);
    let mut group = pool.group();
    rt.block_on(async {
        group.submit(cut_off_once(&runs, 3)).await.unwrap();
    });
    until("the group's first run", || runs.load(Ordering::SeqCst) == 1);
    drop(rt);
    let got = on_thread_within("a group's join_next", 5, move || {
        plain_block_on(async move { group.join_next().await })
    });
    assert_eq!(got.expect("a result").unwrap(), 3);
    assert_eq!(no_serving_thread_within(before, SERVE_END), 0);
    drop(pool);

    let runs = Arc::new(AtomicUsize::new(0));
    let pool = private_smart(1, 1).build();
    let rt = multi_thread_of(1);
    let r = Arc::clone(&runs);
    let mut results = Box::pin(
        pool.map_unordered(futures_util::stream::iter([0u32]), move |_| {
            cut_off_once(&r, 5)
        }),
    );
    rt.block_on(async {
        // Pulls the input and starts its job (whose first run never ends).
        std::future::poll_fn(|cx| {
            assert!(results.poll_next_unpin(cx).is_pending());
            std::task::Poll::Ready(())
        })
        .await;
    });
    until("the stream's first run", || {
        runs.load(Ordering::SeqCst) == 1
    });
    drop(rt);
    let got = on_thread_within("a stream's next", 5, move || {
        plain_block_on(async move { results.next().await })
    });
    assert_eq!(got.expect("a result").unwrap(), 5);
    assert_eq!(no_serving_thread_within(before, SERVE_END), 0);
    drop(pool);
}

/// A wait on a live runtime of a stranded pool offers that runtime: no serving thread
/// (the fallback of findings 329 and 336 is only for waits with no runtime to offer).
#[test]
fn pin_a_wait_on_a_live_runtime_of_a_stranded_pool_starts_no_serving_thread() {
    let _serial = serial();
    let before = serving_threads();
    let pool = private_smart(1, 0).build();
    let (mut handles, counters) = strand(&pool, 1);
    let (h, runs) = (handles.remove(0), Arc::clone(&counters[0]));
    let rt = multi_thread_of(1);
    rt.block_on(async { within("the wait", pool.wait()).await });
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "the re-run ran on the waiting runtime"
    );
    assert_eq!(
        serving_threads(),
        before,
        "no serving thread for a live runtime's wait"
    );
    assert!(rt.block_on(h).is_ok());
}
