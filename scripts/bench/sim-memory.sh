#!/usr/bin/env bash
# Where a simulated mesh's memory goes: runs one `potluck sim` (flags passed through) and, when its warm-up ends, takes
# /proc/PID/smaps_rollup, the GC's figures (from the progress line) and a dotnet-gcdump (types by size), then lets the
# run finish and prints its report. Usage: scripts/bench/sim-memory.sh OUT-DIR potluck-sim-flags...
# At the end (the run drained, before its report; `potluck sim --hold-at-end`, the mesh frozen meanwhile) it takes the
# same again: smaps_rollup-at-end.txt, smaps-at-end.txt, at-end.gcdump, gcdump-types-at-end.txt. END_DUMP=0: only the warm-up's.
# (SIM= a build older than --hold-at-end: END_DUMP=0.) MID_DUMP_AT=S: a third dump (mid.gcdump) at the first work progress line
# at virtual >= S s (near a run's peak: the join's seconds, plus the 10 s warm-up, plus ~20 s of work).
# SIM_TIMEOUT=SECONDS: how long the run may take before it is killed (default 3600; a 3,000-node run on a loaded machine
# needs more).
# GC: DOTNET_GCConserveMemory=7 as sim-mesh.sh (potluck sim turns the background GC off), but the runtime's default gen0
# budget, not sim-mesh.sh's 64 MiB one (that trades memory for CPU): memory figures stay comparable with the README's
# earlier ones. Set DOTNET_GCgen0size=0x4000000 to measure what sim-mesh.sh runs. potluck sim hands glibc's free pages
# back every second of wall (malloc_trim; builds from 99e6993 on; POTLUCK_SIM_MALLOC_TRIM_MS=0: never, as before).
# smaps.txt / smaps-at-end.txt: scripts/bench/smaps-classes.py FILE NODES sums their RSS by kind of mapping.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$1"; shift
mkdir -p "$out"
sim="${SIM:-$root/src/Node/bin/Release/net10.0/potluck}"   # SIM=path runs another build (a before side by side)
export PATH="$PATH:$HOME/.dotnet/tools"
export DOTNET_GCConserveMemory="${DOTNET_GCConserveMemory:-7}"
# potluck sim would start itself again with its own runtime settings (README "The garbage collector's share"); here it
# runs with exactly this environment, in the process the script measures.
export POTLUCK_SIM_RUNTIME_DEFAULTS="${POTLUCK_SIM_RUNTIME_DEFAULTS:-0}"
hold=()
if [ "${END_DUMP:-1}" = 1 ]; then
  rm -f "$out/.release"
  hold=(--hold-at-end "$out/.release")
fi
timeout "${SIM_TIMEOUT:-3600}" "$sim" sim --json "$out/report.json" "${hold[@]}" "$@" >"$out/report.txt" 2>"$out/progress.txt" &
runner=$!
sleep 0.5
pid=$(pgrep -P "$runner" | head -1)   # the potluck process (timeout's child)
until grep -q "memory after warm-up" "$out/progress.txt" 2>/dev/null; do
  kill -0 "$runner" 2>/dev/null || { echo "run ended before its warm-up did" >&2; cat "$out/progress.txt" >&2; exit 1; }
  sleep 0.2
done
grep "memory after warm-up" "$out/progress.txt"
cat "/proc/$pid/smaps_rollup" >"$out/smaps_rollup.txt" || true
cat "/proc/$pid/smaps" >"$out/smaps.txt" 2>/dev/null || true   # by mapping: scripts/bench/smaps-classes.py OUT/smaps.txt NODES
grep -E "^(Threads|VmRSS|RssAnon|RssFile)" "/proc/$pid/status" >"$out/status.txt" 2>/dev/null || true
grep -E "^(Rss|Anonymous|Private_Dirty|Shared_Clean|Private_Clean)" "$out/smaps_rollup.txt" || true
dump() {   # dump NAME TYPES-FILE
  if [ "${GCDUMP:-1}" = 1 ] && command -v dotnet-gcdump >/dev/null; then   # GCDUMP=0: none (a dump forces a full GC and inflates the peak)
    dotnet-gcdump collect -p "$pid" -o "$out/$1.gcdump" >/dev/null 2>&1 \
      && dotnet-gcdump report "$out/$1.gcdump" >"$out/$2" 2>&1 \
      && head -40 "$out/$2"
  fi
}
dump after-warmup gcdump-types.txt || true
if [ -n "${MID_DUMP_AT:-}" ]; then   # MID_DUMP_AT=S: one more dump (mid.gcdump, gcdump-types-mid.txt) at the first work progress line at virtual >= S s
  until grep -a -o "virtual [0-9]* s, tasks" "$out/progress.txt" 2>/dev/null | awk -v at="$MID_DUMP_AT" '$2 >= at {f=1} END {exit !f}'; do
    kill -0 "$runner" 2>/dev/null || { echo "run ended before virtual ${MID_DUMP_AT} s" >&2; break; }
    sleep 0.2
  done
  grep -a -o "virtual [0-9]* s, tasks[^\r]*" "$out/progress.txt" | tail -1 | tee "$out/mid-at.txt"
  cat "/proc/$pid/smaps_rollup" >"$out/smaps_rollup-mid.txt" 2>/dev/null || true
  dump mid gcdump-types-mid.txt || true
fi
if [ "${END_DUMP:-1}" = 1 ]; then
  until grep -q "holding at the end" "$out/progress.txt" 2>/dev/null; do
    kill -0 "$runner" 2>/dev/null || { echo "run ended before it held at its end" >&2; cat "$out/progress.txt" >&2; exit 1; }
    sleep 0.2
  done
  grep -a -o "memory at the end[^\r]*" "$out/progress.txt" || true
  cat "/proc/$pid/smaps_rollup" >"$out/smaps_rollup-at-end.txt" || true
  cat "/proc/$pid/smaps" >"$out/smaps-at-end.txt" 2>/dev/null || true
  grep -E "^(Threads|VmRSS|RssAnon|RssFile)" "/proc/$pid/status" >"$out/status-at-end.txt" 2>/dev/null || true
  grep -E "^(Rss|Anonymous|Private_Dirty|Shared_Clean|Private_Clean)" "$out/smaps_rollup-at-end.txt" || true
  dump at-end gcdump-types-at-end.txt || true
  touch "$out/.release"
fi
wait "$runner"
cat "$out/report.txt"
