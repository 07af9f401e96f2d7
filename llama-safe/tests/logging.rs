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
    let model = LlamaModel::load(
        &backend,
        common::moe_path(),
        &LlamaModelParams::default().with_n_cpu_moe(1),
    )
    .unwrap();
    let lines = LINES.lock().unwrap();
    // The placement (the plan's matching, the buffers read from the model)
    // agrees with the loader's own record of the load, which it no longer
    // parses: the tensors it logged as overridden, to which buffer type, and
    // its buffer sizes (to the 0.01 MiB it logs).
    let logged_moves: std::collections::BTreeSet<(String, String)> = lines
        .iter()
        .filter_map(|(_, _, t)| {
            let rest = t.trim().strip_prefix("tensor ")?;
            let (name, rest) = rest.split_once(" (")?;
            let (_, buft) = rest.split_once(") buffer type overridden to ")?;
            Some((name.to_string(), buft.trim().to_string()))
        })
        .collect();
    let placed: std::collections::BTreeSet<(String, String)> = model
        .placement()
        .moved
        .iter()
        .map(|t| (t.name.clone(), t.buffer_type.clone()))
        .collect();
    // The same tensors; the type each landed in is the one the loader
    // chose, or its mapped-file form (`CPU` → `CPU_Mapped`).
    let names = |set: &std::collections::BTreeSet<(String, String)>| {
        set.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
    };
    assert_eq!(names(&placed), names(&logged_moves));
    for ((_, landed), (_, chosen)) in placed.iter().zip(&logged_moves) {
        assert!(landed.starts_with(chosen.as_str()), "{landed} vs {chosen}");
    }
    let logged_buffers: Vec<(String, f64)> = lines
        .iter()
        .filter_map(|(_, _, t)| {
            let rest = t.trim().strip_prefix("load_tensors:")?;
            let (name, mib) = rest.split_once(" model buffer size = ")?;
            let mib = mib.trim().strip_suffix("MiB")?.trim().parse().ok()?;
            Some((name.trim().to_string(), mib))
        })
        .collect();
    let buffers = &model.placement().buffers;
    assert_eq!(
        buffers.len(),
        logged_buffers.len(),
        "{buffers:?} vs {logged_buffers:?}"
    );
    for (name, mib) in logged_buffers {
        let b = buffers
            .iter()
            .find(|b| b.name == name)
            .expect("the logged buffer");
        assert!(
            (b.bytes as f64 / 1048576.0 - mib).abs() <= 0.005,
            "{b:?} vs {mib} MiB"
        );
    }
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
