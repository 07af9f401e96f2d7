/*
 * The binding-overhead baseline: the greedy loop of llama-safe's
 * `LlamaModel::generate` written against llama.cpp's C API, timed the same
 * way (see GenerationStats), printing one JSON object on stdout.
 *
 *   greedy MODEL PROMPT MAX_TOKENS THREADS N_CTX N_GPU_LAYERS IGNORE_EOS
 *
 * Built by the workspace's build.rs against the static libraries llama-sys
 * built, with the link line llama-sys uses (DEP_LLAMA_LINK_ARGS); run by
 * src/bin/moe_bench.rs interleaved with the Rust path.
 */
#define _POSIX_C_SOURCE 199309L
#include "llama.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Peak resident memory (VmHWM) in bytes, or -1 where /proc is missing. */
static long long peak_rss_bytes(void) {
    FILE * f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long long kib = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmHWM:", 6) == 0) { kib = atoll(line + 6); break; }
    }
    fclose(f);
    return kib < 0 ? -1 : kib * 1024;
}

static void quiet(enum ggml_log_level level, const char * text, void * data) {
    (void) level; (void) text; (void) data;
}

int main(int argc, char ** argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s MODEL PROMPT MAX_TOKENS THREADS N_CTX N_GPU_LAYERS IGNORE_EOS\n", argv[0]);
        return 2;
    }
    const char * path = argv[1];
    const char * prompt = argv[2];
    const int max_tokens = atoi(argv[3]);
    const int threads = atoi(argv[4]);
    const int n_ctx = atoi(argv[5]);
    const int n_gpu_layers = atoi(argv[6]);
    const int ignore_eos = atoi(argv[7]);

    llama_log_set(quiet, NULL);
    llama_backend_init();

    double t0 = now_ms();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = n_gpu_layers;
    struct llama_model * model = llama_model_load_from_file(path, mp);
    if (!model) { fprintf(stderr, "load failed\n"); return 1; }
    double load_ms = now_ms() - t0;
    const struct llama_vocab * vocab = llama_model_get_vocab(model);

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "context failed\n"); return 1; }

    double start = now_ms();
    int n_prompt = -llama_tokenize(vocab, prompt, (int) strlen(prompt), NULL, 0, true, true);
    llama_token * tokens = malloc(sizeof(llama_token) * n_prompt);
    llama_tokenize(vocab, prompt, (int) strlen(prompt), tokens, n_prompt, true, true);
    struct llama_sampler * smpl = llama_sampler_chain_init(llama_sampler_chain_default_params());
    if (ignore_eos && llama_vocab_eos(vocab) != LLAMA_TOKEN_NULL) {
        /* as llama-safe does: a -inf bias on EOS before the greedy pick */
        llama_logit_bias bias = { llama_vocab_eos(vocab), -INFINITY };
        llama_sampler_chain_add(smpl, llama_sampler_init_logit_bias(llama_vocab_n_tokens(vocab), 1, &bias));
    }
    llama_sampler_chain_add(smpl, llama_sampler_init_greedy());
    const int n_batch = (int) llama_n_batch(ctx);
    for (int i = 0; i < n_prompt; i += n_batch) {
        int n = n_prompt - i < n_batch ? n_prompt - i : n_batch;
        if (llama_decode(ctx, llama_batch_get_one(tokens + i, n)) != 0) {
            fprintf(stderr, "prompt decode failed\n");
            return 1;
        }
    }
    double prompt_done = now_ms();

    double first = -1, last = prompt_done;
    int generated = 0;
    const char * stop = "MaxTokens";
    char text[4096] = {0};
    size_t text_len = 0;
    while (generated < max_tokens) {
        llama_token tok = llama_sampler_sample(smpl, ctx, -1);
        last = now_ms();
        if (first < 0) first = last;
        if (llama_vocab_is_eog(vocab, tok)) { stop = "EndOfGeneration"; break; }
        generated++;
        char piece[256];
        int len = llama_token_to_piece(vocab, tok, piece, sizeof piece, 0, false);
        if (len > 0 && text_len + (size_t) len < sizeof text) {
            memcpy(text + text_len, piece, (size_t) len);
            text_len += (size_t) len;
        }
        if (generated < max_tokens && llama_decode(ctx, llama_batch_get_one(&tok, 1)) != 0) {
            fprintf(stderr, "decode failed\n");
            return 1;
        }
    }

    printf("{\"load_ms\":%.4f,\"prompt_tokens\":%d,\"generated_tokens\":%d,"
           "\"ttft_ms\":%.4f,\"prompt_ms\":%.4f,\"generation_ms\":%.4f,\"stop\":\"%s\",\"text\":\"",
           load_ms, n_prompt, generated, first < 0 ? 0.0 : first - start,
           prompt_done - start, last - prompt_done, stop);
    for (size_t i = 0; i < text_len; i++) {
        unsigned char c = (unsigned char) text[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    long long rss = peak_rss_bytes();
    if (rss >= 0) printf("\",\"peak_rss_bytes\":%lld}\n", rss);
    else printf("\",\"peak_rss_bytes\":null}\n");

    free(tokens);
    llama_sampler_free(smpl);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
