using Potluck.Protocol.Identity;
using Potluck.Protocol.Kademlia;

namespace Potluck.Protocol.Tests.Kademlia;

public class ClosestPeersLookupTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    /// <summary>
    /// A synthetic network, no sockets: every node's routing table holds a random 10% of the others plus its 20
    /// true neighbours; a lookup from a node that knows only 3 random peers must converge on the true k closest.
    /// </summary>
    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    public void Lookup_OnSyntheticNetwork_FindsTheTrueKClosest(int seed)
    {
        var random = new Random(seed);
        var (peers, tables) = SyntheticNetwork(500, seed, random);
        for (var round = 0; round < 10; round++)
        {
            var target = KadKey.FromKey(BitConverter.GetBytes(random.NextInt64()));
            var origin = peers[random.Next(peers.Count)];
            var seeds = Enumerable.Range(0, 3).Select(_ => peers[random.Next(peers.Count)]).Where(p => p != origin);
            var lookup = new ClosestPeersLookup(target, seeds, new LookupOptions(), origin);
            var inFlight = new Queue<PeerId>();
            var maxInFlight = 0;
            while (true)
            {
                var step = lookup.Next(T0);
                if (step.Kind == LookupStepKind.Query)
                {
                    inFlight.Enqueue(step.Peer);
                    maxInFlight = Math.Max(maxInFlight, inFlight.Count);
                    continue;
                }
                if (step.Kind == LookupStepKind.Finished)
                {
                    break;
                }
                var peer = inFlight.Dequeue();
                lookup.OnSuccess(peer, tables[peer].Closest(target, 20));
            }
            var truth = peers.Where(p => p != origin).OrderBy(p => KadKey.FromPeer(p).DistanceTo(target)).Take(20);
            Assert.That(lookup.Result, Is.EqualTo(truth), $"seed {seed} round {round}");
            Assert.That(lookup.Hops, Is.GreaterThanOrEqualTo(1));
            Assert.That(maxInFlight, Is.LessThanOrEqualTo(20), "in flight never exceeds max(k, α)");
        }
    }

    [Test]
    public void Next_HandsOutAtMostAlphaQueriesWhileProgressing()
    {
        var peers = KadTestSupport.RandomPeers(10, 11);
        var lookup = new ClosestPeersLookup(KadKey.FromKey("x"u8), peers, new LookupOptions { Alpha = 3, K = 5 });
        var queries = new List<PeerId>();
        LookupStep step;
        while ((step = lookup.Next(T0)).Kind == LookupStepKind.Query)
        {
            queries.Add(step.Peer);
        }
        Assert.That(queries, Has.Count.EqualTo(3));
        Assert.That(step.Kind, Is.EqualTo(LookupStepKind.Waiting));
        var target = KadKey.FromKey("x"u8);
        Assert.That(queries, Is.EqualTo(peers.OrderBy(p => KadKey.FromPeer(p).DistanceTo(target)).Take(3)), "closest first");
    }

    /// <summary>
    /// A stalled lookup (α answers in a row bring nothing closer) widens to k in flight; with
    /// <see cref="ClosestPeersLookup.WidenWhenStalled"/> off (connections scarce) it keeps to α and still ends with the
    /// same k closest, having asked the same peers.
    /// </summary>
    [TestCase(true, 20)]
    [TestCase(false, 3)]
    public void Stalled_WidensToK_OnlyWhenAllowed(bool widen, int expectedInFlight)
    {
        var peers = KadTestSupport.RandomPeers(40, 13);
        var target = KadKey.FromKey("z"u8);
        var lookup = new ClosestPeersLookup(target, peers, new LookupOptions { Alpha = 3, K = 20 }) { WidenWhenStalled = widen };
        var (asked, inFlight, maxInFlight) = KadTestSupport.RunStalled(lookup, T0); // nobody knows anyone closer: stalled after α answers
        Assert.That(maxInFlight, Is.EqualTo(expectedInFlight));
        var truth = peers.OrderBy(p => KadKey.FromPeer(p).DistanceTo(target)).Take(20).ToArray();
        Assert.That(lookup.Result, Is.EqualTo(truth));
        Assert.That(asked.Take(20), Is.EqualTo(truth), "closest first either way");
        // Widened, the 19 farther peers asked beside the last of the k closest are still in flight (their dials wasted,
        // the shell cancels them); kept to α, at most α - 1.
        Assert.That(inFlight.Count, widen ? Is.EqualTo(19) : Is.LessThanOrEqualTo(2), "left in flight (to be cancelled) at the end");
        Assert.That(asked, Has.Count.EqualTo(20 + inFlight.Count));
    }

    [TestCase(1)]
    [TestCase(2)]
    public void Lookup_NotWidening_StillFindsTheTrueKClosest_WithAtMostAlphaInFlight(int seed)
    {
        var random = new Random(seed);
        var (peers, tables) = SyntheticNetwork(300, seed, random);
        for (var round = 0; round < 5; round++)
        {
            var target = KadKey.FromKey(BitConverter.GetBytes(random.NextInt64()));
            var origin = peers[random.Next(peers.Count)];
            var seeds = Enumerable.Range(0, 3).Select(_ => peers[random.Next(peers.Count)]).Where(p => p != origin);
            var lookup = new ClosestPeersLookup(target, seeds, new LookupOptions(), origin) { WidenWhenStalled = false };
            var inFlight = new Queue<PeerId>();
            var maxInFlight = 0;
            LookupStep step;
            while ((step = lookup.Next(T0)).Kind != LookupStepKind.Finished)
            {
                if (step.Kind == LookupStepKind.Query)
                {
                    inFlight.Enqueue(step.Peer);
                    maxInFlight = Math.Max(maxInFlight, inFlight.Count);
                    continue;
                }
                var peer = inFlight.Dequeue();
                lookup.OnSuccess(peer, tables[peer].Closest(target, 20));
            }
            var truth = peers.Where(p => p != origin).OrderBy(p => KadKey.FromPeer(p).DistanceTo(target)).Take(20);
            Assert.That(lookup.Result, Is.EqualTo(truth), $"seed {seed} round {round}");
            Assert.That(maxInFlight, Is.LessThanOrEqualTo(3));
        }
    }

    [Test]
    public void Next_AfterPeerTimeout_MarksItUnresponsiveAndQueriesTheNext()
    {
        var peers = KadTestSupport.RandomPeers(4, 12);
        var options = new LookupOptions { Alpha = 1, K = 2, PeerTimeout = TimeSpan.FromSeconds(10) };
        var lookup = new ClosestPeersLookup(KadKey.FromKey("y"u8), peers, options);
        var first = lookup.Next(T0);
        Assert.That(first.Kind, Is.EqualTo(LookupStepKind.Query));
        Assert.That(lookup.Next(T0.AddSeconds(9)).Kind, Is.EqualTo(LookupStepKind.Waiting));
        var second = lookup.Next(T0.AddSeconds(10));
        Assert.That(second.Kind, Is.EqualTo(LookupStepKind.Query));
        Assert.That(second.Peer, Is.Not.EqualTo(first.Peer));

        // A late answer from the unresponsive peer still counts.
        lookup.OnSuccess(first.Peer, []);
        lookup.OnSuccess(second.Peer, []);
        Assert.That(lookup.Next(T0.AddSeconds(11)).Kind, Is.EqualTo(LookupStepKind.Finished));
        Assert.That(lookup.Result, Is.EquivalentTo(new[] { first.Peer, second.Peer }));
    }

    [Test]
    public void Failures_AreSkipped_AndLookupEndsWhenNobodyIsLeft()
    {
        var peers = KadTestSupport.RandomPeers(3, 13);
        var lookup = new ClosestPeersLookup(KadKey.FromKey("z"u8), peers, new LookupOptions { Alpha = 3 });
        var asked = new List<PeerId>();
        LookupStep step;
        while ((step = lookup.Next(T0)).Kind == LookupStepKind.Query)
        {
            asked.Add(step.Peer);
        }
        foreach (var p in asked)
        {
            lookup.OnFailure(p);
        }
        Assert.That(lookup.Next(T0).Kind, Is.EqualTo(LookupStepKind.Finished));
        Assert.That(lookup.Result, Is.Empty);
        Assert.That(lookup.Hops, Is.Zero);
    }

    [Test]
    public void Answers_FromPeersNeverAsked_AreIgnored_AndSelfIsNeverQueried()
    {
        var peers = KadTestSupport.RandomPeers(3, 14);
        var self = peers[0];
        var lookup = new ClosestPeersLookup(KadKey.FromKey("w"u8), [self, peers[1]], new LookupOptions(), self);
        lookup.OnSuccess(peers[2], [peers[0]]);
        var step = lookup.Next(T0);
        Assert.That(step.Peer, Is.EqualTo(peers[1]));
        Assert.That(lookup.Next(T0).Kind, Is.EqualTo(LookupStepKind.Waiting));
    }

    [Test]
    public void Candidates_AreBounded_KeepingTheClosest()
    {
        var peers = KadTestSupport.RandomPeers(1001, 15);
        var target = KadKey.FromKey("v"u8);
        var lookup = new ClosestPeersLookup(target, [peers[0]], new LookupOptions { K = 5, Alpha = 1, MaxCandidates = 50 });
        var first = lookup.Next(T0).Peer;
        lookup.OnSuccess(first, peers.Skip(1));
        var asked = new List<PeerId>();
        LookupStep step;
        while ((step = lookup.Next(T0)).Kind == LookupStepKind.Query)
        {
            asked.Add(step.Peer);
            lookup.OnSuccess(step.Peer, []);
        }
        var truth = peers.OrderBy(p => KadKey.FromPeer(p).DistanceTo(target)).Take(5);
        Assert.That(lookup.Result, Is.EqualTo(truth));
    }

    [Test]
    public void Simulation_120Nodes_FindsTheTrue20ClosestAlmostAlways()
    {
        var sim = new KademliaSimulation(120, seed: 42);
        sim.Bootstrap();
        var report = sim.RunLookups(100);
        TestContext.Out.WriteLine(report);
        Assert.That(report.ExactFraction, Is.GreaterThanOrEqualTo(0.95), "seed 42");
        Assert.That(report.MeanRecall, Is.GreaterThanOrEqualTo(0.99));
        Assert.That(report.MedianHops, Is.InRange(1, 6));
    }

    [Test]
    public void Simulation_WithOfflineNodes_StillFindsTheOnlineClosest()
    {
        var sim = new KademliaSimulation(120, seed: 43, offlineFraction: 0.2);
        sim.Bootstrap();
        var report = sim.RunLookups(50);
        TestContext.Out.WriteLine(report);
        // Dead entries stay in remote tables (nobody probes them here), so some live neighbours are never named.
        Assert.That(report.MeanRecall, Is.GreaterThanOrEqualTo(0.85), "seed 43");
    }

    /// <summary>The benchmark-sized run; prints the figures. Run explicitly (takes about a minute).</summary>
    [Test]
    [Explicit("benchmark-sized simulation")]
    public void Simulation_1000Nodes_Report()
    {
        var started = System.Diagnostics.Stopwatch.StartNew();
        var sim = new KademliaSimulation(1000, seed: 1000);
        sim.Bootstrap();
        var report = sim.RunLookups(500);
        TestContext.Out.WriteLine($"{report} messages={sim.Messages} elapsed={started.Elapsed}");
        Assert.That(report.ExactFraction, Is.GreaterThanOrEqualTo(0.9));
    }

    /// <summary>
    /// A synthetic network, no sockets: <paramref name="count"/> peers, each routing table holding a random 10% of the
    /// others plus its 20 true neighbours.
    /// </summary>
    private static (List<PeerId> Peers, Dictionary<PeerId, RoutingTable> Tables) SyntheticNetwork(int count, int seed, Random random)
    {
        var peers = KadTestSupport.RandomPeers(count, seed);
        var tables = peers.ToDictionary(p => p, p => new RoutingTable(p));
        foreach (var (self, table) in tables)
        {
            foreach (var p in peers.Where(_ => random.NextDouble() < 0.1))
            {
                table.AddOrRefresh(p);
            }
            foreach (var p in peers.Where(p => p != self).OrderBy(p => KadKey.FromPeer(p).DistanceTo(KadKey.FromPeer(self))).Take(20))
            {
                table.AddOrRefresh(p);
            }
        }
        return (peers, tables);
    }
}
