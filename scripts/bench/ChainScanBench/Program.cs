using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Security.Cryptography;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;

// The requester's ledger work per chain round and per lease as its history grows (stop 40, issue 8 deliverable 11): one
// file ledger (in DIR, default /dev/shm, where an fsync costs nothing: what is timed is the ledger's CPU) is filled with H
// past leases, each reserved, settled, delivered, proposed in a batch block of 64 and agreed (a kept agreement), as a
// requester's service leaves them; at each H in the list it times
//   round:  the chain round's two reads with 32 delivered receipts pending and one proposal unlinked
//           (DeliveredReceiptsWithoutBlock(64), UnlinkedProposals(64)), median of 200 calls each, and SQLite's
//           virtual-machine steps for each where the build counts them (CreditLedger.LastRarelySteps; "-" where not);
//   lease:  a lease's whole ledger work, 640 leases in rounds of 64 (reserve, settle, delivered mark; then the round:
//           read the delivered, append the batch block, store its agreement, read the unlinked), CPU and wall per lease.
// The same program is built against each version (run.sh), so both fill and time the same work.
// usage: dotnet Potluck.Benchmarks.ChainScan.dll [H list, default 0,10000,100000] [dir]
var sizes = (args.Length > 0 ? args[0] : "0,10000,100000").Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
var root = args.Length > 1 ? args[1] : "/dev/shm";
var requester = PrivateKey.FromSeed(Seed(1));
var provider = PrivateKey.FromSeed(Seed(2));
var dir = Path.Combine(root, "potluck-chainscan-" + Guid.NewGuid().ToString("N"));
var credits = new CreditsOptions { InitialGrant = 1_000_000_000_000, MaxDebt = 0 };
var time = TimeProvider.System;
var steps = typeof(CreditLedger).GetProperty("LastRarelySteps", BindingFlags.Instance | BindingFlags.NonPublic);
var next = 1;
ulong providerSeq = 0;
var providerHead = SignedBlock.Genesis;
try
{
    using var ledger = CreditLedger.Open(dir, requester.PeerId, credits, time);
    Console.WriteLine($"# ledger in {root}; H = past leases, each delivered, in a batch block and agreed; steps: {(steps is null ? "not counted by this build" : "SQLite VM steps")}");
    Console.WriteLine("| H | delivered-without-block read, µs (steps) | unlinked-proposals read, µs (steps) | lease's ledger work, CPU µs / wall µs | fill, s |");
    Console.WriteLine("| ---: | ---: | ---: | ---: | ---: |");
    var filled = 0;
    foreach (var h in sizes)
    {
        var fill = Stopwatch.StartNew();
        while (filled < h)
        {
            var count = Math.Min(64, h - filled);
            Deliver(ledger, count);
            Agree(ledger, Round(ledger));
            filled += count;
        }
        var fillSeconds = fill.Elapsed.TotalSeconds;

        // Pending: one proposal without its agreement, then 32 receipts delivered without a block.
        Deliver(ledger, 5);
        var unlinked = Round(ledger);
        Deliver(ledger, 32);
        var (deliveredUs, deliveredSteps) = Median(ledger, () => ledger.DeliveredReceiptsWithoutBlock(64).Count, 32);
        var (unlinkedUs, unlinkedSteps) = Median(ledger, () => ledger.UnlinkedProposals(64).Count, 1);
        Agree(ledger, Round(ledger));
        Agree(ledger, unlinked);

        // A lease's whole ledger work, 640 of them in rounds of 64 (JIT warmed by the fill and the first round).
        Deliver(ledger, 64);
        Agree(ledger, Round(ledger));
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var wall = Stopwatch.StartNew();
        for (var round = 0; round < 10; round++)
        {
            Deliver(ledger, 64);
            Agree(ledger, Round(ledger));
            _ = ledger.UnlinkedProposals(64);
        }
        var leaseWall = wall.Elapsed.TotalMicroseconds / 640;
        var leaseCpu = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalMicroseconds / 640;
        filled += 5 + 32 + 64 + 640;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"| {h:N0} | {deliveredUs:F1} ({deliveredSteps}) | {unlinkedUs:F1} ({unlinkedSteps}) | {leaseCpu:F0} / {leaseWall:F0} | {fillSeconds:F1} |"));
    }
    return 0;
}
finally
{
    Directory.Delete(dir, recursive: true);
}

