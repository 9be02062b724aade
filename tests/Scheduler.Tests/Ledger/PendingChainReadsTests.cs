using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Time.Testing;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Tests.Accounting;
using Potluck.Scheduler.Tests.Storage;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Ledger;

/// <summary>
/// The chain round's reads cost what is pending, not the ledger's history: the delivered receipts without a block read the
/// Delivered reservations marked unchained (set with the Delivered mark, cleared with the block's append), the unlinked
/// proposals read <c>chain_unlinked</c>; both answer as the scans of every Delivered reservation and every own proposal did,
/// a ledger made before them is migrated on open, and a crash between the Delivered mark and the block's append loses
/// nothing and counts nothing twice.
/// </summary>
public class PendingChainReadsTests
{
    private TempDir _dir = null!;

    [SetUp]
    public void SetUp() => _dir = new TempDir();

    [TearDown]
    public void TearDown() => _dir.Dispose();

    private static SignedReceipt Receipt(int i) => MakeReceipt(Lease(i), Requester, Provider);

    /// <summary>Leases <paramref name="from"/>.. reserved, settled and delivered (not yet in a block).</summary>
    private static void Deliver(CreditLedger ledger, int from, int count)
    {
        for (var i = from; i < from + count; i++)
        {
            Assert.That(ledger.ReservePayment(Lease(i), Provider.PeerId, 10_000), Is.EqualTo(LedgerResult.Reserved));
            Assert.That(ledger.Settle(Receipt(i)), Is.EqualTo(LedgerResult.Recorded));
            Assert.That(ledger.MarkDelivered(Lease(i)), Is.EqualTo(LedgerResult.Delivered));
        }
    }

    /// <summary>
    /// One chain round as the requester's service makes it: every delivered receipt without a block (64 at most) goes into a
    /// batch block (one payment: a single block), appended in one group commit. Returns the proposals appended.
    /// </summary>
    private static List<SignedBlock> Round(CreditLedger ledger)
    {
        var receipts = ledger.DeliveredReceiptsWithoutBlock(64).Select(b => SignedReceipt.Decode(b, Options).Value!.Receipt).ToList();
        if (receipts.Count == 0)
        {
            return [];
        }
        var block = receipts.Count == 1
            ? ledger.AppendOwnBlock(receipts[0].ReceiptId, (s, p) => SignedBlock.Propose(receipts[0], Requester, s, p, Epoch))
            : ledger.AppendOwnBatches([(ChainBlock.BatchIdOf([.. receipts.Select(ChainPayment.Of)]), receipts.Select(r => r.ReceiptId).ToArray(),
                (s, p) => SignedBlock.ProposeBatch(receipts, Requester, s, p, Epoch))])[0];
        Assert.That(block.Appended, Is.True);
        return [block.Block];
    }

    private static ulong _providerSeq;

    /// <summary>The provider's agreement to <paramref name="proposal"/>, stored as the requester stores an answer (kept).</summary>
    private static void Agree(CreditLedger ledger, SignedBlock proposal, bool keep = true)
    {
        // The provider's chain is not this ledger's to check: any seq, with a previous hash that is not the genesis one.
        var seq = Interlocked.Increment(ref _providerSeq);
        var agreement = ChainBlockTests.Agreement(proposal, Provider, seq, seq == 1 ? SignedBlock.Genesis : System.Security.Cryptography.SHA256.HashData(BitConverter.GetBytes(seq)));
        Assert.That(ledger.StoreForeignBlock(agreement, keep, out _), Is.Not.EqualTo(ForeignBlockResult.Conflict));
    }

    /// <summary>History: <paramref name="count"/> more leases delivered, chained in rounds, every proposal agreed.</summary>
    private static void History(CreditLedger ledger, int from, int count)
    {
        for (var at = from; at < from + count; at += 64)
        {
            Deliver(ledger, at, Math.Min(64, from + count - at));
            foreach (var proposal in Round(ledger))
            {
                Agree(ledger, proposal);
            }
        }
    }

