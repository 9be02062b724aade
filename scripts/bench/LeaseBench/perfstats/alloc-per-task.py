#!/usr/bin/env python3
"""AllocSites' output (bytes by type and innermost Potluck frame, from allocation ticks) as KiB per task: the types, then
the sites. usage: alloc-per-task.py TOTAL [TOP] < allocsites-output (run with depth 1 and a large top)"""
import collections
import re
import sys

total = int(sys.argv[1])
top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
kib = lambda mb: mb * 1e6 / 1024 / total
types, sites, all_mb, cur = collections.Counter(), collections.Counter(), 0.0, None
for line in sys.stdin:
    m = re.match(r"^total ([0-9.]+) MB", line)
    if m:
        all_mb = float(m.group(1))
        continue
    m = re.match(r"^\s*([0-9.]+) MB\s+[0-9.]+% (.*)$", line.rstrip("\n"))
    if m:
        cur = (float(m.group(1)), m.group(2).strip())
        types[cur[1]] += cur[0]
        continue
    if cur and line.strip():
        site = re.sub(r"\(.*", "", line.strip().lstrip("< ").replace("(none) first=", "(no Potluck frame) "))
        sites[(cur[1], site)] += cur[0]
        cur = None
print(f"total {kib(all_mb):.1f} KiB per task (allocation ticks: a sample, ~100 KB each)")
print("by type, KiB per task:")
for t, mb in types.most_common(top):
    print(f"  {kib(mb):6.2f}  {t}")
print("by type and innermost Potluck frame, KiB per task:")
for (t, s), mb in sites.most_common(top * 2):
    print(f"  {kib(mb):6.2f}  {t}  @ {s}")
