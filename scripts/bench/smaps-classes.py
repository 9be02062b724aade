#!/usr/bin/env python3
"""Where a process's resident memory lies, by kind of mapping: reads a copy of /proc/PID/smaps and sums Rss (and
Anonymous) by class. Usage: smaps-classes.py SMAPS [NODES]  (NODES: also per node, in KiB).

Classes (Linux, glibc, .NET): adjacent anonymous mappings are merged into blocks first, then
  gc-heap        the block holding the GC's reservation (the largest anonymous block, >= 1 GiB of address space)
  malloc-arenas  glibc's thread arenas: a read-write mapping at a 64 MiB boundary, the rest of the 64 MiB reserved
                 (---p) or none (HEAP_MAX_SIZE on 64-bit); counted before anonymous mappings are merged
  malloc-brk     [heap]: glibc's main arena (brk)
  thread-stacks  a guard page (---p) followed by a read-write mapping (pthread stacks), and [stack]
  runtime-code   memfd:doublemapper (the runtime's W^X executable and loader heaps)
  native-libs    file-backed *.so (libcoreclr, libclrjit, e_sqlite3, wasmtime, ...)
  assemblies     file-backed *.dll
  other-files    any other file-backed mapping (ICU data, sqlite -shm, memfd of wasmtime, ...)
  other-anon     every other anonymous block (mmapped malloc chunks above the threshold, runtime reservations, ...)
"""
import re
import sys
from collections import defaultdict

GIB = 1 << 30
ARENA = 64 << 20


def parse(path):
    maps = []
    cur = None
    head = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ (\d+)\s*(.*)$")
    with open(path) as f:
        for line in f:
            m = head.match(line)
            if m:
                cur = {"start": int(m.group(1), 16), "end": int(m.group(2), 16), "perms": m.group(3),
                       "inode": int(m.group(4)), "name": m.group(5).strip(), "Rss": 0, "Anonymous": 0}
                maps.append(cur)
                continue
            k, _, v = line.partition(":")
            if cur is not None and k in ("Rss", "Anonymous"):
                cur[k] = int(v.split()[0])  # kB
    return maps


def classify(maps):
    sums = defaultdict(lambda: [0, 0, 0])  # class -> [rss kB, anon kB, count]

    def add(cls, ms):
        s = sums[cls]
        s[0] += sum(m["Rss"] for m in ms)
        s[1] += sum(m["Anonymous"] for m in ms)
        s[2] += 1

    anon_blocks = []
    for i, m in enumerate(maps):
        name = m["name"]
        anon = name == "" and m["inode"] == 0
        nxt = maps[i + 1] if i + 1 < len(maps) else None
        if anon and m["start"] % ARENA == 0 and m["perms"].startswith("rw") and (
                m["end"] - m["start"] == ARENA
                or (nxt is not None and nxt["start"] == m["end"] and nxt["perms"] == "---p" and nxt["end"] == m["start"] + ARENA)):
            add("malloc-arenas", [m])  # an arena's heap: its used part (the ---p rest has no Rss)
            continue
        if anon:
            if anon_blocks and anon_blocks[-1][-1]["end"] == m["start"]:
                anon_blocks[-1].append(m)
            else:
                anon_blocks.append([m])
            continue
        if name == "[heap]":
            add("malloc-brk", [m])
        elif name == "[stack]":
            add("thread-stacks", [m])
        elif "doublemapper" in name:
            add("runtime-code", [m])
        elif name.endswith(".so") or ".so." in name:
            add("native-libs", [m])
        elif name.endswith(".dll"):
            add("assemblies", [m])
        else:
            add("other-files", [m])
    largest = max(anon_blocks, key=lambda b: b[-1]["end"] - b[0]["start"], default=None)
    for b in anon_blocks:
        size = b[-1]["end"] - b[0]["start"]
        if b is largest and size >= GIB:
            add("gc-heap", b)
        elif len(b) >= 2 and b[0]["perms"] == "---p" and b[0]["end"] - b[0]["start"] <= 64 << 10 and b[1]["perms"].startswith("rw"):
            add("thread-stacks", b)
        else:
            add("other-anon", b)
    return sums


def main():
    path = sys.argv[1]
    nodes = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    sums = classify(parse(path))
    total = sum(v[0] for v in sums.values())
    print(f"{'class':<15}{'Rss MiB':>10}{'anon MiB':>10}{'blocks':>8}" + (f"{'KiB/node':>10}" if nodes else ""))
    for cls, (rss, anon, n) in sorted(sums.items(), key=lambda kv: -kv[1][0]):
        print(f"{cls:<15}{rss / 1024:>10.1f}{anon / 1024:>10.1f}{n:>8}" + (f"{rss / nodes:>10.1f}" if nodes else ""))
    print(f"{'total':<15}{total / 1024:>10.1f}{'':>10}{'':>8}" + (f"{total / nodes:>10.1f}" if nodes else ""))


if __name__ == "__main__":
    main()