    private static IEnumerable<string> Hex(IEnumerable<byte[]> blobs) => blobs.Select(Convert.ToHexString);

    /// <summary>
    /// The same pending work (three delivered receipts without a block; two proposals without an agreement) behind 200 and
    /// then 2,000 chained and agreed leases: each round's query answers exactly the pending ones and costs SQLite the same
    /// steps at both sizes. On the scans of every Delivered reservation and every own proposal the steps grow with the
    /// history (checked on a clean export of 307dad1 with this file and the step counter added: fails there).
    /// </summary>
    [Test]
    public void ChainRoundReads_CostWhatIsPending_StepsStayFlatAsTheHistoryGrows()
    {
        using var ledger = CreditLedger.Open(_dir.Sub("r"), Requester.PeerId, Options with { InitialGrant = 100_000_000_000 }, new FakeTimeProvider(Epoch), inMemory: true);
        var steps = new List<(long Delivered, long Unlinked)>();
        var next = 1;
        foreach (var history in new[] { 200, 2_000 })
        {
            History(ledger, next, history - (next - 1));
            next = history + 1;
            // Pending: two proposals waiting for their agreement, then three receipts delivered without a block.
            Deliver(ledger, 100_000 + history, 2);
            var unlinked = Round(ledger);
            Deliver(ledger, 200_000 + history, 3);

            var delivered = ledger.DeliveredReceiptsWithoutBlock(64);
            var deliveredSteps = ledger.LastRarelySteps;
            var proposals = ledger.UnlinkedProposals(64);
            var unlinkedSteps = ledger.LastRarelySteps;
            Assert.That(Hex(delivered), Is.EqualTo(Hex(Enumerable.Range(200_000 + history, 3).Select(i => Receipt(i).EnvelopeBytes))), $"history {history}");
            Assert.That(Hex(proposals), Is.EqualTo(Hex(unlinked.Select(p => p.EnvelopeBytes))), $"history {history}");
            steps.Add((deliveredSteps, unlinkedSteps));

            // The pending work done: both reads find nothing, and the next history is chained and agreed as before.
            Assert.That(Round(ledger), Has.Count.EqualTo(1));
            foreach (var bytes in ledger.UnlinkedProposals(64))
            {
                Agree(ledger, SignedBlock.DecodeChecked(bytes)!);
            }
            Assert.That(ledger.DeliveredReceiptsWithoutBlock(64), Is.Empty);
            Assert.That(ledger.UnlinkedProposals(64), Is.Empty);
        }
        TestContext.Out.WriteLine($"SQLite steps (delivered, unlinked) at 200 and 2,000 leases of history: {steps[0]} and {steps[1]}");
        Assert.That(steps[1], Is.EqualTo(steps[0]), $"SQLite steps at 200 and 2,000 leases of history: {steps[0]} and {steps[1]}");
    }

    /// <summary>
    /// The statements' plans, as SQLite chooses them on a file ledger: the delivered receipts without a block, and the append's
    /// clearing of them, are searches of the pending index's Delivered range, the unlinked proposals a scan of
    /// <c>chain_unlinked</c> only; none scans the reservations, the entries or the chain.
    /// </summary>
    [Test]
    public void ChainRoundReads_QueryPlans_SearchThePendingRows_NeverScanTheHistory()
    {
        var dir = _dir.Sub("r");
        using (var ledger = LedgerFactory.Open(dir, Requester))
        {
            History(ledger, 1, 70);
        }
        using var raw = new SqliteConnection($"Data Source={Path.Combine(dir, CreditLedger.FileName)};Mode=ReadOnly;Pooling=False");
        raw.Open();
        var delivered = Plan(raw, CreditLedger.DeliveredWithoutBlockSql);
        var unlinked = Plan(raw, CreditLedger.UnlinkedProposalsSql);
        Assert.That(delivered, Has.Some.Contains("SEARCH r USING INDEX reservations_pending (state=?)"), string.Join("\n", delivered));
        Assert.That(delivered, Has.None.StartsWith("SCAN"), string.Join("\n", delivered));
        var chained = Plan(raw, CreditLedger.ChainedSql);
        Assert.That(chained, Has.Some.Contains("SEARCH reservations USING INDEX reservations_pending (state=?)"), string.Join("\n", chained));
        Assert.That(chained, Has.None.StartsWith("SCAN"), string.Join("\n", chained));
        Assert.That(unlinked, Has.Some.StartsWith("SCAN u"), string.Join("\n", unlinked));
        Assert.That(unlinked.Where(l => l.StartsWith("SCAN", StringComparison.Ordinal)), Is.EqualTo(new[] { "SCAN u" }), string.Join("\n", unlinked));
    }

