#!/usr/bin/env bash
# Sandbox vs native: builds the samples natively (-O2) and times them against the committed .wasm
# modules run in Potluck's WasmSandbox (fuel metering and determinism settings on), side by side,
# best of RUNS each, printing per-sample ratios and their geometric mean (target <= 2.5x native).
# Usage: scripts/bench/sandbox-vs-native.sh [RUNS]   (CC=gcc by default; CC=clang-16 works too)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS="${1:-3}"
CC="${CC:-gcc}"
NATIVE="$(mktemp -d)"
trap 'rm -rf "$NATIVE"' EXIT

for name in hashchain matmul render; do
    "$CC" -O2 -o "$NATIVE/$name" "samples/$name/$name.c"
done
echo "native compiler: $("$CC" --version | head -1)"
dotnet build -c Release scripts/bench/SandboxBench -v quiet -nologo > "$NATIVE/build.log" || { cat "$NATIVE/build.log"; exit 1; }
dotnet scripts/bench/SandboxBench/bin/Release/net10.0/Potluck.SandboxBench.dll "$PWD" "$NATIVE" "$RUNS"
