using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using Potluck.Tests;

namespace Potluck.Protocol.Tests.Host;

/// <summary>
/// What a connection keeps parked while idle: one task that accepts its streams and notices its close (not an accept loop
/// beside a close watcher), and the close is still seen by the registry and <c>Disconnected</c>.
/// </summary>
public class ConnectionWatcherTests
{
    private const int Peers = 4;

    /// <summary>The host under test and <see cref="Peers"/> others, none connected yet.</summary>
    private static async Task<(TestHosts.TestNode Host, List<TestHosts.TestNode> Others)> StartAsync(TestHosts hosts)
    {
        var a = await hosts.StartAsync();
        var others = new List<TestHosts.TestNode>();
        for (var i = 0; i < Peers; i++)
        {
            others.Add(await hosts.StartAsync());
        }
        return (a, others);
    }

    [Test]
    public void IdleConnection_HoldsOneParkedTask_AndItsClose_IsNoticedAsBefore()
    {
        var driver = new VirtualTimeDriver();
        driver.RunUntilComplete(async d =>
        {
            await using var hosts = new TestHosts(d);
            var (a, others) = await StartAsync(hosts);
            var disconnected = new List<PeerId>();
            a.Host.Disconnected += c => disconnected.Add(c.RemotePeer);
            var before = a.Host.BackgroundPieces;
            var othersBefore = others.Sum(o => o.Host.BackgroundPieces);

            foreach (var other in others)
            {
                await a.Host.ConnectAsync(other.Address, CancellationToken.None);
            }
            await Task.Delay(TimeSpan.FromMinutes(1), d.Clock); // identify and the start-up pings are done: idle
            Assert.That(a.Host.Connections, Has.Count.EqualTo(Peers));
            Assert.That(a.Host.BackgroundPieces - before, Is.EqualTo(Peers), "one parked piece per idle connection (dialer)");
            Assert.That(others.Sum(o => o.Host.BackgroundPieces) - othersBefore, Is.EqualTo(Peers),
                "one parked piece per idle connection (listeners)");

            // Closed from this side for two of them, by the remote for the other two.
            await a.Host.DisconnectAsync(others[0].Host.PeerId);
            await a.Host.DisconnectAsync(others[1].Host.PeerId);
            await others[2].Host.DisconnectAsync(a.Host.PeerId);
            await others[3].Host.DisconnectAsync(a.Host.PeerId);
            await Task.Delay(TimeSpan.FromSeconds(30), d.Clock);

            Assert.That(a.Host.Connections, Is.Empty, "every close left the registry");
            Assert.That(disconnected, Is.EquivalentTo(others.Select(o => o.Host.PeerId)), "Disconnected raised once per connection");
            Assert.That(a.Host.BackgroundPieces, Is.EqualTo(before), "nothing left parked for the closed connections");
            Assert.That(others.Sum(o => o.Host.BackgroundPieces), Is.EqualTo(othersBefore), "the remotes saw the closes too");
        });
    }

    [Test]
    public void ConnectionsThatOpenAndClose_LeaveNoRegistration_OnTheHostsStopTokens_NorOnTheirAdmissions()
    {
        var driver = new VirtualTimeDriver();
        driver.RunUntilComplete(async d =>
        {
            await using var hosts = new TestHosts(d);
            var (a, others) = await StartAsync(hosts);
            int Live(TestHosts.TestNode n) => Registrations.Live(n.Host.StopTokens.Host) + Registrations.Live(n.Host.StopTokens.Router);
            async Task ConnectAllAsync()
            {
                foreach (var other in others)
                {
                    await a.Host.ConnectAsync(other.Address, CancellationToken.None);
                }
                await Task.Delay(TimeSpan.FromMinutes(1), d.Clock); // identify and the start-up pings are done: idle
            }
            async Task DisconnectAllAsync()
            {
                foreach (var other in others)
                {
                    await a.Host.DisconnectAsync(other.Host.PeerId);
                }
                await Task.Delay(TimeSpan.FromSeconds(30), d.Clock);
            }
            // A first round puts each host's own standing work (its listener's accept) in its steady state.
            await ConnectAllAsync();
            await DisconnectAllAsync();
            var before = Live(a) + others.Sum(Live);

            await ConnectAllAsync();
            Assert.That(Live(a) + others.Sum(Live), Is.EqualTo(before), "an idle connection keeps no registration on a stop token");
            foreach (var other in others)
            {
                var inbound = (Connection)other.Host.Connections.Single();
                Assert.That(inbound.Admission, Is.Not.Null);
                Assert.That(inbound.Admission!.Evicted.CanBeCanceled, Is.False, "an open connection's admission keeps no eviction source");
            }

            await DisconnectAllAsync();
            Assert.That(a.Host.Connections, Is.Empty);
            Assert.That(Live(a) + others.Sum(Live), Is.EqualTo(before), "closed connections left no registration behind");
        });
    }
}
