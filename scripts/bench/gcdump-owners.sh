#!/usr/bin/env bash
# Memory of a simulated mesh by owner: each object of a dump (sim-memory.sh's after-warmup.gcdump) is charged to itself when its
# type is Potluck's (or DI, metrics, SQLite), else to the nearest such object that refers to it (breadth-first over referrers);
# the owners are then grouped (Yamux, memory transport, identify, ...) and printed in KiB per node and bytes per connection end
# (ends: the dump's YamuxConnection count). Usage: scripts/bench/gcdump-owners.sh RUN-DIR NODES [DETAIL-LINES]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
run="$1"; nodes="$2"
tool=$(ls -d "$HOME"/.dotnet/tools/.store/dotnet-gcdump/*/dotnet-gcdump/*/tools/*/any | tail -1)
out=/tmp/gcdump-owners-build
dotnet build "$root/scripts/bench/GcdumpOwners" -c Release -v q --nologo -p:GcdumpDir="$tool" -o "$out" >/dev/null
[ -f "$run/owners.tsv" ] || dotnet "$out/GcdumpOwners.dll" "$run/after-warmup.gcdump" owners "$run/owners.tsv" >/dev/null
ends=$(grep -E "Potluck\.Protocol\.Yamux\.YamuxConnection  \[" "$run/gcdump-types.txt" | awk '{gsub(",","",$2); print $2}')
python3 "$root/scripts/bench/gcdump-owners-by-group.py" "$run/owners.tsv" "$nodes" "$ends" ${3:-}
