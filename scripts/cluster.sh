#!/usr/bin/env bash
# A private cluster on this machine in one command: N nodes on loopback sharing one new swarm key, a batch of
# hashchain tasks across them, a summary (outputs checked, who earned what, the requester's spend), then every node
# stopped and its files removed (keep them with KEEP=1).
#
#   bash scripts/cluster.sh 3            # 3 nodes, 12 inputs
#   INPUTS=40 bash scripts/cluster.sh 5
#
# Uses `potluck` from PATH when there is one, else the Release build (dotnet build Node.sln -c Release).
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-3}"
inputs="${INPUTS:-$((n * 4))}"
[[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 32 ] || { echo "cluster.sh: N must be 1 to 32 (got '$n')" >&2; exit 2; }
if command -v potluck >/dev/null 2>&1; then
  potluck=(potluck)
else
  dll=src/Node/bin/Release/net10.0/potluck.dll
  [ -f "$dll" ] || { echo "cluster.sh: build first: dotnet build Node.sln -c Release" >&2; exit 1; }
  potluck=(dotnet "$dll")
fi
module=samples/hashchain/hashchain.wasm
root=$(mktemp -d /tmp/potluck-cluster.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "Kept $root"; else rm -rf "$root"; fi
}
trap cleanup EXIT
# Nodes here work whether or not the machine is idle, and each takes any free control port.
export POTLUCK__PREFERENCES__ONLYWHENIDLE=false POTLUCK__CONTROL__LISTEN=127.0.0.1:0

echo "1. A key, owner-only:  potluck swarm-key generate --out $root/swarm.key"
"${potluck[@]}" swarm-key generate --out "$root/swarm.key"

wait_for() { # file pattern seconds
  for _ in $(seq 1 $(( $3 * 10 ))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "cluster.sh: no '$2' in $1 within $3 s:" >&2; cat "$1" >&2; return 1
}
bootstrap=()
for i in $(seq 0 $((n - 1))); do
  dir="$root/node$i"
  "${potluck[@]}" run --listen /ip4/127.0.0.1/tcp/0 --no-mdns --swarm-key "$root/swarm.key" --cores 1 --data-dir "$dir" \
      "${bootstrap[@]}" > "$root/node$i.out" 2> "$root/node$i.log" &
  pids+=($!)
  wait_for "$root/node$i.out" "^Control API: " 60
  if [ "$i" = 0 ]; then
    address=$(grep -m1 '^Listening on ' "$root/node0.out" | sed 's/^Listening on //')
    bootstrap=(--bootstrap "$address")
    echo "2. Node 0 listens on $address"
  fi
done
echo "3. $n nodes started with the same key (each: potluck run --swarm-key swarm.key --bootstrap <node 0>)"

mkdir -p "$root/inputs"
for i in $(seq 1 "$inputs"); do printf 'seed %d' "$i" > "$root/inputs/seed$i"; done
start=$(date +%s.%N)
"${potluck[@]}" submit "$module" --batch "$root/inputs" --out "$root/outputs" --swarm-key "$root/swarm.key" "${bootstrap[@]}" \
  --no-mdns --data-dir "$root/requester" --parallel "$((n * 2))" -- 20000
end=$(date +%s.%N)

ok=0
for i in $(seq 1 "$inputs"); do
  expected=$(python3 -c "import hashlib,sys; d=b'seed $i'
for _ in range(20000): d=hashlib.sha256(d).digest()
sys.stdout.write(d.hex())")
  [ "$(tr -d '\n' < "$root/outputs/seed$i")" = "$expected" ] && ok=$((ok + 1))
done
echo
echo "Summary: $inputs inputs on $n nodes in $(python3 -c "print(f'{$end-$start:.1f}')") s; $ok of $inputs outputs match SHA-256 computed here"
for i in $(seq 0 $((n - 1))); do
  "${potluck[@]}" status --data-dir "$root/node$i" --json | python3 -c "import json,sys; s=json.load(sys.stdin); p=s.get('provider',{}); c=s['credits']
print(f\"  node$i {s['peer_id'][:16]}…  peers {s['peers']}  state {p.get('state')}  leases completed {p.get('leases_completed')}  earned {c['earned_total']/1e6:.6f} credits\")"
done
"${potluck[@]}" ledger --data-dir "$root/requester" --json | python3 -c "import json,sys; l=json.load(sys.stdin)
spent=sum(-e['amount'] for e in l['entries'] if e['kind']=='spent'); print(f\"  requester spent {spent/1e6:.6f} credits on {sum(1 for e in l['entries'] if e['kind']=='spent')} receipts; balance {l['balance']/1e6:.6f}\")"
[ "$ok" = "$inputs" ]
