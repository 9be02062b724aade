#!/usr/bin/env bash
# Side-by-side sandbox part of DebitNoteBench: the code at BASE (default main) against HEAD, both built from clean exports
# and both running this checkout's DebitNoteBench program, interleaved ROUNDS times (the note-cost part is skipped: 1 note).
# usage: scripts/bench/DebitNoteBench/ab.sh [rounds] [base-commit] [-- fuel-log2 slice-log2]
set -euo pipefail
rounds=${1:-2}
base=${2:-main}
shift $(( $# < 2 ? $# : 2 ))
[[ ${1:-} == "--" ]] && shift
fuel=${1:-31}
slice=${2:-24}
root=$(git rev-parse --show-toplevel)
work=$(mktemp -d /tmp/debitbench-ab.XXXXXX)
trap 'rm -rf "$work"' EXIT
for v in base head; do
  if [[ $v == head ]]; then commit=HEAD; else commit=$base; fi
  echo "# $v = $commit = $(git -C "$root" rev-parse --short "$commit")"
  mkdir -p "$work/$v"
  git -C "$root" archive "$commit" | tar -x -C "$work/$v"
  cp "$root/scripts/bench/DebitNoteBench/Program.cs" "$work/$v/scripts/bench/DebitNoteBench/Program.cs"
  (cd "$work/$v" && dotnet build scripts/bench/DebitNoteBench -c Release -v q -nologo > "$work/$v.build.log" 2>&1) \
    || { cat "$work/$v.build.log"; exit 1; }
done
dll=$(cd "$work/head/scripts/bench/DebitNoteBench/bin/Release/net10.0" && ls *.dll | grep -i debit | head -1)
for r in $(seq 1 "$rounds"); do
  for v in base head; do
    echo "=== $v, round $r, $(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1 /proc/loadavg)"
    /usr/bin/time -f "process: %e s wall, %U s user, %S s system" \
      dotnet "$work/$v/scripts/bench/DebitNoteBench/bin/Release/net10.0/$dll" 1 "$fuel" "$slice" 1 2>&1 | grep -E '^\| (calling|call-free|sandbox)|^process:'
  done
done
