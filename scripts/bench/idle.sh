#!/usr/bin/env bash
# Idle cost of a node: starts one on loopback (mDNS off, no peers, a throwaway data dir), waits until it
# listens, lets start-up settle, then samples utime+stime of the process from /proc/<pid>/stat over a
# window and prints the share of one core, the wake-ups (context switches) per second and the RSS.
# Target (issue 7, item 11): under 0.5 % of a core over 60 s.
#
# Usage: scripts/bench/idle.sh [--seconds N] [--settle N] [--binary PATH] [--threads]
#   --seconds N    measurement window (default 60)
#   --settle N     seconds to wait after the node listens, before measuring (default 70: the jobs of the
#                  first minute, every 30 s and every 60 s, and the tier-up of the 1 s gossip heartbeat,
#                  compile their code once; with 10 the window also holds that one-off JIT work)
#   --binary PATH  the potluck executable (default: src/Node/bin/Release/net10.0/potluck, built first)
#   --threads      also print each thread's CPU time and wake-ups over the window
# Linux only (reads /proc). Bounded: gives up if the node is not up in 60 s; stops it with SIGTERM, then
# SIGKILL after 15 s. Exit code 1 when the node does not start or dies while measured.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
seconds=60
settle=70
binary=""
threads=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --settle) settle="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    --threads) threads=1; shift ;;
    *) echo "usage: $0 [--seconds N] [--settle N] [--binary PATH] [--threads]" >&2; exit 2 ;;
  esac
done
if [[ -z "$binary" ]]; then
  binary="$root/src/Node/bin/Release/net10.0/potluck"
  dotnet build "$root/src/Node" -c Release -v q -nologo -clp:ErrorsOnly >/dev/null
fi
[[ -x "$binary" ]] || { echo "idle: no executable at $binary" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/potluck-idle.XXXXXX")"
data="$work/data"
log="$work/node.log"
mkdir "$data"
pid=""
cleanup() {
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true  # not SIGINT: a background job of a script ignores it
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"$binary" run --no-mdns --listen /ip4/127.0.0.1/tcp/0 --data-dir "$data" >"$log" 2>&1 &
pid=$!

for _ in $(seq 1 600); do
  grep -q '^Listening on ' "$log" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { echo "idle: the node exited during start-up:" >&2; cat "$log" >&2; exit 1; }
  sleep 0.1
done
grep -q '^Listening on ' "$log" || { echo "idle: the node did not listen within 60 s:" >&2; cat "$log" >&2; exit 1; }
sleep "$settle"

hz="$(getconf CLK_TCK)"
# utime + stime (fields 14 and 15; the command name in field 2 has no spaces here).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
switches() { cat /proc/"$pid"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches/ { s += $2 } END { print s + 0 }'; }
per_thread() {
  for t in /proc/"$pid"/task/*; do
    # run time in ns and timeslices from schedstat, then the thread's name
    printf '%s %s %s\n' "${t##*/}" "$(awk '{ print $1, $3 }' "$t/schedstat" 2>/dev/null)" "$(tr ' ' _ <"$t/comm" 2>/dev/null)"
  done | sort
}

[[ $threads -eq 1 ]] && per_thread >"$work/threads0"
c0="$(cpu_ticks)"; w0="$(switches)"; t0="$(date +%s.%N)"
sleep "$seconds"
kill -0 "$pid" 2>/dev/null || { echo "idle: the node died while measured:" >&2; cat "$log" >&2; exit 1; }
c1="$(cpu_ticks)"; w1="$(switches)"; t1="$(date +%s.%N)"
rss_kib="$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")"
[[ $threads -eq 1 ]] && per_thread >"$work/threads1"

awk -v c0="$c0" -v c1="$c1" -v hz="$hz" -v t0="$t0" -v t1="$t1" -v w0="$w0" -v w1="$w1" -v rss="$rss_kib" -v bin="$binary" 'BEGIN {
  wall = t1 - t0
  printf "idle node (%s) over %.1f s: %.2f %% of one core (%d ticks of 1/%d s), %.0f wake-ups/s, RSS %.1f MiB\n",
    bin, wall, 100 * (c1 - c0) / hz / wall, c1 - c0, hz, (w1 - w0) / wall, rss / 1024
}'
if [[ $threads -eq 1 ]]; then
  echo "per thread over the window (threads that came and went are not listed):"
  join "$work/threads0" "$work/threads1" | awk -v wall="$seconds" '{
    printf "  %-8s %-18s %6.2f %% cpu %8.0f slices/s\n", $1, $4, 100 * ($5 - $2) / 1e9 / wall, ($6 - $3) / wall }' | sort -k3 -rn
fi
