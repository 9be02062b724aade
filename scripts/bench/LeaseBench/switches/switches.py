#!/usr/bin/env python3
"""Context switches (`perf script -F comm,tid,ip,sym` of sched:sched_switch with call chains, on stdin) per task: by thread
name and by the innermost Potluck frame of the blocked thread (else the first System frame). usage: switches.py TASKS"""
import collections
import re
import sys

tasks = int(sys.argv[1])
by_comm, by_site, n = collections.Counter(), collections.Counter(), 0


def flush(head, frames):
    global n
    if not head:
        return
    n += 1
    comm = re.sub(r"\d+", "#", head.split()[0])
    by_comm[comm] += 1
    site = None
    for pattern in (r"(Potluck\.[A-Za-z0-9_.`+<>]*::[A-Za-z0-9_<>`|]*)", r"(System\.[A-Za-z0-9_.`+<>\[\]]*::[A-Za-z0-9_<>`]*)"):
        for f in frames:
            m = re.search(pattern, f)
            if m:
                site = m.group(1)
                break
        if site:
            break
    by_site[(comm, site or (frames[1][:60] if len(frames) > 1 else "?"))] += 1


head, frames = None, []
for line in sys.stdin:
    if not line.strip():
        flush(head, frames)
        head, frames = None, []
    elif line[0] not in " \t":
        head, frames = line.strip(), []
    else:
        p = line.strip().split(" ", 1)
        frames.append(p[1] if len(p) > 1 else p[0])
flush(head, frames)
print(f"  context switches over the sustained phase: {n / tasks:.2f} per task")
for k, v in by_comm.most_common(6):
    print(f"    {v / tasks:6.2f}  {k}")
for (c, s), v in by_site.most_common(12):
    print(f"    {v / tasks:6.2f}  {c:14} {s}")
