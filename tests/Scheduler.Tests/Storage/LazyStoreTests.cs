using Microsoft.Extensions.Time.Testing;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Storage;
using Potluck.Scheduler.Verification;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Storage;

/// <summary>
/// The in-memory stand-in's store opens its SQLite connection at the first write that needs one (CreditLedger.Unwritten.cs,
/// <see cref="SqliteStateFile.Read{T}"/>): a node that takes part in nothing holds none, its reads answer what a new
/// ledger and empty state files hold, and once written everything is as before.
/// </summary>
public class LazyStoreTests
{
    private static string NewDir() => Path.Combine(Path.GetTempPath(), "potluck-lazystore-" + Guid.NewGuid().ToString("N"));

    private static SignedReceipt Receipt(int lease, long amountFuel = 2_500_000) =>
        MakeReceipt(Lease(lease), Requester, Provider, (ulong)amountFuel);

    /// <summary>Every read a node makes that takes part in nothing, each with what it answered.</summary>
    private static List<string> IdleReads(CreditLedger ledger, ReputationDatabase reputation, Action? after = null)
    {
        var answers = new List<string>();
        void Note(string what, object? value)
        {
            answers.Add($"{what}: {value switch
            {
                null => "null",
                byte[] bytes => Convert.ToHexString(bytes),
                System.Collections.IEnumerable list and not string => $"[{string.Join(", ", list.Cast<object>())}]",
                _ => value.ToString(),
            }}");
            after?.Invoke();
        }
        Note("balance", ledger.Balance());
        Note("available", ledger.Available());
        Note("recovery pending", ledger.ChainRecoveryPending);
        var head = ledger.ChainHead();
        Note("head", $"{head.Seq} {Convert.ToHexString(head.Hash)}");
        Note("holds blocks", ledger.HoldsBlocksOf(Requester.PeerId));
        Note("block at", ledger.ChainBlockAt(Requester.PeerId, 1));
        Note("block by hash", ledger.ChainBlockByHash(new byte[32]));
        Note("agreement", ledger.AgreementLinking(new byte[32]));
        Note("own block", ledger.OwnBlockFor(new byte[32]));
        Note("own blocks", ledger.OwnBlocks(0, 16));
        Note("reserved", ledger.Reservations(PaymentState.Reserved));
        Note("settled", ledger.Reservations(PaymentState.Settled));
        Note("undelivered", ledger.UndeliveredReceipts());
        Note("unlinked", ledger.UnlinkedProposals(64));
        Note("without block", ledger.DeliveredReceiptsWithoutBlock(64));
        Note("forks", ledger.Forks());
        Note("recovered", ledger.WasRecovered(1));
        Note("signed with", ledger.BlocksSignedWith(Requester.PeerId, 0, 16));
        Note("reservation", ledger.GetReservation(Lease(1)));
        Note("receipt", ledger.ReceiptOf(new byte[32], LedgerEntryKind.Earned));
        Note("unpaid", ledger.Unpaid(Requester.PeerId));
        Note("unpaid leases", ledger.UnpaidLeases(Requester.PeerId));
        Note("requester", ledger.Requester(Requester.PeerId));
        Note("held", ledger.Held(Requester.PeerId));
        Note("forfeited", ledger.Forfeited(Requester.PeerId));
        Note("vouches", ledger.Vouches(16));
        var totals = ledger.Totals(Epoch);
        Note("totals", totals);
        Note("reputation", reputation.Load(100));
        return answers;
    }

    [Test]
    public void InMemoryStore_ANodeThatTakesPartInNothing_HoldsNoConnectionAfterEveryReadItMakes()
    {
        var dir = NewDir();
        var time = new FakeTimeProvider(Epoch);
        using var ledger = CreditLedger.Open(dir, Provider.PeerId, Options, time, inMemory: true);
        using var reputation = ReputationDatabase.Open(dir, inMemory: true);
        var read = 0;
        IdleReads(ledger, reputation, () =>
        {
            read++;
            Assert.That(ledger.Footprint().Connections, Is.Zero, $"the ledger, after read {read}");
            Assert.That(reputation.Footprint().Connections, Is.Zero, $"reputation, after read {read}");
        });
        Assert.That(read, Is.GreaterThan(25));
    }

