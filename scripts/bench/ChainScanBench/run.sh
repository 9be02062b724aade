#!/usr/bin/env bash
# The requester's per-round and per-lease ledger work as its history grows, side by side: the code at BASE (default
# 307dad1, before stop 40) against HEAD, both built from clean exports running this checkout's ChainScanBench program,
# interleaved ROUNDS times (see Program.cs for what is filled and timed).
# usage: scripts/bench/ChainScanBench/run.sh [rounds] [base-commit] [H list, default 0,10000,100000]
set -euo pipefail
rounds=${1:-1}
base=${2:-307dad1}
sizes=${3:-0,10000,100000}
root=$(git rev-parse --show-toplevel)
work=$(mktemp -d /tmp/chainscan-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
for v in base head; do
  if [[ $v == head ]]; then commit=HEAD; else commit=$base; fi
  echo "# $v = $(git -C "$root" rev-parse --short "$commit")"
  mkdir -p "$work/$v"
  git -C "$root" archive "$commit" | tar -x -C "$work/$v"
  mkdir -p "$work/$v/scripts/bench/ChainScanBench"
  cp "$root/scripts/bench/ChainScanBench/Program.cs" "$root/scripts/bench/ChainScanBench/ChainScanBench.csproj" "$work/$v/scripts/bench/ChainScanBench/"
  (cd "$work/$v" && dotnet build scripts/bench/ChainScanBench -c Release -v q -nologo > "$work/$v.build.log" 2>&1) \
    || { cat "$work/$v.build.log"; exit 1; }
done
for r in $(seq 1 "$rounds"); do
  for v in base head; do
    echo "=== $v, round $r, $(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1 /proc/loadavg)"
    dotnet "$work/$v/scripts/bench/ChainScanBench/bin/Release/net10.0/Potluck.Benchmarks.ChainScan.dll" "$sizes"
  done
done
