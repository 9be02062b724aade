#!/usr/bin/env bash
# Sandbox vs native: builds the samples natively with clang-16 (the compiler of the committed .wasm
# modules, with the same flags: scripts/build-samples.sh --print-cflags) and with gcc -O2 (a second
# native column), and times them against the committed .wasm modules run in Potluck's WasmSandbox
# (fuel metering, epoch interruption, NaN canonicalisation, deterministic relaxed SIMD, no threads),
# interleaved, best of RUNS each. Ratios and their geometric mean are printed against both natives
# (target <= 2.5x). Then the per-call cost of a tiny module (samples/testmods/exitcode.wasm).
# With --breakdown last: also each sample on plain Wasmtime with parts of the instrumentation on.
# Usage: scripts/bench/sandbox-vs-native.sh [RUNS] [CALLS] [--breakdown]
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS="${1:-3}"
CALLS="${2:-2000}"
BREAKDOWN="${3:-}"
NATIVE="$(mktemp -d)"
trap 'rm -rf "$NATIVE"' EXIT

CFLAGS="$(scripts/build-samples.sh --print-cflags)"
for name in hashchain matmul render; do
    # shellcheck disable=SC2086
    clang-16 $CFLAGS -o "$NATIVE/$name.clang" "samples/$name/$name.c"
    gcc -O2 -o "$NATIVE/$name.gcc" "samples/$name/$name.c"
done
echo "native: $(clang-16 --version | head -1), $CFLAGS  |  $(gcc --version | head -1), -O2"
echo "wasm:   committed samples/*/*.wasm (clang-16 --target=wasm32-wasi $CFLAGS -msimd128)"
dotnet build -c Release scripts/bench/SandboxBench -v quiet -nologo > "$NATIVE/build.log" || { cat "$NATIVE/build.log"; exit 1; }
dotnet scripts/bench/SandboxBench/bin/Release/net10.0/Potluck.SandboxBench.dll "$PWD" "$NATIVE" "$RUNS" "$CALLS" $BREAKDOWN
