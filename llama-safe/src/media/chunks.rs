//! [`MediaChunks`]: a prompt split by [`Projector::tokenize`] into text and
//! media chunks.

use super::Projector;
use crate::error::{Error, Result};
use crate::Token;
use llama_safe_sys::mtmd;
use std::ffi::CStr;
use std::ptr::NonNull;

/// What a [`Chunk`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChunkKind {
    /// Tokens of text.
    Text,
    /// One image (or a tile of one), as the encoder's input.
    Image,
    /// One audio clip (or a window of one).
    Audio,
}

/// A tokenized prompt with media: text chunks and media chunks, in order.
pub struct MediaChunks {
    raw: NonNull<mtmd::mtmd_input_chunks>,
    projector: Projector,
}

// SAFETY: the chunks are plain data (tokens, preprocessed pixels, ids)
// owned by this value; every method takes `&self` and only reads, and the
// projector handle is Send + Sync.
unsafe impl Send for MediaChunks {}
// SAFETY: as above.
unsafe impl Sync for MediaChunks {}

impl Drop for MediaChunks {
    fn drop(&mut self) {
        // SAFETY: raw came from mtmd_input_chunks_init and is freed once;
        // chunks borrowed from it (`Chunk<'_>`) cannot outlive `self`.
        unsafe { mtmd::mtmd_input_chunks_free(self.raw.as_ptr()) };
    }
}

impl std::fmt::Debug for MediaChunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl MediaChunks {
    /// An empty list, for `mtmd_tokenize` to fill.
    pub(crate) fn empty(projector: Projector) -> Result<MediaChunks> {
        // SAFETY: a constructor; a std::bad_alloc is caught by the firewall.
        let raw = crate::ffi::guarded_non_null(
            "mtmd_input_chunks_init",
            |out| unsafe { mtmd::llama_sys_mtmd_input_chunks_init(out) },
            |reason| Error::Media {
                what: "chunks".into(),
                reason,
            },
        )?;
        Ok(MediaChunks { raw, projector })
    }

    /// Number of chunks.
    pub fn len(&self) -> usize {
        // SAFETY: raw is live.
        unsafe { mtmd::mtmd_input_chunks_size(self.raw.as_ptr()) }
    }

    /// Whether there are no chunks.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Chunk `i`.
    pub fn get(&self, i: usize) -> Option<Chunk<'_>> {
        if i >= self.len() {
            return None;
        }
        // SAFETY: i is below the size; the chunk lives as long as `self`,
        // which the returned borrow cannot outlive.
        let raw = unsafe { mtmd::mtmd_input_chunks_get(self.raw.as_ptr(), i) };
        NonNull::new(raw.cast_mut()).map(|raw| Chunk { raw, chunks: self })
    }

    /// The chunks in order.
    pub fn iter(&self) -> impl Iterator<Item = Chunk<'_>> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// KV cache cells the prompt takes: the tokens of every chunk.
    pub fn n_tokens(&self) -> usize {
        self.iter().map(|c| c.n_tokens()).sum()
    }

    /// Positions the prompt takes (fewer than tokens where media use
    /// M-RoPE).
    pub fn n_pos(&self) -> u32 {
        self.iter().map(|c| c.n_pos()).sum()
    }

    /// The projector that made them.
    pub fn projector(&self) -> &Projector {
        &self.projector
    }

    pub(crate) fn as_ptr(&self) -> *mut mtmd::mtmd_input_chunks {
        self.raw.as_ptr()
    }
}

/// One chunk of [`MediaChunks`], borrowed from it.
#[derive(Clone, Copy)]
pub struct Chunk<'a> {
    raw: NonNull<mtmd::mtmd_input_chunk>,
    chunks: &'a MediaChunks,
}

impl std::fmt::Debug for Chunk<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("kind", &self.kind())
            .field("n_tokens", &self.n_tokens())
            .field("n_pos", &self.n_pos())
            .finish()
    }
}

impl<'a> Chunk<'a> {
    /// Text, image or audio.
    pub fn kind(&self) -> ChunkKind {
        // SAFETY: the chunk is live while its list is.
        match unsafe { mtmd::mtmd_input_chunk_get_type(self.raw.as_ptr()) } {
            mtmd::MTMD_INPUT_CHUNK_TYPE_IMAGE => ChunkKind::Image,
            mtmd::MTMD_INPUT_CHUNK_TYPE_AUDIO => ChunkKind::Audio,
            _ => ChunkKind::Text,
        }
    }

    /// Tokens (KV cache cells) it takes.
    pub fn n_tokens(&self) -> usize {
        // SAFETY: the chunk is live.
        unsafe { mtmd::mtmd_input_chunk_get_n_tokens(self.raw.as_ptr()) }
    }

    /// Positions it takes (fewer than tokens for an M-RoPE image).
    pub fn n_pos(&self) -> u32 {
        // SAFETY: the chunk is live.
        u32::try_from(unsafe { mtmd::mtmd_input_chunk_get_n_pos(self.raw.as_ptr()) }).unwrap_or(0)
    }

    /// A media chunk's id: its [`Bitmap::id`](super::Bitmap::id). `None` for text.
    pub fn id(&self) -> Option<String> {
        // SAFETY: the chunk is live; the id is NULL for text, else a
        // NUL-terminated string it owns, copied out here.
        let id = unsafe { mtmd::mtmd_input_chunk_get_id(self.raw.as_ptr()) };
        (!id.is_null()).then(|| unsafe { CStr::from_ptr(id) }.to_string_lossy().into_owned())
    }

    /// A text chunk's tokens (empty for media).
    pub fn tokens(&self) -> &'a [Token] {
        let mut n = 0usize;
        // SAFETY: the chunk is live as long as 'a; for text it returns its
        // n tokens, owned by the chunk (NULL otherwise). Token is
        // #[repr(transparent)] over llama_token (i32).
        unsafe {
            let ptr = mtmd::mtmd_input_chunk_get_tokens_text(self.raw.as_ptr(), &mut n);
            if ptr.is_null() || n == 0 {
                return &[];
            }
            std::slice::from_raw_parts(ptr.cast::<Token>(), n)
        }
    }

    /// The projector whose chunks these are.
    pub fn projector(&self) -> &'a Projector {
        self.chunks.projector()
    }

    pub(crate) fn as_ptr(&self) -> *const mtmd::mtmd_input_chunk {
        self.raw.as_ptr()
    }
}
