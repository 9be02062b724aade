#!/usr/bin/env bash
# What an idle node costs at home: one `potluck run` node, optionally with N other nodes connected to it, left alone
# for a window; prints the node's CPU (share of one core, from /proc/<pid>/stat), its resident memory, and the bytes it
# sent and received (its own /metrics counters) per hour. Nothing else is measured; other load on the machine does not
# count against the node (its own CPU time only).
#
#   bash scripts/bench/idle.sh                       # the node alone, 120 s window after a 30 s settle
#   bash scripts/bench/idle.sh --peers 50 --window 300
#   bash scripts/bench/idle.sh --dll /tmp/main/src/Node/bin/Release/net10.0/potluck.dll   # another build (the measured node only)
set -euo pipefail
cd "$(dirname "$0")/../.."
peers=0; window=120; settle=30; measured=""
while [ $# -gt 0 ]; do
  case "$1" in
    --peers) peers="$2"; shift 2 ;;
    --window) window="$2"; shift 2 ;;
    --settle) settle="$2"; shift 2 ;;
    --dll) measured="$2"; shift 2 ;;
    *) echo "idle.sh: unknown option '$1' (--peers N, --window S, --settle S, --dll PATH)" >&2; exit 2 ;;
  esac
done
dll=src/Node/bin/Release/net10.0/potluck.dll
[ -f "$dll" ] || { echo "idle.sh: build first: dotnet build Node.sln -c Release" >&2; exit 1; }
root=$(mktemp -d /tmp/potluck-idle.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$root"
}
trap cleanup EXIT
export POTLUCK__CONTROL__LISTEN=127.0.0.1:0 DOTNET_CLI_TELEMETRY_OPTOUT=1
wait_for() { for _ in $(seq 1 $(( $3 * 10 ))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "idle.sh: timed out waiting for $1" >&2; exit 1; }

# The measured node: a home node with its defaults (idle detection on, mDNS off so only the peers below connect).
# Every peer here dials from 127.0.0.1, where peers at home come from their own addresses: the measured node lets all
# of them in (by default it takes 16 connections from one address and 64 from one /24; nothing else is changed).
POTLUCK__HOST__RESOURCES__MAXCONNECTIONSPERADDRESS=$(( peers + 16 )) POTLUCK__HOST__RESOURCES__MAXCONNECTIONSPERSUBNET=$(( peers + 64 )) \
  dotnet "${measured:-$dll}" run --listen /ip4/127.0.0.1/tcp/0 --no-mdns --data-dir "$root/node" > "$root/node.out" 2> "$root/node.log" &
node=$!; pids+=($node)
wait_for "$root/node.out" '^Control API: ' 60
address=$(grep -m1 '^Listening on ' "$root/node.out" | sed 's/^Listening on //')
for i in $(seq 1 "$peers"); do
  dotnet "$dll" run --listen /ip4/127.0.0.1/tcp/0 --no-mdns --no-provide --bootstrap "$address" --data-dir "$root/peer$i" \
    > "$root/peer$i.out" 2> "$root/peer$i.log" &
  pids+=($!)
done
for i in $(seq 1 "$peers"); do wait_for "$root/peer$i.out" '^Control API: ' 120; done

metric() { # name
  local url token
  url=$(python3 -c "import json;print(json.load(open('$root/node/control.json'))['url'])")
  token=$(cat "$root/node/control.token")
  curl -s -H "Authorization: Bearer $token" "${url}metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" { s += $2 } END { printf "%d", s }'
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$node/stat"; }
hz=$(getconf CLK_TCK)

metric potluck_bytes_sent_bytes_total > /dev/null   # the first scrape (its JIT) before the window
sleep "$settle"
connected=$(dotnet "$dll" status --data-dir "$root/node" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['peers'])")
# The scrapes answered by the node stay outside the CPU window: bytes first, then CPU; at the end CPU, then bytes.
s0=$(metric potluck_bytes_sent_bytes_total); r0=$(metric potluck_bytes_received_bytes_total); t0=$(date +%s.%N); c0=$(cpu_ticks)
sleep "$window"
t1=$(date +%s.%N); c1=$(cpu_ticks); s1=$(metric potluck_bytes_sent_bytes_total); r1=$(metric potluck_bytes_received_bytes_total)
rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$node/status")
python3 - "$t0" "$t1" "$c0" "$c1" "$hz" "$s0" "$s1" "$r0" "$r1" "$rss" "$peers" "$connected" "$window" <<'PY'
import sys
t0, t1, c0, c1, hz, s0, s1, r0, r1, rss, peers, connected, window = sys.argv[1:]
elapsed = float(t1) - float(t0)
cpu = (int(c1) - int(c0)) / int(hz) / elapsed * 100
per_hour = 3600 / elapsed
print(f"idle node, {peers} peer nodes started ({connected} connected), {elapsed:.0f} s window:")
print(f"  CPU      {cpu:.2f} % of one core")
print(f"  memory   {int(rss) / 1024:.0f} MiB resident")
print(f"  sent     {(int(s1) - int(s0)) * per_hour / 1024:.0f} KiB per hour ({int(s1) - int(s0)} bytes in the window)")
print(f"  received {(int(r1) - int(r0)) * per_hour / 1024:.0f} KiB per hour")
PY
