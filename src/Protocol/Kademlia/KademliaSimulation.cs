using System.Security.Cryptography;
using Google.Protobuf;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;

namespace Potluck.Protocol.Kademlia;

/// <summary>What a <see cref="KademliaSimulation"/> measured.</summary>
/// <param name="ExactFraction">Lookups whose result was exactly the true k closest online nodes.</param>
/// <param name="MeanRecall">Mean share of the true k closest found.</param>
/// <param name="MedianHops">Median <see cref="ClosestPeersLookup.Hops"/>.</param>
/// <param name="MeanQueries">Mean requests sent per lookup.</param>
/// <param name="MaxQueries">The most requests one lookup sent.</param>
public sealed record KademliaSimulationReport(int Nodes, int Lookups, double ExactFraction, double MeanRecall, double MedianHops, double MeanQueries,
    int MaxQueries);

/// <summary>
/// A whole DHT in one process without sockets, for tests and benchmarks that scale to thousands of nodes: each
/// node is a real <see cref="RoutingTable"/> and <see cref="KadRequestHandler"/>, lookups are real
/// <see cref="ClosestPeersLookup"/>s, and every request and response is encoded to bytes and parsed with the
/// bounded decoder. Responses arrive in the order requests were sent. Deterministic for a seed.
/// </summary>
public sealed class KademliaSimulation
{
    private readonly List<SimNode> _nodes = [];
    private readonly Dictionary<PeerId, SimNode> _byId = [];
    private readonly Random _random;
    private readonly KademliaOptions _options;
    private readonly LookupOptions _lookupOptions;
    private readonly DateTimeOffset _now = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private readonly double _offlineFraction;

    /// <param name="stayWithinK">The lookups' <see cref="LookupOptions.StayWithinK"/> (a node's: on); off to compare.</param>
    public KademliaSimulation(int nodeCount, int seed, int k = 20, int alpha = 3, double offlineFraction = 0, bool stayWithinK = true)
    {
        _random = new Random(seed);
        _offlineFraction = offlineFraction;
        _options = new KademliaOptions { K = k, Alpha = alpha };
        _lookupOptions = _options.LookupOptions with { StayWithinK = stayWithinK };
        var hash = new byte[34];
        for (var i = 0; i < nodeCount; i++)
        {
            hash[0] = 0x12;
            hash[1] = 0x20;
            _random.NextBytes(hash.AsSpan(2));
            PeerId.TryFromBytes(hash, out var id);
            var node = new SimNode(id, i, _options, this);
            _nodes.Add(node);
            _byId[id] = node;
        }
    }

    public int NodeCount => _nodes.Count;

    public IReadOnlyList<PeerId> Peers => _nodes.Select(n => n.Id).ToArray();

    /// <summary>Requests delivered so far.</summary>
    public long Messages { get; private set; }

    /// <summary>
    /// Nodes join one by one through a random earlier online node (self lookup, then a lookup in each bucket up to
    /// one past the highest occupied one), then every node refreshes its buckets once more. Then the offline
    /// fraction given to the constructor goes silent (still in others' tables, as after churn).
    /// </summary>
    public void Bootstrap()
    {
        var joined = new List<SimNode>();
        foreach (var node in _nodes)
        {
            if (joined.Count > 0)
            {
                node.Table.AddOrRefresh(joined[_random.Next(joined.Count)].Id);
                Lookup(node, node.Id.ToBytes());
                Refresh(node);
            }
            joined.Add(node);
        }
        foreach (var node in joined)
        {
            Refresh(node);
        }
        foreach (var node in _nodes)
        {
            node.Online = _random.NextDouble() >= _offlineFraction;
        }
    }

