//! Loom models of the two hand-written wake-up protocols of the engine (issue 6).
//!
//! **These check the protocols, not the crate's code.** `src/` uses `std` and `futures`
//! synchronisation directly (no `cfg(loom)` swaps), so loom cannot run the crate itself.
//! Each model below copies the protocol's steps, in the same order and with the same
//! atomic orderings, onto loom's types; if `src/` changes the protocol, the model must be
//! updated by hand. Each model has a deliberately broken twin that loom must reject, so a
//! passing model is not a vacuous one.
//!
//! Run: `RUSTFLAGS="--cfg nb_aiopool_loom" cargo test --release --test loom_protocols`
//! (loom is a dev-dependency only under that cfg, so normal builds never compile it; a
//! custom cfg name because `--cfg loom` would switch tokio into its own loom mode).
#![allow(unexpected_cfgs)]
#![cfg(nb_aiopool_loom)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use loom::future::AtomicWaker;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Mutex;
use loom::thread;

/// A waker that only raises a flag, so the harness can tell whether anybody woke the
/// polled side, and fail with an assertion (a parked `block_on` would make loom report a
/// deadlock by aborting, which `should_panic` cannot catch).
struct Flag(AtomicUsize);

impl Flag {
    /// Whether a wake came since the last call (a read-modify-write, so it sees the
    /// latest wake).
    fn take(&self) -> bool {
        self.0.swap(0, Ordering::SeqCst) > 0
    }
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Polls `poll` as a runtime would: again whenever it was woken. Up to three polls run
/// while `others` (the other threads of the model) are still running; then, once they
/// are joined and nobody is left to wake it, it must have finished or have been woken.
fn drive(mut poll: impl FnMut(&mut Context<'_>) -> Poll<()>, others: Vec<thread::JoinHandle<()>>) {
    let flag = Arc::new(Flag(AtomicUsize::new(1)));
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    let mut ready = false;
    let mut polls = 0;
    for _ in 0..3 {
        if !ready && flag.take() {
            polls += 1;
            ready = poll(&mut cx).is_ready();
        }
    }
    let before_join = polls;
    for t in others {
        t.join().unwrap();
    }
    while !ready && flag.take() {
        polls += 1;
        ready = poll(&mut cx).is_ready();
    }
    assert!(
        ready,
        "lost wake-up: pending after {polls} polls ({before_join} before the join), with \
         nobody left to wake it"
    );
}

// ----- AbortFlag (src/task.rs) ------------------------------------------------------------

/// `AbortFlag` as in src/task.rs: Acquire loads around the registration, Release store
/// then wake on the aborting side.
#[derive(Default)]
struct AbortFlag {
    aborted: AtomicBool,
    waker: AtomicWaker,
    /// The broken twin: checks only before registering.
    broken: bool,
}

impl AbortFlag {
    fn poll_aborted(&self, cx: &mut Context<'_>) -> bool {
        if self.aborted.load(Ordering::Acquire) {
            return true;
        }
        self.waker.register_by_ref(cx.waker());
        if self.broken {
            return false;
        }
        self.aborted.load(Ordering::Acquire)
    }

    fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// Executions explored by the last model run (printed with `--nocapture`).
static EXECUTIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn count_execution() {
    EXECUTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

fn report(model: &str) {
    let n = EXECUTIONS.swap(0, std::sync::atomic::Ordering::Relaxed);
    println!("{model}: {n} executions explored");
}

fn abort_model(broken: bool) {
    EXECUTIONS.store(0, std::sync::atomic::Ordering::Relaxed);
    loom::model(move || {
        count_execution();
        let flag = Arc::new(AbortFlag {
            broken,
            ..AbortFlag::default()
        });
        let f = flag.clone();
        let aborter = thread::spawn(move || f.abort());
        // The job's side: polled until it sees the abort.
        drive(
            |cx| {
                if flag.poll_aborted(cx) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            },
            vec![aborter],
        );
    });
}

#[test]
fn abort_flag_wakeup_is_never_lost() {
    abort_model(false);
    report("AbortFlag");
}

#[test]
#[should_panic(expected = "lost wake-up")]
fn abort_flag_model_rejects_check_before_register_only() {
    abort_model(true);
}

// ----- driver wake-up registration (src/engine.rs) ----------------------------------------

/// The engine state the protocol touches, as in src/engine.rs (one driver): the queue, the
/// slot count with reservations made at push, and the driver's registered waker.
struct State {
    queue: VecDeque<u32>,
    running: usize,
    reserved: usize,
    limit: usize,
    waker: Option<Waker>,
}

impl State {
    /// `State::reserve_slots`.
    fn reserve_slots(&mut self) -> bool {
        while self.running < self.limit && self.reserved < self.queue.len() {
            self.running += 1;
            self.reserved += 1;
        }
        self.reserved > 0
    }
}

struct Engine {
    state: Mutex<State>,
    /// The broken twin: the driver registers its waker after releasing the lock under
    /// which it found nothing to do.
    broken: bool,
}

impl Engine {
    /// `Engine::push`: queue, reserve, take the waker under the lock; wake outside it.
    fn push(&self, job: u32) {
        let wake = {
            let mut st = self.state.lock().unwrap();
            st.queue.push_back(job);
            if st.reserve_slots() {
                st.waker.take()
            } else {
                None
            }
        };
        if let Some(w) = wake {
            w.wake();
        }
    }
}

/// `Driver::poll`: account finished jobs, reserve, pull reserved jobs, register the waker
/// under the same lock; run the pulled jobs (they finish at once here) and go round again
/// while it pulled something.
fn driver_poll(
    engine: &Engine,
    finished: &mut usize,
    done: &mut usize,
    want: usize,
    cx: &mut Context<'_>,
) -> Poll<()> {
    loop {
        let mut started = Vec::new();
        {
            let mut st = engine.state.lock().unwrap();
            st.running -= *finished;
            *finished = 0;
            st.reserve_slots();
            while st.reserved > 0 {
                let job = st.queue.pop_front().expect("a reserved job is queued");
                st.reserved -= 1;
                started.push(job);
            }
            if !engine.broken {
                st.waker = Some(cx.waker().clone());
            }
        }
        if engine.broken {
            engine.state.lock().unwrap().waker = Some(cx.waker().clone());
        }
        if started.is_empty() {
            return if *done == want {
                Poll::Ready(())
            } else {
                Poll::Pending
            };
        }
        *finished += started.len();
        *done += started.len();
    }
}

fn driver_model(broken: bool) {
    EXECUTIONS.store(0, std::sync::atomic::Ordering::Relaxed);
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(move || {
        count_execution();
        let engine = Arc::new(Engine {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                running: 0,
                reserved: 0,
                limit: 1,
                waker: None,
            }),
            broken,
        });
        let pushers: Vec<_> = (0..2)
            .map(|i| {
                let e = engine.clone();
                thread::spawn(move || e.push(i))
            })
            .collect();
        let (mut finished, mut done) = (0, 0);
        drive(
            |cx| driver_poll(&engine, &mut finished, &mut done, 2, cx),
            pushers,
        );
        let st = engine.state.lock().unwrap();
        assert!(st.queue.is_empty() && st.reserved == 0);
        assert!(st.running <= st.limit);
    });
}

#[test]
fn driver_wakeup_is_never_lost() {
    driver_model(false);
    report("driver registration");
}

#[test]
#[should_panic(expected = "lost wake-up")]
fn driver_model_rejects_registering_outside_the_lock() {
    driver_model(true);
}
