using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Tests.Host;

/// <summary>Per-peer budgets: a rate and a burst per protocol, a score that misbehaviour lowers, and a ban at the threshold.</summary>
[Category("Adversarial")]
public class PeerBudgetsTests
{
    private static readonly PeerId Flooder = PrivateKey.FromRandom(new Random(1)).PeerId;
    private static readonly PeerId Honest = PrivateKey.FromRandom(new Random(2)).PeerId;

    [Test]
    public void ABurstIsServed_ThenTheRate_AndOnePeersFloodDoesNotSpendAnothersBudget()
    {
        var clock = new VirtualClock();
        var budgets = new PeerBudgets(new PeerBudgetOptions { AdFetches = new RateBudget(2, 5) }, clock);

        var served = Enumerable.Range(0, 100).Count(_ => budgets.TryTake(Flooder, PeerBudgets.AdFetches));
        Assert.That(served, Is.EqualTo(5), "the burst");
        Assert.That(budgets.TryTake(Honest, PeerBudgets.AdFetches), Is.True, "another peer has its own bucket");

        clock.Advance(TimeSpan.FromSeconds(1));
        served = Enumerable.Range(0, 100).Count(_ => budgets.TryTake(Flooder, PeerBudgets.AdFetches));
        Assert.That(served, Is.EqualTo(2), "then two a second");
        Assert.That(budgets.Refused[PeerBudgets.AdFetches], Is.EqualTo(95 + 98));
    }

    [Test]
    public void ARefusalWithoutPenalty_IsCountedAndRefused_ButCostsNoScore_WhileAPenalisedOneBans()
    {
        var clock = new VirtualClock();
        var budgets = new PeerBudgets(new PeerBudgetOptions { ChainRecords = new RateBudget(1, 3) }, clock);
        var banned = new List<PeerId>();
        budgets.Banned += banned.Add;

        var relayed = Enumerable.Range(0, 200).Count(_ => budgets.TryTake(Honest, PeerBudgets.ChainRecords, penalise: false));
        Assert.That(relayed, Is.EqualTo(3), "the budget still bounds what a relay gets served");
        Assert.That(budgets.ScoreOf(Honest), Is.Zero, "a relay of others' messages loses no score for their volume");
        Assert.That(budgets.Refused[PeerBudgets.ChainRecords], Is.EqualTo(197), "refusals counted all the same");

        var own = Enumerable.Range(0, 200).Count(_ => budgets.TryTake(Flooder, PeerBudgets.ChainRecords));
        Assert.That(own, Is.EqualTo(3));
        Assert.That(banned.Distinct(), Is.EqualTo(new[] { Flooder }), "a peer flooding its own messages is banned at -50");
        Assert.That(budgets.ScoreOf(Honest), Is.Zero);
    }

    [Test]
    public void Misbehaviour_LowersTheScore_UntilThePeerIsBanned_AndPenaltiesDecay()
    {
        var clock = new VirtualClock();
        var budgets = new PeerBudgets(new PeerBudgetOptions(), clock);
        var banned = new List<PeerId>();
        budgets.Banned += banned.Add;

        budgets.Penalise(Flooder, Misbehaviour.Malformed);
        budgets.Penalise(Flooder, Misbehaviour.RefusedProof);
        Assert.That(budgets.ScoreOf(Flooder), Is.EqualTo(-35));
        clock.Advance(TimeSpan.FromMinutes(5));
        Assert.That(budgets.ScoreOf(Flooder), Is.EqualTo(-17.5).Within(1e-9), "a penalty halves in five minutes");
        Assert.That(banned, Is.Empty);

        budgets.Penalise(Flooder, Misbehaviour.RefusedProof);
        Assert.That(banned, Is.Empty, "-42.5 is above the threshold of -50");
        budgets.Penalise(Flooder, Misbehaviour.Malformed);
        Assert.That(banned, Is.EqualTo(new[] { Flooder }));
        Assert.That(budgets.ScoreOf(Honest), Is.Zero);
    }

