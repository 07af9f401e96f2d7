// Tensor-override patterns are compiled by llama.cpp with std::regex
// (ECMAScript grammar, std::regex_search). These two functions give Rust the
// exact same semantics, so a pattern can be checked before a load and a plan
// can predict which tensors it moves. No exception ever crosses into Rust.
#include <cstddef>
#include <cstring>
#include <regex>
#include <string>

extern "C" {

// Returns 1 when `pattern` compiles; otherwise 0 and the reason in `err`
// (NUL-terminated, truncated to `err_len`).
int llama_sys_regex_check(const char * pattern, char * err, size_t err_len) {
    try {
        std::regex re(pattern);
        (void) re;
        return 1;
    } catch (const std::exception & e) {
        if (err != nullptr && err_len > 0) {
            std::strncpy(err, e.what(), err_len - 1);
            err[err_len - 1] = '\0';
        }
        return 0;
    } catch (...) {
        if (err != nullptr && err_len > 0) {
            err[0] = '\0';
        }
        return 0;
    }
}

// Compiles `pattern` once and searches each of the `n` texts with it,
// writing 1 (found) or 0 to `found[i]`. Returns 0, or -1 when the pattern
// does not compile or matching failed.
int llama_sys_regex_search_many(const char * pattern, const char * const * texts, size_t n, int * found) {
    try {
        std::regex re(pattern);
        for (size_t i = 0; i < n; i++) {
            found[i] = std::regex_search(std::string(texts[i]), re) ? 1 : 0;
        }
        return 0;
    } catch (...) {
        return -1;
    }
}

// Returns 1 when `pattern` is found in `text` (std::regex_search), 0 when not,
// -1 when the pattern does not compile or matching failed.
int llama_sys_regex_search(const char * pattern, const char * text) {
    int found = 0;
    return llama_sys_regex_search_many(pattern, &text, 1, &found) == 0 ? found : -1;
}

}
