#!/usr/bin/env bash
# Context switches and syscalls of the lease path, per task, all three nodes (stop 42's method):
#  - `perf stat` of sendto, recvfrom, epoll_wait, futex, pread64, pwrite64, fsync and context switches over two LeaseBench
#    runs of different totals (`100 SMALL C` and `100 LARGE C`), differenced, so start-up, warm-up and the sequential phase
#    cancel out and what is left is per task of the concurrent phase;
#  - `perf record -e sched:sched_switch -g` over the sustained phase of one `100 LARGE C` run (switched on and off at the
#    program's own markers, as perfstats does), grouped by thread and by the innermost Potluck frame that blocked.
# For each COMMIT (comma-separated), a clean export built as ab.sh builds it (this checkout's program, or the commit's own).
# usage: scripts/bench/LeaseBench/switches/run.sh [commit[,commit...]] [small large concurrency]
set -euo pipefail
commits=${1:-069d992,HEAD}
small=${2:-500}; large=${3:-2500}; conc=${4:-8}
here=$(cd "$(dirname "$0")" && pwd)
root=$(git -C "$here" rev-parse --show-toplevel)
work=$(mktemp -d /tmp/leasebench-switches.XXXXXX)
trap 'rm -rf "$work"' EXIT
IFS=, read -r -a versions <<< "$commits"
events=syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,syscalls:sys_enter_pread64,syscalls:sys_enter_pwrite64,syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync,context-switches
for c in "${versions[@]}"; do
  d="$work/$c"; mkdir -p "$d"
  git -C "$root" archive "$c" | tar -x -C "$d"
  cp "$d/scripts/bench/LeaseBench/Program.cs" "$d.own-program.cs"
  cp "$root/scripts/bench/LeaseBench/Program.cs" "$d/scripts/bench/LeaseBench/Program.cs"
  if ! (cd "$d" && dotnet build scripts/bench/LeaseBench -c Release -v q -nologo > "$d.build.log" 2>&1); then
    cp "$d.own-program.cs" "$d/scripts/bench/LeaseBench/Program.cs"
    (cd "$d" && dotnet build scripts/bench/LeaseBench -c Release -v q -nologo > "$d.build.log" 2>&1) || { cat "$d.build.log"; exit 1; }
  fi
  dll="$d/scripts/bench/LeaseBench/bin/Release/net10.0/Potluck.Benchmarks.Lease.dll"
  echo "# $c = $(git -C "$root" rev-parse --short "$c"), $(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1 /proc/loadavg)"
  for t in "$small" "$large"; do
    DOTNET_TieredCompilation=0 perf stat -x, -e "$events" -- dotnet "$dll" 100 "$t" "$conc" 2>&1 >/dev/null | grep -v '^#' \
      | awk -F, '{print $3, $1}' | sort > "$d.stat.$t"
  done
  # The concurrent phases run TOTAL/4 (rounded to whole rounds) + TOTAL tasks; the difference of the two runs' tasks:
  tasks=$(( large + large / 4 / conc * conc - small - small / 4 / conc * conc ))
  join "$d.stat.$small" "$d.stat.$large" | awk -v n="$tasks" '{printf "  %-40s %7.2f per task\n", $1, ($3 - $2) / n}'
  rm -f "$work/ctl" "$work/ack"; mkfifo "$work/ctl" "$work/ack"
  DOTNET_TieredCompilation=0 DOTNET_PerfMapEnabled=1 DOTNET_EnableWriteXorExecute=0 perf record -e sched:sched_switch -g -D -1 \
    --control "fifo:$work/ctl,$work/ack" -o "$d.sched.data" -- dotnet "$dll" 100 "$large" 32 > "$d.log" 2> "$d.err" &
  bench=$!
  until grep -q '^# sustained phase starting' "$d.err"; do kill -0 "$bench" 2>/dev/null || { cat "$d.log" "$d.err"; exit 1; }; sleep 0.05; done
  echo enable > "$work/ctl"; head -c 3 "$work/ack" > /dev/null
  until grep -q '^Sustained:' "$d.log"; do kill -0 "$bench" 2>/dev/null || break; sleep 0.05; done
  echo disable > "$work/ctl"; head -c 3 "$work/ack" > /dev/null
  wait "$bench" || true
  grep '^Sustained:' "$d.log"
  perf script -i "$d.sched.data" -F comm,tid,ip,sym 2>/dev/null | python3 "$here/switches.py" "$large"
done
