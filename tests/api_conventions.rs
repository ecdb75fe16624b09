//! A review of the public API as a demanding Rust user checks it against the Rust API
//! guidelines (C-SEND-SYNC, C-COMMON-TRAITS, C-GOOD-ERR, C-DEBUG) and against tokio's
//! own crates: the auto traits and common traits of every public type, `Debug` that is
//! safe to call anywhere, errors whose messages say what to do, and the three pools
//! (with their groups and streams) alike where the docs say they are.
//!
//! A trait a type lacks cannot be asserted at compile time without the test file failing
//! to build, so [`implements!`] asks at run time (autoref specialisation on a concrete
//! type: the method of the trait that requires the bound wins when the bound holds), and
//! each such test quotes, in a comment, the compile-time assertion and the compiler's
//! message it gave before the fix.

#[cfg(feature = "metrics")]
mod metric_figures;
mod support;

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
#[cfg(feature = "metrics")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use nb_aiopool::*;

// ----- a run-time trait probe -------------------------------------------------------------

/// A type to probe; `implements!(T: trait_module)` says whether `T` implements the trait.
pub struct Probe<T: ?Sized>(PhantomData<T>);

macro_rules! probe {
    ($($m:ident => $tr:path;)*) => {$(
        #[allow(dead_code)]
        mod $m {
            pub trait Yes {
                fn holds(&self) -> bool {
                    true
                }
            }
            impl<T: ?Sized + $tr> Yes for super::Probe<T> {}
            pub trait No {
                fn holds(&self) -> bool {
                    false
                }
            }
            impl<T: ?Sized> No for &super::Probe<T> {}
        }
    )*};
}

probe! {
    send => Send;
    sync => Sync;
    unwind_safe => std::panic::UnwindSafe;
    ref_unwind_safe => std::panic::RefUnwindSafe;
    default => Default;
    hash => std::hash::Hash;
    display => std::fmt::Display;
}

/// Whether `$t` implements the trait of probe module `$m` (a concrete type only).
macro_rules! implements {
    ($t:ty : $m:ident) => {{
        #[allow(unused_imports)]
        use $m::{No as _, Yes as _};
        (&Probe::<$t>(PhantomData)).holds()
    }};
}

fn assert_send<T: Send>() {}
fn assert_send_sync<T: Send + Sync>() {}
fn assert_unpin<T: Unpin>() {}
fn is_send<T: Send>(_: &T) {}

type Inputs = futures_util::stream::Iter<std::vec::IntoIter<u32>>;
type NotSyncFuture = Pin<Box<dyn Future<Output = u32> + Send>>;

// ----- (a) auto traits ----------------------------------------------------------------------

/// What the user does: keeps pools, builders, groups, options, stats and ids in structs
/// shared across `tokio::spawn`ed tasks (`Arc<AppState>`), holds a group across `.await`
/// in a spawned task, and sends the futures of every submit, join and shutdown call to
/// `tokio::spawn`. They expect `Send` (and `Sync` for what is shared by reference) and
/// `Unpin` for the handles and streams, as tokio's `JoinSet` and `JoinHandle` are.
///
/// Pinned: every assertion below compiles (the errors, the handles and the map streams'
/// `Send` are pinned in `tests/send_sync.rs` and `tests/documented_behaviour.rs`; this
/// adds the groups, the builders, the options, the stats, the ids and the futures of the
/// calls those files do not name).
#[test]
fn pin_auto_traits_of_the_types_and_futures_other_files_do_not_pin() {
    assert_send_sync::<CommonAioPoolBuilder>();
    assert_send_sync::<NoQueueAioPoolBuilder>();
    assert_send_sync::<SmartAioPoolBuilder>();
    assert_send_sync::<SubmitOptions>();
    assert_send_sync::<PoolStats>();
    assert_send_sync::<ShutdownReport>();
    assert_send_sync::<TaskId>();
    assert_send_sync::<CancelReason>();
    assert_send_sync::<SubmitErrorKind>();
    assert_send_sync::<TrySubmitErrorKind>();
    // Groups: as tokio's `JoinSet<T>`, `Send + Sync + Unpin` for a `Send` output, also
    // one that is not `Sync`.
    assert_send_sync::<TaskGroup<u32>>();
    assert_send_sync::<TaskGroup<std::cell::Cell<u32>>>();
    assert_send_sync::<SmartTaskGroup<std::cell::Cell<u32>>>();
    assert_unpin::<TaskGroup<u32>>();
    assert_unpin::<SmartTaskGroup<u32>>();
    assert_send::<MapUnordered<Inputs, std::cell::Cell<u32>>>();
    assert_send::<MapOrdered<Inputs, std::cell::Cell<u32>>>();

    // The futures of the calls, with a task that is `Send` but not `Sync`.
    let rt = support::current_thread();
    let _enter = rt.enter();
    let common = support::common_local(1, 1);
    let no_queue = NoQueueAioPool::builder().process_wide(false).build();
    let smart = support::smart_local(1);
    let nf = || -> NotSyncFuture { Box::pin(async { 1 }) };
    is_send(&common.submit_with(nf(), SubmitOptions::new()));
    is_send(&common.batch_submit(vec![nf()]));
    is_send(&common.batch_run(vec![nf()]));
    is_send(&common.cancel_all());
    is_send(&common.shutdown_timeout(Duration::from_secs(1)));
    is_send(&no_queue.run(nf()));
    is_send(&no_queue.submit_with(nf(), SubmitOptions::new()));
    is_send(&no_queue.batch_run(vec![nf()]));
    is_send(&no_queue.shutdown_timeout(Duration::from_secs(1)));
    is_send(&smart.run(|| async { 1 }));
    is_send(&smart.submit_with(|| async { 1 }, SubmitOptions::new()));
    is_send(&smart.batch_run(vec![|| async { 1 }]));
    is_send(&smart.shutdown_timeout(Duration::from_secs(1)));
    let mut group = common.group::<u32>();
    is_send(&group.submit(nf()));
    is_send(&group.join_next());
    is_send(&group.join_next_with_id());
    is_send(&group.join_all());
    let mut sgroup = smart.group::<u32>();
    is_send(&sgroup.submit(|| async { 1 }));
    is_send(&sgroup.join_next());
    is_send(&sgroup.join_all());
    // Held across an `.await` in a spawned task: the group, a handle, the pool.
    let fut = async move {
        let mut group = common.group::<u32>();
        group.submit(async { 1 }).await.unwrap();
        let h = common.submit(async { 2u32 }).await.unwrap();
        let _ = group.join_next().await;
        h.await.unwrap()
    };
    is_send(&fut);
}