    internal static List<string> Plan(SqliteConnection raw, string sql)
    {
        using var cmd = raw.CreateCommand();
        cmd.CommandText = "EXPLAIN QUERY PLAN " + sql;
        foreach (var name in new[] { "$a", "$n", "$r", "$s" })
        {
            if (sql.Contains(name, StringComparison.Ordinal))
            {
                cmd.Parameters.AddWithValue(name, name is "$n" or "$s" ? 64L : Requester.PeerId.ToBytes());
            }
        }
        using var reader = cmd.ExecuteReader();
        var lines = new List<string>();
        while (reader.Read())
        {
            lines.Add(reader.GetString(3));
        }
        return lines;
    }

    /// <summary>
    /// A requester's ledger as main's schema (307dad1) left it — no <c>unchained</c> column, <c>reservations_open</c> over
    /// Reserved and Settled, no <c>chain_unlinked</c> — with leases in every state, Delivered ones chained (in a batch and in
    /// a single block) and not, proposals agreed (kept), agreed only by gossip (unkept) and not at all: opened, every read
    /// answers as before, exactly the unchained Delivered reservations and the proposals without a kept agreement are
    /// pending, and the next round proposes exactly the unchained ones.
    /// </summary>
    [Test]
    public void Open_LedgerMadeByMainsSchema_MarksExactlyTheUnchainedAndUnlinked_AndTheNextRoundProposesThem()
    {
        var dir = _dir.Sub("r");
        void Answers(CreditLedger ledger, List<string> into)
        {
            into.Add($"available {ledger.Available()}, balance {ledger.Balance()}");
            foreach (var state in Enum.GetValues<PaymentState>())
            {
                into.Add($"{state}: " + string.Join(" ", ledger.Reservations(state).Select(r => $"{Convert.ToHexString(r.LeaseId)}/{r.MaxAmount}/{r.Receipt?.Length}")));
            }
            into.Add("undelivered " + ledger.UndeliveredReceipts().Count);
            into.Add("unblocked " + string.Join(" ", Hex(ledger.DeliveredReceiptsWithoutBlock(64))));
            into.Add("unlinked " + string.Join(" ", Hex(ledger.UnlinkedProposals(64))));
            into.Add("lease 4 " + ledger.GetReservation(Lease(4))!.State + ", lease 1 " + ledger.GetReservation(Lease(1))!.State);
            into.Add("head " + ledger.ChainHead().Seq);
        }
        var before = new List<string>();
        using (var ledger = LedgerFactory.Open(dir, Requester))
        {
            Deliver(ledger, 1, 3);
            var batch = Round(ledger)[0];                    // leases 1–3 in a batch block, agreed (kept)
            Agree(ledger, batch);
            Deliver(ledger, 4, 1);
            var single = Round(ledger)[0];                   // lease 4 in a single block, agreed only by gossip (unkept)
            Agree(ledger, single, keep: false);
            Deliver(ledger, 5, 1);
            Round(ledger);                                   // lease 5 in a single block, no agreement
            Deliver(ledger, 6, 2);                           // leases 6, 7 delivered, in no block
            for (var i = 8; i <= 12; i++)
            {
                Assert.That(ledger.ReservePayment(Lease(i), Provider.PeerId, 10_000 + i), Is.EqualTo(LedgerResult.Reserved));
            }
            Assert.That(ledger.Settle(Receipt(8)), Is.EqualTo(LedgerResult.Recorded)); // 8, 9 settled, not delivered
            Assert.That(ledger.Settle(Receipt(9)), Is.EqualTo(LedgerResult.Recorded));
            Assert.That(ledger.Release(Lease(10)), Is.EqualTo(LedgerResult.Released)); // 10 released, 11 and 12 reserved
            Answers(ledger, before);
        }
        Assert.That(before, Does.Contain("unblocked " + string.Join(" ", Hex([Receipt(6).EnvelopeBytes, Receipt(7).EnvelopeBytes]))), "the set up is as meant");
        Assert.That(before.Single(l => l.StartsWith("unlinked", StringComparison.Ordinal)).Split(' '), Has.Length.EqualTo(2), "one proposal unlinked: lease 5's");

        // main's schema: the reservations table without unchained (rows and rowids kept), its index and trigger, no chain_unlinked.
        using (var raw = new SqliteConnection($"Data Source={Path.Combine(dir, CreditLedger.FileName)};Pooling=False"))
        {
            raw.Open();
            foreach (var sql in MainsSchema)
            {
                using var cmd = raw.CreateCommand();
                cmd.CommandText = sql;
                cmd.ExecuteNonQuery();
            }
            Assert.That(SqlNames.Of(raw, "SELECT name FROM pragma_table_info('reservations') ORDER BY cid"),
                Is.EqualTo(new[] { "lease_id", "provider", "max_amount", "state", "receipt_id", "created_at", "updated_at" }), "main's schema, else this proves nothing");
            Assert.That(SqlNames.Of(raw, "SELECT name FROM sqlite_schema WHERE tbl_name IN ('reservations', 'chain_unlinked') AND name NOT LIKE 'sqlite_%' ORDER BY name"),
                Is.EqualTo(new[] { "reservations", "reservations_no_delete", "reservations_open", "reservations_transitions" }));
        }

        using var reopened = LedgerFactory.Open(dir, Requester);
        var after = new List<string>();
        Answers(reopened, after);
        Assert.That(after, Is.EqualTo(before));
        using (var raw = new SqliteConnection($"Data Source={Path.Combine(dir, CreditLedger.FileName)};Mode=ReadOnly;Pooling=False"))
        {
            raw.Open();
            Assert.That(SqlNames.Of(raw, "SELECT hex(lease_id) FROM reservations WHERE unchained = 1 ORDER BY rowid"),
                Is.EqualTo(new[] { Convert.ToHexString(Lease(6)), Convert.ToHexString(Lease(7)) }), "exactly the Delivered leases in no block");
            Assert.That(SqlNames.Of(raw, "SELECT seq FROM chain_unlinked ORDER BY seq"), Is.EqualTo(new[] { "2", "3" }),
                "lease 4's proposal (agreed only unkept) and lease 5's (not agreed): no kept agreement");
            Assert.That(SqlNames.Of(raw, "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'reservations' ORDER BY name"),
                Is.EqualTo(new[] { "reservations_pending", "sqlite_autoindex_reservations_1" }));
        }

        // The next round proposes exactly the unchained ones (6, 7), and they leave the pending rows; the trigger still refuses
        // an illegal move.
        var next = Round(reopened);
        Assert.That(next.Single().Block.AllPayments.Select(p => Convert.ToHexString(p.LeaseId)),
            Is.EqualTo(new[] { Convert.ToHexString(Lease(6)), Convert.ToHexString(Lease(7)) }));
        Assert.That(reopened.DeliveredReceiptsWithoutBlock(64), Is.Empty);
        Assert.That(reopened.UnlinkedProposals(64).Count, Is.EqualTo(2), "lease 5's and the new one");
        Assert.That(reopened.MarkDelivered(Lease(8)), Is.EqualTo(LedgerResult.Delivered));
        Assert.That(Round(reopened).Single().Block.AllPayments.Single().LeaseId, Is.EqualTo(Lease(8)));
        Assert.That(reopened.MarkDelivered(Lease(11)), Is.EqualTo(LedgerResult.NotSettled));
        Assert.That(reopened.Release(Lease(8)), Is.EqualTo(LedgerResult.AlreadySettled));
    }

