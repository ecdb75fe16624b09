//! The producer side: [`RedisQueue`], its builder, stats and dead letters.

use std::fmt;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::store::{self, Keys, GROUP};
use crate::Error;

/// The id of a submitted job: the id Redis gave its first stream entry (`<ms>-<seq>`).
/// It stays the same across retries, reclaims and requeues.
pub type JobId = String;

/// A handle to one queue, for producers and operators.
///
/// Cheap to clone: clones share one multiplexed connection, which reconnects by itself
/// after a loss (the call that hit the loss returns [`Error::Redis`]), and one submitter
/// task that sends concurrent submissions in batches (one script call per batch, of up to
/// 512 submissions and 4 MB of payloads, or a quarter of the server's `maxmemory-clients`
/// if that is smaller).
///
/// Dropping a `RedisQueue` (the last clone) ends the submitter task, after it has sent
/// the submissions it holds, and closes the connection; jobs already submitted stay in
/// Redis.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), nb_aiopool_redis::Error> {
/// use nb_aiopool_redis::RedisQueue;
/// #[derive(serde::Serialize)]
/// struct Email { to: String }
///
/// let queue = RedisQueue::connect("redis://127.0.0.1:6379", "emails").await?;
/// let id = queue.submit("send_email", &Email { to: "a@example.com".into() }).await?;
/// let s = queue.stats().await?;
/// println!("{id}: {} waiting, {} in flight, {} dead", s.waiting, s.in_flight, s.dead);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisQueue {
    keys: Keys,
    conn: ConnectionManager,
    max_len: u64,
    /// The longest payload the server takes in one argument (`proto-max-bulk-len`, read
    /// at connect; 512 MB if it cannot be read: see [`store::max_arg_len`]).
    max_arg: u64,
    submitter: mpsc::UnboundedSender<SubmitRequest>,
}

/// One submission waiting for the submitter task.
struct SubmitRequest {
    task: String,
    payload: String,
    result_ttl: u64,
    reply: oneshot::Sender<Result<Option<String>, redis::RedisError>>,
}

impl SubmitRequest {
    /// The bytes of its arguments (counted against the submitter's byte budget).
    fn len(&self) -> u64 {
        (self.task.len() + self.payload.len() + 20) as u64
    }
}

/// Most submissions one script call carries.
const MAX_SUBMIT_BATCH: usize = 512;