/// What the user does: calls a pool inside `std::panic::catch_unwind` (a plugin or FFI
/// boundary, a test harness, a worker thread that must survive a panicking step):
///
/// ```ignore
/// let pool = CommonAioPool::new(4, 16);
/// let r = std::panic::catch_unwind(|| pool.blocking_submit(job()));
/// ```
///
/// or keeps a pool, a builder or a group in a struct that is moved into `catch_unwind`.
/// (The map streams are left out: they keep the user's mapping closure, whose captures
/// may be left half-updated by a panic, behind a trait object; claiming `UnwindSafe` for
/// them would hide that. tokio's streams are unwind safe only when what they hold is.)
/// They expect it to compile, as it does with tokio's `Handle`, `JoinHandle` and
/// `AbortHandle` (tokio's `tests/unwindsafe.rs`), and as it does with this crate's own
/// `TaskHandle` and `AbortHandle` (their `UnwindSafe` impls say "it reaches only the
/// result slot's atomics and mutex"; the engine's lock, in turn, "a poisoned lock means a
/// bug in this crate. The state is still consistent between statements, so keep going").
///
/// What happened: none of the three pools, builders or groups, nor the map streams, is
/// `UnwindSafe` or `RefUnwindSafe`. The compile-time form of this test,
///
/// ```ignore
/// fn ref_unwind_safe<T: std::panic::RefUnwindSafe>() {}
/// ref_unwind_safe::<CommonAioPool>();
/// ```
///
/// and the `catch_unwind` above (written without `AssertUnwindSafe`), failed to build
/// with six errors, one per trait object the engine keeps (all features on):
/// "error[E0277]: the type `(dyn for<'a> Fn(nb_aiopool::TaskId, &'a TaskError) + Send +
/// Sync + 'static)` may contain interior mutability and a reference may not be safely
/// transferable across a catch_unwind boundary" (the `on_panic` callback), and the same
/// for `dyn Fn(nb_aiopool::engine::Figures) + Send + Sync` (the drop hook), `dyn Send +
/// Sync` and the `metrics` handles `dyn CounterFn`, `dyn GaugeFn`, `dyn HistogramFn`.
/// The run-time probe below fails in their place: "a pool (or its builder, group or
/// stream) cannot be captured by `catch_unwind` ... missing: [\"CommonAioPool:
/// UnwindSafe\", \"CommonAioPool: RefUnwindSafe\", ...]" (all 16).
#[test]
fn pools_builders_and_groups_can_be_used_inside_catch_unwind() {
    let mut missing = Vec::new();
    macro_rules! check {
        ($($t:ty),* $(,)?) => {$(
            if !implements!($t: unwind_safe) {
                missing.push(concat!(stringify!($t), ": UnwindSafe"));
            }
            if !implements!($t: ref_unwind_safe) {
                missing.push(concat!(stringify!($t), ": RefUnwindSafe"));
            }
        )*};
    }
    check!(
        CommonAioPool,
        NoQueueAioPool,
        SmartAioPool,
        CommonAioPoolBuilder,
        NoQueueAioPoolBuilder,
        SmartAioPoolBuilder,
        TaskGroup<u32>,
        SmartTaskGroup<u32>,
    );
    assert!(
        missing.is_empty(),
        "a pool (or its builder or group) cannot be captured by `catch_unwind`, \
         as tokio's handles and this crate's own TaskHandle can; missing: {missing:?}"
    );

    // And what it is for: a panicking step after a submit, caught, leaves the pool usable.
    let pool = support::common_local(1, 1);
    let rt = support::current_thread();
    let _enter = rt.enter();
    // (`AssertUnwindSafe` only so that this file builds before the fix.)
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.try_submit(async { 1 }).unwrap().detach();
        panic!("a step after the submit panics");
    }));
    assert!(caught.is_err());
    drop(_enter);
    rt.block_on(async {
        assert_eq!(
            support::within("a run after the caught panic", pool.run(async { 2 }))
                .await
                .unwrap(),
            2,
            "the pool did not run a task after a panic caught around its use"
        );
    });
}

