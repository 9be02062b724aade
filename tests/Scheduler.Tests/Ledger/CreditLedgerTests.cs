using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Time.Testing;
using Potluck.Scheduler.Credits;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Ledger;

public class CreditLedgerTests
{
    private TempDir _dir = null!;

    [SetUp]
    public void SetUp() => _dir = new TempDir();

    [TearDown]
    public void TearDown() => _dir.Dispose();

    private CreditLedger OpenRequester(CreditsOptions? options = null) => LedgerFactory.Open(_dir.Sub("requester"), Requester, options);

    private CreditLedger OpenProvider() => LedgerFactory.Open(_dir.Sub("provider"), Provider);

    [Test]
    public void Open_NewLedger_RecordsTheInitialGrantOnce()
    {
        using (var ledger = OpenRequester())
        {
            Assert.That(ledger.Balance(), Is.EqualTo(Options.InitialGrant));
            var entries = ledger.Recent(10);
            Assert.That(entries, Has.Count.EqualTo(1));
            Assert.That(entries[0].Kind, Is.EqualTo(LedgerEntryKind.Grant));
            Assert.That(entries[0].Counterparty, Is.EqualTo(Requester.PeerId));
            Assert.That(entries[0].RecordedAt, Is.EqualTo(Epoch));
        }
        using var reopened = OpenRequester(new CreditsOptions { InitialGrant = 5 });
        Assert.That(reopened.Balance(), Is.EqualTo(Options.InitialGrant));
        Assert.That(reopened.Recent(10), Has.Count.EqualTo(1));
    }

    [Test]
    public void Open_ZeroGrant_NoEntries()
    {
        using var ledger = OpenRequester(new CreditsOptions { InitialGrant = 0 });
        Assert.That(ledger.Balance(), Is.Zero);
        Assert.That(ledger.Recent(10), Is.Empty);
    }

    [Test]
    public void Open_UsesWalAndSynchronousFull()
    {
        using var ledger = OpenRequester();
        Assert.That(ledger.Pragma("journal_mode"), Is.EqualTo("wal"));
        Assert.That(ledger.Pragma("synchronous"), Is.EqualTo(2L), "2 is FULL");
        Assert.That(ledger.Path, Is.EqualTo(Path.Combine(_dir.Sub("requester"), "ledger.db")));
    }

    [Test]
    public void Commits_SettleAndRecordAreDurableBeforeTheyReturn_TheOthersCommitWithNormal()
    {
        using var requester = OpenRequester();
        using var provider = OpenProvider();
        var seen = new List<(string Ledger, bool Durable)>();
        requester.CrashHook = step => { if (step == "commit") { seen.Add(("requester", requester.CommitsDurably)); } };
        provider.CrashHook = step => { if (step == "commit") { seen.Add(("provider", provider.CommitsDurably)); } };
        var lease = Lease(1);
        var receipt = MakeReceipt(lease, Requester, Provider);

        Assert.That(requester.ReservePayment(lease, Provider.PeerId, 10_000), Is.EqualTo(LedgerResult.Reserved));
        Assert.That(requester.Pragma("synchronous"), Is.EqualTo(1L), "1 is NORMAL");
        Assert.That(requester.Settle(receipt), Is.EqualTo(LedgerResult.Recorded));
        Assert.That(requester.Pragma("synchronous"), Is.EqualTo(2L), "2 is FULL");
        Assert.That(provider.Record(receipt, LedgerEntryKind.Earned), Is.EqualTo(LedgerResult.Recorded));
        Assert.That(requester.MarkDelivered(lease), Is.EqualTo(LedgerResult.Delivered));
        Assert.That(requester.ReservePayment(Lease(2), Provider.PeerId, 10_000), Is.EqualTo(LedgerResult.Reserved));
        Assert.That(requester.Release(Lease(2)), Is.EqualTo(LedgerResult.Released));
        Assert.That(requester.Record(MakeReceipt(Lease(3), Requester, Provider), LedgerEntryKind.Spent), Is.EqualTo(LedgerResult.Recorded));
        // The first group commit after opening commits with FULL (SQLite syncs the new WAL and its directory); later ones
        // commit with NORMAL and are flushed by the ledger before they return (LedgerFlushTests).
        Assert.That(requester.Pragma("synchronous"), Is.EqualTo(1L), "1 is NORMAL");
        Assert.That((requester.GroupCommits, requester.FlushedGroupCommits), Is.EqualTo((2L, 2L)));

        Assert.That(seen, Is.EqualTo(new[]
        {
            ("requester", false), ("requester", true), ("provider", true), ("requester", false), ("requester", false), ("requester", false),
            ("requester", true),
        }));
    }

