//! `map_unordered` / `map_ordered` with per-input `SubmitOptions` (`with_options`), on the
//! three pools: a key's `max_per_key` holds for the stream's jobs, and together with the
//! pool's other jobs of that key; an input's priority puts the stream's wait for room in
//! line with the other waiters; a job too heavy for the pool, or whose wait for room timed
//! out, is refused as any refused job of a stream is (the stream ends, `refused` says
//! why); `map_ordered` keeps input order; dropping the stream aborts its jobs and gives
//! their keys' counts back; options set on a stream already polled apply to the inputs
//! pulled after. Deterministic: paused time, bounded waits (`within`).

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{self, Stream, StreamExt};
use nb_aiopool::{MapOrdered, MapUnordered, SubmitErrorKind, SubmitOptions, TaskError};
use support::{flow_pools, within, FlowLimits, Gate, Gauge, Pool};
use tokio::time::{sleep, Instant};

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// A stream's mapping function, one type for every test.
type Job<T> = Arc<dyn Fn(usize) -> BoxFut<T> + Send + Sync>;
type Inputs = stream::Iter<std::vec::IntoIter<usize>>;

fn job<T, Fut>(f: impl Fn(usize) -> Fut + Send + Sync + 'static) -> Job<T>
where
    Fut: Future<Output = T> + Send + 'static,
{
    Arc::new(move |i| Box::pin(f(i)) as BoxFut<T>)
}

/// `map_ordered` or `map_unordered` given options, one type for both.
enum Mapped<T> {
    Unordered(MapUnordered<Inputs, T>),
    Ordered(MapOrdered<Inputs, T>),
}

impl<T> Mapped<T> {
    fn refused(&self) -> Option<SubmitErrorKind> {
        match self {
            Mapped::Unordered(s) => s.refused(),
            Mapped::Ordered(s) => s.refused(),
        }
    }
}

impl<T> Stream for Mapped<T> {
    type Item = Result<T, TaskError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Mapped::Unordered(s) => s.poll_next_unpin(cx),
            Mapped::Ordered(s) => s.poll_next_unpin(cx),
        }
    }
}

/// `pool.map_{un}ordered(inputs, f).with_options(|i| opts(*i))`.
fn mapped<T: Send + 'static>(
    pool: &Pool,
    ordered: bool,
    inputs: Vec<usize>,
    f: Job<T>,
    opts: impl Fn(usize) -> SubmitOptions + Send + 'static,
) -> Mapped<T> {
    let inputs = stream::iter(inputs);
    let options = move |i: &usize| opts(*i);
    if ordered {
        Mapped::Ordered(pool.ordered(inputs, move |i| f(i)).with_options(options))
    } else {
        Mapped::Unordered(pool.unordered(inputs, move |i| f(i)).with_options(options))
    }
}

/// Reads the stream to its end (bounded): the values (a job's error fails the test) and
/// why it was refused, if it was.
async fn read_all<T>(what: &str, mut s: Mapped<T>) -> (Vec<T>, Option<SubmitErrorKind>) {
    let mut out = Vec::new();
    while let Some(r) = within(what, s.next()).await {
        out.push(r.unwrap_or_else(|e| panic!("{what}: a job failed: {e}")));
    }
    (out, s.refused())
}

/// A job that counts itself in `gauge` while it runs `ms` milliseconds, then returns its
/// input.
fn gauged(gauge: &Gauge, ms: u64) -> Job<usize> {
    let gauge = gauge.clone();
    job(move |i| {
        let gauge = gauge.clone();
        async move {
            let _running = gauge.enter();
            sleep(Duration::from_millis(ms)).await;
            i
        }
    })
}

/// Pools of 4 slots and a queue of 8 (NoQueueAioPool: 12 slots, where its jobs held back
/// by their key wait) with `limits`.
fn pools(limits: FlowLimits) -> Vec<Pool> {
    flow_pools(4, 8, 12, limits)
}

// ----- keys ---------------------------------------------------------------------------------

