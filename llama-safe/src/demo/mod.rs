//! A small, deterministic demo model written by this crate, so examples,
//! tests and benches run on a fresh machine with nothing downloaded.
//!
//! The model is a real llama-architecture GGUF with Mixtral-style experts
//! (`ffn_gate_inp`, `ffn_{gate,up,down}_exps` in Q8_0, 4 experts, 2 used per
//! token) and a SentencePiece vocabulary with byte fallback. Its embeddings
//! and output head encode a next-word table, and its attention and experts
//! are small random weights that never change the argmax, so greedy decoding
//! of [`DEMO_PROMPT`] continues with [`DEMO_CONTINUATION`]. The dense variant
//! has the same vocabulary and sentence with a plain FFN instead of experts.

mod family;
mod projector;

pub use family::Family;
pub use projector::{DemoAudioProjector, DemoProjector};

use crate::error::{Error, Result};
use crate::gguf::{GgmlType, GgufWriter, MetaValue};
use std::path::{Path, PathBuf};

/// The prompt the demo model continues.
pub const DEMO_PROMPT: &str = "Once upon a time";
/// What greedy decoding of [`DEMO_PROMPT`] produces, up to end-of-generation.
pub const DEMO_CONTINUATION: &str = " there lived one tiny model with many experts.";

/// The sentence the next-word table encodes, word by word; "." then ends it.
const SENTENCE: [&str; 12] = [
    "Once", "upon", "a", "time", "there", "lived", "one", "tiny", "model", "with", "many",
    "experts",
];

/// Bumped whenever the file's content changes, so caches refresh.
const VERSION: u32 = 1;

const N_CTX: u64 = 512;

/// The shape of a generated MoE model: the demo model's, or a bigger one for
/// measurements (see [`SyntheticMoe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticMoe {
    /// Layers (blocks).
    pub n_layer: u32,
    /// Embedding width (at least 16, a multiple of `n_head` and of 32).
    pub n_embd: u32,
    /// Hidden width of each expert (a multiple of 32).
    pub n_ff: u32,
    /// Experts per layer.
    pub n_expert: u32,
    /// Experts used per token.
    pub n_expert_used: u32,
    /// Attention heads.
    pub n_head: u32,
    /// Storage type of the expert tensors.
    pub expert_type: GgmlType,
}

impl SyntheticMoe {
    /// The demo model's shape.
    pub const DEMO: SyntheticMoe = SyntheticMoe {
        n_layer: 4,
        n_embd: 64,
        n_ff: 64,
        n_expert: 4,
        n_expert_used: 2,
        n_head: 4,
        expert_type: GgmlType::Q8_0,
    };

    /// Bytes of the expert tensors (what `with_cpu_moe_all` moves).
    pub fn expert_bytes(&self) -> u64 {
        let elems = 3 * u64::from(self.n_embd) * u64::from(self.n_ff) * u64::from(self.n_expert);
        u64::from(self.n_layer) * self.expert_type.row_bytes(elems)
    }

    /// Writes a model of this shape to `path`: the demo vocabulary and
    /// next-word table, small random attention and expert weights (they
    /// compute exactly like trained ones, so timings and memory are real).
    /// The whole file is built in memory first (about its size).
    ///
    /// ```no_run
    /// use llama_safe::demo::SyntheticMoe;
    /// use llama_safe::gguf::GgmlType;
    /// // About 0.8 GiB, 97% of it experts.
    /// let shape = SyntheticMoe { n_layer: 8, n_embd: 1024, n_ff: 1024, n_expert: 32, n_expert_used: 4, n_head: 8, expert_type: GgmlType::Q8_0 };
    /// shape.write("moe-0.8g.gguf".as_ref())?;
    /// # Ok::<(), llama_safe::Error>(())
    /// ```
    pub fn write(&self, path: &Path) -> Result<()> {
        Family::Mixtral.write(self, path)
    }

