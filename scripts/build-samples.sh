#!/usr/bin/env bash
# Builds every samples/*/*.c into a .wasm next to it (WASI preview 1, wasm32-wasi).
# Flags: CFLAGS below, shared with the native builds of scripts/bench/sandbox-vs-native.sh so that the
# comparison is one compiler with one set of flags, plus -msimd128 (WebAssembly's fixed 128-bit SIMD,
# which the sandbox enables; x86-64 code gets SSE2 by default). -force-vector-interleave=2: clang's
# WebAssembly cost model never interleaves a vectorised loop, while on x86-64 it interleaves e.g.
# matmul's inner loop twice; forcing 2 on both targets gives both the same loop shape (the native
# binaries are unchanged or within noise, see the README's sandbox paragraph).
# The built modules are committed: a task is identified by its module's SHA-256 and its fuel
# depends on the exact bytes, so rebuilding with another toolchain changes both.
# binaryen must NOT be installed: clang runs wasm-opt when it finds one, rewriting the modules.
# Usage: scripts/build-samples.sh [--print-cflags]   (--print-cflags: print CFLAGS and exit)
set -euo pipefail
cd "$(dirname "$0")/.."

CFLAGS="-O2 -mllvm -force-vector-interleave=2"
if [ "${1:-}" = "--print-cflags" ]; then
    echo "$CFLAGS"
    exit 0
fi

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
    # shellcheck disable=SC2086
    clang-16 --target=wasm32-wasi $CFLAGS -msimd128 -o "$out" "$src"
    printf '%s  %s\n' "$(sha256sum "$out" | cut -c1-64)" "$out"
done