/// Twelve inputs of one key through pools of `max_per_key(2)` and 4 slots: counted inside
/// the jobs, never more than 2 run at once, and 2 do (the stream keeps the pool busy up
/// to the key's limit); all twelve results come out, in input order for `map_ordered`.
/// Without the key (the options ignored), 4 would run at once.
#[tokio::test(start_paused = true)]
async fn a_keys_limit_holds_for_the_streams_jobs() {
    for ordered in [false, true] {
        for pool in pools(FlowLimits::keys(2)) {
            let name = pool.name();
            let gauge = Gauge::default();
            let s = mapped(
                &pool,
                ordered,
                (0..12).collect(),
                gauged(&gauge, 10),
                |_| SubmitOptions::new().key("example.com"),
            );
            let (mut out, refused) = read_all(name, s).await;
            if !ordered {
                out.sort();
            }
            assert_eq!(
                out,
                (0..12).collect::<Vec<_>>(),
                "{name}, ordered: {ordered}"
            );
            assert_eq!(refused, None, "{name}");
            assert_eq!(
                gauge.max(),
                2,
                "{name}, ordered: {ordered}: most running of one key"
            );
            pool.wait_within().await;
        }
    }
}

/// The same with inputs that wait for room (a pool of 3 places, one taken by another
/// task for 25 ms): an input pulled while the pool was full, and pushed once room came,
/// keeps its key: of key "k" (`max_per_key(1)`), never two run at once.
#[tokio::test(start_paused = true)]
async fn an_input_that_waited_for_room_keeps_its_key() {
    for ordered in [false, true] {
        for pool in flow_pools(3, 0, 3, FlowLimits::keys(1)) {
            let name = pool.name();
            let blocker = pool
                .submit_with(SubmitOptions::new(), || sleep(Duration::from_millis(25)))
                .await;
            let gauge = Gauge::default();
            let s = mapped(&pool, ordered, (0..6).collect(), gauged(&gauge, 10), |_| {
                SubmitOptions::new().key("k")
            });
            let (mut out, refused) = read_all(name, s).await;
            out.sort();
            assert_eq!((out, refused), ((0..6).collect(), None), "{name}");
            within("the blocker", blocker).await.unwrap();
            assert_eq!(
                gauge.max(),
                1,
                "{name}, ordered: {ordered}: most running of key k"
            );
        }
    }
}

/// Two tasks of key "h" submitted to the pool, held at a gate, then a stream of four
/// inputs of key "h" (all counted in one gauge), on pools of `max_per_key(2)`: while the
/// pool's two run, none of the stream's jobs starts; once they end, the stream's run two
/// at a time; and a task of key "h" submitted while the stream's jobs hold the key waits
/// for them. The limit is the pool's, shared by the stream and its other submitters.
#[tokio::test(start_paused = true)]
async fn keys_from_the_stream_share_the_limit_with_the_pools_other_tasks() {
    for pool in pools(FlowLimits::keys(2)) {
        let name = pool.name();
        let gauge = Gauge::default();
        let (first_gate, stream_gate) = (Gate::new(), Gate::new());
        let mut pool_tasks = Vec::new();
        for _ in 0..2 {
            let (g, gate) = (gauge.clone(), first_gate.clone());
            pool_tasks.push(
                pool.submit_with(SubmitOptions::new().key("h"), move || {
                    let (g, gate) = (g.clone(), gate.wait());
                    async move {
                        let _running = g.enter();
                        gate.await;
                    }
                })
                .await,
            );
        }
        let (g, gate) = (gauge.clone(), stream_gate.clone());
        let f = job(move |i| {
            let (g, gate) = (g.clone(), gate.wait());
            async move {
                let _running = g.enter();
                gate.await;
                i
            }
        });
        let s = mapped(&pool, false, (0..4).collect(), f, |_| {
            SubmitOptions::new().key("h")
        });
        let stream = tokio::spawn(read_all("the stream", s));
        sleep(Duration::from_millis(50)).await;
        assert_eq!(
            (gauge.started(), gauge.now()),
            (2, 2),
            "{name}: the stream's jobs of key h wait for the pool's two"
        );
        first_gate.open();
        for h in pool_tasks {
            within("the pool's tasks", h).await.unwrap();
        }
        sleep(Duration::from_millis(50)).await;
        assert_eq!(
            (gauge.started(), gauge.now()),
            (4, 2),
            "{name}: two of the stream's jobs run, two wait for them"
        );
        // A task of the pool's own, of key h, waits for the stream's.
        let g = gauge.clone();
        let late = pool
            .submit_with(SubmitOptions::new().key("h"), move || {
                let g = g.clone();
                async move {
                    let _running = g.enter();
                }
            })
            .await;
        sleep(Duration::from_millis(50)).await;
        assert_eq!(
            gauge.started(),
            4,
            "{name}: the pool's task waits for the key"
        );
        stream_gate.open();
        let (mut out, refused) = within("the stream", stream).await.unwrap();
        out.sort();
        assert_eq!((out, refused), (vec![0, 1, 2, 3], None), "{name}");
        within("the late task", late).await.unwrap();
        assert_eq!((gauge.started(), gauge.max()), (7, 2), "{name}");
    }
}

