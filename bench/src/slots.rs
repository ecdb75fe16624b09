//! `slots-probe`: today's engine design stripped to its bones, to compare with
//! [`cells`](crate::cells) in the same run. It answers: is it the *slot* design (a pool's
//! jobs run one after the other inside up to `c` tokio tasks, fed from one locked queue)
//! that costs the pools their speed, or what the engine does around it?
//!
//! What it keeps of the engine: admission by a tokio `Semaphore` (one permit per job, the
//! producer woken for each), one `std` mutex over the queue and the counters, taken once
//! per submit and once per job end (which also takes the next job), slot tasks spawned on
//! demand (at most `c`), kept idle when the queue is empty and woken by a submit, each
//! running at most [`JOBS_PER_POLL`] jobs per poll, a boxed future per job, panics caught.
//!
//! [`SlotPool::reaping`] also keeps each ended job's box, with its output, for the
//! producer to free on its own thread in batches of [`BATCH`] (as the engine's graves
//! do), so that what the producer allocated is freed where it was allocated.
//!
//! What it leaves out: everything else (result slots and handles, abort, stats, flow
//! control, runtimes, the exit take-over, graves, observability).

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::sync::{Notify, Semaphore};

/// The most jobs a slot finishes in one poll (the engine's value).
const JOBS_PER_POLL: usize = 32;

/// A reaping probe's producer frees the ended jobs once this many are kept.
const BATCH: usize = 32;

/// The most ended jobs kept; past that a slot frees them.
const MOST: usize = 256;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Inner {
    permits: Semaphore,
    state: Mutex<State>,
    concurrency: usize,
    /// Accepted and not finished.
    admitted: AtomicUsize,
    finished: AtomicUsize,
    panicked: AtomicUsize,
    empty: Notify,
    reaping: bool,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Slots running a job.
    running: usize,
    /// Slot tasks spawned or woken to take a queued job, not there yet.
    claimers: usize,
    /// Idle slot tasks.
    idle: Vec<Waker>,
    /// Ended jobs kept for the producer (with `reaping`).
    graves: Vec<Job>,
}

/// The probe's pool handle.
#[derive(Clone)]
pub struct SlotPool {
    inner: Arc<Inner>,
}

impl SlotPool {
    /// A probe with `concurrency` slots and `queue` places.
    pub fn new(concurrency: usize, queue: usize) -> Self {
        Self::with(concurrency, queue, false)
    }

    /// [`new`](Self::new), with ended jobs freed by the producer.
    pub fn reaping(concurrency: usize, queue: usize) -> Self {
        Self::with(concurrency, queue, true)
    }

    fn with(concurrency: usize, queue: usize, reaping: bool) -> Self {
        assert!(concurrency > 0, "concurrency must be at least 1");
        SlotPool {
            inner: Arc::new(Inner {
                permits: Semaphore::new(concurrency + queue),
                state: Mutex::default(),
                concurrency,
                admitted: AtomicUsize::new(0),
                finished: AtomicUsize::new(0),
                panicked: AtomicUsize::new(0),
                empty: Notify::new(),
                reaping,
            }),
        }
    }

