using Potluck.Protocol.Identity;

namespace Potluck.Protocol.Gossipsub;

/// <summary>How one published message spread through a <see cref="GossipsubSimulation"/>.</summary>
/// <param name="Subscribers">Nodes subscribed to the topic, publisher excluded.</param>
/// <param name="Reached">How many of them received it.</param>
/// <param name="MaxHops">Hops (link latencies) to the last of them.</param>
/// <param name="MeanHops">Mean hops over those reached.</param>
/// <param name="Heartbeats">Heartbeats from the publish until the last delivery (0: within the same heartbeat interval).</param>
/// <param name="Duplicates">Copies received and discarded as already seen, over all nodes.</param>
public sealed record PropagationReport(int Subscribers, int Reached, int MaxHops, double MeanHops, int Heartbeats, long Duplicates);

/// <summary>
/// A deterministic many-node gossipsub simulation over routers only (no sockets): a seeded random topology
/// where each node dials <c>degree</c> others, every RPC serialised and delivered after a fixed link latency,
/// and one driver that owns time (runs events until idle, then jumps to the next deadline, heartbeats every
/// <see cref="GossipsubOptions.HeartbeatInterval"/>). Scales to a thousand nodes for benchmarks.
/// </summary>
internal sealed class GossipsubSimulation
{
    private readonly PriorityQueue<Delivery, (DateTimeOffset At, long Seq)> _queue = new();
    private readonly Dictionary<PeerId, int> _index = [];
    private readonly Dictionary<MessageId, Dictionary<int, DateTimeOffset>> _received = [];
    private readonly TimeSpan _latency;
    private readonly Dictionary<(int, int), TimeSpan> _linkLatency = [];
    private readonly TimeSpan _heartbeat;
    private readonly long _uplink;
    private readonly DateTimeOffset[] _uplinkFree;
    private long _seq;
    private DateTimeOffset _nextHeartbeat;
    private readonly bool _stagger;

