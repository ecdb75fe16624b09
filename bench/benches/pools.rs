//! Criterion micro-benchmarks: each pool beside the `sem-before-joinset` tokio pattern,
//! on a current-thread and a 2-worker multi-thread runtime.
//!
//! - `uncontended_*`: one producer submits one tiny job (a `yield_now`) and awaits its
//!   handle, again and again: submit-to-completion latency.
//! - `contended4_*`: four producer tasks share one pool (16 slots, queue 16) and each
//!   submits 250 tiny jobs, then awaits their handles: 1000 jobs per iteration.
//!
//! ```text
//! cargo bench -p nb-aiopool-bench --bench pools
//! ```
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use nb_aiopool::{CommonAioPool, NoQueueAioPool, SmartAioPool};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const PRODUCERS: u64 = 4;
const PER_PRODUCER: u64 = 250;
const CONTENDED_SLOTS: usize = 16;

async fn job() -> u64 {
    tokio::task::yield_now().await;
    1
}

fn runtimes() -> Vec<(&'static str, Runtime)> {
    vec![
        (
            "ct",
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        ),
        (
            "mt",
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        ),
    ]
}

fn configure(g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
}

fn uncontended(c: &mut Criterion) {
    for (label, rt) in runtimes() {
        let mut g = c.benchmark_group(format!("uncontended_{label}"));
        configure(&mut g);
        g.throughput(Throughput::Elements(1));

        let pool = CommonAioPool::new(1000, 1000);
        g.bench_function("common", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let pool = pool.clone();
                async move {
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        let h = pool
                            .submit(job())
                            .await
                            .unwrap_or_else(|_| panic!("submit"));
                        black_box(h.await.expect("job"));
                    }
                    t0.elapsed()
                }
            })
        });

        let pool = NoQueueAioPool::new(1000);
        g.bench_function("no-queue", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let pool = pool.clone();
                async move {
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        let h = pool
                            .submit(job())
                            .await
                            .unwrap_or_else(|_| panic!("submit"));
                        black_box(h.await.expect("job"));
                    }
                    t0.elapsed()
                }
            })
        });

        let pool = SmartAioPool::builder()
            .max_concurrency(1000)
            .max_queue_size(1000)
            .build();
        g.bench_function("smart", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let pool = pool.clone();
                async move {
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        let h = pool.submit(job).await.unwrap_or_else(|_| panic!("submit"));
                        black_box(h.await.expect("job"));
                    }
                    t0.elapsed()
                }
            })
        });

        let sem = Arc::new(Semaphore::new(1000));
        g.bench_function("sem-before-joinset", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let sem = Arc::clone(&sem);
                async move {
                    let mut set = JoinSet::new();
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        let permit = Arc::clone(&sem).acquire_owned().await.unwrap();
                        set.spawn(async move {
                            let out = job().await;
                            drop(permit);
                            out
                        });
                        black_box(set.join_next().await.unwrap().expect("job"));
                    }
                    t0.elapsed()
                }
            })
        });
        g.finish();
    }
}

/// Awaits four producers started by `producer(i)` and returns the elapsed time.
async fn four_producers<F, Fut>(producer: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u64> + Send + 'static,
{
    let t0 = Instant::now();
    let mut ps = JoinSet::new();
    for _ in 0..PRODUCERS {
        ps.spawn(producer());
    }
    let mut done = 0;
    while let Some(r) = ps.join_next().await {
        done += r.expect("producer");
    }
    assert_eq!(done, PRODUCERS * PER_PRODUCER);
    t0.elapsed()
}

fn contended(c: &mut Criterion) {
    for (label, rt) in runtimes() {
        let mut g = c.benchmark_group(format!("contended4_{label}"));
        configure(&mut g);
        g.throughput(Throughput::Elements(PRODUCERS * PER_PRODUCER));

        let pool = CommonAioPool::new(CONTENDED_SLOTS, CONTENDED_SLOTS);
        g.bench_function("common", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let pool = pool.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += four_producers(|| {
                            let pool = pool.clone();
                            async move {
                                let mut hs = Vec::with_capacity(PER_PRODUCER as usize);
                                for _ in 0..PER_PRODUCER {
                                    hs.push(
                                        pool.submit(job())
                                            .await
                                            .unwrap_or_else(|_| panic!("submit")),
                                    );
                                }
                                let mut n = 0;
                                for h in hs {
                                    n += h.await.expect("job");
                                }
                                n
                            }
                        })
                        .await;
                    }
                    total
                }
            })
        });

        let pool = NoQueueAioPool::new(CONTENDED_SLOTS);
        g.bench_function("no-queue", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let pool = pool.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += four_producers(|| {
                            let pool = pool.clone();
                            async move {
                                let mut hs = Vec::with_capacity(PER_PRODUCER as usize);
                                for _ in 0..PER_PRODUCER {
                                    hs.push(
                                        pool.submit(job())
                                            .await
                                            .unwrap_or_else(|_| panic!("submit")),
                                    );
                                }
                                let mut n = 0;
                                for h in hs {
                                    n += h.await.expect("job");
                                }
                                n
                            }
                        })
                        .await;
                    }
                    total
                }
            })
        });

        let pool = SmartAioPool::builder()
            .max_concurrency(CONTENDED_SLOTS)
            .max_queue_size(CONTENDED_SLOTS)
            .build();
        g.bench_function("smart", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let pool = pool.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += four_producers(|| {
                            let pool = pool.clone();
                            async move {
                                let mut hs = Vec::with_capacity(PER_PRODUCER as usize);
                                for _ in 0..PER_PRODUCER {
                                    hs.push(
                                        pool.submit(job).await.unwrap_or_else(|_| panic!("submit")),
                                    );
                                }
                                let mut n = 0;
                                for h in hs {
                                    n += h.await.expect("job");
                                }
                                n
                            }
                        })
                        .await;
                    }
                    total
                }
            })
        });

        let sem = Arc::new(Semaphore::new(CONTENDED_SLOTS));
        g.bench_function("sem-before-joinset", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let sem = Arc::clone(&sem);
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += four_producers(|| {
                            let sem = Arc::clone(&sem);
                            async move {
                                let mut set = JoinSet::new();
                                let mut n = 0;
                                for _ in 0..PER_PRODUCER {
                                    let permit = Arc::clone(&sem).acquire_owned().await.unwrap();
                                    set.spawn(async move {
                                        let out = job().await;
                                        drop(permit);
                                        out
                                    });
                                    while let Some(r) = set.try_join_next() {
                                        n += r.expect("job");
                                    }
                                }
                                while let Some(r) = set.join_next().await {
                                    n += r.expect("job");
                                }
                                n
                            }
                        })
                        .await;
                    }
                    total
                }
            })
        });
        g.finish();
    }
}

criterion_group!(benches, uncontended, contended);
criterion_main!(benches);
