//! [`Polling`] and [`DropWatchers`]: the marks a slot task and the engine share without
//! the engine's lock.
//!
//! A slot task's [`Polling`] says which thread polls it (read by the exit take-over), that
//! an idle slot task was given a job (read by the lingering task), and how far it is with
//! dropping what its ended jobs left (read by a `wait()`, which [`DropWatchers`] counts
//! while it watches). Their atomics and `Arc` come from [`crate::sync`], so that the loom
//! models at the end of this file run this code (RELIABILITY.md, section 2).

use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Which thread polls a slot task right now, shared by the task and its entry in the
/// state: the exit take-over must not start a job again while its first run is inside a
/// poll on a live thread, and must not wait for a poll on the thread that is exiting.
/// Kept only by the slots of a pool that runs interrupted jobs again (`Job::RERUN` and the
/// pool's re-run setting): the take-over of any other pool never starts a job twice, and
/// reads no mark.
///
/// It also carries the mark that an idle slot task was given a job, so that a lingering
/// one finds out without taking the engine's lock; and, for a pool of recipes, how far the
/// slot is with dropping what its ended jobs left (see [`Polling::begin_drop`]).
///
/// A clone shares the marks; dropping one drops them with the last clone.
#[derive(Clone, Default)]
pub(super) struct Polling(Arc<PollingState>);

/// The marks of one slot task (see [`Polling`]).
#[derive(Default)]
struct PollingState {
    /// The [`thread_token`](super::thread_token) of the thread polling it now; 0: none.
    by: AtomicU64,
    /// Taken off the idle list to claim a reserved job (set under the engine's lock).
    claimed: AtomicBool,
    /// Taken off the idle list to exit: an elastic pool retired the idle worker it stood
    /// for (set and read under the engine's lock).
    retired: AtomicBool,
    /// Drops of ended jobs' leftovers begun (under the engine's lock) and finished.
    drops_begun: AtomicU64,
    drops_done: AtomicU64,
    /// One more than the id of the job whose run the slot started last (a pool of
    /// recipes only; 0: none; [`SETTLED`] once the exit take-over has read it): the exit
    /// take-over runs a job its slot took but never started once at the exit, also in a
    /// pool that does not run interrupted jobs again.
    started: AtomicU64,
    /// With the observability features: the span and start of the run the slot started
    /// last (a pool of recipes only), with its job's id, until that run ends: the exit
    /// take-over reports a started run it ends (aborted, or covered by a cancel, while its
    /// slot was not polled) as started, in its span, as a slot dropped by its runtime does.
    #[cfg(any(feature = "tracing", feature = "metrics"))]
    obs: std::sync::Mutex<Option<(u64, crate::observe::Running)>>,
}

/// [`Polling`]'s start mark once the exit take-over has settled it: no job's (ids are
/// far below `u64::MAX`).
const SETTLED: u64 = u64::MAX;

impl Polling {
    /// Whether `other` is a clone of this one: the marks of the same slot task (an entry
    /// whose key went to a new slot task has other marks).
    pub(super) fn same(&self, other: &Polling) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The slot task's poll begins on the thread of `token` (a
    /// [`thread_token`](super::thread_token)): before the poll checks the generation.
    pub(super) fn enter(&self, token: u64) {
        // SeqCst: see `by`.
        self.0.by.store(token, Ordering::SeqCst);
    }

    /// The poll [`enter`](Self::enter) began has returned.
    pub(super) fn leave(&self) {
        // Release: a take-over that sees it (`by`) sees what the poll did.
        self.0.by.store(0, Ordering::Release);
    }

    /// The thread polling now (a [`thread_token`](super::thread_token)), if any.
    pub(super) fn by(&self) -> Option<u64> {
        // SeqCst, with `enter`'s store and the generation's: either the take-over sees the
        // poll, or the poll sees the new generation and runs nothing.
        match self.0.by.load(Ordering::SeqCst) {
            0 => None,
            t => Some(t),
        }
    }

