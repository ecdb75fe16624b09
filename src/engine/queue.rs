//! The queue discipline: the order in which admitted jobs wait for a slot.
//!
//! [`Queue`] starts as a plain FIFO ring and turns itself into a sorted map the first
//! time a job with a priority other than 0 arrives, so a pool that never uses priorities
//! pays nothing for them. Among equal priorities the order is FIFO (by job id, which is
//! the admission order); jobs put back at the front (interrupted re-runs) go before all.
//!
//! The map (a `BTreeMap` keyed by priority, then id) rather than a binary heap: flow
//! control visits the queue in order on every start ([`Queue::count`]), which a
//! map does by iterating and a heap only by sorting (measured: sorting made a pool with
//! priorities and limits 1.7x slower).
//!
//! # Parked jobs
//!
//! A job whose key has no room left (as many of its jobs running as `max_per_key`, or,
//! in a count, as many counted ahead of it as its key has room for) cannot start, and flow
//! control's scans pass over it. So that those scans do not walk past the same jobs at
//! every start (a key with thousands of queued jobs made every other key's start cost as
//! much: RELIABILITY.md, 376), a scan that visits more than [`PARK_AFTER`] jobs *parks*
//! the ones it passed over for their key: moves them aside, into a map of each key's
//! parked jobs in queue order, which scans skip. They are still queued for everything else
//! (the length, aborts, cancels, the exit), and an operation that needs queue order over
//! all the jobs puts the parked ones back first. Before each scan, a key gets back as many
//! of its first parked jobs as its room exceeds the unparked jobs of it known to be ahead
//! of them ([`Queue::unpark`]): a scan then answers what it would answer with no job
//! parked, since every parked job of a key comes after as many unparked ones of that key
//! as the key has room for, which the scan takes (or counts) first.
//!
//! # Counts that go on
//!
//! Flow control counts the jobs that may start at every start and submit, and the jobs
//! already reserved a slot come first in every such count: hundreds of them on a
//! current-thread runtime, whose slot tasks run only once the submitter yields. So a count
//! stops at a *cursor*, which the next count may go on from ([`Queue::count`]), with the
//! totals flow control kept (`Limits`' memo). The queue keeps the cursor on its item
//! through the changes that leave the items before it as they were (a push behind it, a
//! slot taking the first job counted), notes one push before it (by its priority) for the
//! next count to look at first ([`Queue::take_ahead`]), and changes its
//! [`epoch`](Queue::epoch) on any other change, after which counts start from the head.

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound::{Excluded, Unbounded};

use super::task_key::{KeyMap, TaskKey};

/// What the queue needs to know of a queued item.
pub(crate) trait Ordered {
    /// Higher runs first.
    fn priority(&self) -> i32;
    /// The admission order: lower runs first among equal priorities.
    fn seq(&self) -> u64;
    /// The key whose `max_per_key` limit it counts under, if any.
    fn key(&self) -> Option<&TaskKey>;
}

/// What flow control says of a queued item, in a scan (see [`Queue::count`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Look {
    /// It may start: taken, or counted.
    Take,
    /// It may not start now; items after it may.
    Pass,
    /// Neither it nor any item after it may start now (weights keep FIFO order): the scan
    /// ends here.
    Done,
}

/// How many more jobs of each key may run now, for the scans (see
/// [`Queue::count`]), and which keys may have gained room since the scans last
/// asked: only those keys' parked jobs are looked at before a scan ([`Queue::unpark`]).
/// Looking at every parked key made each start cost as much per saturated key as
/// starts cost per parked job before parking (1,000 hosts at their limit, 3 jobs parked
/// each: 30x the cost of a start with none). A plain function says every key may have
/// gained room (each parked key is looked at).
pub(crate) trait KeyRooms {
    /// How many more jobs of `key` may run now.
    fn room(&self, key: &TaskKey) -> usize;
    /// Shows `each` the keys whose room may have grown since the last call, and forgets
    /// them; `false` (without a call) if any key may have.
    fn freed(&self, each: &mut dyn FnMut(&TaskKey)) -> bool;
}

impl<F: Fn(&TaskKey) -> usize> KeyRooms for F {
    fn room(&self, key: &TaskKey) -> usize {
        self(key)
    }

    fn freed(&self, _: &mut dyn FnMut(&TaskKey)) -> bool {
        false
    }
}

/// An item's place in queue order, for all but the items put back at the front (which
/// go before all).
type Place = (Reverse<i32>, u64);

fn place<T: Ordered>(item: &T) -> Place {
    (Reverse(item.priority()), item.seq())
}

/// Queue order: higher priority, then lower seq; then the order of insertion, so that two
/// items can never share a key.
type Key = (Reverse<i32>, u64, u64);

enum Order<T> {
    /// The ring, and how many items at its head were put back at the front (interrupted
    /// runs, which go first: an item put back at its place goes after them).
    Fifo(VecDeque<T>, usize),
    Sorted {
        map: BTreeMap<Key, T>,
        /// Insertions so far (the last part of the key).
        inserted: u64,
        /// Items put back at the front, in order: they go before the map.
        front: VecDeque<T>,
    },
}

impl<T> Default for Order<T> {
    fn default() -> Self {
        Order::Fifo(VecDeque::new(), 0)
    }
}

impl<T: Ordered> Order<T> {
    /// Adds a newly admitted item; says where it went.
    ///
    /// The ring's case inline, the rest apart ([`push_sorted`](Self::push_sorted)): a
    /// plain job's push is a `push_back` in its submit's critical section. Out of line as
    /// one function (the map's case made it too large to inline), every push paid the
    /// call, its entry and exit and a copy of the item into the callee's frame: 57
    /// instructions per job of a plain pool on a current-thread runtime; split, 24 fewer
    /// per job of common and no-queue, 15 of smart (callgrind, `bench/instructions.sh`,
    /// against 52501ad).
    #[inline]
    fn push(&mut self, item: T) -> Pushed {
        if let Order::Fifo(ring, _) = self {
            if item.priority() == 0 {
                ring.push_back(item);
                return Pushed::Ring;
            }
        }
        self.push_sorted(item)
    }

    /// [`push`](Self::push) of an item the ring does not take: into the map, which a ring
    /// becomes at its first prioritised item.
    #[inline(never)]
    fn push_sorted(&mut self, item: T) -> Pushed {
        let mut pushed = Pushed::Map;
        if let Order::Fifo(ring, first) = self {
            // A prioritised item (`push` put a plain one in the ring).
            pushed = Pushed::Sorted;
            // The first prioritised item: keep the order so far, by seq, in the map; the
            // items put back at the front stay first.
            let front: VecDeque<T> = ring.drain(..*first).collect();
            let mut map = BTreeMap::new();
            let mut inserted = 0;
            for old in ring.drain(..) {
                map.insert((Reverse(old.priority()), old.seq(), inserted), old);
                inserted += 1;
            }
            *self = Order::Sorted {
                map,
                inserted,
                front,
            };
        }
        let Order::Sorted { map, inserted, .. } = self else {
            unreachable!("sorted above")
        };
        let key = (Reverse(item.priority()), item.seq(), *inserted);
        map.insert(key, item);
        *inserted += 1;
        match pushed {
            Pushed::Map => Pushed::At(key),
            other => other,
        }
    }

    /// Puts back an item that must go first (an interrupted run).
    fn push_front(&mut self, item: T) {
        match self {
            Order::Fifo(ring, first) => {
                ring.push_front(item);
                *first += 1;
            }
            Order::Sorted { front, .. } => front.push_front(item),
        }
    }