    [Test]
    public void InMemoryStore_UnwrittenReads_AnswerWhatANewLedgerHolds_AndStayUnwrittenAcrossARestart()
    {
        // The same reads of a store opened at once (a test's Keep opens it: the ledger is created at open, as before).
        var time = new FakeTimeProvider(Epoch);
        var openedDir = NewDir();
        using var keep = SqliteMemory.Keep(Path.Combine(openedDir, CreditLedger.FileName));
        List<string> expected;
        using (var ledger = CreditLedger.Open(openedDir, Provider.PeerId, Options, time, inMemory: true))
        using (var reputation = ReputationDatabase.Open(openedDir, inMemory: true))
        {
            Assert.That(ledger.Unwritten, Is.False);
            expected = IdleReads(ledger, reputation);
        }
        var dir = NewDir();
        using var hold = SqliteMemory.Hold(Path.Combine(dir, CreditLedger.FileName));
        for (var open = 0; open < 2; open++)
        {
            using var ledger = CreditLedger.Open(dir, Provider.PeerId, Options, time, inMemory: true);
            using var reputation = ReputationDatabase.Open(dir, inMemory: true);
            Assert.That(ledger.Created, Is.EqualTo(open == 0), "a new ledger at the first open only, as a file's");
            Assert.That(IdleReads(ledger, reputation), Is.EqualTo(expected), $"open {open + 1}");
            Assert.That(ledger.Unwritten, Is.True);
            Assert.That(ledger.Footprint().Connections, Is.Zero);
            time.Advance(TimeSpan.FromMinutes(1));
        }
        Assert.Throws<LedgerException>(() => CreditLedger.Open(dir, Requester.PeerId, Options, time, inMemory: true),
            "the unwritten ledger is still its owner's");
    }

    [Test]
    public void InMemoryStore_TheFirstWriteOpensIt_AndEverythingAfterIsAsBefore()
    {
        var time = new FakeTimeProvider(Epoch);
        var openedDir = NewDir();
        var lazyDir = NewDir();
        using var keep = SqliteMemory.Keep(Path.Combine(openedDir, CreditLedger.FileName));
        using var hold = SqliteMemory.Hold(Path.Combine(lazyDir, CreditLedger.FileName));
        var opened = CreditLedger.Open(openedDir, Provider.PeerId, Options, time, inMemory: true);
        var lazy = CreditLedger.Open(lazyDir, Provider.PeerId, Options, time, inMemory: true);
        using var openedReputation = ReputationDatabase.Open(openedDir, inMemory: true);
        using var lazyReputation = ReputationDatabase.Open(lazyDir, inMemory: true);
        try
        {
            // Reads, a restart of both, and time passing before the first write: the grant keeps the first open's time.
            Assert.That(IdleReads(lazy, lazyReputation), Is.EqualTo(IdleReads(opened, openedReputation)));
            time.Advance(TimeSpan.FromMinutes(3));
            opened.Dispose();
            lazy.Dispose();
            opened = CreditLedger.Open(openedDir, Provider.PeerId, Options, time, inMemory: true);
            lazy = CreditLedger.Open(lazyDir, Provider.PeerId, Options, time, inMemory: true);
            Assert.That(lazy.Created, Is.EqualTo(opened.Created).And.False);
            time.Advance(TimeSpan.FromMinutes(2));
            Assert.That(lazy.Unwritten, Is.True);

            var receipt = Receipt(7);
            foreach (var ledger in new[] { opened, lazy })
            {
                Assert.That(ledger.RecordOwed(receipt.Receipt.LeaseId, Requester.PeerId, receipt.Receipt.Amount), Is.EqualTo(LedgerResult.Owed));
            }
            Assert.That(lazy.Unwritten, Is.False, "the first write created it");
            Assert.That(lazy.Footprint().Connections, Is.GreaterThan(0));
            Assert.That(lazy.Created, Is.False, "what the open answered stays");
            time.Advance(TimeSpan.FromSeconds(5));
            foreach (var ledger in new[] { opened, lazy })
            {
                Assert.That(ledger.RecordEarned(receipt), Is.EqualTo(LedgerResult.Recorded));
            }
            openedReputation.Save([new(Requester.PeerId, new ProviderRecord(3, 4, 1, 0, null))]);
            lazyReputation.Save([new(Requester.PeerId, new ProviderRecord(3, 4, 1, 0, null))]);
            Assert.That(IdleReads(lazy, lazyReputation), Is.EqualTo(IdleReads(opened, openedReputation)));
            Assert.That(Entries(lazy), Is.EqualTo(Entries(opened)), "the grant at the first open's time, then the receipt");
            Assert.That(lazy.TotalsMismatches(), Is.Empty);
            Assert.That(lazy.SumEntries(), Is.EqualTo(lazy.Balance()));

            // Restarted once written: the ledger is read back from the store, as a file is.
            lazy.Dispose();
            lazy = CreditLedger.Open(lazyDir, Provider.PeerId, Options, time, inMemory: true);
            Assert.That(lazy.Unwritten, Is.False);
            Assert.That(lazy.Created, Is.False);
            Assert.That(Entries(lazy), Is.EqualTo(Entries(opened)));
        }
        finally
        {
            opened.Dispose();
            lazy.Dispose();
        }
    }

