using Potluck.Scheduler.Credits;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Ledger;

/// <summary>
/// The lease path's one-statement NORMAL writes (a provider's <see cref="CreditLedger.RecordOwed"/>, a requester's
/// <see cref="CreditLedger.MarkDelivered"/>: one of each per lease) share a commit with the writes queued beside them, as
/// the durable ones do (stop 38): counted in commits and in WAL frames (pages written), with every result and every row as
/// when each committed alone. On main each of them committed on its own: these tests fail there on the commit counts.
/// </summary>
public class NormalWriteBatchTests
{
    private static readonly TimeSpan Guard = TimeSpan.FromSeconds(60);
    private TempDir _dir = null!;

    [SetUp]
    public void SetUp() => _dir = new TempDir();

    [TearDown]
    public void TearDown() => _dir.Dispose();

    /// <summary>On a thread of its own: each write here blocks on the writer's lock, which the pool would wait to add threads for.</summary>
    private static Task<T> Run<T>(Func<T> write) => Task.Factory.StartNew(write, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    /// <summary>
    /// Runs <paramref name="write"/> for the first item on one thread and holds it at its commit until the others are
    /// queued behind it, then lets them run; returns every result, the commits counted and the WAL frames written.
    /// </summary>
    private static (LedgerResult[] Results, int Commits, long Frames) HoldFirstThenQueue<T>(CreditLedger ledger, T[] items, Func<T, LedgerResult> write)
    {
        var commits = 0;
        var held = 0;
        ledger.CrashHook = step =>
        {
            if (step != "commit")
            {
                return;
            }
            commits++;
            if (++held == 1)
            {
                // The first write holds the writer's lock until the others are queued behind it.
                Assert.That(SpinWait.SpinUntil(() => ledger.QueuedWrites == items.Length - 1, Guard), Is.True);
            }
        };
        var before = WalFile.Read(ledger).Frames;
        var first = Run(() => write(items[0]));
        Assert.That(SpinWait.SpinUntil(() => held == 1, Guard), Is.True);
        var others = items[1..].Select(i => Run(() => write(i))).ToArray();
        Assert.That(Task.WhenAll([first, .. others]).Wait(Guard), Is.True);
        ledger.CrashHook = null;
        return ([first.Result, .. others.Select(t => t.Result)], commits, WalFile.Read(ledger).Frames - before);
    }

    [Test]
    public void RecordOwed_QueuedBehindAnother_SharesOneCommit_EveryLeaseOwed()
    {
        using var provider = LedgerFactory.Open(_dir.Sub("provider"), Provider);
        var leases = Enumerable.Range(1, 9).Select(Lease).ToArray();

        var (results, commits, frames) = HoldFirstThenQueue(provider, leases, l => provider.RecordOwed(l, Requester.PeerId, 2500));

        Assert.That(results, Is.All.EqualTo(LedgerResult.Owed));
        Assert.That(commits, Is.EqualTo(2), "the first alone, the eight queued behind it in one commit (nine on main)");
        Assert.That(provider.UnpaidLeases(Requester.PeerId), Is.EqualTo(9));
        Assert.That(provider.Unpaid(Requester.PeerId), Is.EqualTo(9 * 2500));
        Assert.That(provider.Requester(Requester.PeerId).Unpaid, Is.EqualTo(9 * 2500), "the kept totals follow the rows");
        // Each lease is owed once: a second record of any of them writes nothing.
        Assert.That(leases.Select(l => provider.RecordOwed(l, Requester.PeerId, 1)), Is.All.EqualTo(LedgerResult.AlreadyOwed));

        // The same nine writes one after another, for comparison: nine commits.
        var more = Enumerable.Range(100, 9).Select(Lease).ToArray();
        var sequentialBefore = WalFile.Read(provider).Frames;
        Assert.That(more.Select(l => provider.RecordOwed(l, Requester.PeerId, 2500)), Is.All.EqualTo(LedgerResult.Owed));
        var sequential = WalFile.Read(provider).Frames - sequentialBefore;
        TestContext.Out.WriteLine($"WAL frames for nine owed leases: {frames} with the eight queued sharing a commit, {sequential} one commit each");
        Assert.That(frames, Is.LessThan(sequential / 2), "pages shared by the queued writes (the totals row, the owed leaf) written once");
    }

    [Test]
    public void MarkDelivered_QueuedBehindAnother_SharesOneCommit_EachWithItsOwnResult()
    {
        using var requester = LedgerFactory.Open(_dir.Sub("requester"), Requester, Options);
        var leases = Enumerable.Range(1, 8).Select(Lease).ToArray();
        foreach (var lease in leases)
        {
            Assert.That(requester.ReservePayment(lease, Provider.PeerId, 10_000), Is.EqualTo(LedgerResult.Reserved));
        }
        // Six settled; the seventh only reserved (not deliverable); the eighth settled and delivered already.
        foreach (var lease in leases.Where((_, i) => i != 6))
        {
            Assert.That(requester.Settle(MakeReceipt(lease, Requester, Provider)), Is.EqualTo(LedgerResult.Recorded));
        }
        Assert.That(requester.MarkDelivered(leases[7]), Is.EqualTo(LedgerResult.Delivered));
        var balance = requester.Balance();

        var (results, commits, _) = HoldFirstThenQueue(requester, leases, l => requester.MarkDelivered(l));

        Assert.That(results[..6], Is.All.EqualTo(LedgerResult.Delivered));
        Assert.That(results[6], Is.EqualTo(LedgerResult.NotSettled));
        Assert.That(results[7], Is.EqualTo(LedgerResult.AlreadyDelivered));
        Assert.That(commits, Is.EqualTo(2), "the first alone, the five queued writes that changed a row in one commit (on main each of the eight committed on its own)");
        Assert.That(requester.UndeliveredReceipts(), Is.Empty);
        Assert.That(requester.GetReservation(leases[6])!.State, Is.EqualTo(PaymentState.Reserved));
        Assert.That(leases.Where((_, i) => i != 6).Select(l => requester.GetReservation(l)!.State), Is.All.EqualTo(PaymentState.Delivered));
        Assert.That(requester.Balance(), Is.EqualTo(balance));
        Assert.That(requester.Balance(), Is.EqualTo(requester.SumEntries()));
    }

    /// <summary>
    /// Reservations queued behind another share one commit, and the funds still bound them: six reservations of 30 % of
    /// the balance, five of them in one batch, reserve three in all (the rest refused, nothing written for them).
    /// </summary>
    [Test]
    public void ReservePayment_QueuedBehindAnother_SharesOneCommit_FundsStillBoundThem()
    {
        using var requester = LedgerFactory.Open(_dir.Sub("requester"), Requester, Options);
        var leases = Enumerable.Range(1, 6).Select(Lease).ToArray();
        var each = Options.InitialGrant * 3 / 10;

        var (results, commits, _) = HoldFirstThenQueue(requester, leases, l => requester.ReservePayment(l, Provider.PeerId, each));

        Assert.That(results[0], Is.EqualTo(LedgerResult.Reserved));
        Assert.That(results.Count(r => r == LedgerResult.Reserved), Is.EqualTo(3));
        Assert.That(results.Count(r => r == LedgerResult.InsufficientFunds), Is.EqualTo(3));
        Assert.That(commits, Is.EqualTo(2), "the first alone, the two queued reservations that fit in one commit (on main each of the six committed on its own)");
        Assert.That(requester.Available(), Is.EqualTo(Options.InitialGrant - 3 * each));
        Assert.That(requester.Reservations(PaymentState.Reserved), Has.Count.EqualTo(3));
    }

    /// <summary>
    /// A reservation queued after a settle in the same batch sees the settle's spending: the balance it checks against is
    /// the kept one less the receipt settled before it (not yet committed), so it cannot reserve what was just spent.
    /// </summary>
    [Test]
    public void ReservePayment_QueuedAfterASettle_CountsTheSettledSpending()
    {
        using var requester = LedgerFactory.Open(_dir.Sub("requester"), Requester, Options);
        var (a, b, c) = (Lease(1), Lease(2), Lease(3));
        Assert.That(requester.ReservePayment(a, Provider.PeerId, Options.InitialGrant), Is.EqualTo(LedgerResult.Reserved));
        var receipt = MakeReceipt(a, Requester, Provider); // pays 2,500 of the reserved maximum
        var held = 0;
        requester.CrashHook = step =>
        {
            if (step == "commit" && ++held == 1)
            {
                Assert.That(SpinWait.SpinUntil(() => requester.QueuedWrites == 2, Guard), Is.True);
            }
        };
        var first = Run(() => requester.ReservePayment(b, Provider.PeerId, 0));
        Assert.That(SpinWait.SpinUntil(() => held == 1, Guard), Is.True);
        var settle = Run(() => requester.Settle(receipt));
        Assert.That(SpinWait.SpinUntil(() => requester.QueuedWrites == 1, Guard), Is.True);
        // Everything but the settled 2,500: one micro-credit more than what is left.
        var tooMuch = Run(() => requester.ReservePayment(c, Provider.PeerId, Options.InitialGrant - 2_500 + 1));
        Assert.That(Task.WhenAll(first, settle, tooMuch).Wait(Guard), Is.True);
        requester.CrashHook = null;

        Assert.That((first.Result, settle.Result, tooMuch.Result),
            Is.EqualTo((LedgerResult.Reserved, LedgerResult.Recorded, LedgerResult.InsufficientFunds)));
        Assert.That(requester.Balance(), Is.EqualTo(Options.InitialGrant - 2_500));
        Assert.That(requester.Balance(), Is.EqualTo(requester.SumEntries()));
        Assert.That(requester.ReservePayment(c, Provider.PeerId, Options.InitialGrant - 2_500), Is.EqualTo(LedgerResult.Reserved), "all that is left fits");
    }

    /// <summary>
    /// A NORMAL write queued with a durable one rides the durable one's group commit: committed with it, flushed before
    /// either returns (never less durable than alone).
    /// </summary>
    [Test]
    public void MarkDelivered_QueuedWithASettle_RidesItsGroupCommit_Flushed()
    {
        using var requester = LedgerFactory.Open(_dir.Sub("requester"), Requester, Options);
        var (a, b, c) = (Lease(1), Lease(2), Lease(3));
        foreach (var lease in new[] { a, b, c })
        {
            Assert.That(requester.ReservePayment(lease, Provider.PeerId, 10_000), Is.EqualTo(LedgerResult.Reserved));
        }
        Assert.That(requester.Settle(MakeReceipt(a, Requester, Provider)), Is.EqualTo(LedgerResult.Recorded));
        Assert.That(requester.Settle(MakeReceipt(b, Requester, Provider)), Is.EqualTo(LedgerResult.Recorded));
        var groups = requester.GroupCommits;
        var durable = new List<bool>();
        var held = 0;
        requester.CrashHook = step =>
        {
            if (step != "commit")
            {
                return;
            }
            durable.Add(requester.CommitsDurably);
            if (++held == 1)
            {
                Assert.That(SpinWait.SpinUntil(() => requester.QueuedWrites == 2, Guard), Is.True);
            }
        };
        var first = Run(() => requester.MarkDelivered(a));
        Assert.That(SpinWait.SpinUntil(() => held == 1, Guard), Is.True);
        var settle = Run(() => requester.Settle(MakeReceipt(c, Requester, Provider)));
        Assert.That(SpinWait.SpinUntil(() => requester.QueuedWrites == 1, Guard), Is.True);
        var second = Run(() => requester.MarkDelivered(b));
        Assert.That(Task.WhenAll(first, settle, second).Wait(Guard), Is.True);
        requester.CrashHook = null;

        Assert.That((first.Result, settle.Result, second.Result), Is.EqualTo((LedgerResult.Delivered, LedgerResult.Recorded, LedgerResult.Delivered)));
        Assert.That(durable, Is.EqualTo(new[] { false, true }), "the first alone (NORMAL), then the settle and the second in one group commit");
        Assert.That((requester.GroupCommits, requester.FlushedGroupCommits), Is.EqualTo((groups + 1, groups + 1)));
        Assert.That(requester.GetReservation(b)!.State, Is.EqualTo(PaymentState.Delivered));
        Assert.That(requester.GetReservation(c)!.State, Is.EqualTo(PaymentState.Settled));
    }
}
