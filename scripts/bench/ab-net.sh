#!/usr/bin/env bash
# Side-by-side libp2p benchmark of two commits: /perf throughput Potluck↔Potluck and handshakes per second, each commit
# built from a clean export with its own Bench program, run interleaved ROUNDS times (the machines are shared and noisy:
# compare the ratios within a round).
# usage: scripts/bench/ab-net.sh [rounds] [base-commit] [bytes-per-direction] [runs] [handshakes] [head-commit]
set -euo pipefail
rounds=${1:-3}
base=${2:-f28b605}
size=${3:-134217728}
runs=${4:-3}
handshakes=${5:-3000}
head=${6:-HEAD}
root=$(git rev-parse --show-toplevel)
work=$(mktemp -d /tmp/bench-ab.XXXXXX)
trap 'rm -rf "$work"' EXIT
for v in base head; do
  commit=$([[ $v == base ]] && echo "$base" || echo "$head")
  mkdir -p "$work/$v"
  git -C "$root" archive "$commit" | tar -x -C "$work/$v"
  (cd "$work/$v" && dotnet build scripts/bench/Bench -c Release -v q -nologo > "$work/$v.build.log") || { cat "$work/$v.build.log"; exit 1; }
  ln -s "$root/tests/Interop/js/node_modules" "$work/$v/tests/Interop/js/node_modules" 2>/dev/null || true
done
echo "# base $(git -C "$root" rev-parse --short "$base"), head $(git -C "$root" rev-parse --short "$head"); $((size >> 20)) MiB per direction, median of $runs; $handshakes handshakes"
# The order alternates between rounds (base first in odd rounds, head first in even ones), so neither build always runs
# into the load the other one left; each round ends with head/base ratios of the figures (CPU per /perf run: the
# process's CPU seconds over the measured runs, up and down together).
for r in $(seq 1 "$rounds"); do
  order="base head"; [[ $((r % 2)) -eq 0 ]] && order="head base"
  for v in $order; do
    echo "=== $v, round $r, $(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1 /proc/loadavg)"
    (cd "$work/$v" && dotnet scripts/bench/Bench/bin/Release/net10.0/Potluck.Benchmarks.dll "$size" "$runs" "$handshakes" potluck,hs) \
      | grep -E '^\| Potluck|^Handshakes|µs of this|^#   run' | tee "$work/$v.round" || true
  done
  awk -v r="$r" '
    FNR == 1 { f++ }
    /^\| Potluck/ { split($0, c, "|"); up[f] = c[3] + 0; down[f] = c[4] + 0 }
    /µs of this/ { for (i = 1; i <= NF; i++) if ($i == "µs") cpu[f] = $(i - 1) + 0 }
    /^Handshakes/ { for (i = 1; i <= NF; i++) if ($i == "Potluck") hs[f] = $(i + 1) + 0 }
    /^#   run/ { for (i = 2; i < NF; i++) if ($i == "s" && $(i + 1) == "of") { v = $(i - 1); gsub(/[(]/, "", v); perfcpu[f] += v } }
    END {
      printf "--- round %d, head/base: /perf up %.2f, down %.2f, CPU per /perf run %.2f; handshakes/s %.2f; CPU per handshake %.2f\n", r,
        (up[1] ? up[2] / up[1] : 0), (down[1] ? down[2] / down[1] : 0), (perfcpu[1] ? perfcpu[2] / perfcpu[1] : 0),
        (hs[1] ? hs[2] / hs[1] : 0), (cpu[1] ? cpu[2] / cpu[1] : 0)
    }' "$work/base.round" "$work/head.round"
done
