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
#[must_use]
#[derive(Clone, PartialEq, Eq)]
pub struct ServerConfig {
    timeouts: Timeouts,
    max_body_bytes: usize,
    key_digests: Vec<[u8; 32]>,
    admin_digests: Vec<[u8; 32]>,
    /// An empty key was given: nothing is accepted (fail closed).
    locked: bool,
    open_metrics: bool,
}

/// What a request's key lets it do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// No key is configured: everything, as on a private machine.
    Open,
    /// An inference key (`--api-key`): the model routes, not their
    /// management.
    Client,
    /// The admin key (`--admin-api-key`): everything.
    Admin,
}

impl Role {
    /// Whether this role may load and unload models and set `keep_alive`.
    pub(crate) fn manages_models(self) -> bool {
        matches!(self, Role::Open | Role::Admin)
    }
}

impl Default for ServerConfig {
    /// [`Timeouts::default`], a 2 MiB body limit, no key.
    fn default() -> Self {
        ServerConfig {
            timeouts: Timeouts::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            key_digests: Vec::new(),
            admin_digests: Vec::new(),
            locked: false,
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
            .field("admin_api_keys", &self.admin_digests.len())
            .field("locked", &self.locked)
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
    /// as Anthropic's clients send it) on the model routes. With one key or
    /// more, every route but `/health` (and `/metrics` when
    /// [opened](Self::with_open_metrics)) answers 401 to a request without
    /// a key given here, and model management (`/models/load`,
    /// `/models/unload`, Ollama's unload, `keep_alive`) needs the
    /// [admin key](Self::with_admin_api_key): 403 with this one.
    ///
    /// Keys fail closed: an empty (or blank) key, such as an unset
    /// variable's, locks the router (every request but `/health` is 401),
    /// never opens it.
    ///
    /// ```
    /// use llama_safe_server::ServerConfig;
    /// let key = std::env::var("A_VARIABLE_NOBODY_SET").unwrap_or_default();
    /// assert!(ServerConfig::default().with_api_key(key).requires_key());
    /// ```
    pub fn with_api_key(mut self, key: impl AsRef<str>) -> Self {
        add_key(&mut self.key_digests, &mut self.locked, key.as_ref());
        self
    }

    /// Accepts `key` everywhere, model management included (loading and
    /// unloading models other clients may be using). Off unless set: with
    /// only [inference keys](Self::with_api_key), no request may manage the
    /// models; with no key at all, every request may (a private server).
    /// An empty key locks the router, as for [`with_api_key`](Self::with_api_key).
    pub fn with_admin_api_key(mut self, key: impl AsRef<str>) -> Self {
        add_key(&mut self.admin_digests, &mut self.locked, key.as_ref());
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
        self.locked || !self.key_digests.is_empty() || !self.admin_digests.is_empty()
    }

    /// Whether an empty key was given, so that no key is accepted.
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// Whether `/metrics` is open without a key.
    pub fn open_metrics(&self) -> bool {
        self.open_metrics || !self.requires_key()
    }

    /// What `presented` lets a request do, or `None` if it is no key of
    /// this config. Compares SHA-256 digests in constant time, against every
    /// key, so the time taken tells nothing of how much of a key was right,
    /// nor which key matched.
    pub(crate) fn role_of(&self, presented: &[u8]) -> Option<Role> {
        if self.locked || presented.trim_ascii().is_empty() {
            return None;
        }
        let presented = digest(presented);
        let admin = matches_any(&self.admin_digests, &presented);
        let client = matches_any(&self.key_digests, &presented);
        if admin {
            Some(Role::Admin)
        } else if client {
            Some(Role::Client)
        } else {
            None
        }
    }

    #[cfg(test)]
    fn accepts(&self, presented: &[u8]) -> bool {
        self.role_of(presented).is_some()
    }
}

/// Adds `key`'s digest to `digests`; a blank key locks instead.
fn add_key(digests: &mut Vec<[u8; 32]>, locked: &mut bool, key: &str) {
    if key.trim().is_empty() {
        *locked = true;
        return;
    }
    let digest = digest(key.as_bytes());
    if !digests.contains(&digest) {
        digests.push(digest);
    }
}

/// Whether `presented` is one of `digests`, in constant time.
fn matches_any(digests: &[[u8; 32]], presented: &[u8; 32]) -> bool {
    let mut matched = 0u8;
    for key in digests {
        let diff = key
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        matched |= std::hint::black_box(u8::from(diff == 0));
    }
    matched == 1
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
            .with_api_key("beta");
        assert!(c.accepts(b"alpha") && c.accepts(b"beta"));
        assert!(!c.accepts(b"alph") && !c.accepts(b"alphaa") && !c.accepts(b""));
        assert!(!c.open_metrics());
        assert!(c.clone().with_open_metrics(true).open_metrics());
        assert!(ServerConfig::default().open_metrics());
        assert!(!ServerConfig::default().accepts(b""));
    }

    /// Regression (audit round 3): `LLAMA_SAFE_API_KEY=`, `--api-key ""` or
    /// `","` started an open server.
    #[test]
    fn an_empty_key_locks_instead_of_opening() {
        for blank in ["", " ", "\t"] {
            let c = ServerConfig::default().with_api_key(blank);
            assert!(c.requires_key() && c.is_locked(), "{blank:?}");
            assert!(!c.accepts(b"") && !c.accepts(blank.as_bytes()) && !c.accepts(b"x"));
            let c = ServerConfig::default()
                .with_api_key("good")
                .with_admin_api_key(blank);
            assert!(!c.accepts(b"good"), "a locked config accepts nothing");
        }
    }

    #[test]
    fn the_admin_key_is_a_role_of_its_own() {
        let c = ServerConfig::default()
            .with_api_key("client")
            .with_admin_api_key("admin");
        assert_eq!(c.role_of(b"client"), Some(Role::Client));
        assert_eq!(c.role_of(b"admin"), Some(Role::Admin));
        assert_eq!(c.role_of(b"other"), None);
        assert!(!Role::Client.manages_models());
        assert!(Role::Admin.manages_models() && Role::Open.manages_models());
        let admin_only = ServerConfig::default().with_admin_api_key("admin");
        assert!(admin_only.requires_key());
        assert_eq!(admin_only.role_of(b"admin"), Some(Role::Admin));
    }
}
