#!/usr/bin/env python3
"""Breaks down the in-memory stores `potluck sim` copied with POTLUCK_SIM_SQLITE_CENSUS=DIR, by table and index.

Usage: sqlite-census.py DIR [PREFIX]   (PREFIX: warm- or end-, the census the copies came from)

Needs a SQLite with dbstat (Python's usually has it). The copies are sqlite3_serialize's images (free pages too, under
"free"); each table or index takes at least one page even when empty.
Prints, per store on average: pages, payload bytes (the rows' data), unused bytes in those pages, and rows.
"""
import glob, os, sqlite3, sys
from collections import defaultdict

directory = sys.argv[1]
prefix = sys.argv[2] if len(sys.argv) > 2 else ""
files = sorted(glob.glob(os.path.join(directory, prefix + "*.db")))
if not files:
    sys.exit(f"no {prefix}*.db in {directory}")
pages = defaultdict(int); payload = defaultdict(int); unused = defaultdict(int); cells = defaultdict(int)
page_size = None
for f in files:
    c = sqlite3.connect(f"file:{f}?mode=ro", uri=True)
    page_size = c.execute("PRAGMA page_size").fetchone()[0]
    for name, pgs, pay, unu, ncell, leaf in c.execute(
            "SELECT name, count(*), sum(payload), sum(unused), sum(ncell), sum(pagetype = 'leaf') FROM dbstat GROUP BY name"):
        pages[name] += pgs; payload[name] += pay; unused[name] += unu
    for (name,) in c.execute("SELECT name FROM sqlite_schema WHERE type = 'table'").fetchall():
        try:
            cells[name] += c.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
        except sqlite3.Error:
            pass
    c.close()
n = len(files)
print(f"{n} stores ({prefix or 'all'}), page size {page_size} B; per store on average:")
print(f"{'table or index':40} {'pages':>8} {'KiB':>8} {'payload KiB':>12} {'unused KiB':>11} {'rows':>8}")
for name in sorted(pages, key=lambda k: -pages[k]):
    print(f"{name:40} {pages[name]/n:8.1f} {pages[name]*page_size/1024/n:8.1f} {payload[name]/1024/n:12.2f} {unused[name]/1024/n:11.2f} {cells.get(name, 0)/n:8.1f}")
free = 0
for f in files:
    c = sqlite3.connect(f"file:{f}?mode=ro", uri=True); free += c.execute("PRAGMA freelist_count").fetchone()[0]; c.close()
print(f"{'free':40} {free/n:8.1f} {free*page_size/1024/n:8.1f}")
tp = sum(pages.values()) + free; print(f"{'all':40} {tp/n:8.1f} {tp*page_size/1024/n:8.1f} {sum(payload.values())/1024/n:12.2f} {sum(unused.values())/1024/n:11.2f}")
