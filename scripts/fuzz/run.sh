#!/usr/bin/env bash
# Fuzzes every decoder a remote peer or a file can reach (varint, multiaddr, multistream, Noise frames and handshake
# payloads, Yamux frames, identify/gossipsub/Kademlia/peer-record/key protobufs, swarm keys, DNS, and every MessagePack
# message: advertisements, lease messages, frames and terms, envelopes, receipts, attestations, fraud proofs, task
# payloads, receipt acknowledgements, signed lease terms with audit commitments, chain half-blocks, chain proposals and
# answers, chain recovery and history queries and answers, fork proofs; circuit relay HOP/STOP messages and vouchers; AutoNAT v2 messages and dial-backs; gossipsub
# IDONTWANT) with random and mutated inputs, and prints per decoder: inputs, accepted, refused with a typed error,
# crashes, hangs, the largest allocation one input caused, and the time per input. Exit 1 on any crash or hang.
# Usage: scripts/fuzz/run.sh [inputs per decoder, default 1000000] [--seed N] [--only "name,name"] [--hang-ms N]
#        scripts/fuzz/run.sh --ci          (the short version CI runs: 20,000 inputs per decoder)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
project="$root/scripts/fuzz/Fuzz/Fuzz.csproj"
args=("$@")
if [[ "${1:-}" == "--ci" ]]; then args=(20000 "${@:2}"); fi
dotnet build "$project" -c Release -v q -nologo -clp:ErrorsOnly >/dev/null
exec dotnet "$root/scripts/fuzz/Fuzz/bin/Release/net10.0/Potluck.Fuzz.dll" "${args[@]}"