    [Test]
    public void TrackedPeers_AreBounded_AndAFloodOfFreshIdentitiesDoesNotWipeADebt()
    {
        var clock = new VirtualClock();
        var budgets = new PeerBudgets(new PeerBudgetOptions { MaxTrackedPeers = 100 }, clock);
        budgets.Penalise(Flooder, Misbehaviour.RefusedProof);
        var random = new Random(5);

        for (var i = 0; i < 1000; i++)
        {
            budgets.TryTake(PrivateKey.FromRandom(random).PeerId, PeerBudgets.DhtRequests);
        }

        Assert.That(budgets.TrackedPeers, Is.LessThanOrEqualTo(100));
        Assert.That(budgets.ScoreOf(Flooder), Is.EqualTo(-25), "strangers with no debt are forgotten first");
    }

    [Test]
    public void APeerSendingMalformedMessages_IsDisconnectedAndRefusedForTheBan_OthersStillServed() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d);
        var server = await hosts.StartAsync();
        server.Host.SetStreamHandler("/test/strict/1", (stream, token) =>
            throw new ProtocolViolationException("/test/strict/1", "malformed", ViolationCode.Malformed));
        var attacker = await hosts.StartAsync();
        var honest = await hosts.StartAsync();
        await attacker.Host.ConnectAsync(server.Address, ct);
        await honest.Host.ConnectAsync(server.Address, ct);

        // Five malformed messages at 10 each reach the threshold of 50.
        for (var i = 0; i < 5; i++)
        {
            try
            {
                var s = await attacker.Host.NewStreamAsync(server.Host.PeerId, ["/test/strict/1"], ct);
                await s.Output.WriteAsync(new byte[] { 0xFF }, ct);
                await d.IdleAsync();
                await s.DisposeAsync();
            }
            catch (Exception e) when (Failures.Classify(e).Kind is FailureKind.PeerGone)
            {
            }
            await d.IdleAsync();
        }

        Assert.That(server.Host.Budgets.Bans, Is.EqualTo(1));
        Assert.That(server.Host.Connections.Select(c => c.RemotePeer), Does.Not.Contain(attacker.Host.PeerId), "disconnected");
        await attacker.Host.ConnectAsync(server.Address, ct);
        await d.IdleAsync();
        Assert.That(server.Host.Connections.Select(c => c.RemotePeer), Does.Not.Contain(attacker.Host.PeerId), "refused while banned");
        Assert.That(server.Host.Resources.RefusedIn(ResourceManager.Scopes.Banned), Is.GreaterThanOrEqualTo(1));
        Assert.That(await honest.Ping.PingAsync(server.Host.PeerId, 1, ct), Has.Count.EqualTo(1));
    });

    [Test]
    public void StreamsOfABudgetedProtocol_PastTheBurst_AreResetBeforeTheHandlerRuns() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d);
        var server = await hosts.StartAsync(o => o with { Budgets = o.Budgets with { AdFetches = new RateBudget(1, 3) } });
        var handled = 0;
        server.Host.SetStreamHandler("/test/ad/1", async (stream, token) =>
        {
            handled++;
            await stream.Output.WriteAsync(new byte[] { 1 }, token);
            await stream.Output.CompleteAsync();
        });
        server.Host.BudgetInboundStreams("/test/ad/1", PeerBudgets.AdFetches);
        var client = await hosts.StartAsync();
        await client.Host.ConnectAsync(server.Address, ct);

        for (var i = 0; i < 10; i++)
        {
            try
            {
                await using var s = await client.Host.NewStreamAsync(server.Host.PeerId, ["/test/ad/1"], ct);
                await s.Input.ReadAsync(ct);
            }
            catch (StreamResetException)
            {
            }
        }
        await d.IdleAsync();

        Assert.That(handled, Is.EqualTo(3));
        Assert.That(server.Host.Budgets.Refused[PeerBudgets.AdFetches], Is.EqualTo(7));
        Assert.That(server.Host.Budgets.ScoreOf(client.Host.PeerId), Is.EqualTo(-7).Within(0.01), "each refusal costs a little");
        Assert.That(server.Host.Connections, Has.Count.EqualTo(1), "over budget is not a reason to disconnect");
    });
}
