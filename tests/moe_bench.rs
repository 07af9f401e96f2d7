//! Runs the A/B harness (`src/bin/moe_bench.rs`) on
//! the demo model with N=3 and a few tokens, and checks its JSON for every
//! field and for internal consistency.

use llama_safe::demo::{DemoModel, DEMO_CONTINUATION, DEMO_PROMPT};
use llama_safe::{LlamaBackend, LlamaModel, LlamaModelParams};
use llama_workspace::bench::report::Report;
use llama_workspace::bench::Summary;
use sha2::{Digest, Sha256};
use std::process::Command;

fn check_summary(s: &Summary, n: usize, what: &str) {
    assert_eq!(s.n, n, "{what}");
    assert!(
        s.min <= s.mean + 1e-9 && s.mean <= s.max + 1e-9,
        "{what}: {s:?}"
    );
    assert!(s.sd >= 0.0 && s.sd.is_finite(), "{what}: {s:?}");
}

#[test]
fn harness_json_is_complete_and_consistent() {
    let model_path = DemoModel::Moe.cached().unwrap();
    let out = std::env::temp_dir().join(format!("moe-bench-test-{}", std::process::id()));
    let mut configs = vec!["baseline", "cpu-moe", "n-cpu-moe=2"];
    let have_c = option_env!("LLAMA_C_GREEDY").is_some();
    if have_c {
        configs.push("c");
    }
    let max_tokens = 6u32;
    let status = Command::new(env!("CARGO_BIN_EXE_moe_bench"))
        .args(["--runs", "3", "--warmup", "1", "--threads", "1"])
        .args(["--max-tokens", &max_tokens.to_string()])
        .args(["--configs", &configs.join(",")])
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run moe_bench");
    assert!(status.success());

    let json = std::fs::read_to_string(out.join("bench.json")).unwrap();
    let report: Report = serde_json::from_str(&json).expect("every field present and typed");
    let raw: serde_json::Value = serde_json::from_str(&json).unwrap();
    for key in ["meta", "runs", "summaries", "overhead"] {
        assert!(raw.get(key).is_some(), "missing {key}");
    }

    // Meta: what ran, where.
    let m = &report.meta;
    let bytes = std::fs::read(&model_path).unwrap();
    assert_eq!(m.model_sha256, format!("{:x}", Sha256::digest(&bytes)));
    assert_eq!(m.model_bytes, bytes.len() as u64);
    assert_eq!(
        (m.runs, m.warmup, m.threads, m.max_tokens),
        (3, 1, 1, max_tokens)
    );
    assert!(m.cores >= 1 && !m.cpu.is_empty() && !m.llama_cpp_revision.is_empty());
    assert_eq!(m.prompt, DEMO_PROMPT);

    // Runs: interleaved, exact token counts, rates from the times.
    let backend = LlamaBackend::init();
    let model = LlamaModel::load(&backend, &model_path, &LlamaModelParams::default()).unwrap();
    let prompt_tokens = model
        .tokenize(DEMO_PROMPT, llama_safe::Tokenize::CHAT)
        .unwrap()
        .len();
    let whole = model
        .tokenize(
            &format!("{DEMO_PROMPT}{DEMO_CONTINUATION}"),
            llama_safe::Tokenize::PROMPT,
        )
        .unwrap();
    assert_eq!(report.runs.len(), 3 * configs.len());
    for (i, run) in report.runs.iter().enumerate() {
        assert_eq!(
            run.config,
            configs[i % configs.len()],
            "runs are interleaved"
        );
        assert_eq!(run.prompt_tokens, prompt_tokens);
        match run.stop.as_str() {
            "MaxTokens" => assert_eq!(run.generated_tokens, max_tokens as usize),
            "EndOfGeneration" => assert!(run.generated_tokens < max_tokens as usize),
            other => panic!("unexpected stop {other}"),
        }
        // The text is exactly the first `generated_tokens` greedy tokens.
        let expected = &whole[prompt_tokens..prompt_tokens + run.generated_tokens];
        assert_eq!(
            run.text,
            model.detokenize(expected).unwrap(),
            "{}",
            run.config
        );
        let rel = |a: f64, b: f64| (a - b).abs() <= 1e-6 * a.abs().max(1.0);
        assert!(rel(
            run.prompt_tps,
            run.prompt_tokens as f64 * 1e3 / run.prompt_ms
        ));
        assert!(rel(
            run.generation_tps,
            run.generated_tokens as f64 * 1e3 / run.generation_ms
        ));
        assert!(run.load_ms > 0.0 && run.ttft_ms >= run.prompt_ms);
        assert!(run.peak_rss_bytes.is_some_and(|b| b > 1 << 20));
    }

    // Summaries: one per configuration, means within min and max.
    assert_eq!(report.summaries.len(), configs.len());
    let total: u64 = report.summaries[0].buffers.values().sum();
    for (s, name) in report.summaries.iter().zip(&configs) {
        assert_eq!(&s.config, name);
        for (what, sum) in [
            ("load", &s.load_ms),
            ("ttft", &s.ttft_ms),
            ("prompt", &s.prompt_tps),
            ("generation", &s.generation_tps),
        ] {
            check_summary(sum, 3, what);
        }
        check_summary(s.peak_rss_mib.as_ref().unwrap(), 3, "rss");
        if *name != "c" {
            assert_eq!(
                s.buffers.values().sum::<u64>(),
                total,
                "same weights, placed differently"
            );
        }
    }
    let moved: Vec<usize> = report.summaries.iter().map(|s| s.moved_tensors).collect();
    assert_eq!(&moved[..3], &[0, 12, 6]);

    match (&report.overhead, have_c) {
        (Some(o), true) => {
            check_summary(&o.generation_tps_ratio, 3, "ratio");
            check_summary(&o.load_ms_ratio, 3, "load ratio");
        }
        (None, false) => {}
        (o, c) => panic!("overhead {o:?} with C built: {c}"),
    }

    let md = std::fs::read_to_string(out.join("bench.md")).unwrap();
    let svg = std::fs::read_to_string(out.join("bench.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for name in &configs {
        assert!(md.contains(&format!("| {name} |")), "{md}");
        assert!(svg.contains(&format!(">{name}</text>")));
    }
    let _ = std::fs::remove_dir_all(&out);
}