// ----- (b) common traits --------------------------------------------------------------------

/// What the user does: `#[derive(Default)]` on a config struct holding a
/// `CommonAioPoolBuilder` (or `..Default::default()`, or `T::default()` in generic code
/// over the three builders). They expect the three builders alike, as the README says
/// ("Builders: `CommonAioPool::builder()`, `NoQueueAioPool::builder()`,
/// `SmartAioPool::builder()`"), and C-COMMON-TRAITS.
///
/// What happened: `SmartAioPoolBuilder: Default`, but `CommonAioPoolBuilder` and
/// `NoQueueAioPoolBuilder` are not: "error[E0277]: the trait bound
/// `CommonAioPoolBuilder: Default` is not satisfied".
#[test]
fn the_three_builders_implement_default_alike() {
    let builders = [
        (
            "CommonAioPoolBuilder",
            implements!(CommonAioPoolBuilder: default),
        ),
        (
            "NoQueueAioPoolBuilder",
            implements!(NoQueueAioPoolBuilder: default),
        ),
        (
            "SmartAioPoolBuilder",
            implements!(SmartAioPoolBuilder: default),
        ),
    ];
    let without: Vec<_> = builders
        .iter()
        .filter(|(_, d)| !d)
        .map(|(n, _)| *n)
        .collect();
    assert!(
        without.is_empty(),
        "SmartAioPoolBuilder has Default but these builders do not: {without:?}"
    );
}

/// What the user does: counts failures by reason,
/// `HashMap<CancelReason, usize>` (or `HashSet<SubmitErrorKind>` of the refusals a map
/// stream reported through `refused()`), as one does with `std::io::ErrorKind`. They
/// expect the plain-data enums (`Copy`, `Eq`, documented as "Plain data") to be `Hash`
/// (C-COMMON-TRAITS).
///
/// What happened: none of `CancelReason`, `SubmitErrorKind` and `TrySubmitErrorKind` is
/// `Hash`: "error[E0599]: the method `entry` exists for struct
/// `HashMap<CancelReason, usize>`, but its trait bounds were not satisfied ...
/// `CancelReason: Hash`".
#[test]
fn cancel_reasons_and_refusal_kinds_can_key_a_hash_map() {
    let hashable = [
        ("CancelReason", implements!(CancelReason: hash)),
        ("SubmitErrorKind", implements!(SubmitErrorKind: hash)),
        ("TrySubmitErrorKind", implements!(TrySubmitErrorKind: hash)),
    ];
    let not: Vec<_> = hashable
        .iter()
        .filter(|(_, h)| !h)
        .map(|(n, _)| *n)
        .collect();
    assert!(
        not.is_empty(),
        "these plain-data enums cannot key a HashMap (no Hash): {not:?}"
    );
    // What the user writes with them (compiles only once they are `Hash`):
    // let mut by_reason: HashMap<CancelReason, usize> = HashMap::new();
    let _: Option<HashMap<u8, usize>> = None;
}

