//! A deterministic corpus of mutated demo models, each planned, loaded and
//! run for a few tokens in a child process, so that an abort inside
//! llama.cpp is counted instead of ending the test run.
//!
//! Pass: no child dies of a signal, none hangs, and `plan()` accepts exactly
//! the mutants `load()` accepts. `MUTANTS_REPORT=1` prints every mutant's
//! outcome; `MUTANTS_ONLY=i` runs one mutant in this process (for a
//! debugger).

mod common;
#[path = "common/gguf_layout.rs"]
#[allow(dead_code)]
mod gguf_layout;

use gguf_layout::{string_array_items, string_array_value, string_value, ty, Layout};
use llama_safe::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Set in the child: the index of the first mutant it runs.
const WORKER_ENV: &str = "LLAMA_SAFE_MUTANTS_FROM";
/// A mutant that takes longer than this is a hang.
const HANG: Duration = Duration::from_secs(60);
const SEED: u64 = 0x5eed_1e5a_fe12;

/// splitmix64: small, seeded, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// One mutation of a base file; `apply` makes the bytes.
#[derive(Debug, Clone)]
enum Edit {
    /// XOR a byte at an offset.
    Xor(usize, u8),
    /// Cut the file at a length.
    Truncate(usize),
    /// Overwrite a little-endian u32 / u64 at an offset.
    U32(usize, u32),
    U64(usize, u64),
    /// Replace (or with None remove) one metadata value; add it if absent.
    SetKv(String, Option<(u32, Vec<u8>)>),
}

#[derive(Debug, Clone)]
struct Mutant {
    class: &'static str,
    base: usize,
    edit: Edit,
}

fn apply(layout: &Layout, edit: &Edit) -> Vec<u8> {
    let mut b = layout.bytes.clone();
    match edit {
        Edit::Xor(at, x) => b[*at] ^= x,
        Edit::Truncate(len) => b.truncate(*len),
        Edit::U32(at, v) => b[*at..*at + 4].copy_from_slice(&v.to_le_bytes()),
        Edit::U64(at, v) => b[*at..*at + 8].copy_from_slice(&v.to_le_bytes()),
        Edit::SetKv(key, value) => {
            let mut kvs = layout.kv_triples();
            let pos = kvs.iter().position(|(k, _, _)| k == key);
            match (pos, value) {
                (Some(i), Some((t, v))) => kvs[i] = (key.clone(), *t, v.clone()),
                (Some(i), None) => {
                    kvs.remove(i);
                }
                (None, Some((t, v))) => kvs.push((key.clone(), *t, v.clone())),
                (None, None) => {}
            }
            b = layout.rebuild(&kvs);
        }
    }
    b
}

fn u32v(v: u32) -> Option<(u32, Vec<u8>)> {
    Some((ty::U32, v.to_le_bytes().to_vec()))
}
fn f32v(v: f32) -> Option<(u32, Vec<u8>)> {
    Some((ty::F32, v.to_le_bytes().to_vec()))
}
fn strv(s: &str) -> Option<(u32, Vec<u8>)> {
    Some((ty::STRING, string_value(s)))
}
fn arr_u32(values: &[u32]) -> Option<(u32, Vec<u8>)> {
    let mut v = ty::U32.to_le_bytes().to_vec();
    v.extend_from_slice(&(values.len() as u64).to_le_bytes());
    for x in values {
        v.extend_from_slice(&x.to_le_bytes());
    }
    Some((ty::ARRAY, v))
}

const ODD_U32: [u32; 10] = [0, 1, 2, 3, 5, 7, 63, 513, 1025, u32::MAX];
const ODD_U64: [u64; 8] = [0, 1, 31, 33, 1 << 20, 1 << 40, u64::MAX / 2, u64::MAX];

