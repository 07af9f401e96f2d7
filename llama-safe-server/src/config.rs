//! What the router and the connection loop are configured by: time limits,
//! the body limit and the API keys.

use sha2::{Digest, Sha256};
use std::time::Duration;

/// Time limits of a connection and of shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A request's headers must arrive within this, and so must the next
    /// request's on a kept-alive connection (the idle limit): slow or idle
    /// clients are closed. Enforced by [`serve`](crate::serve) (it is a
    /// property of the connection, which a router does not own).
    pub header: Duration,
    /// A request's whole body must arrive within this (408 otherwise).
    /// Enforced by the [`router`](crate::router) itself.
    pub body: Duration,
    /// After the shutdown signal, streams in flight may finish within this;
    /// then [`serve`](crate::serve) returns anyway.
    pub shutdown: Duration,
}

impl Default for Timeouts {
    /// Headers 10 s, body 30 s, shutdown 10 s.
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(10),
            body: Duration::from_secs(30),
            shutdown: Duration::from_secs(10),
        }
    }
}

/// The default largest request body: 2 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// How the server protects itself: time limits, the body limit and API
/// keys. The keys are kept only as SHA-256 digests, and `Debug` prints
/// how many there are, never them.
///
/// ```
/// use llama_safe_server::ServerConfig;
/// let config = ServerConfig::default()
///     .with_api_key("sk-local-1")
///     .with_max_body_bytes(1 << 20);
/// assert!(config.requires_key());
/// assert!(!format!("{config:?}").contains("sk-local-1"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ServerConfig {
    timeouts: Timeouts,
    max_body_bytes: usize,
    key_digests: Vec<[u8; 32]>,
    open_metrics: bool,
}

impl Default for ServerConfig {
    /// [`Timeouts::default`], a 2 MiB body limit, no key.
    fn default() -> Self {
        ServerConfig {
            timeouts: Timeouts::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            key_digests: Vec::new(),
            open_metrics: false,
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("timeouts", &self.timeouts)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("api_keys", &self.key_digests.len())
            .field("open_metrics", &self.open_metrics)
            .finish()
    }
}

impl ServerConfig {
    /// The time limits.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The largest request body accepted (413 beyond).
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Accepts `key` (as `Authorization: Bearer KEY`, or `x-api-key: KEY`
    /// as Anthropic's clients send it). With one key or more, every route
    /// but `/health` (and `/metrics` when [opened](Self::with_open_metrics))
    /// answers 401 to a request without a key given here. An empty key is
    /// ignored.
    pub fn with_api_key(mut self, key: impl AsRef<str>) -> Self {
        let key = key.as_ref();
        if !key.is_empty() {
            let digest = digest(key.as_bytes());
            if !self.key_digests.contains(&digest) {
                self.key_digests.push(digest);
            }
        }
        self
    }

    /// `GET /metrics` without a key even when keys are required (for a
    /// scraper on a private network).
    pub fn with_open_metrics(mut self, open: bool) -> Self {
        self.open_metrics = open;
        self
    }

    /// The time limits.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The largest request body accepted.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// Whether requests need a key.
    pub fn requires_key(&self) -> bool {
        !self.key_digests.is_empty()
    }

    /// Whether `/metrics` is open without a key.
    pub fn open_metrics(&self) -> bool {
        self.open_metrics || !self.requires_key()
    }

    /// Whether `presented` is one of the keys. Compares SHA-256 digests in
    /// constant time, against every key, so the time taken tells nothing of
    /// how much of a key was right, nor which key matched.
    pub(crate) fn accepts(&self, presented: &[u8]) -> bool {
        let presented = digest(presented);
        let mut matched = 0u8;
        for key in &self.key_digests {
            let diff = key
                .iter()
                .zip(&presented)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            matched |= std::hint::black_box(u8::from(diff == 0));
        }
        matched == 1
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_matched_exactly() {
        let c = ServerConfig::default()
            .with_api_key("alpha")
            .with_api_key("beta")
            .with_api_key("");
        assert!(c.accepts(b"alpha") && c.accepts(b"beta"));
        assert!(!c.accepts(b"alph") && !c.accepts(b"alphaa") && !c.accepts(b""));
        assert!(!c.open_metrics());
        assert!(c.clone().with_open_metrics(true).open_metrics());
        assert!(ServerConfig::default().open_metrics());
        assert!(!ServerConfig::default().accepts(b""));
    }
}