    [Test]
    public void Record_EarnedAndSpent_MoveBothBalancesByTheAmount()
    {
        using var requester = OpenRequester();
        using var provider = OpenProvider();
        var receipt = MakeReceipt(Lease(1), Requester, Provider);
        Assert.That(requester.Record(receipt, LedgerEntryKind.Spent), Is.EqualTo(LedgerResult.Recorded));
        Assert.That(provider.Record(receipt, LedgerEntryKind.Earned), Is.EqualTo(LedgerResult.Recorded));
        Assert.That(requester.Balance(), Is.EqualTo(Options.InitialGrant - 2500));
        Assert.That(provider.Balance(), Is.EqualTo(Options.InitialGrant + 2500));
        var earned = provider.Recent(1)[0];
        Assert.That((earned.Kind, earned.Counterparty, earned.Amount, earned.SignedAmount), Is.EqualTo((LedgerEntryKind.Earned, Requester.PeerId, 2500L, 2500L)));
        Assert.That(earned.Receipt, Is.EqualTo(receipt.EnvelopeBytes));
        Assert.That(earned.LeaseId, Is.EqualTo(Lease(1)));
        Assert.That(requester.Recent(1)[0].SignedAmount, Is.EqualTo(-2500));
    }

    [Test]
    public void Record_SameReceiptTwice_CountsOnce()
    {
        using var provider = OpenProvider();
        var receipt = MakeReceipt(Lease(1), Requester, Provider);
        Assert.That(provider.Record(receipt, LedgerEntryKind.Earned), Is.EqualTo(LedgerResult.Recorded));
        Assert.That(provider.Record(receipt, LedgerEntryKind.Earned), Is.EqualTo(LedgerResult.AlreadyRecorded));
        var replay = SignedReceipt.Decode(receipt.EnvelopeBytes, Options).Value!;
        Assert.That(provider.Record(replay, LedgerEntryKind.Earned), Is.EqualTo(LedgerResult.AlreadyRecorded));
        Assert.That(provider.Balance(), Is.EqualTo(Options.InitialGrant + 2500));
        Assert.That(provider.Recent(10), Has.Count.EqualTo(2));
    }

    [Test]
    public void Record_SameReceiptAfterReopen_CountsOnce()
    {
        var receipt = MakeReceipt(Lease(1), Requester, Provider);
        using (var provider = OpenProvider())
        {
            Assert.That(provider.Record(receipt, LedgerEntryKind.Earned), Is.EqualTo(LedgerResult.Recorded));
        }
        using var reopened = OpenProvider();
        Assert.That(reopened.Record(receipt, LedgerEntryKind.Earned), Is.EqualTo(LedgerResult.AlreadyRecorded));
        Assert.That(reopened.Balance(), Is.EqualTo(Options.InitialGrant + 2500));
    }

    [Test]
    public void Record_ResignedReceiptForSameLease_ConflictFirstStands()
    {
        using var provider = OpenProvider();
        var first = MakeReceipt(Lease(1), Requester, Provider);
        var second = MakeReceipt(Lease(1), Requester, Provider, fuel: 9_000_000, at: Epoch.AddSeconds(1));
        Assert.That(second.ReceiptId.SequenceEqual(first.ReceiptId), Is.True);
        Assert.That(provider.Record(first, LedgerEntryKind.Earned), Is.EqualTo(LedgerResult.Recorded));
        Assert.That(provider.Record(second, LedgerEntryKind.Earned), Is.EqualTo(LedgerResult.Conflict));
        Assert.That(provider.Balance(), Is.EqualTo(Options.InitialGrant + 2500));
    }

