#!/usr/bin/env bash
# DCUtR between Potluck and js-libp2p (@libp2p/dcutr, scripts/natlab/js) across NATs made with iptables in network
# namespaces, real processes: a Potluck relay on a "public" net, a Potluck node behind a full-cone NAT and js nodes
# behind a port-restricted NAT. Both roles, --attempts each (default 10), every attempt a fresh node:
#   js -> Potluck   a fresh js node dials the Potluck provider through the relay; the provider (B) drives DCUtR and js (A)
#                   dials on SYNC; counted when js sees a direct connection and pings over it
#   Potluck -> js   a js node holds a reservation on the relay; `potluck holepunch` dials it through the relay; js (B)
#                   drives DCUtR and Potluck (A) answers; counted when Potluck sees a direct connection and pings over it
# The public net is 11.0.0.0/24 inside the namespaces (js takes 198.51.100.0/24, the NAT lab's, as private and would
# dial none of it). js dials from fresh ports (no port reuse), so a hole through a port-restricted NAT on the Potluck side
# cannot be predicted by it; the Potluck node is behind the NAT that js's dials can reach.
#
# Usage: bash scripts/natlab/js-dcutr.sh [--attempts N]
# Ends with "N passed, N failed", one check per direction: every attempt that got a relayed connection was upgraded
# to a direct one, and at least half the attempts got one (on a loaded machine a fresh node can time out before).
# Needs root, ip, iptables, node and `npm ci --prefix scripts/natlab/js`; without them it says why, prints
# "0 passed, 0 failed" and exits 0. Bounded: every process runs under `timeout`; namespaces and processes are removed.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
attempts=10
while [[ $# -gt 0 ]]; do
  case "$1" in
    --attempts) attempts="$2"; shift 2 ;;
    *) echo "js-dcutr: unknown option $1" >&2; exit 2 ;;
  esac
done
skip() { echo "js-dcutr: skipped ($1)"; echo "0 passed, 0 failed"; exit 0; }
[[ "$(id -u)" == 0 ]] && command -v ip >/dev/null && command -v iptables >/dev/null || skip "needs root, ip and iptables: apt-get install -y iproute2 iptables"
command -v node >/dev/null || skip "needs node (20 or later)"
js="$root/scripts/natlab/js"
[[ -d "$js/node_modules/@libp2p/dcutr" ]] || skip "js dependencies not installed: npm ci --prefix scripts/natlab/js"
ip netns add "jsdcutr-probe-$$" 2>/dev/null || skip "cannot create network namespaces here"
ip netns del "jsdcutr-probe-$$"

potluck="${NATLAB_POTLUCK:-$root/src/Node/bin/Release/net10.0/potluck}"
if [[ ! -x "$potluck" ]]; then
  dotnet build "$root/src/Node" -c Release --nologo -v q -clp:ErrorsOnly || exit 1
