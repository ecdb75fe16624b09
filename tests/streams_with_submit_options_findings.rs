//! Review of the map streams' `with_options` (2cb69f3): an input pulled while the pool is
//! full waits for room with its options, its job "staged" in the stream. These tests look
//! at what happens to a staged job when the stream is dropped or aborted, when the pool
//! shuts down, is resized or `cancel_all`s, when the stream's or the pool's runtime ends,
//! when the options or `f` panic, when the options are replaced, when the stream moves
//! into a job of its pool; at the shared priority line; at timeouts in paused time; at
//! the refusals reported to `tracing`. Deterministic: paused time where it helps, every
//! wait bounded (`within`, `on_thread_within`, `until`).

mod support;

#[cfg(feature = "tracing")]
mod collector;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use futures_util::task::noop_waker_ref;
use nb_aiopool::{NoQueueAioPool, SmartAioPool, SubmitErrorKind, SubmitOptions, TaskHandle};
use support::{
    common_builder, flow_pools, on_thread_within, panic_message, per_pool, until, within, Counted,
    FlowLimits, Gate, Pool,
};
use tokio::time::{sleep, Instant};

/// The three pools with one place each (one slot, no queue).
fn one_place_pools() -> Vec<Pool> {
    flow_pools(1, 0, 1, FlowLimits::default())
}

/// Fills `pool`'s one place with a job that waits for `gate`.
async fn fill(pool: &Pool, gate: &Gate) -> TaskHandle<()> {
    let g = gate.clone();
    pool.submit_with(SubmitOptions::new(), move || g.wait())
        .await
}

/// Polls a stream once with a waker that does nothing.
fn poll_once<S: futures_util::Stream + Unpin>(s: &mut S) -> Poll<Option<S::Item>> {
    s.poll_next_unpin(&mut Context::from_waker(noop_waker_ref()))
}

/// Lets the runtime run what is ready (a few rounds).
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// Counts the pool's places that a `try_submit` can take now (up to `most`), each taken
/// by a job that ends at once after the count; waits until they ended.
async fn free_places(pool: &Pool, most: usize) -> usize {
    let mut handles = Vec::new();
    for _ in 0..most {
        let taken = per_pool!(pool, |p| p.try_submit(async {}).ok(), |p| p
            .try_submit(|| async {})
            .ok());
        match taken {
            Some(h) => handles.push(h),
            None => break,
        }
    }
    let n = handles.len();
    for h in handles {
        within("a counting job", h).await.unwrap();
    }
    n
}

// ----- the staged job's ends -------------------------------------------------------------

/// A stream given options, pulled one input while the pool was full (staged); the pool is
/// then shut down. The user expects the stream to end, and `refused()` to say why (the
/// docs: "When the pool refuses a job (it was shut down, ...), the stream stops pulling,
/// yields the results of the jobs already accepted, and ends: check `refused`").
/// Pinned: the stream ends with `refused() == Closed`; the staged input's job is dropped
/// without running (that input is consumed, as `with_options`' docs say a staged input
/// is when the stream is dropped); nothing hangs, on the three pools.
#[tokio::test(start_paused = true)]
async fn a_shutdown_ends_a_stream_whose_input_waits_for_room() {
    for pool in one_place_pools() {
        let name = pool.name();
        let gate = Gate::new();
        let filler = fill(&pool, &gate).await;
        let (ran, dropped, pulled) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (r, d, p) = (ran.clone(), dropped.clone(), pulled.clone());
        let inputs = stream::iter(0..3usize).inspect(move |_| {
            p.fetch_add(1, SeqCst);
        });
        let mut s = pool
            .unordered(inputs, move |i| {
                let (ran, dropped) = (r.clone(), Counted(d.clone()));
                async move {
                    let _dropped = dropped;
                    ran.fetch_add(1, SeqCst);
                    i
                }
            })
            .with_options(|_| SubmitOptions::new().priority(2));
        assert!(poll_once(&mut s).is_pending(), "{name}: the pool is full");
        assert_eq!(pulled.load(SeqCst), 1, "{name}: one input is staged");
        let shutdown = per_pool!(&pool, |p| tokio::spawn(p.shutdown()), |p| tokio::spawn(
            p.shutdown()
        ));
        settle().await;
        assert!(
            within("the stream's end", s.next()).await.is_none(),
            "{name}: the stream yielded a result for an input the closed pool refused"
        );
        assert_eq!(s.refused(), Some(SubmitErrorKind::Closed), "{name}");
        assert_eq!(ran.load(SeqCst), 0, "{name}: the staged job ran");
        // (SmartAioPool's recipe, made by the wrapper of `support::Pool`, calls the
        // function at each run: nothing to drop before a run.)
        if name != "smart" {
            assert_eq!(
                dropped.load(SeqCst),
                1,
                "{name}: the staged job was not dropped"
            );
        }
        assert_eq!(
            pulled.load(SeqCst),
            1,
            "{name}: inputs pulled after the refusal"
        );
        gate.open();
        within("the filler", filler).await.unwrap();
        within("the shutdown", shutdown).await.unwrap();
    }
}