/// What the user does: logs why a map stream stopped pulling inputs,
/// `if let Some(kind) = stream.refused() { log::warn!("stopped: {kind}") }` (its docs:
/// "`Some(kind)` once a submit was refused"), or a `TrySubmitError`'s `kind()`. They
/// expect the kinds to `Display` as `CancelReason` does (and as `std::io::ErrorKind`
/// does), with the message the error itself prints.
///
/// What happened: `CancelReason: Display`, but `SubmitErrorKind` and
/// `TrySubmitErrorKind` are not: "error[E0277]: `SubmitErrorKind` doesn't implement
/// `std::fmt::Display`".
#[test]
fn refusal_kinds_display_as_cancel_reasons_do() {
    let displayable = [
        ("CancelReason", implements!(CancelReason: display)),
        ("SubmitErrorKind", implements!(SubmitErrorKind: display)),
        (
            "TrySubmitErrorKind",
            implements!(TrySubmitErrorKind: display),
        ),
    ];
    let not: Vec<_> = displayable
        .iter()
        .filter(|(_, d)| !d)
        .map(|(n, _)| *n)
        .collect();
    assert!(
        not.is_empty(),
        "a refusal kind (what a map stream's refused() returns) cannot be shown to a user \
         with {{}}, as a CancelReason can: {not:?}"
    );
}

/// What the user does: `dbg!(&stream)` or `tracing::debug!(?stream)` on a map stream.
/// They expect `Debug` to name the type, `MapOrdered { in_flight: .., .. }`, as every
/// other type of the crate does (`SmartTaskGroup { .. }`, `TaskHandle { .. }`).
///
/// What happened: the type's name was written twice, run together with the inner type's:
/// "MapOrderedMap { in_flight: 0, window: 2, inputs_done: false, refused: None, .. }" (and
/// "MapUnorderedMap { .. }"), also in `{:#?}`.
#[tokio::test(flavor = "current_thread")]
async fn map_streams_debug_as_their_own_type() {
    let pool = support::common_local(2, 0);
    let ordered = pool.map_ordered(
        futures_util::stream::iter(vec![1u32, 2]),
        |i| async move { i },
    );
    let unordered = pool.map_unordered(
        futures_util::stream::iter(vec![1u32, 2]),
        |i| async move { i },
    );
    let (o, u) = (format!("{ordered:?}"), format!("{unordered:?}"));
    assert!(
        o.starts_with("MapOrdered {") && u.starts_with("MapUnordered {"),
        "a map stream's Debug does not read as its type: {o:?}, {u:?}"
    );
    let pretty = format!("{ordered:#?}");
    assert!(
        pretty.starts_with("MapOrdered {\n"),
        "{{:#?}} of a map stream: {pretty:?}"
    );
    let smart = support::smart_local(1);
    let g = smart.group::<u32>();
    assert!(format!("{g:?}").starts_with("SmartTaskGroup {"), "{g:?}");
    let sm = smart.map_ordered(futures_util::stream::iter(vec![1u32]), |i| {
        move || async move { i }
    });
    assert!(format!("{sm:?}").starts_with("MapOrdered {"), "{sm:?}");
    drop((ordered, unordered, sm));
}

