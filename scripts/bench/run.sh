#!/usr/bin/env bash
# Side-by-side loopback benchmark: Potluck vs js-libp2p vs raw TCP, and handshakes per second.
# Usage: bash scripts/bench/run.sh [bytes-per-direction] [runs] [handshakes]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
[[ -d tests/Interop/js/node_modules ]] || npm ci --prefix tests/Interop/js --no-audit --no-fund --loglevel=error
dotnet run --project scripts/bench/Bench -c Release -- "$@"