    fn check(&self) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::InvalidParameter {
                name: "SyntheticMoe",
                reason: reason.into(),
            })
        };
        if self.n_layer == 0 || self.n_expert == 0 || self.n_head == 0 {
            return bad("layers, experts and heads must be at least 1".into());
        }
        if self.n_expert_used == 0 || self.n_expert_used > self.n_expert {
            return bad(format!(
                "{} experts used of {}",
                self.n_expert_used, self.n_expert
            ));
        }
        if self.n_embd < 16
            || self.n_embd % self.n_head != 0
            || self.n_embd % 32 != 0
            || self.n_ff % 32 != 0
        {
            return bad(format!(
                "n_embd {} must be a multiple of 32 and of n_head {}, n_ff {} a multiple of 32",
                self.n_embd, self.n_head, self.n_ff
            ));
        }
        Ok(())
    }
}

/// Which demo model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoModel {
    /// Mixture of experts: 4 layers, 4 experts, 2 used per token.
    Moe,
    /// The same model with a dense FFN: nothing for MoE overrides to move.
    Dense,
}

impl DemoModel {
    fn file_name(self) -> String {
        match self {
            DemoModel::Moe => format!("demo-moe-v{VERSION}.gguf"),
            DemoModel::Dense => format!("demo-dense-v{VERSION}.gguf"),
        }
    }

    /// Number of layers (blocks).
    pub fn block_count(self) -> u32 {
        SyntheticMoe::DEMO.n_layer
    }

    /// Writes the model to `path`.
    pub fn write(self, path: &Path) -> Result<()> {
        build_family(self, Family::Mixtral, &SyntheticMoe::DEMO)?.write_to(path)
    }

    /// The model's path in the cache folder, writing it on first use.
    ///
    /// The folder is `LLAMA_SAFE_CACHE_DIR` if set, else `llama-safe` in the
    /// user's cache folder (`$XDG_CACHE_HOME` or `~/.cache` on Linux,
    /// `~/Library/Caches` on macOS, Local AppData on Windows), else in the
    /// system temp folder.
    ///
    /// ```
    /// let path = llama_safe::demo::DemoModel::Moe.cached()?;
    /// assert!(path.exists());
    /// # Ok::<(), llama_safe::Error>(())
    /// ```
    pub fn cached(self) -> Result<PathBuf> {
        cached_file(&self.file_name(), |path| self.write(path))
    }
}

/// A LoRA adapter for [`DemoModel::Moe`] (and `Dense`) that changes one
/// step of its sentence in a known way: after "tiny" it says "many" instead
/// of "model", so the continuation of [`DEMO_PROMPT`] becomes
/// `" there lived one tiny many experts."`. Rank 1, on `output.weight`.
#[derive(Debug, Clone, Copy)]
pub struct DemoLora;

impl DemoLora {
    /// What the demo model continues [`DEMO_PROMPT`] with, the adapter on.
    pub const CONTINUATION: &'static str = " there lived one tiny many experts.";

    /// Writes the adapter to `path`.
    pub fn write(path: &Path) -> Result<()> {
        let n_embd = u64::from(SyntheticMoe::DEMO.n_embd);
        let vocab = Vocab::new();
        let n_vocab = vocab.tokens.len() as u64;
        // After "tiny" (word 7 of the sentence, one-hot direction 7 of the
        // hidden state), move the logits from "model" to "many".
        let k = SENTENCE.iter().position(|w| *w == "tiny").expect("tiny");
        let mut a = vec![0f32; n_embd as usize];
        a[k] = 1.0;
        let mut b = vec![0f32; n_vocab as usize];
        b[vocab.id("▁many")] = 4.0;
        b[vocab.id("▁model")] = -4.0;
        let mut w = GgufWriter::new();
        w.meta("general.architecture", MetaValue::Str("llama".into()))
            .meta("general.type", MetaValue::Str("adapter".into()))
            .meta("adapter.type", MetaValue::Str("lora".into()))
            // alpha / rank = 1: the scale given at apply time is the scale.
            .meta("adapter.lora.alpha", MetaValue::F32(1.0));
        w.tensor("output.weight.lora_a", &[n_embd, 1], GgmlType::F32, &a)?;
        w.tensor("output.weight.lora_b", &[1, n_vocab], GgmlType::F32, &b)?;
        w.write_to(path)
    }

    /// The adapter's path in the cache folder (as for
    /// [`DemoModel::cached`]), writing it on first use.
    pub fn cached() -> Result<PathBuf> {
        cached_file(&format!("demo-lora-v{VERSION}.gguf"), Self::write)
    }
}