// ----- priority -----------------------------------------------------------------------------

/// A pool of one slot, held; then, waiting for room in this order: a stream whose input
/// has priority -1, a plain `submit` (priority 0), a stream whose input has priority 5.
/// When the slot frees, they start by priority: the priority-5 stream's job, the submit,
/// the priority -1 stream's job (with the streams waiting at priority 0, as without
/// options, they would start in arrival order).
#[tokio::test(start_paused = true)]
async fn a_streams_wait_for_room_is_in_line_with_its_inputs_priority() {
    for pool in flow_pools(1, 0, 1, FlowLimits::default()) {
        let name = pool.name();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let gate = Gate::new();
        let (s, g) = (starts.clone(), gate.clone());
        let blocker = pool
            .submit_with(SubmitOptions::new(), move || {
                let (s, g) = (s.clone(), g.wait());
                async move {
                    s.lock().unwrap().push(100);
                    g.await;
                }
            })
            .await;
        let s = starts.clone();
        let f = job(move |i| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(i);
                sleep(Duration::from_millis(10)).await;
                i
            }
        });
        let low = mapped(&pool, false, vec![1], f.clone(), |_| {
            SubmitOptions::new().priority(-1)
        });
        let low = tokio::spawn(read_all("the low stream", low));
        sleep(Duration::from_millis(10)).await;
        let (p, s) = (pool.clone(), starts.clone());
        let plain = tokio::spawn(async move {
            let h = p
                .submit_with(SubmitOptions::new(), move || {
                    let s = s.clone();
                    async move {
                        s.lock().unwrap().push(200);
                        sleep(Duration::from_millis(10)).await;
                    }
                })
                .await;
            within("the plain task", h).await.unwrap()
        });
        sleep(Duration::from_millis(10)).await;
        let high = mapped(&pool, false, vec![2], f, |_| {
            SubmitOptions::new().priority(5)
        });
        let high = tokio::spawn(read_all("the high stream", high));
        sleep(Duration::from_millis(10)).await;
        assert_eq!(*starts.lock().unwrap(), [100], "{name}: all wait");
        gate.open();
        within("the blocker", blocker).await.unwrap();
        within("the plain submit", plain).await.unwrap();
        assert_eq!(
            within("high", high).await.unwrap(),
            (vec![2], None),
            "{name}"
        );
        assert_eq!(within("low", low).await.unwrap(), (vec![1], None), "{name}");
        assert_eq!(
            *starts.lock().unwrap(),
            [100, 2, 200, 1],
            "{name}: start order"
        );
    }
}

// ----- refusals -----------------------------------------------------------------------------

/// Six inputs through pools of `weight_capacity(4)` with room for all, the fourth of
/// weight 10: as `submit_with` refuses such a job (`TooHeavy`), the stream refuses it:
/// the three before it run and are yielded (in order for `map_ordered`), the stream ends,
/// `refused` says `TooHeavy`, and no input after it is pulled or run.
#[tokio::test(start_paused = true)]
async fn a_too_heavy_input_is_refused_and_ends_the_stream() {
    let limits = FlowLimits {
        weight_capacity: Some(4),
        ..FlowLimits::default()
    };
    for ordered in [false, true] {
        for pool in pools(limits) {
            let name = pool.name();
            let gauge = Gauge::default();
            let s = mapped(&pool, ordered, (0..6).collect(), gauged(&gauge, 10), |i| {
                SubmitOptions::new().weight(if i == 3 { 10 } else { 1 })
            });
            let (mut out, refused) = read_all(name, s).await;
            out.sort();
            assert_eq!(out, [0, 1, 2], "{name}, ordered: {ordered}");
            assert_eq!(refused, Some(SubmitErrorKind::TooHeavy), "{name}");
            pool.wait_within().await;
            assert_eq!(
                gauge.started(),
                3,
                "{name}: nothing after the refused input ran"
            );
        }
    }
}

