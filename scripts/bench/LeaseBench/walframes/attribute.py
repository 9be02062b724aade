#!/usr/bin/env python3
"""WAL frames per task by node and B-tree (run.sh): strace -xx of pwrite64 on each node's ledger.db-wal, pages mapped by dbstat.
usage: attribute.py STRACE KEPT_DIR TASKS"""
import collections, os, re, sqlite3, sys

trace, kept, tasks = sys.argv[1], sys.argv[2], int(sys.argv[3])
# 1234 pwrite64(17<\x2f\x74...>, "\x00\x00\x00\x05...", 24, 4128) = 24   (-xx: the path in hex too)
write = re.compile(r'pwrite64\(\d+<([^>]*)>, "((?:\\x[0-9a-f]{2})*)"(?:\.\.\.)?, (\d+), (\d+)\) = (\d+)')


def unhex(text):
    return bytes(int(b, 16) for b in text.split("\\x")[1:]).decode(errors="replace") if text.startswith("\\x") else text
frames = collections.defaultdict(collections.Counter)  # node -> page -> frames
wal_bytes = collections.Counter()
for line in open(trace, errors="replace"):
    m = write.search(line)
    if m:
        path, data, size = unhex(m.group(1)), m.group(2), int(m.group(3))
        if not path.endswith("ledger.db-wal"):
            continue
        node = os.path.basename(os.path.dirname(path))
        wal_bytes[node] += size
        if size == 24:  # a frame header: page number (big-endian u32), then the commit's size, salts, checksums
            raw = bytes(int(b, 16) for b in data.split("\\x")[1:5])
            frames[node][int.from_bytes(raw, "big")] += 1
print(f"tasks in the run: {tasks}")
print("| node | B-tree | WAL frames per task |")
print("| --- | --- | ---: |")
total = 0.0
for node in sorted(frames):
    db = sqlite3.connect(f"file:{os.path.join(kept, node, 'ledger.db')}?mode=ro", uri=True)
    owner = {pageno: name for name, pageno in db.execute("SELECT name, pageno FROM dbstat")}
    by = collections.Counter()
    for page, n in frames[node].items():
        by[owner.get(page, "(free or gone)" if page != 1 else "(header page 1)")] += n
    node_total = sum(by.values())
    total += node_total
    for name, n in by.most_common():
        if n / tasks >= 0.005:
            print(f"| {node} | {name} | {n / tasks:.2f} |")
    print(f"| {node} | **all** | **{node_total / tasks:.2f}** ({wal_bytes[node] / tasks / 1024:.1f} KiB) |")
    # Rows written in the run (a refused attempt makes a reservation too): what the frames are per.
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    rows = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("reservations", "entries", "owed") if t in tables}
    print(f"| {node} | rows: " + ", ".join(f"{t} {n} ({n / tasks:.2f} per task)" for t, n in rows.items()) + " | |")
print(f"| all | **all** | **{total / tasks:.2f}** ({sum(wal_bytes.values()) / tasks / 1024:.1f} KiB) |")
