//! The pool wakes wakers outside its lock: a waker that calls back into the pool when
//! woken (an executor that polls at once, inside `wake`, as some do) is not blocked by the
//! pool, for a handle, a submit waiting for room and a `wait()`. Each waker below asks the
//! pool for its stats and submits a task, from another thread, and waits up to 10 s for
//! the answer: a wake-up made under the pool's lock would hold that up (and, called on the
//! same thread, deadlock).

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use nb_aiopool::{CommonAioPool, NoQueueAioPool, PoolStats};
use support::{within, Gate};

/// What a [`CallsBack`] waker calls: the pool's stats and a `try_submit`.
type Call = Arc<dyn Fn() + Send + Sync>;

/// A waker that, when woken, runs its call on another thread and waits for it.
struct CallsBack {
    call: Call,
    answered: AtomicUsize,
    blocked: AtomicUsize,
}

impl CallsBack {
    fn new(call: Call) -> Arc<Self> {
        Arc::new(CallsBack {
            call,
            answered: AtomicUsize::new(0),
            blocked: AtomicUsize::new(0),
        })
    }

    /// Polls `fut` once with this waker.
    fn poll<F: Future + Unpin>(self: &Arc<Self>, fut: &mut F) -> bool {
        let waker = Waker::from(Arc::clone(self));
        Pin::new(fut)
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    }

    /// Waits until the waker was woken (and its call answered or timed out).
    async fn woken(&self) {
        within("the wake-up", async {
            while self.answered.load(Ordering::SeqCst) + self.blocked.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        assert_eq!(
            self.blocked.load(Ordering::SeqCst),
            0,
            "a call into the pool from the waker was held up for 10 s"
        );
    }
}

impl Wake for CallsBack {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let (tx, rx) = mpsc::channel();
        let call = Arc::clone(&self.call);
        std::thread::spawn(move || {
            call();
            let _ = tx.send(());
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(()) => self.answered.fetch_add(1, Ordering::SeqCst),
            Err(_) => self.blocked.fetch_add(1, Ordering::SeqCst),
        };
    }
}

fn calls_common(pool: &CommonAioPool) -> Call {
    let pool = pool.clone();
    Arc::new(move || {
        let _: PoolStats = pool.stats();
        if let Ok(h) = pool.try_submit(async {}) {
            h.detach();
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_waker_that_calls_back_into_the_pool_is_not_held_up() {
    let pool = CommonAioPool::new(1, 10);
    let gate = Gate::default();
    let mut handle = {
        let gate = gate.clone();
        pool.submit(async move {
            gate.wait().await;
            1
        })
        .await
        .unwrap()
    };
    let waker = CallsBack::new(calls_common(&pool));
    assert!(waker.poll(&mut handle));
    gate.open();
    waker.woken().await;
    assert_eq!(within("the handle", handle).await.unwrap(), 1);
    within("wait", pool.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_waker_that_calls_back_into_the_pool_is_not_held_up() {
    let pool = CommonAioPool::new(1, 10);
    let gate = Gate::default();
    let task = {
        let gate = gate.clone();
        pool.submit(async move { gate.wait().await }).await.unwrap()
    };
    let mut wait = Box::pin(pool.wait());
    let waker = CallsBack::new(calls_common(&pool));
    assert!(waker.poll(&mut wait));
    gate.open();
    waker.woken().await;
    within("the task", task).await.unwrap();
    within("wait", pool.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitter_waker_that_calls_back_into_the_pool_is_not_held_up() {
    let pool = NoQueueAioPool::new(1);
    let gate = Gate::default();
    let task = {
        let gate = gate.clone();
        pool.submit(async move { gate.wait().await }).await.unwrap()
    };
    let mut submit = Box::pin(pool.submit(async { 2 }));
    let call: Call = {
        let pool = pool.clone();
        Arc::new(move || {
            let _: PoolStats = pool.stats();
            // The room is the waiting submit's now: refused, without waiting.
            let _ = pool.try_submit(async { 3 });
        })
    };
    let waker = CallsBack::new(call);
    assert!(waker.poll(&mut submit), "the pool is full");
    gate.open();
    waker.woken().await;
    within("the first task", task).await.unwrap();
    let handle = within("the submit, polled again", submit).await.unwrap();
    assert_eq!(within("its task", handle).await.unwrap(), 2);
    within("wait", pool.wait()).await;
}
