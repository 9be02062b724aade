using System.Diagnostics;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;

namespace Potluck.Scheduler.Accounting;

/// <summary>What <see cref="ChainAudit.Verify"/> found.</summary>
/// <param name="Blocks">Own half-blocks checked (signature, seq continuity, previous hash).</param>
/// <param name="Proposals">Own proposals (payments made) among them.</param>
/// <param name="Agreements">Own agreements (payments received) among them.</param>
/// <param name="LinkedBlocks">Counterparties' half-blocks held and checked against ours.</param>
/// <param name="Unlinked">Own proposals whose agreement is not held yet (sent again while the node runs).</param>
/// <param name="Paid">Micro-credits paid, summed from the own proposals.</param>
/// <param name="Earned">Micro-credits earned, summed from the own agreements.</param>
/// <param name="Forks">Fork proofs held against others.</param>
/// <param name="Problems">What did not check (at most 20 listed); empty when the chain is sound.</param>
/// <param name="Elapsed">Time the check took.</param>
public sealed record ChainAuditReport(
    long Blocks, long Proposals, long Agreements, long LinkedBlocks, long Unlinked, long Paid, long Earned, int Forks,
    IReadOnlyList<string> Problems, TimeSpan Elapsed)
{
    public bool IsSound => Problems.Count == 0;

    /// <summary>Payments recorded in the own proposals (a batch block's each count; a single-payment block's one).</summary>
    public long PaymentsMade { get; init; }

    /// <summary>Payments recorded in the own agreements.</summary>
    public long PaymentsReceived { get; init; }

    /// <summary>Counterparties whose kept totals (admission's one-row read) differ from the totals summed from the rows; each is a problem too.</summary>
    public IReadOnlyList<TotalsMismatch> TotalsMismatches { get; init; } = [];
}

/// <summary>
/// Checks a node's own chain end to end from its ledger: every block's signature and author, seq 1, 2, 3… with each
/// previous hash the hash of the block before; the kept per-counterparty totals against the rows they sum; for each payment, the ledger entry it records (a Spent entry for a
/// proposal, an Earned one for an agreement, same amount, receipt signature checked); and every counterparty half-block
/// held against the own block it links to; and the pending rows the chain rounds read (unchained reservations, unlinked
/// proposals) against what they stand for. Reads in pages, so memory does not grow with the chain.
/// </summary>
public static class ChainAudit
{
    public const int MaxProblems = 20;
    private const int Page = 1000;

