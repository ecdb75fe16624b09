//! What a submit costs as the submitted future grows: N tasks whose future holds an inline
//! array of `--bytes` (as a future of an HTTP client or a parser often holds kilobytes of
//! state) through a `CommonAioPool` on a current-thread runtime, each task a `yield_now`.
//! Every copy of the future on the way into the pool costs a `memcpy` of that size, so
//! this binary is meant for an instruction count of two builds (deterministic):
//!
//! ```sh
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target-bench/release/future_size --bytes 2048 -n 100000
//! ```
//!
//! `--bytes` takes 0, 256, 2048 or 8192 (the array's size is a type's). `--joinset` runs
//! the same tasks as the hand-written pattern instead (a `Semaphore` permit, then
//! `JoinSet::spawn`), for comparison; `--smart`, through a `SmartAioPool` (each task a
//! recipe that makes the future, on the slot's thread); `--batch`, through the
//! `CommonAioPool`'s `batch_run`, 10,000 tasks per call (the path of a group); `--group`,
//! through a `TaskGroup`'s `submit`, joined every 10,000 tasks (with `--watched`, a
//! cancel-on-panic group, whose tasks are watched; with `--smart`, a `SmartTaskGroup`'s).

use std::hint::black_box;

use clap::Parser;
use nb_aiopool::CommonAioPool;

#[derive(Parser)]
struct Args {
    /// The inline state each future holds across its await, in bytes.
    #[arg(long, default_value_t = 2048)]
    bytes: usize,
    /// Tasks.
    #[arg(short, default_value_t = 100_000)]
    n: usize,
    /// The pool's `max_concurrency` (its queue is as large).
    #[arg(short, default_value_t = 1000)]
    c: usize,
    /// The "Semaphore permit before `JoinSet::spawn`" pattern instead of the pool.
    #[arg(long)]
    joinset: bool,
    /// A `SmartAioPool` of recipes instead of the `CommonAioPool`.
    #[arg(long)]
    smart: bool,
    /// `batch_run` calls of 10,000 tasks each instead of one submit per task.
    #[arg(long)]
    batch: bool,
    /// A `TaskGroup`'s `submit`, joined every 10,000 tasks.
    #[arg(long)]
    group: bool,
    /// With `--group`: the group cancels on panic (its tasks are watched).
    #[arg(long, requires = "group")]
    watched: bool,
}

/// A task whose future holds `B` bytes across its await.
async fn task<const B: usize>(i: usize) -> usize {
    let state = [i as u8; B];
    tokio::task::yield_now().await;
    black_box(&state);
    i
}

async fn run<const B: usize>(args: &Args) {
    if args.joinset {
        return joinset::<B>(args).await;
    }
    if args.smart {
        return smart::<B>(args).await;
    }
    if args.batch {
        return batch::<B>(args).await;
    }
    if args.group {
        return group::<B>(args).await;
    }
    let pool = CommonAioPool::new(args.c, args.c);
    for i in 0..args.n {
        let handle = pool.submit(task::<B>(i)).await.expect("the pool is open");
        handle.detach();
    }
    pool.shutdown().await;
    let s = pool.stats();
    assert_eq!(s.completed, args.n as u64, "every task ran: {s:?}");
}

/// The tasks' numbers, in consecutive ranges of 10,000 (a batch or a group each).
fn chunks(args: &Args) -> impl Iterator<Item = std::ops::Range<usize>> {
    nb_aiopool_bench::chunks(args.n as u64, 10_000).map(|r| r.start as usize..r.end as usize)
}

async fn batch<const B: usize>(args: &Args) {
    let pool = CommonAioPool::new(args.c, args.c);
    for chunk in chunks(args) {
        let results = pool
            .batch_run(chunk.map(task::<B>))
            .await
            .expect("the pool is open");
        assert!(results.iter().all(Result::is_ok));
    }
    pool.shutdown().await;
    assert_eq!(pool.stats().completed, args.n as u64);
}

async fn group<const B: usize>(args: &Args) {
    let pool = CommonAioPool::new(args.c, args.c);
    for chunk in chunks(args) {
        let mut group = pool.group().cancel_on_panic(args.watched);
        for i in chunk {
            group.submit(task::<B>(i)).await.expect("the pool is open");
        }
        let results = group.join_all().await;
        assert!(results.iter().all(Result::is_ok));
    }
    pool.shutdown().await;
    assert_eq!(pool.stats().completed, args.n as u64);
}

async fn smart<const B: usize>(args: &Args) {
    let pool = nb_aiopool::SmartAioPool::builder()
        .max_concurrency(args.c)
        .max_queue_size(args.c)
        .build();
    if args.group {
        for chunk in chunks(args) {
            let mut group = pool.group().cancel_on_panic(args.watched);
            for i in chunk {
                group
                    .submit(move || task::<B>(i))
                    .await
                    .expect("the pool is open");
            }
            let results = group.join_all().await;
            assert!(results.iter().all(Result::is_ok));
        }
        pool.shutdown().await;
        assert_eq!(pool.stats().completed, args.n as u64);
        return;
    }
    for i in 0..args.n {
        let handle = pool
            .submit(move || task::<B>(i))
            .await
            .expect("the pool is open");
        handle.detach();
    }
    pool.shutdown().await;
    let s = pool.stats();
    assert_eq!(s.completed, args.n as u64, "every task ran: {s:?}");
}

async fn joinset<const B: usize>(args: &Args) {
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(args.c));
    let mut set = tokio::task::JoinSet::new();
    let mut done = 0;
    for i in 0..args.n {
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        set.spawn(async move {
            let out = task::<B>(i).await;
            drop(permit);
            out
        });
        // Reap what ended, so the set does not grow with N.
        while set.try_join_next().is_some() {
            done += 1;
        }
    }
    while set.join_next().await.is_some() {
        done += 1;
    }
    assert_eq!(done, args.n, "every task ran");
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        match args.bytes {
            0 => run::<0>(&args).await,
            256 => run::<256>(&args).await,
            2048 => run::<2048>(&args).await,
            8192 => run::<8192>(&args).await,
            n => panic!("--bytes {n}: one of 0, 256, 2048, 8192"),
        }
    });
    println!(
        "future_size: {} tasks of {} bytes of state, C = {}",
        args.n, args.bytes, args.c
    );
}
