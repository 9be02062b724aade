#!/usr/bin/env python3
"""Where a component's samples come from: for the samples classify.py gives to COMPONENT (a prefix of its name; "all"
for every sample), the innermost DEPTH frames of Potluck code from the leaf up (the call site in our code), per 1,000
tasks. usage: sites.py TOTAL COMPONENT [DEPTH] [TOP] < perf-script-output (-F comm,tid,time,ip,sym,dso)"""
import collections
import os
import re
import sys

here = os.path.dirname(os.path.abspath(__file__))
src = open(os.path.join(here, "classify.py")).read().replace("\nmain()\n", "\n")
ns = {"__name__": "classify"}
exec(compile(src, "classify.py", "exec"), ns)
total, which = int(sys.argv[1]), sys.argv[2]
t0, t1 = 0.0, float("inf")
depth = int(sys.argv[3]) if len(sys.argv) > 3 else 2
top = int(sys.argv[4]) if len(sys.argv) > 4 else 30


def short(sym):
    m = re.search(r"\] (Potluck\.[^(]*)\(", sym) or re.search(r"(Potluck\.[^(]*)\(", sym)
    return m.group(1) if m else sym[:100]


sites, n = collections.Counter(), 0
frames, in_sample, keep = [], False, False


def done():
    global n
    if not (in_sample and keep):
        return
    comp = ns["classify"](frames)
    if which != "all" and not comp.startswith(which):
        return
    n += 1
    ours = []
    for sym, dso in frames:
        if "Potluck." in sym:
            s = short(sym)
            if not ours or ours[-1] != s:
                ours.append(s)
            if len(ours) >= depth:
                break
    sites[(comp if which == "all" else "") + " < ".join(ours or ["(no Potluck frame) " + (frames[0][0][:80] if frames else "?")])] += 1


for line in sys.stdin:
    if not line.strip():
        done()
        frames, in_sample = [], False
        continue
    m = ns["FRAME"].match(line)
    if m and in_sample:
        frames.append((re.sub(r"\+0x[0-9a-f]+$", "", m.group(2)), m.group(3)))
    elif not line.startswith((" ", "\t")):
        in_sample = True
        h = ns["HEADER"].match(line)
        keep = h is not None and t0 <= float(h.group(1)) <= t1
done()
print(f"# {which}: {n} samples, {1000 * n / total:.0f} per 1,000 tasks")
for site, c in sites.most_common(top):
    print(f"{1000 * c / total:7.1f}  {site}")