/// Sends queued submissions in batches: one gate-and-XADD script per batch, so that
/// concurrent submits from one process cost one round trip and one script call together.
/// Ends when the last `RedisQueue` clone is dropped (after sending what it holds).
///
/// A batch closes at [`MAX_SUBMIT_BATCH`] submissions or once its payloads reach
/// `budget` bytes ([`store::finish_budget`]: 4 MB, or a quarter of the server's
/// `maxmemory-clients`): with client eviction on, Redis closes the connection of a call
/// that big, failing every submission in it, although each alone would be taken. A
/// submission that would take a batch past the budget starts the next one (alone if it
/// is longer than the budget itself).
async fn submitter(
    keys: Keys,
    mut conn: ConnectionManager,
    max_len: u64,
    budget: u64,
    mut rx: mpsc::UnboundedReceiver<SubmitRequest>,
) {
    let mut batch: Vec<SubmitRequest> = Vec::new();
    // A submission that did not fit the last batch: first in the next one.
    let mut carried: Option<SubmitRequest> = None;
    loop {
        let first = match carried.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => break,
            },
        };
        let mut bytes = first.len();
        batch.push(first);
        while batch.len() < MAX_SUBMIT_BATCH && bytes < budget {
            match rx.try_recv() {
                Ok(r) => {
                    let len = r.len();
                    if bytes.saturating_add(len) > budget {
                        carried = Some(r);
                        break;
                    }
                    bytes = bytes.saturating_add(len);
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        // Submitters that gave up (dropped their future) before we got here are skipped.
        batch.retain(|r| !r.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let mut inv = store::SUBMIT.prepare_invoke();
        inv.key(&keys.stream)
            .key(&keys.delayed)
            .key(&keys.submitted)
            .arg(max_len);
        for r in &batch {
            inv.arg(&r.task).arg(&r.payload).arg(r.result_ttl);
        }
        match inv.invoke_async::<Value>(&mut conn).await {
            Ok(v) => {
                let ids = store::array(&v);
                for (i, r) in batch.drain(..).enumerate() {
                    let _ = r.reply.send(Ok(ids.get(i).and_then(store::string)));
                }
            }
            Err(e) => {
                for r in batch.drain(..) {
                    let _ = r.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Builds a [`RedisQueue`] with options; [`RedisQueue::connect`] is the short form.
///
/// Dropping the builder does nothing. Its `Debug` output leaves the URL out (it may
/// carry a password).
#[derive(Clone)]
pub struct QueueBuilder {
    url: String,
    name: String,
    max_len: u64,
    response_timeout: Duration,
    create: bool,
}

/// A snapshot of a queue's state, from [`RedisQueue::stats`].
///
/// Dropping it does nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Jobs in the stream that no worker has taken yet.
    pub waiting: u64,
    /// Jobs a worker has taken and not yet acknowledged (the consumer group's pending
    /// list).
    pub in_flight: u64,
    /// Failed jobs waiting for their retry backoff to pass.
    pub delayed: u64,
    /// Jobs in the dead-letter stream.
    pub dead: u64,
    /// Total submissions accepted since the queue was created.
    pub submitted: u64,
    /// Total successful runs acknowledged since the queue was created. A job counts once
    /// even if it ran more than once (after its worker was killed or lost its lease):
    /// an outcome is recorded only by the worker the entry is pending under (the last to
    /// take it), once.
    pub completed: u64,
    /// In-flight jobs per consumer (worker process) holding at least one, from `XPENDING`.
    pub consumers: Vec<(String, u64)>,
}

/// One job in the dead-letter stream, from [`RedisQueue::dead_letters`].
///
/// Dropping it does nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The id of the dead-letter entry: pass it to [`RedisQueue::requeue`].
    pub id: String,
    /// The job id (empty if the original entry was too malformed to have one).
    pub job: JobId,
    /// The task name as submitted (may be empty or unknown to the workers).
    pub task: String,
    /// The JSON payload as submitted (lossy UTF-8 if it was not text, cut, and marked
    /// "... (cut)", where that made it longer than the entry's payload and 64 KB: so that
    /// the dead letter fits in what the server took).
    pub payload: String,
    /// How many times a handler ran it.
    pub attempts: u64,
    /// Why it was dead-lettered (the handler's last error, "unknown task", ...).
    pub reason: String,
    /// When, in Unix milliseconds (server clock).
    pub at_ms: u64,
}

impl QueueBuilder {
    /// Maximum number of unfinished jobs (waiting, in flight or delayed for retry).
    /// [`RedisQueue::submit`] waits while the queue holds that many; `try_submit` fails
    /// with [`Error::Full`]. The check and the `XADD` run in one Lua script, so concurrent
    /// producers cannot overshoot. Default: unbounded.
    ///
    /// # Panics
    ///
    /// If `max_len` is 0.
    pub fn max_len(mut self, max_len: u64) -> Self {
        assert!(max_len > 0, "max_len must be at least 1");
        self.max_len = max_len;
        self
    }

    /// How long a command may wait for Redis's reply before it fails. Default: 5 s.
    ///
    /// # Panics
    ///
    /// If `timeout` is zero.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "response_timeout must not be zero");
        self.response_timeout = timeout;
        self
    }

    /// Whether [`connect`](Self::connect) creates the stream and consumer group when they
    /// do not exist yet. Default: true. Pass false for a handle that only reads
    /// ([`RedisQueue::stats`], [`RedisQueue::dead_letters`]), so that inspecting a queue
    /// that does not exist (a misspelled name) creates nothing: its figures are all 0.
    /// Submitting through such a handle still works (the first submit creates the
    /// stream; workers create the group, from id 0, when they are built).
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Connects, and (unless [`create(false)`](Self::create)) creates the stream and
    /// consumer group if they do not exist yet.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for an unusable queue name; [`Error::Redis`] for a bad URL
    /// or when the server cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the half-made connection.
    pub async fn connect(self) -> Result<RedisQueue, Error> {
        let keys = Keys::new(&self.name)?;
        let (_client, mut conn) = store::connect(&self.url, self.response_timeout).await?;
        if self.create {
            store::ensure_group(&mut conn, &keys).await?;
        }
        let max_arg = store::max_arg_len(&mut conn).await;
        let budget = store::finish_budget(&mut conn).await;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(submitter(
            keys.clone(),
            conn.clone(),
            self.max_len,
            budget,
            rx,
        ));
        Ok(RedisQueue {
            keys,
            conn,
            max_len: self.max_len,
            max_arg,
            submitter: tx,
        })
    }
}

impl RedisQueue {
    /// The longest result TTL [`submit_with_result`](Self::submit_with_result) accepts:
    /// `u32::MAX` seconds (about 136 years). Redis's `EX` and the JSON of a retry record
    /// both hold it exactly; for "as long as possible", pass this.
    pub const MAX_RESULT_TTL: Duration = Duration::from_secs(store::MAX_RESULT_TTL_SECS);

    /// Connects to the queue `name` on the Redis server at `url` (`redis://`,
    /// `redis://user:password@host:port/db`, `redis+unix:///path`; `rediss://` needs this
    /// crate's `tls` feature). Unbounded; use [`RedisQueue::builder`] for `max_len`.
    ///
    /// # Errors
    ///
    /// As [`QueueBuilder::connect`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn connect(url: &str, name: &str) -> Result<RedisQueue, Error> {
        Self::builder(url, name).connect().await
    }

    /// A builder for a queue handle with options.
    pub fn builder(url: &str, name: &str) -> QueueBuilder {
        QueueBuilder {
            url: url.to_owned(),
            name: name.to_owned(),
            max_len: 0,
            response_timeout: Duration::from_secs(5),
            create: true,
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.keys.name
    }

    /// The configured `max_len`, if any.
    pub fn max_len(&self) -> Option<u64> {
        (self.max_len > 0).then_some(self.max_len)
    }

    /// Submits a job for the task `task`; `payload` is stored as JSON. Waits while the
    /// queue is at `max_len` (polling every few milliseconds, up to 50 ms apart), for as
    /// long as it takes: wrap it in `tokio::time::timeout`, or use
    /// [`try_submit`](Self::try_submit), if no worker may be consuming.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::Encode`], [`Error::Closed`] if the runtime that
    /// connected this queue has shut down, or [`Error::Redis`] if the server cannot be
    /// reached (not retried here: the job may or may not have been added when
    /// the reply was lost).
    ///
    /// [`Error::Config`] if the payload's JSON is longer than the server takes in one
    /// argument (`proto-max-bulk-len`, read when the queue connected; 512 MB if it could
    /// not be read): nothing is sent. (Sent, such a payload would make Redis close the
    /// connection this handle shares, failing the submits batched with it and the other
    /// calls in flight.)
    ///
    /// # Cancel safety
    ///
    /// Not fully: if the future is dropped after the submission was handed to the
    /// submitter task, the job may still be added without the caller learning its id.
    /// Dropped while waiting for room (between attempts), nothing was added.
    pub async fn submit<P: Serialize + ?Sized>(
        &self,
        task: &str,
        payload: &P,
    ) -> Result<JobId, Error> {
        self.submit_inner(task, payload, 0, true).await
    }

    /// Like [`submit`](Self::submit) but never waits for room.
    ///
    /// # Errors
    ///
    /// [`Error::Full`] when the queue holds `max_len` jobs; otherwise as `submit`.
    ///
    /// # Cancel safety
    ///
    /// As `submit`.
    pub async fn try_submit<P: Serialize + ?Sized>(
        &self,
        task: &str,
        payload: &P,
    ) -> Result<JobId, Error> {
        self.submit_inner(task, payload, 0, false).await
    }

    /// Like [`submit`](Self::submit), and asks the worker to keep the handler's return
    /// value (or its final error) for `ttl`, to be read with
    /// [`wait_result`](Self::wait_result).
    ///
    /// `ttl` is counted in whole seconds (the fraction is dropped).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if `ttl` is under one second or above
    /// [`MAX_RESULT_TTL`](Self::MAX_RESULT_TTL) (nothing is submitted); otherwise as
    /// `submit`.
    ///
    /// # Cancel safety
    ///
    /// As `submit`.
    pub async fn submit_with_result<P: Serialize + ?Sized>(
        &self,
        task: &str,
        payload: &P,
        ttl: Duration,
    ) -> Result<JobId, Error> {
        let secs = ttl.as_secs();
        if secs == 0 {
            return Err(Error::Config("result ttl must be at least 1 s".into()));
        }
        if ttl > Self::MAX_RESULT_TTL {
            return Err(Error::Config(format!(
                "result ttl must be at most {} s (about 136 years; RedisQueue::MAX_RESULT_TTL), \
                 got {ttl:?}",
                store::MAX_RESULT_TTL_SECS
            )));
        }
        self.submit_inner(task, payload, secs, true).await
    }

    async fn submit_inner<P: Serialize + ?Sized>(
        &self,
        task: &str,
        payload: &P,
        result_ttl: u64,
        wait: bool,
    ) -> Result<JobId, Error> {
        store::validate_name("task name", task)?;
        let json = serde_json::to_string(payload).map_err(Error::Encode)?;
        if json.len() as u64 > self.max_arg {
            return Err(Error::Config(format!(
                "the payload is {} bytes of JSON; the server takes at most {} bytes in one \
                 argument (proto-max-bulk-len)",
                json.len(),
                self.max_arg
            )));
        }
        let mut pause = Duration::from_millis(1);
        loop {
            let (reply, answer) = oneshot::channel();
            let request = SubmitRequest {
                task: task.to_owned(),
                payload: json.clone(),
                result_ttl,
                reply,
            };
            if self.submitter.send(request).is_err() {
                return Err(Error::Closed);
            }
            let id = answer.await.map_err(|_| Error::Closed)??;
            match id {
                Some(id) => return Ok(id),
                None if !wait => {
                    return Err(Error::Full {
                        max_len: self.max_len,
                    })
                }
                None => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
            }
        }
    }

    /// Waits up to `timeout` for the result of a job submitted with
    /// [`submit_with_result`](Self::submit_with_result), and decodes it. The result stays
    /// readable until its TTL ends, so it can be read more than once (or until the job is
    /// [requeued](Self::requeue)). A `timeout` too long to be added to the current time
    /// (`Duration::MAX`) means as long as it takes.
    ///
    /// # Errors
    ///
    /// [`Error::JobFailed`] if the job was dead-lettered (with the reason);
    /// [`Error::ResultTimeout`]; [`Error::Decode`] if the value does not fit `R`;
    /// [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn wait_result<R: DeserializeOwned>(
        &self,
        job: &str,
        timeout: Duration,
    ) -> Result<R, Error> {
        let key = format!("{}{}", self.keys.result_prefix, job);
        // None: no deadline.
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        let mut conn = self.conn.clone();
        let mut pause = Duration::from_millis(2);
        loop {
            let v: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
            if let Some(v) = v {
                let mut doc: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&v).map_err(Error::Decode)?;
                if let Some(ok) = doc.remove("ok") {
                    return serde_json::from_value(ok).map_err(Error::Decode);
                }
                let err = doc
                    .remove("err")
                    .map(|e| {
                        e.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| e.to_string())
                    })
                    .unwrap_or_else(|| "unknown failure".into());
                return Err(Error::JobFailed(err));
            }
            let now = tokio::time::Instant::now();
            let nap = match deadline {
                Some(deadline) if now >= deadline => return Err(Error::ResultTimeout),
                Some(deadline) => pause.min(deadline - now),
                None => pause,
            };
            tokio::time::sleep(nap).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Reads the queue's counters in one round trip.
    ///
    /// A stream without its consumer group (after [`purge`](Self::purge), or a Redis
    /// restart without persistence, until a worker or a new queue handle recreates it)
    /// has nothing in flight: every entry counts as waiting.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`]; also when the `submitted` or `completed` counter key holds
    /// something other than a count (a whole number from 0 that Redis can increment: no
    /// sign, no leading zero, at most `i64::MAX`; overwritten by hand): the
    /// error names the key and says to `DEL` it (counting starts again from 0). Such a
    /// counter is not shown as 0, which would read as "nothing done". Workers go on
    /// acknowledging jobs with such a counter, without counting them.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn stats(&self) -> Result<QueueStats, Error> {
        use redis::RedisResult as R;
        type Replies = (R<u64>, R<u64>, R<u64>, R<Value>, R<Value>, R<Value>);
        let mut conn = self.conn.clone();
        let k = &self.keys;
        // Errors come back per command, so that a missing group (XPENDING's NOGROUP)
        // does not hide the other figures.
        let (xlen, delayed, dead, submitted, completed, pending): Replies = redis::pipe()
            .ignore_errors()
            .cmd("XLEN")
            .arg(&k.stream)
            .cmd("ZCARD")
            .arg(&k.delayed)
            .cmd("XLEN")
            .arg(&k.dead)
            .cmd("GET")
            .arg(&k.submitted)
            .cmd("GET")
            .arg(&k.completed)
            .cmd("XPENDING")
            .arg(&k.stream)
            .arg(GROUP)
            .query_async(&mut conn)
            .await?;
        let pending = match pending {
            Err(e) if e.code() == Some("NOGROUP") => Value::Nil,
            other => other?,
        };
        let (xlen, delayed, dead) = (xlen?, delayed?, dead?);
        let submitted = counter(&k.submitted, submitted)?;
        let completed = counter(&k.completed, completed)?;
        let summary = store::array(&pending);
        let in_flight = summary.first().and_then(store::int).unwrap_or(0).max(0) as u64;
        let consumers = summary
            .get(3)
            .map(store::array)
            .unwrap_or(&[])
            .iter()
            .filter_map(|c| {
                let c = store::array(c);
                Some((
                    store::string(c.first()?)?,
                    store::int(c.get(1)?)?.max(0) as u64,
                ))
            })
            .collect();
        Ok(QueueStats {
            waiting: xlen.saturating_sub(in_flight),
            in_flight,
            delayed,
            dead,
            submitted,
            completed,
            consumers,
        })
    }

    /// Whether the queue exists: whether any of its keys does (the stream, the delayed
    /// retries, the dead letters or a counter). A queue that was never created (a
    /// misspelled name), or was [purged](Self::purge) and not used since, does not; its
    /// [`stats`](Self::stats) are all 0. The CLI's `stats` and `dead` use it to say "no
    /// such queue" rather than print zeros.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn exists(&self) -> Result<bool, Error> {
        let mut conn = self.conn.clone();
        let k = &self.keys;
        let n: u64 = redis::cmd("EXISTS")
            .arg(&k.stream)
            .arg(&k.delayed)
            .arg(&k.dead)
            .arg(&k.submitted)
            .arg(&k.completed)
            .query_async(&mut conn)
            .await?;
        Ok(n > 0)
    }

    /// Lists up to `count` dead letters, oldest first (`usize::MAX`: all of them; 0:
    /// none, without asking Redis).
    ///
    /// # Errors
    ///
    /// [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn dead_letters(&self, count: usize) -> Result<Vec<DeadLetter>, Error> {
        self.dead_range("-", "+", count).await
    }

    /// Dead letters with ids from `start` to `end` (XRANGE syntax), at most `count`.
    async fn dead_range(
        &self,
        start: &str,
        end: &str,
        count: usize,
    ) -> Result<Vec<DeadLetter>, Error> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let v: Value = redis::cmd("XRANGE")
            .arg(&self.keys.dead)
            .arg(start)
            .arg(end)
            .arg("COUNT")
            // Redis reads COUNT as a signed 64-bit number.
            .arg(count.min(i64::MAX as usize) as u64)
            .query_async(&mut conn)
            .await?;
        Ok(store::parse_entries(v)
            .into_iter()
            .map(|e| {
                let text = |f: &str| {
                    e.field(f)
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default()
                };
                let num = |f: &str| text(f).parse::<u64>().unwrap_or(0);
                DeadLetter {
                    job: text("j"),
                    task: text("t"),
                    payload: text("p"),
                    attempts: num("a"),
                    reason: text("reason"),
                    at_ms: num("at"),
                    id: e.id,
                }
            })
            .collect())
    }

    /// Moves one dead letter back to the work stream with a fresh attempt count (ignoring
    /// `max_len`: this is an operator's action), and deletes the job's stored result (the
    /// failure recorded when it was dead-lettered), so that
    /// [`wait_result`](Self::wait_result) waits for the new run. Returns the new entry id,
    /// or `None` if there is no dead letter with that id.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if `dead_id` is not a full stream id `<ms>-<seq>` (both parts
    /// decimal numbers, as [`DeadLetter::id`] has it: Redis would read `1000` as a range
    /// of ids for one and as `1000-0` for another); [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// The move is one atomic script: if the future is dropped, it either happened or
    /// not.
    pub async fn requeue(&self, dead_id: &str) -> Result<Option<String>, Error> {
        if !is_full_stream_id(dead_id) {
            return Err(Error::Config(format!(
                "dead-letter id must be a full stream id <ms>-<seq> (as dead_letters lists \
                 it), got {dead_id:?}"
            )));
        }
        let mut conn = self.conn.clone();
        Ok(store::REQUEUE
            .key(&self.keys.dead)
            .key(&self.keys.stream)
            .arg(dead_id)
            .arg(&self.keys.result_prefix)
            .invoke_async(&mut conn)
            .await?)
    }

    /// Requeues every dead letter there when it starts (in batches of 100), as
    /// [`requeue`](Self::requeue) does; returns how many were moved. Letters added
    /// meanwhile (for example requeued jobs that fail for good again while it runs) are
    /// left for the next call, so it returns even while workers dead-letter jobs as fast
    /// as it moves them.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`]; letters moved before the error stay moved.
    ///
    /// # Cancel safety
    ///
    /// Each letter moves atomically; dropping the future stops between letters.
    pub async fn requeue_all(&self) -> Result<u64, Error> {
        // The newest letter now: later ones are not this call's.
        let mut conn = self.conn.clone();
        let last: Value = redis::cmd("XREVRANGE")
            .arg(&self.keys.dead)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        let Some(last) = store::parse_entries(last).pop().map(|e| e.id) else {
            return Ok(0);
        };
        let mut moved = 0;
        let mut start = "-".to_owned();
        loop {
            let batch = self.dead_range(&start, &last, 100).await?;
            let Some(newest) = batch.last() else {
                return Ok(moved);
            };
            // Exclusive: past this batch even if a letter could not be moved.
            start = format!("({}", newest.id);
            for d in batch {
                if self.requeue(&d.id).await?.is_some() {
                    moved += 1;
                }
            }
        }
    }

    /// Deletes the queue's keys: the stream with its group and pending lists, delayed
    /// retries, dead letters and counters (results expire by themselves). Running
    /// workers recreate the stream and group on their next read.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// One `DEL` command: it either happened or not.
    pub async fn purge(&self) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        let k = &self.keys;
        let _: u64 = redis::cmd("DEL")
            .arg(&k.stream)
            .arg(&k.delayed)
            .arg(&k.dead)
            .arg(&k.submitted)
            .arg(&k.completed)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }
}

