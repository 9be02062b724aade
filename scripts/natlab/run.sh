#!/usr/bin/env bash
# The NAT lab: real `potluck` processes in network namespaces behind NAT routers made with iptables, measuring
# circuit relay v2 + DCUtR hole punching for every pair of NAT types, and one lease per pair.
#
#   public net 198.51.100.0/24 (a bridge in its own namespace): the relay + bootstrap node at .2, the routers' WAN sides
#   one home network per (role, NAT type): router + one host; providers run `potluck run` with a static reservation on
#   the relay, requesters run `potluck holepunch` (fresh nodes, one per attempt) and `potluck submit`.
#
# NAT types (router = a namespace with ip_forward and iptables; unsolicited inbound is dropped, never answered):
#   full        endpoint-independent mapping and filtering: MASQUERADE (source port kept) + every inbound port forwarded
#               to the host (a full cone for the one host behind it)
#   restricted  endpoint-independent mapping, address-and-port-dependent filtering: MASQUERADE + conntrack only
#   symmetric   endpoint-dependent mapping: MASQUERADE --random-fully (a random port per connection) + conntrack only
#
# Usage: bash scripts/natlab/run.sh [--attempts N] [--parallel N] [--short] [--types "full restricted symmetric"]
#        [--no-lease] [--out FILE]
# --short (what scripts/test.sh runs, about 2 min): port-restricted and symmetric NATs, 3 attempts per pair, two leases.
# Ends with "N passed, N failed": every attempt relayed, hole punches between endpoint-independent NATs at 95 % or
# more, every lease run completed with the right output; a full run (all three types, 50+ attempts) also checks the
# campaign's 70 % overall.
# Port prediction (dcutr:portPredictionSockets, default 256 per side and round) is what punches port-restricted <->
# symmetric; symmetric <-> symmetric stays on the relay (nothing is sprayed there: both ports are unknown).
# NATLAB_LOG_LEVEL=debug logs the providers and probes at that level; KEEP_NATLAB_LOGS=1 keeps /tmp/natlab.*.
# Needs root, ip (iproute2) and iptables; without them it says so, prints "0 passed, 0 failed" and exits 0.
# Bounded: every process runs under `timeout`; the namespaces and processes it made are removed on exit.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
attempts=50
parallel=10
types="full restricted symmetric"
lease=1
out=""
short=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --attempts) attempts="$2"; shift 2 ;;
    --parallel) parallel="$2"; shift 2 ;;
    --types) types="$2"; shift 2 ;;
    --short) short=1; attempts=3; parallel=3; types="restricted symmetric"; shift ;;
    --no-lease) lease=0; shift ;;
    --out) out="$2"; shift 2 ;;
    *) echo "natlab: unknown option $1" >&2; exit 2 ;;
  esac
done

if [[ "$(id -u)" != 0 ]] || ! command -v ip >/dev/null || ! command -v iptables >/dev/null; then
  echo "natlab: skipped (needs root, ip and iptables: apt-get install -y iproute2 iptables)"
  echo "0 passed, 0 failed"
  exit 0
fi
if ! ip netns add "natlab-probe-$$" 2>/dev/null; then
  echo "natlab: skipped (cannot create network namespaces here)"
  echo "0 passed, 0 failed"
  exit 0
fi
ip netns del "natlab-probe-$$"

potluck="${NATLAB_POTLUCK:-$root/src/Node/bin/Release/net10.0/potluck}"   # NATLAB_POTLUCK: another build of it
if [[ ! -x "$potluck" ]]; then
  dotnet build "$root/src/Node" -c Release --nologo -v q -clp:ErrorsOnly || exit 1
fi
work="$(mktemp -d /tmp/natlab.XXXXXX)"
P="nl$$"   # every namespace of this run starts with this
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
trap cleanup EXIT INT TERM

inet="${P}inet"
ip netns add "$inet"
ip -n "$inet" link add br0 type bridge
ip -n "$inet" link set br0 up
ip -n "$inet" link set lo up
link_count=0
# plug NS into the public bridge as DEV with ADDRESS/24
plug_public() {
  local ns=$1 dev=$2 addr=$3
  link_count=$((link_count + 1))
  ip link add "${P}p$link_count" type veth peer name "${P}q$link_count"
  ip link set "${P}p$link_count" netns "$inet"
  ip -n "$inet" link set "${P}p$link_count" master br0 up
  ip link set "${P}q$link_count" netns "$ns"
  ip -n "$ns" link set "${P}q$link_count" name "$dev"
  ip -n "$ns" addr add "$addr/24" dev "$dev"
  ip -n "$ns" link set "$dev" up
  ip -n "$ns" link set lo up
}

relay_ns="${P}relay"
ip netns add "$relay_ns"
plug_public "$relay_ns" eth0 198.51.100.2

