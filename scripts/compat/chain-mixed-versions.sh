#!/bin/bash
# A node built before batch chain blocks (OLD, e.g. 91126f0) as a bystander beside a provider and a requester of build NEW,
# as processes on loopback: the requester runs 12 hashchain tasks at once on the provider (a round's payments: a batch
# block where NEW has them), then the script reads the old node's /metrics (gossip received, rejected, duplicates), the
# provider's, and both ledgers (`ledger --verify`). A message the old node rejects costs its sender there (gossipsub P4
# and a refused-proof penalty in its peer budgets). Stop 37 (README "Batch pairs only to nodes that read them").
# usage: scripts/compat/chain-mixed-versions.sh OUT-DIR NEW-POTLUCK OLD-POTLUCK BASE-PORT
#   build the old one: git clone -q <repo> /tmp/old && git -C /tmp/old checkout -q 91126f0 &&
#   dotnet build /tmp/old/src/Node/Node.csproj -c Release   (binary: /tmp/old/src/Node/bin/Release/net10.0/potluck)
set -u
OUT=$1; NEW=$2; OLD=$3; BASE=$4
root="$(cd "$(dirname "$0")/../.." && pwd)"
SAMPLE=$root/samples/hashchain/hashchain.wasm
rm -rf "$OUT"; mkdir -p "$OUT/batch"
for i in $(seq 1 12); do echo "seed $i" > "$OUT/batch/in$i"; done
# Metrics without the token; serve while the machine is busy (a loaded machine is not idle).
export POTLUCK__Control__OpenMetrics=true POTLUCK__PREFERENCES__ONLYWHENIDLE=false
pids=()
start() { # name binary port control-port flags...
  local name=$1 bin=$2 port=$3 ctl=$4; shift 4
  nice -n 10 "$bin" run --listen /ip4/127.0.0.1/tcp/$port --no-mdns --data-dir "$OUT/$name" --control-listen 127.0.0.1:$ctl --log-level debug "$@" > "$OUT/$name.log" 2>&1 &
  pids+=($!)
}
start old "$OLD" $BASE $((BASE+10)) --no-provide
sleep 8
OLDID=$("$OLD" id --data-dir "$OUT/old")
start provider "$NEW" $((BASE+1)) $((BASE+11)) --bootstrap /ip4/127.0.0.1/tcp/$BASE/p2p/$OLDID --cores 2
sleep 8
PROVIDERID=$("$NEW" id --data-dir "$OUT/provider")
start requester "$NEW" $((BASE+2)) $((BASE+12)) --no-provide --bootstrap /ip4/127.0.0.1/tcp/$((BASE+1))/p2p/$PROVIDERID --bootstrap /ip4/127.0.0.1/tcp/$BASE/p2p/$OLDID
sleep 15
date -u +%H:%M:%S > "$OUT/times"
timeout 300 nice -n 10 "$NEW" submit "$SAMPLE" --batch "$OUT/batch" --parallel 12 --no-daemon --no-mdns --listen /ip4/127.0.0.1/tcp/$((BASE+3)) \
  --bootstrap /ip4/127.0.0.1/tcp/$((BASE+1))/p2p/$PROVIDERID --bootstrap /ip4/127.0.0.1/tcp/$BASE/p2p/$OLDID \
  --data-dir "$OUT/submitter" --log-level debug --json -- 1000 > "$OUT/submit.json" 2> "$OUT/submit.err"
echo "submit rc $?" >> "$OUT/times"
sleep 10
date -u +%H:%M:%S >> "$OUT/times"
curl -s http://127.0.0.1:$((BASE+10))/metrics > "$OUT/old.metrics"
curl -s http://127.0.0.1:$((BASE+11))/metrics > "$OUT/provider.metrics"
"$OLD" peers --data-dir "$OUT/old" --no-ping --json > "$OUT/old.peers.json" 2>&1
"$NEW" ledger --data-dir "$OUT/submitter" --verify --json > "$OUT/requester.ledger.json" 2>&1
"$NEW" ledger --data-dir "$OUT/provider" --verify --json > "$OUT/provider.ledger.json" 2>&1
echo "old=$OLDID provider=$PROVIDERID" >> "$OUT/times"
for p in "${pids[@]}"; do kill "$p"; done
wait
echo "old node (gossip):"; grep '^potluck_gossip\|^potluck_peers_connected' "$OUT/old.metrics"
