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

/// Elastic worker settings, as the pool's builder gives them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ElasticConfig {
    pub(crate) min_workers: usize,
    pub(crate) idle_timeout: Duration,
}

pub(crate) struct Elastic {
    pub(crate) config: ElasticConfig,
    /// When the idle workers became idle, oldest at the front, as runs of workers that
    /// became idle at the same instant: (that instant, how many; never 0). With
    /// `unstamped`, always `limit - running` workers. Runs, not one entry per worker: a
    /// pool's first `min_workers` workers are one run, so a large `min_workers` (any
    /// number up to the pool's largest size) costs no memory or time per worker
    /// (RELIABILITY.md, 338). The third field is the time a run's workers were
    /// stamped at, on the clock that stamped them: later than the first only for a run
    /// [`clamp`](Self::clamp) moved back from a clock ahead.
    idle_since: VecDeque<(Instant, usize, Instant)>,
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
            idle_since: (idle_workers > 0)
                .then_some((now, idle_workers, now))
                .into_iter()
                .collect(),
            unstamped: 0,
        }
    }

    /// A worker took a job: the one idle for the shortest time.
    pub(crate) fn busy(&mut self) {
        if self.unstamped > 0 {
            self.unstamped -= 1;
        } else {
            self.busy_stamped(1);
        }
    }

    /// `n` workers left the idle ones (retired by a shrink): those idle for the shortest
    /// time.
    pub(crate) fn busy_n(&mut self, n: usize) {
        let unstamped = n.min(self.unstamped);
        self.unstamped -= unstamped;
        self.busy_stamped(n - unstamped);
    }

    /// `n` stamped workers left the idle ones, the newest first.
    fn busy_stamped(&mut self, mut n: usize) {
        while n > 0 {
            let Some((_, count, _)) = self.idle_since.back_mut() else {
                return;
            };
            let k = n.min(*count);
            *count -= k;
            n -= k;
            if *count == 0 {
                self.idle_since.pop_back();
            }
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

    /// `n` workers were added (idle until they take jobs).
    pub(crate) fn added_n(&mut self, n: usize) {
        self.unstamped += n;
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
        let n = std::mem::take(&mut self.unstamped);
        if n == 0 {
            return;
        }
        self.clamp(now);
        match self.idle_since.back_mut() {
            // A clock behind the newest stamp's (another runtime's) stamps at the newest:
            // the runs stay in order, and such workers retire late, never early.
            // Merged only into a run stamped there (not one `clamp` moved back from a clock
            // ahead, which keeps that clock's stamp for its own workers alone).
            Some((since, count, made)) if *since >= now && *made == *since => *count += n,
            Some(&mut (since, ..)) if since >= now => self.idle_since.push_back((since, n, since)),
            _ => self.idle_since.push_back((now, n, now)),
        }
    }

    /// Stamps read from a clock ahead of both `now`'s and the real clock's are taken as
    /// made at the later of the two, as the rate window does with its starts
    /// (`RateWindow::clamp`). A pool is shared by runtimes, and with tokio's paused time
    /// each has a clock of its own: workers stamped idle by a paused runtime whose clock
    /// ran ahead (a test that slept an hour) would otherwise sit in another runtime's
    /// future, and not retire there for as long as that clock ran ahead. The time they
    /// were stamped at is kept with the run: a clock that has reached it (the one ahead
    /// that stamped them) counts their idle time from it in [`retire`](Self::retire), so
    /// another clock's look retires none of them early there. Walks from the newest run;
    /// with one clock (time never goes back) it is one comparison.
    fn clamp(&mut self, now: Instant) {
        if self
            .idle_since
            .back()
            .is_none_or(|&(newest, _, _)| newest <= now)
        {
            return;
        }
        let bound = now.max(Instant::from_std(std::time::Instant::now()));
        // In place, each run keeping its own stamp: runs of several clocks ahead merged
        // into one, with the latest clock's stamp, would be counted from the clamped time
        // by the clocks that have not reached it (their own workers retiring early).
        for (since, ..) in self.idle_since.iter_mut().rev() {
            if *since <= bound {
                break;
            }
            *since = bound;
        }
    }

    /// Retires the workers idle for `idle_timeout` by `now`, never below `min_workers`.
    /// Returns the new limit.
    pub(crate) fn retire(&mut self, mut limit: usize, now: Instant) -> usize {
        // Those not stamped yet became idle under this lock: by `now`, and not long ago.
        self.stamp(now);
        self.clamp(now);
        while limit > self.config.min_workers {
            match self.idle_since.front_mut() {
                // A clock that has reached the time the run was stamped at (the clock
                // ahead that stamped it, after another runtime's look clamped it) counts
                // from then, not from the clamped time (an hour back, for a test that
                // slept an hour): a look from another clock retires none of its idle
                // workers early. With one clock the two times are one.
                // An idle timeout too long to add to a time (`Duration::MAX`) retires
                // none: not even once a paused clock has passed ~30 years (the rate
                // window's rule).
                Some((since, count, made))
                    if (if now >= *made { *made } else { *since })
                        .checked_add(self.config.idle_timeout)
                        .is_some_and(|end| end <= now) =>
                {
                    let k = (*count).min(limit - self.config.min_workers);
                    *count -= k;
                    limit -= k;
                    if *count == 0 {
                        self.idle_since.pop_front();
                    }
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

    impl Elastic {
        /// The idle workers stamped.
        fn stamped(&self) -> usize {
            self.idle_since.iter().map(|(_, n, _)| n).sum()
        }
    }

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
        assert_eq!((el.stamped(), el.unstamped), (0, 0));
    }

    #[test]
    fn workers_left_idle_are_stamped_on_release_and_retire_from_then() {
        let mut el = elastic(0);
        el.added();
        el.idle();
        let before = Instant::now();
        el.settle();
        assert_eq!((el.stamped(), el.unstamped), (2, 0));
        let since = el.idle_since.front().unwrap().0;
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
        assert_eq!(el.stamped(), 1);
        assert!(el.idle_since.front().unwrap().0 < look);
        assert_eq!(el.retire(1, t0 + Duration::from_secs(6)), 0);
    }

    #[test]
    fn workers_in_runs_retire_and_take_jobs_in_parts() {
        let t0 = Instant::now();
        let config = ElasticConfig {
            min_workers: 2,
            idle_timeout: Duration::from_secs(5),
        };
        let mut el = Elastic::new(config, 10); // one run of 10, idle since about t0
        assert_eq!(el.idle_since.len(), 1);
        // Looked at after 6 s: 8 retire, the run keeps the 2 of `min_workers`.
        assert_eq!(el.retire(10, t0 + Duration::from_secs(6)), 2);
        assert_eq!(el.stamped(), 2);
        // Three more, stamped at a look at 7 s, when the first run's two, idle for 7 s,
        // retire (5 workers, all idle, 2 the floor).
        el.added_n(3);
        assert_eq!(el.retire(5, t0 + Duration::from_secs(7)), 3);
        assert_eq!((el.stamped(), el.idle_since.len()), (3, 1));
        // Two take jobs; the last idle one may retire 5 s after 7 s, down to the floor.
        el.busy_n(2);
        assert_eq!(el.stamped(), 1);
        assert_eq!(el.retire(3, t0 + Duration::from_secs(8)), 3);
        assert_eq!(el.retire(3, t0 + Duration::from_secs(13)), 2);
        assert_eq!(el.stamped(), 0);
        el.busy_n(3); // nothing idle left: nothing to take
        assert_eq!((el.stamped(), el.unstamped), (0, 0));
    }

    #[test]
    fn a_run_clamped_from_a_clock_ahead_retires_there_from_its_own_stamp() {
        let secs = Duration::from_secs;
        for later_clock in [false, true] {
            let mut el = elastic(0); // idle timeout 5 s
            let ahead = Instant::now() + secs(3600); // a paused clock an hour ahead
            el.added_n(4);
            el.stamp(ahead);
            // A look from the real clock clamps the run to it: nothing retires.
            let real = Instant::now();
            assert_eq!(el.retire(4, real), 4);
            assert_eq!(el.stamped(), 4);
            if later_clock {
                // Another clock, behind the one ahead: counts from the clamped time.
                assert_eq!(el.retire(4, real + secs(6)), 0);
            } else {
                // The clock ahead counts from its own stamp, not an hour back.
                assert_eq!(el.retire(4, ahead + secs(1)), 4);
                assert_eq!(el.retire(4, ahead + secs(5)), 0);
            }
        }
    }

    #[test]
    fn runs_of_two_clocks_ahead_clamped_each_retire_there_from_their_own_stamps() {
        let secs = Duration::from_secs;
        let mut el = elastic(0); // idle timeout 5 s
        let (a, b) = (Instant::now() + secs(3600), Instant::now() + secs(7200));
        el.added_n(2);
        el.stamp(a);
        el.added_n(2);
        el.stamp(b);
        // A look from the real clock clamps both runs to it: nothing retires.
        assert_eq!(el.retire(4, Instant::now()), 4);
        // The clock an hour ahead counts its own two from its stamp (before 373 they were
        // merged with the other clock's into one run stamped at the later clock's time,
        // counted from the clamped time here: all four retired at once).
        assert_eq!(el.retire(4, a + secs(1)), 4);
        // Then the other clock's two (stamped further ahead) from the clamped time.
        assert_eq!(el.retire(4, a + secs(5)), 0);
    }

    #[test]
    fn a_huge_run_costs_one_entry() {
        let config = ElasticConfig {
            min_workers: 1 << 60,
            idle_timeout: Duration::from_secs(5),
        };
        let mut el = Elastic::new(config, 1 << 60);
        el.busy_n(1 << 59);
        el.added_n(1 << 58);
        el.settle();
        assert!(el.idle_since.len() <= 2);
        assert_eq!(el.stamped(), (1 << 59) + (1 << 58));
    }
}
