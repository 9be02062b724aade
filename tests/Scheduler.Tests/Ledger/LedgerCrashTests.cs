using FsCheck;
using FsCheck.Fluent;
using Microsoft.Extensions.Time.Testing;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Ledger;

/// <summary>
/// A crash at any point of a lease loses no receipt and counts none twice: crashes after every step and inside
/// every step's transaction, then the documented recovery; and conservation over random traffic between nodes.
/// </summary>
public class LedgerCrashTests
{
    /// <summary>Every place the scripted payment can crash: after each step, and inside each transaction.</summary>
    internal static readonly PaymentFlow.Crash[] CrashPoints =
    [
        new(0, null), new(1, null), new(2, null), new(3, null),
        new(0, "reserve"), new(0, "commit"),
        new(1, "entry"), new(1, "settle-entry"), new(1, "commit"),
        new(2, "entry"), new(2, "commit"),
        new(3, "commit"),
    ];

    private static IEnumerable<TestCaseData> Points() =>
        CrashPoints.Select((c, i) => new TestCaseData(i).SetName($"Payment_CrashAtStep{c.Step}{(c.Inside is null ? "After" : "Inside_" + c.Inside)}_CountedExactlyOnce"));

    [TestCaseSource(nameof(Points))]
    public void Payment_CrashAnywhere_RecoveryCountsTheReceiptExactlyOnce(int point)
    {
        var crash = CrashPoints[point];
        using var dir = new TempDir();
        var time = new FakeTimeProvider(Epoch);
        using var requester = new LedgerNode(dir.Sub("r"), Requester, Options, time);
        using var provider = new LedgerNode(dir.Sub("p"), Provider, Options, time);
        var lease = PaymentFlow.Prepare(requester, provider, 1, fuel: 2_500_000, price: 1000);
        var leases = new Dictionary<string, PaymentFlow.Lease> { [Convert.ToHexString(lease.Id)] = lease };
        var providers = new Dictionary<PeerId, LedgerNode> { [Provider.PeerId] = provider };

        Assert.That(PaymentFlow.Run(requester, provider, lease, crash), Is.False, "every crash point fires");
        PaymentFlow.Recover(requester, leases, providers);
        if (requester.Ledger.GetReservation(lease.Id) is null)
        {
            // The crash came before the reservation committed: the lease never started, so it is simply retried.
            Assert.That(PaymentFlow.Run(requester, provider, lease, crash: null), Is.True);
        }

        // Every receipt the requester ever stored is sent once more, as a resend after a lost ack would be.
        var stored = requester.Ledger.GetReservation(lease.Id)!.Receipt!;
        Assert.That(provider.Ledger.Record(SignedReceipt.Decode(stored, Options).Value!, LedgerEntryKind.Earned), Is.EqualTo(LedgerResult.AlreadyRecorded));

        requester.CrashAndRestart();
        provider.CrashAndRestart();
        Assert.That(requester.Ledger.GetReservation(lease.Id)!.State, Is.EqualTo(PaymentState.Delivered));
        Assert.That(requester.Ledger.UndeliveredReceipts(), Is.Empty);
        Assert.That(requester.Ledger.Recent(100).Count(e => e.Kind == LedgerEntryKind.Spent), Is.EqualTo(1));
        Assert.That(provider.Ledger.Recent(100).Count(e => e.Kind == LedgerEntryKind.Earned), Is.EqualTo(1));
        Assert.That(requester.Ledger.Balance(), Is.EqualTo(Options.InitialGrant - 2500));
        Assert.That(provider.Ledger.Balance(), Is.EqualTo(Options.InitialGrant + 2500));
        Assert.That(provider.Ledger.Recent(1)[0].Receipt, Is.EqualTo(stored), "the provider holds the very receipt the requester counted");
    }

