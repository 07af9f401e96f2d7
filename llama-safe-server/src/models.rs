//! Many models behind one server: the ones a [`Catalog`] found, loaded when
//! a request names one, at most `max_resident` at a time, the least
//! recently used idle one unloaded first, each kept for its keep-alive
//! after its last request (Ollama's `keep_alive`), and a load refused with
//! 503 when its dry-run plan does not fit the memory budget beside what is
//! resident. A model is unloaded only when no request uses it.
//!
//! A request uses a model while it holds its `Arc<AppState>`: the
//! handler, and the task that streams its answer, each hold one; the model
//! is idle when only this pool does.

use crate::catalog::{Catalog, Entry, Kind, Sources};
use crate::error::ApiError;
use crate::presets::{Preset, Presets};
use crate::AppState;
use axum::http::StatusCode;
use llama_safe::context::MemoryUse;
use llama_safe::engine::EngineConfig;
use llama_safe::{LlamaBackend, LlamaModel, LlamaModelParams};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// How long a model stays loaded after its last request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Until it is unloaded for room, or by request.
    Forever,
    /// This long after its last request ends (zero: at once).
    For(Duration),
}

impl KeepAlive {
    /// Ollama's `keep_alive`: a duration string (`"5m"`, `"30s"`, `"1h"`,
    /// `"250ms"`, `"0"`), or a number of seconds; negative is forever.
    ///
    /// ```
    /// use llama_safe_server::models::KeepAlive;
    /// use std::time::Duration;
    /// assert_eq!(KeepAlive::parse(&"5m".into()), Ok(KeepAlive::For(Duration::from_secs(300))));
    /// assert_eq!(KeepAlive::parse(&"1h30m".into()), Ok(KeepAlive::For(Duration::from_secs(5400))));
    /// assert_eq!(KeepAlive::parse(&"-1m".into()), Ok(KeepAlive::Forever));
    /// assert_eq!(KeepAlive::parse(&0.into()), Ok(KeepAlive::For(Duration::ZERO)));
    /// assert_eq!(KeepAlive::parse(&(-1).into()), Ok(KeepAlive::Forever));
    /// assert!(KeepAlive::parse(&"soon".into()).is_err());
    /// // Neither an empty string nor an infinity: refused, not read as 0 or forever.
    /// for bad in ["", " ", "inf", "-inf", "NaN", "infinity"] {
    ///     assert!(KeepAlive::parse(&bad.into()).is_err(), "{bad:?}");
    /// }
    /// ```
    pub fn parse(value: &serde_json::Value) -> Result<KeepAlive, String> {
        let bad = || {
            format!(
                "`keep_alive` must be a duration like \"5m\" or a number of seconds, not {value}"
            )
        };
        let seconds = |s: f64| {
            if !s.is_finite() {
                Err(bad())
            } else if s < 0.0 {
                Ok(KeepAlive::Forever)
            } else if s.is_finite() && s < 1e9 {
                Ok(KeepAlive::For(Duration::from_secs_f64(s)))
            } else {
                Err(bad())
            }
        };
        match value {
            serde_json::Value::Number(n) => seconds(n.as_f64().ok_or_else(bad)?),
            serde_json::Value::String(s) => {
                let s = s.trim();
                // An empty string is no duration (Ollama refuses it too);
                // "inf" and "nan" are no number of seconds.
                if s.is_empty() {
                    return Err(bad());
                }
                if let Ok(n) = s.parse::<f64>() {
                    return seconds(n);
                }
                // Go's durations, as Ollama takes them: "1h30m", "-1m", "250ms".
                let (sign, mut rest) = match s.strip_prefix('-') {
                    Some(r) => (-1.0, r),
                    None => (1.0, s),
                };
                let mut total = 0.0;
                while !rest.is_empty() {
                    let digits = rest
                        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                        .ok_or_else(bad)?;
                    let n: f64 = rest[..digits].parse().map_err(|_| bad())?;
                    rest = &rest[digits..];
                    let unit = rest
                        .find(|c: char| c.is_ascii_digit())
                        .unwrap_or(rest.len());
                    let scale = match &rest[..unit] {
                        "ns" => 1e-9,
                        "us" | "µs" => 1e-6,
                        "ms" => 1e-3,
                        "s" => 1.0,
                        "m" => 60.0,
                        "h" => 3600.0,
                        _ => return Err(bad()),
                    };
                    total += n * scale;
                    rest = &rest[unit..];
                }
                seconds(sign * total)
            }
            _ => Err(bad()),
        }
    }
}

