#!/usr/bin/env bash
# Runs libp2p's @libp2p/interop suite with `potluck p2pd` in the go slot against js-libp2p (see run.mjs).
#   bash scripts/interop/daemon/run.sh          every group and key type (connect, streams, dht, pubsub, relay)
#   bash scripts/interop/daemon/run.sh --ci     the CI subset: connect, streams with Ed25519/Noise/Yamux, dht, pubsub, relay
# Needs the Release build of potluck (dotnet build src/Node -c Release) and Node.js 20+.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ ! -d "$here/node_modules" || "$here/package-lock.json" -nt "$here/node_modules" ]]; then
  (cd "$here" && npm ci --legacy-peer-deps --no-audit --no-fund --loglevel=error) || { echo "npm ci failed" >&2; exit 2; }
fi
if [[ "${1:-}" == "--ci" ]]; then
  export INTEROP_GROUPS=connect,streams,dht,pubsub,relay INTEROP_KEYS=ed25519 INTEROP_GREP='^(connection|dht|pubsub)\.|/noise/yamux echo| over relay '
fi
exec timeout 900 node "$here/run.mjs"
