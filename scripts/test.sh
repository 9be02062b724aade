#!/usr/bin/env bash
# Runs the whole Potluck test suite on a fresh machine: installs what the tests need (the js-libp2p
# interop peer's npm packages from the committed lock file), builds, runs every test project, and ends
# with one line "N passed, N failed".
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! command -v dotnet >/dev/null; then
  echo "dotnet (SDK 10.0.4xx) is required" >&2
  exit 1
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "installing Node.js and npm for the interop peer" >&2
  (apt-get update && apt-get install -y nodejs npm) >&2 || { echo "cannot install Node.js" >&2; exit 1; }
fi

echo "== npm ci (js-libp2p interop peer)"
if ! npm ci --prefix tests/Interop/js --no-audit --no-fund --loglevel=error; then
  echo "npm ci failed" >&2
  exit 1
fi

echo "== dotnet build"
if ! dotnet build Node.sln -c Release --nologo -v q -clp:ErrorsOnly; then
  echo "0 passed, 1 failed"
  exit 1
fi

results="$(mktemp -d)"
passed=0
failed=0
status=0
for project in tests/Protocol.Tests tests/Scheduler.Tests tests/Node.Tests tests/Interop; do
  echo "== dotnet test $project"
  log="$results/$(basename "$project").log"
  dotnet test "$project" -c Release --no-build --nologo --blame-hang-timeout 5m "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  line="$(grep -E '(Passed|Failed)!  - Failed: ' "$log" | tail -n 1)"
  if [[ -n "$line" ]]; then
    f=$(sed -E 's/.*Failed: +([0-9]+),.*/\1/' <<<"$line")
    p=$(sed -E 's/.*Passed: +([0-9]+),.*/\1/' <<<"$line")
    passed=$((passed + p))
    failed=$((failed + f))
    if [[ $rc -ne 0 && $f -eq 0 ]]; then
      echo "$project: the test run was aborted (exit $rc; a hang or a crashed test host) — counted as a failure" >&2
      failed=$((failed + 1))
    fi
  elif [[ $rc -ne 0 ]]; then
    echo "$project did not report results (exit $rc)" >&2
    failed=$((failed + 1))
  fi
  [[ $rc -ne 0 ]] && status=1
done
echo "== libp2p's own interop suites, CI subset (scripts/interop/ci.sh)"
log="$results/interop-suites.log"
bash scripts/interop/ci.sh 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
line="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)"
if [[ -n "$line" ]]; then
  passed=$((passed + $(sed -E 's/^([0-9]+) passed.*/\1/' <<<"$line")))
  failed=$((failed + $(sed -E 's/.* ([0-9]+) failed$/\1/' <<<"$line")))
else
  echo "scripts/interop/ci.sh did not report results (exit $rc)" >&2
  failed=$((failed + 1))
fi
[[ $rc -ne 0 ]] && status=1

echo "== NAT lab, short (scripts/natlab/run.sh --short; skips without root and iptables)"
log="$results/natlab.log"
bash scripts/natlab/run.sh --short 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
line="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)"
if [[ -n "$line" ]]; then
  passed=$((passed + $(sed -E 's/^([0-9]+) passed.*/\1/' <<<"$line")))
  failed=$((failed + $(sed -E 's/.* ([0-9]+) failed$/\1/' <<<"$line")))
else
  echo "scripts/natlab/run.sh did not report results (exit $rc)" >&2
  failed=$((failed + 1))
fi
[[ $rc -ne 0 ]] && status=1

echo "== DCUtR with js-libp2p across NATs (scripts/natlab/js-dcutr.sh; skips without root and iptables)"
log="$results/js-dcutr.log"
if [[ "$(id -u)" == 0 ]] && command -v iptables >/dev/null; then
  npm ci --prefix scripts/natlab/js --no-audit --no-fund --loglevel=error >&2 || echo "npm ci for scripts/natlab/js failed" >&2
fi
bash scripts/natlab/js-dcutr.sh 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
line="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)"
if [[ -n "$line" ]]; then
  passed=$((passed + $(sed -E 's/^([0-9]+) passed.*/\1/' <<<"$line")))
  failed=$((failed + $(sed -E 's/.* ([0-9]+) failed$/\1/' <<<"$line")))
else
  echo "scripts/natlab/js-dcutr.sh did not report results (exit $rc)" >&2
  failed=$((failed + 1))
fi
[[ $rc -ne 0 ]] && status=1

echo "== kill -9 chaos, short version (scripts/chaos/run.sh --ci)"
if bash scripts/chaos/run.sh --ci; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
  status=1
fi

echo "$passed passed, $failed failed"
exit $status
