//! Flow control at start time: which queued job may start now.
//!
//! The plain pool has none of this (`State::limits` is `None`, one branch per start). A
//! pool built with `max_per_key`, `weight_capacity` or `rate_limit` gets a [`Limits`]:
//! a job starts only if its key has room, its weight fits, and the rate window allows one
//! more start. Keys are skipped past (a saturated key never holds up other keys); weights
//! are not (a heavy job at the head waits for room, and lighter ones behind it wait with it:
//! never overtaken, it cannot be starved).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::queue::{KeyRooms, Look, Ordered, Queue};
use super::task_key::{KeyMap, TaskKey};
use tokio::time::Instant;

/// What flow control knows of a job: for one submitted without options (most), nothing
/// (one word, `None`); otherwise its options, boxed. A queued job moves with its `Meta`
/// (into the queue, out to a slot task, which keeps its next job), so its size is in every
/// such move and in the cache lines a slot task's poll touches (BENCHMARKS.md,
/// "2026-12-03, midday").
#[derive(Debug, Clone, Default)]
pub(crate) struct Meta(Option<Box<Options>>);

#[derive(Debug, Clone)]
struct Options {
    priority: i32,
    weight: u32,
    key: Option<TaskKey>,
}

impl Meta {
    /// A job's priority and weight when its submit sets none.
    const DEFAULT_PRIORITY: i32 = 0;
    const DEFAULT_WEIGHT: u32 = 1;

    /// The flow-control settings of a job (the defaults take no allocation; a key is
    /// hashed here, once).
    pub(crate) fn new(priority: i32, weight: u32, key: Option<Arc<str>>) -> Self {
        if priority == Self::DEFAULT_PRIORITY && weight == Self::DEFAULT_WEIGHT && key.is_none() {
            return Meta(None);
        }
        Meta(Some(Box::new(Options {
            priority,
            weight,
            key: key.map(TaskKey::new),
        })))
    }

    #[inline]
    pub(crate) fn priority(&self) -> i32 {
        self.0
            .as_ref()
            .map_or(Self::DEFAULT_PRIORITY, |o| o.priority)
    }

    #[inline]
    pub(crate) fn weight(&self) -> u32 {
        self.0.as_ref().map_or(Self::DEFAULT_WEIGHT, |o| o.weight)
    }

    pub(crate) fn key(&self) -> Option<&TaskKey> {
        self.0.as_ref().and_then(|o| o.key.as_ref())
    }
}

/// The limits a pool is built with.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LimitsConfig {
    pub(crate) max_per_key: Option<usize>,
    pub(crate) weight_capacity: Option<u64>,
    /// At most `.0` starts in any window of `.1`.
    pub(crate) rate: Option<(u32, Duration)>,
}

impl LimitsConfig {
    pub(crate) fn is_empty(&self) -> bool {
        self.max_per_key.is_none() && self.weight_capacity.is_none() && self.rate.is_none()
    }
}

pub(crate) struct Limits {
    max_per_key: Option<usize>,
    /// How many jobs of each key run (keys with none are not kept).
    per_key: KeyMap<usize>,
    /// The keys that gained room since the queue's scans last asked (see
    /// [`KeyRooms::freed`]); `None`: too many to list, or all of them.
    freed: RefCell<Option<Vec<TaskKey>>>,
    weight_capacity: Option<u64>,
    weight_running: u64,
    rate: Option<RateWindow>,
    /// What the last count of the queue found (see [`count_startable`](Self::count_startable)).
    memo: Memo,
}

/// What a count of the queue found, for the next count to go on from where it stopped (the
/// queue keeps where: its cursor) rather than visit again the jobs it counted. On a start,
/// the jobs reserved a slot are counted again: hundreds, when slot tasks lag behind the
/// submits (RELIABILITY.md, 379; BENCHMARKS.md, "2026-12-06, 17:32 to about 20:20 UTC").
///
/// It holds while what it counted would be counted again the same: the queue's items
/// before the cursor unchanged (the queue's epoch) but for the first counted job taken by
/// a slot (which moves from counted to running: its key's and the weight's totals stay)
/// and one job pushed before the cursor by its priority that may start beside all those
/// counted (the next count counts it first: see `count_startable`), and no job holding
/// its key or weight but those. A job's end takes its key and weight off the totals,
/// unless the count passed over a job: that job might now be counted, ahead of jobs
/// counted after it, so the memo is dropped. Anything else starts the next count from
/// the head. In builds with debug assertions, each count that goes on is checked against
/// one from the head (queues of up to 512 jobs).
#[derive(Default)]
struct Memo {
    /// Whether it holds (else the next count starts from the head).
    valid: bool,
    /// The queue's epoch it goes with.
    epoch: u64,
    /// How many jobs it counted.
    took: usize,
    /// Whether it passed over a job for its key.
    passed: bool,
    tally: Tally,
}

impl Memo {
    /// A count from the head, with `weight` running, for the queue at `epoch`.
    fn restart(&mut self, weight: u64, epoch: u64) {
        self.valid = true;
        self.epoch = epoch;
        self.took = 0;
        self.passed = false;
        self.tally.weight = weight;
        // Kept for the next count, unless a count met many keys once (a crawl's hosts).
        if self.tally.keys.capacity() > 1024 {
            self.tally.keys = KeyMap::default();
        } else {
            self.tally.keys.clear();
        }
    }
}

