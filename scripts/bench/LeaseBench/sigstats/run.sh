#!/usr/bin/env bash
# Ed25519 signatures made and checked per task, all three nodes, in one LeaseBench run of COMMIT (default HEAD): builds a
# clean export of COMMIT with a counter in PrivateKey.Sign and PublicKey.Verify (every signature and check, whatever signs:
# leases, receipts, chain blocks, gossip, Noise), runs `LeaseBench 1 TOTAL 32`, and prints the counts over the tasks run.
# usage: scripts/bench/LeaseBench/sigstats/run.sh [commit] [total]
set -euo pipefail
commit=${1:-HEAD}
total=${2:-2000}
here=$(cd "$(dirname "$0")" && pwd)
root=$(git -C "$here" rev-parse --show-toplevel)
work=$(mktemp -d /tmp/leasebench-sigstats.XXXXXX)
trap 'rm -rf "$work"' EXIT
git -C "$root" archive "$commit" | tar -x -C "$work"
cp "$root/scripts/bench/LeaseBench/Program.cs" "$work/scripts/bench/LeaseBench/Program.cs"
python3 - "$work/src/Protocol/Identity" <<'PY'
import sys, os
d = sys.argv[1]
def patch(name, old, new):
    p = os.path.join(d, name)
    s = open(p).read()
    assert s.count(old) == 1, f"{name} changed: update the hook point"
    open(p, "w").write(s.replace(old, new))
patch("PrivateKey.cs", "    public byte[] Sign(ReadOnlySpan<byte> message)\n    {\n",
      "    public byte[] Sign(ReadOnlySpan<byte> message)\n    {\n        System.Threading.Interlocked.Increment(ref SigStats.Signed);\n")
patch("PublicKey.cs", "    public bool Verify(ReadOnlySpan<byte> message, ReadOnlySpan<byte> signature)\n    {\n",
      "    public bool Verify(ReadOnlySpan<byte> message, ReadOnlySpan<byte> signature)\n    {\n        System.Threading.Interlocked.Increment(ref SigStats.Verified);\n")
open(os.path.join(d, "SigStats.cs"), "w").write("""#pragma warning disable CA2255
namespace Potluck.Protocol.Identity;
internal static class SigStats
{
    public static long Signed;
    public static long Verified;
    [System.Runtime.CompilerServices.ModuleInitializer]
    internal static void Init() => System.AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        System.Console.WriteLine($"sigstats: {Signed} signed, {Verified} verified");
}
""")
PY
(cd "$work" && dotnet build scripts/bench/LeaseBench -c Release -v q -nologo -clp:ErrorsOnly > "$work/build.log" 2>&1) || { cat "$work/build.log"; exit 1; }
echo "# $(git -C "$root" rev-parse --short "$commit"), $(date -u +%Y-%m-%dT%H:%M) UTC, load $(cut -d' ' -f1 /proc/loadavg): LeaseBench 1 $total 32"
out=$(dotnet "$work/scripts/bench/LeaseBench/bin/Release/net10.0/Potluck.Benchmarks.Lease.dll" 1 "$total" 32 || true)
echo "$out" | grep -E '^Sustained:|^sigstats:'
# Tasks in the run: 50 one at a time, the concurrent warm-up (total / 4, whole rounds of 32), 1 sequential, then total.
tasks=$(( 50 + 32 * ( total / 4 / 32 > 0 ? total / 4 / 32 : 1 ) + 1 + total ))
echo "$out" | awk -v t="$tasks" '/^sigstats:/ { printf "per task (%d tasks): %.2f signed, %.2f verified, %.2f in all\n", t, $2 / t, $4 / t, ($2 + $4) / t }'