    /// <summary>What 307dad1's schema made of the reservations (its CREATE text), from a ledger made by this code.</summary>
    private static readonly string[] MainsSchema =
    [
        "DROP TABLE IF EXISTS chain_unlinked",
        "DROP INDEX IF EXISTS reservations_pending", "DROP INDEX IF EXISTS reservations_open",
        "DROP TRIGGER reservations_transitions",
        "DROP TRIGGER reservations_no_delete",
        """
        CREATE TABLE reservations_main (
            lease_id BLOB PRIMARY KEY,
            provider BLOB NOT NULL,
            max_amount INTEGER NOT NULL CHECK (max_amount >= 0),
            state INTEGER NOT NULL CHECK (state IN (0, 1, 2, 3)),
            receipt_id BLOB,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL) STRICT
        """,
        """
        INSERT INTO reservations_main (rowid, lease_id, provider, max_amount, state, receipt_id, created_at, updated_at)
        SELECT rowid, lease_id, provider, max_amount, state, receipt_id, created_at, updated_at FROM reservations ORDER BY rowid
        """,
        "DROP TABLE reservations",
        "ALTER TABLE reservations_main RENAME TO reservations",
        "CREATE INDEX reservations_open ON reservations (state) WHERE state = 0 OR state = 1",
        """
        CREATE TRIGGER reservations_transitions BEFORE UPDATE ON reservations
            WHEN NOT ((OLD.state = 0 AND NEW.state IN (1, 3)) OR (OLD.state = 1 AND NEW.state = 2))
              OR NEW.lease_id IS NOT OLD.lease_id OR NEW.provider IS NOT OLD.provider
              OR NEW.max_amount IS NOT OLD.max_amount
              OR (OLD.receipt_id IS NOT NULL AND NEW.receipt_id IS NOT OLD.receipt_id)
              OR (NEW.state IN (1, 2) AND NOT EXISTS
                    (SELECT 1 FROM entries WHERE receipt_id = NEW.receipt_id AND kind = 2))
            BEGIN SELECT RAISE(ABORT, 'illegal payment state transition'); END
        """,
        "CREATE TRIGGER reservations_no_delete BEFORE DELETE ON reservations BEGIN SELECT RAISE(ABORT, 'reservations are kept'); END",
    ];

