using System.Text.Json.Nodes;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;

namespace Potluck.Node.Control;

/// <summary>The control method behind <c>potluck ledger --verify</c>: the audit of a running node's own chain (<see cref="ChainAudit"/>).</summary>
public static class ChainControl
{
    public const string VerifyMethod = "ledger.verify";

    public static void Register(ControlServer server, PotluckNode node) =>
        server.Register(VerifyMethod, (_, _) => ValueTask.FromResult<JsonNode?>(Verify(node)));

    public static JsonObject Verify(PotluckNode node)
    {
        var ledger = node.Compute?.Ledger ?? throw new ControlException(ControlErrorCode.Unavailable, "compute is off on this node: it has no ledger");
        return AuditJson(node.PeerId.ToString(), ledger, ChainAudit.Verify(ledger));
    }

    public static JsonObject AuditJson(string peerId, CreditLedger ledger, ChainAuditReport report)
    {
        ArgumentNullException.ThrowIfNull(ledger);
        ArgumentNullException.ThrowIfNull(report);
        var problems = new JsonArray();
        foreach (var p in report.Problems)
        {
            problems.Add(p);
        }
        var forks = new JsonArray();
        foreach (var (author, _) in ledger.Forks())
        {
            forks.Add(author.ToString());
        }
        var mismatches = new JsonArray();
        foreach (var m in report.TotalsMismatches)
        {
            mismatches.Add(new JsonObject
            {
                ["counterparty"] = m.Counterparty.ToString(), ["earned"] = m.Earned, ["spent"] = m.Spent, ["unpaid"] = m.Unpaid, ["violations"] = m.Violations,
            });
        }
        return new JsonObject
        {
            ["peer_id"] = peerId,
            ["sound"] = report.IsSound,
            ["blocks"] = report.Blocks,
            ["proposals"] = report.Proposals,
            ["agreements"] = report.Agreements,
            ["payments_made"] = report.PaymentsMade,
            ["payments_received"] = report.PaymentsReceived,
            ["linked_blocks"] = report.LinkedBlocks,
            ["unlinked"] = report.Unlinked,
            ["paid"] = report.Paid,
            ["earned"] = report.Earned,
            ["forkers"] = forks,
            ["totals_mismatches"] = mismatches,
            ["problems"] = problems,
            ["elapsed_ms"] = Math.Round(report.Elapsed.TotalMilliseconds, 1),
        };
    }
}