/// A count's totals so far: the weight of the jobs running and counted, and for each key
/// limited by `max_per_key` that it met, its jobs running and counted (one lookup per job
/// visited).
#[derive(Default)]
struct Tally {
    weight: u64,
    keys: KeyMap<usize>,
}

impl Tally {
    /// Whether the job of `meta` counts (see [`Limits::counter`]), and if so, counts it.
    fn look(&mut self, limits: &Limits, meta: &Meta) -> Look {
        let (Some(key), Some(max)) = (meta.key(), limits.max_per_key) else {
            return limits.count_weight(&mut self.weight, meta);
        };
        if let Some(held) = self.keys.get_mut(key) {
            if *held >= max {
                return Look::Pass;
            }
            let look = limits.count_weight(&mut self.weight, meta);
            *held += usize::from(look == Look::Take);
            return look;
        }
        let running = limits.running_of(key);
        let look = if running >= max {
            Look::Pass
        } else {
            limits.count_weight(&mut self.weight, meta)
        };
        self.keys
            .insert(key.clone(), running + usize::from(look == Look::Take));
        look
    }
}

impl Limits {
    pub(crate) fn new(config: LimitsConfig) -> Self {
        Limits {
            max_per_key: config.max_per_key,
            per_key: KeyMap::default(),
            freed: RefCell::new(Some(Vec::new())),
            weight_capacity: config.weight_capacity,
            weight_running: 0,
            rate: config.rate.map(|(count, per)| RateWindow {
                count: count as usize,
                per,
                starts: VecDeque::new(),
                only_counted: 0,
            }),
            memo: Memo::default(),
        }
    }

    /// Whether `meta`'s key has room for one more running job.
    fn key_has_room(&self, meta: &Meta) -> bool {
        match (meta.key(), self.max_per_key) {
            (Some(key), Some(max)) => self.running_of(key) < max,
            _ => true,
        }
    }

    /// How many jobs of `key` run.
    fn running_of(&self, key: &TaskKey) -> usize {
        self.per_key.get(key).copied().unwrap_or(0)
    }