    /// <summary>
    /// A crash inside the block's append (after the block is written, before its commit) and one after the Delivered mark,
    /// before any round: after the restart the receipt is still pending (unchained, and proposed by the next round), in no
    /// block; the round after appends it once, and it leaves the pending rows in that same commit.
    /// </summary>
    [TestCase("chain-append")]
    [TestCase("commit")]
    [TestCase(null)]
    public void Crash_BetweenTheDeliveredMarkAndTheBlocksAppend_LosesNothing_CountsNothingTwice(string? inside)
    {
        using var node = new LedgerNode(_dir.Sub("r"), Requester, Options, new FakeTimeProvider(Epoch));
        History(node.Ledger, 1, 10);
        Deliver(node.Ledger, 11, 2);
        if (inside is not null)
        {
            node.Ledger.CrashHook = step =>
            {
                if (step == inside)
                {
                    throw new IOException("crash at " + step);
                }
            };
            Assert.That(() => Round(node.Ledger), Throws.InstanceOf<Exception>());
        }
        node.CrashAndRestart();

        Assert.That(node.Ledger.ChainHead().Seq, Is.EqualTo(1UL), "the first history round's block only: nothing of the crashed append");
        Assert.That(Unchained(node), Is.EqualTo(new[] { Convert.ToHexString(Lease(11)), Convert.ToHexString(Lease(12)) }));
        Assert.That(Hex(node.Ledger.DeliveredReceiptsWithoutBlock(64)), Is.EqualTo(Hex([Receipt(11).EnvelopeBytes, Receipt(12).EnvelopeBytes])));

        var appended = Round(node.Ledger).Single();
        Assert.That(appended.Block.AllPayments.Select(p => p.LeaseId), Is.EqualTo(new[] { Lease(11), Lease(12) }));
        node.CrashAndRestart();
        Assert.That(Unchained(node), Is.Empty, "cleared in the append's commit");
        Assert.That(node.Ledger.DeliveredReceiptsWithoutBlock(64), Is.Empty);
        Assert.That(Round(node.Ledger), Is.Empty, "nothing proposed twice");
        Assert.That(node.Ledger.OwnBlocks(0, 10).Select(b => SignedBlock.DecodeChecked(b)!.Block.AllPayments.Count), Is.EqualTo(new[] { 10, 2 }),
            "each payment in one block");
        Assert.That(Hex(node.Ledger.UnlinkedProposals(64)), Is.EqualTo(Hex([appended.EnvelopeBytes])));
    }

