//! Safe llama.cpp.