    /// The slot starts job `id`'s run (a pool of recipes only); whether it may. With
    /// `fenced` (a pool that does not run interrupted jobs again, whose slots mark no
    /// polls), the start and the exit take-over's [`settle`](Self::settle) are decided on
    /// this one mark, by read-modify-writes: a start the take-over settled first is
    /// refused (the take-over runs the job once at the exit), and one made first is seen
    /// by the take-over (which cuts the job). A start refused leaves the job to the
    /// take-over. Otherwise the take-over reads the mark only once the slot's poll has
    /// returned (`leave`'s Release), and the poll saw the generation at its top: the start
    /// is a plain store, never refused.
    pub(super) fn start(&self, id: u64, fenced: bool) -> bool {
        let mark = id.wrapping_add(1);
        if !fenced {
            self.0.started.store(mark, Ordering::Relaxed);
            return true;
        }
        // The slot alone stores anything but `SETTLED`: a failed exchange met the take-over.
        let now = self.0.started.load(Ordering::Relaxed);
        now != SETTLED
            && self
                .0
                .started
                .compare_exchange(now, mark, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// With the observability features: keeps `run`, the observation of job `id`'s run
    /// the slot starts (see `PollingState::obs`). Outside the engine's lock: what it
    /// replaces is dropped here (a span's drop calls the subscriber).
    #[cfg_attr(
        not(any(feature = "tracing", feature = "metrics")),
        allow(unused_variables)
    )]
    pub(super) fn keep_obs(&self, id: u64, run: &crate::observe::Running) {
        #[cfg(any(feature = "tracing", feature = "metrics"))]
        {
            let shared = run.share();
            // Dropped at the end of the block, once the mutex is released.
            let _old = self.obs().replace((id, shared));
        }
    }

    /// The observation kept for job `id`'s run, if it is the one kept (see
    /// [`keep_obs`](Self::keep_obs)); taken under the engine's lock, dropped outside it.
    #[cfg_attr(
        not(any(feature = "tracing", feature = "metrics")),
        allow(unused_variables)
    )]
    pub(super) fn take_obs(&self, id: u64) -> Option<crate::observe::Running> {
        #[cfg(any(feature = "tracing", feature = "metrics"))]
        {
            let mut kept = self.obs();
            if kept.as_ref().is_some_and(|(j, _)| *j == id) {
                return kept.take().map(|(_, run)| run);
            }
        }
        None
    }

    /// The run whose observation is kept has ended (or its slot is gone): forgets it, so
    /// that its span closes with the run. Outside the engine's lock.
    pub(super) fn forget_obs(&self) {
        #[cfg(any(feature = "tracing", feature = "metrics"))]
        {
            // Dropped at the end of the block, once the mutex is released.
            let _old = self.obs().take();
        }
    }

    #[cfg(any(feature = "tracing", feature = "metrics"))]
    fn obs(&self) -> std::sync::MutexGuard<'_, Option<(u64, crate::observe::Running)>> {
        self.0.obs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// For the exit take-over, under the engine's lock, once per slot: whether the slot
    /// started job `id`'s run. Settles it: the slot starts no run after this (see
    /// [`start`](Self::start)).
    pub(super) fn settle(&self, id: u64) -> bool {
        self.0.started.swap(SETTLED, Ordering::AcqRel) == id.wrapping_add(1)
    }

    /// Under the engine's lock: the idle slot task was taken off the idle list to claim a
    /// reserved job.
    pub(super) fn claim(&self) {
        // Release: its next poll (Acquire) sees the claim it was counted for.
        self.0.claimed.store(true, Ordering::Release);
    }

    /// Whether it was claimed since the last call; clears the mark.
    pub(super) fn take_claim(&self) -> bool {
        self.0.claimed.load(Ordering::Relaxed) && self.0.claimed.swap(false, Ordering::Acquire)
    }

    /// Under the engine's lock, where a job's end is counted: the slot drops what the job
    /// left (a recipe's run and copy; a panicked run, after the pool's `on_panic` call
    /// that reads it) once the lock is released. A `wait()` that counts the job as ended
    /// waits for [`end_drop`](Self::end_drop) too, so that it never returns before what
    /// it covers is dropped.
    #[inline]
    pub(super) fn begin_drop(&self) {
        // Written only by the slot; read under the lock.
        let begun = self.0.drops_begun.load(Ordering::Relaxed);
        self.0.drops_begun.store(begun + 1, Ordering::Relaxed);
    }

    /// The drop [`begin_drop`](Self::begin_drop) announced is over. (The engine calls it
    /// through [`DropWatchers::drop_ended`], which then tells a watching `wait()`.)
    #[inline]
    pub(super) fn end_drop(&self) {
        let begun = self.0.drops_begun.load(Ordering::Relaxed);
        // SeqCst, with `DropWatchers`: either the slot sees a waiter watching (and wakes
        // it), or the waiter sees this store.
        self.0.drops_done.store(begun, Ordering::SeqCst);
    }

    /// Under the engine's lock: the drop under way, if any, as the number a waiter waits
    /// for ([`dropped_through`](Self::dropped_through)).
    pub(super) fn dropping(&self) -> Option<u64> {
        let begun = self.0.drops_begun.load(Ordering::Relaxed);
        (self.0.drops_done.load(Ordering::SeqCst) < begun).then_some(begun)
    }

    /// Whether the drops up to the `n`-th are over.
    pub(super) fn dropped_through(&self, n: u64) -> bool {
        self.0.drops_done.load(Ordering::SeqCst) >= n
    }

    /// Whether anything but the list of slots that drop holds this mark (the slot task,
    /// or its entry): a mark nothing else holds belongs to a slot that is gone.
    pub(super) fn is_held(&self) -> bool {
        Arc::strong_count(&self.0) > 1
    }

    /// Under the engine's lock: the idle slot task was taken off the idle list to exit
    /// (its elastic worker retired).
    pub(super) fn retire(&self) {
        self.0.retired.store(true, Ordering::Relaxed);
    }

    /// Under the engine's lock: whether [`retire`](Self::retire) was called.
    pub(super) fn is_retired(&self) -> bool {
        self.0.retired.load(Ordering::Relaxed)
    }
}

