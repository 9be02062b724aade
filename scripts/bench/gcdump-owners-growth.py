#!/usr/bin/env python3
"""What grew between two owner listings of one run (gcdump-owners.sh's owners.tsv after the warm-up and, with DUMP=at-end,
owners-at-end.tsv): KiB per node by owner group (the groups of gcdump-owners-by-group.py), then the (owner, object type)
pairs that grew most. Usage: gcdump-owners-growth.py BEFORE.tsv AFTER.tsv NODES [TOP]"""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import importlib
by_group = importlib.import_module('gcdump-owners-by-group')

before_f, after_f, nodes = sys.argv[1], sys.argv[2], int(sys.argv[3])
top = int(sys.argv[4]) if len(sys.argv) > 4 else 15
before, before_detail = by_group.load(before_f)
after, after_detail = by_group.load(after_f)
kib = lambda b: b / nodes / 1024
tb, ta = sum(before.values()), sum(after.values())
print(f"{'owner group':50s} {'before':>8s} {'after':>8s} {'growth':>8s}  KiB/node")
for k in sorted(set(before) | set(after), key=lambda k: -(after[k] - before[k])):
    print(f"{k:50s} {kib(before[k]):8.1f} {kib(after[k]):8.1f} {kib(after[k] - before[k]):+8.1f}")
print(f"{'total':50s} {kib(tb):8.1f} {kib(ta):8.1f} {kib(ta - tb):+8.1f}")
pairs = {}
for g in set(before_detail) | set(after_detail):
    for p in set(before_detail[g]) | set(after_detail[g]):
        pairs[(g,) + p] = after_detail[g][p] - before_detail[g][p]
print(f"\nlargest growth by owner :: object type (KiB/node)")
for (g, o, t), d in sorted(pairs.items(), key=lambda kv: -kv[1])[:top]:
    print(f"{kib(d):+8.1f}  {o[:70]} :: {t[:60]}  [{g}]")
