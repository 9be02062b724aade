#!/usr/bin/env bash
# Publishes potluck as one self-contained file (the .NET runtime and the native libraries — Wasmtime, libsodium,
# SQLite — bundled into it and unpacked on first start) and, with --system, installs it as a systemd service.
#
#   bash scripts/install.sh                     # build ./publish/potluck and print its size
#   bash scripts/install.sh --prefix ~/.local   # ... and copy it to ~/.local/bin/potluck
#   sudo bash scripts/install.sh --system       # ... to /usr/local/bin, a 'potluck' system user, the unit, enabled and started
set -euo pipefail
cd "$(dirname "$0")/.."

rid="linux-x64"
case "$(uname -m)" in
  aarch64|arm64) rid="linux-arm64" ;;
esac
prefix=""
system=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --system) system=1; prefix="/usr/local"; shift ;;
    --rid) rid="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done

out="publish/$rid"
echo "Publishing potluck for $rid (self-contained, single file) into $out ..."
dotnet publish src/Node/Node.csproj -c Release -r "$rid" --self-contained true -o "$out" --nologo -v q \
  -p:PublishSingleFile=true -p:IncludeNativeLibrariesForSelfExtract=true -p:EnableCompressionInSingleFile=true \
  -p:DebugType=none -p:GenerateDocumentationFile=false
file="$out/potluck"
[ -x "$file" ] || { echo "install.sh: the publish produced no $file" >&2; exit 1; }
extra=$(find "$out" -type f ! -name potluck | wc -l)
echo "One file: $file, $(du -h "$file" | cut -f1) ($(stat -c %s "$file") bytes); other files beside it: $extra"
"$file" version

if [ -n "$prefix" ]; then
  install -d "$prefix/bin"
  install -m 0755 "$file" "$prefix/bin/potluck"
  echo "Installed $prefix/bin/potluck"
fi
if [ "$system" = 1 ]; then
  if ! id potluck >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/potluck --shell /usr/sbin/nologin potluck
  fi
  install -m 0644 scripts/systemd/potluck.service /etc/systemd/system/potluck.service
  systemctl daemon-reload
  systemctl enable --now potluck
  echo "Started: systemctl status potluck; journalctl -u potluck; sudo -u potluck potluck status --data-dir /var/lib/potluck"
fi
