using Google.Protobuf;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Kademlia;

/// <summary>What the server side needs to know about a peer it names in a response.</summary>
internal delegate (IReadOnlyList<Multiaddr> Addresses, bool Connected) DescribePeer(PeerId peer);

/// <summary>
/// The server side of kad-dht as a pure function of the stores: one request and <c>now</c> in, the response out
/// (null for ADD_PROVIDER, which has none). Throws <see cref="ProtocolViolationException"/> for requests that break
/// the spec. Not thread-safe: the owner locks around it and the stores.
/// </summary>
internal sealed class KadRequestHandler
{
    private readonly RoutingTable _table;
    private readonly RecordStore _records;
    private readonly ProviderStore _providers;
    private readonly KademliaOptions _options;
    private readonly DescribePeer _describe;

    public KadRequestHandler(RoutingTable table, RecordStore records, ProviderStore providers, KademliaOptions options, DescribePeer describe)
    {
        _table = table;
        _records = records;
        _providers = providers;
        _options = options;
        _describe = describe;
    }

    /// <summary>Providers that an ADD_PROVIDER announced, with the addresses they sent, for the peer store.</summary>
    public List<KadPeer> LearnedProviders { get; } = [];

    public Pb.Message? Handle(PeerId from, Pb.Message request, DateTimeOffset now)
    {
        LearnedProviders.Clear();
        var key = request.Key.ToByteArray();
        switch (request.Type)
        {
            case Pb.Message.Types.MessageType.Ping:
                return new Pb.Message { Type = Pb.Message.Types.MessageType.Ping };
            case Pb.Message.Types.MessageType.FindNode:
                return WithCloserPeers(new Pb.Message { Type = request.Type, Key = request.Key }, key, from);
            case Pb.Message.Types.MessageType.GetValue:
            {
                RequireKey(key);
                var response = new Pb.Message { Type = request.Type, Key = request.Key };
                if (_records.Get(key) is { } stored && (stored.IsLocal || now - stored.Received < _options.RecordTtl))
                {
                    response.Record = new Pb.Record
                    {
                        Key = request.Key,
                        Value = ByteString.CopyFrom(stored.Value),
                        TimeReceived = stored.Received.ToString("O"),
                    };
                }
                return WithCloserPeers(response, key, from);
            }
            case Pb.Message.Types.MessageType.PutValue:
            {
                RequireKey(key);
                if (request.Record is not { } record || !record.Key.Equals(request.Key))
                {
                    throw new ProtocolViolationException(_options.ProtocolId, "PUT_VALUE record key differs from the message key", ViolationCode.InvalidValue);
                }
                var value = record.Value.ToByteArray();
                if (!_options.Validators.Validate(key, value))
                {
                    throw new ProtocolViolationException(_options.ProtocolId, "PUT_VALUE record failed validation", ViolationCode.InvalidValue);
                }
                if (_records.Get(key) is { } existing && !existing.Value.AsSpan().SequenceEqual(value)
                    && _options.Validators.Select(key, [existing.Value, value]) == 0)
                {
                    // We hold a better record: keep it, answer as go does (echo the request).
                    return request.Clone();
                }
                _records.Put(key, value, now, isLocal: false);
                return request.Clone();
            }
            case Pb.Message.Types.MessageType.AddProvider:
            {
                RequireKey(key);
                foreach (var p in KadMessages.ReadPeers(request.ProviderPeers, _options, _table.Local))
                {
                    // Only the sender may announce itself (spec: "ignore provider records of other peers").
                    if (p.Id == from && _providers.Add(key, from, now + _options.ProviderTtl))
                    {
                        LearnedProviders.Add(p);
                    }
                }
                return null;
            }
            case Pb.Message.Types.MessageType.GetProviders:
            {
                RequireKey(key);
                var response = new Pb.Message { Type = request.Type, Key = request.Key };
                foreach (var provider in _providers.Get(key, now).Take(_options.MaxProvidersPerKey))
                {
                    var (addresses, connected) = _describe(provider);
                    response.ProviderPeers.Add(KadMessages.ToPb(provider, addresses, connected));
                }
                return WithCloserPeers(response, key, from);
            }
            default:
                throw new ProtocolViolationException(_options.ProtocolId, "unknown message type", ViolationCode.UnexpectedMessage);
        }
    }

    private void RequireKey(byte[] key)
    {
        if (key.Length == 0)
        {
            throw new ProtocolViolationException(_options.ProtocolId, "request without a key", ViolationCode.Malformed);
        }
    }

    private Pb.Message WithCloserPeers(Pb.Message response, byte[] key, PeerId from)
    {
        foreach (var peer in _table.Closest(KadKey.FromKey(key), _options.K, exclude: from))
        {
            var (addresses, connected) = _describe(peer);
            if (addresses.Count > 0)
            {
                response.CloserPeers.Add(KadMessages.ToPb(peer, addresses.Take(_options.MaxAddressesPerPeer), connected));
            }
        }
        return response;
    }
}