/// The same refusal when the pool is full (the stream holds the input while it would
/// wait for room): it is refused at once, without waiting for the room, and the stream
/// ends.
#[tokio::test(start_paused = true)]
async fn a_too_heavy_input_is_refused_at_once_in_a_full_pool() {
    let limits = FlowLimits {
        weight_capacity: Some(4),
        ..FlowLimits::default()
    };
    for ordered in [false, true] {
        for pool in flow_pools(1, 0, 1, limits) {
            let name = pool.name();
            let gate = Gate::new();
            let g = gate.clone();
            let blocker = pool
                .submit_with(SubmitOptions::new(), move || g.wait())
                .await;
            let gauge = Gauge::default();
            let mut s = mapped(&pool, ordered, vec![0, 1], gauged(&gauge, 10), |_| {
                SubmitOptions::new().weight(5)
            });
            let end = tokio::time::timeout(Duration::from_millis(100), s.next()).await;
            assert!(
                matches!(end, Ok(None)),
                "{name}, ordered: {ordered}: the stream ends while the pool is full"
            );
            assert_eq!(s.refused(), Some(SubmitErrorKind::TooHeavy), "{name}");
            gate.open();
            within("the blocker", blocker).await.unwrap();
            pool.wait_within().await;
            assert_eq!(gauge.started(), 0, "{name}");
        }
    }
}

/// A pool of two slots, one busy for a second; inputs 0 (no deadline), 1 (a timeout of
/// 50 ms), 2: input 0 takes the free slot and runs 300 ms; input 1 waits for room, and
/// after its 50 ms is refused (`TimedOut`) as `submit_with` is: the stream yields 0's
/// result, then ends (at 300 ms, not when room would come), `refused` says `TimedOut`,
/// and neither input 1 nor 2 ever runs.
#[tokio::test(start_paused = true)]
async fn a_timed_out_input_is_refused_and_ends_the_stream() {
    for ordered in [false, true] {
        for pool in flow_pools(2, 0, 2, FlowLimits::default()) {
            let name = pool.name();
            let t0 = Instant::now();
            let blocker = pool
                .submit_with(SubmitOptions::new(), || sleep(Duration::from_secs(1)))
                .await;
            let ends = Arc::new(Mutex::new(Vec::new()));
            let e = ends.clone();
            let f = job(move |i| {
                let e = e.clone();
                async move {
                    sleep(Duration::from_millis(300)).await;
                    e.lock().unwrap().push(i);
                    i
                }
            });
            let s = mapped(&pool, ordered, vec![0, 1, 2], f, |i| match i {
                1 => SubmitOptions::new().timeout(Duration::from_millis(50)),
                _ => SubmitOptions::new(),
            });
            let (out, refused) = read_all(name, s).await;
            assert_eq!(out, [0], "{name}, ordered: {ordered}");
            assert_eq!(refused, Some(SubmitErrorKind::TimedOut), "{name}");
            assert_eq!(t0.elapsed(), Duration::from_millis(300), "{name}");
            within("the blocker", blocker).await.unwrap();
            pool.wait_within().await;
            assert_eq!(*ends.lock().unwrap(), [0], "{name}: only input 0 ran");
        }
    }
}

/// The refused input's deadline is its own: a stream whose input waits for room with a
/// timeout gives up after it, while the pool stays full (no hang), and says so.
#[tokio::test(start_paused = true)]
async fn a_timed_out_input_gives_up_while_the_pool_stays_full() {
    for pool in flow_pools(1, 0, 1, FlowLimits::default()) {
        let name = pool.name();
        let gate = Gate::new();
        let g = gate.clone();
        let blocker = pool
            .submit_with(SubmitOptions::new(), move || g.wait())
            .await;
        let gauge = Gauge::default();
        let t0 = Instant::now();
        let mut s = mapped(&pool, false, vec![0, 1], gauged(&gauge, 1), |_| {
            SubmitOptions::new().timeout(Duration::from_millis(50))
        });
        let end = tokio::time::timeout(Duration::from_secs(1), s.next()).await;
        assert!(matches!(end, Ok(None)), "{name}: the stream ends");
        assert_eq!(t0.elapsed(), Duration::from_millis(50), "{name}");
        assert_eq!(s.refused(), Some(SubmitErrorKind::TimedOut), "{name}");
        gate.open();
        within("the blocker", blocker).await.unwrap();
        pool.wait_within().await;
        assert_eq!(gauge.started(), 0, "{name}");
    }
}

// ----- order ---------------------------------------------------------------------------------