    /// <param name="protocol">What every link speaks (<see cref="GossipsubProtocol.V12"/> for IDONTWANT).</param>
    /// <param name="latencySigma">
    /// Spread of link latencies: 0 gives every link <paramref name="latency"/>; otherwise each link's is drawn once,
    /// log-normal with that median and this σ (whole milliseconds, at least 1 ms).
    /// </param>
    public GossipsubSimulation(int nodes, int degree, int seed, TimeSpan latency, Func<int, GossipsubOptions, GossipsubOptions>? configure = null,
        string protocol = GossipsubProtocol.V11, double latencySigma = 0, long uplinkBytesPerSecond = 0, bool staggerHeartbeats = false)
    {
        _stagger = staggerHeartbeats;
        _uplink = uplinkBytesPerSecond;
        _uplinkFree = new DateTimeOffset[nodes];
        var random = new Random(seed);
        Seed = seed;
        _latency = latency;
        Now = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
        Keys = new PrivateKey[nodes];
        Routers = new GossipsubRouter[nodes];
        Options = new GossipsubOptions[nodes];
        for (var i = 0; i < nodes; i++)
        {
            Keys[i] = PrivateKey.FromRandom(random);
            Options[i] = configure?.Invoke(i, new GossipsubOptions()) ?? new GossipsubOptions();
            Routers[i] = new GossipsubRouter(Keys[i].PeerId, Keys[i], Options[i], new Random(random.Next()), Now);
            _index[Keys[i].PeerId] = i;
        }
        _heartbeat = Options[0].HeartbeatInterval;
        _nextHeartbeat = Now + _heartbeat;
        Links = [];
        var linked = new HashSet<(int, int)>();
        for (var i = 0; i < nodes; i++)
        {
            var dialed = 0;
            for (var tries = 0; dialed < degree && tries < degree * 20; tries++)
            {
                var j = random.Next(nodes);
                if (j != i && linked.Add((Math.Min(i, j), Math.Max(i, j))))
                {
                    dialed++;
                    Links.Add((i, j));
                    Routers[i].AddPeer(Keys[j].PeerId, protocol, outbound: true, ip: null, Now);
                    Routers[j].AddPeer(Keys[i].PeerId, protocol, outbound: false, ip: null, Now);
                    if (latencySigma > 0)
                    {
                        var z = Math.Sqrt(-2.0 * Math.Log(1.0 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
                        var ms = Math.Max(1, Math.Round(latency.TotalMilliseconds * Math.Exp(latencySigma * z)));
                        _linkLatency[(Math.Min(i, j), Math.Max(i, j))] = TimeSpan.FromMilliseconds(ms);
                    }
                }
            }
        }
        for (var i = 0; i < nodes; i++)
        {
            Flush(i);
        }
    }

    public int Seed { get; }

    public DateTimeOffset Now { get; private set; }

    public PrivateKey[] Keys { get; }

    public GossipsubRouter[] Routers { get; }

    public GossipsubOptions[] Options { get; }

    public List<(int From, int To)> Links { get; }

    /// <summary>Messages delivered to the application, per node, in order.</summary>
    public Dictionary<int, List<GossipMessage>> Delivered { get; } = [];

    public long TotalDuplicates => Routers.Sum(r => r.Counters.Duplicates);

    public void Subscribe(int node, string topic)
    {
        Routers[node].Subscribe(topic, Now);
        Flush(node);
    }

    public MessageId Publish(int node, string topic, byte[] data)
    {
        var (id, _) = Routers[node].Publish(topic, data, Now);
        _received[id] = new Dictionary<int, DateTimeOffset> { [node] = Now };
        Flush(node);
        return id;
    }

    /// <summary>Runs events and heartbeats until <paramref name="heartbeats"/> heartbeats have passed.</summary>
    public void RunHeartbeats(int heartbeats)
    {
        for (var h = 0; h < heartbeats; h++)
        {
            for (var i = 0; i < Routers.Length; i++)
            {
                if (_stagger || i == 0)
                {
                    // Staggered: node i beats at i/N of the period before the round's instant, as nodes started at
                    // different times do (each node's heartbeat timer runs from its own start).
                    RunUntil(_stagger ? _nextHeartbeat - (_heartbeat * (Routers.Length - 1 - i) / Routers.Length) : _nextHeartbeat);
                }
                Routers[i].Heartbeat(Now);
                Flush(i);
            }
            _nextHeartbeat += _heartbeat;
        }
        RunUntil(Now);
    }

    /// <summary>Processes every RPC due by <paramref name="until"/>, in time order; then sets the clock there.</summary>
    public void RunUntil(DateTimeOffset until)
    {
        while (_queue.TryPeek(out var d, out var at) && at.At <= until)
        {
            _queue.Dequeue();
            Now = at.At;
            var status = RpcCodec.TryDecode(d.Bytes, Options[d.To].MaxRpcSize, out var rpc, out _);
            if (status != DecodeStatus.Done)
            {
                Routers[d.To].MalformedRpc(d.From);
            }
            else
            {
                Routers[d.To].HandleRpc(d.From, rpc, Now);
            }
            Flush(d.To);
        }
        Now = until > Now ? until : Now;
    }

    public PropagationReport Report(MessageId id, string topic, int publisher, long duplicatesBefore)
    {
        var subscribers = Enumerable.Range(0, Routers.Length).Where(i => i != publisher && Routers[i].Subscriptions.Contains(topic)).ToArray();
        var times = _received.GetValueOrDefault(id) ?? [];
        var start = times.GetValueOrDefault(publisher, Now);
        var hops = subscribers.Where(times.ContainsKey).Select(i => (int)Math.Round((times[i] - start) / _latency)).ToArray();
        var last = subscribers.Where(times.ContainsKey).Select(i => times[i]).DefaultIfEmpty(start).Max();
        var heartbeats = (int)Math.Floor((last - start) / _heartbeat);
        return new PropagationReport(subscribers.Length, hops.Length, hops.DefaultIfEmpty(0).Max(),
            hops.Length == 0 ? 0 : hops.Average(), heartbeats, TotalDuplicates - duplicatesBefore);
    }

    private void Flush(int node)
    {
        var output = Routers[node].Drain();
        foreach (var m in output.Deliveries)
        {
            if (!Delivered.TryGetValue(node, out var list))
            {
                Delivered[node] = list = [];
            }
            list.Add(m);
            if (_received.TryGetValue(m.Id, out var times))
            {
                times.TryAdd(node, Now);
            }
        }
        foreach (var (peer, rpc) in output.Rpcs)
        {
            if (_index.TryGetValue(peer, out var to))
            {
                var latency = _linkLatency.Count == 0 ? _latency : _linkLatency[(Math.Min(node, to), Math.Max(node, to))];
                var bytes = RpcCodec.Encode(rpc);
                var departs = Now;
                if (_uplink > 0)
                {
                    // The sender's uplink sends one RPC after another, in the order the router emitted them.
                    var start = _uplinkFree[node] > Now ? _uplinkFree[node] : Now;
                    departs = start + TimeSpan.FromTicks((long)Math.Ceiling(bytes.Length * (double)TimeSpan.TicksPerSecond / _uplink));
                    _uplinkFree[node] = departs;
                }
                _queue.Enqueue(new Delivery(Keys[node].PeerId, to, bytes), (departs + latency, _seq++));
            }
        }
    }

    private sealed record Delivery(PeerId From, int To, byte[] Bytes);
}