    [Test]
    public void Record_ReceiptNotNamingUs_NotOursAndNothingRecorded()
    {
        using var requester = OpenRequester();
        var receipt = MakeReceipt(Lease(1), Requester, Provider);
        Assert.That(requester.Record(receipt, LedgerEntryKind.Earned), Is.EqualTo(LedgerResult.NotOurs));
        using var provider = OpenProvider();
        Assert.That(provider.Record(receipt, LedgerEntryKind.Spent), Is.EqualTo(LedgerResult.NotOurs));
        Assert.That(requester.Recent(10), Has.Count.EqualTo(1));
        Assert.That(provider.Recent(10), Has.Count.EqualTo(1));
    }

    [Test]
    public void Record_GrantKind_Throws()
    {
        using var ledger = OpenProvider();
        Assert.Throws<ArgumentOutOfRangeException>(() => ledger.Record(MakeReceipt(Lease(1), Requester, Provider), LedgerEntryKind.Grant));
    }

    [Test]
    public void Reopen_KeepsEveryEntryAndReservation()
    {
        using (var ledger = OpenRequester())
        {
            ledger.ReservePayment(Lease(1), Provider.PeerId, 10_000);
            ledger.Settle(MakeReceipt(Lease(1), Requester, Provider));
            ledger.ReservePayment(Lease(2), Provider.PeerId, 20_000);
        }
        using var reopened = OpenRequester();
        Assert.That(reopened.Balance(), Is.EqualTo(Options.InitialGrant - 2500));
        Assert.That(reopened.Available(), Is.EqualTo(Options.InitialGrant - 2500 - 20_000));
        Assert.That(reopened.GetReservation(Lease(1))!.State, Is.EqualTo(PaymentState.Settled));
        Assert.That(reopened.GetReservation(Lease(2))!.State, Is.EqualTo(PaymentState.Reserved));
        Assert.That(reopened.Recent(10).Select(e => e.Kind), Is.EqualTo(new[] { LedgerEntryKind.Spent, LedgerEntryKind.Grant }));
    }

    [Test]
    public void Reserve_SettleDeliver_WalksTheStates()
    {
        using var ledger = OpenRequester();
        var lease = Lease(1);
        var receipt = MakeReceipt(lease, Requester, Provider);

        Assert.That(ledger.ReservePayment(lease, Provider.PeerId, 10_000), Is.EqualTo(LedgerResult.Reserved));
        Assert.That(ledger.ReservePayment(lease, Provider.PeerId, 10_000), Is.EqualTo(LedgerResult.AlreadyReserved));
        Assert.That(ledger.ReservePayment(lease, Provider.PeerId, 20_000), Is.EqualTo(LedgerResult.Conflict));
        Assert.That(ledger.MarkDelivered(lease), Is.EqualTo(LedgerResult.NotSettled));
        Assert.That(ledger.Balance(), Is.EqualTo(Options.InitialGrant), "a reservation is not a payment");
        Assert.That(ledger.Available(), Is.EqualTo(Options.InitialGrant - 10_000));

        Assert.That(ledger.Settle(receipt), Is.EqualTo(LedgerResult.Recorded));
        Assert.That(ledger.Settle(receipt), Is.EqualTo(LedgerResult.AlreadyRecorded));
        Assert.That(ledger.Record(receipt, LedgerEntryKind.Spent), Is.EqualTo(LedgerResult.AlreadyRecorded));
        Assert.That(ledger.Settle(MakeReceipt(lease, Requester, Provider, at: Epoch.AddSeconds(5))), Is.EqualTo(LedgerResult.Conflict));
        Assert.That(ledger.Release(lease), Is.EqualTo(LedgerResult.AlreadySettled));
        Assert.That(ledger.Balance(), Is.EqualTo(Options.InitialGrant - 2500));
        Assert.That(ledger.Available(), Is.EqualTo(Options.InitialGrant - 2500));
        Assert.That(ledger.UndeliveredReceipts(), Is.EqualTo(new[] { receipt.EnvelopeBytes }));

        Assert.That(ledger.MarkDelivered(lease), Is.EqualTo(LedgerResult.Delivered));
        Assert.That(ledger.MarkDelivered(lease), Is.EqualTo(LedgerResult.AlreadyDelivered));
        Assert.That(ledger.UndeliveredReceipts(), Is.Empty);
        var reservation = ledger.GetReservation(lease)!;
        Assert.That((reservation.State, reservation.MaxAmount, reservation.Provider), Is.EqualTo((PaymentState.Delivered, 10_000L, Provider.PeerId)));
        Assert.That(reservation.ReceiptId, Is.EqualTo(receipt.Receipt.ReceiptId));
        Assert.That(ledger.Recent(10).Count(e => e.Kind == LedgerEntryKind.Spent), Is.EqualTo(1));
    }