/// A stream given options with an input staged is dropped, or `abort_all` is called on
/// it. The user expects ("An input pulled while the pool was full, waiting for room with
/// its options when the stream is dropped (or `abort_all` is called), is dropped with its
/// job, which never entered the pool") the job dropped unrun, and the pool's room intact.
/// Pinned: the job is dropped, never runs; afterwards `stats()` shows nothing queued or
/// running and every place of the pool can be taken again (no place leaked nor given
/// twice), on the three pools, for both streams.
#[tokio::test(start_paused = true)]
async fn dropping_or_aborting_a_stream_with_a_staged_input_leaks_no_place() {
    for abort in [false, true] {
        for ordered in [false, true] {
            for pool in flow_pools(2, 1, 3, FlowLimits::default()) {
                let name = pool.name();
                let cap = 3;
                let gate = Gate::new();
                let mut fillers = Vec::new();
                for _ in 0..cap {
                    fillers.push(fill(&pool, &gate).await);
                }
                let (ran, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
                let (r, d) = (ran.clone(), dropped.clone());
                let f = move |i: usize| {
                    let (ran, dropped) = (r.clone(), Counted(d.clone()));
                    async move {
                        let _dropped = dropped;
                        ran.fetch_add(1, SeqCst);
                        i
                    }
                };
                let opts = |_: &usize| SubmitOptions::new().priority(1).key("k");
                let what = format!("{name}, ordered {ordered}, abort {abort}");
                if ordered {
                    let mut s = pool.ordered(stream::iter(0..4usize), f).with_options(opts);
                    assert!(poll_once(&mut s).is_pending(), "{what}");
                    if abort {
                        s.abort_all();
                        assert!(within("the aborted stream", s.next()).await.is_none());
                        assert_eq!(s.refused(), None, "{what}");
                    }
                } else {
                    let mut s = pool
                        .unordered(stream::iter(0..4usize), f)
                        .with_options(opts);
                    assert!(poll_once(&mut s).is_pending(), "{what}");
                    if abort {
                        s.abort_all();
                        assert!(within("the aborted stream", s.next()).await.is_none());
                        assert_eq!(s.refused(), None, "{what}");
                    }
                }
                if name != "smart" {
                    // (The recipe of `support::Pool` makes the future at each run.)
                    assert_eq!(
                        dropped.load(SeqCst),
                        1,
                        "{what}: the staged job was not dropped"
                    );
                }
                gate.open();
                for h in fillers {
                    within("a filler", h).await.unwrap();
                }
                pool.wait_within().await;
                settle().await;
                assert_eq!(ran.load(SeqCst), 0, "{what}: the staged job ran");
                let st = pool.stats();
                assert_eq!((st.queued, st.running), (0, 0), "{what}: {st}");
                assert_eq!(
                    free_places(&pool, cap + 1).await,
                    cap,
                    "{what}: the pool's room is not what it was before the stream"
                );
            }
        }
    }
}

/// A stream given options has an input staged; `cancel_all` is called, then the pool
/// gets room. `cancel_all` "Cancels every job queued or running now"; a staged job is
/// neither (as a `submit_with` still waiting for room is not).
/// Pinned: the filler is cancelled; the staged input's job is then pushed and runs; the
/// stream yields every input's result and ends unrefused, on the three pools.
#[tokio::test(start_paused = true)]
async fn cancel_all_leaves_a_staged_input_waiting_like_a_submit_with() {
    for pool in one_place_pools() {
        let name = pool.name();
        let gate = Gate::new();
        let filler = fill(&pool, &gate).await;
        let mut s = pool
            .unordered(stream::iter(0..3usize), |i| async move { i })
            .with_options(|_| SubmitOptions::new().timeout(Duration::from_secs(5)));
        assert!(poll_once(&mut s).is_pending(), "{name}");
        pool.cancel_all_now().await;
        assert!(within("the filler", filler)
            .await
            .unwrap_err()
            .is_cancelled());
        let mut got: Vec<usize> = Vec::new();
        while let Some(r) = within("the stream", s.next()).await {
            got.push(r.unwrap_or_else(|e| panic!("{name}: a job of the stream failed: {e}")));
        }
        got.sort();
        assert_eq!(got, [0, 1, 2], "{name}: inputs lost after cancel_all");
        assert_eq!(s.refused(), None, "{name}");
    }
}

/// A stream given options has an input staged; the pool grows (`set_max_concurrency`).
/// The user expects the grow to grant the room the stream waits for (the stream docs: "a
/// grow grants room to a waiting stream").
/// Pinned: the staged input's job starts at once (before the filler ends), on the three
/// pools.
#[tokio::test(start_paused = true)]
async fn a_grow_gives_room_to_a_staged_input() {
    for pool in one_place_pools() {
        let name = pool.name();
        let gate = Gate::new();
        let filler = fill(&pool, &gate).await;
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let mut s = pool
            .unordered(stream::iter(0..1usize), move |i| {
                let ran = r.clone();
                async move {
                    ran.fetch_add(1, SeqCst);
                    i
                }
            })
            .with_options(|_| SubmitOptions::new().priority(-3));
        assert!(poll_once(&mut s).is_pending(), "{name}");
        pool.set_max_concurrency(2);
        let first = within("the staged input's result", s.next()).await;
        assert_eq!(first.map(|r| r.unwrap()), Some(0), "{name}");
        assert_eq!(ran.load(SeqCst), 1, "{name}");
        assert!(within("the end", s.next()).await.is_none());
        gate.open();
        within("the filler", filler).await.unwrap();
    }
}

// ----- panics ------------------------------------------------------------------------------

/// The options closure (or `f`) panics on an input; the stream is polled again. The docs:
/// "A panic in `options` propagates out of `poll_next`, as one in `f` does ...; the input
/// is lost, no place is", and for `f`: "The place taken for that input is not lost: the
/// stream gives it back when dropped (or uses it for the next input if polled again)".
/// Pinned, with the pool full (the input staged) and with room (a place held): the panic
/// comes out of `poll_next`, the next poll goes on with the next inputs, every other
/// input's result comes out, and afterwards every place of the pool can be taken, on the
/// three pools.
#[tokio::test(start_paused = true)]
async fn a_panic_in_options_or_f_loses_that_input_only() {
    support::hide_panics(&["options boom", "f boom"]);
    for in_f in [false, true] {
        for full in [true, false] {
            // Full: one place, taken; else four free places (the input holds one).
            let (pools, places) = if full {
                (one_place_pools(), 1)
            } else {
                (flow_pools(4, 0, 4, FlowLimits::default()), 4)
            };
            for pool in pools {
                let name = pool.name();
                if in_f && name == "smart" {
                    // `support::Pool`'s recipe calls the function at each run, in the
                    // pool's job: not a panic of the stream's `f`.
                    continue;
                }
                let what = format!("{name}, panic in f {in_f}, pool full {full}");
                let gate = Gate::new();
                let filler = if full {
                    Some(fill(&pool, &gate).await)
                } else {
                    None
                };
                let boom_at = if full { 0 } else { 1 };
                let mut s = pool
                    .unordered(stream::iter(0..4usize), move |i| {
                        if in_f && i == boom_at {
                            panic!("f boom");
                        }
                        async move { i }
                    })
                    .with_options(move |i| {
                        if !in_f && *i == boom_at {
                            panic!("options boom");
                        }
                        SubmitOptions::new().priority(1)
                    });
                let mut got = Vec::new();
                let mut panics = 0;
                for round in 0.. {
                    assert!(
                        round < 10_000,
                        "{what}: the stream never ended (got {got:?})"
                    );
                    let polled = catch_unwind(AssertUnwindSafe(|| poll_once(&mut s)));
                    match polled {
                        Err(p) => {
                            let msg = panic_message(&*p);
                            assert!(msg.ends_with("boom"), "{what}: another panic: {msg}");
                            panics += 1;
                            gate.open();
                        }
                        Ok(Poll::Ready(Some(r))) => got.push(r.unwrap()),
                        Ok(Poll::Ready(None)) => break,
                        Ok(Poll::Pending) => {
                            assert!(panics < 2, "{what}: more than one panic");
                            within("the pool's jobs", sleep(Duration::from_millis(1))).await;
                        }
                    }
                }
                got.sort();
                let mut want = vec![0, 1, 2, 3];
                want.remove(boom_at);
                assert_eq!(panics, 1, "{what}");
                assert_eq!(
                    got, want,
                    "{what}: results lost besides the panicking input"
                );
                assert_eq!(s.refused(), None, "{what}");
                drop(s);
                if let Some(h) = filler {
                    within("the filler", h).await.unwrap();
                }
                pool.wait_within().await;
                assert_eq!(
                    free_places(&pool, places + 1).await,
                    places,
                    "{what}: a place was lost"
                );
            }
        }
    }
}

/// A stream given options (a timeout) polled on a tokio runtime built without time, its
/// pool full; the user catches the panic and polls again. `submit_with` with a timeout
/// panics there with the crate's message ("its timer needs a runtime with time enabled");
/// the stream's docs say of a panic that polled again it goes on ("uses it for the next
/// input if polled again"), so the user expects the same panic from the crate, with the
/// same message, again (or the stream to go on), never a panic from inside the library,
/// and the message to name the call they made (`with_options`), not `submit_with`.
///
/// Before the fix: the second poll panicked with "`async fn` resumed after panicking"
/// (the wait for room, an `async` block, had panicked at its first poll), and the first
/// message said "nb_aiopool: submit_with(.., SubmitOptions::timeout(..)) had to wait for
/// room on a tokio runtime without time enabled; ... (submit without a timeout works
/// there)".
#[test]
fn a_timed_input_on_a_runtime_without_time_panics_alike_when_polled_again() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = common_builder(1, 0).build();
        let gate = Gate::new();
        let filler = pool.submit(gate.wait()).await.unwrap();
        let mut s = pool
            .map_unordered(stream::iter(0..3usize), |i| async move { i })
            .with_options(|_| SubmitOptions::new().timeout(Duration::from_secs(1)));
        let mut messages = Vec::new();
        for _ in 0..2 {
            let polled = catch_unwind(AssertUnwindSafe(|| poll_once(&mut s)));
            match polled {
                Err(p) => messages.push(panic_message(&*p)),
                Ok(p) => panic!("a timed wait on a runtime without time did not panic: {p:?}"),
            }
        }
        for m in &messages {
            assert!(
                m.starts_with("nb_aiopool:")
                    && m.contains("without time enabled")
                    && m.contains("with_options")
                    && !m.contains("submit_with("),
                "polled again, the stream panicked from inside the library: {m:?} \
                 (all messages: {messages:?})"
            );
        }
        drop(s);
        gate.open();
        filler.await.unwrap();
    });
}

