#!/usr/bin/env bash
# Memory of a simulated mesh by owner: each object of a dump (sim-memory.sh's after-warmup.gcdump) is charged to itself when its
# type is Potluck's (or DI, metrics, SQLite), else to the nearest such object that refers to it (breadth-first over referrers);
# the owners are then grouped (Yamux, memory transport, identify, ...) and printed in KiB per node and bytes per connection end
# (ends: the dump's YamuxConnection count). Usage: scripts/bench/gcdump-owners.sh RUN-DIR NODES [DETAIL-LINES]
# DUMP=at-end: the run's end dump (at-end.gcdump, owners-at-end.tsv) instead of the warm-up's. The tool is built into
# GCDUMP_OWNERS_BUILD (default /tmp/gcdump-owners-build; give each user of the machine its own).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
run="$1"; nodes="$2"
tool=$(ls -d "$HOME"/.dotnet/tools/.store/dotnet-gcdump/*/dotnet-gcdump/*/tools/*/any | tail -1)
out="${GCDUMP_OWNERS_BUILD:-/tmp/gcdump-owners-build}"
case "${DUMP:-after-warmup}" in
  after-warmup) owners="$run/owners.tsv"; types="$run/gcdump-types.txt" ;;
  at-end) owners="$run/owners-at-end.tsv"; types="$run/gcdump-types-at-end.txt" ;;
  mid) owners="$run/owners-mid.tsv"; types="$run/gcdump-types-mid.txt" ;;
  *) echo "DUMP=${DUMP}: use after-warmup, mid or at-end" >&2; exit 2 ;;
esac
dotnet build "$root/scripts/bench/GcdumpOwners" -c Release -v q --nologo -p:GcdumpDir="$tool" -o "$out" >/dev/null
[ -f "$owners" ] || dotnet "$out/GcdumpOwners.dll" "$run/${DUMP:-after-warmup}.gcdump" owners "$owners" >/dev/null
ends=$(grep -E "Potluck\.Protocol\.Yamux\.YamuxConnection  \[" "$types" | awk '{gsub(",","",$2); print $2}')
python3 "$root/scripts/bench/gcdump-owners-by-group.py" "$owners" "$nodes" "$ends" ${3:-}
