#!/usr/bin/env bash
# Builds llama.cpp's llama-server, the peer of the serving benchmark
# (src/bin/serve_bench.rs), into target/peers/; prints its path.
# See build-llama-peer.sh. Not run by CI (about 10 minutes on 2 cores).
exec "$(dirname "$0")/build-llama-peer.sh" llama-server