    /// Puts back an item that left the queue and did not start (a job handed to a slot of
    /// its own runtime that found the rate window full, or whose slot was dropped with its
    /// runtime or taken over at the exit before it started it): at its place by seq among the
    /// items of its priority, before the first later one, so that several put back keep
    /// their order; after the items pushed to the front (interrupted re-runs), which stay
    /// first.
    fn put_back(&mut self, item: T) {
        match self {
            Order::Fifo(ring, first) if item.priority() == 0 => {
                let pos = ring
                    .iter()
                    .skip(*first)
                    .position(|x| x.priority() == 0 && x.seq() > item.seq())
                    .map_or(ring.len(), |p| p + *first);
                ring.insert(pos, item);
            }
            // A prioritised one in a ring: the ring becomes sorted, as for a new one.
            _ => drop(self.push(item)),
        }
    }

    /// Whether it is ordered by priority (a job it takes may go ahead of queued ones).
    fn is_sorted(&self) -> bool {
        matches!(self, Order::Sorted { .. })
    }

    fn len(&self) -> usize {
        match self {
            Order::Fifo(ring, _) => ring.len(),
            Order::Sorted { map, front, .. } => map.len() + front.len(),
        }
    }

    /// The item [`pop`](Self::pop) would take, and whether it was put back at the front.
    fn first(&self) -> Option<(&T, bool)> {
        match self {
            Order::Fifo(ring, first) => ring.front().map(|item| (item, *first > 0)),
            Order::Sorted { map, front, .. } => front
                .front()
                .map(|item| (item, true))
                .or_else(|| map.first_key_value().map(|(_, item)| (item, false))),
        }
    }

    /// The next item to start.
    fn pop(&mut self) -> Option<T> {
        match self {
            Order::Fifo(ring, first) => {
                *first = first.saturating_sub(1);
                ring.pop_front()
            }
            Order::Sorted { map, front, .. } => front
                .pop_front()
                .or_else(|| map.pop_first().map(|(_, item)| item)),
        }
    }

    /// The first item, in queue order, that `ok` accepts, or `None`. Items before it stay
    /// where they are. Costs a scan past the refused items.
    fn pop_first(&mut self, mut ok: impl FnMut(&T) -> bool) -> Option<T> {
        match self {
            Order::Fifo(ring, first) => {
                let pos = ring.iter().position(ok)?;
                *first -= usize::from(pos < *first);
                ring.remove(pos)
            }
            Order::Sorted { map, front, .. } => {
                if let Some(pos) = front.iter().position(&mut ok) {
                    return front.remove(pos);
                }
                let key = *map.iter().find(|(_, item)| ok(item))?.0;
                map.remove(&key)
            }
        }
    }

    /// Removes the item whose [`seq`](Ordered::seq) is `seq` and whose priority is
    /// `priority`, if it is queued. A FIFO ring is in seq order but for items put back at
    /// the front, so it is searched by bisection first; a sorted queue is keyed by
    /// priority and seq. Items put back at the front are searched one by one. Returns the
    /// item, where it stood, and whether it was one put back at the front.
    fn remove_seq(&mut self, seq: u64, priority: i32) -> Option<(T, Stop, bool)> {
        match self {
            Order::Fifo(ring, first) => {
                let pos = match ring.binary_search_by_key(&seq, T::seq) {
                    Ok(pos) => Some(pos),
                    Err(_) => ring.iter().position(|item| item.seq() == seq),
                }?;
                let front = pos < *first;
                *first -= usize::from(front);
                ring.remove(pos).map(|item| (item, Stop::Ring(pos), front))
            }
            Order::Sorted { map, front, .. } => {
                if let Some(pos) = front.iter().position(|item| item.seq() == seq) {
                    return front.remove(pos).map(|item| (item, Stop::Front(pos), true));
                }
                let from = (Reverse(priority), seq, 0);
                let to = (Reverse(priority), seq, u64::MAX);
                let key = *map.range(from..=to).next()?.0;
                map.remove(&key).map(|item| (item, Stop::Map(key), false))
            }
        }
    }

    /// Whether `ok` accepts any item.
    fn any(&self, ok: impl FnMut(&T) -> bool) -> bool {
        match self {
            Order::Fifo(ring, _) => ring.iter().any(ok),
            Order::Sorted { map, front, .. } => front.iter().chain(map.values()).any(ok),
        }
    }

    /// How many items `ok` accepts, visited in queue order (as `pop_first` takes them: the
    /// picker's answer depends on the jobs before, for weights), counting no further than
    /// `most` (0 visits none). Costs the items it visits, not the queue's length.
    fn count(&self, most: usize, mut ok: impl FnMut(&T) -> bool) -> usize {
        if most == 0 {
            return 0;
        }
        let mut n = 0;
        let mut visit = |item: &T| {
            if ok(item) {
                n += 1;
            }
            n < most
        };
        match self {
            Order::Fifo(ring, _) => {
                for item in ring {
                    if !visit(item) {
                        break;
                    }
                }
            }
            Order::Sorted { map, front, .. } => {
                for item in front.iter().chain(map.values()) {
                    if !visit(item) {
                        break;
                    }
                }
            }
        }
        n
    }

    /// Removes the items for which `take` returns `true`.
    fn extract_if(&mut self, mut take: impl FnMut(&mut T) -> bool) -> Vec<T> {
        let mut out = Vec::new();
        // Returns how many of the first `first` items it kept.
        let mut from_ring = |ring: &mut VecDeque<T>, first: usize| {
            let mut kept = VecDeque::with_capacity(ring.len());
            let mut kept_first = 0;
            for (n, mut item) in ring.drain(..).enumerate() {
                if take(&mut item) {
                    out.push(item);
                } else {
                    kept_first += usize::from(n < first);
                    kept.push_back(item);
                }
            }
            *ring = kept;
            kept_first
        };
        match self {
            Order::Fifo(ring, first) => *first = from_ring(ring, *first),
            Order::Sorted { map, front, .. } => {
                from_ring(front, 0);
                let taken: Vec<Key> = map
                    .iter_mut()
                    .filter_map(|(key, item)| take(item).then_some(*key))
                    .collect();
                out.extend(taken.iter().filter_map(|key| map.remove(key)));
            }
        }
        out
    }

    /// Visits every item (in queue order).
    fn for_each(&self, mut f: impl FnMut(&T)) {
        match self {
            Order::Fifo(ring, _) => ring.iter().for_each(f),
            Order::Sorted { map, front, .. } => {
                front.iter().for_each(&mut f);
                map.values().for_each(f);
            }
        }
    }

    /// Visits every item (in queue order), mutably.
    fn for_each_mut(&mut self, mut f: impl FnMut(&mut T)) {
        match self {
            Order::Fifo(ring, _) => ring.iter_mut().for_each(f),
            Order::Sorted { map, front, .. } => {
                front.iter_mut().for_each(&mut f);
                map.values_mut().for_each(f);
            }
        }
    }
}

/// The jobs waiting for a slot, in queue order (see the module docs), with the jobs of
/// keys at their limit parked aside.
pub(crate) struct Queue<T> {
    /// The jobs scans visit.
    order: Order<T>,
    /// Jobs of keys at their `max_per_key` limit, which scans skip (boxed, made at the
    /// first one: a pool without key limits pays one word for them).
    parked: Option<Box<Parked<T>>>,
    /// How many are parked (kept here: every job's path reads the queue's length).
    parked_len: usize,
    /// Where the last count stopped, for the next one to go on from (see
    /// [`count`](Queue::count)).
    cursor: Cursor,
    /// Changed whenever items may have moved before the cursor (or the order changed under
    /// it): what a count found before is then no longer true of the items before it.
    epoch: u64,
    /// An item pushed before the cursor since the last count (by its priority), which the
    /// next count looks at first (see [`take_ahead`](Queue::take_ahead)); a second one
    /// changes the epoch.
    ahead: Option<Key>,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            order: Order::default(),
            parked: None,
            parked_len: 0,
            cursor: Cursor::Head,
            epoch: 0,
            ahead: None,
        }
    }
}

/// Where an item went when it was pushed.
enum Pushed {
    /// To the back of the ring.
    Ring,
    /// To this key of the sorted map.
    At(Key),
    /// The first with a priority: the ring became a sorted map.
    Sorted,
    /// (While pushing: into the map.)
    Map,
}