    [Test]
    public void Payment_CrashBetweenReserveAndSettleThenAbandoned_NothingOwed()
    {
        using var dir = new TempDir();
        var time = new FakeTimeProvider(Epoch);
        using var requester = new LedgerNode(dir.Sub("r"), Requester, Options, time);
        using var provider = new LedgerNode(dir.Sub("p"), Provider, Options, time);
        var lease = PaymentFlow.Prepare(requester, provider, 1, fuel: 2_500_000, price: 1000);
        Assert.That(PaymentFlow.Run(requester, provider, lease, new PaymentFlow.Crash(0, null)), Is.False);

        Assert.That(requester.Ledger.Reservations(PaymentState.Reserved).Select(r => r.LeaseId), Is.EqualTo(new[] { lease.Id }));
        Assert.That(requester.Ledger.Available(), Is.EqualTo(Options.InitialGrant - lease.MaxAmount));
        Assert.That(requester.Ledger.Release(lease.Id), Is.EqualTo(LedgerResult.Released));
        requester.CrashAndRestart();
        Assert.That(requester.Ledger.Balance(), Is.EqualTo(Options.InitialGrant));
        Assert.That(requester.Ledger.Available(), Is.EqualTo(Options.InitialGrant));
        Assert.That(requester.Ledger.Reservations(PaymentState.Reserved), Is.Empty);
    }

    [Test]
    public void Crash_FilesCopiedWhileOpen_HoldEveryCommittedEntry()
    {
        // Copying ledger.db and its WAL while the ledger is open is the state a power cut leaves behind.
        using var dir = new TempDir();
        var time = new FakeTimeProvider(Epoch);
        using var provider = new LedgerNode(dir.Sub("p"), Provider, Options, time);
        for (var i = 0; i < 20; i++)
        {
            provider.Ledger.Record(MakeReceipt(Lease(i), Requester, Provider), LedgerEntryKind.Earned);
        }
        var copy = dir.Sub("copy");
        Directory.CreateDirectory(copy);
        foreach (var file in Directory.GetFiles(provider.Dir, CreditLedger.FileName + "*"))
        {
            using var source = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            using var target = File.Create(Path.Combine(copy, Path.GetFileName(file)));
            source.CopyTo(target);
        }
        Assert.That(File.Exists(Path.Combine(copy, CreditLedger.FileName + "-wal")), Is.True, "committed entries live in the WAL until a checkpoint");

        using var recovered = LedgerFactory.Open(copy, Provider);
        Assert.That(recovered.Balance(), Is.EqualTo(Options.InitialGrant + 20 * 2500));
        Assert.That(recovered.Record(MakeReceipt(Lease(7), Requester, Provider), LedgerEntryKind.Earned), Is.EqualTo(LedgerResult.AlreadyRecorded));
    }

    private sealed record Op(int Requester, int Provider, ulong Fuel, ulong Price, int Crash, bool Abandon, bool Redeliver);

    private static Gen<Op[]> Traffic(int nodes) =>
        Gen.Choose(1, 12).SelectMany(n => Gen.ArrayOf(
            from requester in Gen.Choose(0, nodes - 1)
            from offset in Gen.Choose(1, nodes - 1)
            from fuel in Gen.Choose(0, 10_000_000)
            from price in Gen.Choose(0, 5000)
            from crash in Gen.Choose(-1, CrashPoints.Length - 1)
            from abandon in Gen.Choose(0, 9)
            from redeliver in Gen.Choose(0, 1)
            select new Op(requester, (requester + offset) % nodes, (ulong)fuel, (ulong)price, crash, abandon == 0, redeliver == 1), n));