/// The value of the counter `key` from its `GET` reply: 0 if the key is missing; an error
/// that names the key if it holds something that is not a count (overwritten by hand).
fn counter(key: &str, reply: redis::RedisResult<Value>) -> Result<u64, Error> {
    let broken = |holds: String| {
        Error::Redis(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "a queue counter is broken",
            format!("{key} {holds}, not a count: DEL it to count again from 0"),
        )))
    };
    match reply {
        Ok(Value::Nil) => Ok(0),
        Ok(v) => match store::string(&v) {
            Some(s) => as_count(&s).ok_or_else(|| {
                let mut shown: String = s.chars().take(40).collect();
                if shown.len() < s.len() {
                    shown.push_str("...");
                }
                broken(format!("holds {shown:?}"))
            }),
            None => Err(broken("holds bytes that are not text".into())),
        },
        Err(e) if e.code() == Some("WRONGTYPE") => {
            Err(broken("holds another type than a string".into()))
        }
        Err(e) => Err(e.into()),
    }
}

/// `s` as a count, if Redis holds it as one it can increment: a whole number from 0 in
/// its canonical form (no sign, no leading zero, at most `i64::MAX`). `INCRBY` refuses
/// anything else ("not an integer or out of range"), so such a counter would never move.
fn as_count(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical
        .then(|| s.parse::<i64>().ok())
        .flatten()
        .and_then(|n| u64::try_from(n).ok())
}

/// Whether `id` is `<ms>-<seq>`, both parts decimal digits that fit a `u64`.
fn is_full_stream_id(id: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u64>().is_ok()
    };
    matches!(id.split_once('-'), Some((ms, seq)) if part(ms) && part(seq))
}

impl fmt::Debug for QueueBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the URL: it may carry a password (`redis://user:password@host/`).
        f.debug_struct("QueueBuilder")
            .field("name", &self.name)
            .field("max_len", &self.max_len)
            .field("response_timeout", &self.response_timeout)
            .field("create", &self.create)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisQueue")
            .field("name", &self.keys.name)
            .field("max_len", &self.max_len)
            .finish_non_exhaustive()
    }
}