/// Where a count stopped: the next one goes on from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    /// Before the first item.
    Head,
    /// At this place of the ring (the next item to look at).
    Ring(usize),
    /// At this place of a sorted queue's front (items put back at the front); past them,
    /// at the map's first item.
    Front(usize),
    /// After this key of a sorted queue's map.
    Map(Key),
}

/// What a scan found.
struct Scanned {
    /// For a scan for one, where its take is.
    stop: Option<Stop>,
    /// How many items it took.
    took: usize,
    /// Whether it passed over any item.
    passed_any: bool,
    /// Where it stopped; `None` if it parked items (the order changed).
    end: Option<Cursor>,
}

/// What a [`count`](Queue::count) found: how many items it took, and whether it passed over
/// any (for its key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Count {
    pub(crate) took: usize,
    pub(crate) passed: bool,
}

/// The parked jobs, by key.
struct Parked<T> {
    keys: KeyMap<ParkedKey<T>>,
    /// Each key's first parked place: the first parked job without a look at every key.
    heads: BTreeMap<Place, TaskKey>,
    /// Keys whose `lead` was lowered since the last [`Queue::unpark`] (their room beyond
    /// it may have grown); `dirty_all`: too many to list, look at every key.
    dirty: Vec<TaskKey>,
    dirty_all: bool,
}

/// One key's parked jobs (never none: a key's entry goes with its last job).
struct ParkedKey<T> {
    items: BTreeMap<Place, T>,
    /// At most as many of the key's unparked jobs as come before its first parked one (a
    /// lower bound: kept exact where it is cheap, lowered to be safe elsewhere). A scan
    /// takes or counts those first, so the key needs no more back than its room beyond
    /// them (see [`Queue::unpark`]).
    lead: usize,
}

impl<T: Ordered> Parked<T> {
    /// Parks `item` of key `key`, which comes after `lead` unparked items of that key.
    fn park(&mut self, key: TaskKey, item: T, lead: usize) {
        let at = place(&item);
        let parked = self.keys.entry(key.clone()).or_insert_with(|| ParkedKey {
            items: BTreeMap::new(),
            lead,
        });
        match parked.items.first_key_value() {
            None => drop(self.heads.insert(at, key)),
            Some((first, _)) if at < *first => {
                // The key's new first parked item.
                parked.lead = lead;
                self.heads.remove(first);
                self.heads.insert(at, key);
            }
            Some(_) => {}
        }
        parked.items.insert(at, item);
    }

    /// Gives `p`, the parked jobs of `key`, as many of its first ones back to `order` as
    /// its room exceeds its `lead`; returns how many. Keeps `heads`.
    fn give_back(
        heads: &mut BTreeMap<Place, TaskKey>,
        order: &mut Order<T>,
        key: &TaskKey,
        p: &mut ParkedKey<T>,
        room: usize,
    ) -> usize {
        let n = room.saturating_sub(p.lead);
        if n == 0 {
            return 0;
        }
        let Some((&head, _)) = p.items.first_key_value() else {
            return 0;
        };
        heads.remove(&head);
        let mut given = 0;
        while given < n {
            let Some((_, item)) = p.items.pop_first() else {
                break;
            };
            given += 1;
            p.lead += 1;
            order.put_back(item);
        }
        if let Some((&head, _)) = p.items.first_key_value() {
            heads.insert(head, key.clone());
        }
        given
    }
}

/// How many items a scan visits before it parks any: most scans stop within them (a start
/// takes the first job that may start), and pay nothing for parking. (Few in this module's
/// tests, so that they park often.)
const PARK_AFTER: usize = if cfg!(test) { 2 } else { 32 };

/// Where a scan for one item took it.
#[derive(Clone, Copy)]
enum Stop {
    /// At this place of the FIFO ring.
    Ring(usize),
    /// At this place of a sorted queue's front (items put back at the front).
    Front(usize),
    /// At this key of a sorted queue's map.
    Map(Key),
}

impl<T: Ordered> Queue<T> {
    /// Adds a newly admitted item.
    ///
    /// Always inline: its one caller in the engine is a submit's critical section
    /// (`Engine::push`), where, left to the compiler (`#[inline]`), it stayed a call, its
    /// entry and exit and the item copied into its frame on the way to the ring: 41
    /// instructions per job; inline, 13 fewer per job of common, 14 of no-queue, 24 of
    /// smart (callgrind, `bench/instructions.sh`, against 52501ad).
    #[inline(always)]
    pub(crate) fn push(&mut self, item: T) {
        match self.order.push(item) {
            Pushed::Ring => {}
            Pushed::At(key) if !matches!(self.cursor, Cursor::Map(at) if key < at) => {}
            Pushed::At(key) if self.ahead.is_none() => self.ahead = Some(key),
            _ => self.moved(),
        }
    }

    /// Puts back an item that must go first (an interrupted run).
    #[inline]
    pub(crate) fn push_front(&mut self, item: T) {
        self.moved();
        self.order.push_front(item);
    }

    /// Puts back an item that left the queue and did not start, at its place (see
    /// [`Order::put_back`]).
    #[inline]
    pub(crate) fn put_back(&mut self, item: T) {
        self.moved();
        self.order.put_back(item);
    }

    /// Items may have moved before the cursor: counts start again from the head.
    #[inline]
    fn moved(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        self.cursor = Cursor::Head;
        self.ahead = None;
    }

    /// The item pushed before where the last count stopped since (if any): the next count
    /// from there must count it first, or start again from the head. Forgotten here.
    pub(crate) fn take_ahead(&mut self) -> Option<&T> {
        let key = self.ahead.take()?;
        let Order::Sorted { map, .. } = &self.order else {
            unreachable!("pushed into a sorted queue's map")
        };
        map.get(&key)
    }

    /// Changes whenever items may have moved before where the last count stopped (see
    /// [`count`](Self::count)).
    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether it is ordered by priority (a job it takes may go ahead of queued ones).
    #[inline]
    pub(crate) fn is_sorted(&self) -> bool {
        self.order.is_sorted()
    }

