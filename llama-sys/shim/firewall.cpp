// The exception firewall: llama.cpp is C++ and several of its C entry points
// let a C++ exception escape (a grammar that reaches a dead end throws
// "Unexpected empty grammar stack" out of llama_sampler_sample; vocabulary
// lookups use std::vector::at and std::map::at; allocation can throw
// std::bad_alloc anywhere). An exception that reaches Rust aborts the
// process ("Rust cannot catch foreign exceptions"), so every such entry point
// is called through a wrapper here that catches everything and returns a
// status instead. The message of the last exception caught on this thread
// is kept for llama_sys_last_exception().
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>

#include "llama.h"
#include "guarded.h"

namespace {

thread_local std::string last_exception;

} // namespace

void llama_sys::keep_exception(const char * what) noexcept {
    try {
        last_exception = what;
    } catch (...) {
        // Out of memory while keeping the message: keep the status.
    }
}

using llama_sys::guarded;

extern "C" {

// The message of the last exception a wrapper below caught on this thread
// (empty if none). Valid until the next wrapper call on this thread.
const char * llama_sys_last_exception(void) {
    return last_exception.c_str();
}

int llama_sys_sampler_sample(llama_sampler * smpl, llama_context * ctx, int32_t idx, llama_token * out) {
    return guarded([&] { *out = llama_sampler_sample(smpl, ctx, idx); });
}

int llama_sys_sampler_accept(llama_sampler * smpl, llama_token token) {
    return guarded([&] { llama_sampler_accept(smpl, token); });
}

int llama_sys_sampler_apply(llama_sampler * smpl, llama_token_data_array * cur_p) {
    return guarded([&] { llama_sampler_apply(smpl, cur_p); });
}

int llama_sys_sampler_init_grammar(const llama_vocab * vocab, const char * grammar, const char * root,
                                   llama_sampler ** out) {
    return guarded([&] { *out = llama_sampler_init_grammar(vocab, grammar, root); });
}

// The lazy grammar: inactive until a trigger pattern matches the output (a
// std::regex, compiled here, which throws std::regex_error on a bad one) or
// a trigger token is sampled.
int llama_sys_sampler_init_grammar_lazy(const llama_vocab * vocab, const char * grammar, const char * root,
                                        const char ** patterns, size_t n_patterns, const llama_token * tokens,
                                        size_t n_tokens, llama_sampler ** out) {
    return guarded([&] {
        *out = llama_sampler_init_grammar_lazy_patterns(vocab, grammar, root, patterns, n_patterns, tokens, n_tokens);
    });
}

int llama_sys_tokenize(const llama_vocab * vocab, const char * text, int32_t text_len, llama_token * tokens,
                       int32_t n_tokens_max, bool add_special, bool parse_special, int32_t * out) {
    return guarded([&] {
        *out = llama_tokenize(vocab, text, text_len, tokens, n_tokens_max, add_special, parse_special);
    });
}

int llama_sys_token_to_piece(const llama_vocab * vocab, llama_token token, char * buf, int32_t length,
                             int32_t lstrip, bool special, int32_t * out) {
    return guarded([&] { *out = llama_token_to_piece(vocab, token, buf, length, lstrip, special); });
}

int llama_sys_detokenize(const llama_vocab * vocab, const llama_token * tokens, int32_t n_tokens, char * text,
                         int32_t text_len_max, bool remove_special, bool unparse_special, int32_t * out) {
    return guarded([&] {
        *out = llama_detokenize(vocab, tokens, n_tokens, text, text_len_max, remove_special, unparse_special);
    });
}

int llama_sys_chat_apply_template(const char * tmpl, const llama_chat_message * chat, size_t n_msg, bool add_ass,
                                  char * buf, int32_t length, int32_t * out) {
    return guarded([&] { *out = llama_chat_apply_template(tmpl, chat, n_msg, add_ass, buf, length); });
}

int llama_sys_decode(llama_context * ctx, llama_batch batch, int32_t * out) {
    return guarded([&] { *out = llama_decode(ctx, batch); });
}

} // extern "C"

// --- Memory breakdown ---------------------------------------------------------
//
// llama_get_memory_breakdown (src/llama-ext.h, a C++ API returning a std::map)
// as a C array: per buffer type, the bytes of weights, context memory (KV
// cache, recurrent state) and compute buffers, as llama.cpp's own --fit and
// memory report count them. With a context on a model loaded `no_alloc`, the
// figures are what a real load would allocate.

#include "ggml-backend.h"

#ifdef LLAMA_SYS_HAVE_EXT
#include "llama-ext.h"
#endif

