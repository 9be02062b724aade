using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;

// What the accounting chain costs, side by side with the receipt path it extends, in one run on this machine:
// bytes per payment, durable appends per second (a half-block vs. recording the receipt itself), signature checks per
// second (a half-block vs. a receipt), fork-proof checks per second, and a whole-chain audit in blocks per second.
// usage: dotnet run --project scripts/bench/ChainBench -c Release -- [payments, default 2000]
var payments = args.Length > 0 && int.TryParse(args[0], CultureInfo.InvariantCulture, out var n) ? n : 2000;
var requester = PrivateKey.FromRandom(new Random(1));
var provider = PrivateKey.FromRandom(new Random(2));
var dir = Path.Combine(Path.GetTempPath(), "potluck-chainbench-" + Guid.NewGuid().ToString("N"));
var credits = new CreditsOptions { AllowOverdraft = true };
var chain = new ChainOptions();
try
{
    var receipts = new SignedReceipt[payments];
    for (var i = 0; i < payments; i++)
    {
        var lease = BitConverter.GetBytes((ulong)i + 1);
        receipts[i] = SignedReceipt.Create(new Receipt
        {
            ReceiptId = Receipt.ComputeId(lease, provider.PeerId, requester.PeerId),
            LeaseId = lease,
            Requester = requester.PeerId.ToBytes(),
            Provider = provider.PeerId.ToBytes(),
            FuelUsed = 2_500_000,
            PricePerMillionFuel = 10,
            Amount = 25,
            AttestationHash = SHA256.HashData(lease),
            TimestampUnixMs = 1_700_000_000_000 + i,
        }, requester);
    }

    using var ledger = CreditLedger.Open(dir, requester.PeerId, credits, TimeProvider.System);
    var clock = Stopwatch.StartNew();
    foreach (var r in receipts)
    {
        ledger.Record(r, LedgerEntryKind.Spent);
    }
    var recordRate = payments / clock.Elapsed.TotalSeconds;

    var blocks = new SignedBlock[payments];
    clock.Restart();
    for (var i = 0; i < payments; i++)
    {
        var r = receipts[i].Receipt;
        blocks[i] = ledger.AppendOwnBlock(r.ReceiptId, (seq, previous) => SignedBlock.Sign(new ChainBlock
        {
            Author = requester.PeerId.ToBytes(), Seq = seq, Previous = previous, Counterparty = provider.PeerId.ToBytes(),
            ReceiptId = r.ReceiptId, LeaseId = r.LeaseId, Amount = r.Amount, FuelUsed = r.FuelUsed, TimestampUnixMs = r.TimestampUnixMs,
        }, requester)).Block;
    }
    var appendRate = payments / clock.Elapsed.TotalSeconds;

    var agreements = new SignedBlock[payments];
    var previousHash = SignedBlock.Genesis;
    for (var i = 0; i < payments; i++)
    {
        var p = blocks[i];
        agreements[i] = SignedBlock.Sign(new ChainBlock
        {
            Author = provider.PeerId.ToBytes(), Seq = (ulong)i + 1, Previous = previousHash, Counterparty = requester.PeerId.ToBytes(),
            LinkSeq = p.Seq, LinkHash = p.Hash, Kind = BlockKind.Agreement, ReceiptId = p.Block.ReceiptId, LeaseId = p.Block.LeaseId,
            Amount = p.Block.Amount, FuelUsed = p.Block.FuelUsed, TimestampUnixMs = p.Block.TimestampUnixMs,
        }, provider);
        previousHash = agreements[i].Hash;
        ledger.StoreForeignBlock(agreements[i], keep: true, out _);
    }

    clock.Restart();
    foreach (var r in receipts)
    {
        SignedReceipt.Decode(r.EnvelopeBytes, credits);
    }
    var receiptChecks = payments / clock.Elapsed.TotalSeconds;
    clock.Restart();
    foreach (var b in blocks)
    {
        SignedBlock.Decode(b.EnvelopeBytes, chain, out _);
    }
    var blockChecks = payments / clock.Elapsed.TotalSeconds;
    // A block checked lately, met again (a CheckedBlocks hit: its digest, then a decode without the signature check).
    var checkedLately = new CheckedBlocks();
    var lately = blocks.Take(CheckedBlocks.Capacity).ToArray();
    foreach (var b in lately)
    {
        checkedLately.Remember(b);
    }
    clock.Restart();
    foreach (var b in lately)
    {
        checkedLately.Decode(b.EnvelopeBytes, chain, out _);
    }
    var hitRate = lately.Length / clock.Elapsed.TotalSeconds;
    // Of which the digest alone (about what a hit cost when the decoded block was kept: the digest, a lookup, a compare).
    Span<byte> digest = stackalloc byte[SHA256.HashSizeInBytes];
    clock.Restart();
    foreach (var b in lately)
    {
        SHA256.HashData(b.EnvelopeBytes, digest);
    }
    var digestRate = lately.Length / clock.Elapsed.TotalSeconds;
    if (checkedLately.Verified != 0)
    {
        throw new InvalidOperationException("a remembered block was verified again");
    }
    ForkProof.From(blocks[0], SignedBlock.Sign(new ChainBlock
    {
        Author = requester.PeerId.ToBytes(), Seq = 1, Previous = SignedBlock.Genesis, Counterparty = provider.PeerId.ToBytes(),
        ReceiptId = blocks[1].Block.ReceiptId, LeaseId = blocks[1].Block.LeaseId, Amount = 25, FuelUsed = 2_500_000,
    }, requester), out var fork);
    clock.Restart();
    var forkChecks = Math.Max(100, payments / 4);
    for (var i = 0; i < forkChecks; i++)
    {
        ForkProof.Check(fork!.Encoded, chain, out _);
    }
    var forkRate = forkChecks / clock.Elapsed.TotalSeconds;

    var audit = ChainAudit.Verify(ledger, chain);
    var auditRate = (audit.Blocks + audit.LinkedBlocks) / audit.Elapsed.TotalSeconds;

    Console.WriteLine($"# Accounting chain — {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, .NET {Environment.Version}, {payments} payments");
    Console.WriteLine();
    Console.WriteLine("| per payment | receipt (today) | chain (added) | ratio |");
    Console.WriteLine("| --- | ---: | ---: | ---: |");
    var pair = blocks[0].EnvelopeBytes.Length + agreements[0].EnvelopeBytes.Length;
    Console.WriteLine($"| bytes signed and stored (receipt; proposal + agreement) | {receipts[0].EnvelopeBytes.Length} | {blocks[0].EnvelopeBytes.Length} + {agreements[0].EnvelopeBytes.Length} = {pair} | {(double)pair / receipts[0].EnvelopeBytes.Length:0.00}× |");
    Console.WriteLine($"| durable writes per second (record the receipt; sign and append a half-block) | {recordRate:0} | {appendRate:0} | {appendRate / recordRate:0.00}× |");
    Console.WriteLine($"| decode + signature checks per second (receipt; half-block) | {receiptChecks:0} | {blockChecks:0} | {blockChecks / receiptChecks:0.00}× |");
    Console.WriteLine();
    Console.WriteLine($"Half-blocks met again (`CheckedBlocks`): verified {blockChecks:0}/s (a miss: decode + Ed25519), remembered {hitRate:0}/s " +
                      $"(a hit: SHA-256 + decode, no signature check): a miss costs {hitRate / blockChecks:0.0}× a hit ({1e6 / blockChecks:0.0} µs against {1e6 / hitRate:0.0} µs; " +
                      $"the SHA-256 alone {1e6 / digestRate:0.0} µs)");
    Console.WriteLine($"Fork proofs checked per second (two signatures): {forkRate:0}");
    Console.WriteLine($"Audit (`potluck ledger --verify`): {audit.Blocks} own blocks + {audit.LinkedBlocks} linked counterparty blocks + {audit.Blocks} receipts " +
                      $"in {audit.Elapsed.TotalMilliseconds:0} ms = {auditRate:0} blocks/s; sound: {audit.IsSound}");
    return audit.IsSound ? 0 : 1;
}
finally
{
    try
    {
        Directory.Delete(dir, recursive: true);
    }
    catch (IOException)
    {
    }
}