// ----- options replaced, priorities, order ------------------------------------------------

/// `with_options` is called again while an input is staged (the stream polled already).
/// The docs: "Called on a stream already polled, it applies to the inputs pulled from
/// then on; those pulled before keep the options they were submitted with. Called again,
/// it replaces the function."
/// Pinned: the staged input keeps its first priority (7, ahead of a `submit_with` of 0);
/// the next input takes the new one (-7, behind a `submit_with` of -3), on the three
/// pools.
#[tokio::test(start_paused = true)]
async fn options_replaced_while_an_input_is_staged() {
    for pool in one_place_pools() {
        let name = pool.name();
        let gate = Gate::new();
        let filler = fill(&pool, &gate).await;
        let order = Arc::new(Mutex::new(Vec::<String>::new()));
        let o = order.clone();
        let s = pool
            .unordered(stream::iter(0..2usize), move |i| {
                let order = o.clone();
                async move {
                    order.lock().unwrap().push(format!("s{i}"));
                    i
                }
            })
            .with_options(|_| SubmitOptions::new().priority(7));
        let mut s = s;
        assert!(poll_once(&mut s).is_pending(), "{name}");
        let mut s = s.with_options(|_| SubmitOptions::new().priority(-7));
        let mut others = Vec::new();
        for (tag, prio) in [("x0", 0), ("y-3", -3)] {
            let (p, o) = (pool.clone(), order.clone());
            others.push(tokio::spawn(async move {
                let h = p
                    .submit_with(SubmitOptions::new().priority(prio), move || {
                        let o = o.clone();
                        async move {
                            o.lock().unwrap().push(tag.to_string());
                        }
                    })
                    .await;
                h.await.unwrap();
            }));
            settle().await;
        }
        let reader = tokio::spawn(async move {
            let mut n = 0;
            while let Some(r) = s.next().await {
                r.unwrap();
                n += 1;
            }
            n
        });
        settle().await;
        gate.open();
        within("the filler", filler).await.unwrap();
        assert_eq!(within("the stream", reader).await.unwrap(), 2, "{name}");
        for o in others {
            within("the other submits", o).await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["s0", "x0", "y-3", "s1"],
            "{name}: the staged input did not keep its options, or the next did not take the new ones"
        );
    }
}