/// Pinned: `Debug` of every pool, group, stream and handle can be called from inside one
/// of the pool's own jobs and from the `Drop` of a job's output and of a detached job's
/// future (the pool's lock is not held there: "No user code runs under the lock"), and
/// says what a user looks for (name, size, stats).
#[tokio::test(flavor = "current_thread")]
async fn pin_debug_from_inside_a_job_and_from_drops() {
    struct DebugOnDrop(Arc<Mutex<Vec<String>>>, CommonAioPool);
    impl Drop for DebugOnDrop {
        fn drop(&mut self) {
            self.0.lock().unwrap().push(format!("{:?}", self.1));
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let pool = CommonAioPool::builder()
        .name("dbg")
        .max_concurrency(1)
        .max_queue_size(2)
        .process_wide(false)
        .build();
    let (p, s) = (pool.clone(), seen.clone());
    let inside = pool
        .run(async move {
            let g = p.group::<u32>();
            let text = format!("{p:?} {g:?}");
            DebugOnDrop(s, p); // dropped inside the job
            text
        })
        .await
        .unwrap();
    assert!(
        inside.starts_with("CommonAioPool { name: \"dbg\", max_concurrency: 1, max_queue_size: 2, stats: PoolStats {"),
        "Debug of a pool inside its own job: {inside:?}"
    );
    // A result whose `Drop` prints the pool, dropped by the pool (detached).
    let (p, s) = (pool.clone(), seen.clone());
    pool.submit(async move { DebugOnDrop(s, p) })
        .await
        .unwrap()
        .detach();
    support::within("the pool's wait", pool.wait()).await;
    let h = pool.submit(std::future::pending::<()>()).await.unwrap();
    assert!(
        format!("{h:?}").starts_with("TaskHandle { id: TaskId("),
        "{h:?}"
    );
    h.abort();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        2,
        "a Drop that formats the pool did not run (or ran twice): {seen:?}"
    );
    let smart = support::smart_local(1);
    let s2 = smart.clone();
    let inside = smart
        .run(move || {
            let s = s2.clone();
            async move { format!("{s:?}") }
        })
        .await
        .unwrap();
    assert!(inside.starts_with("SmartAioPool { name: "), "{inside:?}");
    let nq = NoQueueAioPool::builder().process_wide(false).build();
    let n2 = nq.clone();
    let inside = nq.run(async move { format!("{n2:?}") }).await.unwrap();
    assert!(inside.starts_with("NoQueueAioPool { name: "), "{inside:?}");
}

// ----- Debug from a panic hook, under the pool's lock ---------------------------------------

#[cfg(feature = "metrics")]
mod panicking_gauge {
    use super::*;

    /// While set, every gauge move of a pool built with [`Recorder`] panics (they are
    /// made under the pool's lock: src/observe.rs, `move_gauge`).
    pub static PANIC: AtomicBool = AtomicBool::new(false);
    pub const MESSAGE: &str = "api_conventions: a gauge that panics on purpose";

    struct Gauge;
    impl metrics::GaugeFn for Gauge {
        fn increment(&self, _: f64) {
            if PANIC.load(Ordering::SeqCst) {
                panic!("{}", MESSAGE);
            }
        }
        fn decrement(&self, v: f64) {
            self.increment(v)
        }
        fn set(&self, v: f64) {
            self.increment(v)
        }
    }

    pub struct Recorder;
    impl metrics::Recorder for Recorder {
        crate::metric_figures::no_descriptions!();
        fn register_counter(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            metrics::Counter::noop()
        }
        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::from_arc(Arc::new(Gauge))
        }
        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    thread_local! {
        /// The pool the panic hook formats, on the test's thread only.
        #[allow(clippy::type_complexity)]
        pub static SHOWN: std::cell::RefCell<Option<Box<dyn Fn() -> String>>> = const { std::cell::RefCell::new(None) };
        pub static TEXT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    }

    /// A panic hook, as an application's: it prints its pool's `Debug` (on the threads
    /// that set [`SHOWN`]) and passes every panic on to the hook that was in place.
    pub fn install_hook() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let shown = SHOWN.with(|s| s.borrow().as_ref().map(|show| show()));
                if let Some(text) = shown {
                    TEXT.with(|t| *t.borrow_mut() = Some(text));
                    return;
                }
                previous(info);
            }));
        });
    }
}

/// [`support::on_thread_within`], but a hang ends the process (`abort`, after printing
/// what hung) rather than failing the test: a thread stuck inside the panic hook holds
/// std's hook lock for good, so the test harness, which replaces the hook when it ends,
/// would hang in its turn (it did: the binary never exited).
#[cfg(feature = "metrics")]
fn on_thread_or_abort<T: Send + 'static>(
    what: &str,
    secs: u64,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    support::on_thread_or_else(what, secs, f, |what, secs| {
        eprintln!("FAILED: timed out ({secs} s): {what}; aborting the test binary");
        std::process::abort()
    })
}

/// Runs `try_submit` (a job that returns 5) on a thread of its own while every gauge move
/// of `pool` (built with [`panicking_gauge::Recorder`]) panics and the panic hook prints
/// `pool`'s `Debug`; checks that the submit was accepted and its job returned 5. Returns
/// what the hook printed, `None` if it did not run. A hang aborts the binary
/// ([`on_thread_or_abort`], with `what`).
#[cfg(feature = "metrics")]
fn debug_printed_by_the_hook<P>(
    pool: &P,
    what: &str,
    try_submit: impl FnOnce(&P) -> Option<TaskHandle<i32>> + Send + 'static,
) -> Option<String>
where
    P: Clone + std::fmt::Debug + Send + 'static,
{
    let p = pool.clone();
    on_thread_or_abort(what, 10, move || {
        let rt = support::current_thread();
        rt.block_on(async {
            let shown = p.clone();
            panicking_gauge::SHOWN
                .with(|s| *s.borrow_mut() = Some(Box::new(move || format!("{shown:?}"))));
            panicking_gauge::PANIC.store(true, Ordering::SeqCst);
            let h = try_submit(&p);
            panicking_gauge::PANIC.store(false, Ordering::SeqCst);
            panicking_gauge::SHOWN.with(|s| *s.borrow_mut() = None);
            let v = h.expect("the submit was refused").await.unwrap();
            assert_eq!(v, 5);
            panicking_gauge::TEXT.with(|t| t.borrow_mut().take())
        })
    })
}

