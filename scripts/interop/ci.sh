#!/usr/bin/env bash
# The CI-sized part of libp2p's interop suites, for scripts/test.sh: @libp2p/interop's connect, streams
# (Ed25519/Noise/Yamux), dht and pubsub groups with potluck p2pd in the go slot, both ways; and the transport-interop
# pair (tcp/noise/yamux) with potluck as listener and as dialer against the js v3.x app. Ends with "N passed, N failed".
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
passed=0
failed=0
count() { # count <log> <prefix>: adds the "<prefix>: N passed, N failed" line's numbers
  local line
  line="$(grep -E "^$2: [0-9]+ passed, [0-9]+ failed" "$1" | tail -n 1)"
  if [[ -z "$line" ]]; then
    failed=$((failed + 1))
    return
  fi
  passed=$((passed + $(sed -E 's/.*: ([0-9]+) passed.*/\1/' <<<"$line")))
  failed=$((failed + $(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")))
}
log="$(mktemp)"
bash "$here/daemon/run.sh" --ci 2>&1 | tee "$log"
count "$log" daemon-interop
bash "$here/transport/run.sh" 2>&1 | tee "$log"
count "$log" transport-interop
rm -f "$log"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
