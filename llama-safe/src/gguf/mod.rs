//! GGUF files: a reader over llama.cpp's own GGUF parser (metadata and the
//! tensor table, no weights) and a small writer for files this project makes
//! itself (the demo models, test files).

pub(crate) mod reader;
mod writer;

pub use reader::{GgufFile, TensorInfo};
pub use writer::{GgmlType, GgufWriter, MetaValue};