    public static ChainAuditReport Verify(CreditLedger ledger, ChainOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(ledger);
        options ??= new ChainOptions();
        var clock = Stopwatch.StartNew();
        var credits = new CreditsOptions();
        var problems = new List<string>();
        long blocks = 0, proposals = 0, agreements = 0, linked = 0, unlinked = 0, paid = 0, earned = 0, made = 0, received = 0;
        void Problem(string what)
        {
            if (problems.Count < MaxProblems)
            {
                problems.Add(what);
            }
        }

        var previousHash = SignedBlock.Genesis;
        ulong expected = 1;
        while (true)
        {
            var page = ledger.OwnBlocks(expected - 1, Page);
            if (page.Count == 0)
            {
                break;
            }
            foreach (var bytes in page)
            {
                blocks++;
                var status = SignedBlock.Decode(bytes, options, out var block);
                if (status != BlockStatus.Valid)
                {
                    Problem($"block {expected}: {status}");
                    expected++;
                    previousHash = [];
                    continue;
                }
                var b = block!;
                if (b.Author != ledger.Owner)
                {
                    Problem($"block {b.Seq}: signed by {b.Author}, not this node");
                }
                // A block recovered from a counterparty after a lost ledger has no receipt here (lost with the old file), and
                // may follow a gap (blocks held by counterparties that did not answer): it was checked when recovered.
                var recovered = ledger.WasRecovered(b.Seq);
                if (b.Seq != expected)
                {
                    if (!(recovered && b.Seq > expected))
                    {
                        Problem($"block {b.Seq}: expected seq {expected}");
                    }
                }
                else if (!b.Block.Previous.AsSpan().SequenceEqual(previousHash))
                {
                    Problem($"block {b.Seq}: previous hash is not the hash of block {b.Seq - 1}");
                }
                if (!recovered)
                {
                    CheckPayment(ledger, b, credits, Problem);
                }
                if (b.Block.Kind == BlockKind.Proposal)
                {
                    proposals++;
                    made += b.Block.AllPayments.Count;
                    paid += b.Block.Amount;
                    if (ledger.AgreementLinking(b.Hash) is { } agreementBytes)
                    {
                        linked++;
                        var s = SignedBlock.Decode(agreementBytes, options, out var agreement);
                        s = s == BlockStatus.Valid ? b.LinkedBy(agreement!) : s;
                        if (s != BlockStatus.Valid)
                        {
                            Problem($"block {b.Seq}: the counterparty's agreement held does not link ({s})");
                        }
                    }
                    else
                    {
                        unlinked++;
                    }
                }
                else
                {
                    agreements++;
                    received += b.Block.AllPayments.Count;
                    earned += b.Block.Amount;
                    if (ledger.ChainBlockByHash(b.Block.LinkHash) is { } proposalBytes)
                    {
                        linked++;
                        var s = SignedBlock.Decode(proposalBytes, options, out var proposal);
                        s = s == BlockStatus.Valid ? proposal!.LinkedBy(b) : s;
                        if (s != BlockStatus.Valid)
                        {
                            Problem($"block {b.Seq}: does not link to the counterparty's proposal held ({s})");
                        }
                    }
                    else
                    {
                        Problem($"block {b.Seq}: the counterparty's proposal it links to is not held");
                    }
                }
                previousHash = b.Hash;
                expected = b.Seq + 1;
            }
        }
        var mismatches = ledger.TotalsMismatches(MaxProblems);
        foreach (var m in mismatches)
        {
            Problem(m.ToString());
        }
        foreach (var m in ledger.PendingMismatches())
        {
            Problem("pending rows: " + m);
        }
        return new ChainAuditReport(blocks, proposals, agreements, linked, unlinked, paid, earned, ledger.Forks().Count, problems, clock.Elapsed)
        {
            TotalsMismatches = mismatches,
            PaymentsMade = made,
            PaymentsReceived = received,
        };
    }

    /// <summary>Each payment a block records must be in the ledger: same receipt, lease, amount and fuel, a valid receipt between the same parties.</summary>
    private static void CheckPayment(CreditLedger ledger, SignedBlock b, CreditsOptions credits, Action<string> problem)
    {
        var kind = b.Block.Kind == BlockKind.Proposal ? LedgerEntryKind.Spent : LedgerEntryKind.Earned;
        KeyCache.TryPeer(b.Block.Payer, out PeerId payer);
        KeyCache.TryPeer(b.Block.Payee, out PeerId payee);
        var payments = b.Block.AllPayments;
        for (var i = 0; i < payments.Count; i++)
        {
            var p = payments[i];
            var which = b.Block.IsBatch ? $"block {b.Seq}, payment {i}" : $"block {b.Seq}";
            if (ledger.ReceiptOf(p.ReceiptId, kind) is not { } stored)
            {
                problem($"{which}: no {kind} entry for its receipt");
                continue;
            }
            var receipt = SignedReceipt.Decode(stored, credits);
            if (!receipt.IsValid)
            {
                problem($"{which}: the stored receipt does not check ({receipt.Status})");
                continue;
            }
            var r = receipt.Value!;
            if (r.Receipt.Amount != p.Amount || r.Requester != payer || r.Provider != payee || r.Receipt.FuelUsed != p.FuelUsed
                || !r.Receipt.LeaseId.AsSpan().SequenceEqual(p.LeaseId))
            {
                problem($"{which}: amount, fuel, lease or parties differ from its receipt");
            }
        }
    }
}