/// `fut`, with `flag` set once a poll of it returned pending: for a submit into a full
/// pool, the poll that put it in line for room (the first pending one).
async fn flag_pending<F: std::future::Future>(flag: &AtomicBool, fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        let polled = fut.as_mut().poll(cx);
        if polled.is_pending() {
            flag.store(true, SeqCst);
        }
        polled
    })
    .await
}

/// The calling thread's id (Linux: the last part of `/proc/thread-self`,
/// `<pid>/task/<tid>`).
fn this_threads_id() -> u32 {
    let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    link.file_name().unwrap().to_str().unwrap().parse().unwrap()
}

/// The state of thread `tid` of this process (`/proc/self/task/<tid>/stat`): `'S'` while
/// it sleeps (parked, or waiting for a lock), `'R'` while it runs or is ready to.
fn thread_state(tid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The state follows the thread's name, in parentheses (a name may hold any byte).
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// A stream's staged wait (priority 5, then -1 for its second input), a `submit_with`
/// (4) and a `blocking_submit_with` thread (3) wait for one place. The docs (`priority`):
/// "Priorities order ... the submitters waiting for room in a full pool: a higher one
/// gets the next room first", and `submit_with`, `blocking_submit_with` and "streams
/// given options" all wait with a priority.
/// Pinned: they start in the order 5, 4, 3, -1 (CommonAioPool and NoQueueAioPool).
#[test]
fn the_staged_wait_shares_the_line_with_submit_with_and_blocking_submit_with() {
    for no_queue in [false, true] {
        let rt = support::multi_thread_of(2);
        let order = Arc::new(Mutex::new(Vec::<String>::new()));
        let gate = Gate::new();
        let name = if no_queue { "no_queue" } else { "common" };
        let pool = if no_queue {
            Pool::NoQueue(
                NoQueueAioPool::builder()
                    .max_concurrency(1)
                    .process_wide(false)
                    .build(),
            )
        } else {
            Pool::Common(common_builder(1, 0).build())
        };
        let filler = rt.block_on(fill(&pool, &gate));
        let rec = |tag: &'static str| {
            let o = order.clone();
            async move {
                o.lock().unwrap().push(tag.to_string());
            }
        };
        // The stream, on the runtime.
        let o = order.clone();
        let mut s = pool
            .unordered(stream::iter(0..2usize), move |i| {
                let o = o.clone();
                async move {
                    o.lock().unwrap().push(format!("s{i}"));
                }
            })
            .with_options(|i| SubmitOptions::new().priority(if *i == 0 { 5 } else { -1 }));
        assert!(poll_once(&mut s).is_pending(), "{name}");
        let reader_polled = Arc::new(AtomicBool::new(false));
        let polled = reader_polled.clone();
        let reader = rt.spawn(async move {
            while let Some(r) = flag_pending(&polled, s.next()).await {
                r.unwrap();
            }
        });
        // A submit_with of 4, on the runtime.
        let x4_in_line = Arc::new(AtomicBool::new(false));
        let (p, job, in_line) = (pool.clone(), rec("x4"), x4_in_line.clone());
        let submitted = rt.spawn(async move {
            let h = per_pool!(
                &p,
                |q| flag_pending(
                    &in_line,
                    q.submit_with(job, SubmitOptions::new().priority(4))
                )
                .await
                .unwrap(),
                |_q| unreachable!()
            );
            h.await.unwrap();
        });
        // Until the submit_with is in line (its first pending poll put it there; the
        // stream's staged input is, since `poll_once`), and the reader has polled the
        // stream: on the runtime, nothing takes the pool's lock from then on until the
        // room comes (see below).
        until(
            "the submit_with in line, the stream polled on the runtime",
            || x4_in_line.load(SeqCst) && reader_polled.load(SeqCst),
        );
        // A blocking_submit_with of 3, on a thread of its own, which says its id first.
        let b3_tid = Arc::new(AtomicU32::new(0));
        let (p, job, tid) = (pool.clone(), rec("b3"), b3_tid.clone());
        let blocking = std::thread::spawn(move || {
            tid.store(this_threads_id(), SeqCst);
            let h = per_pool!(
                &p,
                |q| q
                    .blocking_submit_with(job, SubmitOptions::new().priority(3))
                    .unwrap(),
                |_q| unreachable!()
            );
            h.blocking_wait().unwrap();
        });
        // Until the thread sleeps inside the call, parked in line for room (the pool
        // counts no waiters: Linux's /proc tells the thread's state). Not a fixed time: on
        // a loaded machine a new thread may not run for 100 ms and more, and one that came
        // in line after the filler ended would lose the room to `s1`. Before it parks, the
        // call sleeps on nothing else: the pool's lock, the one thing it could wait for,
        // is free (the waiters above are all in line, the filler waits for the gate). Seen
        // asleep twice, 10 ms apart: a moment's wait for a lock of the allocator's is not
        // taken for the park.
        let asleep = || {
            let tid = b3_tid.load(SeqCst);
            tid != 0 && thread_state(tid) == Some('S')
        };
        until("the blocking_submit_with parked in line", || {
            asleep() && {
                std::thread::sleep(Duration::from_millis(10));
                asleep()
            }
        });
        assert!(
            order.lock().unwrap().is_empty(),
            "{name}: something started before the room"
        );
        gate.open();
        rt.block_on(async {
            within("the filler", filler).await.unwrap();
            within("the stream", reader).await.unwrap();
            within("the submit_with", submitted).await.unwrap();
        });
        on_thread_within("the blocking_submit_with", 10, move || {
            blocking.join().unwrap()
        });
        assert_eq!(
            *order.lock().unwrap(),
            ["s0", "x4", "b3", "s1"],
            "{name}: the waiters did not get the room in the order of their priorities"
        );
    }
}