    /// Waits for room, then queues `fut`; its output is dropped where it finishes.
    pub async fn submit<F>(&self, fut: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let inner = &self.inner;
        match inner.permits.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => unreachable!("the probe never closes its semaphore"),
        }
        inner.admitted.fetch_add(1, SeqCst);
        // The output stays in the box until the box is dropped.
        let job: Job = Box::pin(futures::future::maybe_done(fut));
        let mut st = inner.lock();
        st.queue.push_back(job);
        let graves = if st.graves.len() >= BATCH {
            std::mem::take(&mut st.graves)
        } else {
            Vec::new()
        };
        let wake = if st.queue.len() > st.claimers && st.running + st.claimers < inner.concurrency {
            st.claimers += 1;
            Some(st.idle.pop())
        } else {
            None
        };
        drop(st);
        match wake {
            Some(Some(waker)) => waker.wake(),
            Some(None) => drop(tokio::spawn(Slot {
                inner: Arc::clone(inner),
                job: None,
                claiming: true,
            })),
            None => {}
        }
        drop(graves);
    }

    /// Waits until every accepted job has finished, then frees the ended jobs kept.
    pub async fn wait(&self) {
        loop {
            let empty = self.inner.empty.notified();
            tokio::pin!(empty);
            empty.as_mut().enable();
            if self.inner.admitted.load(SeqCst) == 0 {
                break;
            }
            empty.await;
        }
        let graves = std::mem::take(&mut self.inner.lock().graves);
        drop(graves);
    }

    /// Jobs that ended, panicked or not.
    pub fn finished(&self) -> usize {
        self.inner.finished.load(SeqCst)
    }

    /// Jobs whose future panicked.
    pub fn panicked(&self) -> usize {
        self.inner.panicked.load(SeqCst)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Under the lock: the next job for a slot, if fewer than `concurrency` run.
    fn take(&self, st: &mut State) -> Option<Job> {
        if st.running >= self.concurrency {
            return None;
        }
        let job = st.queue.pop_front()?;
        st.running += 1;
        Some(job)
    }
}

/// A slot task: runs jobs one after the other.
struct Slot {
    inner: Arc<Inner>,
    job: Option<Job>,
    /// Spawned or woken for a queued job (counted in `State::claimers`).
    claiming: bool,
}

impl Future for Slot {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let inner = Arc::clone(&this.inner);
        if this.job.is_none() {
            let mut st = inner.lock();
            if std::mem::take(&mut this.claiming) {
                st.claimers -= 1;
            }
            match inner.take(&mut st) {
                Some(job) => this.job = Some(job),
                None => {
                    st.idle.push(cx.waker().clone());
                    this.claiming = true;
                    return Poll::Pending;
                }
            }
        }
        for _ in 0..JOBS_PER_POLL {
            let Some(job) = this.job.as_mut() else { break };
            let polled = catch_unwind(AssertUnwindSafe(|| job.as_mut().poll(cx)));
            match polled {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(())) => {}
                Err(_) => drop(inner.panicked.fetch_add(1, SeqCst)),
            }
            let ended = this.job.take();
            // The job's end and the next job's start, in one critical section.
            let mut st = inner.lock();
            let full = match ended {
                Some(ended) if inner.reaping => {
                    let full = if st.graves.len() >= MOST {
                        std::mem::take(&mut st.graves)
                    } else {
                        Vec::new()
                    };
                    st.graves.push(ended);
                    full
                }
                ended => {
                    drop(ended);
                    Vec::new()
                }
            };
            st.running -= 1;
            this.job = inner.take(&mut st);
            let idle = this.job.is_none();
            if idle {
                st.idle.push(cx.waker().clone());
                this.claiming = true;
            }
            drop(st);
            drop(full);
            inner.permits.add_permits(1);
            inner.finished.fetch_add(1, SeqCst);
            if inner.admitted.fetch_sub(1, SeqCst) == 1 {
                inner.empty.notify_waiters();
            }
            if idle {
                return Poll::Pending;
            }
        }
        // Budget spent with a job in hand: let the thread run other tasks first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_every_job_and_never_more_than_c_at_once() {
        let pool = SlotPool::new(3, 5);
        let (now, most) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        for _ in 0..2000 {
            let (now, most) = (now.clone(), most.clone());
            pool.submit(async move {
                let n = now.fetch_add(1, SeqCst) + 1;
                most.fetch_max(n, SeqCst);
                tokio::task::yield_now().await;
                now.fetch_sub(1, SeqCst);
            })
            .await;
        }
        pool.wait().await;
        assert_eq!(pool.finished(), 2000);
        assert!(most.load(SeqCst) <= 3, "ran {} at once", most.load(SeqCst));
        assert_eq!(pool.inner.permits.available_permits(), 8);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panic_is_counted_and_the_pool_goes_on() {
        let pool = SlotPool::new(2, 0);
        pool.submit(async { panic!("boom") }).await;
        pool.submit(async {}).await;
        pool.wait().await;
        assert_eq!((pool.panicked(), pool.finished()), (1, 2));
    }
}
