#!/usr/bin/env bash
# Runs libp2p's transport-interop test (libp2p/unified-testing transport/, the contract of libp2p/test-plans) on this
# machine without Docker: Debian's redis-server on 127.0.0.1, `potluck transport-interop` and the js v3.x test app
# (built from its sources with npm and tsc, see js-v3.x/), paired both ways round over tcp/noise/yamux. Prints each
# dialer's latency lines and one verdict line per pair; exits 1 if a pair failed.
#
#   PAIRS="potluck:js js:potluck potluck:potluck"   listener:dialer pairs to run (default: the first two)
#   POTLUCK_BIN=...                                  the potluck executable (default: the Release build)
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
potluck="${POTLUCK_BIN:-$root/src/Node/bin/Release/net10.0/potluck}"
pairs="${PAIRS:-potluck:js js:potluck}"
timeout_secs="${TEST_TIMEOUT_SECS:-60}"

[[ -x "$potluck" ]] || { echo "no potluck executable at $potluck: dotnet build src/Node -c Release" >&2; exit 2; }
if ! command -v redis-server >/dev/null; then
  echo "installing redis-server" >&2
  (apt-get update && apt-get install -y redis-server) >&2 || { echo "cannot install redis-server" >&2; exit 2; }
fi

js="$here/js-v3.x"
if [[ ! -d "$js/node_modules" || "$js/package-lock.json" -nt "$js/node_modules" ]]; then
  # --ignore-scripts: node-datachannel (for webrtc, unused here) would fetch a prebuilt binary from GitHub
  (cd "$js" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) || { echo "npm ci failed" >&2; exit 2; }
fi
if [[ ! -f "$js/dist/test/dialer.spec.js" || -n "$(find "$js/test" "$js/tsconfig.json" -newer "$js/dist/test/dialer.spec.js" 2>/dev/null)" ]]; then
  (cd "$js" && npx tsc -p tsconfig.json) || { echo "building the js v3.x app failed" >&2; exit 2; }
fi

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize no >"$work/redis.log" 2>&1 &
redis_pid=$!
listener_pid=""
cleanup() {
  [[ -n "$listener_pid" ]] && kill "$listener_pid" 2>/dev/null
  kill "$redis_pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 50); do
  redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.1
done

app() { # app <impl>: the command line of one test app
  case "$1" in
    potluck) echo "$potluck transport-interop" ;;
    js) echo "node $js/run.mjs" ;;
  esac
}

failed=0
n=0
for pair in $pairs; do
  listener="${pair%%:*}"
  dialer="${pair##*:}"
  n=$((n + 1))
  key="potluck-interop-$$-$n"
  common=(REDIS_ADDR="127.0.0.1:$port" TEST_KEY="$key" TRANSPORT=tcp SECURE_CHANNEL=noise MUXER=yamux LISTENER_IP=127.0.0.1 TEST_TIMEOUT_SECS="$timeout_secs")
  env "${common[@]}" IS_DIALER=false $(app "$listener") >"$work/listener.out" 2>"$work/listener.err" &
  listener_pid=$!
  timeout $((timeout_secs + 30)) env "${common[@]}" IS_DIALER=true $(app "$dialer") >"$work/dialer.out" 2>"$work/dialer.err"
  rc=$?
  kill "$listener_pid" 2>/dev/null
  wait "$listener_pid" 2>/dev/null
  listener_pid=""
  name="$listener listener <- $dialer dialer (tcp/noise/yamux)"
  if [[ $rc -eq 0 ]] && grep -q '^latency:' "$work/dialer.out" && grep -q 'handshake_plus_one_rtt:' "$work/dialer.out" \
     && grep -q 'ping_rtt:' "$work/dialer.out" && grep -q 'unit: ms' "$work/dialer.out"; then
    echo "pass  $name"
    sed -n '/^latency:/,/unit: ms/p' "$work/dialer.out"
  else
    failed=$((failed + 1))
    echo "FAIL  $name (dialer exit $rc)"
    echo "--- dialer stdout"; tail -n 20 "$work/dialer.out"
    echo "--- dialer stderr"; tail -n 20 "$work/dialer.err"
    echo "--- listener stderr"; tail -n 20 "$work/listener.err"
  fi
done
echo "transport-interop: $((n - failed)) passed, $failed failed"
[[ $failed -eq 0 ]]
