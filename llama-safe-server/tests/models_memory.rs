//! 200 load and unload cycles of three models leave the process's resident
//! memory within 10 % of where the first cycles left it (its own test
//! binary: no other test's allocations in the figure). Medians of 50
//! cycles, at the start (cycles 11 to 60, once the allocator's arenas and
//! the thread pools have their working size) and at the end, as single
//! readings of the heap move by a MiB or two either way.

use llama_safe::demo::DemoModel;
use llama_safe::engine::EngineConfig;
use llama_safe::LlamaBackend;
use llama_safe_server::catalog::Sources;
use llama_safe_server::{Models, ModelsConfig};
use std::time::{Duration, Instant};

/// Resident bytes, once the allocator has given back what it keeps free
/// (as the server does after each unload; here before each reading, so
/// the readings do not depend on when the freeing thread ran).
fn rss_bytes() -> u64 {
    // SAFETY: malloc_trim has no preconditions.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(target_os = "linux")]
async fn two_hundred_cycles_of_three_models_give_the_memory_back() {
    // As the binary does when it serves many models (cli.rs).
    llama_safe_server::models::release_memory_eagerly();
    let dir = std::env::temp_dir().join(format!("llama-safe-cycles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let moe = std::fs::read(DemoModel::Moe.cached().unwrap()).unwrap();
    let dense = std::fs::read(DemoModel::Dense.cached().unwrap()).unwrap();
    for (name, bytes) in [("a-moe", &moe), ("b-moe", &moe), ("c-dense", &dense)] {
        std::fs::write(dir.join(format!("{name}.gguf")), bytes).unwrap();
    }
    let config = ModelsConfig::new(Sources::default().with_dir(&dir))
        .with_engine(
            EngineConfig::default()
                .with_n_ctx(512)
                .with_n_parallel(1)
                .with_threads(1),
        )
        .with_max_resident(3);
    let models = Models::new(&LlamaBackend::init(), config);
    let cycle = || async {
        for name in ["a-moe", "b-moe", "c-dense"] {
            let state = models.acquire(Some(name), None).await.unwrap();
            let weak = std::sync::Arc::downgrade(&state);
            drop(state);
            assert!(models.unload(name).unwrap());
            let start = Instant::now();
            while weak.strong_count() > 0 {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "{name} was not freed"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    // RSS after each cycle (once the freeing thread has trimmed).
    let mut samples = Vec::new();
    let before = rss_bytes();
    for i in 0..200 {
        cycle().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        samples.push(rss_bytes());
        if i % 25 == 24 {
            eprintln!("cycle {}: RSS {} KiB", i + 1, samples[i] >> 10);
        }
    }
    let median = |s: &[u64]| {
        let mut s = s.to_vec();
        s.sort_unstable();
        s[s.len() / 2]
    };
    // The start: cycles 11 to 60, once arenas and thread pools have their
    // working size; the end: the last 50.
    let (start, end) = (median(&samples[10..60]), median(&samples[150..]));
    eprintln!(
        "RSS before any load {} KiB; median of cycles 11-60 {} KiB, of cycles 151-200 {} KiB ({} loads)",
        before >> 10,
        start >> 10,
        end >> 10,
        models.loads()
    );
    assert_eq!(models.loads(), 600);
    assert!(
        end <= start + start / 10,
        "RSS grew from {start} to {end} bytes"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