/// How many `wait()`s watch for drops under way ([`Polling::dropping`]): a slot that
/// finishes one ([`drop_ended`](Self::drop_ended)) wakes the waits while there are any.
#[derive(Default)]
pub(super) struct DropWatchers(AtomicUsize);

impl DropWatchers {
    /// A `wait()` watches, from now until [`unwatch`](Self::unwatch): called under the
    /// engine's lock, after it read the drops under way and before it checks them again
    /// ([`Polling::dropped_through`]) and sleeps.
    pub(super) fn watch(&self) {
        // SeqCst: see `Polling::end_drop`.
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    /// A `wait()` that [`watch`](Self::watch)ed returned or was dropped.
    pub(super) fn unwatch(&self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }

    /// The drop `polling` announced is over ([`Polling::end_drop`]): whether a `wait()`
    /// watches, and must be woken to look again.
    #[inline]
    pub(super) fn drop_ended(&self, polling: &Polling) -> bool {
        polling.end_drop();
        // SeqCst: see `Polling::end_drop`.
        self.0.load(Ordering::SeqCst) > 0
    }
}

/// Loom models of the protocols these marks take part in, on this file's real code (the
/// engine's side of each, which lives in `Engine` and `Slot` and takes the engine's lock,
/// is written out here in the same order, the lock a shim `Mutex`): run with
/// `RUSTFLAGS="--cfg nb_aiopool_loom" cargo test --lib --release loom`.
///
/// Loom 0.7 treats a `SeqCst` access as `AcqRel`, but for one rule: a `SeqCst` load never
/// returns a `SeqCst` store older than a newer `SeqCst` store. An atomic's initial value is
/// not such a store, so from it loom lets two threads that each store one mark and then
/// load the other's (the store-buffering pattern these marks rely on) both read the old
/// values, which the single order of `SeqCst` operations forbids (a false alarm). So the
/// models that rely on it start where every store to those marks is `SeqCst`, as the real
/// code's are after the first: a drop and a watch before the race (the drop models), the
/// generation stored before the take-over (the exit models). `by` has a `Release` store
/// (`leave`) besides its initial value: the exit model where the poll and the take-over
/// race from the start (`a_take_over_and_a_poll(false)`) fails in loom for that reason
/// alone, so it is not run.
#[cfg(all(test, nb_aiopool_loom))]
mod loom_tests {
    use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
    use loom::sync::{Arc, Mutex};
    use loom::thread;