/// Every mutant of both demo models, in a fixed order.
fn corpus(bases: &[Layout]) -> Vec<Mutant> {
    let mut rng = Rng(SEED);
    let mut out = Vec::new();
    for (base, l) in bases.iter().enumerate() {
        let mut add = |class, edit| out.push(Mutant { class, base, edit });
        let len = l.bytes.len();
        // Byte flips in each region.
        for _ in 0..24 {
            add("flip header", Edit::Xor(rng.below(24), 1 << rng.below(8)));
        }
        for _ in 0..110 {
            let at = 24 + rng.below(l.kv_end - 24);
            add("flip metadata", Edit::Xor(at, 1 << rng.below(8)));
        }
        for _ in 0..60 {
            let at = l.kv_end + rng.below(l.table_end - l.kv_end);
            add("flip tensor table", Edit::Xor(at, 1 << rng.below(8)));
        }
        // Truncation in every region, and at each boundary.
        for cut in [
            0,
            4,
            8,
            16,
            24,
            l.kv_end,
            l.table_end,
            l.data_start,
            len - 1,
        ] {
            add("truncate", Edit::Truncate(cut));
        }
        for (lo, hi) in [(0, l.kv_end), (l.kv_end, l.data_start), (l.data_start, len)] {
            for _ in 0..12 {
                add("truncate", Edit::Truncate(lo + rng.below(hi - lo)));
            }
        }
        // Counts: tensors, metadata entries, array lengths.
        for v in ODD_U64 {
            add("counts", Edit::U64(8, v));
            add("counts", Edit::U64(16, v));
        }
        for kv in l.kvs.iter().filter(|kv| kv.ty == ty::ARRAY) {
            for v in [0, 1, 2, u64::MAX, 1 << 32] {
                add("counts", Edit::U64(kv.value_at + 4, v));
            }
        }
        // String lengths: keys, string values, tensor names.
        for _ in 0..30 {
            let kv = &l.kvs[rng.below(l.kvs.len())];
            let v = rng.pick(&ODD_U64);
            add("string lengths", Edit::U64(kv.key_len_at, v));
        }
        for kv in l.kvs.iter().filter(|kv| kv.ty == ty::STRING) {
            for v in [0, 1, 1 << 30, u64::MAX] {
                add("string lengths", Edit::U64(kv.value_at, v));
            }
        }
        for _ in 0..16 {
            let t = &l.tensors[rng.below(l.tensors.len())];
            add(
                "string lengths",
                Edit::U64(t.name_len_at, rng.pick(&[0, 1, 63, 64, 65, 1 << 40])),
            );
        }
        // Tensor dims, dim counts, type ids and offsets.
        for _ in 0..40 {
            let t = &l.tensors[rng.below(l.tensors.len())];
            let d = t.dims_at[rng.below(t.dims_at.len())];
            add(
                "dims",
                Edit::U64(d, rng.pick(&[0, 1, 2, 31, 33, 1 << 31, 1 << 62, u64::MAX])),
            );
        }
        for _ in 0..12 {
            let t = &l.tensors[rng.below(l.tensors.len())];
            add(
                "dims",
                Edit::U32(t.n_dims_at, rng.pick(&[0, 3, 4, 5, u32::MAX])),
            );
        }
        for _ in 0..30 {
            let t = &l.tensors[rng.below(l.tensors.len())];
            add(
                "offsets",
                Edit::U64(
                    t.offset_at,
                    rng.pick(&[1, 16, 32, 4096, 1 << 20, u64::MAX - 31]),
                ),
            );
        }
        for _ in 0..30 {
            let t = &l.tensors[rng.below(l.tensors.len())];
            add(
                "type ids",
                Edit::U32(
                    t.type_at,
                    rng.pick(&[1, 2, 3, 4, 6, 10, 31, 39, 40, 1000, u32::MAX]),
                ),
            );
        }
        for _ in 0..20 {
            let kv = &l.kvs[rng.below(l.kvs.len())];
            add(
                "type ids",
                Edit::U32(kv.type_at, rng.pick(&[0, 4, 6, 7, 8, 9, 12, 13, u32::MAX])),
            );
        }
        // Alignment.
        for v in [0, 1, 2, 3, 8, 16, 31, 33, 64, 1 << 20, u32::MAX] {
            add(
                "alignment",
                Edit::SetKv("general.alignment".into(), u32v(v)),
            );
        }
        add(
            "alignment",
            Edit::SetKv("general.alignment".into(), strv("32")),
        );
        // Hyperparameters, by value and by type.
        let arch = "llama";
        let hp = |name: &str| format!("{arch}.{name}");
        for name in [
            "block_count",
            "expert_count",
            "expert_used_count",
            "context_length",
            "embedding_length",
            "feed_forward_length",
            "attention.head_count",
            "attention.head_count_kv",
            "rope.dimension_count",
            "expert_group_count",
            "expert_group_used_count",
            "nextn_predict_layers",
            "embedding_length_out",
            "vocab_size",
        ] {
            for v in ODD_U32 {
                add("hparams", Edit::SetKv(hp(name), u32v(v)));
            }
            add("hparams", Edit::SetKv(hp(name), None));
            add("hparams", Edit::SetKv(hp(name), strv("4")));
            add("hparams", Edit::SetKv(hp(name), arr_u32(&[1, 2, 3, 4, 5])));
        }
        for name in [
            "attention.layer_norm_rms_epsilon",
            "attention.layer_norm_epsilon",
            "rope.freq_base",
            "rope.scaling.factor",
        ] {
            for v in [f32::NAN, f32::INFINITY, -1.0, 0.0, 1e30] {
                add("hparams", Edit::SetKv(hp(name), f32v(v)));
            }
        }
        for s in ["none", "yarn", "longrope", "", "linear2", "LINEAR"] {
            add("hparams", Edit::SetKv(hp("rope.scaling.type"), strv(s)));
        }
        for s in ["", "llama4", "qwen3moe", "gpt-oss", "bert", "nonsense"] {
            add(
                "hparams",
                Edit::SetKv("general.architecture".into(), strv(s)),
            );
        }
        // The vocabulary.
        if let Some(tokens) = l.kv("tokenizer.ggml.tokens") {
            let items = string_array_items(&tokens.value);
            for _ in 0..12 {
                let (a, b) = (rng.below(items.len()), rng.below(items.len()));
                let mut dup = items.clone();
                dup[a] = dup[b].clone();
                let value = Some((ty::ARRAY, string_array_value(&dup)));
                add("vocab", Edit::SetKv("tokenizer.ggml.tokens".into(), value));
            }
            let short = items[..items.len() / 2].to_vec();
            let value = Some((ty::ARRAY, string_array_value(&short)));
            add("vocab", Edit::SetKv("tokenizer.ggml.tokens".into(), value));
            let value = Some((ty::ARRAY, string_array_value(&[])));
            add("vocab", Edit::SetKv("tokenizer.ggml.tokens".into(), value));
        }
        for s in [
            "llama", "gpt2", "bert", "t5", "rwkv", "plamo2", "none", "no_vocab", "x",
        ] {
            add("vocab", Edit::SetKv("tokenizer.ggml.model".into(), strv(s)));
        }
        for s in ["", "default", "qwen2", "llama-bpe", "tekken"] {
            add("vocab", Edit::SetKv("tokenizer.ggml.pre".into(), strv(s)));
        }
        for name in [
            "bos_token_id",
            "eos_token_id",
            "unknown_token_id",
            "padding_token_id",
            "seperator_token_id",
        ] {
            for v in [0, 1, 2, 255, 100_000, u32::MAX] {
                add(
                    "vocab",
                    Edit::SetKv(format!("tokenizer.ggml.{name}"), u32v(v)),
                );
            }
            add("vocab", Edit::SetKv(format!("tokenizer.ggml.{name}"), None));
        }
        for name in ["add_bos_token", "add_eos_token", "add_sep_token"] {
            add(
                "vocab",
                Edit::SetKv(format!("tokenizer.ggml.{name}"), Some((ty::BOOL, vec![1]))),
            );
        }
        for name in ["scores", "token_type", "merges"] {
            add("vocab", Edit::SetKv(format!("tokenizer.ggml.{name}"), None));
            add(
                "vocab",
                Edit::SetKv(format!("tokenizer.ggml.{name}"), arr_u32(&[1, 2])),
            );
        }
    }
    out
}

