using System.Text;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Mdns;

/// <summary>A peer seen on the link, with the addresses it announced (without the /p2p suffix).</summary>
public sealed record MdnsPeer(PeerId Peer, IReadOnlyList<Multiaddr> Addresses);

/// <summary>What to do after a packet: a response to multicast (or none) and the peers it announced.</summary>
public sealed record MdnsStep(byte[]? Response, IReadOnlyList<MdnsPeer> Discovered)
{
    public static readonly MdnsStep None = new(null, []);
}

/// <summary>
/// The responder and querier of libp2p mDNS discovery as a pure state machine: packets and <c>now</c> in, packets to
/// send and discovered peers out. Queries are PTR questions for <c>_p2p._udp.local</c>; responses carry a PTR to
/// <c>&lt;peer-name&gt;._p2p._udp.local</c> and a TXT record of <c>dnsaddr=&lt;multiaddr&gt;/p2p/&lt;id&gt;</c> strings.
/// Malformed or unrelated packets are ignored. Not thread-safe.
/// </summary>
public sealed class MdnsCore
{
    public const string ServiceName = "_p2p._udp.local";
    private const string DnsAddrPrefix = "dnsaddr=";
    private const int TxtStringMax = 255;

    private readonly PeerId _self;
    private readonly MdnsOptions _options;
    private IReadOnlyList<Multiaddr> _addresses = [];
    private DateTimeOffset _nextQuery = DateTimeOffset.MinValue;
    private DateTimeOffset _windowStart = DateTimeOffset.MinValue;
    private int _responsesInWindow;

    public MdnsCore(PeerId self, MdnsOptions options, ISecureRandom random)
    {
        _self = self;
        _options = options;
        PeerName = options.PeerName ?? RandomName(random);
        if (PeerName.Length is 0 or > 63 || PeerName.Contains('.'))
        {
            throw new ArgumentException("the peer name is one DNS label of 1…63 characters", nameof(options));
        }
    }

    public string PeerName { get; }

    public string InstanceName => PeerName + "." + ServiceName;

    /// <summary>Sets the addresses we announce (without /p2p; the suffix is added).</summary>
    public void SetAddresses(IReadOnlyList<Multiaddr> addresses) => _addresses = addresses;

    /// <summary>The query to send if one is due at <paramref name="now"/> (schedules the next), else null.</summary>
    public byte[]? OnTimer(DateTimeOffset now)
    {
        if (now < _nextQuery)
        {
            return null;
        }
        _nextQuery = now + _options.QueryInterval;
        return BuildQuery();
    }

    public DateTimeOffset NextQueryAt => _nextQuery;

    public static byte[] BuildQuery() => DnsMessage.Query(new DnsQuestion(ServiceName, DnsRecordType.Ptr)).Encode();

    /// <summary>Our response, or null when we have no address to announce.</summary>
    public byte[]? BuildResponse()
    {
        var strings = new List<byte[]>();
        foreach (var address in _addresses)
        {
            var text = Encoding.ASCII.GetBytes(DnsAddrPrefix + address.WithPeer(_self));
            if (text.Length <= TxtStringMax)
            {
                strings.Add(text);
            }
        }
        if (strings.Count == 0)
        {
            return null;
        }
        var ttl = (uint)_options.RecordTtl.TotalSeconds;
        var bytes = DnsMessage.Response(
            [DnsRecord.Ptr(ServiceName, InstanceName, ttl)],
            [DnsRecord.Txt(InstanceName, strings, ttl)]).Encode();
        return bytes;
    }

    public MdnsStep OnPacket(ReadOnlySpan<byte> packet, DateTimeOffset now)
    {
        if (DnsMessage.TryDecode(packet, out var message, out _) != DecodeStatus.Done || message is null)
        {
            return MdnsStep.None;
        }
        if (!message.IsResponse)
        {
            var asked = message.Questions.Any(q => q.Type is DnsRecordType.Ptr or DnsRecordType.Any
                && string.Equals(q.Name, ServiceName, StringComparison.OrdinalIgnoreCase));
            return asked && TakeResponseSlot(now) && BuildResponse() is { } response ? new MdnsStep(response, []) : MdnsStep.None;
        }
        return new MdnsStep(null, ReadPeers(message));
    }

    private bool TakeResponseSlot(DateTimeOffset now)
    {
        if (now - _windowStart >= TimeSpan.FromSeconds(1))
        {
            _windowStart = now;
            _responsesInWindow = 0;
        }
        return ++_responsesInWindow <= _options.MaxResponsesPerSecond;
    }

    private List<MdnsPeer> ReadPeers(DnsMessage message)
    {
        var records = message.Answers.Concat(message.Additional).ToList();
        var instances = records
            .Where(r => r.Type == DnsRecordType.Ptr && r.Target is not null && string.Equals(r.Name, ServiceName, StringComparison.OrdinalIgnoreCase))
            .Select(r => r.Target!)
            .Where(t => t.EndsWith("." + ServiceName, StringComparison.OrdinalIgnoreCase))
            .Distinct(StringComparer.OrdinalIgnoreCase)
            .Take(_options.MaxPeersPerPacket)
            .ToHashSet(StringComparer.OrdinalIgnoreCase);
        var found = new Dictionary<PeerId, List<Multiaddr>>();
        foreach (var txt in records.Where(r => r.Type == DnsRecordType.Txt && r.Text is not null && instances.Contains(r.Name)))
        {
            foreach (var raw in txt.Text!)
            {
                var s = Encoding.ASCII.GetString(raw);
                if (!s.StartsWith(DnsAddrPrefix, StringComparison.Ordinal) || !Multiaddr.TryParse(s[DnsAddrPrefix.Length..], out var address)
                    || address.PeerId is not { } peer || peer == _self)
                {
                    continue;
                }
                if (!found.TryGetValue(peer, out var list))
                {
                    if (found.Count >= _options.MaxPeersPerPacket)
                    {
                        continue;
                    }
                    found[peer] = list = [];
                }
                var bare = address.WithoutPeer();
                if (list.Count < _options.MaxAddressesPerPeer && bare.Components.Count > 0 && !list.Contains(bare))
                {
                    list.Add(bare);
                }
            }
        }
        return found.Where(kv => kv.Value.Count > 0).Select(kv => new MdnsPeer(kv.Key, kv.Value)).ToList();
    }

    /// <summary>32 characters of [a-z0-9] from security randomness (the name is an id others see).</summary>
    private static string RandomName(ISecureRandom random)
    {
        const string alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
        var chars = new char[32];
        Span<byte> pick = stackalloc byte[1];
        for (var i = 0; i < chars.Length;)
        {
            random.Fill(pick);
            // 252 = 7 × 36: rejecting the rest keeps every character equally likely.
            if (pick[0] < 252)
            {
                chars[i++] = alphabet[pick[0] % alphabet.Length];
            }
        }
        return new string(chars);
    }
}
