// A bound on the parse stacks of a grammar sampler. An ambiguous grammar
// (two alternatives that keep matching the same text, nested) can double
// llama.cpp's grammar stacks at every accepted token; the cost of the
// next apply and accept grows with them, to seconds and then minutes per
// token, and nothing in llama.cpp stops it. The wrapper made here passes
// every call on to the grammar sampler and, after an accept and before an
// apply, throws when the stacks exceed the limit: the exception firewall
// turns that into a status, so the request ends with an error and the
// caller's thread is free again.
//
// The stacks are read through llama-sampler.cpp's private context struct,
// mirrored in grammar_mirror.h: the build script proves the mirror against
// the source it compiles (LLAMA_SYS_GRAMMAR_MIRROR), and without that proof
// the budget is left out (llama_sys_grammar_budget_enforced() says 0).
#include <cstddef>
#include <stdexcept>
#include <string>

#include "llama.h"

#ifdef LLAMA_SYS_GRAMMAR_MIRROR
#include "llama-grammar.h"
#include "grammar_mirror.h"

namespace {

using llama_sys_mirror::grammar_ctx_mirror;

struct budget {
    llama_sampler * inner;
    size_t max_stacks;
};

void check(const budget * b) {
    const auto * g = static_cast<const grammar_ctx_mirror *>(b->inner->ctx)->grammar;
    if (g != nullptr && g->stacks.size() > b->max_stacks) {
        throw std::runtime_error("llama_sys: grammar budget: " + std::to_string(g->stacks.size()) +
                                 " parse stacks exceed the limit of " + std::to_string(b->max_stacks));
    }
}

const char * budget_name(const llama_sampler *) {
    return "grammar";
}

void budget_accept(llama_sampler * smpl, llama_token token) {
    auto * b = static_cast<budget *>(smpl->ctx);
    b->inner->iface->accept(b->inner, token);
    check(b);
}

void budget_apply(llama_sampler * smpl, llama_token_data_array * cur_p) {
    auto * b = static_cast<budget *>(smpl->ctx);
    check(b);
    b->inner->iface->apply(b->inner, cur_p);
}

void budget_reset(llama_sampler * smpl) {
    auto * b = static_cast<budget *>(smpl->ctx);
    b->inner->iface->reset(b->inner);
}

llama_sampler * budget_clone(const llama_sampler * smpl);

void budget_free(llama_sampler * smpl) {
    auto * b = static_cast<budget *>(smpl->ctx);
    llama_sampler_free(b->inner);
    delete b;
}

// Not const: llama_sampler_init takes a non-const pointer (it never writes).
llama_sampler_i budget_iface = {
    /* .name              = */ budget_name,
    /* .accept            = */ budget_accept,
    /* .apply             = */ budget_apply,
    /* .reset             = */ budget_reset,
    /* .clone             = */ budget_clone,
    /* .free              = */ budget_free,
    /* .backend_init      = */ nullptr,
    /* .backend_accept    = */ nullptr,
    /* .backend_apply     = */ nullptr,
    /* .backend_set_input = */ nullptr,
    /* .backend_reset     = */ nullptr,
    /* .copy_state        = */ nullptr,
};

llama_sampler * wrap(llama_sampler * inner, size_t max_stacks) {
    return llama_sampler_init(&budget_iface, new budget{ inner, max_stacks });
}

llama_sampler * budget_clone(const llama_sampler * smpl) {
    const auto * b = static_cast<const budget *>(smpl->ctx);
    return wrap(llama_sampler_clone(b->inner), b->max_stacks);
}

} // namespace
#endif

extern "C" {

// Wraps the grammar sampler `inner` (from llama_sampler_init_grammar*,
// owned by the result from here on) so that more than `max_stacks` parse
// stacks throw (see above). Without llama.cpp's `src/` at build time it
// returns `inner` unbounded. Never throws: 0 on success, 1 on failure
// (out of memory; `inner` is then still the caller's).
int llama_sys_grammar_budget(llama_sampler * inner, size_t max_stacks, llama_sampler ** out) {
#ifdef LLAMA_SYS_GRAMMAR_MIRROR
    try {
        *out = wrap(inner, max_stacks);
        return 0;
    } catch (...) {
        return 1;
    }
#else
    (void) max_stacks;
    *out = inner;
    return 0;
#endif
}

// Whether llama_sys_grammar_budget bounds anything in this build.
int llama_sys_grammar_budget_enforced(void) {
#ifdef LLAMA_SYS_GRAMMAR_MIRROR
    return 1;
#else
    return 0;
#endif
}

} // extern "C"