    /// Every queued item, parked ones too.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.order.len() + self.parked_len
    }

    /// The first item in queue order, parked ones too.
    pub(crate) fn first(&self) -> Option<&T> {
        let head = self.order.first();
        let Some(parked) = &self.parked else {
            return head.map(|(item, _)| item);
        };
        if let Some((item, true)) = head {
            return Some(item); // put back at the front: before all
        }
        let parked = parked
            .heads
            .first_key_value()
            .and_then(|(_, key)| parked.keys.get(key).and_then(|p| p.items.first_key_value()));
        match (head, parked) {
            (Some((item, _)), Some((at, p))) => Some(if place(item) < *at { item } else { p }),
            (head, parked) => head.map(|(item, _)| item).or(parked.map(|(_, p)| p)),
        }
    }

    /// The next item to start (for a pool without limits, which parks nothing), in queue
    /// order over all the items.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<T> {
        self.unpark_all();
        self.moved();
        self.order.pop()
    }

    /// The first item, in queue order over all the items, that `ok` accepts.
    pub(crate) fn pop_first(&mut self, ok: impl FnMut(&T) -> bool) -> Option<T> {
        self.unpark_all();
        self.moved();
        self.order.pop_first(ok)
    }

    /// Whether `ok` accepts any item, parked ones too.
    pub(crate) fn any(&self, mut ok: impl FnMut(&T) -> bool) -> bool {
        self.order.any(&mut ok)
            || self
                .parked
                .as_ref()
                .is_some_and(|parked| parked.keys.values().any(|p| p.items.values().any(&mut ok)))
    }

    /// Removes the item whose [`seq`](Ordered::seq) is `seq` and whose priority is
    /// `priority`, if it is queued (parked or not).
    pub(crate) fn remove_seq(&mut self, seq: u64, priority: i32) -> Option<T> {
        if let Some((item, at, front)) = self.order.remove_seq(seq, priority) {
            // From behind where the last count stopped (the usual abort of a queued task),
            // the items before the cursor are as they were; from before it, one of them
            // went, counted or passed over: counts start from the head.
            let behind = match (at, self.cursor) {
                (Stop::Ring(pos), Cursor::Ring(end)) | (Stop::Front(pos), Cursor::Front(end)) => {
                    pos >= end
                }
                (Stop::Map(key), Cursor::Map(end)) => key > end,
                (Stop::Map(_), Cursor::Front(_)) => true,
                _ => false,
            };
            if !behind {
                self.moved();
            }
            self.left_order(&item, front);
            return Some(item);
        }
        // A parked job (or none): the order, all counts see, is as it was.
        let parked = self.parked.as_deref_mut()?;
        let at = (Reverse(priority), seq);
        let (key, item) = parked
            .keys
            .iter_mut()
            .find_map(|(key, p)| p.items.remove(&at).map(|item| (key.clone(), item)))?;
        self.parked_len -= 1;
        let p = &parked.keys[&key];
        if parked.heads.get(&at).is_some_and(|k| *k == key) {
            // It was its key's first parked item.
            parked.heads.remove(&at);
            if let Some((&head, _)) = p.items.first_key_value() {
                parked.heads.insert(head, key.clone());
            }
        }
        if p.items.is_empty() {
            parked.keys.remove(&key);
        }
        Some(item)
    }

    /// How many of the first unparked items `ok` accepts, counting no further than `most`
    /// (see [`Order::count`]). Parked items are not visited: for a look at the queued jobs
    /// that may start (those a claimer is scheduled for), which are never parked.
    pub(crate) fn count_unparked(&self, most: usize, ok: impl FnMut(&T) -> bool) -> usize {
        self.order.count(most, ok)
    }

    /// Removes the items for which `take` returns `true`, in queue order over all.
    pub(crate) fn extract_if(&mut self, take: impl FnMut(&mut T) -> bool) -> Vec<T> {
        self.unpark_all();
        self.moved();
        self.order.extract_if(take)
    }

    /// Visits every item, parked ones too (those last: for what needs no order).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&T)) {
        self.order.for_each(&mut f);
        for p in self.parked.iter().flat_map(|parked| parked.keys.values()) {
            p.items.values().for_each(&mut f);
        }
    }

    /// Visits every item mutably, parked ones too (those last: for what needs no order).
    pub(crate) fn for_each_mut(&mut self, mut f: impl FnMut(&mut T)) {
        self.moved();
        self.order.for_each_mut(&mut f);
        for p in self
            .parked
            .iter_mut()
            .flat_map(|parked| parked.keys.values_mut())
        {
            p.items.values_mut().for_each(&mut f);
        }
    }

    /// Visits every item mutably, in queue order.
    pub(crate) fn for_each_mut_in_order(&mut self, f: impl FnMut(&mut T)) {
        self.unpark_all();
        self.moved();
        self.order.for_each_mut(f);
    }

    // ----- flow control's scans ---------------------------------------------------------
    //
    // `room` says how many more jobs of a key may run now (`None` for a pool without
    // `max_per_key`, whose jobs are never parked); `ok` is flow control's picker or
    // counter, which passes over a job (`Look::Pass`) only for its key: when the key has
    // room for no more than the jobs of that key before it (the picker: none; the counter:
    // those it counted), whatever else it looks at, and with no side effect. Such a job
    // comes after at least as many unparked jobs of its key as the key has room for, so
    // parking it changes no answer of a later scan.

    /// How many items `ok` takes, visited in queue order, counting no further than `most`
    /// (as [`Order::count`]); the items it passes over for their key are parked. (Flow
    /// control counts with [`count`](Self::count), to go on from the last count.)
    #[cfg(test)]
    pub(crate) fn count_startable<R: KeyRooms>(
        &mut self,
        most: usize,
        room: Option<R>,
        ok: impl FnMut(&T) -> Look,
    ) -> usize {
        if most == 0 {
            return 0;
        }
        self.unpark(room.as_ref());
        self.count(false, most, room.as_ref(), ok).took
    }

    /// How many items `ok` takes, visited in queue order, counting no further than `most`
    /// (the items it passes over for their key are parked), without unparking (the
    /// caller's, first): from the head, or (`go_on`) from where the last count stopped: then `ok`
    /// must be in the state that count left it in, and the queue's [`epoch`](Self::epoch)
    /// unchanged since. The next count may go on from where this one stops.
    pub(crate) fn count(
        &mut self,
        go_on: bool,
        most: usize,
        room: Option<&impl KeyRooms>,
        ok: impl FnMut(&T) -> Look,
    ) -> Count {
        let from = if go_on { self.cursor } else { Cursor::Head };
        let scanned = self.scan(room, ok, most, from);
        match scanned.end {
            Some(end) => self.cursor = end,
            None => self.moved(),
        }
        Count {
            took: scanned.took,
            passed: scanned.passed_any,
        }
    }

    /// How many unparked items `ok` takes, in queue order, counting no further than `most`
    /// and stopping at a `Done`, as a count from the head does, parking nothing: to check a
    /// count that went on from where the last one stopped.
    #[cfg(any(test, debug_assertions))]
    pub(crate) fn count_afresh(&self, most: usize, mut ok: impl FnMut(&T) -> Look) -> usize {
        let items: Box<dyn Iterator<Item = &T>> = match &self.order {
            Order::Fifo(ring, _) => Box::new(ring.iter()),
            Order::Sorted { map, front, .. } => Box::new(front.iter().chain(map.values())),
        };
        let mut took = 0;
        for item in items.take_while(|_| most > 0) {
            match ok(item) {
                Look::Take => took += 1,
                Look::Pass => {}
                Look::Done => break,
            }
            if took >= most {
                break;
            }
        }
        took
    }

    /// The first item, in queue order, that `ok` takes, removed; the items it passes over
    /// for their key are parked.
    pub(crate) fn pop_startable<R: KeyRooms>(
        &mut self,
        room: Option<R>,
        ok: impl FnMut(&T) -> Look,
    ) -> Option<T> {
        self.unpark(room.as_ref());
        let scanned = self.scan(room.as_ref(), ok, 1, Cursor::Head);
        if scanned.end.is_none() {
            self.moved();
        }
        let stop = scanned.stop?;
        // Taken from before where the last count stopped, the cursor stays on the same
        // item; from after it, the last count did not count it.
        let counted = self.ahead.is_none()
            && match (stop, self.cursor) {
                (Stop::Ring(pos), Cursor::Ring(at)) => pos < at,
                (Stop::Front(pos), Cursor::Front(at)) => pos < at,
                (Stop::Front(_), Cursor::Map(_)) => true,
                (Stop::Map(key), Cursor::Map(at)) => key <= at,
                _ => false,
            };
        if !counted {
            self.moved();
        }
        let (item, front) = match stop {
            Stop::Ring(pos) => {
                let Order::Fifo(ring, first) = &mut self.order else {
                    unreachable!("a ring's place")
                };
                let front = pos < *first;
                *first -= usize::from(front);
                (ring.remove(pos)?, front)
            }
            Stop::Front(pos) => {
                let Order::Sorted { front, .. } = &mut self.order else {
                    unreachable!("a sorted queue's place")
                };
                (front.remove(pos)?, true)
            }
            Stop::Map(key) => {
                let Order::Sorted { map, .. } = &mut self.order else {
                    unreachable!("a sorted queue's place")
                };
                (map.remove(&key)?, false)
            }
        };
        match (stop, &mut self.cursor) {
            (Stop::Ring(_), Cursor::Ring(at)) | (Stop::Front(_), Cursor::Front(at)) => *at -= 1,
            _ => {}
        }
        self.left_order(&item, front);
        Some(item)
    }

    /// The item [`pop_startable`](Self::pop_startable) would take, left in place.
    pub(crate) fn first_startable<R: KeyRooms>(
        &mut self,
        room: Option<R>,
        ok: impl FnMut(&T) -> Look,
    ) -> Option<&T> {
        self.unpark(room.as_ref());
        let scanned = self.scan(room.as_ref(), ok, 1, Cursor::Head);
        if scanned.end.is_none() {
            self.moved();
        }
        let stop = scanned.stop?;
        match (&self.order, stop) {
            (Order::Fifo(ring, _), Stop::Ring(pos)) => ring.get(pos),
            (Order::Sorted { front, .. }, Stop::Front(pos)) => front.get(pos),
            (Order::Sorted { map, .. }, Stop::Map(key)) => map.get(&key),
            _ => unreachable!("a place of this queue"),
        }
    }

    /// Shows the unparked items to `ok` in queue order, from `from` (the queue's head, or
    /// where the last count stopped), until it has taken `most` or says `Done`; returns
    /// how many it took, where it stopped and, for a scan for one (`most == 1`), where its
    /// take is (after the parking below). A scan that visits more than [`PARK_AFTER`] items
    /// (walking past refused ones) parks the items `ok` passed over for their key, but
    /// those put back at the front (which go before all): each comes after at least as
    /// many unparked items of its key as the key has room for (see above), its `lead`.
    fn scan(
        &mut self,
        room: Option<&impl KeyRooms>,
        mut ok: impl FnMut(&T) -> Look,
        most: usize,
        from: Cursor,
    ) -> Scanned {
        let Queue {
            order,
            parked,
            parked_len,
            ..
        } = self;
        let mut took = 0;
        let mut passed_any = false;
        let parks = room.is_some();
        // A key's room: the unparked items of it before one passed over for it.
        let lead = |key: &TaskKey| room.map_or(0, |room| room.room(key));
        match order {
            Order::Fifo(ring, first) => {
                let start = match from {
                    Cursor::Ring(pos) => {
                        debug_assert!(pos <= ring.len(), "a cursor past the ring's end");
                        pos.min(ring.len())
                    }
                    _ => 0,
                };
                let mut passed = Vec::new();
                // Where it stopped: the end of the ring, past the take that made `most`, or
                // at the item that said `Done` (looked at again by the next count).
                let mut end = ring.len();
                // A counter, not `enumerate`: measured, `enumerate` cost about 4 more
                // instructions per item visited here (1,900 a task for a pool whose limits
                // never bind, where a start counts the 500 jobs it reserved).
                let mut pos = start;
                #[allow(clippy::explicit_counter_loop)]
                for item in ring.range(start..) {
                    let look = ok(item);
                    if look == Look::Take {
                        took += 1;
                        if took >= most {
                            end = pos + 1;
                            break;
                        }
                    } else if look == Look::Done {
                        end = pos;
                        break;
                    } else {
                        passed_any = true;
                        if parks && pos >= *first && item.key().is_some() {
                            passed.push(pos);
                        }
                    }
                    pos += 1;
                }
                // The one take of a scan for one is where it stopped.
                let at = (most == 1 && took == 1).then(|| end - 1);
                let visited = (pos + 1).min(ring.len()) - start;
                if visited <= PARK_AFTER || passed.is_empty() {
                    return Scanned {
                        stop: at.map(Stop::Ring),
                        took,
                        passed_any,
                        end: Some(Cursor::Ring(end)),
                    };
                }
                let parked = parked.get_or_insert_with(Box::default);
                // The take moves forward by the items parked before it; the items up to
                // the last one parked are taken out and those kept put back (a pass over
                // what the scan visited).
                let at = at.map(|at| at - passed.iter().filter(|&&p| p < at).count());
                let last = *passed.last().expect("some passed over");
                let mut passed = passed.into_iter().peekable();
                let visited: Vec<T> = ring.drain(..=last).collect();
                let mut kept = Vec::with_capacity(visited.len());
                for (pos, item) in visited.into_iter().enumerate() {
                    if passed.next_if_eq(&pos).is_some() {
                        let key = item.key().expect("passed over for its key").clone();
                        let lead = lead(&key);
                        parked.park(key, item, lead);
                        *parked_len += 1;
                    } else {
                        kept.push(item);
                    }
                }
                for item in kept.into_iter().rev() {
                    ring.push_front(item);
                }
                Scanned {
                    stop: at.map(Stop::Ring),
                    took,
                    passed_any,
                    end: None,
                }
            }
            Order::Sorted { map, front, .. } => {
                let mut at = None;
                let mut visited = 0;
                let mut done = false;
                let (skip, after) = match from {
                    Cursor::Front(pos) => (pos, None),
                    Cursor::Map(key) => (front.len(), Some(key)),
                    _ => (0, None),
                };
                // Past the front (a take in the map moves it on), unless it stops in it.
                let mut end = after.map_or(Cursor::Front(front.len()), Cursor::Map);
                for (pos, item) in front.iter().enumerate().skip(skip) {
                    visited += 1;
                    match ok(item) {
                        Look::Take => {
                            took += 1;
                            at = Some(Stop::Front(pos));
                            done = took >= most;
                            end = Cursor::Front(pos + 1);
                        }
                        Look::Pass => passed_any = true,
                        Look::Done => {
                            done = true;
                            end = Cursor::Front(pos);
                        }
                    }
                    if done {
                        break;
                    }
                }
                let mut passed = Vec::new();
                if !done {
                    let rest = match after {
                        Some(key) => map.range((Excluded(key), Unbounded)),
                        None => map.range(..),
                    };
                    for (k, item) in rest {
                        visited += 1;
                        match ok(item) {
                            Look::Take => {
                                took += 1;
                                at = Some(Stop::Map(*k));
                                end = Cursor::Map(*k);
                                if took >= most {
                                    break;
                                }
                            }
                            Look::Pass => {
                                passed_any = true;
                                end = Cursor::Map(*k);
                                if parks && item.key().is_some() {
                                    passed.push(*k);
                                }
                            }
                            Look::Done => break,
                        }
                    }
                }
                let mut scanned = Scanned {
                    stop: at,
                    took,
                    passed_any,
                    end: Some(end),
                };
                if visited > PARK_AFTER && !passed.is_empty() {
                    let parked = parked.get_or_insert_with(Box::default);
                    for k in passed {
                        let item = map.remove(&k).expect("a key just seen");
                        let key = item.key().expect("passed over for its key").clone();
                        let lead = lead(&key);
                        parked.park(key, item, lead);
                        *parked_len += 1;
                    }
                    scanned.end = None;
                }
                scanned
            }
        }
    }

    /// Before a scan: gives every key with room beyond its `lead` (see [`ParkedKey`])
    /// that many of its first parked items back, at their places. Then each parked item
    /// of a key comes after as many unparked ones of it as it has room for. Only the keys
    /// that may have gained room are looked at: those `room` says were freed, and those
    /// whose `lead` was lowered; every other parked key had no room beyond its `lead`
    /// after the last call (a key parked since had none: its `lead` is its room then).
    pub(crate) fn unpark(&mut self, room: Option<&impl KeyRooms>) {
        let Some(room) = room else {
            return;
        };
        let (order, parked_len) = (&mut self.order, &mut self.parked_len);
        let before = *parked_len;
        let Some(parked) = self.parked.as_deref_mut() else {
            // Forgotten also with nothing parked: a key parked later starts from its room
            // then.
            room.freed(&mut |_| {});
            return;
        };
        let Parked {
            keys,
            heads,
            dirty,
            dirty_all,
        } = parked;
        let mut one = |key: &TaskKey| {
            if let Some(p) = keys.get_mut(key) {
                *parked_len -= Parked::give_back(heads, order, key, p, room.room(key));
                if p.items.is_empty() {
                    keys.remove(key);
                }
            }
        };
        let listed = room.freed(&mut one);
        if listed && !*dirty_all {
            dirty.iter().for_each(&mut one);
        } else {
            keys.retain(|key, p| {
                *parked_len -= Parked::give_back(heads, order, key, p, room.room(key));
                !p.items.is_empty()
            });
        }
        dirty.clear();
        *dirty_all = false;
        if keys.is_empty() {
            self.parked = None;
        }
        if self.parked_len != before {
            self.moved();
        }
    }

    /// Puts every parked item back, at its place.
    #[inline]
    fn unpark_all(&mut self) {
        if let Some(parked) = self.parked.take() {
            self.parked_len = 0;
            self.moved();
            self.put_back_all(*parked);
        }
    }

    #[cold]
    #[inline(never)]
    fn put_back_all(&mut self, parked: Parked<T>) {
        for (_, p) in parked.keys {
            for (_, item) in p.items {
                self.order.put_back(item);
            }
        }
    }

    /// An unparked item left the queue (`front`: one put back at the front): if it came
    /// before its key's first parked item, the key's `lead` lost one.
    fn left_order(&mut self, item: &T, front: bool) {
        let Some(parked) = (self.parked.as_deref_mut())
            .zip(item.key())
            .and_then(|(parked, key)| parked.keys.get_mut(key))
        else {
            return;
        };
        let before = parked
            .items
            .first_key_value()
            .is_some_and(|(first, _)| place(item) < *first);
        if (front || before) && parked.lead > 0 {
            parked.lead -= 1;
            // Its room beyond its lead grew: the next unpark looks at it.
            let all = self.parked.as_deref_mut().expect("found above");
            if all.dirty.len() < all.keys.len() {
                all.dirty
                    .push(item.key().expect("found by its key").clone());
            } else {
                all.dirty_all = true;
            }
        }
    }
}