fi
work="$(mktemp -d /tmp/jsdcutr.XXXXXX)"
P="jd$$"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for _ in $(seq 1 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
  wait 2>/dev/null
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P"); do ip netns del "$ns" 2>/dev/null; done
  [[ -n "${KEEP_NATLAB_LOGS:-}" ]] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM   # exit runs cleanup once

inet="${P}inet"
ip netns add "$inet"
ip -n "$inet" link add br0 type bridge
ip -n "$inet" link set br0 up
ip -n "$inet" link set lo up
links=0
plug_public() { # NS DEV ADDRESS
  links=$((links + 1))
  ip link add "${P}p$links" type veth peer name "${P}q$links"
  ip link set "${P}p$links" netns "$inet"
  ip -n "$inet" link set "${P}p$links" master br0 up
  ip link set "${P}q$links" netns "$1"
  ip -n "$1" link set "${P}q$links" name "$2"
  ip -n "$1" addr add "$3/24" dev "$2"
  ip -n "$1" link set "$2" up
  ip -n "$1" link set lo up
}
make_home() { # NAME N TYPE(full|restricted): router ${P}rNAME at 11.0.0.(10+N), host ${P}hNAME at 10.N.0.2
  local r="${P}r$1" h="${P}h$1" lan="10.$2.0"
  ip netns add "$r"; ip netns add "$h"
  plug_public "$r" wan "11.0.0.$((10 + $2))"
  ip link add "${P}l$2" type veth peer name "${P}m$2"
  ip link set "${P}l$2" netns "$r"; ip link set "${P}m$2" netns "$h"
  ip -n "$r" link set "${P}l$2" name lan; ip -n "$h" link set "${P}m$2" name eth0
  ip -n "$r" addr add "$lan.1/24" dev lan; ip -n "$h" addr add "$lan.2/24" dev eth0
  ip -n "$r" link set lan up; ip -n "$h" link set eth0 up; ip -n "$h" link set lo up
  ip -n "$h" route add default via "$lan.1"
  ip netns exec "$r" sysctl -q -w net.ipv4.ip_forward=1
  local ipt="ip netns exec $r iptables"
  $ipt -t nat -A POSTROUTING -o wan -j MASQUERADE
  if [[ "$3" == full ]]; then
    $ipt -t nat -A PREROUTING -i wan -p tcp --dport 1024:65535 -j DNAT --to-destination "$lan.2"
    $ipt -A FORWARD -i wan -m conntrack --ctstate DNAT -j ACCEPT
  fi
  $ipt -A FORWARD -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  $ipt -A FORWARD -i wan -j DROP
  $ipt -A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  $ipt -A INPUT -i wan -j DROP
}
env_common=(POTLUCK__PREFERENCES__ONLYWHENIDLE=false POTLUCK__DCUTR__ATTEMPTTIMEOUT=00:00:05)
start() { # NS NAME CMD...
  local ns=$1 name=$2; shift 2
  ip netns exec "$ns" env "${env_common[@]}" timeout 1800 "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
}
wait_for() { # FILE PATTERN SECONDS
  for _ in $(seq 1 $(($3 * 5))); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.2; done
  return 1
}

ip netns add "${P}relay"
plug_public "${P}relay" eth0 11.0.0.2
make_home potluck 1 full
make_home js 2 restricted

# Every fresh js node comes from the one address of its NAT: the relay allows them more than the default 8 reservations per IP.
start "${P}relay" relay env POTLUCK__RELAY__HOP=true POTLUCK__RELAY__MAXCIRCUITS=256 POTLUCK__RELAY__MAXCIRCUITSPERPEER=64 POTLUCK__RELAY__MAXRESERVATIONSPERIP=64 \
  POTLUCK__HOST__RESOURCES__MAXCONNECTIONSPERADDRESS=256 POTLUCK__HOST__RESOURCES__MAXPENDINGINBOUNDPERADDRESS=64 \
  "$potluck" run --listen /ip4/11.0.0.2/tcp/4100 --no-mdns --no-provide --data-dir "$work/relay"
wait_for "$work/relay.log" "/ip4/11.0.0.2/tcp/4100/p2p/" 60 || { echo "js-dcutr: the relay did not start" >&2; cat "$work/relay.log" >&2; exit 1; }
relay="$(grep -o '/ip4/11.0.0.2/tcp/4100/p2p/[A-Za-z0-9]*' "$work/relay.log" | head -1)"
echo "relay: $relay"

start "${P}hpotluck" provider env POTLUCK__RELAY__ACCEPTRELAYED=true POTLUCK__RELAY__STATICRELAYS__0="$relay" \
  "$potluck" run --listen /ip4/0.0.0.0/tcp/4100 --no-mdns --no-provide --bootstrap "$relay" --data-dir "$work/provider" --log-level "${NATLAB_LOG_LEVEL:-information}"
wait_for "$work/provider.log" "relay reservation on" 60 || { echo "js-dcutr: the Potluck node holds no reservation" >&2; tail -20 "$work/provider.log" >&2; exit 1; }
wait_for "$work/provider.log" "^Peer id: " 30 || { echo "js-dcutr: the Potluck node printed no peer id" >&2; exit 1; }
provider_id="$(sed -n 's/^Peer id: \([A-Za-z0-9]*\).*/\1/p' "$work/provider.log" | head -1)"
echo "Potluck node behind a full-cone NAT: $relay/p2p-circuit/p2p/$provider_id"

passed=0; failed=0
check() { if [[ "$1" == "$2" ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "js-dcutr: FAILED: $3"; fi; }

# js -> Potluck: js is A (dials through the relay), Potluck is B.
direct=0; relayed=0
for i in $(seq 1 "$attempts"); do
  line="$(ip netns exec "${P}hjs" timeout 60 node "$js/node.mjs" --relay "$relay" --dial "$relay/p2p-circuit/p2p/$provider_id" --timeout 20 2>>"$work/js-a.err" | tail -1)"
  echo "js -> Potluck attempt $i: $line"
  [[ "$line" == *'"relayed":true'* ]] && relayed=$((relayed + 1))
  [[ "$line" == *'"direct":true'* ]] && direct=$((direct + 1))
done
echo "js -> Potluck (js dials through the relay, Potluck drives DCUtR): relayed $relayed/$attempts, direct $direct/$attempts"
check "$([[ $direct == "$relayed" && $((relayed * 2)) -ge $attempts ]] && echo 1)" 1 \
  "js -> Potluck: $direct direct of $relayed relayed ($attempts attempts; every relayed one must go direct, half at least relayed)"

# Potluck -> js: js is B (holds the reservation), Potluck is A.
ok=0; relayed=0
for i in $(seq 1 "$attempts"); do
  start "${P}hjs" "js-b-$i" node "$js/node.mjs" --reserve "$relay" --timeout 60
  jspid=${pids[-1]}
  if ! wait_for "$work/js-b-$i.log" "^reserved " 30; then
    echo "Potluck -> js attempt $i: js made no reservation"; tail -5 "$work/js-b-$i.log"; kill "$jspid" 2>/dev/null; continue
  fi
  target="$(sed -n 's/^reserved \(.*\)$/\1/p' "$work/js-b-$i.log" | head -1)"
  line="$(ip netns exec "${P}hpotluck" env "${env_common[@]}" timeout 60 "$potluck" holepunch "$target" --attempts 1 --timeout 20 --json --log-level "${NATLAB_LOG_LEVEL:-warning}" 2>>"$work/potluck-a.err" | head -1)"
  echo "Potluck -> js attempt $i: $line"
  [[ "$line" == *'"relayed":true'* ]] && relayed=$((relayed + 1))
  [[ "$line" == *'"direct":true'* ]] && ok=$((ok + 1))
  kill "$jspid" 2>/dev/null
done
echo "Potluck -> js (Potluck dials through the relay, js drives DCUtR): relayed $relayed/$attempts, direct $ok/$attempts"
check "$([[ $ok == "$relayed" && $((relayed * 2)) -ge $attempts ]] && echo 1)" 1 \
  "Potluck -> js: $ok direct of $relayed relayed ($attempts attempts; every relayed one must go direct, half at least relayed)"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
