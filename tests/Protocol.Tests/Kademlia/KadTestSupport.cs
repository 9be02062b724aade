using Potluck.Protocol.Identity;
using Potluck.Protocol.Kademlia;

namespace Potluck.Protocol.Tests.Kademlia;

internal static class KadTestSupport
{
    /// <summary>A SHA-256-multihash peer id with random digest (cheap; no key behind it).</summary>
    public static PeerId RandomPeer(Random random)
    {
        var bytes = new byte[34];
        bytes[0] = 0x12;
        bytes[1] = 0x20;
        random.NextBytes(bytes.AsSpan(2));
        Assert.That(PeerId.TryFromBytes(bytes, out var peer), Is.True);
        return peer;
    }

    public static List<PeerId> RandomPeers(int count, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => RandomPeer(random)).ToList();
    }

    /// <summary>
    /// Drives <paramref name="lookup"/> to its end with answers that bring nobody closer (so it stalls after α answers),
    /// answering the oldest request in flight whenever it waits: the peers asked in order, those still in flight at the
    /// end, and the most in flight at once.
    /// </summary>
    public static (List<PeerId> Asked, Queue<PeerId> InFlight, int MaxInFlight) RunStalled(ClosestPeersLookup lookup, DateTimeOffset now)
    {
        var inFlight = new Queue<PeerId>();
        var asked = new List<PeerId>();
        var maxInFlight = 0;
        LookupStep step;
        while ((step = lookup.Next(now)).Kind != LookupStepKind.Finished)
        {
            if (step.Kind == LookupStepKind.Query)
            {
                inFlight.Enqueue(step.Peer);
                asked.Add(step.Peer);
                continue;
            }
            maxInFlight = Math.Max(maxInFlight, inFlight.Count);
            lookup.OnSuccess(inFlight.Dequeue(), []);
        }
        return (asked, inFlight, maxInFlight);
    }
}