    use super::super::slot::LINGER_POLLS;
    use super::{DropWatchers, Polling};

    /// The engine's `changed` (a tokio `Notify`) as a waiting `wait()` uses it: the wait
    /// makes and enables its `Notified` before it takes the lock, and any
    /// `notify_waiters` call made after that wakes it (tokio's guarantee, which tokio
    /// loom-tests itself); a count of the calls stands for it.
    #[derive(Default)]
    struct Changed(AtomicUsize);

    impl Changed {
        /// `notified()` and `enable()`: what the wait is woken by the calls after.
        fn notified(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }

        fn notify_waiters(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }

        /// Whether a `notify_waiters` call came after `notified` returned `since`.
        fn woke(&self, since: usize) -> bool {
            self.0.load(Ordering::SeqCst) != since
        }
    }

    /// What the model's threads share under the engine's lock.
    #[derive(Default)]
    struct Counted {
        /// Jobs counted as ended (with their drop announced in the same critical section).
        ended: usize,
        /// `State::droppers`.
        droppers: Vec<Polling>,
    }

    /// The engine, as far as a slot's drops and a `wait()` watching them go.
    struct DropEngine {
        state: Mutex<Counted>,
        drop_watchers: DropWatchers,
        changed: Changed,
        /// Job `k`'s leftovers are dropped: written by the slot outside the lock, read by
        /// the wait; `Relaxed`, so that a read sees the write only if the protocol orders
        /// them (loom then explores the reads of the old value).
        dropped: Vec<AtomicBool>,
    }

    impl DropEngine {
        fn new(jobs: usize) -> Self {
            DropEngine {
                state: Mutex::new(Counted::default()),
                drop_watchers: DropWatchers::default(),
                changed: Changed::default(),
                dropped: (0..jobs).map(|_| AtomicBool::new(false)).collect(),
            }
        }

        /// The slot ends job `k`, as `Slot::finish` does: under the lock, counts it and
        /// announces the drop (`Engine::begin_drop`); after the lock, drops what it left
        /// and ends the drop (`Engine::end_drop`).
        fn end_job(&self, polling: &Polling, k: usize) {
            {
                let mut st = self.state.lock().unwrap();
                st.ended += 1;
                if st.droppers.is_empty() {
                    st.droppers.push(polling.clone());
                }
                polling.begin_drop();
            }
            self.dropped[k].store(true, Ordering::Relaxed);
            if self.drop_watchers.drop_ended(polling) {
                self.changed.notify_waiters();
            }
        }

        /// A `wait()` that reached its target: every job it counted as ended has what it
        /// left dropped, and sees it so.
        fn assert_dropped(&self, ended: usize) {
            for (k, d) in self.dropped[..ended].iter().enumerate() {
                assert!(
                    d.load(Ordering::Relaxed),
                    "the wait returned before job {k}'s leftovers were dropped"
                );
            }
        }
    }

    /// A `wait()` that must sleep, as `Engine::wait_all_but` leaves it: what it waits for.
    struct Asleep {
        since: usize,
        ended: usize,
        drops: Vec<(Polling, u64)>,
    }

