#!/usr/bin/env bash
# Crash safety, tested by killing: real `potluck run` providers and a `potluck submit --batch` requester on loopback,
# tasks submitted continuously, and SIGKILL at random moments to a provider or the requester (each restarted within a
# second on the same address, identity and data directory). At the end both sides' ledgers are reconciled and a table
# is printed; exit 1 when anything was lost or counted twice. Bounded: it stops by itself after the kills or the time
# limit, and kills every process it started.
# Usage: scripts/chaos/run.sh [--kills 100] [--providers 2] [--limit-s 900] [--seed N] [--keep]
#        scripts/chaos/run.sh --ci        (the short version scripts/test.sh runs: 5 kills, one provider, ~60 s)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dotnet build "$root/src/Node/Node.csproj" -c Release -v q -nologo -clp:ErrorsOnly >/dev/null
dotnet build "$root/scripts/chaos/Chaos/Chaos.csproj" -c Release -v q -nologo -clp:ErrorsOnly >/dev/null
exec timeout 1200 dotnet "$root/scripts/chaos/Chaos/bin/Release/net10.0/Potluck.Chaos.dll" \
  "$root/src/Node/bin/Release/net10.0/potluck.dll" "$root/samples/hashchain/hashchain.wasm" "$@"
