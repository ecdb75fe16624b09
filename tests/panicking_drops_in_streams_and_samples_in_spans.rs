//! Findings 355–356 of RELIABILITY.md, from a read-only review of 351–354 and the
//! observability trims (3a1c663): a map stream dropped with results buffered drops them
//! quietly (352's rule), and a completed task's run-time sample is recorded inside its
//! span, as other ends' are.

mod support;

#[cfg(feature = "tracing")]
mod collector;
#[cfg(all(feature = "tracing", feature = "metrics"))]
mod metric_figures;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use nb_aiopool::CommonAioPool;

use support::{current_thread, serial};

// ----- 352's mechanism: a stored output whose Drop panics ------------------------------------

/// An output whose `Drop` panics once armed.
struct Bomb(Arc<AtomicBool>);

impl Drop for Bomb {
    fn drop(&mut self) {
        if self.0.load(Ordering::SeqCst) {
            panic!("review_rofix3 bomb");
        }
    }
}

/// Inside a job of `pool`, maps `bombs + 1` inputs with `map_ordered`: input 0 never ends,
/// the others end at once and wait in the stream's buffer (an ordered stream polled in its
/// own pool polls its tasks together); then drops the stream with their outputs armed.
/// Returns whether the drop panicked.
fn drop_an_ordered_stream_holding(pool: &CommonAioPool, bombs: u32) -> bool {
    let armed = Arc::new(AtomicBool::new(false));
    let escaped = current_thread().block_on(async {
        let p = pool.clone();
        let a = armed.clone();
        let outer = pool
            .submit(async move {
                let gate = Arc::new(tokio::sync::Notify::new());
                let g = gate.clone();
                let a2 = a.clone();
                let inputs = futures_util::stream::iter(0..=bombs);
                let mut stream = p.map_ordered(inputs, move |i| {
                    let g = g.clone();
                    let a = a2.clone();
                    async move {
                        if i == 0 {
                            g.notified().await; // never notified: stays first
                        }
                        Bomb(a)
                    }
                });
                let first = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
                assert!(first.is_err(), "input 0 never ends: nothing is yielded");
                a.store(true, Ordering::SeqCst);
                let escaped =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(stream)))
                        .is_err();
                a.store(false, Ordering::SeqCst);
                drop(gate);
                escaped
            })
            .await
            .unwrap();
        support::within("the outer job", outer).await.unwrap()
    });
    armed.store(false, Ordering::SeqCst);
    escaped
}

fn pool_of_four() -> CommonAioPool {
    CommonAioPool::builder()
        .max_concurrency(4)
        .max_queue_size(16)
        .process_wide(false)
        .build()
}

/// The user maps a stream with `map_ordered` inside a job of the same pool (a job fanning
/// out its own work), polls it once, and drops it before the slow first input's result
/// came: the second input's result, finished out of order, waits in the stream's buffer.
/// `TaskHandle`'s docs (352): "A result whose `Drop` panics is dropped quietly (the panic
/// hook shows the panic), wherever it is dropped, by the handle too ...: the submit, the
/// slot it ran in, or the code that dropped or detached the handle goes on"; a
/// `TaskGroup` drops what it holds quietly too (`Gathered`, `drop_handles`). The stream's
/// `buffer` was dropped by plain drop glue: the panic came out of `drop(stream)` into the
/// caller. What happened: "dropping an ordered stream that held a finished result out of
/// order let that result's panicking Drop out into the caller".
#[test]
fn an_ordered_stream_dropped_with_a_buffered_result_drops_it_quietly() {
    let _serial = serial();
    support::hide_panics(&["review_rofix3 bomb"]);
    let pool = pool_of_four();
    let escaped = drop_an_ordered_stream_holding(&pool, 1);
    assert!(
        !escaped,
        "dropping an ordered stream that held a finished result out of order let that \
         result's panicking Drop out into the caller"
    );
    current_thread().block_on(pool.shutdown());
}

/// As above with two such results buffered (in a child process): the user expects the
/// drop to go on (the same docs); the second panic came during the first one's unwinding
/// (the buffer's drop glue goes on dropping) and aborted the process. What happened:
/// "the child died (code Some(-1)) dropping an ordered stream holding two panicking
/// results", its stderr "panic in a destructor during cleanup".
#[test]
fn an_ordered_stream_dropped_with_two_buffered_results_does_not_abort_the_process() {
    let child = support::run_child("two_buffered", 60);
    let _ = std::fs::remove_dir_all(&child.dir);
    assert_eq!(
        child.code,
        Some(0),
        "the child died (code {:?}) dropping an ordered stream holding two panicking \
         results; stderr: {}",
        child.code,
        support::stderr_head(&child.stderr)
    );
}

