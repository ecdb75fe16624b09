//! `cells-probe`: a measuring probe of issue 9's design B1 ("one cell per job"), not a
//! pool. It answers one question with a figure from the same run as the real pools: how
//! fast would the engine be with jobs that are not tokio tasks?
//!
//! What it builds (the pieces of `../shared/research/engine-design.md` §3.1, phase 1):
//! - one allocation per job: an `async-task` cell holding the future, then its output;
//! - two lock-free queues shared by every driver (`concurrent-queue`): `intake` for jobs
//!   not started yet (FIFO, started only while fewer than `c` run) and `ready` for started
//!   jobs that were woken. Any driver polls any job, so a job that blocks its thread holds
//!   up only itself: the stealing that isolation needs, without per-driver queues;
//! - one driver per runtime worker (a tokio task that runs jobs until both queues are
//!   empty or tokio's coop budget is spent); a push wakes a driver only when one is idle;
//! - admission by atomic counters (`admitted` < c + q), the producer woken only when a
//!   quarter of the room is free again (a low watermark) or the pool is empty.
//!
//! `CellPool::booked` adds what today's engine pays for its bookkeeping, to see what is
//! left of the gain if an engine of cells kept it: admission by a tokio `Semaphore` (one
//! permit per job, the producer woken for each) instead of the atomic counter, and one
//! `std` mutex over a queue of ids and counters, taken when a job is queued, when it
//! starts and when it ends.
//!
//! What it leaves out, and a pool needs: flow control, priorities, abort, per-job stats
//! beyond counts, `wait()` targets, other runtimes, the exit take-over, panics reported to
//! a handle (a panic is caught and counted, that is all). The figures are therefore a
//! floor for a design-B engine, not a forecast of one.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{fence, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use async_task::Runnable;
use concurrent_queue::ConcurrentQueue;
use futures::FutureExt;
use tokio::sync::{Notify, Semaphore};

/// The most jobs a driver runs in one poll of its tokio task.
const BATCH: usize = 64;

struct Inner {
    /// Jobs accepted and not started, in submit order.
    intake: ConcurrentQueue<Runnable>,
    /// Started jobs that were woken.
    ready: ConcurrentQueue<Runnable>,
    /// Accepted and not finished (queued + running).
    admitted: AtomicUsize,
    /// Started and not finished.
    running: AtomicUsize,
    concurrency: usize,
    capacity: usize,
    /// Free room that wakes a waiting producer.
    watermark: usize,
    /// Drivers waiting for work.
    idle: AtomicUsize,
    work: Notify,
    /// Producers waiting for room (or for the pool to empty).
    waiting: AtomicUsize,
    room: Notify,
    panicked: AtomicUsize,
    /// Jobs that ended (a pool's `stats().completed` + `panicked`).
    finished: AtomicUsize,
    /// The bookkeeping of [`CellPool::booked`].
    book: Option<Book>,
}

/// What today's engine keeps under its lock, reduced to its cost: the semaphore's permits
/// and a locked queue of ids with counters.
struct Book {
    permits: Semaphore,
    state: Mutex<BookState>,
}

impl Book {
    fn lock(&self) -> std::sync::MutexGuard<'_, BookState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct BookState {
    queued: VecDeque<u64>,
    next_id: u64,
    running: usize,
    completed: u64,
}

/// The probe's pool handle.
#[derive(Clone)]
pub struct CellPool {
    inner: Arc<Inner>,
}

impl CellPool {
    /// A probe with `concurrency` slots and `queue` places, and one driver per worker of
    /// the current runtime (one on a current-thread runtime).
    pub fn new(concurrency: usize, queue: usize) -> Self {
        Self::with_book(concurrency, queue, false)
    }

    /// [`new`](Self::new), with today's engine's bookkeeping (a semaphore for admission,
    /// one mutex taken when a job is queued, starts and ends).
    pub fn booked(concurrency: usize, queue: usize) -> Self {
        Self::with_book(concurrency, queue, true)
    }

    fn with_book(concurrency: usize, queue: usize, booked: bool) -> Self {
        assert!(concurrency > 0, "concurrency must be at least 1");
        let capacity = concurrency + queue;
        let inner = Arc::new(Inner {
            intake: ConcurrentQueue::unbounded(),
            ready: ConcurrentQueue::unbounded(),
            admitted: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            concurrency,
            capacity,
            watermark: (capacity / 4).clamp(1, 256),
            idle: AtomicUsize::new(0),
            work: Notify::new(),
            waiting: AtomicUsize::new(0),
            room: Notify::new(),
            panicked: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            book: booked.then(|| Book {
                permits: Semaphore::new(capacity),
                state: Mutex::default(),
            }),
        });
        let drivers = tokio::runtime::Handle::current().metrics().num_workers();
        for _ in 0..drivers.max(1) {
            tokio::spawn(drive(Arc::clone(&inner)));
        }
        CellPool { inner }
    }

