//! The crate's error type.

use std::fmt;

/// Everything that can go wrong in this crate.
///
/// Dropping an `Error` has no effect besides freeing it.
#[non_exhaustive]
pub enum Error {
    /// Redis rejected a command, or the connection failed (bad URL, refused, timed out,
    /// lost). Producers see it as it comes; workers retry these with backoff on their own.
    Redis(redis::RedisError),
    /// The queue name or a task name is not usable (empty, too long, or with `{`, `}` or
    /// control characters).
    InvalidName(String),
    /// A builder setting or an argument is out of range or inconsistent (the message says
    /// which): a result TTL, a dead-letter id that is not a full stream id, ...
    Config(String),
    /// `try_submit` found the queue at its `max_len`.
    Full {
        /// The configured limit.
        max_len: u64,
    },
    /// A payload could not be serialised to JSON.
    Encode(serde_json::Error),
    /// A stored result could not be deserialised into the requested type.
    Decode(serde_json::Error),
    /// The job whose result was awaited failed for good: its handler kept failing until
    /// `max_deliveries`, or it was dead-lettered (the message is the reason).
    JobFailed(String),
    /// No result appeared within the given time (the job may still be waiting or running,
    /// or the submission did not ask for a result).
    ResultTimeout,
    /// `run` was called while this worker (or a clone of it) is already running, or after
    /// it was shut down.
    AlreadyRunning,
    /// The queue handle's background submitter task has ended: the tokio runtime that
    /// called [`RedisQueue::connect`](crate::RedisQueue::connect) was shut down. Connect
    /// again from the runtime you submit from.
    Closed,
}

impl Error {
    /// Whether this failure is worth retrying later: the connection was refused, dropped or
    /// timed out, or the server is loading its data, busy with a script, or out of memory
    /// (`LOADING`, `BUSY`, `OOM`, ...), as opposed to a usage error or a bad command.
    /// Workers retry these by themselves (except a finished job's record refused with
    /// `OOM`: tried again for about 1.5 s, after the other records, so that plain
    /// acknowledgements pass, then given up; or whose call alone is lost 6 times in a row
    /// while Redis answers, its entry still pending: given up after about 0.6 s when
    /// Redis closes the connection of each call; either way the job's entry stays
    /// pending until it is reclaimed after the lease, the job runs again, and the worker
    /// reports an "acknowledgement given up" error, not retryable); producers decide.
    ///
    /// A failed authentication (a wrong password or user in the URL) is not retryable:
    /// it is a usage error, although the redis crate would reconnect for it. (A running
    /// worker whose reconnection meets it, its password changed meanwhile, still retries,
    /// so that it goes on once the password is put right.)
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Redis(e) => {
                is_transient(e) && e.kind() != redis::ErrorKind::AuthenticationFailed
            }
            _ => false,
        }
    }
}

pub(crate) fn is_transient(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        // A restarting server answers LOADING while it replays its AOF; the others pass
        // too (a long script, maxmemory reached, a failover).
        || matches!(
            e.code(),
            Some("LOADING" | "BUSY" | "OOM" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN")
        )
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Redis(e) => write!(f, "redis: {e}"),
            Error::InvalidName(m) => write!(f, "invalid name: {m}"),
            Error::Config(m) => write!(f, "invalid configuration: {m}"),
            Error::Full { max_len } => write!(f, "queue is full (max_len {max_len})"),
            Error::Encode(e) => write!(f, "cannot encode payload as json: {e}"),
            Error::Decode(e) => write!(f, "cannot decode result json: {e}"),
            Error::JobFailed(m) => write!(f, "job failed: {m}"),
            Error::ResultTimeout => write!(f, "timed out waiting for the job's result"),
            Error::AlreadyRunning => write!(f, "worker is already running or was shut down"),
            Error::Closed => write!(
                f,
                "the queue's submitter task has ended (the runtime that connected it shut down)"
            ),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Redis(e) => f.debug_tuple("Redis").field(e).finish(),
            Error::InvalidName(m) => f.debug_tuple("InvalidName").field(m).finish(),
            Error::Config(m) => f.debug_tuple("Config").field(m).finish(),
            Error::Full { max_len } => f.debug_struct("Full").field("max_len", max_len).finish(),
            Error::Encode(e) => f.debug_tuple("Encode").field(e).finish(),
            Error::Decode(e) => f.debug_tuple("Decode").field(e).finish(),
            Error::JobFailed(m) => f.debug_tuple("JobFailed").field(m).finish(),
            Error::ResultTimeout => f.write_str("ResultTimeout"),
            Error::AlreadyRunning => f.write_str("AlreadyRunning"),
            Error::Closed => f.write_str("Closed"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Redis(e) => Some(e),
            Error::Encode(e) | Error::Decode(e) => Some(e),
            _ => None,
        }
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Error::Redis(e)
    }
}
