#!/usr/bin/env python3
"""Per-task SQLite statements, transactions (BEGIN ... COMMIT, or one autocommit write) and fsyncs by purpose and side,
from the files CreditLedger.Stats.cs.txt writes (one per ledger: r = requester, p1/p2 = providers) and strace's log.
usage: aggregate.py DIR TASKS"""
import sys, re, glob, collections
d, tasks = sys.argv[1], float(sys.argv[2])
ops = ["ReservePayment", "Settle", "MarkDelivered", "Release", "RecordOwed", "ForgetOwed", "RecordEarned", "RecordViolation",
       "Requester", "StoreAndAgree", "StoreForeignBlocks", "StoreForeignBlock", "AppendOwnBlocks", "AppendOwnBlock", "ChainBlockAt",
       "ChainBlockByHash", "AgreementLinking", "HoldsBlocksOf", "ReceiptOf", "OwnBlockFor", "ReplaceVouches", "RemoveVouch", "Vouches",
       "Held", "Forfeited", "Forfeit", "Unpaid", "UnpaidLeases", "Balance", "Available", "RecordFork", "ChainHead", "Reservations",
       "GetReservation", "UnlinkedProposals", "DeliveredReceiptsWithoutBlock", "Record"]
# Fully inlined callers leave only the statement text to go by.
bysql = {"SELECT 1 FROM chain WHERE author = $a LIMIT 1": "HoldsBlocksOf", "SELECT block FROM chain WHERE hash = $h": "ChainBlockByHash"}
# Writes that commit on their own (no BEGIN): Release, MarkDelivered and RecordOwed since they are one statement each.
autocommit = ("UPDATE reservations SET state = 3", "UPDATE reservations SET state = 2", "INSERT INTO owed (requester, lease_id, amount, paid, created_at) VALUES ($r, $lease, $amount, 0, $now) ON CONF")
# ReservePayment's INSERT too once the balance is kept (ReserveIfCurrent; the text is cut before what tells it from the one
# inside BEGIN). Its pragma_data_version runs "PRAGMA data_version" as a statement nested in it (counted, no transaction).
autocommit_from = {"INSERT INTO reservations": "ReserveIfCurrent"}
fsyncs = collections.Counter()
for path in glob.glob(f"{d}/strace.txt"):
    for line in open(path):
        m = re.search(r"f(?:data)?sync\(\d+<([^>]*)>", line)
        if m:
            fsyncs[m.group(1)] += 1
for side in ["r", "p1", "p2"]:
    files = glob.glob(f"{d}/{side}-*.txt")
    if not files:
        continue
    agg = collections.defaultdict(lambda: [0, 0]); total = 0; commits = {}; tx = 0
    callers = collections.defaultdict(collections.Counter)
    for line in open(files[0]):
        n, key = line.rstrip("\n").split("\t", 1)
        n = int(n)
        if key.startswith("#"):
            commits[key] = n
            continue
        outer, inner, sql = [x.strip() for x in key.split("|", 2)]
        op = next((nm for nm in re.findall(r"[A-Za-z]+", inner) if nm in ops), None) or bysql.get(sql)
        if op is None:
            # SAVEPOINT/RELEASE/BEGIN/COMMIT/PRAGMA of a group commit run by a thread whose own operation is inlined
            op = "(group commit: " + re.sub(r"\.MoveNext$", "", outer) + ")"
        op = {"StoreForeignBlock": "StoreForeignBlocks", "AppendOwnBlock": "AppendOwnBlocks"}.get(op, op)
        agg[op][0] += n; total += n
        callers[op][re.sub(r"\.MoveNext$", "", outer)] += n
        if sql.startswith("BEGIN") or sql.startswith(autocommit) \
                or any(sql.startswith(k) and v in inner for k, v in autocommit_from.items()):
            agg[op][1] += n; tx += n
    side_fsync = sum(v for f, v in fsyncs.items() if f"/{side}/" in f)
    print(f"== {side}: {total / tasks:.2f} statements, {tx / tasks:.2f} write transactions "
          f"({', '.join(f'{k[1:]} {v / tasks:.2f}' for k, v in sorted(commits.items()))} committed in BEGIN...COMMIT), "
          f"{side_fsync / tasks:.2f} fsync per task")
    for op, (n, b) in sorted(agg.items(), key=lambda x: -x[1][0]):
        if n / tasks >= 0.05:
            print(f"  {n / tasks:6.2f} statements {b / tasks:5.2f} tx  {op:30s} from {', '.join(c for c, _ in callers[op].most_common(3))}")
print("fsync by file, per task: " + ", ".join(f"{f.split('/')[-2]}/{f.split('/')[-1]} {v / tasks:.2f}" for f, v in fsyncs.most_common() if v / tasks >= 0.005))
