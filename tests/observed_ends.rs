//! Findings 89–90 of RELIABILITY.md, found on f940983 by a review of findings 77–88: the
//! end of a task is reported once, in the task's span. Each test failed there (89 was a
//! regression of 5933dc0). Needs the `tracing` feature: `cargo test -p nb-aiopool
//! --all-features --test observed_ends` (CI runs it so).

#![cfg(feature = "tracing")]
#![allow(dead_code, unused_imports)]
// A `block_on` block hands back a handle, to await on another runtime.
#![allow(clippy::async_yields_async)]

mod support;

use std::time::Duration;

use nb_aiopool::{CommonAioPool, SmartAioPool};

use support::serial;

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[cfg(feature = "tracing")]
mod collector;

#[cfg(feature = "tracing")]
mod with_tracing {
    use nb_aiopool::{CancelReason, CommonAioPool};

    use super::{current_thread, serial};
    use crate::collector::{Collector, EventRec};

    /// Crate docs: `task cancelled` is emitted "inside the task's span, or with a `task_id`
    /// field for a task cancelled before it started". A task that started and is then
    /// dropped with its runtime is reported by `Slot::drop` (src/engine/slot.rs, `told` ->
    /// `observer().cancelled(id, reason)`) outside its span (the span is only dropped with
    /// the slot), and `Observer::ended` is never called for it (no run-time histogram
    /// sample either). Pre-existing (not changed by 5933dc0, which moved the other ends to
    /// `report_end`).
    #[test]
    fn a_started_task_cancelled_by_its_runtimes_end_is_reported_in_its_span() {
        let _serial = serial();
        let log = Collector::default();
        tracing::subscriber::with_default(log.clone(), || {
            let pool = CommonAioPool::builder()
                .max_concurrency(1)
                .name("r6-dying")
                .process_wide(false)
                .build();
            let rt = current_thread();
            let handle = rt.block_on(async {
                let h = pool.submit(std::future::pending::<()>()).await.unwrap();
                tokio::task::yield_now().await; // it starts
                h
            });
            assert_eq!(pool.stats().running, 1);
            drop(rt);
            let err = futures_util::FutureExt::now_or_never(handle)
                .expect("resolved")
                .unwrap_err();
            assert_eq!(err.cancel_reason(), Some(CancelReason::RuntimeShutdown));
            let events = log.events_with("task cancelled");
            assert_eq!(events.len(), 1, "{events:?}");
            let e = &events[0];
            assert_eq!(e.fields.get("reason"), Some("runtime_shutdown"));
            assert_eq!(
                e.span_fields.as_ref().and_then(|f| f.get("task_id")),
                Some("0"),
                "a started task's cancellation is not inside its span: {e:?}"
            );
        });
    }
}

// ----- the exit take-over (child processes) -------------------------------------------------

/// A subscriber for a child process: appends each `task cancelled` event (its reason,
/// `task_id` field and whether it was inside a span) to a file as it happens.
#[cfg(feature = "tracing")]
mod file_log {
    use std::cell::RefCell;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    thread_local! {
        static STACK: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    }

    #[derive(Default)]
    struct Fields(Vec<(String, String)>);

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push((field.name().into(), format!("{value:?}")));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push((field.name().into(), value.into()));
        }
    }

    impl Fields {
        fn get(&self, name: &str) -> String {
            self.0
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        }
    }

    pub struct FileLog {
        pub path: PathBuf,
        pub next: AtomicU64,
    }

    impl Subscriber for FileLog {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(self.next.fetch_add(1, Ordering::Relaxed) + 1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut f = Fields::default();
            event.record(&mut f);
            if !f.get("message").contains("task cancelled") {
                return;
            }
            let in_span = event.parent().is_some()
                || (event.is_contextual() && STACK.with(|s| !s.borrow().is_empty()));
            let line = format!(
                "reason={} task_id={} in_span={in_span}",
                f.get("reason"),
                f.get("task_id")
            );
            crate::support::append(&self.path, &line);
        }
        fn enter(&self, span: &Id) {
            STACK.with(|s| s.borrow_mut().push(span.into_u64()));
        }
        fn exit(&self, span: &Id) {
            STACK.with(|s| {
                let mut s = s.borrow_mut();
                if let Some(p) = s.iter().rposition(|x| *x == span.into_u64()) {
                    s.remove(p);
                }
            });
        }
    }
}

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let (scenario, dir) = support::child_scenario();
    match scenario.as_str() {
        // A Smart task busy in one poll on a worker thread for longer than the exit
        // take-over waits (EXIT_POLL_WAIT, 5 s): the take-over gives it up (`lose`:
        // cancelled, RuntimeShutdown); its poll ends later, while another task's re-run
        // keeps the exit hook going.
        #[cfg(feature = "tracing")]
        "stuck-past-the-wait" => {
            tracing::subscriber::set_global_default(file_log::FileLog {
                path: dir.join("events"),
                next: Default::default(),
            })
            .unwrap();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let pool = SmartAioPool::builder()
                    .name("stuck")
                    .max_concurrency(2)
                    .build();
                let d = dir.clone();
                pool.submit(move || {
                    let d = d.clone();
                    async move {
                        support::append(&d.join("a-start"), "start");
                        std::thread::sleep(Duration::from_millis(5800));
                        support::append(&d.join("a-done"), "done");
                    }
                })
                .await
                .unwrap()
                .detach();
                let d = dir.clone();
                pool.submit(move || {
                    let d = d.clone();
                    async move {
                        let again = !support::lines(&d.join("b-start")).is_empty();
                        support::append(&d.join("b-start"), "start");
                        if !again {
                            std::future::pending::<()>().await;
                        }
                        // The re-run at exit: until the stuck poll has ended and reported.
                        while support::lines(&d.join("a-done")).is_empty() {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                })
                .await
                .unwrap()
                .detach();
                while support::lines(&dir.join("a-start")).is_empty()
                    || support::lines(&dir.join("b-start")).is_empty()
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                std::process::exit(0);
            });
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// Crate docs: one `task cancelled` event per cancellation `PoolStats` counts, with the
/// reason counted. A run the exit take-over gives up (busy in one poll past
/// EXIT_POLL_WAIT) is counted cancelled with `runtime_shutdown` (`lose` in
/// `Engine::take_over`; its event names task_id 0). When that poll ends, its stale slot
/// (`Slot::finish`, the generation branch, src/engine/slot.rs) publishes: the handle was
/// decided already, so `publish_locked` (src/task/run.rs) turns the outcome into
/// `Cancelled(abort_reason())` = `Aborted` though nobody aborted, and 5933dc0's
/// `report_end` reports that decided outcome: a second `task cancelled`, reason
/// `aborted`, for a task counted once (and not aborted). Before 5933dc0 the poll's own
/// outcome (Completed) was reported: no event.
#[cfg(feature = "tracing")]
#[test]
fn a_run_given_up_by_the_exit_take_over_is_reported_cancelled_once() {
    let c = support::run_child("stuck-past-the-wait", 9);
    let events = support::lines(&c.dir.join("events"));
    let done = support::lines(&c.dir.join("a-done"));
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "child: {:?}\nstderr: {}", c.code, c.stderr);
    assert!(
        c.stderr.contains("still running at the process exit"),
        "the take-over did not give the run up; stderr: {}",
        c.stderr
    );
    assert_eq!(done.len(), 1, "the stuck poll ended before the exit");
    assert_eq!(
        events,
        ["reason=runtime_shutdown task_id=0 in_span=false"],
        "one cancellation counted (runtime_shutdown)"
    );
}
