//! With the `tracing` feature: spans for load, decode and generation, and
//! llama.cpp's log lines as events inside them. Its own test binary: it
//! installs a process-wide subscriber.
#![cfg(feature = "tracing")]

mod common;

use common::*;
use llama_safe::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Records span names and (span, event target) pairs.
#[derive(Default)]
struct Recorder {
    next: AtomicU64,
    spans: Mutex<Vec<(u64, String)>>,
    stack: Mutex<Vec<u64>>,
    events: Mutex<Vec<(Option<String>, String)>>,
}

/// The subscriber installed; the test keeps another handle to read it.
struct Shared(Arc<Recorder>);

impl Subscriber for Shared {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.0.next.fetch_add(1, Ordering::SeqCst) + 1;
        self.0
            .spans
            .lock()
            .unwrap()
            .push((id, attrs.metadata().name().to_string()));
        Id::from_u64(id)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let current = self.0.stack.lock().unwrap().last().copied();
        let span = current.and_then(|id| {
            self.0
                .spans
                .lock()
                .unwrap()
                .iter()
                .find(|(i, _)| *i == id)
                .map(|(_, n)| n.clone())
        });
        self.0
            .events
            .lock()
            .unwrap()
            .push((span, event.metadata().target().to_string()));
    }
    fn enter(&self, id: &Id) {
        self.0.stack.lock().unwrap().push(id.into_u64());
    }
    fn exit(&self, _: &Id) {
        self.0.stack.lock().unwrap().pop();
    }
}

#[test]
fn load_decode_and_generate_have_spans_and_llama_cpp_logs_are_events() {
    let recorder = Arc::new(Recorder::default());
    tracing::subscriber::set_global_default(Shared(recorder.clone())).unwrap();
    let model = LlamaModel::load(&LlamaBackend::init(), moe_path(), &Default::default()).unwrap();
    assert_eq!(
        greedy_text(&model, demo::DEMO_PROMPT),
        demo::DEMO_CONTINUATION
    );
    let spans: Vec<String> = recorder
        .spans
        .lock()
        .unwrap()
        .iter()
        .map(|(_, n)| n.clone())
        .collect();
    for name in ["llama_load", "llama_decode", "llama_generate"] {
        assert!(
            spans.iter().any(|s| s == name),
            "no {name} span in {spans:?}"
        );
    }
    let events = recorder.events.lock().unwrap();
    assert!(
        events
            .iter()
            .any(|(span, target)| target == "llama_cpp" && span.as_deref() == Some("llama_load")),
        "no llama.cpp event inside llama_load: {events:?}"
    );
}