/// `file` in the cache folder, written by `write` when it is not there yet.
fn cached_file(file: &str, write: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source: source.into(),
    })?;
    let path = dir.join(file);
    if !path.is_file() {
        write(&path)?;
    }
    Ok(path)
}

fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LLAMA_SAFE_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("llama-safe")
}

/// splitmix64: a tiny deterministic generator for the small weights.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // uniform in [-1, 1)
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn fill(&mut self, n: u64, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// The vocabulary: special tokens, 256 byte tokens, then word pieces (every
/// prefix of each `▁word`, so SentencePiece merges reach whole words).
struct Vocab {
    tokens: Vec<String>,
    types: Vec<i32>,
    scores: Vec<f32>,
}

impl Vocab {
    fn new() -> Vocab {
        const NORMAL: i32 = 1;
        const UNKNOWN: i32 = 2;
        const CONTROL: i32 = 3;
        const BYTE: i32 = 6;
        let mut v = Vocab {
            tokens: Vec::new(),
            types: Vec::new(),
            scores: Vec::new(),
        };
        let push = |v: &mut Vocab, text: String, ty: i32| {
            if !v.tokens.contains(&text) {
                v.scores.push(-(v.tokens.len() as f32));
                v.tokens.push(text);
                v.types.push(ty);
            }
        };
        push(&mut v, "<unk>".into(), UNKNOWN);
        push(&mut v, "<s>".into(), CONTROL);
        push(&mut v, "</s>".into(), CONTROL);
        for b in 0..=255u8 {
            push(&mut v, format!("<0x{b:02X}>"), BYTE);
        }
        for piece in ["▁", ".", ","] {
            push(&mut v, piece.into(), NORMAL);
        }
        for word in SENTENCE {
            let piece: Vec<char> = format!("▁{word}").chars().collect();
            for end in 2..=piece.len() {
                push(&mut v, piece[..end].iter().collect(), NORMAL);
            }
        }
        v
    }

    fn id(&self, text: &str) -> usize {
        self.tokens
            .iter()
            .position(|t| t == text)
            .expect("demo vocabulary piece")
    }
}

/// The writer for `kind` laid out as `family` (the dense demo model is
/// llama-style only): the shared vocabulary, next-word table and attention,
/// then each block's feed-forward as `family` has it.
fn build_family(kind: DemoModel, family: Family, shape: &SyntheticMoe) -> Result<GgufWriter> {
    let n_embd = u64::from(shape.n_embd);
    let n_expert = u64::from(shape.n_expert);
    let n_layer = u64::from(shape.n_layer);
    let vocab = Vocab::new();
    let n_vocab = vocab.tokens.len() as u64;
    let mut rng = Rng(0x5EED_0001);
    let mut w = GgufWriter::new();
    let arch = family.arch();
    let key = |name: &str| format!("{arch}.{name}");
    let name = match (kind, family) {
        (DemoModel::Moe, Family::Mixtral) if *shape == SyntheticMoe::DEMO => {
            "llama-safe demo MoE".to_string()
        }
        // The architecture, not `Family::name`: llama.cpp's vocabulary loader
        // treats a model named "phi-3..." as having Phi-3's special tokens.
        (DemoModel::Moe, _) => format!("llama-safe synthetic {arch}"),
        (DemoModel::Dense, _) => "llama-safe demo dense".to_string(),
    };
    w.meta("general.architecture", MetaValue::Str(arch.into()))
        .meta("general.name", MetaValue::Str(name))
        .meta(&key("context_length"), MetaValue::U32(N_CTX as u32))
        .meta(&key("embedding_length"), MetaValue::U32(shape.n_embd))
        .meta(&key("block_count"), MetaValue::U32(shape.n_layer))
        .meta(&key("feed_forward_length"), MetaValue::U32(shape.n_ff))
        .meta(&key("attention.head_count"), MetaValue::U32(shape.n_head))
        .meta(&key("attention.head_count_kv"), MetaValue::U32(shape.n_head))
        .meta(
            &key("rope.dimension_count"),
            MetaValue::U32(shape.n_embd / shape.n_head),
        )
        .meta(&key("attention.layer_norm_rms_epsilon"), MetaValue::F32(1e-5))
        .meta(&key("vocab_size"), MetaValue::U32(n_vocab as u32))
        .meta("tokenizer.ggml.model", MetaValue::Str("llama".into()))
        .meta("tokenizer.ggml.tokens", MetaValue::StrArray(vocab.tokens.clone()))
        .meta("tokenizer.ggml.scores", MetaValue::F32Array(vocab.scores.clone()))
        .meta("tokenizer.ggml.token_type", MetaValue::I32Array(vocab.types.clone()))
        .meta("tokenizer.ggml.unknown_token_id", MetaValue::U32(0))
        .meta("tokenizer.ggml.bos_token_id", MetaValue::U32(1))
        .meta("tokenizer.ggml.eos_token_id", MetaValue::U32(2))
        .meta("tokenizer.ggml.add_bos_token", MetaValue::Bool(true))
        .meta("tokenizer.ggml.add_eos_token", MetaValue::Bool(false))
        .meta(
            "tokenizer.chat_template",
            MetaValue::Str(
                "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}".into(),
            ),
        );
    if kind == DemoModel::Moe {
        w.meta(&key("expert_count"), MetaValue::U32(shape.n_expert))
            .meta(
                &key("expert_used_count"),
                MetaValue::U32(shape.n_expert_used),
            );
        family.metadata(&mut w, shape);
    }

    // Next-word table: word k of the sentence is the one-hot direction k of
    // the embedding; the output row of its successor points the same way.
    let chain: Vec<usize> = SENTENCE
        .iter()
        .map(|word| vocab.id(&format!("▁{word}")))
        .chain([vocab.id("."), 2])
        .collect();
    let mut embd = rng.fill(n_vocab * n_embd, 0.05);
    let mut output = vec![0f32; (n_vocab * n_embd) as usize];
    for (k, pair) in chain.windows(2).enumerate() {
        let (token, next) = (pair[0], pair[1]);
        let row = &mut embd[token * n_embd as usize..][..n_embd as usize];
        row.fill(0.0);
        row[k] = 1.0;
        output[next * n_embd as usize + k] = 2.0;
    }
    w.tensor(
        "token_embd.weight",
        &[n_embd, n_vocab],
        GgmlType::F32,
        &embd,
    )?;
    w.tensor(
        "output_norm.weight",
        &[n_embd],
        GgmlType::F32,
        &vec![1.0; n_embd as usize],
    )?;
    w.tensor("output.weight", &[n_embd, n_vocab], GgmlType::F32, &output)?;
    let mut tensors = family::Tensors {
        w: &mut w,
        rng: &mut rng,
    };
    family.output_extras(&mut tensors, n_embd, n_vocab)?;
    for layer in 0..n_layer {
        let t = |name: &str| format!("blk.{layer}.{name}.weight");
        tensors.ones(&t("attn_norm"), n_embd)?;
        for name in ["attn_q", "attn_k", "attn_v", "attn_output"] {
            tensors.random(&t(name), &[n_embd, n_embd], GgmlType::F16, 0.02)?;
        }
        family.attention_extras(&mut tensors, layer, shape)?;
        if family.has_ffn_norm() {
            tensors.ones(&t("ffn_norm"), n_embd)?;
        }
        let ffn = match kind {
            DemoModel::Dense => family::Ffn::Dense,
            DemoModel::Moe => family.ffn(layer),
        };
        match ffn {
            family::Ffn::Dense => {
                let dims = [
                    [n_embd, u64::from(shape.n_ff)],
                    [n_embd, u64::from(shape.n_ff)],
                    [u64::from(shape.n_ff), n_embd],
                ];
                for (name, dims) in ["ffn_gate", "ffn_up", "ffn_down"].iter().zip(dims) {
                    tensors.random(&t(name), &dims, GgmlType::Q8_0, 0.02)?;
                }
            }
            family::Ffn::Experts => {
                tensors.random(&t("ffn_gate_inp"), &[n_embd, n_expert], GgmlType::F32, 0.1)?;
                let n_ff = u64::from(shape.n_ff);
                let dims = [
                    [n_embd, n_ff, n_expert],
                    [n_embd, n_ff, n_expert],
                    [n_ff, n_embd, n_expert],
                ];
                for (name, dims) in family::EXPERT_TENSORS.iter().zip(dims) {
                    tensors.random(&t(name), &dims, shape.expert_type, 0.02)?;
                }
            }
        }
        family.ffn_extras(&mut tensors, layer, ffn, shape)?;
    }
    Ok(w)
}
