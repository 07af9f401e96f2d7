//! libmtmd, the multimodal library of llama.cpp (`tools/mtmd`): a model's
//! projector (`mmproj`) file turns images and audio into embeddings the
//! language model reads. Built with the `mtmd` feature.
//!
//! The raw C API of `mtmd.h` and `mtmd-helper.h`, and the firewall wrappers
//! (`llama_sys_mtmd_*`, see `shim/mtmd_firewall.cpp`) that return 1 instead
//! of letting a C++ exception out; the message is then in
//! [`llama_sys_last_exception`](crate::llama_sys_last_exception).

#[allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code,
    clippy::all,
    rustdoc::all
)]
mod bindings {
    #[cfg(llama_sys_generated_bindings)]
    include!(concat!(env!("OUT_DIR"), "/mtmd_bindings.rs"));
    #[cfg(not(llama_sys_generated_bindings))]
    include!("mtmd_bindings.rs");
}

pub use bindings::*;

use crate::{ggml_backend_dev_t, llama_context, llama_model, llama_pos, llama_seq_id};
use core::ffi::{c_char, c_int, c_uchar};

/// One device's bytes in [`llama_sys_mtmd_memory_usage`]'s answer.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct llama_sys_mtmd_device_bytes {
    /// The device (ggml's registry), NULL for none.
    pub device: ggml_backend_dev_t,
    /// Bytes of weights and compute buffers on it.
    pub bytes: u64,
}

extern "C" {
    /// `mtmd_get_memory_usage` (a C++ API) as a C array: what loading
    /// `path` with `params` would allocate per device, from a dry run.
    /// Writes up to `cap` entries and their count (which may exceed `cap`)
    /// into `*n` (0 when the dry run failed); `*image_max_tokens` is the
    /// image token limit (-1: none).
    pub fn llama_sys_mtmd_memory_usage(
        path: *const c_char,
        params: mtmd_context_params,
        out: *mut llama_sys_mtmd_device_bytes,
        cap: usize,
        n: *mut usize,
        image_max_tokens: *mut i32,
    ) -> c_int;

    /// `mtmd_init_from_file`, firewalled: `*out` is NULL on failure.
    pub fn llama_sys_mtmd_init_from_file(
        path: *const c_char,
        model: *const llama_model,
        params: mtmd_context_params,
        out: *mut *mut mtmd_context,
    ) -> c_int;

    /// `mtmd_bitmap_init`, firewalled (it copies `nx * ny * 3` bytes).
    pub fn llama_sys_mtmd_bitmap_init(
        nx: u32,
        ny: u32,
        data: *const c_uchar,
        out: *mut *mut mtmd_bitmap,
    ) -> c_int;

    /// `mtmd_bitmap_init_from_audio`, firewalled (it copies the samples).
    pub fn llama_sys_mtmd_bitmap_init_from_audio(
        n_samples: usize,
        data: *const f32,
        out: *mut *mut mtmd_bitmap,
    ) -> c_int;

    /// `mtmd_bitmap_set_id`, firewalled.
    pub fn llama_sys_mtmd_bitmap_set_id(bitmap: *mut mtmd_bitmap, id: *const c_char) -> c_int;

    /// `mtmd_input_chunks_init`, firewalled.
    pub fn llama_sys_mtmd_input_chunks_init(out: *mut *mut mtmd_input_chunks) -> c_int;

    /// `mtmd_input_chunk_copy`, firewalled.
    pub fn llama_sys_mtmd_input_chunk_copy(
        chunk: *const mtmd_input_chunk,
        out: *mut *mut mtmd_input_chunk,
    ) -> c_int;

    /// `mtmd_tokenize`, firewalled; its status in `*out`.
    pub fn llama_sys_mtmd_tokenize(
        ctx: *const mtmd_context,
        output: *mut mtmd_input_chunks,
        text: *const mtmd_input_text,
        bitmaps: *const *const mtmd_bitmap,
        n_bitmaps: usize,
        out: *mut i32,
    ) -> c_int;

    /// `mtmd_encode_chunk`, firewalled; its status in `*out`.
    pub fn llama_sys_mtmd_encode_chunk(
        ctx: *mut mtmd_context,
        chunk: *const mtmd_input_chunk,
        out: *mut i32,
    ) -> c_int;

    /// `mtmd_helper_eval_chunk_single`, firewalled; its status in `*out`.
    pub fn llama_sys_mtmd_helper_eval_chunk_single(
        ctx: *mut mtmd_context,
        lctx: *mut llama_context,
        chunk: *const mtmd_input_chunk,
        n_past: llama_pos,
        seq_id: llama_seq_id,
        n_batch: i32,
        logits_last: bool,
        new_n_past: *mut llama_pos,
        out: *mut i32,
    ) -> c_int;

    /// `mtmd_helper_decode_image_chunk` (no callback), firewalled; its
    /// status in `*out`.
    pub fn llama_sys_mtmd_helper_decode_image_chunk(
        ctx: *mut mtmd_context,
        lctx: *mut llama_context,
        chunk: *const mtmd_input_chunk,
        encoded_embd: *mut f32,
        n_past: llama_pos,
        seq_id: llama_seq_id,
        n_batch: i32,
        new_n_past: *mut llama_pos,
        out: *mut i32,
    ) -> c_int;
}
