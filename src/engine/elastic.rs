//! Elastic workers (SmartAioPool): the live worker count grows with the queue and shrinks
//! when workers stay idle.
//!
//! A worker here is a number, the pool's current limit on running jobs: adding one costs
//! nothing. The engine adds one on submit when queued jobs outnumber idle workers. Workers
//! idle for `idle_timeout` are retired, never below `min_workers`, when the pool next
//! looks at its worker count (`worker_count()` and the other counts, `set_max_concurrency`).
//! Nothing runs to retire them: an idle worker holds at most a parked slot task (the
//! engine ends those of retired workers then: `Engine::trim_idle`), and one not yet
//! retired only means a job that comes first starts without the pool growing again. So no
//! task and no timer is needed, and a runtime without tokio's time driver serves as well
//! as any.

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
    /// When each idle worker became idle; oldest at the front. With `unstamped`, always
    /// `limit - running` workers.
    idle_since: VecDeque<Instant>,
    /// Workers that became idle under the engine's lock now held, newest of all, not yet
    /// stamped: most are taken again before the lock is released (a worker whose job
    /// ended takes the next one), and those need no clock read. The rest are stamped
    /// together, with one read, when the lock is released ([`settle`](Self::settle)) or
    /// when the pool looks at its worker count ([`retire`](Self::retire)).
    unstamped: usize,
}

impl Elastic {
    pub(crate) fn new(config: ElasticConfig, idle_workers: usize) -> Self {
        // The first workers exist from the start; they count as idle since now. Taken
        // outside a runtime this is std's clock, which is what tokio's Instant uses then.
        let now = Instant::now();
        Elastic {
            config,
            idle_since: std::iter::repeat_n(now, idle_workers).collect(),
            unstamped: 0,
        }
    }

    /// A worker took a job: the one idle for the shortest time.
    pub(crate) fn busy(&mut self) {
        if self.unstamped > 0 {
            self.unstamped -= 1;
        } else {
            self.idle_since.pop_back();
        }
    }

    /// A worker finished a job.
    pub(crate) fn idle(&mut self) {
        self.unstamped += 1;
    }

    /// A worker was added (idle until it takes a job).
    pub(crate) fn added(&mut self) {
        self.unstamped += 1;
    }

    /// Stamps the workers that became idle under the lock now held and are idle still:
    /// called as that lock is released, so each stamp is at most that critical section
    /// late.
    #[inline]
    pub(crate) fn settle(&mut self) {
        if self.unstamped > 0 {
            self.stamp(Instant::now());
        }
    }

    fn stamp(&mut self, now: Instant) {
        self.idle_since.extend(std::iter::repeat_n(
            now,
            std::mem::take(&mut self.unstamped),
        ));
    }

    /// Retires the workers idle for `idle_timeout` by `now`, never below `min_workers`.
    /// Returns the new limit.
    pub(crate) fn retire(&mut self, mut limit: usize, now: Instant) -> usize {
        // Those not stamped yet became idle under this lock: by `now`, and not long ago.
        self.stamp(now);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn elastic(idle_workers: usize) -> Elastic {
        let config = ElasticConfig {
            min_workers: 0,
            idle_timeout: Duration::from_secs(5),
        };
        Elastic::new(config, idle_workers)
    }

    #[test]
    fn a_worker_idle_only_under_one_lock_is_never_stamped() {
        let mut el = elastic(0);
        // A job ends and its worker takes the next one, in one critical section.
        el.idle();
        el.busy();
        el.settle();
        assert_eq!((el.idle_since.len(), el.unstamped), (0, 0));
    }

    #[test]
    fn workers_left_idle_are_stamped_on_release_and_retire_from_then() {
        let mut el = elastic(0);
        el.added();
        el.idle();
        let before = Instant::now();
        el.settle();
        assert_eq!((el.idle_since.len(), el.unstamped), (2, 0));
        let since = *el.idle_since.front().unwrap();
        assert!(since >= before, "stamped before the lock was released");
        let timeout = Duration::from_secs(5);
        assert_eq!(el.retire(2, since + timeout - Duration::from_millis(1)), 2);
        assert_eq!(el.retire(2, since + timeout), 0);
    }

    #[test]
    fn a_busy_worker_is_the_newest_idle_one() {
        let t0 = Instant::now();
        let mut el = elastic(1); // idle since about t0
        el.idle();
        // Looking at the count stamps the unstamped worker with the look's time.
        let look = t0 + Duration::from_secs(3);
        assert_eq!(el.retire(2, look), 2);
        el.busy(); // takes the one idle since `look`
        assert_eq!(el.idle_since.len(), 1);
        assert!(*el.idle_since.front().unwrap() < look);
        assert_eq!(el.retire(1, t0 + Duration::from_secs(6)), 0);
    }
}