/// An ordered stream given options (alternating priorities) shares a pool of two places
/// with a plain stream, so that most of its inputs are staged; its jobs end in reverse
/// order. The docs: "the results still come out in input order, whatever order the
/// options make the jobs run in".
/// Pinned: results in input order, all of them, on the three pools; the pool ends empty.
#[tokio::test(start_paused = true)]
async fn an_ordered_stream_with_staged_inputs_keeps_input_order() {
    for pool in flow_pools(2, 0, 2, FlowLimits::default()) {
        let name = pool.name();
        let ordered = pool
            .ordered(stream::iter(0..12usize), |i| async move {
                sleep(Duration::from_millis(5 * (12 - i as u64))).await;
                i
            })
            .with_options(|i| SubmitOptions::new().priority(if i % 2 == 0 { 1 } else { -1 }));
        let plain = pool.unordered(stream::iter(0..12usize), |i| async move {
            sleep(Duration::from_millis(3)).await;
            i
        });
        let (a, b) = within(
            "both streams",
            futures_util::future::join(ordered.collect::<Vec<_>>(), plain.collect::<Vec<_>>()),
        )
        .await;
        let a: Vec<usize> = a.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            a,
            (0..12).collect::<Vec<_>>(),
            "{name}: the ordered stream's order"
        );
        assert_eq!(b.len(), 12, "{name}");
        let st = pool.stats();
        assert_eq!((st.queued, st.running), (0, 0), "{name}: {st}");
    }
}

