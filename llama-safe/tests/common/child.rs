//! Running a test's body in a child process (this test binary again,
//! filtered to the one test), so that an abort, a stack overflow or a hang
//! is a failed assertion in the parent instead of a dead test run.
#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set in a child: the name of the test it runs.
const CASE_ENV: &str = "LLAMA_SAFE_CHILD_CASE";

/// Runs `body` in a child process and asserts it exits successfully within
/// `limit`; in the child, runs it.
pub fn in_child(test_name: &str, limit: Duration, body: impl FnOnce()) {
    if std::env::var(CASE_ENV).as_deref() == Ok(test_name) {
        body();
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CASE_ENV, test_name)
        .env("GGML_NO_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            assert!(
                status.success(),
                "{test_name} ended with {status}\nstdout:\n{}\nstderr (tail):\n{}",
                tail(&out.stdout),
                tail(&out.stderr)
            );
            return;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{test_name} still running after {limit:?} (a hang or a deadlock)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// This process's peak resident memory (VmHWM), in bytes.
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// A small deterministic generator (xorshift64) for generated corpora.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}