fn bases() -> Vec<Layout> {
    [common::moe_path(), common::dense_path()]
        .iter()
        .map(|p| Layout::parse(std::fs::read(p).unwrap()))
        .collect()
}

/// What one mutant did, as the child reports it.
fn run_one(path: &Path) -> String {
    let backend = LlamaBackend::init();
    let params = LlamaModelParams::default();
    let plan = params.plan(path);
    let load = LlamaModel::load(&backend, path, &params);
    let verdict = |ok: bool| if ok { "ok" } else { "err" };
    let mut out = format!(
        "plan={} load={}",
        verdict(plan.is_ok()),
        verdict(load.is_ok())
    );
    if let Ok(model) = load {
        let generated = LlamaContext::new(
            &model,
            &ContextParams::default().with_n_ctx(64).with_threads(1),
        )
        .and_then(|mut ctx| {
            let options = GenerateOptions::default()
                .with_max_tokens(4)
                .with_sampling(SamplingOptions::greedy());
            let mut n = 0;
            for event in ctx.generate(demo::DEMO_PROMPT, &options)? {
                if let Event::Piece(_) = event? {
                    n += 1;
                }
            }
            Ok(n)
        });
        out += match generated {
            Ok(_) => " run=ok",
            Err(_) => " run=err",
        };
    }
    out
}