/// What a pool is configured by.
#[derive(Clone)]
pub struct ModelsConfig {
    sources: Sources,
    presets: Presets,
    max_resident: usize,
    keep_alive: KeepAlive,
    memory_budget: Option<u64>,
    load_timeout: Duration,
    engine: EngineConfig,
    params: LlamaModelParams,
}

impl ModelsConfig {
    /// Models from `sources`, with the defaults: at most 3 resident, kept 5
    /// minutes after their last request, no memory budget, a load may take
    /// 5 minutes, [`EngineConfig::default`] and [`LlamaModelParams::default`]
    /// under each model's preset.
    pub fn new(sources: Sources) -> ModelsConfig {
        ModelsConfig {
            sources,
            presets: Presets::default(),
            max_resident: 3,
            keep_alive: KeepAlive::For(Duration::from_secs(300)),
            memory_budget: None,
            load_timeout: Duration::from_secs(300),
            engine: EngineConfig::default(),
            params: LlamaModelParams::default(),
        }
    }
    /// Per-model settings.
    pub fn with_presets(mut self, presets: Presets) -> Self {
        self.presets = presets;
        self
    }
    /// Most models loaded at once (at least 1).
    pub fn with_max_resident(mut self, n: usize) -> Self {
        self.max_resident = n.max(1);
        self
    }
    /// How long a model stays after its last request, unless a request
    /// says otherwise.
    pub fn with_keep_alive(mut self, keep: KeepAlive) -> Self {
        self.keep_alive = keep;
        self
    }
    /// Bytes the resident models may plan for in all (weights, KV cache,
    /// compute buffers, host and devices, from each one's dry run).
    pub fn with_memory_budget(mut self, bytes: u64) -> Self {
        self.memory_budget = Some(bytes);
        self
    }
    /// How long a request waits for its model to load before 503.
    pub fn with_load_timeout(mut self, timeout: Duration) -> Self {
        self.load_timeout = timeout;
        self
    }
    /// The engine of every model, before its preset.
    pub fn with_engine(mut self, engine: EngineConfig) -> Self {
        self.engine = engine;
        self
    }
    /// The load params of every model, before its preset.
    pub fn with_params(mut self, params: LlamaModelParams) -> Self {
        self.params = params;
        self
    }
}

/// A loaded model and its bookkeeping.
struct Resident {
    state: Arc<AppState>,
    planned_bytes: u64,
    keep_alive: KeepAlive,
    /// Since when no request has used it (seen by the sweeper).
    idle_since: Option<Instant>,
    last_used: Instant,
    /// Never unloaded (the one model of a single-model server).
    pinned: bool,
}

type LoadResult = Option<Result<Arc<AppState>, ApiError>>;

enum Slot {
    Loading(watch::Receiver<LoadResult>),
    Resident(Resident),
}

/// Where a model stands for a request.
enum Step {
    Ready(Arc<AppState>),
    Wait(watch::Receiver<LoadResult>),
    Missing,
}

/// A resident model as `/api/ps` shows it.
#[derive(Clone)]
pub struct Loaded {
    /// Its state (model, engine, metrics).
    pub state: Arc<AppState>,
    /// Bytes its dry run planned.
    pub planned_bytes: u64,
    /// When it unloads if no request comes (`None`: kept, or in use).
    pub expires_at: Option<SystemTime>,
}

/// The pool.
pub struct Models {
    config: Option<ModelsConfig>,
    backend: LlamaBackend,
    catalog: Mutex<Catalog>,
    slots: Mutex<BTreeMap<String, Slot>>,
    sweeping: std::sync::OnceLock<()>,
    loads: std::sync::atomic::AtomicU64,
    /// When a request for an unknown name last rescanned the sources.
    last_rescan: Mutex<Option<Instant>>,
}

/// A request for a name not found rescans the sources at most this often
/// (a client sending random names must not keep the disks busy).
const RESCAN_INTERVAL: Duration = Duration::from_secs(10);

impl Models {
    /// A pool of the models `config`'s sources hold (scanned now).
    pub fn new(backend: &LlamaBackend, config: ModelsConfig) -> Arc<Models> {
        let catalog = Catalog::scan(&config.sources);
        Arc::new(Models {
            config: Some(config),
            backend: backend.clone(),
            catalog: Mutex::new(catalog),
            slots: Mutex::new(BTreeMap::new()),
            sweeping: std::sync::OnceLock::new(),
            loads: Default::default(),
            last_rescan: Mutex::new(None),
        })
    }