impl<T> Default for Parked<T> {
    fn default() -> Self {
        Parked {
            keys: KeyMap::default(),
            heads: BTreeMap::new(),
            dirty: Vec::new(),
            dirty_all: false,
        }
    }
}

/// For the model tests here and in `limits`: a xorshift generator from `seed` (not 0),
/// giving a number below `n` at each call.
#[cfg(test)]
pub(super) fn random_below(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::HashMap;

    use super::*;

    #[derive(Debug, PartialEq)]
    struct Item(i32, u64);

    impl Ordered for Item {
        fn priority(&self) -> i32 {
            self.0
        }
        fn seq(&self) -> u64 {
            self.1
        }
        fn key(&self) -> Option<&TaskKey> {
            None
        }
    }

    fn drain(q: &mut Queue<Item>) -> Vec<u64> {
        std::iter::from_fn(|| q.pop()).map(|i| i.1).collect()
    }

    #[test]
    fn fifo_until_a_priority_arrives_then_priority_then_fifo() {
        let mut q = Queue::default();
        q.push(Item(0, 0));
        q.push(Item(0, 1));
        assert!(matches!(q.order, Order::Fifo(..)));
        q.push(Item(5, 2));
        q.push(Item(-1, 3));
        q.push(Item(5, 4));
        q.push(Item(0, 5));
        q.push_front(Item(-9, 6)); // an interrupted run goes first, whatever its priority
        assert_eq!(drain(&mut q), [6, 2, 4, 0, 1, 5, 3]);
    }

    /// `put_back` puts items back at their place by seq, in a ring and in a sorted queue.
    #[test]
    fn put_back_keeps_the_seq_order_of_items_put_back() {
        for sorted in [false, true] {
            let mut q = Queue::default();
            for seq in [5, 6] {
                q.push(Item(0, seq));
            }
            if sorted {
                q.push(Item(1, 7));
            }
            // Taken in order and put back in the same order: they keep it.
            for seq in [2, 3, 4] {
                q.put_back(Item(0, seq));
            }
            let want: Vec<u64> = if sorted {
                vec![7, 2, 3, 4, 5, 6]
            } else {
                vec![2, 3, 4, 5, 6]
            };
            assert_eq!(drain(&mut q), want, "sorted {sorted}");
        }
    }

    /// `remove_seq` takes exactly the item named, from a ring out of seq order (items put
    /// back at the front), from a sorted queue, and from its front; nothing for an item
    /// that is not there.
    #[test]
    fn remove_seq_takes_the_item_named_and_nothing_else() {
        let mut q = Queue::default();
        for s in 10..20 {
            q.push(Item(0, s));
        }
        assert_eq!(q.remove_seq(19, 0), Some(Item(0, 19)));
        assert_eq!(q.remove_seq(10, 0), Some(Item(0, 10)));
        assert_eq!(q.remove_seq(99, 0), None);
        let mut q = Queue::default();
        for s in 0..6 {
            q.push(Item(0, s));
        }
        q.push_front(Item(0, 40));
        q.push_front(Item(0, 30)); // ring: 30, 40, 0, 1, ..., 5
        assert_eq!(q.remove_seq(40, 0), Some(Item(0, 40)));
        assert_eq!(q.remove_seq(3, 0), Some(Item(0, 3)));
        assert_eq!(drain(&mut q), [30, 0, 1, 2, 4, 5]);

        let mut q = Queue::default();
        for (p, s) in [(0, 0), (5, 1), (5, 2), (-1, 3)] {
            q.push(Item(p, s));
        }
        q.push_front(Item(9, 7));
        assert_eq!(q.remove_seq(2, 0), None, "the priority is part of the key");
        assert_eq!(q.remove_seq(2, 5), Some(Item(5, 2)));
        assert_eq!(q.remove_seq(7, 9), Some(Item(9, 7)));
        assert_eq!(q.remove_seq(3, -1), Some(Item(-1, 3)));
        assert_eq!(drain(&mut q), [1, 0]);
    }

    /// An item put back at its place goes after the items pushed to the front (interrupted
    /// runs), in a ring as in a sorted queue; a ring that becomes sorted keeps those first.
    #[test]
    fn put_back_goes_after_the_items_pushed_to_the_front() {
        let mut q = Queue::default();
        q.push(Item(0, 3));
        q.push_front(Item(0, 2)); // an interrupted run
        q.put_back(Item(0, 1)); // taken and never started
        assert_eq!(drain(&mut q), [2, 1, 3]);
        let mut q = Queue::default();
        q.push(Item(0, 3));
        q.push_front(Item(0, 2));
        q.push(Item(5, 4)); // sorted now: the interrupted run stays first
        q.put_back(Item(0, 1));
        assert_eq!(drain(&mut q), [2, 4, 1, 3]);
        // The count of items at the front follows what leaves them.
        let mut q = Queue::default();
        for s in 10..13 {
            q.push(Item(0, s));
        }
        q.push_front(Item(0, 21));
        q.push_front(Item(0, 20));
        assert_eq!(q.pop(), Some(Item(0, 20)));
        assert_eq!(q.extract_if(|i| i.1 == 21).len(), 1);
        q.put_back(Item(0, 5)); // no interrupted run left: back to the head
        assert_eq!(drain(&mut q), [5, 10, 11, 12]);
        let mut q = Queue::default();
        q.push(Item(0, 10));
        q.push_front(Item(0, 21));
        assert_eq!(q.remove_seq(21, 0), Some(Item(0, 21)));
        q.put_back(Item(0, 5));
        assert_eq!(drain(&mut q), [5, 10]);
    }

    #[test]
    fn pop_first_skips_refused_items_and_keeps_them() {
        let mut q = Queue::default();
        for (p, s) in [(0, 0), (0, 1), (0, 2)] {
            q.push(Item(p, s));
        }
        assert_eq!(q.pop_first(|i| i.1 == 1), Some(Item(0, 1)));
        assert_eq!(q.count_unparked(10, |_| true), 2);
        q.push(Item(3, 3));
        assert_eq!(q.pop_first(|i| i.1 != 3), Some(Item(0, 0)));
        assert_eq!(drain(&mut q), [3, 2]);
    }

    /// `count` yields exactly the order of `pop`, over many items with repeated priorities,
    /// after pops and pushes, with an item put back at the front.
    #[test]
    fn count_visits_a_large_queue_in_pop_order() {
        let mut q = Queue::default();
        let mut seq = 0;
        let mut push = |q: &mut Queue<Item>, n: u64| {
            for _ in 0..n {
                let p = ((seq * 7919) % 13) as i32 - 6;
                q.push(Item(p, seq));
                seq += 1;
            }
        };
        push(&mut q, 300);
        for _ in 0..40 {
            q.pop();
        }
        push(&mut q, 100);
        q.push_front(Item(-100, 10_000));
        let mut seen = Vec::new();
        let n = q.count_unparked(usize::MAX, |i| {
            seen.push(i.1);
            i.0 >= 0 || i.1 == 10_000
        });
        let taken = q.extract_if(|i| i.1 % 5 == 0);
        assert!(taken.iter().all(|i| i.1 % 5 == 0) && !taken.is_empty());
        let rest = drain(&mut q);
        seen.retain(|s| s % 5 != 0);
        assert_eq!(seen, rest, "count's order is the queue's");
        assert!(n > 0 && n < 360);
    }

    /// `count` visits a prioritised queue in the order `pop_first` takes from it (finding
    /// 11: a heap's storage order was not it): a picker that stops at the first refusal
    /// (weights) counts what `pop_first` finds.
    #[test]
    fn count_visits_a_prioritised_queue_in_queue_order() {
        let mut q = Queue::default();
        for (p, s) in [(10, 0), (1, 1), (5, 2), (7, 3), (0, 4)] {
            q.push(Item(p, s));
        }
        q.push_front(Item(-9, 5)); // an interrupted run: first
        let mut seen = Vec::new();
        q.count_unparked(usize::MAX, |i| {
            seen.push(i.1);
            true
        });
        assert_eq!(seen, [5, 0, 3, 2, 1, 4]);
        // Counting no further than `most` visits no further either.
        let mut seen = Vec::new();
        let n = q.count_unparked(3, |i| {
            seen.push(i.1);
            i.1 != 0
        });
        assert_eq!((n, seen), (3, vec![5, 0, 3, 2]));
        assert_eq!(drain(&mut q), [5, 0, 3, 2, 1, 4], "counting took nothing");
        for (p, s) in [(10, 0), (1, 1), (5, 2), (7, 3), (0, 4)] {
            q.push(Item(p, s));
        }
        // Stops accepting at seq 1 (priority 1): the jobs before it in queue order count.
        let mut blocked = false;
        let n = q.count_unparked(usize::MAX, |i| {
            blocked |= i.1 == 1;
            !blocked
        });
        assert_eq!(n, 3);
    }

    // ----- parking ------------------------------------------------------------------

    #[derive(Debug, Clone, PartialEq)]
    struct Job {
        p: i32,
        seq: u64,
        key: Option<TaskKey>,
        w: u64,
    }

    impl Ordered for Job {
        fn priority(&self) -> i32 {
            self.p
        }
        fn seq(&self) -> u64 {
            self.seq
        }
        fn key(&self) -> Option<&TaskKey> {
            self.key.as_ref()
        }
    }

    /// Flow control as `Limits` does it: `max` per key, a weight capacity.
    struct Model {
        max: usize,
        cap: u64,
        running: HashMap<TaskKey, usize>,
        weight: u64,
        /// The keys whose jobs ended since the scans last asked (as `Limits::freed`).
        freed: std::cell::RefCell<Vec<TaskKey>>,
        /// Whether the scans are told which keys were freed (as `Limits::key_rooms`), or
        /// look at every parked key (a plain function).
        listed: bool,
    }

    /// The model's rooms, as the scans are given them.
    struct ModelRooms<'a>(&'a Model);

    impl KeyRooms for ModelRooms<'_> {
        fn room(&self, key: &TaskKey) -> usize {
            self.0.room(key)
        }
        fn freed(&self, each: &mut dyn FnMut(&TaskKey)) -> bool {
            let keys: Vec<TaskKey> = self.0.freed.borrow_mut().drain(..).collect();
            if !self.0.listed {
                return false;
            }
            keys.iter().for_each(each);
            true
        }
    }

    impl Model {
        fn rooms(&self) -> Option<ModelRooms<'_>> {
            Some(ModelRooms(self))
        }
        fn room(&self, key: &TaskKey) -> usize {
            self.max - self.running.get(key).copied().unwrap_or(0)
        }
        /// As `Limits::picker`.
        fn picker(&self) -> impl FnMut(&Job) -> Look + '_ {
            move |j| {
                if j.key.as_ref().is_some_and(|k| self.room(k) == 0) {
                    Look::Pass
                } else if self.weight + j.w > self.cap {
                    Look::Done
                } else {
                    Look::Take
                }
            }
        }
        /// As `Limits::counter`.
        fn counter(&self) -> impl FnMut(&Job) -> Look + '_ {
            let mut weight = self.weight;
            let mut counted: HashMap<TaskKey, usize> = HashMap::new();
            move |j| {
                if let Some(k) = &j.key {
                    if counted.get(k).copied().unwrap_or(0) >= self.room(k) {
                        return Look::Pass;
                    }
                }
                if weight + j.w > self.cap {
                    return Look::Done;
                }
                weight += j.w;
                if let Some(k) = &j.key {
                    *counted.entry(k.clone()).or_insert(0) += 1;
                }
                Look::Take
            }
        }
    }

    /// A picker or counter as the model's queue scans it, whole: refusing everything after
    /// `Done` (what a scan that ends there means).
    fn whole(mut look: impl FnMut(&Job) -> Look) -> impl FnMut(&Job) -> bool {
        let mut done = false;
        move |j| {
            if done {
                return false;
            }
            match look(j) {
                Look::Take => true,
                Look::Pass => false,
                Look::Done => {
                    done = true;
                    false
                }
            }
        }
    }

    fn order_seqs(q: &Order<Job>) -> Vec<u64> {
        let mut seqs = Vec::new();
        q.for_each(|j| seqs.push(j.seq));
        seqs
    }

    /// A queue that parks the jobs of keys at their limit answers every scan, and every
    /// other operation, as the same queue without parking does (the model: an `Order`,
    /// scanned whole), over random runs of pushes (priorities or none, items put back at
    /// the front and at their place), starts, ends, counts, aborts and drains.
    #[test]
    fn parking_changes_no_answer() {
        let keys: Vec<TaskKey> = ["a", "b", "c"].iter().map(|&k| TaskKey::from(k)).collect();
        let runs = if cfg!(miri) { 3 } else { 400 };
        for run in 0..runs {
            let mut next = random_below(0x9E37_79B9_7F4A_7C15u64 ^ (run * 0x1234_5677 + 1));
            let sorted = run % 2 == 1;
            let mut model = Model {
                max: 1 + next(3) as usize,
                cap: if run % 3 == 0 { u64::MAX } else { 4 + next(6) },
                running: HashMap::new(),
                weight: 0,
                freed: Default::default(),
                listed: run % 4 < 2,
            };
            let mut q: Queue<Job> = Queue::default();
            let mut r: Order<Job> = Order::default();
            let mut started: Vec<Job> = Vec::new();
            let mut seq = 0;
            let steps = if cfg!(miri) { 60 } else { 300 };
            for step in 0..steps {
                let what = format!("run {run}, step {step}");
                match next(20) {
                    0..=5 => {
                        seq += 1;
                        let job = Job {
                            p: if sorted && next(3) == 0 {
                                next(5) as i32 - 2
                            } else {
                                0
                            },
                            seq,
                            key: (next(5) != 0).then(|| keys[next(3) as usize].clone()),
                            w: 1 + next(3),
                        };
                        match next(12) {
                            0 => {
                                q.push_front(job.clone());
                                r.push_front(job);
                            }
                            _ => {
                                q.push(job.clone());
                                r.push(job);
                            }
                        }
                    }
                    6..=8 => {
                        let got = q.pop_startable(model.rooms(), model.picker());
                        let want = r.pop_first(whole(model.picker()));
                        assert_eq!(got, want, "{what}: pop_startable");
                        if let Some(job) = got {
                            if next(8) == 0 {
                                // Taken and not started: back at its place.
                                q.put_back(job.clone());
                                r.put_back(job);
                            } else {
                                if let Some(k) = &job.key {
                                    *model.running.entry(k.clone()).or_insert(0) += 1;
                                }
                                model.weight += job.w;
                                started.push(job);
                            }
                        }
                    }
                    9..=11 if !started.is_empty() => {
                        let job = started.swap_remove(next(started.len() as u64) as usize);
                        if let Some(k) = &job.key {
                            *model.running.get_mut(k).unwrap() -= 1;
                            model.freed.borrow_mut().push(k.clone());
                        }
                        model.weight -= job.w;
                    }
                    12..=13 => {
                        let most = next(6) as usize;
                        let got = q.count_startable(most, model.rooms(), model.counter());
                        let want = r.count(most, whole(model.counter()));
                        assert_eq!(got, want, "{what}: count_startable({most})");
                    }
                    14 => {
                        let got = q
                            .first_startable(model.rooms(), model.picker())
                            .map(|j| j.seq);
                        let mut pick = whole(model.picker());
                        let mut want = None;
                        r.for_each(|j| {
                            if want.is_none() && pick(j) {
                                want = Some(j.seq);
                            }
                        });
                        assert_eq!(got, want, "{what}: first_startable");
                    }
                    15 if seq > 0 => {
                        let s = 1 + next(seq);
                        let p = order_seqs(&r);
                        let mut prio = 0;
                        r.for_each(|j| {
                            if j.seq == s {
                                prio = j.p;
                            }
                        });
                        let got = q.remove_seq(s, prio);
                        let want = r.remove_seq(s, prio).map(|(j, ..)| j);
                        assert_eq!(got, want, "{what}: remove_seq({s}) of {p:?}");
                        assert!(!q.any(|j| j.seq == s), "{what}: removed");
                    }
                    16 => {
                        assert_eq!(
                            q.first().map(|j| j.seq),
                            r.first().map(|(j, _)| j.seq),
                            "{what}: first"
                        );
                    }
                    17 if next(10) == 0 => {
                        let m = next(4);
                        let got = q.extract_if(|j| j.seq % 4 == m);
                        let want = r.extract_if(|j| j.seq % 4 == m);
                        assert_eq!(got, want, "{what}: extract_if");
                    }
                    18 if next(5) == 0 => {
                        let mut got = Vec::new();
                        q.for_each_mut_in_order(|j| got.push(j.seq));
                        assert_eq!(got, order_seqs(&r), "{what}: the order");
                    }
                    19 if next(20) == 0 => {
                        let got: Vec<u64> = std::iter::from_fn(|| q.pop()).map(|j| j.seq).collect();
                        let want: Vec<u64> =
                            std::iter::from_fn(|| r.pop()).map(|j| j.seq).collect();
                        assert_eq!(got, want, "{what}: pop, drained");
                    }
                    _ => {}
                }
                assert_eq!(q.len(), r.len(), "{what}: len");
                let mut all = 0;
                q.for_each(|_| all += 1);
                assert_eq!(all, r.len(), "{what}: for_each visits all");
            }
        }
    }

    fn parked(q: &Queue<Job>) -> usize {
        q.parked_len
    }

    /// Behind a key with many queued jobs and no room, a scan visits only the jobs not
    /// parked: the first scan that visits more than [`PARK_AFTER`] parks them, the next
    /// ones walk past none of them; and a key that gets room back gets back as many jobs as it has
    /// room for, not all.
    #[test]
    fn a_key_without_room_is_walked_past_once() {
        let hot = TaskKey::from("hot");
        let mut q: Queue<Job> = Queue::default();
        for seq in 0..1010 {
            let key = (seq < 1000).then(|| hot.clone());
            q.push(Job {
                p: 0,
                seq,
                key,
                w: 1,
            });
        }
        let visited = Cell::new(0);
        // As the picker does: a job of a key without room is refused.
        let pick = |j: &Job| {
            visited.set(visited.get() + 1);
            if j.key.is_none() {
                Look::Take
            } else {
                Look::Pass
            }
        };
        let no_room = Some(|_: &TaskKey| 0);
        assert_eq!(q.pop_startable(no_room, pick).map(|j| j.seq), Some(1000));
        assert_eq!((visited.take(), q.len(), parked(&q)), (1001, 1009, 1000));
        assert_eq!(q.pop_startable(no_room, pick).map(|j| j.seq), Some(1001));
        assert_eq!(visited.take(), 1, "the parked jobs are not visited again");
        // Room for 3: three come back, at their places.
        let mut seen = Vec::new();
        let n = q.count_startable(usize::MAX, Some(|_: &TaskKey| 3), |j| {
            seen.push(j.seq);
            Look::Take
        });
        assert_eq!((n, parked(&q)), (3 + 8, 997), "back: the key's room");
        assert_eq!(seen[..3], [0, 1, 2], "in queue order, first");
    }

    /// A key with room for one: a scan passes its first job and parks the others, which no
    /// later scan visits until the key has room for more.
    #[test]
    fn a_key_with_room_for_one_is_walked_past_once() {
        let hot = TaskKey::from("hot");
        let mut q: Queue<Job> = Queue::default();
        for seq in 0..1000 {
            q.push(Job {
                p: 0,
                seq,
                key: Some(hot.clone()),
                w: 1,
            });
        }
        let visited = &Cell::new(0);
        // As the counter does: a key's jobs beyond its room are refused.
        let count = || {
            let mut counted = 0;
            move |_: &Job| {
                visited.set(visited.get() + 1);
                counted += 1;
                if counted <= 1 {
                    Look::Take
                } else {
                    Look::Pass
                }
            }
        };
        let room = |n: usize| Some(move |_: &TaskKey| n);
        let n = q.count_startable(usize::MAX, room(1), count());
        assert_eq!((n, visited.take(), parked(&q)), (1, 1000, 999));
        let n = q.count_startable(usize::MAX, room(1), count());
        assert_eq!(
            (n, visited.take()),
            (1, 1),
            "the parked jobs are not visited again"
        );
        assert_eq!(
            q.pop_startable(room(1), |_| Look::Take).map(|j| j.seq),
            Some(0)
        );
        // Its job started: the key has no room until it ends; then one more comes back.
        assert_eq!(
            q.pop_startable(room(0), |_| Look::Pass).map(|j| j.seq),
            None
        );
        assert_eq!(
            q.pop_startable(room(1), |_| Look::Take).map(|j| j.seq),
            Some(1)
        );
        assert_eq!(q.len(), 998);
    }

    /// A job whose weight does not fit ends the scan (nothing behind it may start: weights
    /// keep FIFO order), so a start looks at one job, not at the whole queue behind it.
    #[test]
    fn a_job_whose_weight_does_not_fit_ends_the_scan() {
        let mut q: Queue<Job> = Queue::default();
        for seq in 0..1000 {
            q.push(Job {
                p: 0,
                seq,
                key: None,
                w: 5,
            });
        }
        let model = Model {
            max: 1,
            cap: 4,
            running: HashMap::new(),
            weight: 0,
            freed: Default::default(),
            listed: false,
        };
        let visited = Cell::new(0);
        let mut pick = model.picker();
        let looked = |j: &Job| {
            visited.set(visited.get() + 1);
            pick(j)
        };
        assert_eq!(q.pop_startable(None::<fn(&TaskKey) -> usize>, looked), None);
        assert_eq!(visited.take(), 1);
        let n = q.count_startable(9, None::<fn(&TaskKey) -> usize>, |j| {
            visited.set(visited.get() + 1);
            model.counter()(j)
        });
        assert_eq!((n, visited.take()), (0, 1));
    }
}
