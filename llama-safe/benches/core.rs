//! criterion benches of the binding's own work, on the demo model; each name
//! says what one iteration does. Run with the machine quiet:
//! `cargo bench -p llama-safe --bench core`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use llama_safe::demo::{DemoModel, DEMO_CONTINUATION, DEMO_PROMPT};
use llama_safe::*;
use std::hint::black_box;

fn model() -> LlamaModel {
    let backend = LlamaBackend::init();
    LlamaModel::load(
        &backend,
        DemoModel::Moe.cached().unwrap(),
        &LlamaModelParams::default(),
    )
    .unwrap()
}

fn text() -> String {
    format!("{DEMO_PROMPT}{DEMO_CONTINUATION} ").repeat(50)
}

fn tokens(c: &mut Criterion) {
    let model = model();
    let text = text();
    let tokens = model.tokenize(&text, Tokenize::PROMPT).unwrap();
    let mut g = c.benchmark_group("tokens");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("tokenize_3KB_text", |b| {
        b.iter(|| model.tokenize(black_box(&text), Tokenize::PROMPT).unwrap())
    });
    g.throughput(Throughput::Elements(tokens.len() as u64));
    g.bench_function("detokenize_650_tokens", |b| {
        b.iter(|| model.detokenize(black_box(&tokens)).unwrap())
    });
    g.finish();
}

fn utf8(c: &mut Criterion) {
    // Multi-byte text fed one byte at a time, as byte-fallback tokens arrive.
    let bytes = "Grüße, 世界! ½ € 🙂 ".repeat(100).into_bytes();
    let mut g = c.benchmark_group("utf8_stream");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("push_3KB_one_byte_at_a_time", |b| {
        b.iter(|| {
            let mut s = Utf8Stream::default();
            let mut n = 0;
            for byte in black_box(&bytes) {
                n += s.push(std::slice::from_ref(byte)).len();
            }
            n
        })
    });
    g.finish();
}

fn sampling_and_decode(c: &mut Criterion) {
    let model = model();
    let params = ContextParams::default().with_n_ctx(256).with_threads(1);
    let mut ctx = LlamaContext::new(&model, &params).unwrap();
    let prompt = model.tokenize(DEMO_PROMPT, Tokenize::PROMPT).unwrap();
    ctx.decode(&prompt).unwrap();
    let mut g = c.benchmark_group("sampler");
    let mut greedy = Sampler::new(&model, &SamplingOptions::greedy()).unwrap();
    g.bench_function("greedy_step_308_vocab", |b| {
        b.iter(|| greedy.sample(&mut ctx).unwrap())
    });
    let mut chain = Sampler::new(&model, &SamplingOptions::default()).unwrap();
    g.bench_function("default_chain_step_308_vocab", |b| {
        b.iter(|| chain.sample(&mut ctx).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("decode");
    let next = greedy.sample(&mut ctx).unwrap();
    let n = ctx.n_past();
    g.bench_function("one_token_demo_model_1_thread", |b| {
        b.iter(|| {
            ctx.decode(&[next]).unwrap();
            ctx.truncate(n);
        })
    });
    g.finish();
}

fn params(c: &mut Criterion) {
    let mut g = c.benchmark_group("params");
    g.bench_function("build_cpu_moe_all_plus_8_overrides", |b| {
        b.iter(|| {
            let mut p = LlamaModelParams::default()
                .with_n_gpu_layers(999)
                .with_cpu_moe_all();
            for i in 0..8 {
                p = p.with_tensor_override(&format!(r"blk\.{i}\.attn_.*"), OverrideTarget::Cpu);
            }
            p
        })
    });
    let per_layer = (0..48).fold(LlamaModelParams::default(), |p, i| {
        p.with_tensor_override(
            &format!(r"blk\.{i}\.ffn_(up|down|gate)_exps"),
            OverrideTarget::Cpu,
        )
    });
    g.bench_function("materialize_48_override_array", |b| {
        b.iter_batched(
            || per_layer.clone(),
            |p| p.materialize(48).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = tokens, utf8, sampling_and_decode, params
}
criterion_main!(benches);
