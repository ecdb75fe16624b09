//! Elastic workers (SmartAioPool): the live worker count grows with the queue and shrinks
//! when workers stay idle.
//!
//! A worker here is a number, the pool's current limit on running jobs: adding one costs
//! nothing. The engine adds one on submit when queued jobs outnumber idle workers. Workers
//! idle for `idle_timeout` are retired, never below `min_workers`, when the pool next
//! looks at its worker count (`worker_count()` and the other counts, `set_max_concurrency`).
//! Nothing runs to retire them: an idle worker holds nothing, and one not yet retired only
//! means a job that comes first starts without the pool growing again. So no task and no
//! timer is needed, and a runtime without tokio's time driver serves as well as any.

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
}

impl Elastic {
    pub(crate) fn new(config: ElasticConfig, idle_workers: usize) -> Self {
        // The first workers exist from the start; they count as idle since now. Taken
        // outside a runtime this is std's clock, which is what tokio's Instant uses then.
        let now = Instant::now();
        Elastic {
            config,
            idle_since: std::iter::repeat_n(now, idle_workers).collect(),
        }
    }

    /// A worker took a job.
    pub(crate) fn busy(&mut self) {
        self.idle_since.pop_back();
    }

    /// A worker finished a job.
    pub(crate) fn idle(&mut self) {
        self.idle_since.push_back(Instant::now());
    }

    /// A worker was added (idle until it takes a job).
    pub(crate) fn added(&mut self) {
        self.idle_since.push_back(Instant::now());
    }

    /// Retires the workers idle for `idle_timeout` by `now`, never below `min_workers`.
    /// Returns the new limit.
    pub(crate) fn retire(&mut self, mut limit: usize, now: Instant) -> usize {
        while limit > self.config.min_workers {
            match self.idle_since.front() {
                Some(&since) if later_by(since, self.config.idle_timeout) <= now => {
                    self.idle_since.pop_front();
                    limit -= 1;
                }
                _ => break,
            }
        }
        limit
    }
}