    /// <summary>
    /// <c>ledger --verify</c> (<see cref="ChainAudit"/>) checks the pending rows against what they stand for: sound on a ledger
    /// the code kept; a Delivered reservation in no block left unmarked (never proposed), an unlinked proposal's row lost
    /// (never sent again) and a row kept for a proposal already agreed are each reported, and the chain is then not sound.
    /// </summary>
    [Test]
    public void Verify_ChecksThePendingRowsAgainstWhatTheyStandFor()
    {
        var dir = _dir.Sub("r");
        using (var ledger = LedgerFactory.Open(dir, Requester))
        {
            History(ledger, 1, 70);
            Deliver(ledger, 100, 2);
            Assert.That(Round(ledger), Has.Count.EqualTo(1));
            Deliver(ledger, 200, 2);
            var audit = ChainAudit.Verify(ledger);
            Assert.That((audit.IsSound, audit.Unlinked), Is.EqualTo((true, 1L)), string.Join("; ", audit.Problems));
        }
        using (var raw = new SqliteConnection($"Data Source={Path.Combine(dir, CreditLedger.FileName)};Pooling=False"))
        {
            raw.Open();
            foreach (var sql in new[]
            {
                "DROP TRIGGER reservations_transitions",
                "UPDATE reservations SET unchained = 0 WHERE lease_id = $lease",
                "DELETE FROM chain_unlinked",
                "INSERT INTO chain_unlinked (seq, hash) SELECT seq, hash FROM chain WHERE own = 1 AND seq = 1",
            })
            {
                using var cmd = raw.CreateCommand();
                cmd.CommandText = sql;
                if (sql.Contains("$lease", StringComparison.Ordinal))
                {
                    cmd.Parameters.AddWithValue("$lease", Lease(200));
                }
                var changed = cmd.ExecuteNonQuery();
                Assert.That(changed > 0 || sql.StartsWith("DROP", StringComparison.Ordinal), Is.True, sql);
            }
        }
        using var reopened = LedgerFactory.Open(dir, Requester);
        var damaged = ChainAudit.Verify(reopened);
        Assert.That(damaged.IsSound, Is.False);
        Assert.That(damaged.Problems, Is.EqualTo(new[]
        {
            "pending rows: 1 Delivered reservations in no block not marked unchained: the chain round never proposes them",
            "pending rows: 1 own proposals without an agreement missing from chain_unlinked: never sent again",
            "pending rows: 1 chain_unlinked rows for no own proposal, or for one with a kept agreement",
        }));
    }

    private List<string> Unchained(LedgerNode node)
    {
        using var raw = new SqliteConnection($"Data Source={Path.Combine(node.Dir, CreditLedger.FileName)};Mode=ReadOnly;Pooling=False");
        raw.Open();
        return SqlNames.Of(raw, "SELECT hex(lease_id) FROM reservations WHERE unchained = 1 ORDER BY rowid");
    }
}
