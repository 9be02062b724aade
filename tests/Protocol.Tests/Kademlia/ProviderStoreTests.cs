using Potluck.Protocol.Identity;
using Potluck.Protocol.Kademlia;

namespace Potluck.Protocol.Tests.Kademlia;

/// <summary>
/// The provider store keeps a key's providers as one exactly sized array (16 bytes a provider), not a dictionary per key:
/// the same answers, in the order the providers first came, and nothing kept for a key whose providers all expired.
/// </summary>
public class ProviderStoreTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    [Test]
    public void AKeysProviders_AreHeldInExactlyAsManySlots_AndAnsweredInTheOrderTheyCame()
    {
        var store = new ProviderStore(maxKeys: 10, maxProvidersPerKey: 20);
        var peers = KadTestSupport.RandomPeers(18, seed: 11);
        foreach (var p in peers)
        {
            Assert.That(store.Add([7], p, T0.AddHours(1)), Is.True);
        }
        Assert.That(store.Add([7], peers[3], T0.AddHours(2)), Is.True, "a renewal");

        Assert.That(store.ProviderSlots([7]), Is.EqualTo(18), "18 providers, 18 slots (a dictionary per key had 37)");
        Assert.That(store.Get([7], T0), Is.EqualTo(peers), "first-come order; a renewal keeps its place");
        Assert.That(store.Get([8], T0), Is.Empty);
    }

    [Test]
    public void RemoveExpired_ShrinksAKeyToItsLiveProviders_AndDropsAKeyWithNoneLeft()
    {
        var store = new ProviderStore(maxKeys: 10, maxProvidersPerKey: 20);
        var peers = KadTestSupport.RandomPeers(6, seed: 12);
        for (var i = 0; i < peers.Count; i++)
        {
            store.Add([1], peers[i], T0.AddMinutes(i % 2 == 0 ? 10 : 30)); // three lapse at 10 min, three at 30
        }
        store.Add([2], peers[0], T0.AddMinutes(10));

        Assert.That(store.Get([1], T0.AddMinutes(10)), Is.EqualTo(new[] { peers[1], peers[3], peers[5] }), "expired ones are never answered");
        Assert.That(store.RemoveExpired(T0.AddMinutes(10)), Is.EqualTo(4));
        Assert.That(store.ProviderSlots([1]), Is.EqualTo(3), "a lapsed provider leaves no slot behind");
        Assert.That(store.KeyCount, Is.EqualTo(1), "a key whose providers all lapsed is gone");
        Assert.That(store.ProviderSlots([2]), Is.Zero);

        Assert.That(store.Add([1], peers[0], T0.AddMinutes(40)), Is.True);
        Assert.That(store.Get([1], T0.AddMinutes(20)), Is.EqualTo(new[] { peers[1], peers[3], peers[5], peers[0] }));
        Assert.That(store.RemoveExpired(T0.AddMinutes(35)), Is.EqualTo(3));
        Assert.That(store.Get([1], T0.AddMinutes(35)), Is.EqualTo(new[] { peers[0] }));
    }

    [Test]
    [Category("Adversarial")]
    public void AFloodOfMadeUpProviders_StaysWithinBothCaps_AndKeepsTheFirstHonestOnes()
    {
        var store = new ProviderStore(maxKeys: 4, maxProvidersPerKey: 20);
        var honest = KadTestSupport.RandomPeers(5, seed: 13);
        foreach (var p in honest)
        {
            store.Add([1], p, T0.AddHours(1));
        }
        var random = new Random(14);
        var accepted = 0;
        for (var i = 0; i < 5_000; i++)
        {
            byte[] key = [(byte)(i % 50)];
            accepted += store.Add(key, KadTestSupport.RandomPeer(random), T0.AddHours(48)) ? 1 : 0;
        }

        Assert.That(store.KeyCount, Is.EqualTo(4));
        Assert.That(accepted, Is.EqualTo(15 + 3 * 20), "key 1 had room for 15 more, three new keys 20 each");
        for (byte k = 0; k < 50; k++)
        {
            Assert.That(store.ProviderSlots([k]), Is.LessThanOrEqualTo(20));
        }
        Assert.That(store.Get([1], T0).Take(5), Is.EqualTo(honest), "the flood did not displace who came first");
    }
}
