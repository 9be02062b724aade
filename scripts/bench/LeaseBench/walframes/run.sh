#!/usr/bin/env bash
# WAL frames (pages) written per task, by node and by B-tree (table or index), in one LeaseBench run of COMMIT (default HEAD):
# builds a clean export of COMMIT with this checkout's LeaseBench program, runs `LeaseBench 1 TOTAL 32` with
# LEASEBENCH_KEEP=1 under `strace -xx -e pwrite64` (every write to each node's ledger.db-wal, with its first bytes in hex),
# takes each frame header's page number (the 24-byte header SQLite writes before each page), and maps the page to its
# B-tree with SQLite's dbstat on the kept ledger (attribute.py). Pages that changed B-tree during the run (freed and reused)
# count for their B-tree at the end; a page no B-tree holds at the end counts as "(free or gone)". Method of stop 38.
# fsyncs and statements per task: sqlstats/run.sh.
# usage: scripts/bench/LeaseBench/walframes/run.sh [commit] [total]
set -euo pipefail
commit=${1:-HEAD}
total=${2:-500}
here=$(cd "$(dirname "$0")" && pwd)
root=$(git -C "$here" rev-parse --show-toplevel)
# The build of a commit is kept in /tmp/leasebench-walframes.<hash> for the next run of the same commit (delete it after).
work=/tmp/leasebench-walframes.$(git -C "$root" rev-parse --short "$commit")
if [[ ! -f $work/scripts/bench/LeaseBench/bin/Release/net10.0/Potluck.Benchmarks.Lease.dll ]]; then
  rm -rf "$work" && mkdir -p "$work"
  git -C "$root" archive "$commit" | tar -x -C "$work"
  cp "$root/scripts/bench/LeaseBench/Program.cs" "$work/scripts/bench/LeaseBench/Program.cs"
  (cd "$work" && dotnet build scripts/bench/LeaseBench -c Release -v q -nologo -clp:ErrorsOnly > "$work/build.log" 2>&1) || { cat "$work/build.log"; exit 1; }
fi
trap 'rm -f "$work/strace.txt" "$work/out.txt"' EXIT
echo "# $(git -C "$root" rev-parse --short "$commit"), $(date -u +%Y-%m-%dT%H:%M) UTC, load $(cut -d' ' -f1 /proc/loadavg): LeaseBench 1 $total 32 under strace"
LEASEBENCH_KEEP=1 strace -f --seccomp-bpf -y -qq -xx -s 32 -e trace=pwrite64 -o "$work/strace.txt" \
  dotnet "$work/scripts/bench/LeaseBench/bin/Release/net10.0/Potluck.Benchmarks.Lease.dll" 1 "$total" 32 > "$work/out.txt" || true
grep -E '^Sustained:' "$work/out.txt" || true
kept=$(sed -n 's/^# files kept in //p' "$work/out.txt")
[[ -n $kept ]] || { cat "$work/out.txt"; exit 1; }
# Tasks in the run: 50 one at a time, the concurrent warm-up (total / 4, whole rounds of 32), 1 sequential, then total.
python3 "$here/attribute.py" "$work/strace.txt" "$kept" $(( 50 + 32 * ( total / 4 / 32 > 0 ? total / 4 / 32 : 1 ) + 1 + total ))
rm -rf "$kept"
