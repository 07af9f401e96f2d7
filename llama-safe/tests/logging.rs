//! llama.cpp's log reaches the `log` crate with target `llama_cpp` and mapped
//! levels. Its own test binary, since the logger is process-wide.

mod common;

use llama_safe::*;
use std::sync::Mutex;

static LINES: Mutex<Vec<(log::Level, String, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        LINES.lock().unwrap().push((
            record.level(),
            record.target().to_string(),
            record.args().to_string(),
        ));
    }
    fn flush(&self) {}
}

#[test]
fn llama_cpp_lines_go_to_the_log_crate() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let backend = LlamaBackend::init();
    let _model = LlamaModel::load(
        &backend,
        common::moe_path(),
        &LlamaModelParams::default().with_n_cpu_moe(1),
    )
    .unwrap();
    let lines = LINES.lock().unwrap();
    assert!(lines.iter().all(|(_, target, _)| target == logging::TARGET));
    assert!(lines
        .iter()
        .any(|(l, _, t)| *l == log::Level::Info && t.contains("model buffer size")));
    assert!(lines
        .iter()
        .any(|(l, _, t)| *l == log::Level::Debug && t.contains("buffer type overridden")));
    assert!(
        lines.iter().all(|(_, _, t)| !t.contains('\n')),
        "one record per line"
    );
}