    /// Waits for room, then queues `fut`; its output is dropped where it finishes, as a
    /// pool's detached handle does.
    pub async fn submit<F>(&self, fut: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.submit_task(fut).await.detach();
    }

    /// Waits for room, then queues `fut`; the cell, and the output in it, is freed where
    /// the returned task is dropped (`None` if the future panicked).
    pub async fn submit_task<F>(&self, fut: F) -> async_task::Task<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let inner = &self.inner;
        if let Some(book) = &inner.book {
            match book.permits.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => unreachable!("the probe never closes its semaphore"),
            }
            inner.admitted.fetch_add(1, SeqCst);
            let mut st = book.lock();
            let id = st.next_id;
            st.next_id += 1;
            st.queued.push_back(id);
        } else if !inner.try_admit() {
            inner.until_room(|| inner.try_admit()).await;
        }
        let ended = Arc::clone(inner);
        let job = async move {
            let out = AssertUnwindSafe(fut).catch_unwind().await.ok();
            if out.is_none() {
                ended.panicked.fetch_add(1, SeqCst);
            }
            ended.end();
            out
        };
        let woken = Arc::clone(inner);
        let (runnable, task) = async_task::spawn(job, move |r| woken.push(&woken.ready, r));
        inner.push(&inner.intake, runnable);
        task
    }

    /// Waits until every accepted job has finished.
    pub async fn wait(&self) {
        let inner = &self.inner;
        inner.until_room(|| inner.admitted.load(SeqCst) == 0).await;
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
    /// Waits, counted in `waiting` (so a job's end wakes it), until `done` holds: checked
    /// after registering for `room`, so no wake-up falls between check and wait.
    async fn until_room(&self, mut done: impl FnMut() -> bool) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            self.waiting.fetch_add(1, SeqCst);
            if done() {
                self.waiting.fetch_sub(1, SeqCst);
                return;
            }
            room.await;
            self.waiting.fetch_sub(1, SeqCst);
        }
    }

    fn try_admit(&self) -> bool {
        let mut now = self.admitted.load(SeqCst);
        while now < self.capacity {
            match self
                .admitted
                .compare_exchange_weak(now, now + 1, SeqCst, SeqCst)
            {
                Ok(_) => return true,
                Err(actual) => now = actual,
            }
        }
        false
    }

    fn push(&self, queue: &ConcurrentQueue<Runnable>, r: Runnable) {
        if queue.push(r).is_err() {
            unreachable!("the probe's queues are unbounded and never closed");
        }
        // With the driver's store to `idle` and its re-check of the queues: either it sees
        // the job, or this sees it idle.
        fence(SeqCst);
        if self.idle.load(SeqCst) > 0 {
            self.work.notify_one();
        }
    }

    /// A job ended inside a driver's poll.
    fn end(&self) {
        if let Some(book) = &self.book {
            let mut st = book.lock();
            st.running -= 1;
            st.completed += 1;
            drop(st);
            book.permits.add_permits(1);
        }
        self.finished.fetch_add(1, SeqCst);
        self.running.fetch_sub(1, SeqCst);
        let before = self.admitted.fetch_sub(1, SeqCst);
        if self.waiting.load(SeqCst) > 0 {
            let free = self.capacity - (before - 1);
            if free >= self.watermark || before == 1 {
                self.room.notify_waiters();
            }
        }
    }

    /// The next job to poll: a woken one, else a new one if fewer than `concurrency` run.
    fn next(&self) -> Option<Runnable> {
        if let Ok(r) = self.ready.pop() {
            return Some(r);
        }
        let mut now = self.running.load(SeqCst);
        while now < self.concurrency {
            match self
                .running
                .compare_exchange_weak(now, now + 1, SeqCst, SeqCst)
            {
                Ok(_) => {
                    return match self.intake.pop() {
                        Ok(r) => {
                            if let Some(book) = &self.book {
                                let mut st = book.lock();
                                st.queued.pop_front();
                                st.running += 1;
                            }
                            Some(r)
                        }
                        Err(_) => {
                            self.running.fetch_sub(1, SeqCst);
                            None
                        }
                    };
                }
                Err(actual) => now = actual,
            }
        }
        None
    }

    fn has_work(&self) -> bool {
        !self.ready.is_empty()
            || (!self.intake.is_empty() && self.running.load(SeqCst) < self.concurrency)
    }
}

/// "Return to sender": keeps the tasks of one producer in submit order and drops the
/// finished ones at its front on the producer's own thread, so that the cells and outputs
/// it allocated are freed where they were allocated (glibc then takes no arena lock shared
/// with the workers). A task still running at the front holds back at most `limit`
/// others; past that the oldest is detached (freed on a worker).
pub struct Reaper<T> {
    tasks: std::collections::VecDeque<async_task::Task<T>>,
    limit: usize,
}

