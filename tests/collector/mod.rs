//! A recording tracing subscriber shared by the integration tests that check the `tracing`
//! feature's spans and events (included with `#[cfg(feature = "tracing")] mod collector;`).
//!
//! It keeps every span (name, fields, parent, references) and every event (level, fields,
//! the span it was emitted in), and can probe whether it is called under a pool's lock.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nb_aiopool::PoolStats;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// The fields of a span or an event, by name, as text.
#[derive(Default, Debug, Clone)]
pub struct Fields(pub HashMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.to_string());
    }
}

impl Fields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// A span as recorded.
#[derive(Debug, Clone)]
pub struct SpanRec {
    pub meta: &'static Metadata<'static>,
    pub fields: Fields,
    pub parent: Option<u64>,
    /// Handles to the span not closed yet (`clone_span` adds one, `try_close` takes one).
    pub refs: usize,
    /// Times it was entered and left.
    pub enters: usize,
    pub exits: usize,
}

/// An event as recorded: its level, its fields, the span it was emitted in (its explicit
/// parent, else the span current then unless it is a root) and that span's fields.
#[derive(Debug, Clone)]
pub struct EventRec {
    pub level: Level,
    pub fields: Fields,
    pub span: Option<u64>,
    pub span_fields: Option<Fields>,
}

/// Reads a pool's stats; see [`Collector::probe`].
type StatsFn = Arc<dyn Fn() -> PoolStats + Send + Sync>;

#[derive(Default)]
struct Log {
    spans: Mutex<HashMap<u64, SpanRec>>,
    /// (level, fields, span)
    events: Mutex<Vec<(Level, Fields, Option<u64>)>>,
    next: AtomicU64,
    /// While set: `try_close` and `current_span` read the pool's stats from another thread
    /// and count the calls for which that read was blocked (made under the pool's lock).
    probe: Mutex<Option<StatsFn>>,
    closes_under_lock: AtomicUsize,
    currents_under_lock: AtomicUsize,
}

/// A subscriber that keeps every span and event; clones share the record.
#[derive(Clone, Default)]
pub struct Collector(Arc<Log>);

thread_local! {
    /// The spans entered on this thread, innermost last (as a `Registry` keeps them), each
    /// with the collector it is of (collectors number their spans each from 1).
    static STACK: std::cell::RefCell<Vec<(usize, u64)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Collector {
    /// Names this collector in [`STACK`].
    fn key(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// The innermost span of this collector entered on this thread (none once the
    /// thread's locals are being destroyed).
    fn current(&self) -> Option<u64> {
        STACK
            .try_with(|s| {
                let stack = s.borrow();
                stack
                    .iter()
                    .rev()
                    .find(|(c, _)| *c == self.key())
                    .map(|&(_, id)| id)
            })
            .ok()
            .flatten()
    }

    /// The parent of a new span or event: the explicit one, else the current span if the
    /// parent is contextual, else none (a root).
    fn parent(&self, explicit: Option<&Id>, contextual: bool) -> Option<u64> {
        match explicit {
            Some(p) => Some(p.into_u64()),
            None if contextual => self.current(),
            None => None,
        }
    }

    /// The span `id`: its name, fields and parent.
    pub fn span(&self, id: u64) -> (String, Fields, Option<u64>) {
        let spans = self.0.spans.lock().unwrap();
        let s = &spans[&id];
        (s.meta.name().to_string(), s.fields.clone(), s.parent)
    }

    /// The events whose message contains `message`, in order, with their span's fields.
    pub fn events_with(&self, message: &str) -> Vec<EventRec> {
        self.events_where(|f| f.get("message").is_some_and(|m| m.contains(message)))
    }

    /// The events of pool `pool` (their `pool` field), in order, with their span's fields.
    pub fn events_of(&self, pool: &str) -> Vec<EventRec> {
        self.events_where(|f| f.get("pool") == Some(pool))
    }

    fn events_where(&self, keep: impl Fn(&Fields) -> bool) -> Vec<EventRec> {
        let spans = self.0.spans.lock().unwrap();
        self.0
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, f, _)| keep(f))
            .map(|(level, fields, span)| EventRec {
                level: *level,
                fields: fields.clone(),
                span: *span,
                span_fields: span.and_then(|s| spans.get(&s).map(|x| x.fields.clone())),
            })
            .collect()
    }

    /// The `task` spans of pool `pool`, by the `task_id` they carry (a SmartAioPool task run
    /// again has one per run).
    pub fn task_spans(&self, pool: &str) -> HashMap<u64, Vec<SpanRec>> {
        let mut out: HashMap<u64, Vec<SpanRec>> = HashMap::new();
        for s in self.0.spans.lock().unwrap().values() {
            if s.meta.name() == "task" && s.fields.get("pool") == Some(pool) {
                let id = s.fields.get("task_id").expect("a task_id").parse().unwrap();
                out.entry(id).or_default().push(s.clone());
            }
        }
        out
    }

    /// The fields of the `task` spans not closed yet.
    pub fn open_task_spans(&self) -> Vec<Fields> {
        self.0
            .spans
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.meta.name() == "task" && s.refs > 0)
            .map(|s| s.fields.clone())
            .collect()
    }

    /// Starts probing with `stats` (a read of the pool's stats): from now until
    /// [`stop_probe`](Self::stop_probe), each `try_close` and `current_span` call checks
    /// whether it runs under the pool's lock.
    pub fn probe(&self, stats: impl Fn() -> PoolStats + Send + Sync + 'static) {
        *self.0.probe.lock().unwrap() = Some(Arc::new(stats));
    }

    /// Stops probing.
    pub fn stop_probe(&self) {
        *self.0.probe.lock().unwrap() = None;
    }

    /// The `try_close` calls the probe found under the pool's lock.
    pub fn closes_under_lock(&self) -> usize {
        self.0.closes_under_lock.load(Ordering::SeqCst)
    }

    /// The `current_span` calls the probe found under the pool's lock.
    pub fn currents_under_lock(&self) -> usize {
        self.0.currents_under_lock.load(Ordering::SeqCst)
    }

    /// All the calls the probe found under the pool's lock.
    pub fn under_lock(&self) -> usize {
        self.closes_under_lock() + self.currents_under_lock()
    }

    /// While probing: whether reading the pool's stats from another thread is blocked for
    /// 2 s (the subscriber was called under the pool's lock).
    fn probe_is_blocked(&self) -> bool {
        let Some(probe) = self.0.probe.lock().unwrap().clone() else {
            return false;
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(probe());
        });
        rx.recv_timeout(Duration::from_secs(2)).is_err()
    }
}