// ----- timeouts ----------------------------------------------------------------------------

/// Twenty streams given options wait for room in one full pool (paused time): half with a
/// timeout of 50 ms, half without. The docs: "TimedOut when its wait for room outlasted
/// its timeout ... the stream stops pulling, yields the results of the jobs already
/// accepted and ends".
/// Pinned: the timed ones end at 50 ms exactly, refused `TimedOut`, none of their jobs
/// run; the others, once the pool has room, each run all their inputs; the pool's room is
/// whole afterwards, on the three pools.
#[tokio::test(start_paused = true)]
async fn many_timed_streams_in_paused_time() {
    for pool in flow_pools(2, 1, 3, FlowLimits::default()) {
        let name = pool.name();
        let gate = Gate::new();
        let mut fillers = Vec::new();
        for _ in 0..3 {
            fillers.push(fill(&pool, &gate).await);
        }
        let ran = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let mut readers = Vec::new();
        for k in 0..20usize {
            let timed = k % 2 == 0;
            let r = ran.clone();
            let mut s = pool
                .unordered(stream::iter(0..3usize), move |i| {
                    let ran = r.clone();
                    async move {
                        ran.fetch_add(1, SeqCst);
                        i
                    }
                })
                .with_options(move |_| {
                    let o = SubmitOptions::new().priority(k as i32 % 3);
                    if timed {
                        o.timeout(Duration::from_millis(50))
                    } else {
                        o
                    }
                });
            readers.push(tokio::spawn(async move {
                let mut n = 0;
                while let Some(r) = s.next().await {
                    r.unwrap();
                    n += 1;
                }
                (timed, n, s.refused(), start.elapsed())
            }));
        }
        sleep(Duration::from_millis(100)).await;
        assert_eq!(ran.load(SeqCst), 0, "{name}: a job ran in a full pool");
        gate.open();
        for h in fillers {
            within("a filler", h).await.unwrap();
        }
        for r in readers {
            let (timed, n, refused, at) = within("a stream", r).await.unwrap();
            if timed {
                assert_eq!(
                    (n, refused, at),
                    (
                        0,
                        Some(SubmitErrorKind::TimedOut),
                        Duration::from_millis(50)
                    ),
                    "{name}: a timed stream"
                );
            } else {
                assert_eq!(
                    (n, refused),
                    (3, None),
                    "{name}: a stream without a timeout"
                );
            }
        }
        assert_eq!(ran.load(SeqCst), 30, "{name}");
        pool.wait_within().await;
        assert_eq!(
            free_places(&pool, 4).await,
            3,
            "{name}: the pool's room after the streams"
        );
    }
}

// ----- moved into a job, runtimes ----------------------------------------------------------