/// The child process of the test above.
#[test]
#[ignore = "run by the test above, in a child process"]
fn child() {
    let (scenario, _dir) = support::child_scenario();
    assert_eq!(scenario, "two_buffered");
    support::hide_panics(&["review_rofix3 bomb"]);
    let pool = pool_of_four();
    let escaped = drop_an_ordered_stream_holding(&pool, 2);
    current_thread().block_on(pool.shutdown());
    let _ = escaped; // the process surviving is what the parent checks
}

/// The same result held by the unordered stream's handles (none buffered): dropped quietly,
/// as 352 says. A pin of what holds, beside the ordered stream's case above.
#[test]
fn an_unordered_stream_dropped_with_a_finished_result_drops_it_quietly() {
    let _serial = serial();
    support::hide_panics(&["review_rofix3 bomb"]);
    let armed = Arc::new(AtomicBool::new(false));
    let pool = CommonAioPool::builder()
        .max_concurrency(4)
        .max_queue_size(16)
        .process_wide(false)
        .build();
    let escaped = current_thread().block_on(async {
        let a = armed.clone();
        let gate = Arc::new(tokio::sync::Notify::new());
        let g = gate.clone();
        let mut stream = pool.map_unordered(futures_util::stream::iter(0..3u32), move |i| {
            let g = g.clone();
            let a = a.clone();
            async move {
                if i == 0 {
                    g.notified().await;
                }
                Bomb(a)
            }
        });
        // Yield one result (dropped unarmed) and let another finish unyielded.
        let one = support::within("one result", stream.next()).await;
        drop(one);
        tokio::time::sleep(Duration::from_millis(100)).await;
        armed.store(true, Ordering::SeqCst);
        let escaped =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(stream))).is_err();
        armed.store(false, Ordering::SeqCst);
        drop(gate);
        escaped
    });
    assert!(
        !escaped,
        "the unordered stream's drop let a result's panic out"
    );
    current_thread().block_on(pool.shutdown());
}

// ----- the observability trims: the run-time sample's span -----------------------------------

#[cfg(all(feature = "tracing", feature = "metrics"))]
mod in_span {
    use super::*;
    use std::sync::Mutex;

    /// A recorder that notes, for each run-time sample, the name of the span current when
    /// it was recorded (what `metrics-tracing-context`'s layer reads to label a sample with
    /// the span's fields).
    #[derive(Clone, Default)]
    pub struct SpanOfSamples(pub Arc<Mutex<Vec<String>>>);

    struct Hist(String, SpanOfSamples);

    impl metrics::HistogramFn for Hist {
        fn record(&self, _value: f64) {
            if self.0 == "nb_aiopool_run_time_seconds" {
                let span = tracing::Span::current();
                let name = span.metadata().map_or("none", |m| m.name()).to_string();
                self.1 .0.lock().unwrap().push(name);
            }
        }
    }

    impl metrics::Recorder for SpanOfSamples {
        super::metric_figures::no_descriptions!();
        fn register_counter(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            metrics::Counter::noop()
        }
        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::from_arc(Arc::new(Hist(key.name().to_string(), self.clone())))
        }
    }
}

/// The user runs both features with a recorder that labels samples from the current
/// tracing span (as `metrics-tracing-context` does) and a subscriber. Before 3a1c663 every
/// started task's end was reported inside its span (`report_end`: `let _span =
/// obs.enter();`; `Observer::ended`'s docs said "Called outside the lock, inside the
/// task's span"), so its `nb_aiopool_run_time_seconds` sample was recorded there, whatever
/// the outcome. The trim enters the span only for the ends that have an event: a completed
/// task's sample is now recorded outside its span, a panicked one's inside. What happened:
/// `left: ["none", "task"]`, `right: ["task", "task"]` (completed, panicked).
#[cfg(all(feature = "tracing", feature = "metrics"))]
#[test]
fn a_completed_tasks_run_time_sample_is_recorded_in_its_span_as_a_panicked_ones() {
    let _serial = serial();
    support::hide_panics(&["review_rofix3 bomb"]);
    let log = collector::Collector::default();
    let samples = in_span::SpanOfSamples::default();
    tracing::subscriber::with_default(log.clone(), || {
        metrics::with_local_recorder(&samples, || {
            let pool = CommonAioPool::builder()
                .max_concurrency(1)
                .max_queue_size(4)
                .name("rofix3-span")
                .process_wide(false)
                .build();
            current_thread().block_on(async {
                pool.submit(async {}).await.unwrap().await.unwrap();
                let h = pool
                    .submit(async { panic!("review_rofix3 bomb") })
                    .await
                    .unwrap();
                assert!(h.await.unwrap_err().is_panic());
                pool.shutdown().await;
            });
        })
    });
    let seen = samples.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        ["task", "task"],
        "the run-time samples of a completed and a panicked task, by the span current \
         when each was recorded"
    );
}

// ----- 351: a window that does end, only not within the process's life ----------------------