    /// One round of `Engine::wait_all_but`'s loop, once its target is reached: enable the
    /// `Notified`; under the lock, read the drops under way and, with some, watch; after
    /// it, look at them again; return if all are over, else sleep. `None`: it returned.
    fn wait_round(engine: &DropEngine) -> Option<Asleep> {
        let since = engine.changed.notified();
        let (ended, mut drops) = {
            let st = engine.state.lock().unwrap();
            let drops: Vec<(Polling, u64)> = st
                .droppers
                .iter()
                .filter_map(|p| p.dropping().map(|n| (p.clone(), n)))
                .collect();
            if !drops.is_empty() {
                engine.drop_watchers.watch();
            }
            (st.ended, drops)
        };
        let watching = !drops.is_empty();
        drops.retain(|(p, n)| !p.dropped_through(*n));
        if drops.is_empty() {
            engine.assert_dropped(ended);
            if watching {
                engine.drop_watchers.unwatch();
            }
            return None;
        }
        Some(Asleep {
            since,
            ended,
            drops,
        })
    }

    /// After the slot ended: a wait that slept was woken, and its next round (the drops
    /// it saw looked at again) returns with them dropped.
    fn woken_and_done(engine: &DropEngine, asleep: Option<Asleep>) {
        if let Some(mut asleep) = asleep {
            assert!(
                engine.changed.woke(asleep.since),
                "lost wake-up: the wait sleeps on a drop that ended"
            );
            asleep.drops.retain(|(p, n)| !p.dropped_through(*n));
            assert!(asleep.drops.is_empty(), "woken with a drop not over");
            engine.assert_dropped(asleep.ended);
            engine.drop_watchers.unwatch();
        }
        assert_eq!(engine.drop_watchers.0.load(Ordering::SeqCst), 0);
    }

    /// A slot ends `jobs` jobs (announcing each drop under the lock, then ending it)
    /// while a `wait()` whose target was reached looks for drops under way: the wait never
    /// returns before what a job it counted left is dropped, and a wait that sleeps on a
    /// drop is woken when it ends. From a pool whose slot ended a job before (its drop
    /// over) and that a wait watched before (see the module's note on `SeqCst`).
    fn a_wait_and_a_slot_dropping(jobs: usize) {
        loom::model(move || {
            let engine = Arc::new(DropEngine::new(1 + jobs));
            let polling = Polling::default();
            engine.drop_watchers.watch();
            engine.drop_watchers.unwatch();
            engine.end_job(&polling, 0);
            let slot = {
                let engine = Arc::clone(&engine);
                thread::spawn(move || {
                    for k in 1..=jobs {
                        engine.end_job(&polling, k);
                    }
                })
            };
            let waiter = {
                let engine = Arc::clone(&engine);
                thread::spawn(move || wait_round(&engine))
            };
            slot.join().unwrap();
            let asleep = waiter.join().unwrap();
            woken_and_done(&engine, asleep);
        });
    }

    #[test]
    fn a_wait_sees_a_drop_over_or_is_woken_when_it_ends() {
        a_wait_and_a_slot_dropping(1);
    }

    /// As above, the slot ending two jobs in a row: a wait that saw the first drop under
    /// way may find the second begun by the time it looks again.
    #[test]
    fn a_wait_sees_two_drops_in_a_row_over_or_is_woken() {
        a_wait_and_a_slot_dropping(2);
    }

    /// The idle list's entry for the one idle slot task of the model.
    #[derive(Default)]
    struct IdleEntry {
        /// In `State::idle`.
        listed: bool,
        /// Its waker is stored there (`Idle::waker`).
        waker: bool,
    }

    /// One poll of an idle slot task, as `Slot::poll_slot` does it: a claim seen without
    /// the lock while it lingers; after `LINGER_POLLS` rounds, under the lock, gone from
    /// the idle list (`Engine::idle_poll` returns `None`: the mark is cleared there), or
    /// its waker stored. `Some(true)`: claimed; `Some(false)`: it waits to be woken;
    /// `None`: it lingers (polled again).
    fn idle_poll(idle: &Mutex<IdleEntry>, polling: &Polling, rounds: &mut u8) -> Option<bool> {
        if polling.take_claim() {
            return Some(true);
        }
        if *rounds < LINGER_POLLS {
            *rounds += 1;
            return None;
        }
        let mut entry = idle.lock().unwrap();
        if entry.listed {
            entry.waker = true;
            return Some(false);
        }
        polling.take_claim();
        Some(true)
    }

