using Potluck.Node;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Kademlia;
using Potluck.Protocol.Multiformats;

using Potluck.Tests;

namespace Potluck.Interop.Tests;

/// <summary>
/// A Potluck node on loopback TCP for the gossip/DHT interop tests, with <see cref="GossipsubService"/> and/or
/// <see cref="KademliaService"/> built over <see cref="PotluckNode.Host"/> before it connects anywhere (so
/// identify advertises their protocols). Collects every message of one subscription.
/// </summary>
internal sealed class InteropPotluckPeer : IAsyncDisposable
{
    private readonly List<GossipMessage> _received = [];
    private TaskCompletionSource _signal = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task? _pump;

    private InteropPotluckPeer(PotluckNode node) => Node = node;

    public PotluckNode Node { get; }

    public PeerId PeerId => Node.PeerId;

    public string Address => Node.FullAddresses[0].ToString();

    public GossipsubService? Gossip { get; private set; }

    public KademliaService? Dht { get; private set; }

    public GossipSubscription? Subscription { get; private set; }

    public IReadOnlyList<GossipMessage> Received
    {
        get
        {
            lock (_received)
            {
                return [.. _received];
            }
        }
    }

    public static async Task<InteropPotluckPeer> StartAsync(int seed, bool gossip, string? dhtProtocol, PrivateKey? key = null,
        Func<GossipsubOptions, GossipsubOptions>? configureGossip = null)
    {
        // A node's own gossip defaults (D 5, D_hi 6), which are what must interoperate.
        var defaults = new Potluck.Node.Hosting.PotluckOptions().Gossip;
        var gossipOptions = configureGossip?.Invoke(defaults) ?? defaults;
        var node = await PotluckNode.CreateBuilder()
            .UseKey(key ?? PrivateKey.Generate())
            .UseSeed(seed)
            .UseLoggerFactory(TestLogging.Factory)
            .Configure(o => o with
            {
                Listen = [Multiaddr.Parse("/ip4/127.0.0.1/tcp/0")],
                Gossip = gossipOptions,
                Kademlia = new KademliaOptions { ProtocolId = dhtProtocol ?? KademliaService.DefaultProtocolId },
            })
            .StartAsync();
        var peer = new InteropPotluckPeer(node)
        {
            Gossip = gossip ? node.Gossip : null,
            Dht = dhtProtocol is not null ? node.Dht : null,
        };
        return peer;
    }

    public void Subscribe(string topic)
    {
        Subscription = Gossip!.Subscribe(topic);
        _pump = Task.Run(async () =>
        {
            await foreach (var m in Subscription.Messages.ReadAllAsync())
            {
                TaskCompletionSource signal;
                lock (_received)
                {
                    _received.Add(m);
                    signal = _signal;
                    _signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                }
                signal.TrySetResult();
            }
        });
    }

    /// <summary>Completes when the messages received so far satisfy <paramref name="condition"/>; re-checked on every delivery.</summary>
    public async Task<IReadOnlyList<GossipMessage>> WaitForMessagesAsync(Func<IReadOnlyList<GossipMessage>, bool> condition, TimeSpan timeout,
        CancellationToken ct)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout);
        while (true)
        {
            Task signal;
            lock (_received)
            {
                signal = _signal.Task;
            }
            var now = Received;
            if (condition(now))
            {
                return now;
            }
            try
            {
                await signal.WaitAsync(cts.Token);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                throw new TimeoutException($"Potluck {PeerId}: messages did not arrive within {timeout}; got {now.Count}");
            }
        }
    }

    /// <summary>Waits (bounded) until the gossip service satisfies <paramref name="condition"/>.</summary>
    public async Task WaitForGossipAsync(Func<GossipsubService, bool> condition, TimeSpan timeout, string what, CancellationToken ct)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout);
        try
        {
            await Gossip!.WaitUntilAsync(condition, cts.Token);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new TimeoutException($"Potluck {PeerId}: {what} not within {timeout}");
        }
    }

    /// <summary>
    /// Waits (bounded) until the DHT routing table holds <paramref name="peer"/>. Uses the service's own change event
    /// (subscribe, then check): waiting on peer-store updates could miss the table change, which the DHT makes in its
    /// own handler of the same event, possibly on another thread, after this helper had already checked.
    /// </summary>
    public async Task WaitForDhtPeerAsync(PeerId peer, TimeSpan timeout, CancellationToken ct)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout);
        try
        {
            await Dht!.WaitUntilAsync(d => d.RoutingTablePeers().Contains(peer), cts.Token);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new TimeoutException($"Potluck {PeerId}: {peer} not in the DHT routing table within {timeout}; " +
                                       $"it holds [{string.Join(", ", Dht!.RoutingTablePeers())}]");
        }
    }

    public async ValueTask DisposeAsync()
    {
        Subscription?.Dispose();
        if (Gossip is not null)
        {
            await Gossip.DisposeAsync();
        }
        if (_pump is not null)
        {
            await _pump;
        }
        if (Dht is not null)
        {
            await Dht.DisposeAsync();
        }
        await Node.DisposeAsync();
    }
}