    [Test]
    public void Release_FreesTheReservationAndForbidsSettling()
    {
        using var ledger = OpenRequester();
        var lease = Lease(1);
        ledger.ReservePayment(lease, Provider.PeerId, 10_000);
        Assert.That(ledger.Release(lease), Is.EqualTo(LedgerResult.Released));
        Assert.That(ledger.Release(lease), Is.EqualTo(LedgerResult.AlreadyReleased));
        Assert.That(ledger.Available(), Is.EqualTo(Options.InitialGrant));
        Assert.That(ledger.Settle(MakeReceipt(lease, Requester, Provider)), Is.EqualTo(LedgerResult.AlreadyReleased));
        Assert.That(ledger.Balance(), Is.EqualTo(Options.InitialGrant));
        Assert.That(ledger.Release(Lease(9)), Is.EqualTo(LedgerResult.NotReserved));
        Assert.That(ledger.MarkDelivered(Lease(9)), Is.EqualTo(LedgerResult.NotReserved));
    }

    [Test]
    public void Reserve_MoreThanAvailable_InsufficientFundsUnlessOverdraftAllowed()
    {
        using (var ledger = OpenRequester())
        {
            Assert.That(ledger.ReservePayment(Lease(1), Provider.PeerId, Options.InitialGrant), Is.EqualTo(LedgerResult.Reserved));
            Assert.That(ledger.ReservePayment(Lease(2), Provider.PeerId, 1), Is.EqualTo(LedgerResult.InsufficientFunds));
            Assert.That(ledger.GetReservation(Lease(2)), Is.Null);
        }
        using var overdraft = OpenRequester(Options with { AllowOverdraft = true });
        Assert.That(overdraft.ReservePayment(Lease(2), Provider.PeerId, 1), Is.EqualTo(LedgerResult.Reserved));
        Assert.That(overdraft.Available(), Is.EqualTo(-1));
    }

    [Test]
    public void Reserve_WithNoGrant_RunsOnCreditUpToMaxDebt_AndNoFurther()
    {
        using var ledger = OpenRequester(new CreditsOptions { MaxDebt = 3_000 });
        Assert.That(ledger.Balance(), Is.Zero, "no credit is minted by default");
        Assert.That(ledger.ReservePayment(Lease(1), Provider.PeerId, 2_000), Is.EqualTo(LedgerResult.Reserved));
        Assert.That(ledger.ReservePayment(Lease(2), Provider.PeerId, 1_001), Is.EqualTo(LedgerResult.InsufficientFunds));
        Assert.That(ledger.ReservePayment(Lease(3), Provider.PeerId, 1_000), Is.EqualTo(LedgerResult.Reserved));
        Assert.That(ledger.Available(), Is.EqualTo(-3_000));
    }

    [Test]
    public void Settle_AboveReservedMaximum_ExceedsReservationAndNothingRecorded()
    {
        using var ledger = OpenRequester();
        ledger.ReservePayment(Lease(1), Provider.PeerId, 2499);
        Assert.That(ledger.Settle(MakeReceipt(Lease(1), Requester, Provider)), Is.EqualTo(LedgerResult.ExceedsReservation));
        Assert.That(ledger.Balance(), Is.EqualTo(Options.InitialGrant));
        Assert.That(ledger.GetReservation(Lease(1))!.State, Is.EqualTo(PaymentState.Reserved));
    }

    [Test]
    public void Settle_WithoutReservationOrForOtherProvider_Rejected()
    {
        using var ledger = OpenRequester();
        Assert.That(ledger.Settle(MakeReceipt(Lease(1), Requester, Provider)), Is.EqualTo(LedgerResult.NotReserved));
        ledger.ReservePayment(Lease(2), Stranger.PeerId, 10_000);
        Assert.That(ledger.Settle(MakeReceipt(Lease(2), Requester, Provider)), Is.EqualTo(LedgerResult.Conflict));
        using var provider = OpenProvider();
        Assert.That(provider.Settle(MakeReceipt(Lease(1), Requester, Provider)), Is.EqualTo(LedgerResult.NotOurs));
        Assert.That(ledger.Balance(), Is.EqualTo(Options.InitialGrant));
    }

