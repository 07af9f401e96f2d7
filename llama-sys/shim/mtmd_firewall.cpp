// The exception firewall for libmtmd (the `mtmd` feature; see firewall.cpp).
// mtmd_init_from_file, mtmd_tokenize and mtmd_encode_chunk catch
// std::exception themselves, but not everything else; the bitmap and chunk
// constructors copy caller data into std::vector (std::bad_alloc), and the
// helpers decode through llama.cpp, which throws. Every call llama-safe
// makes that allocates or computes goes through a wrapper here.
#include <cstddef>
#include <cstdint>
#include <map>

#include "guarded.h"
#include "mtmd.h"
#include "mtmd-helper.h"

using llama_sys::guarded;

extern "C" {

int llama_sys_mtmd_init_from_file(const char * path, const llama_model * model, mtmd_context_params params,
                                  mtmd_context ** out) {
    return guarded([&] { *out = mtmd_init_from_file(path, model, params); });
}

int llama_sys_mtmd_bitmap_init(uint32_t nx, uint32_t ny, const unsigned char * data, mtmd_bitmap ** out) {
    return guarded([&] { *out = mtmd_bitmap_init(nx, ny, data); });
}

int llama_sys_mtmd_bitmap_init_from_audio(size_t n_samples, const float * data, mtmd_bitmap ** out) {
    return guarded([&] { *out = mtmd_bitmap_init_from_audio(n_samples, data); });
}

int llama_sys_mtmd_bitmap_set_id(mtmd_bitmap * bitmap, const char * id) {
    return guarded([&] { mtmd_bitmap_set_id(bitmap, id); });
}

int llama_sys_mtmd_input_chunks_init(mtmd_input_chunks ** out) {
    return guarded([&] { *out = mtmd_input_chunks_init(); });
}

int llama_sys_mtmd_input_chunk_copy(const mtmd_input_chunk * chunk, mtmd_input_chunk ** out) {
    return guarded([&] { *out = mtmd_input_chunk_copy(chunk); });
}

int llama_sys_mtmd_tokenize(const mtmd_context * ctx, mtmd_input_chunks * output, const mtmd_input_text * text,
                            const mtmd_bitmap * const * bitmaps, size_t n_bitmaps, int32_t * out) {
    return guarded([&] { *out = mtmd_tokenize(ctx, output, text, bitmaps, n_bitmaps); });
}

int llama_sys_mtmd_encode_chunk(mtmd_context * ctx, const mtmd_input_chunk * chunk, int32_t * out) {
    return guarded([&] { *out = mtmd_encode_chunk(ctx, chunk); });
}

int llama_sys_mtmd_helper_eval_chunk_single(mtmd_context * ctx, llama_context * lctx, const mtmd_input_chunk * chunk,
                                            llama_pos n_past, llama_seq_id seq_id, int32_t n_batch, bool logits_last,
                                            llama_pos * new_n_past, int32_t * out) {
    return guarded([&] {
        *out = mtmd_helper_eval_chunk_single(ctx, lctx, chunk, n_past, seq_id, n_batch, logits_last, new_n_past);
    });
}

int llama_sys_mtmd_helper_decode_image_chunk(mtmd_context * ctx, llama_context * lctx, const mtmd_input_chunk * chunk,
                                             float * encoded_embd, llama_pos n_past, llama_seq_id seq_id,
                                             int32_t n_batch, llama_pos * new_n_past, int32_t * out) {
    return guarded([&] {
        *out = mtmd_helper_decode_image_chunk(ctx, lctx, chunk, encoded_embd, n_past, seq_id, n_batch, new_n_past,
                                              nullptr, nullptr);
    });
}

// mtmd_get_memory_usage (C++ API: a std::map) as a C array: what loading
// `path` with `params` would allocate per device, from a dry run of the
// loader (no_alloc). Writes up to `cap` entries and their number (which may
// exceed `cap`) into `*n`, 0 when the dry run failed (libmtmd silences its
// log for it); `*image_max_tokens` is the image token limit (-1: none).
struct llama_sys_mtmd_device_bytes {
    ggml_backend_dev_t device;
    uint64_t bytes;
};

int llama_sys_mtmd_memory_usage(const char * path, mtmd_context_params params, llama_sys_mtmd_device_bytes * out,
                                size_t cap, size_t * n, int32_t * image_max_tokens) {
    return guarded([&] {
        mtmd_memory_usage usage = mtmd_get_memory_usage(path, params);
        *image_max_tokens = usage.image_max_tokens;
        size_t i = 0;
        for (const auto & entry : usage.backend_mem_usage) {
            if (i < cap) {
                out[i].device = entry.first;
                out[i].bytes = entry.second;
            }
            i++;
        }
        *n = i;
    });
}

} // extern "C"