# Limits a lab needs that a home node does not: many fresh requester identities from one public IP, leases carried
# by the relay when no hole can be punched (a module is larger than the 128 KiB default of a relayed connection).
common_env=(
  POTLUCK__HOST__RESOURCES__MAXCONNECTIONSPERADDRESS=512 POTLUCK__HOST__RESOURCES__MAXCONNECTIONSPERSUBNET=2048
  POTLUCK__HOST__RESOURCES__MAXPENDINGINBOUNDPERADDRESS=128 POTLUCK__HOST__RESOURCES__MAXPENDINGINBOUNDPERSUBNET=512
  POTLUCK__PREFERENCES__ONLYWHENIDLE=false POTLUCK__DCUTR__ATTEMPTTIMEOUT=00:00:05
  # One provider serves up to --parallel punches at once, each spraying up to 256 SYNs a round: more than a home
  # node's default budget of 4096 port-prediction sockets a minute.
  POTLUCK__DCUTR__PORTPREDICTIONBUDGET=1000000
)
start() { # NS NAME CMD... : runs CMD in NS under a time bound, logs to $work/NAME.log
  local ns=$1 name=$2; shift 2
  ip netns exec "$ns" env "${common_env[@]}" timeout 3600 "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
}
wait_for() { # FILE PATTERN SECONDS
  for _ in $(seq 1 $(($3 * 5))); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.2; done
  return 1
}

start "$relay_ns" relay env POTLUCK__RELAY__HOP=true POTLUCK__RELAY__MAXCIRCUITS=512 POTLUCK__RELAY__MAXCIRCUITSPERPEER=128 \
  POTLUCK__RELAY__CONNECTIONDATA=67108864 POTLUCK__RELAY__CONNECTIONDURATION=00:10:00 \
  "$potluck" run --listen /ip4/198.51.100.2/tcp/4100 --no-mdns --no-provide --data-dir "$work/relay"
if ! wait_for "$work/relay.log" "/ip4/198.51.100.2/tcp/4100/p2p/" 60; then
  echo "natlab: the relay did not start" >&2; cat "$work/relay.log" >&2; exit 1
fi
relay_addr="$(grep -o '/ip4/198.51.100.2/tcp/4100/p2p/[A-Za-z0-9]*' "$work/relay.log" | head -1)"
echo "relay: $relay_addr"

n=0
declare -A host_ip
# make_home ROLE TYPE: a router with its NAT, and one host behind it
make_home() {
  local role=$1 type=$2
  n=$((n + 1))
  local r="${P}r$role$type" h="${P}h$role$type" lan="10.$n.0"
  ip netns add "$r"; ip netns add "$h"
  plug_public "$r" wan "198.51.100.$((10 + n))"
  ip link add "${P}l$n" type veth peer name "${P}m$n"
  ip link set "${P}l$n" netns "$r"; ip link set "${P}m$n" netns "$h"
  ip -n "$r" link set "${P}l$n" name lan; ip -n "$h" link set "${P}m$n" name eth0
  ip -n "$r" addr add "$lan.1/24" dev lan; ip -n "$h" addr add "$lan.2/24" dev eth0
  ip -n "$r" link set lan up; ip -n "$h" link set eth0 up; ip -n "$h" link set lo up
  ip -n "$h" route add default via "$lan.1"
  ip netns exec "$r" sysctl -q -w net.ipv4.ip_forward=1
  local ipt="ip netns exec $r iptables"
  case "$type" in
    symmetric) $ipt -t nat -A POSTROUTING -o wan -j MASQUERADE --random-fully ;;
    *) $ipt -t nat -A POSTROUTING -o wan -j MASQUERADE ;;
  esac
  if [[ "$type" == full ]]; then
    $ipt -t nat -A PREROUTING -i wan -p tcp --dport 1024:65535 -j DNAT --to-destination "$lan.2"
    $ipt -A FORWARD -i wan -m conntrack --ctstate DNAT -j ACCEPT
  fi
  $ipt -A FORWARD -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  $ipt -A FORWARD -i wan -j DROP
  $ipt -A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  $ipt -A INPUT -i wan -j DROP
  host_ip[$role$type]="$lan.2"
}

declare -A provider_addr
for t in $types; do
  make_home p "$t"
  make_home q "$t"
  start "${P}hp$t" "provider-$t" env POTLUCK__RELAY__ACCEPTRELAYED=true POTLUCK__RELAY__STATICRELAYS__0="$relay_addr" \
    "$potluck" run --listen /ip4/0.0.0.0/tcp/4100 --no-mdns --bootstrap "$relay_addr" --data-dir "$work/provider-$t" --log-level "${NATLAB_LOG_LEVEL:-information}"
