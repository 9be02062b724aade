using Potluck.Protocol.Identity;

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
}