/// The child: runs mutants from `LLAMA_SAFE_MUTANTS_FROM` on, announcing
/// each before it starts, so the parent knows which one a crash hit.
#[test]
fn corpus_worker() {
    let Ok(from) = std::env::var(WORKER_ENV) else {
        return; // only runs as the parent's child
    };
    let from: usize = from.parse().unwrap();
    let bases = bases();
    let dir = common::scratch(&format!("mutants-{from}"));
    let path = dir.join("mutant.gguf");
    for (i, m) in corpus(&bases).iter().enumerate().skip(from) {
        println!("mutant:start {i}");
        std::fs::write(&path, apply(&bases[m.base], &m.edit)).unwrap();
        println!("mutant:done {i} {}", run_one(&path));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[derive(Default, Debug)]
struct Tally {
    both_ok: usize,
    both_rejected: usize,
    plan_only_rejected: usize,
    load_only_rejected: usize,
    crashed: usize,
    hung: usize,
}

#[test]
fn mutated_models_never_abort_and_plan_agrees_with_load() {
    if std::env::var(WORKER_ENV).is_ok() {
        return;
    }
    let bases = bases();
    let corpus = corpus(&bases);
    assert!(corpus.len() >= 1000, "only {} mutants", corpus.len());
    if let Ok(i) = std::env::var("MUTANTS_ONLY") {
        let i: usize = i.parse().unwrap();
        let path = common::scratch("mutant-only").join("m.gguf");
        std::fs::write(&path, apply(&bases[corpus[i].base], &corpus[i].edit)).unwrap();
        println!("{:?}: {}", corpus[i], run_one(&path));
        return;
    }
    let started = Instant::now();
    let mut outcomes: Vec<Option<String>> = vec![None; corpus.len()];
    let mut next = 0;
    while next < corpus.len() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "corpus_worker",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WORKER_ENV, next.to_string())
            // ggml would attach gdb to print a backtrace on each abort.
            .env("GGML_NO_BACKTRACE", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            // Lossy: llama.cpp may print a mutated string's bytes.
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                if tx.send(text).is_err() {
                    break;
                }
                line.clear();
            }
        });
        let mut current: Option<usize> = None;
        loop {
            match rx.recv_timeout(HANG) {
                Ok(line) => {
                    // libtest may print its own words before ours on a line.
                    let Some(rest) = line.find("mutant:").map(|at| &line[at + 7..]) else {
                        continue;
                    };
                    let mut words = rest.splitn(3, ' ');
                    let (kind, i) = (
                        words.next().unwrap(),
                        words.next().unwrap().parse().unwrap(),
                    );
                    if kind == "start" {
                        current = Some(i);
                    } else {
                        outcomes[i] = Some(words.next().unwrap_or_default().to_string());
                        current = None;
                        next = i + 1;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let i = current.expect("a hang outside any mutant");
                    outcomes[i] = Some("hang".into());
                    next = i + 1;
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().unwrap();
                    if let Some(i) = current {
                        outcomes[i] = Some(format!("crash {status}"));
                        next = i + 1;
                    } else {
                        assert!(
                            status.success(),
                            "the worker failed outside a mutant: {status}"
                        );
                        assert_eq!(next, corpus.len(), "the worker stopped early");
                    }
                    break;
                }
            }
        }
        let _ = child.wait();
    }

    let mut by_class: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, (m, outcome)) in corpus.iter().zip(&outcomes).enumerate() {
        let outcome = outcome.as_deref().unwrap_or("never ran");
        let t = by_class.entry(m.class).or_default();
        let plan_ok = outcome.contains("plan=ok");
        let load_ok = outcome.contains("load=ok");
        match outcome {
            o if o.starts_with("crash") => t.crashed += 1,
            "hang" => t.hung += 1,
            _ if plan_ok && load_ok => t.both_ok += 1,
            _ if !plan_ok && !load_ok => t.both_rejected += 1,
            _ if !plan_ok => t.plan_only_rejected += 1,
            _ => t.load_only_rejected += 1,
        }
        let bad = outcome.starts_with("crash") || outcome == "hang" || plan_ok != load_ok;
        if bad {
            failures.push(format!("#{i} {} {:?}: {outcome}", m.class, m.edit));
        }
        if std::env::var_os("MUTANTS_REPORT").is_some() {
            println!("#{i} {} {:?}: {outcome}", m.class, m.edit);
        }
    }
    println!("{} mutants in {:.1?}", corpus.len(), started.elapsed());
    println!("class               both ok  both rejected  plan only  load only  crashed  hung");
    for (class, t) in &by_class {
        println!(
            "{class:<20}{:>7}{:>15}{:>11}{:>11}{:>9}{:>6}",
            t.both_ok,
            t.both_rejected,
            t.plan_only_rejected,
            t.load_only_rejected,
            t.crashed,
            t.hung
        );
    }
    let rejected: usize = by_class.values().map(|t| t.both_rejected).sum();
    let accepted: usize = by_class.values().map(|t| t.both_ok).sum();
    assert!(
        rejected > 100 && accepted > 100,
        "a corpus that tests nothing: {by_class:?}"
    );
    assert!(
        failures.is_empty(),
        "{} mutants failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
