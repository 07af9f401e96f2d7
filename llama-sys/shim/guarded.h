// The exception firewall's one rule, shared by the shims: run a call, and
// turn any C++ exception into a status (the message is kept for
// llama_sys_last_exception(), per thread).
#pragma once

#include <exception>

namespace llama_sys {

// Keeps `what` as this thread's last exception message (firewall.cpp).
void keep_exception(const char * what) noexcept;

// Runs `f`; returns 0 when it returned normally, 1 when it threw.
template <typename F> int guarded(F && f) noexcept {
    try {
        f();
        return 0;
    } catch (const std::exception & e) {
        keep_exception(e.what());
        return 1;
    } catch (...) {
        keep_exception("unknown C++ exception");
        return 1;
    }
}

} // namespace llama_sys