    /// How many more jobs of each key may run now, for the queue's scans, which park the
    /// queued jobs a key has no room for (see [`Queue`]): `None`
    /// without `max_per_key`.
    pub(crate) fn key_rooms(&self) -> Option<Rooms<'_>> {
        let max = self.max_per_key?;
        Some(Rooms { limits: self, max })
    }

    /// `key` gained room: the queue's next scan looks at its parked jobs.
    fn freed(&mut self, key: &TaskKey) {
        let freed = self.freed.get_mut();
        if let Some(keys) = freed {
            // A long list: the next scan looks at every parked key instead.
            if keys.len() < FREED_LISTED {
                keys.push(key.clone());
            } else {
                *freed = None;
            }
        }
    }

    fn weight_fits(&self, meta: &Meta) -> bool {
        match self.weight_capacity {
            Some(cap) => self.weight_running + u64::from(meta.weight()) <= cap,
            None => true,
        }
    }

    /// A picker for `Queue::pop_startable` (which starts the job it takes): accepts, in
    /// queue order, the jobs whose key has room, until the first such job whose weight does
    /// not fit, where the scan ends (weights keep FIFO order: nothing after it may start).
    pub(crate) fn picker(&self) -> impl FnMut(&Meta) -> Look + '_ {
        move |meta| {
            if !self.key_has_room(meta) {
                Look::Pass
            } else if self.weight_fits(meta) {
                Look::Take
            } else {
                Look::Done
            }
        }
    }

    /// A picker for a count of the jobs that may start now, which starts none: as
    /// [`picker`](Self::picker), but each job it accepts counts, for the jobs after it, as
    /// started (its key's count, its weight), as it will be once a slot takes it. (With
    /// `picker`, two jobs of a key with room for one both counted, and both were reserved
    /// a slot: the second counted as running until a slot found it could not start.)
    /// [`count_startable`](Self::count_startable) counts so; this, a count from the head
    /// alone, checks it (in builds with debug assertions) and serves tests.
    #[cfg(any(test, debug_assertions))]
    pub(crate) fn counter(&self) -> impl FnMut(&Meta) -> Look + '_ {
        let mut tally = Tally {
            weight: self.weight_running,
            keys: KeyMap::default(),
        };
        move |meta| tally.look(self, meta)
    }

    /// How many of `queue`'s jobs may start now, counting no further than `most`: as a
    /// count with [`counter`](Self::counter) from the queue's head (which it is, when the
    /// last count's [`Memo`] no longer holds), but going on from where the last count
    /// stopped when it does. Unparks first, as every scan does.
    pub(crate) fn count_startable<T: Ordered>(
        &mut self,
        queue: &mut Queue<T>,
        most: usize,
        meta: fn(&T) -> &Meta,
    ) -> usize {
        if most == 0 {
            return 0;
        }
        queue.unpark(self.key_rooms().as_ref());
        let mut memo = std::mem::take(&mut self.memo);
        let mut go_on = memo.valid && memo.epoch == queue.epoch();
        if let Some(item) = queue.take_ahead() {
            // Pushed before where the memo's count stopped (by its priority): if it may
            // start beside all the jobs counted, counting it first changes none of the
            // count's answers (the totals before each of them grow by it, and stay within
            // the final totals it fits in); else the count starts again.
            go_on &= memo.tally.look(self, meta(item)) == Look::Take;
            memo.took += 1;
        }
        if !go_on {
            memo.restart(self.weight_running, queue.epoch());
        }
        if memo.took < most {
            let tally = &mut memo.tally;
            let count = queue.count(go_on, most - memo.took, self.key_rooms().as_ref(), |t| {
                tally.look(self, meta(t))
            });
            memo.took += count.took;
            memo.passed |= count.passed;
        }
        let took = memo.took.min(most);
        // A count that parked jobs changed the queue's order under the cursor.
        memo.valid = memo.epoch == queue.epoch();
        self.memo = memo;
        #[cfg(debug_assertions)]
        if go_on && queue.len() <= 512 {
            let mut pick = self.counter();
            let afresh = queue.count_afresh(most, |t| pick(meta(t)));
            assert_eq!(
                took, afresh,
                "nb_aiopool internal: a count that went on from the last one found {took} \
                 jobs that may start, a count from the head {afresh}"
            );
        }
        took
    }

    /// For [`counter`](Self::counter): a job whose key has room counts if its weight fits
    /// beside `weight`, the weight of the jobs running and counted so far (which it then
    /// joins); if it does not fit, nothing after it may start.
    #[inline]
    fn count_weight(&self, weight: &mut u64, meta: &Meta) -> Look {
        if let Some(cap) = self.weight_capacity {
            let after = *weight + u64::from(meta.weight());
            if after > cap {
                return Look::Done;
            }
            *weight = after;
        }
        Look::Take
    }

    /// When the rate window allows the next start: `None` for now.
    pub(crate) fn rate_ready_at(&mut self, now: Instant) -> Option<Instant> {
        self.rate.as_mut().and_then(|r| r.ready_at(now))
    }

    /// Whether the rate window, once full, ever allows another start: not a window too
    /// long to add to a time (`Duration::MAX`, "at most `count` starts, ever"). No timer is
    /// armed for one that never does: a timer ~30 years out would end the window under
    /// tokio's paused clock, and hold the pool's engine until its runtime ends. The same
    /// test as [`restart`](Self::restart)'s, [`RateWindow::never_reopens`] (an empty
    /// window asks the clock).
    pub(crate) fn rate_reopens(&self) -> bool {
        self.rate.as_ref().is_some_and(|r| !r.never_reopens())
    }

    /// Of `queued` jobs (not reserved a slot; `reserved` more are, each to spend a start),
    /// how many a rate window that never reopens (`Duration::MAX`) will never let start:
    /// those beyond the starts it has left. Not only once it is full: with one start left
    /// and two jobs queued, one of them never starts. Reads no clock (such a window never
    /// lets a start expire). Before the window's first start, whether it ever reopens is
    /// told by the time now (the only read of the clock): jobs submitted on a runtime not
    /// driven since, with none started, are held back beyond its `count` starts as well.
    pub(crate) fn rate_never_starts(&self, queued: usize, reserved: usize) -> usize {
        match &self.rate {
            Some(r) if r.never_reopens() => {
                let left = r.count.saturating_sub(r.len()).saturating_sub(reserved);
                queued.saturating_sub(left)
            }
            _ => 0,
        }
    }

    /// How many starts the rate window allows now (`usize::MAX` without a rate limit).
    pub(crate) fn rate_tokens(&mut self, now: Instant) -> usize {
        match &mut self.rate {
            Some(r) => {
                r.expire(now);
                r.count - r.len()
            }
            None => usize::MAX,
        }
    }

    /// A job with `meta` starts now. It spends a start of the rate window only if it will
    /// run: a job aborted while queued is handed to a slot only to be dropped there, and
    /// must not hold back the jobs after it (it still counts for its key and weight until
    /// then, as [`ended`](Self::ended) takes them back).
    /// Returns `now` if it spent a start (see [`unstarted`](Self::unstarted)).
    ///
    /// `counted`: the job is the first one the last count counted, taken from before where
    /// it stopped (the queue's epoch unchanged), which that count may go on with.
    pub(crate) fn started(
        &mut self,
        meta: &Meta,
        now: Instant,
        runs: bool,
        counted: bool,
    ) -> Option<Instant> {
        if counted && self.memo.valid && self.memo.took > 0 {
            // From counted to running: its key's and the weight's totals stay.
            self.memo.took -= 1;
            self.hold(meta);
        } else {
            self.holds(meta);
        }
        match (&mut self.rate, runs) {
            (Some(r), true) => {
                r.clamp(now);
                // Not before the newest start (one from the real clock, read by a paused
                // runtime whose clock is behind it): the starts stay in order. With one
                // clock, `now`.
                Some(r.push(now))
            }
            _ => None,
        }
    }

    /// A job that spent the start made `at` (what [`started`](Self::started) returned)
    /// was put back in the queue before it ever ran (its slot was dropped unpolled): that
    /// start is given back, in any window. (Not the newest start instead: an older one
    /// left in its place would leave the window sooner, letting one start too many in.)
    ///
    /// In a window that never reopens, where starts are told apart by count only, a start
    /// not found was taken by [`rerun_queued`](Self::rerun_queued) for a re-run's (it
    /// takes the newest, which may be this one): another is given back in its place.
    pub(crate) fn unstarted(&mut self, at: Instant) {
        if let Some(r) = &mut self.rate {
            if r.forget_only_counted() {
                // Only counted (a window that never reopens): any one of them will do.
            } else if let Some(pos) = r.starts.iter().rposition(|&t| t == at) {
                r.starts.remove(pos);
            } else if r.never_reopens() {
                r.starts.pop_back();
            }
        }
    }

    /// A job that spent the start made `at` when a slot of another runtime took it (what
    /// [`started`](Self::started) returned) begins to run only now, `now`, on its own
    /// runtime, which may have polled it long after (a runtime busy, or not driven): the
    /// start is taken again, now. Returns the new start, or `None` (and the old one given
    /// back) if the window has no room for it now: it must wait in the queue as any job.
    /// A start the window has forgotten (`per` old) is not looked for. Its own start is
    /// taken out before the window is brought to `now` ([`RateWindow::expire`], which
    /// clamps starts from a clock ahead: one charged on a paused runtime whose clock ran
    /// ahead, clamped first, was not found, and the job was held back by its own start).
    /// One clamped by an earlier call is not found and stays, as in
    /// [`unstarted`](Self::unstarted).
    ///
    /// In a window that never reopens nothing is done: when a start is made does not
    /// matter there, only how many (and the start `at` stands for may have been taken by
    /// [`rerun_queued`](Self::rerun_queued) for a re-run's meanwhile: taking it again
    /// would count the job twice, and one task more would never start).
    pub(crate) fn restart(&mut self, at: Instant, now: Instant) -> Option<Instant> {
        let Some(r) = self.rate.as_mut().filter(|r| !r.never_reopens()) else {
            return Some(at);
        };
        // A window that reopens: every start is kept (none only counted).
        if let Some(pos) = r.starts.iter().rposition(|&t| t == at) {
            r.starts.remove(pos);
        }
        r.expire(now);
        if r.len() >= r.count {
            return None;
        }
        Some(r.push(now))
    }

    /// A job with `meta` holds its key and weight (the rate window untouched): one that
    /// starts ([`started`](Self::started)), or one that gave them back with
    /// [`ended`](Self::ended) to look at the queue as it will be without it, and runs after
    /// all (`Slot::restart`).
    pub(crate) fn holds(&mut self, meta: &Meta) {
        // One the last count did not count: its totals are no longer the running jobs'.
        self.memo.valid = false;
        self.hold(meta);
    }

    fn hold(&mut self, meta: &Meta) {
        if let (Some(key), Some(_)) = (meta.key(), self.max_per_key) {
            match self.per_key.get_mut(key) {
                Some(n) => *n += 1,
                None => drop(self.per_key.insert(key.clone(), 1)),
            }
        }
        if self.weight_capacity.is_some() {
            self.weight_running += u64::from(meta.weight());
        }
    }

    /// A job with `meta` that had started ended.
    pub(crate) fn ended(&mut self, meta: &Meta) {
        let memo = &mut self.memo;
        if memo.passed {
            memo.valid = false;
        } else if memo.valid {
            // The jobs it counted still may start; the job after them is looked at again.
            if let (Some(key), Some(_)) = (meta.key(), self.max_per_key) {
                if let Some(n) = memo.tally.keys.get_mut(key) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        // None of the key's jobs runs or is counted: the next count that
                        // meets it reads its running count (0) again. Kept, every key a
                        // count that went on met stayed until a count from the head,
                        // which a pool whose counts always go on never makes: a crawl's
                        // hosts, a key each, grew the memo by a key a task, for good.
                        memo.tally.keys.remove(key);
                    }
                }
            }
            if self.weight_capacity.is_some() {
                memo.tally.weight = memo.tally.weight.saturating_sub(u64::from(meta.weight()));
            }
        }
        if let (Some(key), Some(_)) = (meta.key(), self.max_per_key) {
            if let Some(n) = self.per_key.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    self.per_key.remove(key);
                }
                self.freed(key);
            }
        }
        if self.weight_capacity.is_some() {
            self.weight_running -= u64::from(meta.weight());
        }
    }

    /// An interrupted run is queued again to be re-run: in a window that never reopens
    /// (`Duration::MAX`), the re-run takes the start of the run it replaces, or it could
    /// never start ("at most `count` starts, ever" counts tasks, not their re-runs). A
    /// finite window counts the re-run again, as before.
    pub(crate) fn rerun_queued(&mut self) {
        if let Some(r) = &mut self.rate {
            if r.never_reopens() && !r.forget_only_counted() {
                r.starts.pop_back();
            }
        }
    }

    /// Forgets every running job (the exit hook took the pool over).
    pub(crate) fn reset_running(&mut self) {
        self.memo.valid = false;
        self.per_key.clear();
        *self.freed.get_mut() = None;
        self.weight_running = 0;
    }
}

