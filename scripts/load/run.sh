#!/usr/bin/env bash
# Hostile load against a real `potluck run` provider on loopback (bounded: every phase has a count and ends by itself;
# not a timed test), while an honest requester in its own process runs real leases (a no-op task) and pings, measured
# unloaded and under each load in the same run: 1,000 peers from fresh identities on 100 addresses connecting, then each
# holding a connection and a stream (the node's memory per connection and RSS), 10,000 connections sending random bytes,
# 128 stalled handshakes from one address, 2 stalled handshakes (multistream header / half a Noise handshake) from each
# of 200 addresses (when they are dropped; how long a newcomer takes to connect), and one peer opening streams past its
# limits. Usage: scripts/load/run.sh [peers=1000] [random connections=10000] [stalled addresses=200] [streams=2000] [samples=300]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dotnet build "$root/src/Node/Node.csproj" -c Release -v q -nologo -clp:ErrorsOnly >/dev/null
dotnet build "$root/scripts/load/HostileLoad/HostileLoad.csproj" -c Release -v q -nologo -clp:ErrorsOnly >/dev/null
exec timeout 900 dotnet "$root/scripts/load/HostileLoad/bin/Release/net10.0/Potluck.HostileLoad.dll" \
  "$root/src/Node/bin/Release/net10.0/potluck.dll" "$root/samples/testmods/exitcode.wasm" "$@"