    /// Polls an idle slot task until it is claimed (`true`) or waits (`false`).
    fn idle_until_claimed_or_asleep(
        idle: &Mutex<IdleEntry>,
        polling: &Polling,
        rounds: &mut u8,
    ) -> bool {
        loop {
            match idle_poll(idle, polling, rounds) {
                Some(claimed) => return claimed,
                None => thread::yield_now(),
            }
        }
    }

    /// `Engine::add_claimer` takes the idle slot task for a reservation (under the lock,
    /// off the idle list, marked claimed) while it lingers without the lock: it sees the
    /// claim exactly once (it then runs, goes idle again with the same mark, and finds no
    /// claim there), and is woken if it went to sleep first.
    #[test]
    fn a_claim_of_a_lingering_slot_is_seen_exactly_once() {
        loom::model(|| {
            let idle = Arc::new(Mutex::new(IdleEntry {
                listed: true,
                waker: false,
            }));
            let polling = Polling::default();
            let woken = Arc::new(AtomicUsize::new(0));
            let claimer = {
                let (idle, polling, woken) =
                    (Arc::clone(&idle), polling.clone(), Arc::clone(&woken));
                thread::spawn(move || {
                    let wake = {
                        let mut entry = idle.lock().unwrap();
                        assert!(entry.listed, "the slot left the idle list unclaimed");
                        entry.listed = false;
                        polling.claim();
                        std::mem::take(&mut entry.waker)
                    };
                    // `later.wake`, after the lock.
                    if wake {
                        woken.fetch_add(1, Ordering::SeqCst);
                    }
                })
            };
            let slot = {
                let (idle, polling) = (Arc::clone(&idle), polling.clone());
                thread::spawn(move || {
                    let mut rounds = 0;
                    let claimed = idle_until_claimed_or_asleep(&idle, &polling, &mut rounds);
                    (claimed, rounds)
                })
            };
            claimer.join().unwrap();
            let (mut claimed, mut rounds) = slot.join().unwrap();
            if !claimed {
                assert_eq!(
                    woken.load(Ordering::SeqCst),
                    1,
                    "a claimed idle slot task asleep and not woken"
                );
                // Its next poll, woken.
                claimed = idle_until_claimed_or_asleep(&idle, &polling, &mut rounds);
                assert!(claimed, "woken, and the claim not seen");
            }
            // It ran the job, and went idle again (`Engine::keep_idle`, same mark).
            *idle.lock().unwrap() = IdleEntry {
                listed: true,
                waker: false,
            };
            let mut rounds = 0;
            assert!(
                !idle_until_claimed_or_asleep(&idle, &polling, &mut rounds),
                "one claim seen twice"
            );
        });
    }