/// A stream given options, polled outside its pool with an input staged, is moved into a
/// job of that pool and read there. The docs: "a stream that began waiting for room
/// outside the pool and is then polled inside one of its jobs ... its wait is dropped and
/// asked for again, checked"; "the stream instead waits for one of its own jobs to end
/// ... and tries again; only when it has no job of its own in the pool is the input
/// refused".
/// Pinned: with a job of its own in the pool, the staged input waits for it and all
/// results come out; with none, the stream ends refused `WouldDeadlock` (the staged input
/// consumed), without hanging; the pool's room is whole afterwards (CommonAioPool).
#[tokio::test(start_paused = true)]
async fn a_stream_with_a_staged_input_moved_into_a_job_of_its_pool() {
    for own_job in [false, true] {
        let cap = if own_job { 3 } else { 2 };
        let pool = common_builder(cap, 0).build();
        let gate = Gate::new();
        let own_gate = Gate::new();
        let filler = pool.submit(gate.wait()).await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<
            nb_aiopool::MapUnordered<stream::Iter<std::ops::Range<usize>>, usize>,
        >();
        let reader = pool
            .submit(async move {
                let mut s = rx.await.unwrap();
                let mut got = Vec::new();
                while let Some(r) = s.next().await {
                    got.push(r.unwrap());
                }
                (got, s.refused())
            })
            .await
            .unwrap();
        settle().await;
        let og = own_gate.clone();
        let mut s = pool
            .map_unordered(stream::iter(0..3usize), move |i| {
                let og = og.clone();
                async move {
                    if i == 0 {
                        og.wait().await;
                    }
                    i
                }
            })
            .with_options(|_| SubmitOptions::new().priority(1));
        assert!(poll_once(&mut s).is_pending());
        assert_eq!(pool.stats().running, cap, "the pool is full");
        tx.send(s).ok().unwrap();
        settle().await;
        own_gate.open();
        let (got, refused) = within("the stream read in the job", reader).await.unwrap();
        if own_job {
            let mut got = got;
            got.sort();
            assert_eq!(
                (got, refused),
                (vec![0, 1, 2], None),
                "with a job of its own"
            );
        } else {
            assert_eq!(
                (got, refused),
                (vec![], Some(SubmitErrorKind::WouldDeadlock)),
                "with no job of its own"
            );
        }
        gate.open();
        within("the filler", filler).await.unwrap();
        pool.wait().await;
        let st = pool.stats();
        assert_eq!((st.queued, st.running), (0, 0), "{st}");
    }
}

/// A SmartAioPool stream given options, read by a task on runtime B, has an input staged
/// (the pool full with a job on the test's runtime); runtime B ends. The stream is
/// dropped with its task: "An input pulled while the pool was full, waiting for room with
/// its options when the stream is dropped ..., is dropped with its job, which never
/// entered the pool."
/// Pinned: the staged recipe never runs, is dropped; the pool's room is whole afterwards.
#[tokio::test(start_paused = true)]
async fn the_runtime_reading_a_stream_with_a_staged_recipe_ends() {
    let pool = SmartAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(0)
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let gate = Gate::new();
    let g = gate.clone();
    let filler = pool.submit(move || g.wait()).await.unwrap();
    let (ran, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (r, d) = (ran.clone(), dropped.clone());
    let s = pool
        .map_unordered(stream::iter(0..3usize), move |i| {
            let (r, d) = (r.clone(), Counted(d.clone()));
            move || {
                r.fetch_add(1, SeqCst);
                let _ = &d;
                async move { i }
            }
        })
        .with_options(|_| SubmitOptions::new().timeout(Duration::from_secs(60)));
    let p = pool.clone();
    on_thread_within("runtime B", 10, move || {
        let rt_b = support::multi_thread_of(1);
        let (tx, rx) = std::sync::mpsc::channel();
        rt_b.spawn(async move {
            let mut s = s;
            let _ = tx.send(poll_once(&mut s).is_pending());
            let _ = s.next().await;
            unreachable!("the pool stays full while runtime B lives");
        });
        assert!(rx.recv().unwrap(), "the pool is full");
        let _ = p; // keeps the pool
        drop(rt_b);
    });
    until("the staged recipe's drop", || dropped.load(SeqCst) == 1);
    gate.open();
    within("the filler", filler).await.unwrap();
    pool.wait().await;
    assert_eq!(ran.load(SeqCst), 0, "the staged recipe ran");
    assert_eq!(
        free_places(&Pool::Smart(pool.clone()), 2).await,
        1,
        "the pool's room after the stream's runtime ended"
    );
}

/// A SmartAioPool stream given options with a timeout, read on the test's runtime, has an
/// input staged; the pool's one job runs on runtime A, which ends: the job's recipe is
/// queued again with no live runtime (the pool is stranded). The docs
/// (`admit_waiting`, the submits' wait for room): "If the pool becomes stranded
/// meanwhile, the submit's runtime is offered"; a stream without a timeout gets its room
/// so. The user expects the same with a timeout: the re-run runs on the stream's runtime,
/// ends, and the staged input gets its room well before its 30 s timeout.
#[test]
fn a_timed_staged_input_offers_its_runtime_to_a_stranded_pool() {
    for timed in [false, true] {
        let runs = Arc::new(AtomicUsize::new(0));
        let (pool, rt_a, first) = support::full_smart_pool_on_a_runtime(&runs);
        let rt = support::current_thread();
        let s = pool
            .map_unordered(stream::iter(0..2usize), |i| move || async move { i })
            .with_options(move |_| {
                let o = SubmitOptions::new().priority(1);
                if timed {
                    o.timeout(Duration::from_secs(30))
                } else {
                    o
                }
            });
        let (got, refused, took) = on_thread_within("the stream", 60, move || {
            rt.block_on(async move {
                let mut s = s;
                assert!(poll_once(&mut s).is_pending(), "the pool is full");
                let started = std::time::Instant::now();
                let reader = tokio::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(r) = s.next().await {
                        got.push(r.unwrap());
                    }
                    (got, s.refused())
                });
                tokio::task::spawn_blocking(move || {
                    std::thread::spawn(move || drop(rt_a)).join().unwrap()
                })
                .await
                .unwrap();
                let (got, refused) = reader.await.unwrap();
                (got, refused, started.elapsed())
            })
        });
        assert_eq!(
            (got.len(), refused),
            (2, None),
            "timed {timed}: the staged input did not get the room the stranded pool's re-run \
             freed on the stream's runtime (it waited {took:?})"
        );
        assert!(
            took < Duration::from_secs(10),
            "timed {timed}: took {took:?}"
        );
        let rt2 = support::current_thread();
        assert_eq!(
            rt2.block_on(async { within("the cut-off task", first).await.unwrap() }),
            9
        );
        drop(pool);
    }
}