extern "C" {

struct llama_sys_memory_use {
    const char * buffer_type;   // ggml_backend_buft_name, owned by ggml
    ggml_backend_dev_t device;  // NULL when the buffer type has none
    int32_t is_host;
    uint64_t model;
    uint64_t context;
    uint64_t compute;
};

// Writes up to `cap` entries into `out` and their number (which may exceed
// `cap`) into `*n`. Returns 0, 1 when llama.cpp threw (see
// llama_sys_last_exception), 2 when the llama.cpp built has no breakdown API.
int llama_sys_memory_breakdown(const llama_context * ctx, llama_sys_memory_use * out, size_t cap, size_t * n) {
#ifdef LLAMA_SYS_HAVE_EXT
    return guarded([&] {
        const llama_memory_breakdown breakdown = llama_get_memory_breakdown(ctx);
        size_t i = 0;
        for (const auto & [buft, mb] : breakdown) {
            if (i < cap) {
                out[i].buffer_type = ggml_backend_buft_name(buft);
                out[i].device = ggml_backend_buft_get_device(buft);
                out[i].is_host = ggml_backend_buft_is_host(buft) ? 1 : 0;
                out[i].model = mb.model;
                out[i].context = mb.context;
                out[i].compute = mb.compute;
            }
            i++;
        }
        *n = i;
    });
#else
    (void) ctx;
    (void) out;
    (void) cap;
    *n = 0;
    return 2;
#endif
}

} // extern "C"

// --- Where each weight landed ------------------------------------------------
//
// Every tensor of a loaded model with the buffer llama.cpp put it in: what a
// placement report needs, read from the model itself rather than from the
// loader's log wording. llama_internal_get_tensor_map is declared in
// src/llama-model.h ("for internal test use") and defined (with default
// visibility) in llama-model.cpp; it is declared here so that a build against
// an installed llama.cpp, without its sources, links it too.

#include <string>
#include <utility>
#include <vector>

#include "ggml.h"

const std::vector<std::pair<std::string, ggml_tensor *>> & llama_internal_get_tensor_map(const llama_model * model);

extern "C" {

typedef void (*llama_sys_tensor_visit)(void * user, const char * name, const char * buffer_name,
                                       const char * buffer_type, const void * buffer, size_t buffer_size);

// Calls `visit` once per model tensor, in load order, with the name of its
// buffer and of its buffer type ("" and NULL when it has none; a mapped file
// is buffer "CPU_Mapped" of type "CPU"), the buffer's identity and its size.
// Returns 0, or 1 when llama.cpp threw (see llama_sys_last_exception).
int llama_sys_model_tensors(const llama_model * model, llama_sys_tensor_visit visit, void * user) {
    return guarded([&] {
        for (const auto & [name, tensor] : llama_internal_get_tensor_map(model)) {
            ggml_backend_buffer_t buffer = tensor->buffer;
            visit(user, name.c_str(), buffer ? ggml_backend_buffer_name(buffer) : "",
                  buffer ? ggml_backend_buft_name(ggml_backend_buffer_get_type(buffer)) : "", buffer,
                  buffer ? ggml_backend_buffer_get_size(buffer) : 0);
        }
    });
}

} // extern "C"

#include "gguf.h"

extern "C" {

typedef void (*llama_sys_shape_visit)(void * user, const char * name, int32_t type, const int64_t * ne);

// Calls `visit` once per model tensor with its type and its four
// dimensions (ne). Returns 0, or 1 when llama.cpp threw.
int llama_sys_model_tensor_shapes(const llama_model * model, llama_sys_shape_visit visit, void * user) {
    return guarded([&] {
        for (const auto & [name, tensor] : llama_internal_get_tensor_map(model)) {
            visit(user, name.c_str(), (int32_t) tensor->type, tensor->ne);
        }
    });
}

// Calls `visit` once per tensor of the GGUF file at `path` (header and
// tensor table only, no data read) with its type and four dimensions.
// Returns 0, 1 when llama.cpp threw, 2 when the file is not a valid GGUF.
int llama_sys_gguf_tensor_shapes(const char * path, llama_sys_shape_visit visit, void * user) {
    int status = 2;
    const int threw = guarded([&] {
        ggml_context * meta = nullptr;
        gguf_init_params params = { /* .no_alloc = */ true, /* .ctx = */ &meta };
        gguf_context * gguf = gguf_init_from_file(path, params);
        if (gguf == nullptr) {
            return;
        }
        for (ggml_tensor * t = ggml_get_first_tensor(meta); t != nullptr; t = ggml_get_next_tensor(meta, t)) {
            visit(user, t->name, (int32_t) t->type, t->ne);
        }
        ggml_free(meta);
        gguf_free(gguf);
        status = 0;
    });
    return threw ? 1 : status;
}

} // extern "C"