    [Test]
    public void RecordSpent_WithReservation_SettlesIt()
    {
        using var ledger = OpenRequester();
        ledger.ReservePayment(Lease(1), Provider.PeerId, 10_000);
        Assert.That(ledger.Record(MakeReceipt(Lease(1), Requester, Provider), LedgerEntryKind.Spent), Is.EqualTo(LedgerResult.Recorded));
        Assert.That(ledger.GetReservation(Lease(1))!.State, Is.EqualTo(PaymentState.Settled));
    }

    [Test]
    public void ReservePayment_BadArguments_Throw()
    {
        using var ledger = OpenRequester();
        Assert.Throws<ArgumentException>(() => ledger.ReservePayment([], Provider.PeerId, 1));
        Assert.Throws<ArgumentException>(() => ledger.ReservePayment(new byte[65], Provider.PeerId, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => ledger.ReservePayment(Lease(1), Provider.PeerId, -1));
    }

    [Test]
    public void ProofOfEarnings_ReverifiesToTheEarnedTotal()
    {
        using var provider = OpenProvider();
        provider.Record(MakeReceipt(Lease(1), Requester, Provider), LedgerEntryKind.Earned);
        provider.Record(MakeReceipt(Lease(2), Requester, Provider, fuel: 1_000_000), LedgerEntryKind.Earned);
        provider.Record(MakeReceipt(Lease(3), Stranger, Provider, fuel: 3_000_000), LedgerEntryKind.Earned);

        var proof = provider.ProofOfEarnings();
        var check = CreditLedger.VerifyProofOfEarnings(Provider.PeerId, [.. proof.Select(b => (ReadOnlyMemory<byte>)b)], Options);
        Assert.That(check, Is.EqualTo(new ProofOfEarningsCheck(VerifyStatus.Valid, 2500 + 1000 + 3000, 3, -1)));
        Assert.That(provider.Balance() - Options.InitialGrant, Is.EqualTo(check.Total));

        var fromStranger = provider.ProofOfEarnings(Stranger.PeerId);
        Assert.That(CreditLedger.VerifyProofOfEarnings(Provider.PeerId, [.. fromStranger.Select(b => (ReadOnlyMemory<byte>)b)], Options).Total,
            Is.EqualTo(3000));
    }

    [Test]
    public void VerifyProofOfEarnings_DuplicatesCountOnce_ForgeriesAndOthersReceiptsRejected()
    {
        var a = MakeReceipt(Lease(1), Requester, Provider).EnvelopeBytes;
        var b = MakeReceipt(Lease(2), Requester, Provider).EnvelopeBytes;
        Assert.That(CreditLedger.VerifyProofOfEarnings(Provider.PeerId, [a, a, b], Options),
            Is.EqualTo(new ProofOfEarningsCheck(VerifyStatus.Valid, 5000, 2, -1)));

        var forged = (byte[])b.Clone();
        forged[^3] ^= 1;
        Assert.That(CreditLedger.VerifyProofOfEarnings(Provider.PeerId, [a, forged], Options).FirstInvalid, Is.EqualTo(1));
        Assert.That(CreditLedger.VerifyProofOfEarnings(Stranger.PeerId, [a], Options).Status, Is.EqualTo(VerifyStatus.PartyMismatch));
        Assert.That(CreditLedger.VerifyProofOfEarnings(Provider.PeerId, [a, b], new CreditsOptions { MaxProofReceipts = 1 }).Status,
            Is.EqualTo(VerifyStatus.TooLarge));
    }

    [Test]
    public void Recent_NewestFirstAndBounded()
    {
        using var provider = LedgerFactory.Open(_dir.Sub("provider"), Provider, new CreditsOptions { MaxRecent = 3 });
        for (var i = 0; i < 5; i++)
        {
            provider.Record(MakeReceipt(Lease(i), Requester, Provider, fuel: (ulong)(i + 1) * 1_000_000), LedgerEntryKind.Earned);
        }
        var recent = provider.Recent(10);
        Assert.That(recent.Select(e => e.Amount), Is.EqualTo(new[] { 5000L, 4000, 3000 }));
        Assert.That(recent.Select(e => e.Sequence), Is.Ordered.Descending);
        Assert.That(provider.Recent(0), Is.Empty);
    }

    [Test]
    public void Record_SameReceiptFromManyThreads_CountsOnce()
    {
        using var provider = OpenProvider();
        var receipt = MakeReceipt(Lease(1), Requester, Provider);
        var distinct = Enumerable.Range(100, 32).Select(i => MakeReceipt(Lease(i), Requester, Provider)).ToArray();
        var results = new LedgerResult[64];
        Parallel.For(0, 64, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
            results[i] = provider.Record(i % 2 == 0 ? receipt : distinct[i / 2], LedgerEntryKind.Earned));
        Assert.That(results.Where((_, i) => i % 2 == 0).Count(r => r == LedgerResult.Recorded), Is.EqualTo(1));
        Assert.That(results.Where((_, i) => i % 2 == 1), Is.All.EqualTo(LedgerResult.Recorded));
        Assert.That(provider.Balance(), Is.EqualTo(Options.InitialGrant + 33 * 2500));
    }

    /// <summary>
    /// Group commit: while one durable write holds the ledger, others queue; the next commit runs them all, each in its
    /// own savepoint. A write that fails (here a crash inside it) fails alone and leaves no trace.
    /// </summary>
    [Test]
    public void DurableWrites_QueuedBehindACommit_ShareTheNextOne_EachWithItsOwnResult()
    {
        using var provider = OpenProvider();
        var receipts = Enumerable.Range(1, 6).Select(i => MakeReceipt(Lease(i), Requester, Provider)).ToArray();
        var commits = 0;
        var entries = 0;
        using var queued = new ManualResetEventSlim();
        provider.CrashHook = step =>
        {
            if (step == "commit")
            {
                commits++;
                Assert.That(provider.CommitsDurably);
            }
            if (step == "entry" && ++entries == 1)
            {
                // The first write holds the ledger until five more are queued behind it.
                SpinWait.SpinUntil(() => provider.QueuedWrites == 5);
            }
            if (step == "entry" && entries == 3)
            {
                throw new InvalidOperationException("crash inside one write");
            }
        };
        var first = Task.Run(() => provider.Record(receipts[0], LedgerEntryKind.Earned));
        SpinWait.SpinUntil(() => entries == 1);
        var others = receipts[1..].Select(r => Task.Run(() => provider.Record(r, LedgerEntryKind.Earned))).ToArray();
        Assert.That(first.Result, Is.EqualTo(LedgerResult.Recorded));
        Assert.That(Task.WhenAll(others).ContinueWith(_ => 0).Result, Is.Zero);

        Assert.That(commits, Is.EqualTo(2), "six writes, two commits");
        var failed = others.Where(t => t.IsFaulted).ToList();
        Assert.That(failed, Has.Count.EqualTo(1));
        Assert.That(failed[0].Exception!.InnerException, Is.TypeOf<InvalidOperationException>());
        Assert.That(others.Where(t => !t.IsFaulted).Select(t => t.Result), Is.All.EqualTo(LedgerResult.Recorded));
        Assert.That(provider.Recent(100).Count(e => e.Kind == LedgerEntryKind.Earned), Is.EqualTo(5));
        Assert.That(provider.Balance(), Is.EqualTo(Options.InitialGrant + 5 * 2500));
        Assert.That(provider.Balance(), Is.EqualTo(provider.SumEntries()));

        // The write that failed left no trace: recorded now, it counts once, and every other receipt is already there.
        provider.CrashHook = null;
        var counted = receipts.Count(r => provider.Record(r, LedgerEntryKind.Earned) == LedgerResult.Recorded);
        Assert.That(counted, Is.EqualTo(1));
        Assert.That(provider.Balance(), Is.EqualTo(Options.InitialGrant + 6 * 2500));
    }

    /// <summary>
    /// A durable write alone in its commit runs without a savepoint: one that fails after writing (a crash inside it)
    /// or records nothing is undone by rolling back the whole transaction, leaves no trace, and leaves no transaction
    /// open (the next operations begin their own).
    /// </summary>
    [Test]
    public void DurableWrite_AloneInItsCommit_FailingOrNotRecording_LeavesNoTraceAndNoOpenTransaction()
    {
        using var provider = OpenProvider();
        var receipt = MakeReceipt(Lease(1), Requester, Provider);
        provider.CrashHook = step =>
        {
            if (step == "entry")
            {
                throw new InvalidOperationException("crash inside the write");
            }
        };
        Assert.Throws<InvalidOperationException>(() => provider.Record(receipt, LedgerEntryKind.Earned));
        provider.CrashHook = null;
        Assert.That(provider.Recent(100).Count(e => e.Kind == LedgerEntryKind.Earned), Is.Zero);
        Assert.That(provider.Balance(), Is.EqualTo(Options.InitialGrant));
        Assert.That(provider.Balance(), Is.EqualTo(provider.SumEntries()));

        Assert.That(provider.Record(receipt, LedgerEntryKind.Earned), Is.EqualTo(LedgerResult.Recorded));
        var commits = 0;
        provider.CrashHook = step => commits += step == "commit" ? 1 : 0;
        Assert.That(provider.Record(receipt, LedgerEntryKind.Earned), Is.EqualTo(LedgerResult.AlreadyRecorded));
        Assert.That(provider.Record(MakeReceipt(Lease(2), Requester, Requester), LedgerEntryKind.Earned), Is.EqualTo(LedgerResult.NotOurs));
        Assert.That(commits, Is.Zero, "nothing recorded, nothing committed");
        Assert.That(provider.Record(MakeReceipt(Lease(3), Requester, Provider), LedgerEntryKind.Earned), Is.EqualTo(LedgerResult.Recorded));
        Assert.That(commits, Is.EqualTo(1));
        Assert.That(provider.Balance(), Is.EqualTo(Options.InitialGrant + 2 * 2500));
        Assert.That(provider.Balance(), Is.EqualTo(provider.SumEntries()));
    }

    [Test]
    public void Entries_AreAppendOnlyEvenForOtherWriters()
    {
        using (var ledger = OpenProvider())
        {
            ledger.Record(MakeReceipt(Lease(1), Requester, Provider), LedgerEntryKind.Earned);
        }
        using var raw = new SqliteConnection($"Data Source={Path.Combine(_dir.Sub("provider"), CreditLedger.FileName)};Pooling=False");
        raw.Open();
        foreach (var sql in new[] { "UPDATE entries SET amount = 1000000000", "DELETE FROM entries" })
        {
            using var cmd = raw.CreateCommand();
            cmd.CommandText = sql;
            Assert.Throws<SqliteException>(() => cmd.ExecuteNonQuery(), sql);
        }
        using var count = raw.CreateCommand();
        count.CommandText = "SELECT count(*) FROM entries";
        Assert.That(count.ExecuteScalar(), Is.EqualTo(2L));
    }

    [Test]
    public void Balance_KeptInMemory_AlwaysEqualsTheSumOfEntries_IncludingOtherWritersAndAbortedCommits()
    {
        using var ledger = OpenRequester();
        var random = new Random(7);
        for (var i = 0; i < 40; i++)
        {
            var lease = Lease(100 + i);
            ledger.ReservePayment(lease, Provider.PeerId, 10_000);
            switch (random.Next(4))
            {
                case 0:
                    ledger.Release(lease);
                    break;
                case 1:
                    // A crash inside the settlement's transaction: nothing of it may stay in the balance.
                    ledger.CrashHook = step => { if (step == "commit") { throw new InvalidOperationException("crash"); } };
                    Assert.Throws<InvalidOperationException>(() => ledger.Settle(MakeReceipt(lease, Requester, Provider)));
                    ledger.CrashHook = null;
                    break;
                default:
                    Assert.That(ledger.Settle(MakeReceipt(lease, Requester, Provider, fuel: (ulong)random.Next(1, 5_000_000))), Is.EqualTo(LedgerResult.Recorded));
                    break;
            }
            Assert.That(ledger.Balance(), Is.EqualTo(ledger.SumEntries()), $"step {i}");
        }
        Assert.That(ledger.Balance(), Is.LessThan(Options.InitialGrant));

        // Another connection appends an entry: the kept balance is summed afresh.
        using var raw = new SqliteConnection($"Data Source={ledger.Path};Pooling=False");
        raw.Open();
        using var insert = raw.CreateCommand();
        insert.CommandText = "INSERT INTO entries (receipt_id, kind, counterparty, lease_id, amount, receipt, recorded_at) VALUES (x'01', 1, x'02', NULL, 777, NULL, 0)";
        var before = ledger.Balance();
        insert.ExecuteNonQuery();
        Assert.That(ledger.Balance(), Is.EqualTo(before + 777));
        Assert.That(ledger.Balance(), Is.EqualTo(ledger.SumEntries()));
    }

    [Test]
    public void Reservations_IllegalTransitionByOtherWriter_Refused()
    {
        using (var ledger = OpenRequester())
        {
            ledger.ReservePayment(Lease(1), Provider.PeerId, 10_000);
            ledger.Release(Lease(1));
        }
        using var raw = new SqliteConnection($"Data Source={Path.Combine(_dir.Sub("requester"), CreditLedger.FileName)};Pooling=False");
        raw.Open();
        using var cmd = raw.CreateCommand();
        cmd.CommandText = "UPDATE reservations SET state = 0";
        Assert.Throws<SqliteException>(() => cmd.ExecuteNonQuery());
        cmd.CommandText = "UPDATE reservations SET state = 1";
        Assert.Throws<SqliteException>(() => cmd.ExecuteNonQuery());
    }

    [Test]
    public void Open_GarbageFile_LedgerCorruptException()
    {
        var dir = _dir.Sub("garbage");
        Directory.CreateDirectory(dir);
        var garbage = new byte[8192];
        new Random(7).NextBytes(garbage);
        File.WriteAllBytes(Path.Combine(dir, CreditLedger.FileName), garbage);
        var e = Assert.Throws<LedgerCorruptException>(() => LedgerFactory.Open(dir, Provider));
        Assert.That(e!.Path, Does.EndWith(CreditLedger.FileName));
    }

    [Test]
    public void Open_DamagedPages_LedgerCorruptException()
    {
        var dir = _dir.Sub("provider");
        using (var ledger = OpenProvider())
        {
            for (var i = 0; i < 50; i++)
            {
                ledger.Record(MakeReceipt(Lease(i), Requester, Provider), LedgerEntryKind.Earned);
            }
        }
        var path = Path.Combine(dir, CreditLedger.FileName);
        var bytes = File.ReadAllBytes(path);
        Assert.That(bytes.Length, Is.GreaterThan(3 * 4096), "the close checkpointed the WAL into the file");
        new Random(3).NextBytes(bytes.AsSpan(4096 + 100, 2 * 4096));
        File.WriteAllBytes(path, bytes);
        Assert.Throws<LedgerCorruptException>(() => LedgerFactory.Open(dir, Provider));
    }

    [Test]
    public void Open_ForeignSqliteDatabase_LedgerCorruptException()
    {
        var dir = _dir.Sub("foreign");
        Directory.CreateDirectory(dir);
        using (var raw = new SqliteConnection($"Data Source={Path.Combine(dir, CreditLedger.FileName)};Pooling=False"))
        {
            raw.Open();
            using var cmd = raw.CreateCommand();
            cmd.CommandText = "CREATE TABLE something (x INTEGER)";
            cmd.ExecuteNonQuery();
        }
        Assert.Throws<LedgerCorruptException>(() => LedgerFactory.Open(dir, Provider));
    }

    [Test]
    public void Open_OtherIdentity_LedgerExceptionNotCorrupt()
    {
        OpenProvider().Dispose();
        var e = Assert.Throws<LedgerException>(() => LedgerFactory.Open(_dir.Sub("provider"), Stranger));
        Assert.That(e, Is.Not.InstanceOf<LedgerCorruptException>());
        Assert.That(e!.Message, Does.Contain(Provider.PeerId.ToString()));
    }

    [Test]
    public void Disposed_Throws()
    {
        var ledger = OpenProvider();
        ledger.Dispose();
        ledger.Dispose();
        Assert.Throws<ObjectDisposedException>(() => ledger.Balance());
    }

    [Test]
    public void RecordedAt_ComesFromTheInjectedClock()
    {
        var time = new FakeTimeProvider(Epoch);
        using var provider = LedgerFactory.Open(_dir.Sub("provider"), Provider, time: time);
        time.Advance(TimeSpan.FromHours(3));
        provider.Record(MakeReceipt(Lease(1), Requester, Provider), LedgerEntryKind.Earned);
        Assert.That(provider.Recent(1)[0].RecordedAt, Is.EqualTo(Epoch.AddHours(3)));
    }
}
