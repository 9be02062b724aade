using Potluck.Node.Cli;
using Potluck.Node.Hosting;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Host;

namespace Potluck.Node.Tests.Cli;

/// <summary>The bounds on per-peer state: documented defaults, range-checked at start with a message naming the key.</summary>
public class PerPeerStateOptionsTests
{
    private static IReadOnlyList<string> Problems(Func<PotluckOptions, PotluckOptions> change) =>
        PotluckOptionsValidator.Validate(change(new PotluckOptions()));

    [Test]
    public void Defaults_AreValid_AsDocumented()
    {
        var o = new PotluckOptions();
        Assert.That((o.Host.PeerStore.MaxPeers, o.Host.PeerStore.RecentlyConnectedAddressTtl, o.Host.PeerStore.DiscoveredAddressTtl),
            Is.EqualTo((10_000, TimeSpan.FromMinutes(10), TimeSpan.FromMinutes(10))));
        Assert.That((o.Host.PeerStore.LookupAddressTtl, o.Host.PeerStore.PeerExchangeAddressTtl), Is.EqualTo((TimeSpan.FromMinutes(2), TimeSpan.FromMinutes(2))),
            "go-libp2p's TempAddrTTL for what a DHT lookup or a PX record gave");
        Assert.That((o.Gossip.Score.RetainScore, o.Gossip.Score.MaxRetainedPeers), Is.EqualTo((TimeSpan.FromHours(1), 4096)));
        Assert.That(o.Host.Budgets.MaxTrackedPeers, Is.EqualTo(10_000));
        Assert.That(Problems(x => x), Is.Empty);
    }

    [Test]
    public void OutOfRange_IsRefusedWithItsKey()
    {
        Assert.That(Problems(o => o with { Host = o.Host with { PeerStore = new PeerStoreOptions { MaxPeers = 0 } } }),
            Has.Some.StartsWith("'host:peerStore:maxPeers' is 0; it must be at least 1"));
        Assert.That(Problems(o => o with { Host = o.Host with { PeerStore = new PeerStoreOptions { RecentlyConnectedAddressTtl = TimeSpan.FromSeconds(-1) } } }),
            Has.Some.StartsWith("'host:peerStore:recentlyConnectedAddressTtl' is -00:00:01"));
        Assert.That(Problems(o => o with { Host = o.Host with { PeerStore = new PeerStoreOptions { DiscoveredAddressTtl = TimeSpan.FromSeconds(-1) } } }),
            Has.Some.StartsWith("'host:peerStore:discoveredAddressTtl' is -00:00:01"));
        Assert.That(Problems(o => o with { Host = o.Host with { PeerStore = new PeerStoreOptions { LookupAddressTtl = TimeSpan.FromSeconds(-1) } } }),
            Has.Some.StartsWith("'host:peerStore:lookupAddressTtl' is -00:00:01"));
        Assert.That(Problems(o => o with { Host = o.Host with { PeerStore = new PeerStoreOptions { PeerExchangeAddressTtl = TimeSpan.FromSeconds(-1) } } }),
            Has.Some.StartsWith("'host:peerStore:peerExchangeAddressTtl' is -00:00:01"));
        Assert.That(Problems(o => o with { Host = o.Host with { Budgets = new PeerBudgetOptions { MaxTrackedPeers = 0 } } }),
            Has.Some.StartsWith("'host:budgets:maxTrackedPeers' is 0; it must be at least 1"));
        Assert.That(Problems(o => o with { Gossip = o.Gossip with { Score = new PeerScoreParams { MaxRetainedPeers = -1 } } }),
            Has.Some.StartsWith("'gossip:score:maxRetainedPeers' is -1; it must be at least 0"));
    }

    [Test]
    public void TheKeys_BindFromTheConfigurationFile()
    {
        var dir = Directory.CreateTempSubdirectory("potluck-cli-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, NodeConfiguration.FileName),
                "{\"host\": {\"peerStore\": {\"maxPeers\": 500, \"discoveredAddressTtl\": \"00:02:00\", \"lookupAddressTtl\": \"00:00:45\"}}, \"gossip\": {\"score\": {\"maxRetainedPeers\": 100}}}");
            var options = RunCommand.ResolveRunOptions(Commands.Parse(["run", "--data-dir", dir]));
            Assert.That((options.Host.PeerStore.MaxPeers, options.Host.PeerStore.DiscoveredAddressTtl, options.Gossip.Score.MaxRetainedPeers),
                Is.EqualTo((500, TimeSpan.FromMinutes(2), 100)));
            Assert.That(options.Host.PeerStore.LookupAddressTtl, Is.EqualTo(TimeSpan.FromSeconds(45)));

            File.WriteAllText(Path.Combine(dir, NodeConfiguration.FileName), "{\"host\": {\"peerStore\": {\"maxPeers\": 0}}}");
            var e = Assert.Throws<Microsoft.Extensions.Options.OptionsValidationException>(() => RunCommand.ResolveRunOptions(Commands.Parse(["run", "--data-dir", dir])))!;
            Assert.That(e.Failures, Has.Some.Contains("'host:peerStore:maxPeers' is 0"));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
