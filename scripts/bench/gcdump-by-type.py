#!/usr/bin/env python3
"""Sums a `dotnet-gcdump report` listing by type (the report lists big arrays apart, by size class) and prints the
types that hold the most, in MiB and KiB per node. Usage: gcdump-by-type.py gcdump-types.txt NODES [TOP]"""
import re,collections,sys
f=sys.argv[1]; n=int(sys.argv[2])
tot=collections.Counter(); cnt=collections.Counter()
for line in open(f):
    m=re.match(r'\s*([\d,]+)\s+([\d,]+)\s+(.*?)\s*\[[^\]]*\]\s*$',line)
    if not m: continue
    b=int(m.group(1).replace(',','')); c=int(m.group(2).replace(',',''))
    t=m.group(3).strip()
    if '(Bytes >' in t:
        t=re.sub(r'\s*\(Bytes > .*\)','',t); tot[t]+=b
    else:
        tot[t]+=b*c
    cnt[t]+=c
s=sum(tot.values()); print(f"total {s/2**20:.1f} MiB, {s/n/1024:.1f} KiB/node")
for t,b in tot.most_common(int(sys.argv[3]) if len(sys.argv)>3 else 50): print(f"{b/2**20:8.2f} MiB {b/n/1024:7.1f} KiB/node {cnt[t]:9d}  {t[:140]}")