    /// The exit take-over (under the lock, the generation stored, then each entry's `by`
    /// read; a poll seen under way waited for, with `by`, until it returns; then the job
    /// run again) against a slot task's poll (`by` set, then the generation read, as
    /// `Slot::poll` and `Slot::is_stale` do; a poll of the old generation runs the job, a
    /// stale one nothing; then `by` cleared): the job's two runs never overlap, and the
    /// run again sees what the poll's run did.
    ///
    /// `entered`: the poll had set `by` before the take-over began (the take-over then
    /// sees it or its end); otherwise the two race from the start, and only the single
    /// order of `SeqCst` operations (`enter` and `by` with the generation's store and
    /// load) keeps a poll that reads the old generation from going unseen, which loom 0.7
    /// does not model (see the module's note: `by`'s earlier stores, its initial value and
    /// `leave`'s `Release`, are not `SeqCst`, so loom lets the take-over read 0 past the
    /// poll's `enter`). The generation is stored (`SeqCst`, as every later store of it)
    /// before the model starts, for the same reason.
    fn a_take_over_and_a_poll(entered: bool) {
        /// A run of the job: it reads and writes what the job owns (`Relaxed`: two runs
        /// that the protocol does not order may both read the old count, and one is lost).
        fn run(job: &AtomicU32) {
            let runs = job.load(Ordering::Relaxed);
            thread::yield_now();
            job.store(runs + 1, Ordering::Relaxed);
        }

        loom::model(move || {
            let generation = Arc::new(AtomicU64::new(0));
            generation.store(0, Ordering::SeqCst);
            let polling = Polling::default();
            let job = Arc::new(AtomicU32::new(0));
            if entered {
                polling.enter(1);
            }
            let slot = {
                let (generation, polling, job) =
                    (Arc::clone(&generation), polling.clone(), Arc::clone(&job));
                thread::spawn(move || {
                    if !entered {
                        polling.enter(1);
                    }
                    let seen = generation.load(Ordering::SeqCst);
                    if seen == 0 {
                        run(&job);
                    }
                    polling.leave();
                    seen
                })
            };
            let take_over = {
                let (generation, polling, job) =
                    (Arc::clone(&generation), polling.clone(), Arc::clone(&job));
                thread::spawn(move || {
                    generation.store(1, Ordering::SeqCst);
                    let by = polling.by();
                    if by.is_some() {
                        // Busy: it waits for the poll to return (once seen ended, ended).
                        while polling.by().is_some() {
                            thread::yield_now();
                        }
                    }
                    // The job starts again.
                    run(&job);
                    by
                })
            };
            let seen = slot.join().unwrap();
            let by = take_over.join().unwrap();
            assert_eq!(
                job.load(Ordering::Relaxed),
                u32::from(seen == 0) + 1,
                "the take-over ran the job again while its poll ran it (the take-over read \
                 `by` {by:?}, the poll the generation {seen})"
            );
        });
    }

    #[test]
    fn a_take_over_that_finds_a_poll_runs_the_job_again_after_it() {
        a_take_over_and_a_poll(true);
    }

    /// The exit take-over of a pool that does not run interrupted jobs again (under the
    /// lock, the generation stored, then each slot's start of its job settled: a job its
    /// slot started is cut, one it never started runs once at the exit) against the slot
    /// starting that job (the generation checked at its poll's top, as `Slot::is_stale`
    /// does, then the start marked, as `Slot::poll_slot` does): the job runs exactly once, by the slot or by the
    /// exit, never by both and never by neither (RELIABILITY.md, 346). The generation is
    /// stored before the model starts, as in `a_take_over_and_a_poll`.
    #[test]
    fn a_job_a_slot_starts_as_the_exit_takes_over_runs_once() {
        loom::model(|| {
            let generation = Arc::new(AtomicU64::new(0));
            generation.store(0, Ordering::SeqCst);
            let polling = Polling::default();
            // The slot's previous job, started before the model (a `SeqCst` store in the
            // protocol this model first caught, which loom needs: see the module's note).
            assert!(polling.start(3, true));
            let runs = Arc::new(AtomicU32::new(0));
            let slot = {
                let (generation, polling, runs) =
                    (Arc::clone(&generation), polling.clone(), Arc::clone(&runs));
                thread::spawn(move || {
                    if generation.load(Ordering::SeqCst) != 0 {
                        return false;
                    }
                    let ran = polling.start(7, true);
                    if ran {
                        runs.fetch_add(1, Ordering::Relaxed);
                    }
                    ran
                })
            };
            let take_over = {
                let (generation, polling, runs) =
                    (Arc::clone(&generation), polling.clone(), Arc::clone(&runs));
                thread::spawn(move || {
                    generation.store(1, Ordering::SeqCst);
                    let started = polling.settle(7);
                    if !started {
                        runs.fetch_add(1, Ordering::Relaxed);
                    }
                    started
                })
            };
            let ran = slot.join().unwrap();
            let started = take_over.join().unwrap();
            assert_eq!(
                runs.load(Ordering::Relaxed),
                1,
                "a job run {} times at the exit (the slot ran it: {ran}; the take-over saw \
                 it started and cut it: {started})",
                runs.load(Ordering::Relaxed)
            );
        });
    }
}
