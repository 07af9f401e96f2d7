//! Serving benchmark: our server (the `llama-safe-server` binary, on the batching engine)
//! against llama.cpp's `llama-server`, same model, same threads, same
//! parallel sequences, closed-loop clients at several concurrencies,
//! interleaved round by round. Writes JSON and Markdown.
//!
//! ```text
//! cargo build --release -p llama-safe-server
//! scripts/build-llama-server.sh                 # the peer, outside CI
//! cargo run --release --features serve-bench --bin serve_bench -- --model m.gguf \
//!     --llama-server target/peers/llama-server --clients 1,2,4,8,16 --rounds 3
//! ```
//!
//! Without `--llama-server` only our server runs (CI does that, small).
//!
//! Speculative decoding, both servers with the same settings (llama-server's
//! flag names), on prompts that repeat themselves, each also run without
//! speculation for the gain:
//!
//! ```text
//! cargo run --release --features serve-bench --bin serve_bench -- --model m.gguf \
//!     --llama-server target/peers/llama-server --clients 1,4 --rounds 5 \
//!     --prompts repeat --spec-type ngram-simple --baseline
//! ```

use clap::Parser;
use llama_workspace::bench::process;
use llama_workspace::bench::serving::{self, percentile, prompt, LoadResult};
use llama_workspace::bench::Summary;
use serde::Serialize;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Closed-loop serving benchmark against llama-server")]
struct Args {
    /// The GGUF model both servers load (default: the demo model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Our server binary.
    #[arg(long, default_value = "target/release/llama-safe-server")]
    server: PathBuf,
    /// llama.cpp's llama-server binary; without it only ours runs.
    #[arg(long)]
    llama_server: Option<PathBuf>,
    /// Client counts to run, comma-separated.
    #[arg(long, default_value = "1,2,4,8,16", value_delimiter = ',')]
    clients: Vec<usize>,
    /// Interleaved rounds (each runs every client count on both servers).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Requests each client sends per run.
    #[arg(long, default_value_t = 3)]
    requests: usize,
    /// Tokens per answer (EOS banned).
    #[arg(long, default_value_t = 48)]
    max_tokens: u32,
    /// Threads of each server.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Parallel sequences of each server.
    #[arg(long, default_value_t = 4)]
    parallel: u32,
    /// KV cells of each server.
    #[arg(long, default_value_t = 8192)]
    ctx_size: u32,
    /// Tokens of the repeated prompt of the prompt-cache check.
    #[arg(long, default_value_t = 1000)]
    cache_prompt_tokens: usize,
    /// Output folder.
    #[arg(long, default_value = "target/serve_bench")]
    out: PathBuf,
    /// Speculative decoding on both servers: `none`, `ngram-simple` (prompt
    /// lookup), `draft-simple` (with `--model-draft`).
    #[arg(long, default_value = "none", value_parser = ["none", "ngram-simple", "draft-simple"])]
    spec_type: String,
    /// Most tokens per draft (llama-server's ngram-simple takes it as its
    /// m-gram size).
    #[arg(long, default_value_t = 16)]
    spec_draft_n_max: u32,
    /// The n-gram looked up (ours tries this size down to 1, llama-server's
    /// ngram-simple this size only).
    #[arg(long, default_value_t = 3)]
    spec_ngram_size_n: u32,
    /// The draft model of `draft-simple`.
    #[arg(long)]
    model_draft: Option<PathBuf>,
    /// A draft stops where the draft model's best token is less likely
    /// than this (both servers).
    #[arg(long, default_value_t = 0.0)]
    spec_draft_p_min: f32,
    /// One KV cache shared by all of our sequences (`--kv-unified`) instead
    /// of one each (the default of both servers).
    #[arg(long)]
    kv_unified: bool,
    /// Also run each server without speculation, interleaved, for the gain.
    #[arg(long)]
    baseline: bool,
    /// Prompts: `distinct` (short, all different) or `repeat` (the demo
    /// sentence three times, then a distinct ending: text that n-gram
    /// lookup drafts from).
    #[arg(long, default_value = "distinct", value_parser = ["distinct", "repeat"])]
    prompts: String,
}