impl<T> Reaper<T> {
    /// Keeps at most `limit` tasks.
    pub fn new(limit: usize) -> Self {
        Reaper {
            tasks: std::collections::VecDeque::with_capacity(limit.min(1 << 16)),
            limit: limit.max(1),
        }
    }

    /// Keeps `task`, then drops the finished tasks at the front.
    pub fn keep(&mut self, task: async_task::Task<T>) {
        self.tasks.push_back(task);
        while let Some(front) = self.tasks.front() {
            if front.is_finished() {
                drop(self.tasks.pop_front());
            } else if self.tasks.len() > self.limit {
                if let Some(oldest) = self.tasks.pop_front() {
                    oldest.detach();
                }
            } else {
                break;
            }
        }
    }
}

async fn drive(inner: Arc<Inner>) {
    loop {
        let mut ran = 0;
        while ran < BATCH {
            match inner.next() {
                Some(r) => {
                    r.run();
                    ran += 1;
                    if !tokio::task::coop::has_budget_remaining() {
                        break;
                    }
                }
                None => break,
            }
        }
        if ran > 0 {
            // Let the thread run its other tasks (and the jobs' deferred wake-ups).
            tokio::task::yield_now().await;
            continue;
        }
        let work = inner.work.notified();
        tokio::pin!(work);
        work.as_mut().enable();
        inner.idle.fetch_add(1, SeqCst);
        if inner.has_work() {
            inner.idle.fetch_sub(1, SeqCst);
            continue;
        }
        work.await;
        inner.idle.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::time::{Duration, Instant};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_every_job_and_never_more_than_c_at_once() {
        runs_every_job_and_never_more_than_c_at_once_in(CellPool::new(3, 5)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn booked_runs_every_job_and_never_more_than_c_at_once() {
        let pool = CellPool::booked(3, 5);
        runs_every_job_and_never_more_than_c_at_once_in(pool.clone()).await;
        let book = pool.inner.book.as_ref().expect("booked");
        let st = book.state.lock().unwrap();
        assert_eq!((st.completed, st.running, st.queued.len()), (200, 0, 0));
        assert_eq!(book.permits.available_permits(), 8);
    }

    async fn runs_every_job_and_never_more_than_c_at_once_in(pool: CellPool) {
        let (now, most, done) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        for _ in 0..200 {
            let (now, most, done) = (now.clone(), most.clone(), done.clone());
            pool.submit(async move {
                let n = now.fetch_add(1, SeqCst) + 1;
                most.fetch_max(n, SeqCst);
                tokio::task::yield_now().await;
                now.fetch_sub(1, SeqCst);
                done.fetch_add(1, SeqCst);
            })
            .await;
        }
        pool.wait().await;
        assert_eq!(done.load(SeqCst), 200);
        assert_eq!(pool.finished(), 200);
        assert!(most.load(SeqCst) <= 3, "ran {} at once", most.load(SeqCst));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_that_blocks_its_thread_holds_up_no_other() {
        let pool = CellPool::new(100, 100);
        pool.submit(async { std::thread::sleep(Duration::from_millis(300)) })
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let late = Arc::new(AtomicU64::new(0));
        for _ in 0..50 {
            let late = late.clone();
            let submitted = Instant::now();
            pool.submit(async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                if submitted.elapsed() > Duration::from_millis(100) {
                    late.fetch_add(1, SeqCst);
                }
            })
            .await;
        }
        pool.wait().await;
        assert!(late.load(SeqCst) <= 2, "{} of 50 late", late.load(SeqCst));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_reaper_drops_finished_tasks_and_bounds_the_rest() {
        let pool = CellPool::new(4, 4);
        let mut reaper = Reaper::new(16);
        for i in 0..1000u64 {
            reaper.keep(pool.submit_task(async move { i.to_string() }).await);
            assert!(reaper.tasks.len() <= 17, "kept {}", reaper.tasks.len());
        }
        pool.wait().await;
        assert_eq!(pool.finished(), 1000);
        // `wait()` returns once every job has called `Inner::end`, inside its poll; the
        // cell is marked finished only when that poll returns on its worker, a moment
        // later (on a loaded machine, not yet): wait for it, bounded.
        let end = Instant::now() + Duration::from_secs(10);
        for task in reaper.tasks.drain(..) {
            while !task.is_finished() && Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert!(task.is_finished());
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panic_is_counted_and_the_pool_goes_on() {
        let pool = CellPool::new(2, 0);
        pool.submit(async { panic!("boom") }).await;
        pool.submit(async {}).await;
        pool.wait().await;
        assert_eq!(pool.panicked(), 1);
    }
}
