#!/usr/bin/env bash
# Whole-node mesh scenarios (potluck sim: complete nodes in one process on virtual time, seeded, bounded).
# Usage: scripts/bench/sim-mesh.sh [properties|scale|replay] [out-dir]
#   properties: cheaters (always and selective), a partition that heals, churn; JSON + HTML per scenario
#   scale:      the same mixed scenario at 20, 50 and 100 nodes: memory per node, events per CPU second
#   replay:     one scenario twice with the same seed; the trace hashes must match
# Each run prints its report; figures for the README come from here, never from timed tests.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
what="${1:-properties}"
out="${2:-/tmp/potluck-sim}"
mkdir -p "$out"
dotnet build "$root/src/Node" -c Release -v q -nologo -clp:ErrorsOnly >/dev/null
sim="$root/src/Node/bin/Release/net10.0/potluck"

run() { # name, flags...
  local name="$1"; shift
  echo "== $name: potluck sim $*"
  timeout 3600 "$sim" sim --quiet --json "$out/$name.json" --report "$out/$name.html" "$@"
}

case "$what" in
  properties)
    run cheaters   --nodes 40 --providers 12 --tasks 300 --cheaters 0.25 --adversary cheater --duration 120 --seed 1
    run selective  --nodes 40 --providers 12 --tasks 300 --cheaters 0.25 --adversary selective --cheat-rate 0.2 --duration 120 --seed 2
    run partition  --nodes 40 --providers 12 --tasks 200 --partition --duration 90 --seed 3
    run churn      --nodes 40 --providers 12 --tasks 200 --churn 0.1 --duration 90 --seed 4
    run lossy      --nodes 40 --providers 12 --tasks 200 --loss 0.02 --latency-ms 60 --duration 90 --seed 5
    ;;
  scale)
    for n in 20 50 100; do
      run "scale-$n" --nodes "$n" --providers $((n / 4)) --tasks $((n * 2)) --cheaters 0.1 --duration 60 --seed 1
    done
    ;;
  replay)
    a=$(timeout 3600 "$sim" sim --quiet --nodes 30 --providers 8 --tasks 60 --cheaters 0.25 --churn 0.1 --partition --seed 9 | grep '^trace')
    b=$(timeout 3600 "$sim" sim --quiet --nodes 30 --providers 8 --tasks 60 --cheaters 0.25 --churn 0.1 --partition --seed 9 | grep '^trace')
    echo "first:  $a"; echo "second: $b"
    [ "$a" = "$b" ] && echo "same trace" || { echo "TRACES DIFFER"; exit 1; }
    ;;
  *) echo "usage: $0 [properties|scale|replay] [out-dir]" >&2; exit 2 ;;
esac