    /// A pool of one model, loaded, never unloaded: a single-model server.
    pub fn single(state: Arc<AppState>) -> Arc<Models> {
        let mut slots = BTreeMap::new();
        slots.insert(
            state.model_name.clone(),
            Slot::Resident(Resident {
                state,
                planned_bytes: 0,
                keep_alive: KeepAlive::Forever,
                idle_since: None,
                last_used: Instant::now(),
                pinned: true,
            }),
        );
        Arc::new(Models {
            config: None,
            backend: LlamaBackend::init(),
            catalog: Mutex::new(Catalog::default()),
            slots: Mutex::new(slots),
            sweeping: std::sync::OnceLock::new(),
            loads: Default::default(),
            last_rescan: Mutex::new(None),
        })
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn catalog(&self) -> std::sync::MutexGuard<'_, Catalog> {
        self.catalog.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks the pool's presets against the models its scan found (see
    /// [`Presets::check_against`]): the binary refuses to start otherwise.
    pub fn check_presets(&self) -> Result<(), crate::presets::PresetError> {
        let Some(config) = &self.config else {
            return Ok(());
        };
        let catalog = self.catalog();
        config
            .presets
            .check_against(catalog.entries().map(|e| e.name.as_str()))
    }

    /// Scans the sources again (the models loaded stay).
    pub fn rescan(&self) {
        if let Some(config) = &self.config {
            let catalog = Catalog::scan(&config.sources);
            *self.catalog() = catalog;
        }
    }

    /// Loads started since the pool was made.
    pub fn loads(&self) -> u64 {
        self.loads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The name a request's `model` means: an alias's model, `default`'s
    /// (an alias, else the only model), or the name.
    pub fn resolve(&self, requested: Option<&str>) -> Result<String, ApiError> {
        let slots = self.slots();
        if self.config.is_none() {
            // One model: every name is checked later, against it.
            return Ok(slots.keys().next().cloned().unwrap_or_default());
        }
        let config = self.config.as_ref().expect("checked above");
        let name = requested.unwrap_or("default");
        let resolved = config.presets.resolve(name);
        if resolved != name || name != "default" {
            return Ok(resolved.to_string());
        }
        let catalog = self.catalog();
        let mut models = catalog.chat_models();
        match (models.next(), models.next()) {
            (Some(only), None) => Ok(only.name.clone()),
            _ => Err(ApiError::bad(
                "model",
                "this server serves several models: name one in `model` (GET /v1/models lists them)",
            )),
        }
    }

    /// The model `requested` names, loaded if it is not (waiting for a load
    /// under way, one load per model), with `keep_alive` for after this
    /// request if given.
    pub async fn acquire(
        self: &Arc<Models>,
        requested: Option<&str>,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Arc<AppState>, ApiError> {
        self.start_sweeper();
        let name = self.resolve(requested)?;
        let mut rx = match self.lookup(&name, keep_alive) {
            Step::Ready(state) => return Ok(state),
            Step::Wait(rx) => rx,
            Step::Missing => {
                if self.config.is_none() {
                    return Err(not_found(&name, self.slots().keys()));
                }
                let entry = self.entry(&name).ok_or_else(|| {
                    not_found(&name, self.catalog().chat_models().map(|e| &e.name))
                })?;
                match self.start_load(entry, keep_alive) {
                    Step::Ready(state) => return Ok(state),
                    Step::Wait(rx) => rx,
                    Step::Missing => {
                        return Err(ApiError::status(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "the load did not start",
                        ))
                    }
                }
            }
        };
        let timeout = self
            .config
            .as_ref()
            .map_or(Duration::from_secs(300), |c| c.load_timeout);
        let result = tokio::time::timeout(timeout, async {
            loop {
                if let Some(result) = rx.borrow_and_update().clone() {
                    return result;
                }
                if rx.changed().await.is_err() {
                    return Err(ApiError::status(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the load was abandoned",
                    ));
                }
            }
        })
        .await
        .map_err(|_| {
            ApiError::status(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("model {name:?} did not load within {timeout:?}; retry later"),
            )
        })??;
        if let (Some(k), Some(Slot::Resident(r))) = (keep_alive, self.slots().get_mut(&name)) {
            r.keep_alive = k;
        }
        Ok(result)
    }

    /// The model if it is loaded (touched, with `keep_alive` set), or the
    /// load to wait for.
    fn lookup(&self, name: &str, keep_alive: Option<KeepAlive>) -> Step {
        let mut slots = self.slots();
        match slots.get_mut(name) {
            Some(Slot::Resident(r)) => {
                r.last_used = Instant::now();
                r.idle_since = None;
                if let (Some(k), false) = (keep_alive, r.pinned) {
                    r.keep_alive = k;
                }
                Step::Ready(r.state.clone())
            }
            Some(Slot::Loading(rx)) => Step::Wait(rx.clone()),
            None => Step::Missing,
        }
    }

    /// Starts loading `entry` unless another request did meanwhile.
    fn start_load(self: &Arc<Models>, entry: Entry, keep_alive: Option<KeepAlive>) -> Step {
        let mut slots = self.slots();
        let name = entry.name.clone();
        if slots.contains_key(&name) {
            drop(slots);
            return self.lookup(&name, keep_alive);
        }
        let (tx, rx) = watch::channel(None);
        slots.insert(name, Slot::Loading(rx.clone()));
        let keep = keep_alive.unwrap_or(
            self.config
                .as_ref()
                .map_or(KeepAlive::Forever, |c| c.keep_alive),
        );
        let pool = self.clone();
        tokio::spawn(async move { pool.load(entry, keep, tx).await });
        Step::Wait(rx)
    }

    /// The catalog's chat model named `name` (scanning again if it is not
    /// there and the last such scan is [`RESCAN_INTERVAL`] old: a file may
    /// have appeared).
    fn entry(&self, name: &str) -> Option<Entry> {
        let find = |c: &Catalog| c.get(name).filter(|e| e.kind == Kind::Model).cloned();
        if let Some(e) = find(&self.catalog()) {
            return Some(e);
        }
        {
            let mut last = self.last_rescan.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < RESCAN_INTERVAL) {
                return None;
            }
            *last = Some(Instant::now());
        }
        self.rescan();
        find(&self.catalog())
    }

    /// Plans, makes room, loads; tells the waiters.
    async fn load(
        self: Arc<Models>,
        entry: Entry,
        keep_alive: KeepAlive,
        tx: watch::Sender<LoadResult>,
    ) {
        self.loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = entry.name.clone();
        let result = self.clone().load_inner(entry, keep_alive).await;
        let mut slots = self.slots();
        match &result {
            Ok((state, planned_bytes)) => {
                slots.insert(
                    name,
                    Slot::Resident(Resident {
                        state: state.clone(),
                        planned_bytes: *planned_bytes,
                        keep_alive,
                        idle_since: None,
                        last_used: Instant::now(),
                        pinned: false,
                    }),
                );
            }
            Err(_) => {
                slots.remove(&name);
            }
        }
        drop(slots);
        let _ = tx.send(Some(result.map(|(state, _)| state)));
    }

    async fn load_inner(
        self: Arc<Models>,
        entry: Entry,
        _keep: KeepAlive,
    ) -> Result<(Arc<AppState>, u64), ApiError> {
        let config = self.config.clone().expect("a pool with sources");
        let preset = config.presets.for_model(&entry.name);
        let (mut params, mut engine) = settings(&config, &preset)?;
        if preset.fit == Some(true) {
            // Fit the offload and context to the devices' free memory.
            let (path, p, ctx) = (entry.path.clone(), params.clone(), engine.context_params());
            let fitted = tokio::task::spawn_blocking(move || {
                p.fit(&path, &ctx, &llama_safe::FitOptions::default())
            })
            .await
            .map_err(internal)?
            .map_err(|e| load_error(&entry.name, &e))?;
            engine = engine.with_n_ctx(fitted.n_ctx());
            params = fitted.params;
        }
        let planned = {
            let (path, params, ctx) = (entry.path.clone(), params.clone(), engine.context_params());
            tokio::task::spawn_blocking(move || params.memory_plan(&path, &ctx))
                .await
                .map_err(internal)?
                .map_err(|e| load_error(&entry.name, &e))?
        };
        let planned_bytes: u64 = planned.iter().map(MemoryUse::total).sum();
        let evicted = self.make_room(&entry.name, planned_bytes, &config)?;
        drop_states(evicted).await;
        let backend = self.backend.clone();
        let aliases = config.presets.aliases_of(&entry.name).to_vec();
        let name = entry.name.clone();
        let state = tokio::task::spawn_blocking(move || {
            let model = LlamaModel::load(&backend, &entry.path, &params)?;
            AppState::new_with_aliases(model, name, aliases, engine)
        })
        .await
        .map_err(internal)?
        .map_err(|e| load_error(&entry.name, &e))?;
        Ok((state, planned_bytes))
    }

    /// Unloads idle models, least recently used first, until one more of
    /// `bytes` fits the count and the budget; 503 when it cannot.
    fn make_room(
        &self,
        name: &str,
        bytes: u64,
        config: &ModelsConfig,
    ) -> Result<Vec<Arc<AppState>>, ApiError> {
        let mut slots = self.slots();
        let mut evicted = Vec::new();
        loop {
            let others = slots.iter().filter(|(n, _)| n.as_str() != name);
            let count = others.clone().count();
            let used: u64 = others
                .filter_map(|(_, s)| match s {
                    Slot::Resident(r) => Some(r.planned_bytes),
                    Slot::Loading(_) => None,
                })
                .sum();
            let over_count = count >= config.max_resident;
            let over_budget = config.memory_budget.is_some_and(|b| used + bytes > b);
            if !over_count && !over_budget {
                return Ok(evicted);
            }
            let lru = slots
                .iter()
                .filter_map(|(n, s)| match s {
                    Slot::Resident(r) if !r.pinned && Arc::strong_count(&r.state) == 1 => {
                        Some((r.last_used, n.clone()))
                    }
                    _ => None,
                })
                .min();
            let Some((_, victim)) = lru else {
                let why = if over_budget {
                    let budget = config.memory_budget.unwrap_or_default();
                    format!(
                        "model {name:?} needs {} MiB; {} MiB of the {} MiB budget are planned by models in use",
                        bytes >> 20,
                        used >> 20,
                        budget >> 20
                    )
                } else {
                    format!(
                        "{count} models are loaded (the most is {}) and all are in use",
                        config.max_resident
                    )
                };
                // The room a budget cannot give even empty is never coming.
                let never = config.memory_budget.is_some_and(|b| bytes > b);
                drop(slots);
                drop_states_blocking(evicted);
                let message = if never {
                    format!(
                        "model {name:?} needs {} MiB, more than the whole budget of {} MiB",
                        bytes >> 20,
                        config.memory_budget.unwrap_or_default() >> 20
                    )
                } else {
                    format!("{why}; retry later")
                };
                return Err(ApiError::status(StatusCode::SERVICE_UNAVAILABLE, message));
            };
            if let Some(Slot::Resident(r)) = slots.remove(&victim) {
                evicted.push(r.state);
            }
        }
    }

    /// Unloads `requested` now if idle, else when its requests end (its
    /// keep-alive set to zero). Whether it was loaded; a name that is no
    /// model of this pool is 404, as for a load.
    pub fn unload(&self, requested: &str) -> Result<bool, ApiError> {
        let name = self.resolve(Some(requested))?;
        let mut slots = self.slots();
        let Some(Slot::Resident(r)) = slots.get_mut(&name) else {
            let known = slots.contains_key(&name);
            drop(slots);
            if known || self.catalog().get(&name).is_some() {
                return Ok(false);
            }
            let catalog = self.catalog();
            return Err(not_found(&name, catalog.chat_models().map(|e| &e.name)));
        };
        if self.config.is_none() && !r.state.answers_to(requested) {
            let known = [r.state.model_name.clone()];
            return Err(not_found(requested, known.iter()));
        }
        if r.pinned {
            return Err(ApiError::bad(
                "model",
                "this server's one model cannot be unloaded",
            ));
        }
        r.keep_alive = KeepAlive::For(Duration::ZERO);
        if Arc::strong_count(&r.state) == 1 {
            if let Some(Slot::Resident(r)) = slots.remove(&name) {
                drop(slots);
                drop_states_blocking(vec![r.state]);
            }
        }
        Ok(true)
    }

    /// The models loaded now.
    pub fn loaded(&self) -> Vec<Loaded> {
        let now_sys = SystemTime::now();
        self.slots()
            .values()
            .filter_map(|s| match s {
                Slot::Resident(r) => Some(Loaded {
                    state: r.state.clone(),
                    planned_bytes: r.planned_bytes,
                    expires_at: match (r.keep_alive, r.idle_since, r.pinned) {
                        (KeepAlive::For(d), Some(since), false) => {
                            Some(now_sys + d.saturating_sub(since.elapsed()))
                        }
                        _ => None,
                    },
                }),
                Slot::Loading(_) => None,
            })
            .collect()
    }

    /// Every model found (single-model servers: none; see [`loaded`](Self::loaded)).
    pub fn available(&self) -> Vec<Entry> {
        self.catalog().chat_models().cloned().collect()
    }

    /// Whether `name` is loaded.
    pub fn is_loaded(&self, name: &str) -> bool {
        matches!(self.slots().get(name), Some(Slot::Resident(_)))
    }

    /// Whether this pool serves one model only.
    pub fn is_single(&self) -> bool {
        self.config.is_none()
    }

    /// Stops every engine taking requests (at shutdown).
    pub fn close(&self) {
        for slot in self.slots().values() {
            if let Slot::Resident(r) = slot {
                r.state.engine.close();
            }
        }
    }

    /// Unloads idle models whose keep-alive has run out, twice a second.
    fn start_sweeper(self: &Arc<Models>) {
        if self.config.is_none() {
            return;
        }
        self.sweeping.get_or_init(|| {
            let weak: Weak<Models> = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    let Some(pool) = weak.upgrade() else { return };
                    let expired = pool.sweep();
                    drop(pool);
                    drop_states(expired).await;
                }
            });
        });
    }

    fn sweep(&self) -> Vec<Arc<AppState>> {
        let mut slots = self.slots();
        let now = Instant::now();
        let mut expired = Vec::new();
        for slot in slots.values_mut() {
            if let Slot::Resident(r) = slot {
                if Arc::strong_count(&r.state) > 1 {
                    r.idle_since = None;
                } else {
                    r.idle_since.get_or_insert(now);
                }
            }
        }
        let names: Vec<String> = slots
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Resident(r) if !r.pinned && matches!((r.keep_alive, r.idle_since), (KeepAlive::For(d), Some(since)) if now.duration_since(since) >= d)))
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            if let Some(Slot::Resident(r)) = slots.remove(&name) {
                expired.push(r.state);
            }
        }
        expired
    }
}