/// What the user does: their panic hook logs the application's state, including a global
/// pool's `{:?}`, as many services do; the pool is built with the `metrics` feature and
/// a recorder whose gauge panics once (a bug in the exporter). The crate docs ("Feature
/// flags"): "A subscriber or recorder that panics when a pool calls it costs only that
/// record (the span, event or figure of that call; the panic hook still prints the
/// panic): the pool catches the panic, and its tasks, handles, `wait()`, `shutdown` and
/// `PoolStats` go on as if the call had returned." They expect the hook to run and the
/// submit to go on.
///
/// What happened: the gauge is moved under the pool's lock, so the panic hook runs with
/// the lock held, and the pool's `Debug` (which reads `stats()`, taking the lock again on
/// the same thread) deadlocked: "timed out (10 s): a try_submit whose gauge panics, with
/// a panic hook that prints the pool's Debug" (with `gdb`: the thread blocked in
/// `Engine::lock` <- `Engine::stats` <- `<CommonAioPool as Debug>::fmt` <- the hook <-
/// `panic_with_hook` <- the gauge, under the lock taken by the `try_submit`).
#[cfg(feature = "metrics")]
#[test]
fn debug_of_a_pool_from_a_panic_hook_while_the_pool_holds_its_lock() {
    panicking_gauge::install_hook();
    let pool = metrics::with_local_recorder(&panicking_gauge::Recorder, || {
        CommonAioPool::builder()
            .name("hooked")
            .max_concurrency(1)
            .max_queue_size(4)
            .process_wide(false)
            .build()
    });
    let text = debug_printed_by_the_hook(
        &pool,
        "a try_submit whose gauge panics, with a panic hook that prints the pool's Debug",
        |p| p.try_submit(async { 5 }).ok(),
    );
    let text = text.expect("the panic hook did not run (the gauge did not panic?)");
    assert!(
        text.starts_with("CommonAioPool { name: \"hooked\""),
        "the pool's Debug, printed by the panic hook: {text:?}"
    );
    assert!(
        text.ends_with("stats: <locked> }"),
        "a Debug that cannot read the figures should say so, as std's Mutex does: {text:?}"
    );
    assert_eq!(pool.stats().completed, 1);
}

// ----- (d) messages that say what to do -----------------------------------------------------

