#!/usr/bin/env bash
# Whole-node mesh scenarios (potluck sim: complete nodes in one process on virtual time, seeded, bounded).
# Usage: scripts/bench/sim-mesh.sh [properties|adversaries|verification|standins|scale|scale-big|replay] [out-dir]
#   properties:   cheaters (always and selective), a partition that heals, churn; JSON + HTML per scenario
#   adversaries:  every --adversary kind mixed into a 30-node mesh (what the honest side ends with)
#   verification: a long run (1,200 tasks, 2 providers, 2 requesters) where honest providers get established: verification overhead
#   standins:     100 nodes with and without the stand-ins (--stand-ins all), side by side: MiB per node, CPU
#   scale:        the same mixed scenario at 20, 50 and 100 nodes: memory per node, events per CPU second
#   scale-big:    NODES (default 1000) nodes with every stand-in, a light workload (memory and time bound it), each node
#                 keeping at most MAXCONN (default 32) connections; STANDINS=none runs the same with complete nodes (real
#                 Noise, a Wasmtime engine and SQLite files per node: ~10 open files per node, README "1,000 complete nodes")
#   replay:       one scenario twice with the same seed; the trace hashes and the digests of all events (the "trace" line) must match
# The GC is told to conserve memory (DOTNET_GCConserveMemory=7, read only at the runtime's start); potluck sim itself turns
# the background GC off. The gen0 budget is 64 MiB (DOTNET_GCgen0size=0x4000000, 2026-12-04: 100 nodes, all stand-ins,
# cap 32, seed 1, same trace: CPU 45.3 -> 37.6 s, GCs 223/130/30 -> 55/52/15, peak RSS 392 -> 418 MiB; README
# "Exceptions off the hot path"); a small one (0x1000000, used before 2026-12-03) cost a third more CPU for a fifth less
# RSS at 100 nodes. Override either by setting it when calling this script. SIM=path runs another build. potluck sim
# sets its own defaults when they are unset (starting itself again; README "The garbage collector's share").
# Each run prints its report; figures for the README come from here, never from timed tests.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
what="${1:-properties}"
out="${2:-/tmp/potluck-sim}"
mkdir -p "$out"
dotnet build "$root/src/Node" -c Release -v q -nologo -clp:ErrorsOnly >/dev/null
sim="${SIM:-$root/src/Node/bin/Release/net10.0/potluck}"   # SIM=path runs another build (a before side by side)
export DOTNET_GCConserveMemory="${DOTNET_GCConserveMemory:-7}"
export DOTNET_GCgen0size="${DOTNET_GCgen0size:-0x4000000}"

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
  adversaries)
    for kind in freeloader receipt-forger squatter proof-spammer gossip-spammer; do
      run "adv-$kind" --nodes 30 --providers 8 --tasks 100 --cheaters 0.2 --adversary "$kind" --duration 60 --seed 11
    done
    for kind in sybil whitewasher; do
      run "adv-$kind" --nodes 30 --providers 12 --tasks 100 --cheaters 0.5 --adversary "$kind" --duration 60 --seed 11
    done
    run adv-forker --nodes 30 --providers 12 --tasks 100 --cheaters 0.25 --adversary forker --duration 60 --seed 11
    ;;
  verification)
    run verification --nodes 4 --providers 2 --tasks 1200 --duration 1200 --seed 1
    ;;
  standins)
    run standins-none --nodes 100 --providers 25 --tasks 40 --duration 20 --seed 1
    run standins-all  --nodes 100 --providers 25 --tasks 40 --duration 20 --seed 1 --stand-ins all
    ;;
  scale-big)
    n="${NODES:-1000}"
    run "scale-$n${STANDINS:+-$STANDINS}" --nodes "$n" --providers $((n / 10)) --tasks 100 --duration 20 --seed 1 --stand-ins "${STANDINS:-all}" --max-connections "${MAXCONN:-32}"
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
    [ "$a" = "$b" ] && echo "same trace, same events" || { echo "TRACES OR EVENTS DIFFER"; exit 1; }
    ;;
  *) echo "usage: $0 [properties|adversaries|verification|standins|scale|scale-big|replay] [out-dir]" >&2; exit 2 ;;
esac