/// Eight inputs of two keys (`max_per_key(1)`), the later ones shorter, through
/// `map_ordered` with options: the jobs end out of input order (each key's run one after
/// the other), and the results still come out in input order, each key never running
/// twice at once.
#[tokio::test(start_paused = true)]
async fn map_ordered_keeps_input_order_with_options() {
    for pool in pools(FlowLimits::keys(1)) {
        let name = pool.name();
        let gauges = [Gauge::default(), Gauge::default()];
        let ends = Arc::new(Mutex::new(Vec::new()));
        let (g, e) = (gauges.clone(), ends.clone());
        let f = job(move |i| {
            let (g, e) = (g[i % 2].clone(), e.clone());
            async move {
                let _running = g.enter();
                sleep(Duration::from_millis(10 * (8 - i as u64))).await;
                e.lock().unwrap().push(i);
                i
            }
        });
        let s = mapped(&pool, true, (0..8).collect(), f, |i| {
            SubmitOptions::new().key(format!("k{}", i % 2))
        });
        let (out, refused) = read_all(name, s).await;
        assert_eq!(out, (0..8).collect::<Vec<_>>(), "{name}: input order");
        assert_eq!(refused, None, "{name}");
        assert_ne!(
            *ends.lock().unwrap(),
            out,
            "{name}: the jobs ended out of order"
        );
        assert_eq!(
            [gauges[0].max(), gauges[1].max()],
            [1, 1],
            "{name}: per key"
        );
    }
}

// ----- dropping ------------------------------------------------------------------------------

/// A stream of six inputs of key "k" (`max_per_key(1)`) whose jobs never end: one runs,
/// the others wait for the key. Dropping the stream aborts them (as without options), and
/// the key's count goes back: a task of key "k" submitted afterwards runs.
#[tokio::test(start_paused = true)]
async fn dropping_the_stream_aborts_its_jobs_and_gives_their_keys_back() {
    for ordered in [false, true] {
        for pool in pools(FlowLimits::keys(1)) {
            let name = pool.name();
            let gauge = Gauge::default();
            let g = gauge.clone();
            let f = job(move |i| {
                let g = g.clone();
                async move {
                    let _running = g.enter();
                    std::future::pending::<()>().await;
                    i
                }
            });
            let mut s = mapped(&pool, ordered, (0..6).collect(), f, |_| {
                SubmitOptions::new().key("k")
            });
            let nothing = tokio::time::timeout(Duration::from_millis(50), s.next()).await;
            assert!(nothing.is_err(), "{name}: no job ends");
            assert_eq!(
                (gauge.started(), pool.stats().running),
                (1, 1),
                "{name}, ordered: {ordered}: one job of key k at a time"
            );
            drop(s);
            let ran = Arc::new(AtomicUsize::new(0));
            let r = ran.clone();
            let later = pool
                .submit_with(SubmitOptions::new().key("k"), move || {
                    let r = r.clone();
                    async move {
                        r.fetch_add(1, SeqCst);
                    }
                })
                .await;
            within("a later task of key k", later).await.unwrap();
            assert_eq!(ran.load(SeqCst), 1, "{name}");
            pool.wait_within().await;
            assert_eq!(gauge.now(), 0, "{name}: the aborted job was dropped");
            assert_eq!(
                gauge.started(),
                1,
                "{name}: no held job started after the drop"
            );
        }
    }
}

// ----- when the options apply ------------------------------------------------------------

/// `with_options` called on a stream already polled applies to the inputs pulled from
/// then on: input 0 (pulled before) runs without a key, beside the pool's task of key
/// "k"; input 1, pulled after, waits for that key.
#[tokio::test(start_paused = true)]
async fn options_set_after_polling_began_apply_to_the_later_inputs() {
    let p = support::common_builder(4, 0).max_per_key(1).build();
    let pool = Pool::Common(p.clone());
    let gauge = Gauge::default();
    let gate = Gate::new();
    let g = gate.clone();
    let holder = pool
        .submit_with(SubmitOptions::new().key("k"), move || g.wait())
        .await;
    let g2 = gauge.clone();
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let inputs = stream::poll_fn(move |cx| receiver.poll_recv(cx));
    let mut s = p.map_unordered(inputs, move |i| {
        let g = g2.clone();
        async move {
            let _running = g.enter();
            sleep(Duration::from_millis(10)).await;
            i
        }
    });
    sender.send(0).unwrap();
    assert_eq!(within("input 0", s.next()).await.unwrap().unwrap(), 0);
    let mut s = s.with_options(|_| SubmitOptions::new().key("k"));
    sender.send(1).unwrap();
    let waits = tokio::time::timeout(Duration::from_millis(50), s.next()).await;
    assert!(waits.is_err(), "input 1 waits for key k");
    assert_eq!(gauge.started(), 1);
    gate.open();
    within("the holder", holder).await.unwrap();
    assert_eq!(within("input 1", s.next()).await.unwrap().unwrap(), 1);
    drop(sender);
    assert!(within("the end", s.next()).await.is_none());
}
