#!/usr/bin/env python3
"""What a node costs as the mesh grows: owner listings (gcdump-owners.sh's owners.tsv, or owners-at-end.tsv) of runs at
several sizes with the same per-node shape, grouped as gcdump-owners-by-group.py groups them. Prints KiB per node by owner
group at each size, the change per doubling of N (least squares of KiB per node against log2 N) and the change per 100
nodes (against N), then the (owner, object type) pairs whose KiB per node grew most from the smallest to the largest run.
--project M: also each group carried to M nodes from the largest run, by its change per doubling (log N) and by its change
per 100 nodes (linear in N): the two bracket what it grows with.
Usage: gcdump-owners-scaling.py N1:OWNERS1.tsv N2:OWNERS2.tsv [N3:OWNERS3.tsv ...] [--top K] [--project M]"""
import os, sys, math
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import importlib
by_group = importlib.import_module('gcdump-owners-by-group')

args = [a for a in sys.argv[1:] if a not in ('--top', '--project')]
top = 15
if '--top' in sys.argv:
    top = int(sys.argv[sys.argv.index('--top') + 1]); args.remove(str(top))
project = None
if '--project' in sys.argv:
    project = int(sys.argv[sys.argv.index('--project') + 1]); args.remove(str(project))
runs = []
for a in args:
    n, f = a.split(':', 1)
    cat, detail = by_group.load(f)
    runs.append((int(n), cat, detail))
runs.sort(key=lambda r: r[0])

def fit(xs, ys):
    """Least-squares slope of ys against xs."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0

ns = [r[0] for r in runs]
groups = set().union(*(set(r[1]) for r in runs))
rows = []
for g in groups:
    kib = [r[1][g] / r[0] / 1024 for r in runs]
    rows.append((g, kib, fit([math.log2(n) for n in ns], kib), fit(ns, kib) * 100))
totals = [sum(r[1].values()) / r[0] / 1024 for r in runs]
head = ''.join(f'{"N=" + str(n):>9s}' for n in ns)
def carried(last, per_doubling, per_100):
    """(by log N, linear in N) at the projected size, from the largest run."""
    return last + per_doubling * math.log2(project / ns[-1]), last + per_100 * (project - ns[-1]) / 100
tail = f' {"M=" + str(project) + " log":>12s} {"linear":>8s}' if project else ''
print(f'{"owner group (KiB per node)":50s}{head} {"/doubling":>10s} {"/100 nodes":>10s}{tail}')
for g, kib, per_doubling, per_100 in sorted(rows, key=lambda r: -r[2]):
    extra = ''.join(f' {v:{w}.1f}' for v, w in zip(carried(kib[-1], per_doubling, per_100), (12, 8))) if project else ''
    print(f'{g:50s}' + ''.join(f'{k:9.1f}' for k in kib) + f' {per_doubling:+10.1f} {per_100:+10.1f}{extra}')
td, t100 = fit([math.log2(n) for n in ns], totals), fit(ns, totals) * 100
extra = ''.join(f' {v:{w}.1f}' for v, w in zip(carried(totals[-1], td, t100), (12, 8))) if project else ''
print(f'{"total":50s}' + ''.join(f'{k:9.1f}' for k in totals) + f' {td:+10.1f} {t100:+10.1f}{extra}')

(n0, _, d0), (n1, _, d1) = (runs[0][0], runs[0][1], runs[0][2]), (runs[-1][0], runs[-1][1], runs[-1][2])
pairs = {}
for g in set(d0) | set(d1):
    for p in set(d0[g]) | set(d1[g]):
        pairs[(g,) + p] = (d0[g][p] / n0 / 1024, d1[g][p] / n1 / 1024)
print(f'\n(owner :: object type) whose KiB per node grew most from N={n0} to N={n1}')
for (g, o, t), (a, b) in sorted(pairs.items(), key=lambda kv: -(kv[1][1] - kv[1][0]))[:top]:
    print(f'{a:8.1f} -> {b:8.1f}  {o[:70]} :: {t[:60]}  [{g}]')
