#!/usr/bin/env bash
# Per-task SQLite statements, write transactions and fsyncs, by purpose and by side (r = requester, p1/p2 = providers), in
# one LeaseBench run of COMMIT (default HEAD). Builds a clean export of COMMIT with a statement counter hooked into
# CreditLedger.Open and Dispose (CreditLedger.Stats.cs.txt: sqlite3_profile, keyed by the caller found on the stack), runs
# `LeaseBench 1 TOTAL 32` under strace (fsync and fdatasync, by file), and prints aggregate.py's table. The counter and the
# stack walks slow the run down: read the counts, not the speed.
# usage: scripts/bench/LeaseBench/sqlstats/run.sh [commit] [total]
set -euo pipefail
commit=${1:-HEAD}
total=${2:-2000}
here=$(cd "$(dirname "$0")" && pwd)
root=$(git -C "$here" rev-parse --show-toplevel)
work=$(mktemp -d /tmp/leasebench-sqlstats.XXXXXX)
trap 'rm -rf "$work"' EXIT
git -C "$root" archive "$commit" | tar -x -C "$work"
cp "$root/scripts/bench/LeaseBench/Program.cs" "$work/scripts/bench/LeaseBench/Program.cs"
cp "$here/CreditLedger.Stats.cs.txt" "$work/src/Scheduler/Credits/CreditLedger.Stats.cs"
python3 - "$work/src/Scheduler/Credits/CreditLedger.cs" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
a = "            ledger.Initialise();\n"
b = "                _disposed = true;\n"
assert s.count(a) == 1 and s.count(b) == 1, "CreditLedger.Open/Dispose changed: update the hook points"
s = s.replace(a, "            ledger.StartStats();\n" + a).replace(b, b + "                WriteStats();\n")
open(p, "w").write(s)
PY
(cd "$work" && dotnet build scripts/bench/LeaseBench -c Release -v q -nologo -clp:ErrorsOnly > "$work/build.log" 2>&1) || { cat "$work/build.log"; exit 1; }
mkdir "$work/stats"
echo "# $(git -C "$root" rev-parse --short "$commit"), $(date -u +%Y-%m-%dT%H:%M) UTC, load $(cut -d' ' -f1 /proc/loadavg): LeaseBench 1 $total 32 under strace"
POTLUCK_SQLSTATS="$work/stats" strace -f --seccomp-bpf -y -qq -e trace=fsync,fdatasync -o "$work/stats/strace.txt" \
  dotnet "$work/scripts/bench/LeaseBench/bin/Release/net10.0/Potluck.Benchmarks.Lease.dll" 1 "$total" 32 | grep -E '^Sustained:' || true
# Tasks in the run: 50 one at a time, the concurrent warm-up (total / 4, whole rounds of 32), 1 sequential, then total.
python3 "$here/aggregate.py" "$work/stats" $(( 50 + 32 * ( total / 4 / 32 > 0 ? total / 4 / 32 : 1 ) + 1 + total ))