/// What the user does: `pool.try_submit(job)?` in a service, with `anyhow`; the log says
/// only the `Display`. The Rust API guidelines (C-GOOD-ERR) and the brief of this review:
/// a message should say what happened and what to do. `NoRuntime` does ("submit from
/// inside a runtime, or enter one first"), as do the builders' panics.
///
/// What happened: `Full` says "the pool is full" (nothing about waiting with
/// `submit(..).await`, or retrying), and `WouldDeadlock` says "a task running in this
/// pool submitted to the same pool while it was full; waiting would deadlock" (nothing
/// about `try_submit`, a larger queue, or another pool).
#[tokio::test(flavor = "current_thread")]
async fn refusal_messages_say_what_to_do() {
    let pool = support::common_local(1, 0);
    let busy = pool.try_submit(std::future::pending::<()>()).unwrap();
    let full = pool.try_submit(async {}).unwrap_err().to_string();
    let p = pool.clone();
    busy.abort();
    support::within("the abort's room", async {
        while pool.stats().running > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let deadlock = pool
        .run(async move {
            let _hold = p.try_submit(std::future::pending::<()>());
            // The pool (1 slot, no queue) is full with this job: a submit from here.
            let e = p.submit(async {}).await.unwrap_err();
            assert!(e.is_would_deadlock(), "{e:?}");
            e.to_string()
        })
        .await
        .unwrap();
    let mut vague = Vec::new();
    if !(full.contains("submit") || full.contains("retry") || full.contains("later")) {
        vague.push(full);
    }
    if !(deadlock.contains("try_submit")
        || deadlock.contains("another pool")
        || deadlock.contains("queue"))
    {
        vague.push(deadlock);
    }
    assert!(
        vague.is_empty(),
        "these refusal messages say what happened but not what to do about it: {vague:?}"
    );
}

// ----- (c) the three pools alike ------------------------------------------------------------

/// Pinned: the same refusal, with the same kind and the same message, from the three
/// pools and their groups, in the same situations (a closed pool; a task heavier than the
/// weight capacity; a `try_submit` of a full pool), and the task handed back unpolled.
#[tokio::test(flavor = "current_thread")]
async fn pin_the_same_refusals_from_the_three_pools_and_their_groups() {
    let common = CommonAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(0)
        .weight_capacity(2)
        .process_wide(false)
        .build();
    let no_queue = NoQueueAioPool::builder()
        .max_concurrency(1)
        .weight_capacity(2)
        .process_wide(false)
        .build();
    let smart = SmartAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(0)
        .weight_capacity(2)
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let heavy = || SubmitOptions::new().weight(3);

    // TooHeavy, from submit_with and try_submit_with, the same on all three.
    let kinds = [
        common
            .submit_with(async { 1 }, heavy())
            .await
            .unwrap_err()
            .kind(),
        no_queue
            .submit_with(async { 1 }, heavy())
            .await
            .unwrap_err()
            .kind(),
        smart
            .submit_with(|| async { 1 }, heavy())
            .await
            .unwrap_err()
            .kind(),
    ];
    assert_eq!(
        kinds,
        [SubmitErrorKind::TooHeavy; 3],
        "a task heavier than the capacity"
    );
    let tkinds = [
        common
            .try_submit_with(async { 1 }, heavy())
            .unwrap_err()
            .kind(),
        no_queue
            .try_submit_with(async { 1 }, heavy())
            .unwrap_err()
            .kind(),
        smart
            .try_submit_with(|| async { 1 }, heavy())
            .unwrap_err()
            .kind(),
    ];
    assert_eq!(tkinds, [TrySubmitErrorKind::TooHeavy; 3]);

    // Full, from try_submit of the pools and of their groups.
    let a = common.try_submit(std::future::pending::<()>()).unwrap();
    let b = no_queue.try_submit(std::future::pending::<()>()).unwrap();
    let c = smart.try_submit(std::future::pending::<()>).unwrap();
    let mut cg = common.group::<()>();
    let mut ng = no_queue.group::<()>();
    let mut sg = smart.group::<()>();
    let full = [
        common.try_submit(async {}).unwrap_err().to_string(),
        no_queue.try_submit(async {}).unwrap_err().to_string(),
        smart.try_submit(|| async {}).unwrap_err().to_string(),
        cg.try_submit(async {}).unwrap_err().to_string(),
        ng.try_submit(async {}).unwrap_err().to_string(),
        sg.try_submit(|| async {}).unwrap_err().to_string(),
    ];
    assert!(
        full.iter().all(|m| *m == full[0]),
        "Full differs between the pools: {full:?}"
    );
    for h in [a, b] {
        h.abort();
    }
    c.abort();

    // Closed, from every submit of a shut-down pool and of its groups, the same message.
    support::within("shutdowns", async {
        common.shutdown().await;
        no_queue.shutdown().await;
        smart.shutdown().await;
    })
    .await;
    let closed = [
        common.submit(async {}).await.unwrap_err().to_string(),
        no_queue.submit(async {}).await.unwrap_err().to_string(),
        smart.submit(|| async {}).await.unwrap_err().to_string(),
        cg.submit(async {}).await.unwrap_err().to_string(),
        ng.submit(async {}).await.unwrap_err().to_string(),
        sg.submit(|| async {}).await.unwrap_err().to_string(),
        common.try_submit(async {}).unwrap_err().to_string(),
        no_queue.try_submit(async {}).unwrap_err().to_string(),
        smart.try_submit(|| async {}).unwrap_err().to_string(),
        match common.run(async {}).await.unwrap_err() {
            RunError::Rejected(e) => e.to_string(),
            RunError::Failed(e) => panic!("run on a closed pool failed rather than refused: {e}"),
        },
    ];
    assert!(
        closed.iter().all(|m| *m == closed[0]),
        "Closed differs: {closed:?}"
    );
    // The stream of a closed pool says why it ended.
    let mut s = common.map_unordered(futures_util::stream::iter(vec![1u32]), |i| async move { i });
    assert!(s.next().await.is_none());
    assert_eq!(s.refused(), Some(SubmitErrorKind::Closed));
}

/// Pinned: `blocking_submit`, `blocking_submit_with` and `TaskHandle::blocking_wait`,
/// called inside `block_on` (a thread that drives async tasks), panic on all three pools,
/// as their `# Panics` sections say ("Panics if called from a thread that drives async
/// tasks ... use `submit` there"), also with room free, and with one message shape that
/// names the call to use instead; the pool is unharmed and the task dropped unaccepted.
#[test]
fn pin_blocking_calls_inside_a_runtime_panic_alike_on_the_three_pools() {
    let rt = support::current_thread();
    let _enter = rt.enter();
    let common = support::common_local(2, 2);
    let no_queue = NoQueueAioPool::builder()
        .max_concurrency(2)
        .process_wide(false)
        .build();
    let smart = support::smart_local(2);
    let messages: Vec<String> = rt.block_on(async {
        let caught = |f: &mut dyn FnMut()| {
            let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .expect_err("a blocking call inside block_on did not panic");
            support::panic_message(&*p)
        };
        vec![
            caught(&mut || drop(common.blocking_submit(async {}))),
            caught(&mut || drop(no_queue.blocking_submit(async {}))),
            caught(&mut || drop(smart.blocking_submit(|| async {}))),
            caught(&mut || drop(common.blocking_submit_with(async {}, SubmitOptions::new()))),
            caught(&mut || drop(no_queue.blocking_submit_with(async {}, SubmitOptions::new()))),
            caught(&mut || drop(smart.blocking_submit_with(|| async {}, SubmitOptions::new()))),
        ]
    });
    for m in &messages {
        assert!(
            m.contains("submit") && m.contains("nb_aiopool"),
            "a blocking call's panic does not say which call to use instead: {m:?}"
        );
    }
    let shapes: Vec<String> = messages
        .iter()
        .map(|m| {
            m.replace("NoQueueAioPool", "P")
                .replace("CommonAioPool", "P")
                .replace("SmartAioPool", "P")
        })
        .collect();
    assert!(
        shapes[..3].iter().all(|s| *s == shapes[0]) && shapes[3..].iter().all(|s| *s == shapes[3]),
        "the three pools' blocking_submit panics differ: {messages:#?}"
    );
    let h = rt.block_on(common.submit(async { 3 })).unwrap();
    let waited = rt.block_on(async {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.blocking_wait()))
            .map_err(|p| support::panic_message(&*p))
    });
    let m = waited.expect_err("blocking_wait inside block_on did not panic");
    assert!(
        m.contains(".await") || m.contains("await"),
        "blocking_wait's panic: {m:?}"
    );
    let stats = [common.stats(), no_queue.stats(), smart.stats()];
    assert_eq!(
        stats.iter().map(|s| s.submitted).collect::<Vec<_>>(),
        [1, 0, 0],
        "a refused blocking submit was counted: {stats:?}"
    );
}