    [Test]
    public void InMemoryStore_ReputationWrittenFirst_TheLedgerIsCreatedWithItsFirstOpensTime()
    {
        // Another state file opens the store before the ledger is written: the ledger opened after a restart still
        // creates its grant at the time it was first opened, and is no new ledger.
        var time = new FakeTimeProvider(Epoch);
        var dir = NewDir();
        using var hold = SqliteMemory.Hold(Path.Combine(dir, CreditLedger.FileName));
        using (var ledger = CreditLedger.Open(dir, Provider.PeerId, Options, time, inMemory: true))
        using (var reputation = ReputationDatabase.Open(dir, inMemory: true))
        {
            Assert.That(ledger.Created, Is.True);
            time.Advance(TimeSpan.FromMinutes(1));
            reputation.Save([new(Requester.PeerId, new ProviderRecord(1, 1, 0, 0, null))]);
            Assert.That(reputation.Footprint().Connections, Is.GreaterThan(0), "the store's connection, opened by the save");
            Assert.That(ledger.Unwritten, Is.True, "the ledger itself wrote nothing");
        }
        time.Advance(TimeSpan.FromMinutes(1));
        using var reopened = CreditLedger.Open(dir, Provider.PeerId, Options, time, inMemory: true);
        Assert.That(reopened.Unwritten, Is.False, "its store is open: created at open");
        Assert.That(reopened.Created, Is.False);
        var grant = reopened.Recent(10).Single();
        Assert.That(grant.Kind, Is.EqualTo(LedgerEntryKind.Grant));
        Assert.That(grant.RecordedAt, Is.EqualTo(DateTimeOffset.FromUnixTimeMilliseconds(Epoch.ToUnixTimeMilliseconds())));
    }

    [Test]
    [Category("Adversarial")]
    public void InMemoryStore_AStrangersReceiptsForLeasesNeverOwed_AreRefused_AndOpenNothing()
    {
        var time = new FakeTimeProvider(Epoch);
        using var lazy = CreditLedger.Open(NewDir(), Provider.PeerId, Options, time, inMemory: true);
        using var file = CreditLedger.Open(NewDir(), Provider.PeerId, Options, time);
        for (var lease = 1; lease <= 50; lease++)
        {
            var receipt = Receipt(lease);
            Assert.That((lazy.RecordEarned(receipt), file.RecordEarned(receipt)), Is.EqualTo((LedgerResult.NotOwed, LedgerResult.NotOwed)),
                $"receipt {lease}: refused as a new ledger refuses it");
        }
        Assert.That(lazy.Unwritten, Is.True, "nothing was written");
        Assert.That(lazy.Footprint().Connections, Is.Zero, "and no connection opened (before stop 38's follow-up each such receipt opened the store)");
        Assert.That((lazy.Balance(), lazy.Recent(10).Count), Is.EqualTo((file.Balance(), file.Recent(10).Count)));

        // Once owed, the same receipt is recorded as before.
        Assert.That(lazy.RecordOwed(Lease(1), Requester.PeerId, Receipt(1).Receipt.Amount), Is.EqualTo(LedgerResult.Owed));
        Assert.That(lazy.RecordEarned(Receipt(1)), Is.EqualTo(LedgerResult.Recorded));
    }

    private static List<string> Entries(CreditLedger ledger) =>
        [.. ledger.Recent(100).Select(e => $"{e.Sequence} {e.Kind} {Convert.ToHexString(e.ReceiptId)} {e.Amount} {e.RecordedAt.ToUnixTimeMilliseconds()}")];
}
