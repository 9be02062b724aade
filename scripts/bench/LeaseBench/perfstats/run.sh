#!/usr/bin/env bash
# The lease path's CPU by component (stop 33's method, made rerunnable): for each COMMIT (comma-separated; HEAD is the
# checkout's committed head), a clean export built as ab.sh builds it (this checkout's LeaseBench program, or the commit's
# own where this one does not compile against it), then, ROUNDS times interleaved, LeaseBench ARGS with no tier-up
# (DOTNET_TieredCompilation=0) and every managed frame resolvable (DOTNET_PerfMapEnabled=1 DOTNET_EnableWriteXorExecute=0, and
# DOTNET_ReadyToRun=0 so that the framework's precompiled code is JIT-compiled too and named in the perf map), and
# `perf record -F 999 -g` attached from the program's "# sustained phase starting" marker until it prints its
# "Sustained:" line: the whole sustained phase, so the tasks profiled are exactly TOTAL. Each sample goes to the first
# component found from the leaf up (classify.py says which frames name which component); printed per 1,000 tasks.
# With ALLOC=1, a second run of each version attaches `dotnet-trace` (allocation ticks with stacks) to the same phase
# and prints KiB per task by type and site (scripts/bench/AllocSites; the ticks are a ~100 KB sample of the bytes).
# Run it as it is (not under nice): it runs the benchmarks under nice 10 itself.
# usage: scripts/bench/LeaseBench/perfstats/run.sh [rounds] [commit[,commit...]] [-- sequential total concurrency]
set -euo pipefail
rounds=${1:-1}
commits=${2:-069d992,HEAD}
shift $(( $# < 2 ? $# : 2 ))
[[ ${1:-} == "--" ]] && shift
args=(${@:-100 8000 32})
total=${args[1]}
here=$(cd "$(dirname "$0")" && pwd)
root=$(git -C "$here" rev-parse --show-toplevel)
work=${PERFSTATS_WORK:-$(mktemp -d /tmp/leasebench-perf.XXXXXX)}
[[ -n ${PERFSTATS_KEEP:-} ]] || trap 'rm -rf "$work"' EXIT
IFS=, read -r -a versions <<< "$commits"
for c in "${versions[@]}"; do
  d="$work/$c"
  [[ -f $d/built ]] && continue
  echo "# $c = $(git -C "$root" rev-parse --short "$c")"
  mkdir -p "$d"
  git -C "$root" archive "$c" | tar -x -C "$d"
  cp "$d/scripts/bench/LeaseBench/Program.cs" "$d.own-program.cs"
  cp "$root/scripts/bench/LeaseBench/Program.cs" "$d/scripts/bench/LeaseBench/Program.cs"
  if ! (cd "$d" && dotnet build scripts/bench/LeaseBench -c Release -v q -nologo > "$d.build.log" 2>&1); then
    echo "# $c: this checkout's program does not build against it; running its own LeaseBench program"
    cp "$d.own-program.cs" "$d/scripts/bench/LeaseBench/Program.cs"
    (cd "$d" && dotnet build scripts/bench/LeaseBench -c Release -v q -nologo > "$d.build.log" 2>&1) || { cat "$d.build.log"; exit 1; }
  fi
  touch "$d/built"
done
if [[ ${ALLOC:-0} == 1 ]]; then
  tracedir=$(ls -d ~/.dotnet/tools/.store/dotnet-trace/*/dotnet-trace/*/tools/*/any | tail -1)
  dotnet build "$root/scripts/bench/AllocSites" -c Release -v q -nologo -clp:ErrorsOnly -p:TraceDir="$tracedir" > "$work/allocsites.build.log" 2>&1 \
    || { cat "$work/allocsites.build.log"; exit 1; }
fi

# Runs one version: $1 commit, $2 round, $3 "perf" or "alloc". perf starts with the process, its events off (-D -1),
# and is switched on when the program's "# sustained phase starting" marker appears and off when its "Sustained:" line
# does (polled every 50 ms; the polling runs at normal priority, the benchmark under nice 10): the samples are those of
# the sustained phase, whose tasks are exactly TOTAL. (Attaching with -p at the marker raced the threads being made and
# recorded nothing; cutting a whole recording by time failed as perf's sample clock is not the shell's.)
profile() {
  local c=$1 r=$2 kind=$3 log="$work/$c.$2.$3.bench.log" pid prof= bench
  local dll="$work/$c/scripts/bench/LeaseBench/bin/Release/net10.0/Potluck.Benchmarks.Lease.dll"
  echo "=== $c, round $r, $kind, $(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
  : > "$log"
  : > "$log.err"
  if [[ $kind == perf ]]; then
    rm -f "$work/ctl" "$work/ack"
    mkfifo "$work/ctl" "$work/ack"
    DOTNET_TieredCompilation=0 DOTNET_ReadyToRun=0 DOTNET_PerfMapEnabled=1 DOTNET_EnableWriteXorExecute=0 \
      nice -n 10 perf record -F 999 -g -D -1 --control "fifo:$work/ctl,$work/ack" -o "$work/$c.$r.perf.data" \
      -- dotnet "$dll" "${args[@]}" > "$log" 2> "$log.err" &
  else
    DOTNET_TieredCompilation=0 nice -n 10 dotnet "$dll" "${args[@]}" > "$log" 2> "$log.err" &
  fi
  bench=$!
  until grep -q '^# sustained phase starting' "$log.err"; do
    kill -0 "$bench" 2>/dev/null || { cat "$log" "$log.err"; return 1; }
    sleep 0.05
  done
  pid=$(sed -n 's/^# sustained phase starting, pid \([0-9]*\).*/\1/p' "$log.err")
  if [[ $kind == perf ]]; then
    echo enable > "$work/ctl"
    head -c 3 "$work/ack" > /dev/null
  else
    ~/.dotnet/tools/dotnet-trace collect -p "$pid" --providers Microsoft-Windows-DotNETRuntime:0x1:5 \
      -o "$work/$c.$r.nettrace" > "$work/$c.$r.trace.record.log" 2>&1 < /dev/null & prof=$!
  fi
  until grep -q '^Sustained:' "$log"; do
    kill -0 "$bench" 2>/dev/null || break
    sleep 0.05
  done
  if [[ $kind == perf ]]; then
    echo disable > "$work/ctl"
    head -c 3 "$work/ack" > /dev/null
  fi
  [[ -n $prof ]] && { kill -INT "$prof" 2>/dev/null || true; wait "$prof" || true; }
  wait "$bench" || true
  grep -E '^Sustained|^# Potluck' "$log" || cat "$log"
  if [[ $kind == perf ]]; then
    perf script -i "$work/$c.$r.perf.data" -F comm,tid,time,ip,sym,dso 2>/dev/null | gzip -1 > "$work/$c.$r.perf.txt.gz"
    rm -f "$work/$c.$r.perf.data"
    # The samples stay (gzipped text) for sites.py: zcat FILE | python3 sites.py TOTAL COMPONENT [DEPTH] [TOP]
    zcat "$work/$c.$r.perf.txt.gz" | python3 "$here/classify.py" "$total" "$c, round $r" | tee "$work/$c.$r.components"
  else
    dotnet "$root/scripts/bench/AllocSites/bin/Release/net10.0/AllocSites.dll" "$work/$c.$r.nettrace" 1 100000 \
      | python3 "$here/alloc-per-task.py" "$total" "${ALLOC_TOP:-25}" | tee "$work/$c.$r.alloc"
    [[ -n ${PERFSTATS_KEEP:-} ]] || rm -f "$work/$c.$r.nettrace" "$work/$c.$r.nettrace.etlx"
  fi
}
for r in $(seq 1 "$rounds"); do
  for c in "${versions[@]}"; do profile "$c" "$r" perf; done
done
if [[ ${ALLOC:-0} == 1 ]]; then
  for c in "${versions[@]}"; do profile "$c" 1 alloc; done
fi
echo "# components side by side (samples per 1,000 tasks)"
python3 "$here/classify.py" --table "$work"/*.components
