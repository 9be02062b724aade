using Potluck.Node.Hosting;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>
/// A node that lost ledger.db but kept its identity: without recovery its next half-block is seq 1 again, which its
/// counterparties (rightly) take for a fork; with recovery it rebuilds its chain from them first and keeps paying.
/// </summary>
[Category("Adversarial")]
public class ChainRecoveryTests
{
    private static Func<ComputeOptions, ComputeOptions> Recovery(ChainRecoveryMode mode) => c => c with
    {
        Accounting = c.Accounting with { Recovery = c.Accounting.Recovery with { Mode = mode, Timeout = TimeSpan.FromSeconds(10) } },
    };

    private static async Task PayAsync(TrustCluster.Member requester, string seed, CancellationToken ct)
    {
        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask(seed, 100), ct);
        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);
        await requester.Node.Chain!.WhenIdleAsync(ct);
    }

    /// <summary>Two paid tasks, then the requester's ledger file is deleted and the requester restarted with the same identity.</summary>
    private static async Task<(TrustCluster.Member Provider, TrustCluster.Member Bystander, TrustCluster.Member Requester)> LoseLedgerAsync(
        TrustCluster cluster, ChainRecoveryMode mode, CancellationToken ct)
    {
        var provider = await cluster.AddAsync("provider", provide: true);
        var bystander = await cluster.AddAsync("bystander", provide: false);
        var requester = await cluster.AddAsync("requester", provide: false, configure: Recovery(mode));
        await requester.Node.Chain!.WhenRecoveredAsync(ct); // a first start: nothing to recover
        await requester.Client.WaitForProvidersAsync(1, ct);
        await PayAsync(requester, "before 1", ct);
        await PayAsync(requester, "before 2", ct);
        Assert.That(requester.Ledger.ChainHead().Seq, Is.EqualTo(2UL));
        Assert.That(provider.Node.Chain!.Agreed, Is.EqualTo(2));

        await cluster.StopAsync(requester);
        foreach (var suffix in new[] { "", "-wal", "-shm" })
        {
            File.Delete(Path.Combine(requester.DataDir, CreditLedger.FileName + suffix));
        }
        requester = await cluster.RestartAsync(requester);
        Assert.That(requester.Ledger.Created, Is.True);
        return (provider, bystander, requester);
    }

    [Test]
    public void RecoveryOptions_OutOfRange_AreReportedWithTheirKeys()
    {
        var problems = PotluckOptionsValidator.Validate(new PotluckOptions
        {
            Compute = new ComputeOptions
            {
                Accounting = new AccountingOptions
                {
                    Recovery = new ChainRecoveryOptions { Timeout = TimeSpan.Zero, MaxBlocksPerAnswer = 0, MaxPagesPerPeer = 20_000, MaxQueriesPerPeerPerMinute = 0 },
                },
            },
        });
        Assert.That(problems, Has.Some.StartsWith("'compute:accounting:recovery:timeout' is 00:00:00"));
        Assert.That(problems, Has.Some.StartsWith("'compute:accounting:recovery:maxBlocksPerAnswer' is 0"));
        Assert.That(problems, Has.Some.StartsWith("'compute:accounting:recovery:maxPagesPerPeer' is 20000"));
        Assert.That(problems, Has.Some.StartsWith("'compute:accounting:recovery:maxQueriesPerPeerPerMinute' is 0"));
        Assert.That(PotluckOptionsValidator.Validate(new PotluckOptions()).Where(p => p.Contains("recovery", StringComparison.Ordinal)), Is.Empty, "the defaults pass");
    }

    [Test]
    public void LostLedger_WithoutRecovery_RestartsAtSeq1_AndIsTakenForAFork() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 130);
        var (provider, _, requester) = await LoseLedgerAsync(cluster, ChainRecoveryMode.Never, ct);
        Assert.That(requester.Node.Chain!.Recovering, Is.False);
        await requester.Client.WaitForProvidersAsync(1, ct);
        await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("after", 100), ct);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);
        await requester.Node.Chain.WhenIdleAsync(ct);

        Assert.That(requester.Ledger.OwnBlocks(0, 10).Count, Is.EqualTo(1), "its new chain starts at seq 1 again");
        Assert.That(provider.Node.Chain!.IsForker(requester.PeerId), Is.True, "the provider holds two seq-1 blocks of the requester");
    });

    [Test]
    public void LostLedger_IdentityKept_RecoversItsChain_KeepsPaying_AndNoHonestNodeFlagsAFork() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 131);
        var (provider, bystander, requester) = await LoseLedgerAsync(cluster, ChainRecoveryMode.Always, ct);
        var chain = requester.Node.Chain!;
        Assert.That(chain.Recovering, Is.True, "a new ledger with a kept identity: no block is signed before recovery");
        await chain.WhenRecoveredAsync(ct);

        Assert.That(chain.RecoveredBlocks, Is.EqualTo(2));
        Assert.That(chain.RejectedAnswers, Is.Zero);
        Assert.That(provider.Node.Chain!.QueriesServed, Is.GreaterThanOrEqualTo(1));
        Assert.That(requester.Ledger.ChainHead().Seq, Is.EqualTo(2UL));

        await requester.Client.WaitForProvidersAsync(1, ct);
        await PayAsync(requester, "after 1", ct);
        await PayAsync(requester, "after 2", ct);
        await Task.Delay(TimeSpan.FromSeconds(1), cluster.Time, ct);
        await cluster.Hub.WhenIdleAsync(ct);

        Assert.That(requester.Ledger.ChainHead().Seq, Is.EqualTo(4UL), "the new payments follow the recovered seq 2");
        Assert.That(provider.Node.Chain!.Agreed, Is.EqualTo(4), "the provider countersigned every payment, before and after");
        foreach (var honest in new[] { provider, bystander })
        {
            Assert.That(honest.Node.Chain!.IsForker(requester.PeerId), Is.False, $"{honest.Name} flags no fork");
            Assert.That(honest.Ledger.Forks(), Is.Empty);
        }
        var audit = ChainAudit.Verify(requester.Ledger);
        Assert.That(audit.Problems, Is.Empty);
        Assert.That((audit.Blocks, audit.LinkedBlocks, audit.Unlinked), Is.EqualTo((4L, 4L, 0L)));
    });
}
