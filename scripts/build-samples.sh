#!/usr/bin/env bash
# Builds every samples/*/*.c into a .wasm next to it (WASI preview 1, wasm32-wasi, -O2).
# The built modules are committed: a task is identified by its module's SHA-256 and its fuel
# depends on the exact bytes, so rebuilding with another toolchain changes both.
# binaryen must NOT be installed: clang runs wasm-opt when it finds one, rewriting the modules.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v clang-16 >/dev/null 2>&1 || [ ! -d /usr/include/wasm32-wasi ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y clang-16 lld-16 wasi-libc libclang-rt-16-dev-wasm32
fi
if command -v wasm-opt >/dev/null 2>&1; then
    echo "error: wasm-opt (binaryen) is installed; clang would rewrite the modules with it" >&2
    exit 1
fi

for src in samples/*/*.c; do
    out="${src%.c}.wasm"
    clang-16 --target=wasm32-wasi -O2 -o "$out" "$src"
    printf '%s  %s\n' "$(sha256sum "$out" | cut -c1-64)" "$out"
done