// ----- tracing -----------------------------------------------------------------------------

/// With the `tracing` feature, a stream given options is refused `TooHeavy` (with room,
/// and with the pool full), `TimedOut`, and `Closed` while an input is staged. The docs:
/// "The refusal is counted by the observability features as `submit_with`'s is": one
/// "submit rejected" event per refusal, with its reason.
/// Pinned: exactly one event per refusal, in order: too_heavy, too_heavy, timed_out,
/// closed.
#[cfg(feature = "tracing")]
#[test]
fn each_refusal_of_a_stream_with_options_is_reported_once() {
    use collector::Collector;
    use nb_aiopool::CommonAioPool;
    let log = Collector::default();
    tracing::subscriber::with_default(log.clone(), || {
        support::current_thread().block_on(async {
            let pool = CommonAioPool::builder()
                .max_concurrency(1)
                .max_queue_size(0)
                .weight_capacity(2)
                .name("sor")
                .process_wide(false)
                .build();
            let heavy = |_: &usize| SubmitOptions::new().weight(5);
            // With room.
            let mut s = pool
                .map_unordered(stream::iter(0..2usize), |i| async move { i })
                .with_options(heavy);
            assert!(within("a", s.next()).await.is_none());
            assert_eq!(s.refused(), Some(SubmitErrorKind::TooHeavy));
            // Full.
            let gate = Gate::new();
            let filler = pool.submit(gate.wait()).await.unwrap();
            let mut s = pool
                .map_unordered(stream::iter(0..2usize), |i| async move { i })
                .with_options(heavy);
            assert!(within("b", s.next()).await.is_none());
            assert_eq!(s.refused(), Some(SubmitErrorKind::TooHeavy));
            let mut s = pool
                .map_unordered(stream::iter(0..2usize), |i| async move { i })
                .with_options(|_| SubmitOptions::new().timeout(Duration::from_millis(20)));
            assert!(within("c", s.next()).await.is_none());
            assert_eq!(s.refused(), Some(SubmitErrorKind::TimedOut));
            let mut s = pool
                .map_unordered(stream::iter(0..2usize), |i| async move { i })
                .with_options(|_| SubmitOptions::new());
            assert!(poll_once(&mut s).is_pending());
            let shutdown = tokio::spawn(pool.shutdown());
            assert!(within("d", s.next()).await.is_none());
            assert_eq!(s.refused(), Some(SubmitErrorKind::Closed));
            gate.open();
            filler.await.unwrap();
            shutdown.await.unwrap();
        });
    });
    let reasons: Vec<String> = log
        .events_with("submit rejected")
        .iter()
        .map(|e| e.fields.get("reason").unwrap().to_string())
        .collect();
    assert_eq!(
        reasons,
        ["too_heavy", "too_heavy", "timed_out", "closed"],
        "the refusals reported to tracing"
    );
}
