// The mirror of llama-sampler.cpp's private `struct llama_sampler_grammar`
// that shim/grammar_budget.cpp reads the parse stacks through. The build
// script proves it against the source it compiles (static_asserts on the
// size, alignment, offset and type of every field, compiled beside that
// source's own definition) and leaves the budget out, saying so, when the
// proof fails: a mirror of another version would read the wrong memory.
#pragma once

#include <string>

struct llama_vocab;
struct llama_grammar;

namespace llama_sys_mirror {

struct grammar_ctx_mirror {
    const struct llama_vocab * vocab;
    std::string grammar_str;
    std::string grammar_root;
    struct llama_grammar * grammar;
};

} // namespace llama_sys_mirror