    /// <summary>Runs <paramref name="count"/> FIND_NODE lookups for random keys from random online nodes.</summary>
    public KademliaSimulationReport RunLookups(int count)
    {
        var online = _nodes.Where(n => n.Online).ToList();
        var exact = 0;
        var recall = 0.0;
        var hops = new List<int>();
        var queries = 0L;
        var maxQueries = 0;
        var key = new byte[32];
        for (var i = 0; i < count; i++)
        {
            _random.NextBytes(key);
            var origin = online[_random.Next(online.Count)];
            var lookup = Lookup(origin, key);
            var target = KadKey.FromKey(key);
            var truth = online.Where(n => n != origin)
                .OrderBy(n => n.Key.DistanceTo(target))
                .Take(_options.K)
                .Select(n => n.Id)
                .ToHashSet();
            var found = lookup.Result.Count(truth.Contains);
            if (found == truth.Count && lookup.Result.Count == truth.Count)
            {
                exact++;
            }
            recall += truth.Count == 0 ? 1 : (double)found / truth.Count;
            hops.Add(lookup.Hops);
            queries += lookup.QueriesSent;
            maxQueries = Math.Max(maxQueries, lookup.QueriesSent);
        }
        hops.Sort();
        var median = hops.Count == 0 ? 0 : hops.Count % 2 == 1 ? hops[hops.Count / 2] : (hops[hops.Count / 2 - 1] + hops[hops.Count / 2]) / 2.0;
        return new KademliaSimulationReport(_nodes.Count, count, count == 0 ? 0 : (double)exact / count, count == 0 ? 0 : recall / count,
            median, count == 0 ? 0 : (double)queries / count, maxQueries);
    }

    /// <summary>One FIND_NODE lookup for <paramref name="key"/> from <paramref name="origin"/>.</summary>
    private ClosestPeersLookup Lookup(SimNode origin, byte[] key)
    {
        var target = KadKey.FromKey(key);
        var lookup = new ClosestPeersLookup(target, origin.Table.Closest(target, _options.K), _lookupOptions, origin.Id);
        var request = new Pb.Message { Type = Pb.Message.Types.MessageType.FindNode, Key = ByteString.CopyFrom(key) }.ToByteArray();
        var inFlight = new Queue<PeerId>();
        while (true)
        {
            var step = lookup.Next(_now);
            if (step.Kind == LookupStepKind.Query)
            {
                inFlight.Enqueue(step.Peer);
                continue;
            }
            if (step.Kind == LookupStepKind.Finished || inFlight.Count == 0)
            {
                break;
            }
            var peer = inFlight.Dequeue();
            var response = Deliver(origin, peer, request);
            if (response is null)
            {
                lookup.OnFailure(peer);
                origin.Table.Remove(peer);
                continue;
            }
            var closer = KadMessages.ReadPeers(response.CloserPeers, _options, origin.Id);
            lookup.OnSuccess(peer, closer.Select(p => p.Id));
            origin.Table.AddOrRefresh(peer);
        }
        origin.Table.MarkRefreshed(origin.Table.BucketIndexOf(target), _now);
        return lookup;
    }

    private Pb.Message? Deliver(SimNode from, PeerId to, byte[] request)
    {
        Messages++;
        if (!_byId.TryGetValue(to, out var remote) || !remote.Online)
        {
            return null;
        }
        if (!KadMessages.TryParse(request, _options, out var parsed, out _))
        {
            return null;
        }
        remote.Table.AddOrRefresh(from.Id);
        var bytes = remote.Handler.Handle(from.Id, parsed, _now)!.ToByteArray();
        return KadMessages.TryParse(bytes, _options, out var response, out _) ? response : null;
    }

    private void Refresh(SimNode node)
    {
        foreach (var bucket in node.Table.BucketsDueForRefresh(_now, TimeSpan.Zero, _options.MaxRefreshBucket))
        {
            Lookup(node, KeyForBucket(node, bucket));
        }
    }

    private byte[] KeyForBucket(SimNode node, int bucket)
    {
        var key = new byte[32];
        Span<byte> hash = stackalloc byte[32];
        while (true)
        {
            _random.NextBytes(key);
            SHA256.HashData(key, hash);
            if (node.Table.BucketIndexOf(KadKey.FromHash(hash)) == bucket)
            {
                return key;
            }
        }
    }

    private sealed class SimNode
    {
        public SimNode(PeerId id, int index, KademliaOptions options, KademliaSimulation sim)
        {
            Id = id;
            Key = KadKey.FromPeer(id);
            Table = new RoutingTable(id, options.K, options.ReplacementCacheSize);
            var address = Multiaddr.Parse($"/memory/{index + 1}");
            Handler = new KadRequestHandler(Table, new RecordStore(16, options.MaxRecordSize), new ProviderStore(16, options.MaxProvidersPerKey), options,
                peer => ([sim._byId.TryGetValue(peer, out var n) ? n.Address : address], false));
            Address = address;
        }

        public PeerId Id { get; }
        public KadKey Key { get; }
        public Multiaddr Address { get; }
        public RoutingTable Table { get; }
        public KadRequestHandler Handler { get; }
        public bool Online { get; set; } = true;
    }
}