/// As [`debug_of_a_pool_from_a_panic_hook_while_the_pool_holds_its_lock`], with a
/// SmartAioPool, whose `Debug` also counts its live workers (under the same lock).
///
/// What happened before the fix: the same deadlock, "timed out (10 s): a SmartAioPool's
/// try_submit whose gauge panics, with a panic hook that prints the pool's Debug".
#[cfg(feature = "metrics")]
#[test]
fn debug_of_a_smart_pool_from_a_panic_hook_while_the_pool_holds_its_lock() {
    panicking_gauge::install_hook();
    let pool = metrics::with_local_recorder(&panicking_gauge::Recorder, || {
        SmartAioPool::builder()
            .name("hooked-smart")
            .max_concurrency(1)
            .process_wide(false)
            .auto_shutdown(false)
            .build()
    });
    let text = debug_printed_by_the_hook(
        &pool,
        "a SmartAioPool's try_submit whose gauge panics, with a panic hook that prints the pool's Debug",
        |p| p.try_submit(|| async { 5 }).ok(),
    );
    let text = text.expect("the panic hook did not run (the gauge did not panic?)");
    assert!(
        text.starts_with(
            "SmartAioPool { name: \"hooked-smart\", max_concurrency: 1, workers: <locked>"
        ),
        "the pool's Debug, printed by the panic hook: {text:?}"
    );
    assert_eq!(pool.stats().completed, 1);
    assert!(
        format!("{pool:?}").contains("stats: PoolStats {"),
        "the pool's Debug outside the hook reads its figures: {pool:?}"
    );
}

/// A user's function returns `std::io::Result` and awaits a handle with `?`, as they do
/// with tokio's `JoinHandle` (`impl From<JoinError> for io::Error`). The error that comes
/// out says why the task failed and holds the task error, so the caller can still tell a
/// panic (with its payload) from a cancellation.
#[test]
fn a_task_error_converts_to_an_io_error_that_keeps_it() {
    async fn run(handle: TaskHandle<u32>) -> std::io::Result<u32> {
        Ok(handle.await?)
    }
    support::current_thread().block_on(async {
        let pool = CommonAioPool::new(1, 1);
        let ok = pool.submit(async { 7u32 }).await.unwrap();
        assert_eq!(
            run(ok).await.unwrap(),
            7,
            "a task's value comes through `?`"
        );

        let boom = pool.submit(async { panic!("boom") }).await.unwrap();
        let err = run(boom).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::Other);
        assert!(
            err.to_string().contains("the task panicked: boom"),
            "the io error should say the task panicked, and why: {err}"
        );
        let inner = err.into_inner().expect("the io error holds the task error");
        let task_err = inner.downcast::<TaskError>().expect("it is the TaskError");
        let payload = task_err.into_panic();
        assert_eq!(
            payload.downcast_ref::<&str>(),
            Some(&"boom"),
            "the panic's payload is kept"
        );

        let aborted = pool.submit(std::future::pending::<u32>()).await.unwrap();
        aborted.abort();
        let err = run(aborted).await.unwrap_err();
        let reason = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<TaskError>())
            .and_then(TaskError::cancel_reason);
        assert_eq!(
            reason,
            Some(CancelReason::Aborted),
            "a cancellation keeps its reason"
        );
    });
}
