using System.Reflection;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.DependencyInjection;
using Potluck.Node.Hosting;
using Potluck.Protocol.Host;
using Potluck.Protocol.Runtime;

namespace Potluck.Node.Tests;

/// <summary>
/// <see cref="PotluckNodeBuilder.ReleaseServicesAfterStart"/> (issue 11, a node's fixed cost): a started node keeps
/// what its provider made and its own disposal list, and the provider (descriptors, call-site caches, compiled
/// resolvers: ~40 KiB a node) goes. Every simulated node is built so.
/// </summary>
public class NodeServicesReleaseTests
{
    /// <summary>Disposables that write their name to a shared log when disposed (creation: First, Second, Third).</summary>
    private sealed class DisposalLog
    {
        public List<string> Disposed { get; } = [];
    }

    private sealed class First(DisposalLog log) : IDisposable
    {
        public void Dispose() => log.Disposed.Add("first");
    }

    private sealed class Second(First first, DisposalLog log) : IAsyncDisposable
    {
        public First First { get; } = first;

        public ValueTask DisposeAsync()
        {
            log.Disposed.Add("second");
            return ValueTask.CompletedTask;
        }
    }

    private sealed class Third(Second second, DisposalLog log) : IDisposable
    {
        public Second Second { get; } = second;

        public void Dispose() => log.Disposed.Add("third");
    }

    /// <summary>Started after the node's own parts; makes Third (and so Second and First) at start.</summary>
    private sealed class Starter(Third third) : Microsoft.Extensions.Hosting.IHostedService
    {
        public Third Third { get; } = third;

        public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }

    private static PotluckNodeBuilder Builder(TestNodes nodes, bool release, DisposalLog log)
    {
        var builder = nodes.Builder(nodes.Options());
        builder.Services.AddSingleton(log);
        builder.Services.AddSingleton<First>(); // by type
        builder.Services.AddSingleton(sp => new Second(sp.GetRequiredService<First>(), log)); // by factory
        builder.Services.AddSingleton<Third>();
        builder.Services.AddHostedService<Starter>();
        return release ? builder.ReleaseServicesAfterStart() : builder;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference ProviderOf(PotluckNode node) => new(node.Services);

    private static bool Collected(WeakReference reference)
    {
        for (var i = 0; i < 3 && reference.IsAlive; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        return !reference.IsAlive;
    }

    [Test]
    public void StartedNode_ThatReleasesItsServices_HoldsNoServiceProvider_WhileOneBuiltAsBefore_KeepsIt() => VirtualTimeDriver.Run(async d =>
    {
        await using var nodes = new TestNodes(d, 11);
        var released = Builder(nodes, release: true, new DisposalLog()).Build();
        var kept = Builder(nodes, release: false, new DisposalLog()).Build();
        var releasedProvider = ProviderOf(released);
        var keptProvider = ProviderOf(kept);
        await released.StartAsync();
        await kept.StartAsync();
        await kept.Host.ConnectAsync(released.FullAddresses[0], CancellationToken.None);
        await Task.Delay(TimeSpan.FromSeconds(5), d.Clock); // identify, gossip heartbeats, DHT: the node at work

        Assert.That(Collected(releasedProvider), Is.True, "nothing a started node holds reaches its service provider");
        Assert.That(Collected(keptProvider), Is.False, "control: a node built as before keeps its provider (main's behaviour)");
        // What the properties, the census and the control API ask for is still there, the same instances.
        Assert.That(released.Host.Connections.Count, Is.EqualTo(1));
        Assert.That(released.Services.GetService<Libp2pHost>(), Is.SameAs(released.Host));
        Assert.That(released.Services.GetService<Potluck.Protocol.Host.IHost>(), Is.SameAs(released.Host));
        Assert.That(released.Gossip, Is.Not.Null);
        Assert.That(released.Dht, Is.Not.Null);
        Assert.That(released.Discovery, Is.Not.Null);
        Assert.That(released.Options.Listen, Has.Count.EqualTo(1));
        Assert.That(released.Services.GetService<StaticRelayReservations>(), Is.Null, "what was not made at start (no static relays) is not made now");
        await nodes.StopAsync(released);
        await nodes.StopAsync(kept);
    });

    [Test]
    public void NodeThatReleasesItsServices_DisposesWhatItMade_LastCreatedFirst_AsItsProviderWould() => VirtualTimeDriver.Run(async d =>
    {
        await using var nodes = new TestNodes(d, 12);
        var orders = new List<List<string>>();
        foreach (var release in new[] { false, true })
        {
            var log = new DisposalLog();
            var node = Builder(nodes, release, log).Build();
            await node.StartAsync();
            Assert.That(log.Disposed, Is.Empty);
            await node.DisposeAsync();
            Assert.That(log.Disposed, Is.EqualTo(new[] { "third", "second", "first" }), $"release: {release}");
            Assert.That(() => node.Services.GetService(typeof(Libp2pHost)), Throws.InstanceOf<ObjectDisposedException>(), $"release: {release}");
            orders.Add(log.Disposed);
        }
        Assert.That(orders[1], Is.EqualTo(orders[0]));
    });

    [Test]
    public void ReleaseServicesAfterStart_OffVirtualTime_IsRefused_TheGenericHostsLifetimeNeedsItsProvider()
    {
        var time = new VirtualClock();
        var builder = PotluckNode.CreateBuilder().UseSimulatedNetwork(new Potluck.Protocol.Transport.Memory.SimulatedNetwork(time)).UseTime(time)
            .ReleaseServicesAfterStart();
        Assert.That(() => builder.Build(), Throws.InvalidOperationException.With.Message.Contains("virtual time"));
    }

    /// <summary>
    /// The node's own list is the provider's: every disposable the provider captured, in the same order, less the generic
    /// host (whose disposal is the provider's). Reads the provider's internal list by reflection (a test of our mirror of
    /// it: if the framework adds a disposable that the node's list lacks, this fails).
    /// </summary>
    [Test]
    public void NodeDisposalList_IsTheProvidersOwn_LessTheGenericHost() => VirtualTimeDriver.Run(async d =>
    {
        await using var nodes = new TestNodes(d, 13);
        var node = Builder(nodes, release: true, new DisposalLog()).Build();
        var provider = node.Services; // held, so its list can be read after start
        await node.StartAsync();
        var root = provider.GetType().GetProperty("Root", BindingFlags.Instance | BindingFlags.NonPublic)!.GetValue(provider)!;
        var captured = ((IEnumerable<object>)root.GetType().GetProperty("Disposables", BindingFlags.Instance | BindingFlags.NonPublic)!.GetValue(root)!).ToList();
        var parts = provider.GetRequiredService<NodeSetup>().Parts.Disposables;
        var expected = captured.Where(o => o is not Microsoft.Extensions.Hosting.IHost).ToList();
        string Names(IEnumerable<object> list) => string.Join(", ", list.Select(o => o.GetType().Name));
        Assert.That(parts.Count == expected.Count && parts.Zip(expected).All(p => ReferenceEquals(p.First, p.Second)), Is.True,
            $"the same instances in the same order; the node's: {Names(parts)}; the provider's: {Names(expected)}");
        Assert.That(parts, Has.Some.InstanceOf<Libp2pHost>());
        Assert.That(parts, Has.Some.InstanceOf<System.Diagnostics.Metrics.IMeterFactory>());
        await nodes.StopAsync(node);
    });
}
