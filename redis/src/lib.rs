//! # nb-aiopool-redis: the pool's promises across processes, on Redis Streams
//!
//! A [`CommonAioPool`](nb_aiopool::CommonAioPool) bounds the work of one process. When
//! one process or one machine is not enough, this crate keeps the same promises across
//! many worker processes, with Redis (7.0 or newer) as the shared queue:
//!
//! | promise | in one process (`nb_aiopool`) | across processes (this crate) |
//! |---|---|---|
//! | bounded concurrency | `max_concurrency` | [`WorkerBuilder::concurrency`] per worker: it reads with `COUNT` = free slots and never holds more entries than slots |
//! | producer backpressure | `max_queue_size`: `submit` waits | [`QueueBuilder::max_len`]: [`RedisQueue::submit`] waits, [`RedisQueue::try_submit`] fails; checked atomically on the server |
//! | no task lost | the pool drains before exit | at-least-once: acknowledged only after the handler ends; a killed worker's entries are reclaimed after the [lease](WorkerBuilder::lease) |
//! | results and failures | `TaskHandle` | [`RedisQueue::submit_with_result`] + [`RedisQueue::wait_result`]; retries with backoff, then a dead-letter stream ([`RedisQueue::dead_letters`], [`RedisQueue::requeue`]) |
//! | graceful stop | `shutdown` | [`Worker::shutdown`], [`Worker::shutdown_timeout`] |
//!
//! Delivery is **at least once**: a job whose worker is killed mid-run runs again on
//! another worker, so handlers should be idempotent. Order is FIFO dispatch only.
//!
//! ```no_run
//! # async fn demo() -> Result<(), nb_aiopool_redis::Error> {
//! use std::time::Duration;
//! use nb_aiopool_redis::{RedisQueue, Worker};
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Email { to: String }
//!
//! // Producer (any process):
//! let queue = RedisQueue::connect("redis://127.0.0.1:6379", "emails").await?;
//! let id = queue.submit("send_email", &Email { to: "a@example.com".into() }).await?;
//! let s = queue.stats().await?;
//! println!("{id}: waiting {} in flight {} dead {}", s.waiting, s.in_flight, s.dead);
//!
//! // Worker (one or more processes):
//! let worker = Worker::builder("redis://127.0.0.1:6379", "emails")
//!     .concurrency(100)
//!     .lease(Duration::from_secs(30))
//!     .max_deliveries(5)
//!     .task("send_email", |e: Email| async move {
//!         println!("to {}", e.to);
//!         Ok::<(), String>(())
//!     })
//!     .build()
//!     .await?;
//! worker.run().await?; // until worker.shutdown().await from a clone
//! # Ok(()) }
//! ```
//!
//! ## Storage
//!
//! A queue `q` uses the keys `nbq:{q}:jobs` (the work stream, consumer group `workers`),
//! `nbq:{q}:delayed` (retries waiting for their backoff), `nbq:{q}:dead` (dead letters),
//! `nbq:{q}:result:<job id>` (results, with a TTL of at most
//! [`RedisQueue::MAX_RESULT_TTL`]) and two counters. Entries are deleted
//! as soon as they are acknowledged, so memory stays flat. Payloads are JSON.
//!
//! Durability is the server's: a Redis crash loses nothing only with `appendonly yes`
//! (and `appendfsync always` for zero loss); consumer and producer crashes are covered
//! in any case.
//!
//! **Clocks.** Leases, reclaims and retry due times are measured by Redis's clock; the
//! worker's timers (lease renewal every lease/3, reclaim every lease/2, shutdown
//! deadlines) and every command's response timeout run on tokio's clock. So this crate
//! does not work under a paused tokio clock (`tokio::time::pause`,
//! `#[tokio::test(start_paused = true)]`): a paused runtime that waits for Redis's reply
//! jumps its clock to the next timer, so calls fail at once with "timed out"
//! ([`RedisQueue::connect`] among them), and advancing tokio's clock does not make an
//! entry idle in Redis. Test with real time and short leases instead.
//!
//! TLS (`rediss://`) needs this crate's `tls` feature (the `redis` crate's
//! `tokio-rustls-comp`, with rustls's `ring` provider); `tls-insecure` also accepts
//! `rediss://...#insecure` (no certificate check, for development servers). Passwords go
//! in the URL (`redis://user:password@host/`).

#![warn(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]

mod error;
mod queue;
mod store;
mod worker;

pub use error::Error;
pub use queue::{DeadLetter, JobId, QueueBuilder, QueueStats, RedisQueue};
pub use worker::{JobCtx, ShutdownReport, Worker, WorkerBuilder, WorkerStats};
