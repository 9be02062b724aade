#!/usr/bin/env bash
# Protocol simulation benchmarks (virtual time, seeded, bounded; no sockets):
#   gossip: 1,000-node gossipsub mesh: share of subscribers reached, propagation p50/p99, duplicates per message
#   dht:    1,000-node Kademlia: share of lookups returning the true 20 closest, median hops
# Usage: scripts/bench/sim.sh [gossip|dht|all] [--seed N] [--nodes N] [--dht-nodes N] [--messages N] [--lookups N] ...
# (run with --help-ish bad flag to see every option). Exit code 1 when a target is missed.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
project="$root/scripts/bench/SimBench/SimBench.csproj"
dotnet build "$project" -c Release -v q -nologo >/dev/null
exec dotnet "$root/scripts/bench/SimBench/bin/Release/net10.0/Potluck.Benchmarks.Sim.dll" "$@"
