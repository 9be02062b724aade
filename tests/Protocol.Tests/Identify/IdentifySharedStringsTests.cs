using Potluck.Protocol.Runtime;
using Potluck.Protocol.Tests.Host;

namespace Potluck.Protocol.Tests.Identify;

public class IdentifySharedStringsTests
{
    /// <summary>
    /// What identify keeps per connected peer holds one copy per node of the protocol ids and versions every peer sends
    /// alike (they were a copy per connection: ~1 KiB each), with the same values as sent.
    /// </summary>
    [Test]
    public void ResultsOfTwoPeers_ShareEqualProtocolAndAgentStrings() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d, seed: 12);
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();
        var c = await hosts.StartAsync();
        await a.Host.ConnectAsync(b.Address, ct);
        await a.Host.ConnectAsync(c.Address, ct);
        var fromB = await a.Identify.WhenIdentifiedAsync(b.Host.PeerId, ct);
        var fromC = await a.Identify.WhenIdentifiedAsync(c.Host.PeerId, ct);

        Assert.That(fromB.Protocols, Is.EquivalentTo(b.Host.Protocols));
        Assert.That(fromC.Protocols, Is.EquivalentTo(c.Host.Protocols));
        Assert.That(fromB.Protocols, Is.Not.Empty);
        foreach (var protocol in fromB.Protocols)
        {
            var same = fromC.Protocols.Single(p => p == protocol);
            Assert.That(same, Is.SameAs(protocol), $"{protocol} is held twice");
        }
        Assert.That(fromB.AgentVersion, Is.Not.Null.And.EqualTo(fromC.AgentVersion));
        Assert.That(fromC.AgentVersion, Is.SameAs(fromB.AgentVersion));
        Assert.That(fromC.ProtocolVersion, Is.SameAs(fromB.ProtocolVersion));
    });
}