// Reserved, settled and delivered leases, as the requester's lease path leaves them.
void Deliver(CreditLedger ledger, int count)
{
    for (var i = 0; i < count; i++)
    {
        var lease = BitConverter.GetBytes((ulong)next++);
        var receipt = SignedReceipt.Create(new Receipt
        {
            ReceiptId = Receipt.ComputeId(lease, provider.PeerId, requester.PeerId),
            LeaseId = lease,
            Requester = requester.PeerId.ToBytes(),
            Provider = provider.PeerId.ToBytes(),
            FuelUsed = 2_500_000,
            PricePerMillionFuel = 10,
            Amount = 25,
            AttestationHash = SHA256.HashData(lease),
            TimestampUnixMs = 1_700_000_000_000 + next,
        }, requester);
        Check(ledger.ReservePayment(lease, provider.PeerId, 25), LedgerResult.Reserved);
        Check(ledger.Settle(receipt), LedgerResult.Recorded);
        Check(ledger.MarkDelivered(lease), LedgerResult.Delivered);
    }
}

// The chain round as the requester's service makes it: the delivered receipts without a block in one batch block.
SignedBlock? Round(CreditLedger ledger)
{
    var receipts = ledger.DeliveredReceiptsWithoutBlock(64).Select(b => SignedReceipt.Decode(b, credits).Value!.Receipt).ToList();
    if (receipts.Count == 0)
    {
        return null;
    }
    var appended = receipts.Count == 1
        ? ledger.AppendOwnBlock(receipts[0].ReceiptId, (s, p) => SignedBlock.Propose(receipts[0], requester, s, p, time.GetUtcNow()))
        : ledger.AppendOwnBatches([(ChainBlock.BatchIdOf([.. receipts.Select(ChainPayment.Of)]), receipts.Select(r => r.ReceiptId).ToArray(),
            (s, p) => SignedBlock.ProposeBatch(receipts, requester, s, p, time.GetUtcNow()))])[0];
    return appended.Appended ? appended.Block : throw new InvalidOperationException("not appended");
}

// The provider's agreement, stored kept as the requester stores an answer.
void Agree(CreditLedger ledger, SignedBlock? proposal)
{
    if (proposal is null)
    {
        return;
    }
    var b = proposal.Block;
    var agreement = SignedBlock.Sign(new ChainBlock
    {
        Author = provider.PeerId.ToBytes(),
        Seq = ++providerSeq,
        Previous = providerHead,
        Counterparty = requester.PeerId.ToBytes(),
        LinkSeq = proposal.Seq,
        LinkHash = proposal.Hash,
        Kind = BlockKind.Agreement,
        ReceiptId = b.ReceiptId,
        LeaseId = b.LeaseId,
        Amount = b.Amount,
        FuelUsed = b.FuelUsed,
        TimestampUnixMs = b.TimestampUnixMs,
        Payments = b.Payments,
    }, provider);
    providerHead = agreement.Hash;
    if (ledger.StoreForeignBlock(agreement, keep: true, out _) == ForeignBlockResult.Conflict)
    {
        throw new InvalidOperationException("conflict");
    }
}

(double Micros, string Steps) Median(CreditLedger ledger, Func<int> read, int expected)
{
    var samples = new double[200];
    for (var i = 0; i < samples.Length; i++)
    {
        var clock = Stopwatch.StartNew();
        var count = read();
        samples[i] = clock.Elapsed.TotalMicroseconds;
        if (count != expected)
        {
            throw new InvalidOperationException($"read {count}, expected {expected}");
        }
    }
    Array.Sort(samples);
    return (samples[samples.Length / 2], steps?.GetValue(ledger) is { } s ? s.ToString()! : "-");
}

static void Check(LedgerResult got, LedgerResult expected)
{
    if (got != expected)
    {
        throw new InvalidOperationException($"{got}, expected {expected}");
    }
}

static byte[] Seed(byte n)
{
    var seed = new byte[32];
    seed[0] = n;
    seed[31] = 0x5a;
    return seed;
}
