#!/usr/bin/env bash
# Hostile load against a real `potluck run` node on loopback (bounded: every phase has a count and ends by itself; not a
# timed test): 1,000 peers each holding a connection and a stream (the node's memory per connection, and an honest
# peer's ping p50/p99 before and during), 10,000 connections sending random bytes, 128 stalled handshakes from one
# address (when they are dropped; a newcomer connects meanwhile), and one peer opening streams past its limits.
# Usage: scripts/load/run.sh [peers=1000] [random connections=10000] [stalled=128] [streams=2000]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dotnet build "$root/src/Node/Node.csproj" -c Release -v q -nologo -clp:ErrorsOnly >/dev/null
dotnet build "$root/scripts/load/HostileLoad/HostileLoad.csproj" -c Release -v q -nologo -clp:ErrorsOnly >/dev/null
exec timeout 900 dotnet "$root/scripts/load/HostileLoad/bin/Release/net10.0/Potluck.HostileLoad.dll" \
  "$root/src/Node/bin/Release/net10.0/potluck.dll" "$@"