/// The load params and engine of a model: the pool's, under its preset.
fn settings(
    config: &ModelsConfig,
    preset: &Preset,
) -> Result<(LlamaModelParams, EngineConfig), ApiError> {
    let mut params = preset.model_params(config.params.clone());
    if let Some(file) = &preset.chat_template_file {
        let template = llama_safe::chat::read_template_file(file)
            .map_err(|e| ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        params = params.with_chat_template(template);
    }
    Ok((params, preset.engine_config(config.engine.clone())))
}

/// Makes the C allocator give memory back when a model is unloaded: with
/// glibc, blocks of 256 KiB or more (a model's KV cache, compute buffers)
/// are always mapped on their own and unmapped when freed, instead of the
/// threshold rising after the first such free and later ones staying in the
/// heap, fragmented. Process-wide, so it is the program's choice: the
/// `llama-safe-server` binary makes it when it serves many models. Does
/// nothing elsewhere.
pub fn release_memory_eagerly() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes any parameter and value and reports failure by
    // its result; M_MMAP_THRESHOLD accepts values up to 32 MiB.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Frees models off the async workers (an engine's thread is joined).
async fn drop_states(states: Vec<Arc<AppState>>) {
    if !states.is_empty() {
        let _ = tokio::task::spawn_blocking(move || free(states)).await;
    }
}

fn drop_states_blocking(states: Vec<Arc<AppState>>) {
    if !states.is_empty() {
        std::thread::spawn(move || free(states));
    }
}

/// Drops the models, then gives the memory the allocator keeps free back
/// to the system: glibc keeps freed memory in per-thread arenas, and a
/// model's engine threads come and go with it, so without this a server
/// that loads and unloads keeps growing by a few arenas.
fn free(states: Vec<Arc<AppState>>) {
    drop(states);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free
    // memory at the top of the heaps and unused pages of the arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// A model that cannot load: its file gone or changed is the next load's
/// error, never a crash.
fn load_error(name: &str, e: &llama_safe::Error) -> ApiError {
    let status = match e.kind() {
        llama_safe::ErrorKind::NotFound => StatusCode::NOT_FOUND,
        llama_safe::ErrorKind::ResourceExhausted => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::status(status, format!("model {name:?} cannot be loaded: {e}"))
}

fn not_found<'a>(name: &str, known: impl Iterator<Item = &'a String>) -> ApiError {
    let known: Vec<&String> = known.take(20).collect();
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!("model {name:?} not found; this server serves {known:?}"),
        param: Some("model"),
    }
}
