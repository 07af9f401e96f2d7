// The C API that llama-sys exposes: llama.cpp, GGUF and the ggml backend API
// (devices, buffer types, RPC).
#include "llama.h"
#include "gguf.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml-rpc.h"
