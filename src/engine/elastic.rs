//! Elastic workers (SmartAioPool): the live worker count grows with the queue and shrinks
//! when workers stay idle.
//!
//! A worker here is a number, the pool's current limit on running jobs: adding one costs
//! nothing. The engine adds one on submit when queued jobs outnumber idle workers; a
//! janitor task retires workers idle for `idle_timeout`, never below `min_workers`.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::limits::later_by;

/// Elastic worker settings, as the pool's builder gives them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ElasticConfig {
    pub(crate) min_workers: usize,
    pub(crate) idle_timeout: Duration,
}

pub(crate) struct Elastic {
    pub(crate) config: ElasticConfig,
    /// When each idle worker became idle; oldest at the front. Its length is always
    /// `limit - running`.
    idle_since: VecDeque<Instant>,
    /// A janitor task is alive (on some runtime).
    pub(crate) janitor_alive: bool,
}

impl Elastic {
    pub(crate) fn new(config: ElasticConfig, idle_workers: usize) -> Self {
        // The first workers exist from the start; they count as idle since now. Taken
        // outside a runtime this is std's clock, which is what tokio's Instant uses then.
        let now = Instant::now();
        Elastic {
            config,
            idle_since: std::iter::repeat_n(now, idle_workers).collect(),
            janitor_alive: false,
        }
    }

    /// A worker took a job.
    pub(crate) fn busy(&mut self) {
        self.idle_since.pop_back();
    }

    /// A worker finished a job. Returns whether a janitor must be started.
    pub(crate) fn idle(&mut self, limit: usize) -> bool {
        self.idle_since.push_back(Instant::now());
        limit > self.config.min_workers && !self.janitor_alive
    }

    /// A worker was added (idle until it takes a job).
    pub(crate) fn added(&mut self) {
        self.idle_since.push_back(Instant::now());
    }

    /// Retires the workers idle for `idle_timeout`. Returns the new limit and the next
    /// deadline, if any worker beyond `min_workers` is left to watch.
    pub(crate) fn retire(&mut self, mut limit: usize, now: Instant) -> (usize, Option<Instant>) {
        while limit > self.config.min_workers {
            match self.idle_since.front() {
                Some(&since) if later_by(since, self.config.idle_timeout) <= now => {
                    self.idle_since.pop_front();
                    limit -= 1;
                }
                Some(&since) => return (limit, Some(later_by(since, self.config.idle_timeout))),
                None => return (limit, None),
            }
        }
        (limit, None)
    }
}
