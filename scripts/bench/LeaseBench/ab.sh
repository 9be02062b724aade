#!/usr/bin/env bash
# Side-by-side lease-path benchmark: the code at BASE (default 87f7c80, before the lease-path work) against HEAD,
# both built from clean exports and both running this checkout's LeaseBench program, interleaved ROUNDS times.
# usage: scripts/bench/LeaseBench/ab.sh [rounds] [base-commit] [-- sequential total concurrency]
set -euo pipefail
rounds=${1:-4}
base=${2:-87f7c80}
shift $(( $# < 2 ? $# : 2 ))
[[ ${1:-} == "--" ]] && shift
args=("${@:-300 2000 32}")
root=$(git rev-parse --show-toplevel)
work=$(mktemp -d /tmp/leasebench-ab.XXXXXX)
trap 'rm -rf "$work"' EXIT
for v in base head; do
  commit=$([[ $v == base ]] && echo "$base" || echo HEAD)
  mkdir -p "$work/$v"
  git -C "$root" archive "$commit" | tar -x -C "$work/$v"
  cp "$root/scripts/bench/LeaseBench/Program.cs" "$work/$v/scripts/bench/LeaseBench/Program.cs"
  (cd "$work/$v" && dotnet build scripts/bench/LeaseBench -c Release -v q -nologo > "$work/$v.build.log")
done
for r in $(seq 1 "$rounds"); do
  for v in base head; do
    echo "=== $v, round $r, $(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1 /proc/loadavg)"
    dotnet "$work/$v/scripts/bench/LeaseBench/bin/Release/net10.0/Potluck.Benchmarks.Lease.dll" ${args[@]} \
      | grep -E '^\| (libp2p|the task|whole|the same)|Sustained' || true  # a run with failed tasks exits 1: keep going
  done
done