impl Subscriber for Collector {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let parent = self.parent(attrs.parent(), attrs.is_contextual());
        let rec = SpanRec {
            meta: attrs.metadata(),
            fields,
            parent,
            refs: 1,
            enters: 0,
            exits: 0,
        };
        self.0.spans.lock().unwrap().insert(id, rec);
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some(s) = self.0.spans.lock().unwrap().get_mut(&span.into_u64()) {
            values.record(&mut s.fields);
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let span = self.parent(event.parent(), event.is_contextual());
        self.0
            .events
            .lock()
            .unwrap()
            .push((*event.metadata().level(), fields, span));
    }

    fn enter(&self, span: &Id) {
        let _ = STACK.try_with(|s| s.borrow_mut().push((self.key(), span.into_u64())));
        if let Some(s) = self.0.spans.lock().unwrap().get_mut(&span.into_u64()) {
            s.enters += 1;
        }
    }

    fn exit(&self, span: &Id) {
        let entry = (self.key(), span.into_u64());
        let _ = STACK.try_with(|s| {
            let mut stack = s.borrow_mut();
            if let Some(pos) = stack.iter().rposition(|e| *e == entry) {
                stack.remove(pos);
            }
        });
        if let Some(s) = self.0.spans.lock().unwrap().get_mut(&span.into_u64()) {
            s.exits += 1;
        }
    }

    fn clone_span(&self, id: &Id) -> Id {
        if let Some(s) = self.0.spans.lock().unwrap().get_mut(&id.into_u64()) {
            s.refs += 1;
        }
        id.clone()
    }

    fn try_close(&self, id: Id) -> bool {
        if self.probe_is_blocked() {
            self.0.closes_under_lock.fetch_add(1, Ordering::SeqCst);
        }
        let mut spans = self.0.spans.lock().unwrap();
        match spans.get_mut(&id.into_u64()) {
            Some(s) => {
                s.refs -= 1;
                s.refs == 0
            }
            None => false,
        }
    }

    fn current_span(&self) -> tracing_core::span::Current {
        if self.probe_is_blocked() {
            self.0.currents_under_lock.fetch_add(1, Ordering::SeqCst);
        }
        match self.current() {
            Some(id) => {
                let meta = self.0.spans.lock().unwrap()[&id].meta;
                tracing_core::span::Current::new(Id::from_u64(id), meta)
            }
            None => tracing_core::span::Current::none(),
        }
    }
}