impl Args {
    /// The speculation flags of each server, none for a plain one.
    fn spec_flags(&self, peer: bool, plain: bool) -> Vec<String> {
        if plain || self.spec_type == "none" {
            return Vec::new();
        }
        let mut f: Vec<String> = vec![
            "--spec-type".into(),
            self.spec_type.clone(),
            "--spec-draft-n-max".into(),
            self.spec_draft_n_max.to_string(),
        ];
        if self.spec_type == "ngram-simple" {
            if peer {
                f.extend([
                    "--spec-ngram-simple-size-n".into(),
                    self.spec_ngram_size_n.to_string(),
                    "--spec-ngram-simple-size-m".into(),
                    self.spec_draft_n_max.to_string(),
                ]);
            } else {
                f.extend([
                    "--spec-ngram-size-n".into(),
                    self.spec_ngram_size_n.to_string(),
                ]);
            }
        }
        if let Some(d) = &self.model_draft {
            f.extend([
                "--model-draft".into(),
                d.display().to_string(),
                "--spec-draft-p-min".into(),
                self.spec_draft_p_min.to_string(),
            ]);
            if peer {
                // The draft's own threads, as ours (the target's).
                f.extend(["--threads-draft".into(), self.threads.to_string()]);
            }
        }
        f
    }
}

/// Request `i`'s prompt: distinct, or (`repeat`) the demo sentence three
/// times before a distinct ending.
fn request_prompt(repeat: bool, i: usize) -> String {
    if repeat {
        format!(
            "{} {}",
            "Once upon a time there lived one tiny model with many experts. ".repeat(3),
            prompt(i)
        )
    } else {
        prompt(i)
    }
}