    [FsCheck.NUnit.Property(MaxTest = 30)]
    public Property Conservation_RandomTrafficWithCrashes_BalancesSumToGrantsAndEveryEarnedHasItsSpent() =>
        Prop.ForAll(Traffic(4).ToArbitrary(), ops =>
        {
            using var dir = new TempDir();
            var time = new FakeTimeProvider(Epoch);
            var nodes = Enumerable.Range(0, 4).Select(i => new LedgerNode(dir.Sub($"n{i}"), Key(10 + i), Options, time)).ToArray();
            try
            {
                var providers = nodes.ToDictionary(n => n.Key.PeerId);
                var leases = new Dictionary<string, PaymentFlow.Lease>();
                var expected = new long[4];
                var paid = 0;
                for (var i = 0; i < ops.Length; i++)
                {
                    var op = ops[i];
                    var (requester, provider) = (nodes[op.Requester], nodes[op.Provider]);
                    var lease = PaymentFlow.Prepare(requester, provider, i, op.Fuel, op.Price);
                    leases[Convert.ToHexString(lease.Id)] = lease;
                    if (op.Abandon)
                    {
                        requester.Ledger.ReservePayment(lease.Id, provider.Key.PeerId, lease.MaxAmount);
                        if (op.Crash >= 0)
                        {
                            requester.CrashAndRestart();
                        }
                        Assert.That(requester.Ledger.Release(lease.Id), Is.EqualTo(LedgerResult.Released));
                        continue;
                    }
                    var crash = op.Crash >= 0 ? CrashPoints[op.Crash] : (PaymentFlow.Crash?)null;
                    if (!PaymentFlow.Run(requester, provider, lease, crash))
                    {
                        PaymentFlow.Recover(requester, leases, providers);
                        if (requester.Ledger.GetReservation(lease.Id) is null)
                        {
                            Assert.That(PaymentFlow.Run(requester, provider, lease, crash: null), Is.True);
                        }
                    }
                    if (op.Redeliver)
                    {
                        var stored = requester.Ledger.GetReservation(lease.Id)!.Receipt!;
                        Assert.That(provider.Ledger.Record(SignedReceipt.Decode(stored, Options).Value!, LedgerEntryKind.Earned),
                            Is.EqualTo(LedgerResult.AlreadyRecorded));
                    }
                    Receipt.TryComputeAmount(op.Fuel, op.Price, out var amount);
                    expected[op.Requester] -= amount;
                    expected[op.Provider] += amount;
                    paid++;
                }

                foreach (var node in nodes)
                {
                    node.CrashAndRestart();
                }
                var balances = nodes.Select(n => n.Ledger.Balance()).ToArray();
                var entries = nodes.SelectMany(n => n.Ledger.Recent(1000)).ToArray();
                var earnedIds = entries.Where(e => e.Kind == LedgerEntryKind.Earned).Select(e => Convert.ToHexString(e.ReceiptId)).Order().ToArray();
                var spentIds = entries.Where(e => e.Kind == LedgerEntryKind.Spent).Select(e => Convert.ToHexString(e.ReceiptId)).Order().ToArray();
                var proofsHold = nodes.Select(n =>
                    CreditLedger.VerifyProofOfEarnings(n.Key.PeerId, [.. n.Ledger.ProofOfEarnings().Select(b => (ReadOnlyMemory<byte>)b)], Options).Total
                    == n.Ledger.Recent(1000).Where(e => e.Kind == LedgerEntryKind.Earned).Sum(e => e.Amount));
                return (balances.Sum() == 4 * Options.InitialGrant)
                    .Label($"sum of balances {balances.Sum()} != grants")
                    .And(balances.Select((b, i) => b - Options.InitialGrant).SequenceEqual(expected)).Label("per-node balances match the model")
                    .And(earnedIds.Length == paid && earnedIds.SequenceEqual(spentIds)).Label("each Earned has exactly one matching Spent")
                    .And(nodes.All(n => n.Ledger.UndeliveredReceipts().Count == 0 && n.Ledger.Reservations(PaymentState.Reserved).Count == 0))
                    .Label("nothing left pending")
                    .And(proofsHold.All(x => x)).Label("each proof of earnings re-verifies to the node's earnings");
            }
            finally
            {
                foreach (var node in nodes)
                {
                    node.Dispose();
                }
            }
        });
}
