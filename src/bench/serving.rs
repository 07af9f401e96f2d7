//! Closed-loop load against an OpenAI-compatible `/v1/completions`
//! endpoint (ours or llama-server's): `clients` tasks, each sending its next
//! streaming request as soon as the last one ends, distinct prompts, greedy,
//! EOS banned so every answer is exactly `max_tokens` long.

use serde::{Deserialize, Serialize};
#[cfg(feature = "serve-bench")]
use std::time::{Duration, Instant};

/// What one load run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadResult {
    /// Concurrent clients.
    pub clients: usize,
    /// Requests completed.
    pub requests: usize,
    /// Tokens generated in all (counted from the streamed chunks).
    pub tokens: u64,
    /// Wall time of the whole run, seconds.
    pub seconds: f64,
    /// Tokens per second over all clients.
    pub tokens_per_second: f64,
    /// Time to first token of each request, seconds.
    pub ttft: Vec<f64>,
    /// Whole-request latency of each request, seconds.
    pub latency: Vec<f64>,
}

/// One streamed completion: (time to first text, total time, text chunks).
#[cfg(feature = "serve-bench")]
async fn one(
    client: &reqwest::Client,
    url: &str,
    prompt: &str,
    max_tokens: u32,
    eos: i32,
) -> Result<(Duration, Duration, u64), String> {
    use futures_util::StreamExt;
    let body = serde_json::json!({
        "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": true,
        "logit_bias": {eos.to_string(): -100}, "cache_prompt": true,
    });
    let start = Instant::now();
    let response = client
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("{url}: {e:?}"))?;
    if !response.status().is_success() {
        return Err(format!("{url}: {}", response.status()));
    }
    let mut stream = response.bytes_stream();
    let mut first = None;
    let mut tokens = 0u64;
    let mut pending = Vec::new();
    while let Some(chunk) = stream.next().await {
        pending.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Some(data) = line.strip_prefix(b"data: ") else {
                continue;
            };
            let Ok(event) = serde_json::from_slice::<serde_json::Value>(data) else {
                continue; // [DONE]
            };
            let text = event["choices"][0]["text"].as_str().unwrap_or_default();
            if !text.is_empty() {
                first.get_or_insert_with(|| start.elapsed());
                tokens += 1;
            }
        }
    }
    let total = start.elapsed();
    Ok((first.unwrap_or(total), total, tokens))
}

/// Runs `clients` closed-loop clients for `requests_per_client` requests
/// each against `base` (`http://host:port`). With the `serve-bench` feature.
#[cfg(feature = "serve-bench")]
pub async fn run(
    base: &str,
    clients: usize,
    requests_per_client: usize,
    max_tokens: u32,
    eos: i32,
    prompt_of: impl Fn(usize) -> String + Send + Sync + 'static,
) -> Result<LoadResult, String> {
    let url = format!("{base}/v1/completions");
    // A connection per request, for both servers alike: llama-server closes
    // kept-alive connections after a stream, which a pooled client would
    // find out only by failing its next request.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| e.to_string())?;
    let prompt_of = std::sync::Arc::new(prompt_of);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, url, prompt_of) = (client.clone(), url.clone(), prompt_of.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                for r in 0..requests_per_client {
                    let prompt = prompt_of(c * requests_per_client + r);
                    out.push(one(&client, &url, &prompt, max_tokens, eos).await?);
                }
                Ok::<_, String>(out)
            })
        })
        .collect();
    let mut result = LoadResult {
        clients,
        requests: 0,
        tokens: 0,
        seconds: 0.0,
        tokens_per_second: 0.0,
        ttft: Vec::new(),
        latency: Vec::new(),
    };
    for task in tasks {
        for (ttft, total, tokens) in task.await.map_err(|e| e.to_string())?? {
            result.requests += 1;
            result.tokens += tokens;
            result.ttft.push(ttft.as_secs_f64());
            result.latency.push(total.as_secs_f64());
        }
    }
    result.seconds = start.elapsed().as_secs_f64();
    result.tokens_per_second = result.tokens as f64 / result.seconds;
    Ok(result)
}

/// A distinct prompt for request `i`: the demo prompt and a few of its
/// words, `i` written in base 8 with them.
///
/// ```
/// use llama_workspace::bench::serving::prompt;
/// assert_ne!(prompt(1), prompt(2));
/// assert!(prompt(7).starts_with("Once upon a time"));
/// ```
pub fn prompt(i: usize) -> String {
    const WORDS: [&str; 8] = ["Once", "upon", "a", "time", "there", "lived", "one", "tiny"];
    let mut p = String::from("Once upon a time");
    let mut n = i + 1;
    while n > 0 {
        p.push(' ');
        p.push_str(WORDS[n % WORDS.len()]);
        n /= WORDS.len();
    }
    p
}

/// The `p`-th percentile (0..=100) of `values`, nearest rank.
///
/// ```
/// assert_eq!(llama_workspace::bench::serving::percentile(&[3.0, 1.0, 2.0, 4.0], 50.0), 2.0);
/// ```
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
