#!/usr/bin/env bash
# Side-by-side lease-path benchmark: the code at BASE (default 87f7c80, before the lease-path work) against HEAD,
# both built from clean exports and both running this checkout's LeaseBench program, interleaved ROUNDS times.
# BASE may name several commits separated by commas (e.g. 069d992,main): each runs in turn before HEAD, every round.
# An entry may carry environment for its runs only, after @ (COMMIT@VAR=value[@VAR=value...]); HEAD may be such an entry,
# so one interleaved run can compare the same code under two settings, e.g. `069d992,HEAD@LEASEBENCH_POLICY=cluster`
# (HEAD at the providers' cluster policy, beside HEAD at their defaults and 069d992). The variable is set for that
# entry's runs alone; a version that does not read it runs as it would without it.
# Equal loads: the bench's requester is a stranger to its providers, which since the per-requester limit (deliverable 8)
# hold it to 4 leases each (8 in flight, whatever the concurrency asked); code before that limit (069d992) runs all of them.
# Compare such code at the same load with `069d992,HEAD@LEASEBENCH_POLICY=cluster`, or run both at 8 (`-- 100 6000 8`).
# A base whose API this checkout's program no longer compiles against (older than the composition root) runs its own
# LeaseBench program instead, which prints the same lines; the build log says which.
# usage: scripts/bench/LeaseBench/ab.sh [rounds] [base-commit[,base-commit...]] [-- sequential total concurrency]
set -euo pipefail
rounds=${1:-4}
base=${2:-87f7c80}
shift $(( $# < 2 ? $# : 2 ))
[[ ${1:-} == "--" ]] && shift
args=("${@:-300 2000 32}")
root=$(git rev-parse --show-toplevel)
work=$(mktemp -d /tmp/leasebench-ab.XXXXXX)
trap 'rm -rf "$work"' EXIT
IFS=, read -r -a bases <<< "$base"
versions=()
declare -A envs=()
for i in "${!bases[@]}"; do
  versions+=("base$((i + 1))")
  IFS=@ read -r -a parts <<< "${bases[$i]}"
  bases[$i]=${parts[0]}
  envs[base$((i + 1))]="${parts[*]:1}"
done
versions+=(head)
envs[head]=""
for v in "${versions[@]}"; do
  if [[ $v == head ]]; then commit=HEAD; else commit=${bases[${v#base} - 1]}; fi
  echo "# $v = $commit = $(git -C "$root" rev-parse --short "$commit")${envs[$v]:+, with ${envs[$v]}}"
  mkdir -p "$work/$v"
  git -C "$root" archive "$commit" | tar -x -C "$work/$v"
  own="$work/$v.own-program.cs"
  cp "$work/$v/scripts/bench/LeaseBench/Program.cs" "$own"
  cp "$root/scripts/bench/LeaseBench/Program.cs" "$work/$v/scripts/bench/LeaseBench/Program.cs"
  if ! (cd "$work/$v" && dotnet build scripts/bench/LeaseBench -c Release -v q -nologo > "$work/$v.build.log" 2>&1); then
    echo "# $v: this checkout's program does not build against $commit; running that commit's own LeaseBench program"
    cp "$own" "$work/$v/scripts/bench/LeaseBench/Program.cs"
    (cd "$work/$v" && dotnet build scripts/bench/LeaseBench -c Release -v q -nologo > "$work/$v.build.log" 2>&1) \
      || { cat "$work/$v.build.log"; exit 1; }
  fi
done
for r in $(seq 1 "$rounds"); do
  for v in "${versions[@]}"; do
    echo "=== $v, round $r, $(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1 /proc/loadavg)"
    # CPU of the whole run (build excluded) as the kernel counts it, beside the program's own sustained-phase figure.
    env ${envs[$v]} /usr/bin/time -f "process: %e s wall, %U s user, %S s system" \
      dotnet "$work/$v/scripts/bench/LeaseBench/bin/Release/net10.0/Potluck.Benchmarks.Lease.dll" ${args[@]} 2>&1 \
      | grep -E '^\| (libp2p|the task|whole|the same)|^# providers|Sustained|^process:' || true  # a run with failed tasks exits 1: keep going
  done
done