/// How many keys [`Limits::freed`] lists before it says "all" instead.
const FREED_LISTED: usize = 256;

/// [`Limits::key_rooms`]: the room of each key, and the keys freed since the last scan.
pub(crate) struct Rooms<'a> {
    limits: &'a Limits,
    max: usize,
}

impl KeyRooms for Rooms<'_> {
    fn room(&self, key: &TaskKey) -> usize {
        self.max.saturating_sub(self.limits.running_of(key))
    }

    fn freed(&self, each: &mut dyn FnMut(&TaskKey)) -> bool {
        let mut freed = self.limits.freed.borrow_mut();
        match freed.as_mut() {
            Some(keys) => {
                keys.drain(..).for_each(|key| each(&key));
                true
            }
            None => {
                *freed = Some(Vec::new());
                false
            }
        }
    }
}

/// At most `count` starts in any window of `per`: the start times of the last `count`
/// starts. A burst of `count` may start at once; then the next waits until the oldest of
/// them is `per` old.
///
/// In a window that never reopens (`Duration::MAX`), where starts are told apart by count
/// only, the first start is kept and the later ones are only counted (`only_counted`):
/// kept, they took 16 bytes per task for as long as the pool lived, up to `count` (4
/// billion for `u32::MAX`), so that a pool's memory grew with the number of its jobs.
struct RateWindow {
    count: usize,
    per: Duration,
    starts: VecDeque<Instant>,
    /// Starts made after those in `starts` in a window that never reopens, counted and
    /// not kept (their times are never read there); 0 otherwise. Non-zero only while
    /// `starts` holds one at least.
    only_counted: usize,
}

