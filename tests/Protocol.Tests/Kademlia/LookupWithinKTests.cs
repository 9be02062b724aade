using Potluck.Protocol.Identity;
using Potluck.Protocol.Kademlia;

namespace Potluck.Protocol.Tests.Kademlia;

/// <summary>
/// <see cref="LookupOptions.StayWithinK"/> (a node's lookups): a candidate is asked only while fewer than k closer
/// peers have answered or are being asked, so the lookup's requests beyond the k closest are only the hops that led
/// there, and nothing it asked is left to be cancelled when it ends.
/// </summary>
public class LookupWithinKTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    /// <summary>
    /// The case <c>ClosestPeersLookupTests.Stalled_WidensToK_OnlyWhenAllowed</c> pins without the rule (20 asked, then 19
    /// farther peers asked beside the last of them and cancelled): widened, the lookup asks exactly the k closest.
    /// </summary>
    [Test]
    public void Stalled_Widened_AsksOnlyTheKClosest_AndLeavesNothingInFlight()
    {
        var peers = KadTestSupport.RandomPeers(40, 13);
        var target = KadKey.FromKey("z"u8);
        var lookup = new ClosestPeersLookup(target, peers, new LookupOptions { Alpha = 3, K = 20, StayWithinK = true });
        var (asked, inFlight, maxInFlight) = KadTestSupport.RunStalled(lookup, T0); // nobody knows anyone closer: stalled after α answers
        var truth = peers.OrderBy(p => KadKey.FromPeer(p).DistanceTo(target)).Take(20).ToArray();
        Assert.That(lookup.Result, Is.EqualTo(truth));
        Assert.That(asked, Is.EqualTo(truth), "the k closest, closest first, and nobody else");
        Assert.That(inFlight, Is.Empty, "nothing left to cancel");
        Assert.That(maxInFlight, Is.EqualTo(17), "widened: the k closest less the α that answered before the stall");
    }

    /// <summary>
    /// A 50-node DHT (real routing tables, request handlers and wire messages; <see cref="KademliaSimulation"/>): every
    /// lookup still finds exactly the true k closest, sends at most k + 2α requests, and fewer on average than the
    /// same network built and queried without the rule.
    /// </summary>
    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    public void Simulation_50Nodes_FindsTheKClosest_AskingAtMostKPlusTwoAlpha(int seed)
    {
        var within = new KademliaSimulation(50, seed);
        within.Bootstrap();
        var report = within.RunLookups(200);
        var before = new KademliaSimulation(50, seed, stayWithinK: false);
        before.Bootstrap();
        var beforeReport = before.RunLookups(200);
        TestContext.Out.WriteLine($"within k: {report}; without: {beforeReport}");
        Assert.That(report.ExactFraction, Is.EqualTo(1.0), $"seed {seed}");
        Assert.That(report.MaxQueries, Is.LessThanOrEqualTo(20 + 2 * 3), $"seed {seed}");
        Assert.That(report.MeanQueries, Is.LessThan(beforeReport.MeanQueries), $"seed {seed}");
    }

    /// <summary>
    /// Half the candidates never answer (no failure either: only their timeout, on virtual time): the lookup still ends,
    /// with the k closest of those that answer, having asked exactly those and the silent ones closer than the k-th of
    /// them, each once.
    /// </summary>
    [TestCase(1)]
    [TestCase(2)]
    public void HalfTheCandidatesNeverAnswer_StillTerminates_WithTheKClosestThatAnswer(int seed)
    {
        var peers = KadTestSupport.RandomPeers(60, 100 + seed);
        var silent = peers.Where((_, i) => i % 2 == 0).ToHashSet();
        var target = KadKey.FromKey(BitConverter.GetBytes(seed));
        var options = new LookupOptions { Alpha = 3, K = 20, PeerTimeout = TimeSpan.FromSeconds(10), StayWithinK = true };
        var lookup = new ClosestPeersLookup(target, peers, options);
        var answers = new Queue<PeerId>();
        var asked = new List<PeerId>();
        var now = T0;
        for (var i = 0; i < 10_000 && !lookup.IsFinished; i++)
        {
            var step = lookup.Next(now);
            if (step.Kind == LookupStepKind.Query)
            {
                asked.Add(step.Peer);
                if (!silent.Contains(step.Peer))
                {
                    answers.Enqueue(step.Peer);
                }
            }
            else if (step.Kind == LookupStepKind.Waiting)
            {
                if (answers.Count > 0)
                {
                    lookup.OnSuccess(answers.Dequeue(), []);
                }
                else
                {
                    now += options.PeerTimeout; // only silent peers in flight: the clock runs to their deadline
                }
            }
        }
        Assert.That(lookup.IsFinished, Is.True, $"seed {seed}: still running at {now - T0} virtual");
        var byDistance = peers.OrderBy(p => KadKey.FromPeer(p).DistanceTo(target)).ToList();
        var truth = byDistance.Where(p => !silent.Contains(p)).Take(20).ToArray();
        Assert.That(lookup.Result, Is.EqualTo(truth), $"seed {seed}");
        var silentCloser = byDistance.TakeWhile(p => p != truth[^1]).Where(silent.Contains).ToArray();
        Assert.That(asked, Is.EquivalentTo(truth.Concat(silentCloser)), $"seed {seed}: the k closest that answer and the silent ones closer");
        Assert.That(now - T0, Is.LessThanOrEqualTo(TimeSpan.FromSeconds(10) * silentCloser.Length), $"seed {seed}");
    }
}