/// The speculation counters of a server's /metrics: (drafted, accepted).
async fn spec_counters(base: &str) -> (f64, f64) {
    let text = match reqwest::get(format!("{base}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let value = |names: &[&str]| {
        text.lines()
            .find_map(|l| {
                names
                    .iter()
                    .find_map(|n| l.strip_prefix(n)?.strip_prefix(' ')?.trim().parse().ok())
            })
            .unwrap_or(0.0)
    };
    (
        value(&[
            "llama_speculative_drafted_total",
            "llamacpp:spec_decode_num_draft_tokens_total",
        ]),
        value(&[
            "llama_speculative_accepted_total",
            "llamacpp:spec_decode_num_accepted_tokens_total",
        ]),
    )
}

/// A server process and its address.
struct Server {
    name: &'static str,
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn peak_rss_bytes(&self) -> Option<u64> {
        process::status_bytes(Some(self.child.id()), "VmHWM")
    }
}

fn free_port() -> u16 {
    process::free_port().expect("a free loopback port")
}

async fn wait_healthy(base: &str, child: &mut Child) -> Result<(), String> {
    let client = reqwest::Client::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the server exited: {status}"));
        }
        if let Ok(r) = client.get(format!("{base}/health")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{base} not healthy after 120 s"))
}

async fn start_ours(
    args: &Args,
    model: &str,
    prompt_cache: bool,
    plain: bool,
) -> Result<Server, String> {
    let port = free_port();
    let mut cmd = Command::new(&args.server);
    cmd.args(args.spec_flags(false, plain));
    cmd.args(["--model", model, "--quiet", "--port"])
        .arg(port.to_string())
        .args(["--threads", &args.threads.to_string()])
        .args(["--parallel", &args.parallel.to_string()])
        .args(["--ctx-size", &args.ctx_size.to_string()])
        .args(["--queue", "64"]);
    if !prompt_cache {
        cmd.arg("--no-prompt-cache");
    }
    if args.kv_unified {
        cmd.arg("--kv-unified");
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", args.server.display()))?;
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base, &mut child).await?;
    Ok(Server {
        name: if plain { "ours-plain" } else { "ours" },
        child,
        base,
    })
}

async fn start_llama_server(
    args: &Args,
    exe: &PathBuf,
    model: &str,
    plain: bool,
) -> Result<Server, String> {
    let port = free_port();
    let mut child = Command::new(exe)
        .args(args.spec_flags(true, plain))
        .args(["-m", model, "--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args([
            "-t",
            &args.threads.to_string(),
            "-tb",
            &args.threads.to_string(),
        ])
        .args(["-np", &args.parallel.to_string()])
        .args(["-c", &args.ctx_size.to_string()])
        .args(["--no-webui", "--log-disable", "--metrics"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base, &mut child).await?;
    Ok(Server {
        name: if plain {
            "llama-server-plain"
        } else {
            "llama-server"
        },
        child,
        base,
    })
}

#[derive(Serialize)]
struct Row {
    clients: usize,
    ours: Summary,
    peer: Option<Summary>,
    ratio: Option<Summary>,
    ours_ttft_p50: f64,
    ours_ttft_p95: f64,
    ours_latency_p50: f64,
    ours_latency_p95: f64,
    peer_ttft_p50: Option<f64>,
    peer_ttft_p95: Option<f64>,
    peer_latency_p50: Option<f64>,
    peer_latency_p95: Option<f64>,
}

/// Speculation at one client count: tokens/s without it, the gain (with ÷
/// without, round by round), and (accepted, drafted) over all runs.
#[derive(Serialize)]
struct SpecRow {
    clients: usize,
    ours_plain: Option<Summary>,
    ours_gain: Option<Summary>,
    ours_accepted_drafted: Option<(f64, f64)>,
    peer_plain: Option<Summary>,
    peer_gain: Option<Summary>,
    peer_accepted_drafted: Option<(f64, f64)>,
}

#[derive(Serialize)]
struct Report {
    model: String,
    threads: u32,
    parallel: u32,
    ctx_size: u32,
    max_tokens: u32,
    rounds: usize,
    requests_per_client: usize,
    ours_llama_cpp: String,
    peer: Option<String>,
    rows: Vec<Row>,
    ours_scaling_8_over_1: Option<Summary>,
    peak_rss_ours: Option<u64>,
    peak_rss_peer: Option<u64>,
    /// Our speculation flags, and llama-server's.
    spec: Option<String>,
    spec_peer: Option<String>,
    prompts: String,
    speculation: Option<Vec<SpecRow>>,
    prompt_cache_prompt_tokens: usize,
    prompt_cache_ttft_cold: f64,
    prompt_cache_ttft_warm: f64,
    prompt_cache_ttft_without_cache: f64,
    runs: Vec<(String, usize, usize, LoadResult)>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("serve_bench: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let model = match &args.model {
        Some(m) => m.clone(),
        None => llama_safe::demo::DemoModel::Moe
            .cached()
            .map_err(|e| e.to_string())?,
    };
    let model_str = model.to_string_lossy().into_owned();
    let backend = llama_safe::LlamaBackend::init();
    let loaded = llama_safe::LlamaModel::load(
        &backend,
        &model,
        &llama_safe::LlamaModelParams::default().with_vocab_only(true),
    )
    .map_err(|e| e.to_string())?;
    let eos = loaded.token_eos().map_or(2, |t| t.0);

    let mut servers = vec![start_ours(&args, &model_str, true, false).await?];
    if let Some(exe) = &args.llama_server {
        servers.push(start_llama_server(&args, exe, &model_str, false).await?);
    }
    let speculating = args.spec_type != "none";
    if speculating && args.baseline {
        servers.push(start_ours(&args, &model_str, true, true).await?);
        if let Some(exe) = &args.llama_server {
            servers.push(start_llama_server(&args, exe, &model_str, true).await?);
        }
    }
    let repeat = args.prompts == "repeat";
    // Warm-up: one request each.
    for s in &servers {
        serving::run(&s.base, 1, 1, 4, eos, prompt).await?;
    }
    let mut runs: Vec<(String, usize, usize, LoadResult)> = Vec::new();
    // (server, clients, drafted, accepted) of each run.
    let mut drafts: Vec<(String, usize, f64, f64)> = Vec::new();
    for round in 0..args.rounds {
        for &clients in &args.clients {
            // Alternate which server goes first, round by round.
            let order: Vec<usize> = if round % 2 == 0 {
                (0..servers.len()).collect()
            } else {
                (0..servers.len()).rev().collect()
            };
            for i in order {
                let s = &servers[i];
                let offset = (round * 1000 + clients) * 100;
                let before = spec_counters(&s.base).await;
                let r = serving::run(
                    &s.base,
                    clients,
                    args.requests,
                    args.max_tokens,
                    eos,
                    move |k| request_prompt(repeat, offset + k),
                )
                .await?;
                let after = spec_counters(&s.base).await;
                drafts.push((
                    s.name.to_string(),
                    clients,
                    after.0 - before.0,
                    after.1 - before.1,
                ));
                eprintln!(
                    "round {round} {:>12} {clients:>2} clients: {:.1} tok/s",
                    s.name, r.tokens_per_second
                );
                runs.push((s.name.to_string(), round, clients, r));
            }
        }
    }
    let peak_rss_ours = servers[0].peak_rss_bytes();
    let peak_rss_peer = servers
        .iter()
        .find(|s| s.name == "llama-server")
        .and_then(Server::peak_rss_bytes);

    // Prompt cache: the same long prompt twice (cold, then warm), and on a
    // server without the cache.
    let long_prompt = "Once upon a time there lived one tiny model with many experts. "
        .repeat(args.cache_prompt_tokens / 12 + 1);
    let long_tokens = loaded
        .tokenize(&long_prompt, llama_safe::Tokenize::PROMPT)
        .map_or(0, |t| t.len());
    let long = long_prompt.clone();
    let cold = serving::run(&servers[0].base, 1, 1, 4, eos, move |_| long.clone()).await?;
    let long = long_prompt.clone();
    let warm = serving::run(&servers[0].base, 1, 1, 4, eos, move |_| long.clone()).await?;
    drop(servers);
    let uncached = start_ours(&args, &model_str, false, false).await?;
    let long = long_prompt.clone();
    let _ = serving::run(&uncached.base, 1, 1, 4, eos, move |_| long.clone()).await?;
    let long = long_prompt.clone();
    let without = serving::run(&uncached.base, 1, 1, 4, eos, move |_| long.clone()).await?;
    drop(uncached);

    let rate = |name: &str, clients: usize| -> Vec<f64> {
        runs.iter()
            .filter(|(n, _, c, _)| n == name && *c == clients)
            .map(|(_, _, _, r)| r.tokens_per_second)
            .collect()
    };
    let pooled = |name: &str, clients: usize, f: fn(&LoadResult) -> &Vec<f64>| -> Vec<f64> {
        runs.iter()
            .filter(|(n, _, c, _)| n == name && *c == clients)
            .flat_map(|(_, _, _, r)| f(r).clone())
            .collect()
    };
    let has_peer = args.llama_server.is_some();
    let rows: Vec<Row> = args
        .clients
        .iter()
        .map(|&clients| {
            let ours = rate("ours", clients);
            let peer = rate("llama-server", clients);
            let ratios: Vec<f64> = ours.iter().zip(&peer).map(|(o, p)| o / p).collect();
            let (ot, ol) = (
                pooled("ours", clients, |r| &r.ttft),
                pooled("ours", clients, |r| &r.latency),
            );
            let (pt, pl) = (
                pooled("llama-server", clients, |r| &r.ttft),
                pooled("llama-server", clients, |r| &r.latency),
            );
            Row {
                clients,
                ours: Summary::of(&ours).expect("runs"),
                peer: Summary::of(&peer),
                ratio: Summary::of(&ratios),
                ours_ttft_p50: percentile(&ot, 50.0),
                ours_ttft_p95: percentile(&ot, 95.0),
                ours_latency_p50: percentile(&ol, 50.0),
                ours_latency_p95: percentile(&ol, 95.0),
                peer_ttft_p50: has_peer.then(|| percentile(&pt, 50.0)),
                peer_ttft_p95: has_peer.then(|| percentile(&pt, 95.0)),
                peer_latency_p50: has_peer.then(|| percentile(&pl, 50.0)),
                peer_latency_p95: has_peer.then(|| percentile(&pl, 95.0)),
            }
        })
        .collect();
    let speculation = speculating.then(|| {
        let gain = |name: &str, plain: &str, clients: usize| {
            let g: Vec<f64> = rate(name, clients)
                .iter()
                .zip(rate(plain, clients))
                .map(|(s, p)| s / p)
                .collect();
            Summary::of(&g)
        };
        let acceptance = |name: &str, clients: usize| {
            let (d, a) = drafts
                .iter()
                .filter(|(n, c, _, _)| n == name && *c == clients)
                .fold((0.0, 0.0), |(d, a), (_, _, dd, aa)| (d + dd, a + aa));
            (d > 0.0).then_some((a, d))
        };
        args.clients
            .iter()
            .map(|&clients| SpecRow {
                clients,
                ours_gain: gain("ours", "ours-plain", clients),
                peer_gain: gain("llama-server", "llama-server-plain", clients),
                ours_plain: Summary::of(&rate("ours-plain", clients)),
                peer_plain: Summary::of(&rate("llama-server-plain", clients)),
                ours_accepted_drafted: acceptance("ours", clients),
                peer_accepted_drafted: acceptance("llama-server", clients),
            })
            .collect()
    });
    let scaling: Vec<f64> = rate("ours", 8)
        .iter()
        .zip(rate("ours", 1))
        .map(|(eight, one)| eight / one)
        .collect();
    let report = Report {
        model: model_str,
        threads: args.threads,
        parallel: args.parallel,
        ctx_size: args.ctx_size,
        max_tokens: args.max_tokens,
        rounds: args.rounds,
        requests_per_client: args.requests,
        ours_llama_cpp: llama_safe::LLAMA_CPP_REVISION.to_string(),
        peer: args.llama_server.as_ref().map(|p| p.display().to_string()),
        rows,
        ours_scaling_8_over_1: Summary::of(&scaling),
        peak_rss_ours,
        peak_rss_peer,
        spec: speculating.then(|| args.spec_flags(false, false).join(" ")),
        spec_peer: speculating.then(|| args.spec_flags(true, false).join(" ")),
        prompts: args.prompts.clone(),
        speculation,
        prompt_cache_prompt_tokens: long_tokens,
        prompt_cache_ttft_cold: cold.ttft[0],
        prompt_cache_ttft_warm: warm.ttft[0],
        prompt_cache_ttft_without_cache: without.ttft[0],
        runs,
    };
    std::fs::create_dir_all(&args.out).map_err(|e| e.to_string())?;
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(args.out.join("serve.json"), json).map_err(|e| e.to_string())?;
    let md = markdown(&report);
    std::fs::write(args.out.join("serve.md"), &md).map_err(|e| e.to_string())?;
    println!("{md}");
    Ok(())
}

fn markdown(r: &Report) -> String {
    use std::fmt::Write;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Closed-loop clients, {} rounds interleaved, {} requests per client per run, {} tokens per answer (EOS banned), greedy; {} threads and {} parallel sequences per server, {} KV cells; tokens/s over all clients (mean ± sd (min–max) of the rounds); ratio = ours ÷ llama-server, round by round.\n",
        r.rounds, r.requests_per_client, r.max_tokens, r.threads, r.parallel, r.ctx_size
    );
    let _ = writeln!(md, "| clients | ours tok/s | llama-server tok/s | ratio | ours TTFT p50/p95 ms | llama-server TTFT p50/p95 ms | ours latency p50/p95 ms | llama-server latency p50/p95 ms |");
    let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    let ms = |v: f64| format!("{:.0}", v * 1e3);
    let pair = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{}/{}", ms(a), ms(b)),
        _ => "—".into(),
    };
    for row in &r.rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {}/{} | {} | {}/{} | {} |",
            row.clients,
            row.ours.display(1),
            row.peer.map_or("—".into(), |s| s.display(1)),
            row.ratio.map_or("—".into(), |s| s.display(3)),
            ms(row.ours_ttft_p50),
            ms(row.ours_ttft_p95),
            pair(row.peer_ttft_p50, row.peer_ttft_p95),
            ms(row.ours_latency_p50),
            ms(row.ours_latency_p95),
            pair(row.peer_latency_p50, row.peer_latency_p95),
        );
    }
    if let Some(s) = r.ours_scaling_8_over_1 {
        let _ = writeln!(
            md,
            "\nOurs at 8 clients ÷ ours at 1 client: {}.",
            s.display(2)
        );
    }
    if let Some(rows) = &r.speculation {
        let _ = writeln!(
            md,
            "\nSpeculative decoding ({} prompts): ours `{}`, llama-server `{}`. Gain = with ÷ without speculation, round by round (mean ± sd (min–max)); acceptance = accepted ÷ drafted over all runs.\n",
            r.prompts,
            r.spec.as_deref().unwrap_or(""),
            r.spec_peer.as_deref().unwrap_or("")
        );
        let _ = writeln!(md, "| clients | ours without tok/s | ours gain | ours acceptance | llama-server without tok/s | llama-server gain | llama-server acceptance |");
        let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- | --- |");
        let sum = |s: Option<Summary>, d: usize| s.map_or("—".into(), |s| s.display(d));
        let acc = |a: Option<(f64, f64)>| {
            a.map_or("—".into(), |(a, d)| {
                format!("{:.1} % ({a:.0}/{d:.0})", 100.0 * a / d)
            })
        };
        for row in rows {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                row.clients,
                sum(row.ours_plain, 1),
                sum(row.ours_gain, 3),
                acc(row.ours_accepted_drafted),
                sum(row.peer_plain, 1),
                sum(row.peer_gain, 3),
                acc(row.peer_accepted_drafted),
            );
        }
    }
    let mib =
        |b: Option<u64>| b.map_or("—".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
    let _ = writeln!(
        md,
        "Peak RSS over the runs: ours {}, llama-server {}.",
        mib(r.peak_rss_ours),
        mib(r.peak_rss_peer)
    );
    let _ = writeln!(
        md,
        "Prompt cache (ours, a repeated prompt of {} tokens): TTFT cold {} ms, repeated {} ms, repeated on a server without the cache {} ms.",
        r.prompt_cache_prompt_tokens,
        ms(r.prompt_cache_ttft_cold),
        ms(r.prompt_cache_ttft_warm),
        ms(r.prompt_cache_ttft_without_cache)
    );
    md
}
