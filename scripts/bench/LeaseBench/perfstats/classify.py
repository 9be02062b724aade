#!/usr/bin/env python3
"""Samples of `perf script -F comm,tid,ip,sym,dso` (with call chains) by component, per 1,000 tasks.

Each sample goes to the first component whose rule matches a frame, walking from the leaf up (stop 33's method): a
kernel fsync under SQLite counts as fsync, a memcpy under SQLite as SQLite, a GC triggered from MessagePack as
MessagePack. A sample no rule claims is "other managed code" when its leaf is JIT-compiled code (perf map), otherwise
"runtime native, libc, kernel" (GC threads, the JIT, the pool's own code, page faults of managed code).
usage: classify.py TOTAL LABEL < perf-script-output (-F comm,tid,time,ip,sym,dso)   |   classify.py --table FILE...
"""
import re
import sys

# (component, test on one frame (sym, dso)); the order only matters where one frame could match two rules.
RULES = [
    ("fsync", lambda s, d: re.search(r"sys_fsync|sys_fdatasync|\bdo_fsync|^fsync$|^fdatasync$|__libc_fsync|__fdatasync", s)),
    ("SQLite WAL I/O (pwrite, pread, fcntl)",
     lambda s, d: re.search(r"sys_pwrite64|sys_pread64|sys_fcntl|ksys_pwrite|ksys_pread|^__libc_pwrite|^__libc_pread|^pwrite64$|^pread64$|^__libc_fcntl|^fcntl64$", s)),
    ("futex, sched_yield", lambda s, d: re.search(r"sys_futex|do_futex|sys_sched_yield|do_sched_yield|^sched_yield$|^__sched_yield", s)),
    ("Ed25519", lambda s, d: re.search(r"ed25519|crypto_sign|ge25519|fe25519|sc25519|_ge25519|crypto_scalarmult_curve25519|x25519", s, re.I)
     or ("libsodium" in d and not re.search(r"chacha|poly1305|blake2|salsa", s, re.I))
     or re.search(r"Potluck\.Protocol\.Identity\.(PrivateKey::Sign|PublicKey::Verify)|Ed25519", s)),
    ("SHA-256", lambda s, d: re.search(r"sha256|SHA256|Sha256", s) and not re.search(r"sqlite", s, re.I)),
    ("SQLite", lambda s, d: "sqlite" in d.lower() or re.search(r"^sqlite3|SQLitePCL|Microsoft\.Data\.Sqlite", s)),
    ("wasm", lambda s, d: "wasmtime" in d.lower() or re.search(r"Wasmtime|wasm|Potluck\.Scheduler\.Sandbox\.", s)),
    ("Noise, Yamux, sockets", lambda s, d: re.search(
        r"chacha|poly1305|Potluck\.Protocol\.(Noise|Yamux|Transport|Multistream|Pnet|Muxing|Framing|Security)\.|System\.Net\.Sockets|System\.IO\.Pipelines"
        r"|sys_sendto|sys_recvfrom|sys_sendmsg|sys_recvmsg|sys_epoll|tcp_|^__libc_send|^__libc_recv|^send$|^recv$|^epoll_wait", s, re.I)),
    ("MessagePack", lambda s, d: re.search(r"^MessagePack\.|\bMessagePack\.", s)),
]
ORDER = [r[0] for r in RULES] + ["other managed code", "runtime native, libc, kernel"]
ORDER = ["Ed25519", "SQLite", "SQLite WAL I/O (pwrite, pread, fcntl)", "fsync", "other managed code", "futex, sched_yield",
         "runtime native, libc, kernel", "Noise, Yamux, sockets", "wasm", "SHA-256", "MessagePack"]
FRAME = re.compile(r"^\s+([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$")


def managed(dso):
    return dso.startswith("/tmp/perf-") or dso.startswith("[JIT]") or "perf-" in dso and dso.endswith(".map")


def classify(frames):
    for sym, dso in frames:
        for name, rule in RULES:
            if rule(sym, dso):
                return name
    if frames and managed(frames[0][1]):
        return "other managed code"
    return "runtime native, libc, kernel"


HEADER = re.compile(r"^\S.*?\s([0-9]+\.[0-9]+):\s*$")


def read(stream, t0, t1):
    counts = {k: 0 for k in ORDER}
    frames, in_sample, keep = [], False, False
    for line in stream:
        if not line.strip():
            if in_sample and keep:
                counts[classify(frames)] += 1
            frames, in_sample = [], False
            continue
        m = FRAME.match(line)
        if m and in_sample:
            sym = re.sub(r"\+0x[0-9a-f]+$", "", m.group(2))
            frames.append((sym, m.group(3)))
        elif not line.startswith((" ", "\t")):
            in_sample = True
            h = HEADER.match(line)
            keep = h is not None and t0 <= float(h.group(1)) <= t1
    if in_sample and keep:
        counts[classify(frames)] += 1
    return counts


def main():
    if sys.argv[1] == "--table":
        cols = []
        for path in sys.argv[2:]:
            label, rows = None, {}
            for line in open(path):
                if line.startswith("# "):
                    label = line[2:].strip()
                elif "|" in line and not line.startswith("| component") and not line.startswith("| ---"):
                    parts = [p.strip() for p in line.strip().strip("|").split("|")]
                    rows[parts[0]] = parts[1]
            cols.append((label, rows))
        print("| per 1,000 tasks | " + " | ".join(c[0] for c in cols) + " |")
        print("| --- |" + " ---: |" * len(cols))
        for k in ORDER + ["all"]:
            print(f"| {k} | " + " | ".join(c[1].get(k, "") for c in cols) + " |")
        return
    total, label = int(sys.argv[1]), sys.argv[2]
    counts = read(sys.stdin, 0.0, float("inf"))
    allc = sum(counts.values())
    print(f"# {label} ({allc} samples, {total} tasks)")
    print("| component | samples per 1,000 tasks | share |")
    print("| --- | ---: | ---: |")
    for k in ORDER:
        print(f"| {k} | {1000 * counts[k] / total:.0f} | {100 * counts[k] / max(allc, 1):.1f} % |")
    print(f"| all | {1000 * allc / total:.0f} | 100 % |")


main()