done
for t in $types; do
  if ! wait_for "$work/provider-$t.log" "relay reservation on" 60; then
    echo "natlab: provider behind $t NAT holds no reservation" >&2; tail -20 "$work/provider-$t.log" >&2; exit 1
  fi
  if ! wait_for "$work/provider-$t.log" "^Peer id: " 30; then
    echo "natlab: provider behind $t NAT printed no peer id" >&2; exit 1
  fi
  id="$(sed -n 's/^Peer id: \([A-Za-z0-9]*\).*/\1/p' "$work/provider-$t.log" | head -1)"
  provider_addr[$t]="$relay_addr/p2p-circuit/p2p/$id"
  echo "provider behind $t NAT: ${provider_addr[$t]}"
done

printf 'hello' >"$work/seed.txt"
expected="$(python3 -c 'import hashlib;h=b"hello"
for _ in range(1000): h=hashlib.sha256(h).digest()
print(h.hex())')"
table="$work/table.md"
{
  echo "| provider behind | requester behind | relayed connection | hole punch success | direct on 1st round | median time to direct | lease |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
} >"$table"
total=0; succeeded=0; eim_total=0; eim_succeeded=0; checks_passed=0; checks_failed=0
check() { if [[ "$1" == 1 ]]; then checks_passed=$((checks_passed + 1)); else checks_failed=$((checks_failed + 1)); echo "natlab: FAILED: $2"; fi; }
for pt in $types; do
  for qt in $types; do
    log="$work/probe-$pt-$qt.jsonl"
    ip netns exec "${P}hq$qt" timeout $((attempts * 40 / parallel + 120)) "$potluck" holepunch "${provider_addr[$pt]}" \
      --attempts "$attempts" --parallel "$parallel" --timeout 25 --json --log-level "${NATLAB_LOG_LEVEL:-warning}" >"$log" 2>"$work/probe-$pt-$qt.err"
    summary="$(grep '"summary":true' "$log" | tail -1)"
    read -r relayed direct first median < <(python3 -c 'import json,sys
s=json.loads(sys.argv[1]) if sys.argv[1] else {}
m=s.get("medianMsToDirect")
print(s.get("relayed",0), s.get("direct",0), s.get("firstRound",0), "-" if m is None else "%.0f ms" % m)' "$summary")
    lease_result="not run"
    if [[ $lease == 1 && ( $short == 0 || ( $pt == restricted && $qt == restricted ) || ( $pt == symmetric && $qt == symmetric ) ) ]]; then
      got="$(ip netns exec "${P}hq$qt" env "${common_env[@]}" timeout 180 "$potluck" submit "$root/samples/hashchain/hashchain.wasm" \
        --input "$work/seed.txt" --bootstrap "${provider_addr[$pt]}" --listen /ip4/0.0.0.0/tcp/0 --no-mdns --wait 60 \
        --data-dir "$work/requester-$pt-$qt" -- 1000 2>"$work/submit-$pt-$qt.err")"
      if [[ "$got" == "$expected" ]]; then lease_result="completed"; else lease_result="FAILED"; fi
      check "$([[ $lease_result == completed ]] && echo 1)" "lease $pt -> $qt"
    fi
    rate="-"
    if [[ "$relayed" -gt 0 ]]; then rate="$direct/$relayed ($(python3 -c "print('%.0f' % (100*$direct/$relayed))") %)"; fi
    echo "| $pt | $qt | $relayed/$attempts | $rate | $first | $median | $lease_result |" >>"$table"
    echo "$pt -> $qt: relayed $relayed/$attempts, direct $direct, first round $first, median $median, lease $lease_result"
    check "$([[ "$relayed" == "$attempts" ]] && echo 1)" "relayed connections $pt -> $qt: $relayed/$attempts"
    total=$((total + relayed)); succeeded=$((succeeded + direct))
    if [[ $pt != symmetric && $qt != symmetric ]]; then eim_total=$((eim_total + relayed)); eim_succeeded=$((eim_succeeded + direct)); fi
  done
done
pct() { python3 -c "print('%.1f' % (100*$1/$2) if $2 else '-')"; }
{
  echo
  echo "Overall: $succeeded/$total hole punches ($(pct $succeeded $total) %); between endpoint-independent NATs: $eim_succeeded/$eim_total ($(pct $eim_succeeded $eim_total) %)."
} >>"$table"
check "$([[ $eim_total -gt 0 && $((eim_succeeded * 100)) -ge $((eim_total * 95)) ]] && echo 1)" \
  "hole punches between endpoint-independent NATs: $eim_succeeded/$eim_total (goal 95 %)"
if [[ $short == 0 && $attempts -ge 50 && "$types" == "full restricted symmetric" ]]; then
  check "$([[ $total -gt 0 && $((succeeded * 100)) -ge $((total * 70)) ]] && echo 1)" \
    "hole punches overall: $succeeded/$total (goal: the campaign's 70 %)"
fi
cat "$table"
[[ -n "$out" ]] && cp "$table" "$out"
echo "$checks_passed passed, $checks_failed failed"
[[ $checks_failed -eq 0 ]]