impl RateWindow {
    /// How many starts the window holds.
    fn len(&self) -> usize {
        self.starts.len() + self.only_counted
    }

    /// Forgets one of the starts only counted, if there is one (the newest: in a window
    /// that never reopens, any start stands for any other).
    fn forget_only_counted(&mut self) -> bool {
        let any = self.only_counted > 0;
        self.only_counted -= usize::from(any);
        any
    }

    /// Whether a start never leaves the window: `per` too long to add to a time (such as
    /// `Duration::MAX`: "at most `count` starts, ever"), or ending within a second of the
    /// largest time, where no timer can be set ([`timer_at`]; such a window treated as
    /// reopening armed its timer at `later_by`'s ~30 years, which found the start still in
    /// the window and armed itself again, at once, for ever). Its starts are then told
    /// apart by count only.
    fn never_reopens(&self) -> bool {
        let first = self.starts.front().copied().unwrap_or_else(Instant::now);
        timer_at(first, self.per).is_none()
    }

    /// When a start at `t` leaves the window (a window too long to add, such as
    /// `Duration::MAX`, ends in ~30 years: never, for a process).
    fn leaves_at(&self, t: Instant) -> Instant {
        later_by(t, self.per)
    }

    fn expire(&mut self, now: Instant) {
        self.clamp(now);
        while let Some(&t) = self.starts.front() {
            // A start of a window too long for a timer never leaves it (not even once a
            // paused clock has passed `later_by`'s ~30 years): the test `never_reopens`
            // makes.
            match timer_at(t, self.per) {
                // Never in a window that never reopens (no end), the only one with
                // starts only counted.
                Some(end) if end <= now => {
                    self.starts.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Records a start made `now`, not before the newest one (the starts stay in order);
    /// returns the time recorded.
    fn push(&mut self, now: Instant) -> Instant {
        let at = self.starts.back().map_or(now, |&newest| newest.max(now));
        if !self.starts.is_empty() && self.never_reopens() {
            self.only_counted += 1;
        } else {
            self.starts.push_back(at);
        }
        at
    }

    /// Starts read from a clock ahead of both `now`'s and the real clock's are taken as
    /// made at the later of the two. A pool is shared by runtimes, and with tokio's paused
    /// time each runtime has a clock of its own: a start stamped by a paused runtime whose
    /// clock ran ahead (auto-advance) would otherwise sit in a real-time runtime's future,
    /// and hold its jobs back for as long as the other clock ran ahead, not `per` (finding
    /// 272 of RELIABILITY.md). A paused clock behind the real one moves no start back: it
    /// would move the real-time runtime's starts out of that runtime's window, which then
    /// let `count` more start each time the paused runtime read it (finding 276). Walks
    /// from the newest start, so the starts stay in order; with one clock (time never
    /// goes back) it is one comparison. A clamped start is not given back by
    /// [`Limits::unstarted`], which looks for the exact time: it leaves the window `per`
    /// after it instead.
    fn clamp(&mut self, now: Instant) {
        if self.starts.back().is_none_or(|&newest| newest <= now) {
            return;
        }
        let bound = now.max(Instant::from_std(std::time::Instant::now()));
        for t in self.starts.iter_mut().rev() {
            if *t <= bound {
                break;
            }
            *t = bound;
        }
    }

    fn ready_at(&mut self, now: Instant) -> Option<Instant> {
        self.expire(now);
        if self.len() < self.count {
            None
        } else {
            self.starts.front().map(|&t| self.leaves_at(t))
        }
    }
}

/// `t + d` if a tokio timer can be set there: `None` when that overflows (`Duration::MAX`
/// as "never") or ends within a second of the largest time an `Instant` can hold (a
/// timer set there would panic in tokio, which rounds it up to its next millisecond).
pub(crate) fn timer_at(t: Instant, d: Duration) -> Option<Instant> {
    t.checked_add(d)
        .filter(|at| at.checked_add(Duration::from_secs(1)).is_some())
}

/// `t + d`, or about 30 years after `t` where no timer can be set ([`timer_at`]).
pub(crate) fn later_by(t: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
    timer_at(t, d).unwrap_or_else(|| t + FAR)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queued job for the count tests: its admission order and flow-control settings.
    struct Job {
        seq: u64,
        meta: Meta,
    }

    impl Ordered for Job {
        fn priority(&self) -> i32 {
            self.meta.priority()
        }
        fn seq(&self) -> u64 {
            self.seq
        }
        fn key(&self) -> Option<&TaskKey> {
            self.meta.key()
        }
    }

    fn meta_of(job: &Job) -> &Meta {
        &job.meta
    }

    /// A count that goes on from the last one ([`Limits::count_startable`]) answers what a
    /// count from the head answers, over random runs of what the engine does between
    /// counts: pushes (with priorities or none, keys, weights), starts of the first job
    /// that may start (from what the last count counted, or not), ends, aborts of queued
    /// jobs, jobs put back at their place or at the front, restarts, and parking.
    #[test]
    fn counts_that_go_on_agree_with_counts_from_the_head() {
        let keys: Vec<Arc<str>> = ["a", "b", "c"].iter().map(|&k| Arc::from(k)).collect();
        let runs = if cfg!(miri) { 3 } else { 300 };
        let mut went_on = 0;
        for run in 0..runs {
            let mut next = super::super::queue::random_below(
                0x2545_F491_4F6C_DD1Du64 ^ (run * 0x9E37_79B9 + 7),
            );
            let mut limits = Limits::new(LimitsConfig {
                max_per_key: Some(1 + next(4) as usize),
                weight_capacity: (run % 3 != 0).then(|| 6 + next(10)),
                rate: None,
            });
            let sorted = run % 2 == 1;
            let mut queue: Queue<Job> = Queue::default();
            let mut running: Vec<Job> = Vec::new();
            let mut seq = 0;
            for step in 0..300 {
                match next(12) {
                    0..=3 => {
                        seq += 1;
                        let priority = if sorted { next(3) as i32 } else { 0 };
                        let key = (next(4) > 0).then(|| keys[next(3) as usize].clone());
                        let meta = Meta::new(priority, 1 + next(4) as u32, key);
                        queue.push(Job { seq, meta });
                    }
                    4..=6 => {
                        let most = next(queue.len() as u64 + 3) as usize;
                        let epoch = queue.epoch();
                        let took = limits.count_startable(&mut queue, most, meta_of);
                        went_on += usize::from(queue.epoch() == epoch && most > 0);
                        let mut pick = limits.counter();
                        let afresh = queue.count_afresh(most, |j| pick(&j.meta));
                        assert_eq!(took, afresh, "run {run}, step {step}: count({most})");
                    }
                    7 | 8 => {
                        let epoch = queue.epoch();
                        let job = {
                            let mut pick = limits.picker();
                            queue.pop_startable(limits.key_rooms(), |j| pick(&j.meta))
                        };
                        if let Some(job) = job {
                            let counted = queue.epoch() == epoch;
                            limits.started(&job.meta, Instant::now(), true, counted);
                            running.push(job);
                        }
                    }
                    9 if !running.is_empty() => {
                        let job = running.swap_remove(next(running.len() as u64) as usize);
                        limits.ended(&job.meta);
                        match next(4) {
                            0 => queue.put_back(job),
                            1 => queue.push_front(job),
                            2 => {
                                // A restart: it gave its key and weight back to look, and
                                // runs after all.
                                limits.holds(&job.meta);
                                running.push(job);
                            }
                            _ => {}
                        }
                    }
                    10 if seq > 0 => {
                        let victim = 1 + next(seq);
                        for priority in 0..3 {
                            drop(queue.remove_seq(victim, priority));
                        }
                    }
                    _ => {
                        // Another scan, for one, that may park (as a rate-held slot's look).
                        let mut pick = limits.picker();
                        let _ = queue.first_startable(limits.key_rooms(), |j| pick(&j.meta));
                    }
                }
            }
        }
        assert!(
            went_on > runs as usize * 20,
            "few counts went on from the last: {went_on}"
        );
    }

    /// A count passed over a job for its key; one of that key's jobs ends: the next count
    /// counts the job passed over (which a count going on from where the last stopped,
    /// past it, would miss).
    #[test]
    fn a_job_passed_over_counts_once_its_key_has_room() {
        let mut limits = Limits::new(LimitsConfig {
            max_per_key: Some(1),
            ..Default::default()
        });
        let key = || Some(Arc::from("k"));
        let mut queue: Queue<Job> = Queue::default();
        let run = Meta::new(0, 1, key());
        limits.started(&run, Instant::now(), true, false);
        for seq in 1..=2 {
            queue.push(Job {
                seq,
                meta: Meta::new(0, 1, key()),
            });
        }
        assert_eq!(limits.count_startable(&mut queue, 5, meta_of), 0);
        limits.ended(&run);
        assert_eq!(
            limits.count_startable(&mut queue, 5, meta_of),
            1,
            "the key has room for one of its queued jobs again"
        );
    }

    /// A job submitted without options carries one word and no allocation; one with
    /// options gets back exactly what it was given.
    #[test]
    fn meta_is_a_word_unless_options_are_set() {
        assert_eq!(std::mem::size_of::<Meta>(), std::mem::size_of::<usize>());
        let plain = Meta::new(0, 1, None);
        assert!(plain.0.is_none(), "default settings allocated");
        assert_eq!(
            (plain.priority(), plain.weight(), plain.key()),
            (0, 1, None)
        );
        let key: Arc<str> = "a".into();
        for (priority, weight, key) in [(-3, 1, None), (0, 7, None), (0, 1, Some(key.clone()))] {
            let meta = Meta::new(priority, weight, key.clone());
            assert!(meta.0.is_some());
            assert_eq!(
                (meta.priority(), meta.weight(), meta.key()),
                (priority, weight, key.map(TaskKey::new).as_ref())
            );
        }
    }

    #[test]
    fn rate_window_allows_count_per_window() {
        let mut l = Limits::new(LimitsConfig {
            rate: Some((3, Duration::from_secs(1))),
            ..Default::default()
        });
        let t0 = Instant::now();
        let m = Meta::default();
        for _ in 0..3 {
            assert_eq!(l.rate_ready_at(t0), None);
            l.started(&m, t0, true, false);
        }
        assert_eq!(l.rate_ready_at(t0), Some(t0 + Duration::from_secs(1)));
        assert_eq!(l.rate_tokens(t0 + Duration::from_millis(999)), 0);
        assert_eq!(l.rate_tokens(t0 + Duration::from_secs(1)), 3);
    }

    /// A start charged when a job was handed to a slot of its own runtime is taken again
    /// when that slot first polls it: with room (its own start given back), at the later
    /// time; without (the window let other starts in meanwhile), not at all.
    #[test]
    fn a_handed_over_start_is_taken_again_when_the_job_begins() {
        let per = Duration::from_secs(1);
        let mut l = Limits::new(LimitsConfig {
            rate: Some((1, per)),
            ..Default::default()
        });
        let m = Meta::default();
        let t0 = Instant::now();
        let x = l.started(&m, t0, true, false).unwrap();
        // Polled soon: its own start makes room for it, now.
        let soon = t0 + Duration::from_millis(10);
        assert_eq!(l.restart(x, soon), Some(soon));
        assert_eq!(l.rate_ready_at(soon), Some(soon + per));
        // Polled late: its start left the window, another job started since.
        let y = l.started(&m, soon + per, true, false).unwrap();
        let late = y + Duration::from_millis(500);
        assert_eq!(l.restart(soon, late), None);
        assert_eq!(
            l.rate_ready_at(late),
            Some(y + per),
            "only the other start is kept"
        );
        // A window that never ends: the start it holds stays its own (when does not
        // matter there).
        let mut ever = Limits::new(LimitsConfig {
            rate: Some((1, Duration::MAX)),
            ..Default::default()
        });
        let x = ever.started(&m, t0, true, false).unwrap();
        assert_eq!(ever.restart(x, late), Some(x));
        assert_eq!(ever.rate_tokens(late), 0);
    }

    /// In a window that never reopens, `rerun_queued` takes the newest start for a cut
    /// run's re-run, which may be the start of a job a slot holds and has not run yet: a
    /// `restart` of that job must not take a start again (a start more, for good: one task
    /// more would never start; seen once in CI as "1 task(s) never ran again" in
    /// `rate_window_findings`), and its `unstarted` must give one back all the same.
    #[test]
    fn in_a_window_that_never_reopens_a_start_taken_for_a_rerun_still_counts_once() {
        let m = Meta::default();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let ever = || {
            Limits::new(LimitsConfig {
                rate: Some((3, Duration::MAX)),
                ..Default::default()
            })
        };
        // Job y started, then job x (the newest start); y's run is cut and queued again.
        let mut l = ever();
        let _y = l.started(&m, t0, true, false).unwrap();
        let x = l.started(&m, ms(1), true, false).unwrap();
        l.rerun_queued();
        assert_eq!(
            l.rate_tokens(ms(2)),
            2,
            "y's start given back for its re-run"
        );
        // x, held by a slot, begins now: it still holds one start, not two.
        assert_eq!(l.restart(x, ms(3)), Some(x));
        assert_eq!(l.rate_tokens(ms(3)), 2);
        // Or x is put back unrun: its start is given back, though `rerun_queued` took it.
        let mut l = ever();
        let _y = l.started(&m, t0, true, false).unwrap();
        let x = l.started(&m, ms(1), true, false).unwrap();
        l.rerun_queued();
        l.unstarted(x);
        assert_eq!(l.rate_tokens(ms(2)), 3, "both starts given back");
    }

    /// A window that never reopens keeps its first start and only counts the later ones:
    /// a pool with `rate_limit(u32::MAX, Duration::MAX)` kept 16 bytes per task it ever
    /// started (`tests/a_window_that_never_reopens_keeps_no_record_per_start.rs`).
    /// The count is what it was: starts given back (`unstarted`, `rerun_queued`) are
    /// taken off it, and the window fills at `count`.
    #[test]
    fn a_window_that_never_reopens_counts_its_starts_without_keeping_them() {
        let m = Meta::default();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut l = Limits::new(LimitsConfig {
            rate: Some((1000, Duration::MAX)),
            ..Default::default()
        });
        let mut last = t0;
        for i in 0..1000 {
            last = l.started(&m, ms(i), true, false).unwrap();
        }
        let r = l.rate.as_ref().unwrap();
        assert_eq!(
            (r.starts.len(), r.len()),
            (1, 1000),
            "one start kept, 1000 counted"
        );
        assert_eq!(l.rate_tokens(ms(2000)), 0, "full");
        assert!(l.rate_ready_at(ms(2000)).is_some(), "full: a start waits");
        l.unstarted(last);
        l.rerun_queued();
        assert_eq!(l.rate_tokens(ms(2000)), 2, "two starts given back");
        assert_eq!(
            l.rate_never_starts(5, 1),
            4,
            "of 5 queued and 1 reserved, one may start"
        );
        for i in 0..2 {
            l.started(&m, ms(3000 + i), true, false).unwrap();
        }
        assert_eq!(l.rate_tokens(ms(4000)), 0, "full again");
        // A finite window keeps every start, as before.
        let mut l = Limits::new(LimitsConfig {
            rate: Some((3, Duration::from_millis(10))),
            ..Default::default()
        });
        for i in 0..3 {
            l.started(&m, ms(i), true, false).unwrap();
        }
        assert_eq!(l.rate.as_ref().unwrap().starts.len(), 3);
        assert_eq!(l.rate_tokens(ms(10)), 1, "the first start left the window");
    }

    /// A start charged on a clock ahead (a paused runtime's, run ahead) is taken again by
    /// a runtime whose clock is behind: found before the window clamps it, so the job is
    /// not held back by its own start.
    #[test]
    fn a_start_from_a_clock_ahead_is_taken_again() {
        let m = Meta::default();
        let t0 = Instant::now();
        let mut l = Limits::new(LimitsConfig {
            rate: Some((1, Duration::from_secs(10))),
            ..Default::default()
        });
        let ahead = l
            .started(&m, t0 + Duration::from_secs(3600), true, false)
            .unwrap();
        let now = t0 + Duration::from_millis(1);
        assert_eq!(l.restart(ahead, now), Some(now));
        assert_eq!(l.rate_tokens(now), 0, "the new start only");
    }

    /// A start read from a clock ahead (another runtime's paused clock, run ahead) holds
    /// a runtime whose clock is behind for one window, not for the difference.
    #[test]
    fn a_start_from_a_clock_ahead_holds_for_one_window() {
        let per = Duration::from_secs(1);
        let mut l = Limits::new(LimitsConfig {
            rate: Some((1, per)),
            ..Default::default()
        });
        let t0 = Instant::now();
        let ahead = t0 + Duration::from_secs(3600);
        assert_eq!(l.started(&Meta::default(), ahead, true, false), Some(ahead));
        // Taken as made at the real clock's "now", a moment after `t0`.
        let ready = l.rate_ready_at(t0).unwrap();
        assert!(ready >= t0 + per && ready < t0 + per + Duration::from_secs(60));
        assert_eq!(l.rate_tokens(ready), 1);
        // The clock ahead sees the start as past: it may start at once.
        assert_eq!(l.rate_ready_at(ahead), None);
    }

    /// A clock behind the real one (a paused runtime's) moves no start of the real clock
    /// back (finding 276): the real clock's window keeps it for `per`; a start made by the
    /// clock behind is kept after it, in order.
    #[test]
    fn a_clock_behind_moves_no_start_back() {
        let per = Duration::from_secs(1);
        let mut l = Limits::new(LimitsConfig {
            rate: Some((2, per)),
            ..Default::default()
        });
        let real = Instant::now();
        let Some(behind) = real.checked_sub(Duration::from_secs(10)) else {
            return; // a clock too young to go back 10 s
        };
        assert_eq!(l.started(&Meta::default(), real, true, false), Some(real));
        assert_eq!(l.rate_tokens(behind), 1);
        assert_eq!(l.started(&Meta::default(), behind, true, false), Some(real));
        assert_eq!(l.rate_ready_at(real), Some(real + per));
        assert_eq!(l.rate_tokens(real + per), 2);
    }

    #[test]
    fn keys_are_skipped_weights_are_not() {
        let mut l = Limits::new(LimitsConfig {
            max_per_key: Some(1),
            weight_capacity: Some(10),
            ..Default::default()
        });
        let now = Instant::now();
        let a = Meta::new(0, 1, Some("a".into()));
        l.started(&a, now, true, false);
        let heavy = Meta::new(0, 10, None);
        let light = Meta::default();
        let mut pick = l.picker();
        assert_eq!(pick(&a), Look::Pass, "key a is saturated");
        assert_eq!(pick(&light), Look::Take, "a light one behind it may start");
        assert_eq!(
            pick(&heavy),
            Look::Done,
            "9 of 10 left: the heavy one waits, and nothing overtakes it"
        );
    }

    /// The counter counts each job it accepts as started for the jobs after it: a key
    /// with room for one takes one, and weights add up.
    #[test]
    fn the_counter_counts_accepted_jobs_as_started() {
        let mut l = Limits::new(LimitsConfig {
            max_per_key: Some(2),
            weight_capacity: Some(10),
            ..Default::default()
        });
        let now = Instant::now();
        let a = Meta::new(0, 1, Some("a".into()));
        l.started(&a, now, true, false);
        let b = Meta::new(0, 3, Some("b".into()));
        let mut count = l.counter();
        assert_eq!(count(&a), Look::Take, "a: 1 of 2 running");
        assert_eq!(count(&a), Look::Pass, "a: 1 running, 1 counted");
        assert_eq!(
            (count(&b), count(&b)),
            (Look::Take, Look::Take),
            "b: 2 of 2, weight 1 + 3 + 3"
        );
        assert_eq!(count(&b), Look::Pass, "b is full");
        assert_eq!(
            count(&Meta::new(0, 4, None)),
            Look::Done,
            "weight 7 + 4 > 10: nothing overtakes it"
        );
        // The picker (for `pop_startable`, which starts what it takes) does not count.
        let mut pick = l.picker();
        assert_eq!((pick(&a), pick(&a)), (Look::Take, Look::Take));
    }
}
