using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Potluck.Protocol.Multiformats;

/// <summary>A multiaddr protocol: its code, name and value size in bits (-1 = varint-length-prefixed).</summary>
public sealed record MultiaddrProtocol(int Code, string Name, int SizeBits)
{
    public bool HasValue => SizeBits != 0;
    public bool IsVariableLength => SizeBits < 0;
}

/// <summary>One component of a multiaddr: a protocol and its raw value bytes.</summary>
public readonly record struct MultiaddrComponent(MultiaddrProtocol Protocol, ReadOnlyMemory<byte> Value)
{
    public string ValueText => Multiaddr.ValueToString(Protocol, Value.Span);

    public override string ToString() =>
        Protocol.HasValue ? $"/{Protocol.Name}/{ValueText}" : $"/{Protocol.Name}";
}

/// <summary>
/// Self-describing network addresses (https://github.com/multiformats/multiaddr), with the text and binary
/// codecs for ip4, ip6, tcp, udp, dns, dns4, dns6, dnsaddr, p2p, quic-v1, p2p-circuit and the in-memory
/// transport's <c>memory</c> protocol (code 777, a 64-bit big-endian id, as go-multiaddr and rust-libp2p use it;
/// the multiaddr table and js-multiaddr make it a length-prefixed string, so memory addresses stay between our nodes).
/// Decoders are bounded by <see cref="MaxBytes"/> and <see cref="MaxComponents"/>.
/// Text is strict where the binary form is canonical: ip4 takes four decimal octets without leading zeros,
/// ip6 takes no zone (<c>%eth0</c>) or brackets, names never contain '/'. <c>/ipfs/</c> is read as <c>/p2p/</c>.
/// Deviations: other protocols (ws, tls, certhash, ...) are not understood and make an address invalid;
/// <c>/p2p/</c> values are peer ids only (identity or SHA-256 multihash, base58 or CIDv1 base32/base58).
/// As in go-multiaddr, an address has at least one component: <c>/</c> and zero bytes are rejected by the
/// decoders (<see cref="Empty"/> exists for local use and prints as the empty string).
/// </summary>
[System.ComponentModel.TypeConverter(typeof(MultiaddrTypeConverter))]
public sealed class Multiaddr : IEquatable<Multiaddr>
{
    public const int MaxBytes = 1024;
    public const int MaxComponents = 32;

    public static readonly MultiaddrProtocol Ip4 = new(0x04, "ip4", 32);
    public static readonly MultiaddrProtocol Tcp = new(0x06, "tcp", 16);
    public static readonly MultiaddrProtocol Udp = new(0x0111, "udp", 16);
    public static readonly MultiaddrProtocol Ip6 = new(0x29, "ip6", 128);
    public static readonly MultiaddrProtocol Dns = new(0x35, "dns", -1);
    public static readonly MultiaddrProtocol Dns4 = new(0x36, "dns4", -1);
    public static readonly MultiaddrProtocol Dns6 = new(0x37, "dns6", -1);
    public static readonly MultiaddrProtocol DnsAddr = new(0x38, "dnsaddr", -1);
    public static readonly MultiaddrProtocol P2p = new(0x01A5, "p2p", -1);
    public static readonly MultiaddrProtocol P2pCircuit = new(0x0122, "p2p-circuit", 0);
    public static readonly MultiaddrProtocol QuicV1 = new(0x01CD, "quic-v1", 0); // 461; 460 (0x01CC) is draft-29 "quic"
    public static readonly MultiaddrProtocol Memory = new(0x0309, "memory", 64);

    private static readonly MultiaddrProtocol[] All = [Ip4, Tcp, Udp, Ip6, Dns, Dns4, Dns6, DnsAddr, P2p, P2pCircuit, QuicV1, Memory];
    private static readonly Dictionary<int, MultiaddrProtocol> ByCode = All.ToDictionary(p => p.Code);
    private static readonly Dictionary<string, MultiaddrProtocol> ByName = BuildByName();

    /// <summary>Longest DNS name accepted, in UTF-8 bytes.</summary>
    public const int MaxDnsNameBytes = 255;

    private static Dictionary<string, MultiaddrProtocol> BuildByName()
    {
        var byName = All.ToDictionary(p => p.Name, StringComparer.Ordinal);
        byName["ipfs"] = P2p; // the old name, still found in configs
        return byName;
    }

    private readonly MultiaddrComponent[] _components;
    private byte[]? _bytes;
    private string? _text;

    private Multiaddr(MultiaddrComponent[] components) => _components = components;

    public static Multiaddr Empty { get; } = new([]);

    public IReadOnlyList<MultiaddrComponent> Components => _components;

    /// <summary>The protocols this codec understands.</summary>
    public static IReadOnlyList<MultiaddrProtocol> Protocols => All;

    public static MultiaddrProtocol? ProtocolByName(string name) => ByName.GetValueOrDefault(name);

    public static MultiaddrProtocol? ProtocolByCode(int code) => ByCode.GetValueOrDefault(code);

    public static Multiaddr Parse(string text) =>
        TryParse(text, out var addr, out var error) ? addr : throw new FormatException($"invalid multiaddr '{Truncate(text)}': {error}");

    public static bool TryParse(string? text, out Multiaddr addr) => TryParse(text, out addr, out _);

    public static bool TryParse(string? text, out Multiaddr addr, out string error)
    {
        addr = Empty;
        error = "";
        if (string.IsNullOrEmpty(text) || text[0] != '/')
        {
            error = "a multiaddr starts with '/', e.g. /ip4/127.0.0.1/tcp/4001";
            return false;
        }
        if (text.Length > MaxBytes * 4)
        {
            error = "too long";
            return false;
        }
        var parts = text.TrimEnd('/').Split('/');
        if (parts.Length < 2)
        {
            error = "an address needs at least one component, e.g. /ip4/127.0.0.1/tcp/4001";
            return false;
        }
        var components = new List<MultiaddrComponent>();
        for (var i = 1; i < parts.Length; i++)
        {
            if (components.Count >= MaxComponents)
            {
                error = $"more than {MaxComponents} components";
                return false;
            }
            if (parts[i].Length == 0)
            {
                error = "empty component ('//'): remove the extra '/'";
                return false;
            }
            if (!ByName.TryGetValue(parts[i], out var protocol))
            {
                error = $"unknown protocol '{Truncate(parts[i])}' (supported: {string.Join(", ", All.Select(p => p.Name))})";
                return false;
            }
            if (!protocol.HasValue)
            {
                components.Add(new MultiaddrComponent(protocol, ReadOnlyMemory<byte>.Empty));
                continue;
            }
            if (++i >= parts.Length || parts[i].Length == 0)
            {
                error = $"'{protocol.Name}' needs a value, e.g. {Example(protocol)}";
                return false;
            }
            if (!TryParseValue(protocol, parts[i], out var value, out error))
            {
                return false;
            }
            components.Add(new MultiaddrComponent(protocol, value));
        }
        addr = new Multiaddr([.. components]);
        if (addr.EncodedBytes.Length > MaxBytes)
        {
            addr = Empty;
            error = "too long";
            return false;
        }
        return true;
    }

    private static string Truncate(string? s) => s is null ? "" : s.Length > 100 ? s[..100] + "…" : s;

    private static string Example(MultiaddrProtocol protocol) => protocol.Name switch
    {
        "ip4" => "/ip4/127.0.0.1",
        "ip6" => "/ip6/::1",
        "tcp" or "udp" => $"/{protocol.Name}/4001",
        "memory" => "/memory/1",
        "p2p" => "/p2p/12D3KooW…",
        _ => $"/{protocol.Name}/example.com",
    };

    /// <summary>Four decimal octets 0-255, no leading zeros, no other characters: the only text go and js accept.</summary>
    private static bool TryParseIp4(string text, out byte[] value)
    {
        value = [];
        var octets = new byte[4];
        var parts = text.Split('.');
        if (parts.Length != 4)
        {
            return false;
        }
        for (var i = 0; i < 4; i++)
        {
            var part = parts[i];
            if (part.Length is 0 or > 3 || (part.Length > 1 && part[0] == '0') || !part.All(char.IsAsciiDigit))
            {
                return false;
            }
            var n = int.Parse(part, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture);
            if (n > 255)
            {
                return false;
            }
            octets[i] = (byte)n;
        }
        value = octets;
        return true;
    }

    /// <summary>RFC 4291 text (with an optional dotted IPv4 tail), without zone or brackets.</summary>
    private static bool TryParseIp6(string text, out byte[] value)
    {
        value = [];
        if (text.Length > 45 || !text.Contains(':') || !text.All(c => char.IsAsciiHexDigit(c) || c is ':' or '.'))
        {
            return false;
        }
        if (!IPAddress.TryParse(text, out var ip) || ip.AddressFamily != AddressFamily.InterNetworkV6 || ip.ScopeId != 0)
        {
            return false;
        }
        value = ip.GetAddressBytes();
        return true;
    }

    /// <summary>Whether <paramref name="value"/> is a valid value for <paramref name="protocol"/> in the binary form.</summary>
    private static bool IsValidValue(MultiaddrProtocol protocol, ReadOnlySpan<byte> value)
    {
        if (!protocol.IsVariableLength)
        {
            return value.Length == protocol.SizeBits / 8;
        }
        if (protocol == P2p)
        {
            return Identity.PeerId.TryFromBytes(value, out _);
        }
        // dns, dns4, dns6, dnsaddr: a non-empty UTF-8 name without '/', which the text form could not carry.
        return value.Length is > 0 and <= MaxDnsNameBytes && !value.Contains((byte)'/') && IsUtf8(value);
    }

    private static bool TryParseValue(MultiaddrProtocol protocol, string text, out byte[] value, out string error)
    {
        value = [];
        error = "";
        switch (protocol.Name)
        {
            case "ip4":
                if (TryParseIp4(text, out value))
                {
                    return true;
                }
                error = $"'{Truncate(text)}' is not an IPv4 address (expected four numbers 0-255 without leading zeros, e.g. 127.0.0.1)";
                return false;
            case "ip6":
                if (TryParseIp6(text, out value))
                {
                    return true;
                }
                error = $"'{Truncate(text)}' is not an IPv6 address (expected e.g. ::1 or 2001:db8::1, without zone or brackets)";
                return false;
            case "tcp":
            case "udp":
                if (ushort.TryParse(text, System.Globalization.NumberStyles.None, null, out var port))
                {
                    value = new byte[2];
                    BinaryPrimitives.WriteUInt16BigEndian(value, port);
                    return true;
                }
                error = $"'{Truncate(text)}' is not a port (0-65535)";
                return false;
            case "memory":
                if (ulong.TryParse(text, System.Globalization.NumberStyles.None, null, out var id))
                {
                    value = new byte[8];
                    BinaryPrimitives.WriteUInt64BigEndian(value, id);
                    return true;
                }
                error = $"'{Truncate(text)}' is not a memory address (an unsigned 64-bit number)";
                return false;
            case "p2p":
                if (Identity.PeerId.TryParse(text, out var peer))
                {
                    value = peer.ToBytes();
                    return true;
                }
                error = $"'{Truncate(text)}' is not a peer id (expected 12D3KooW…, Qm… or bafz…)";
                return false;
            default: // dns names; '/' cannot occur, the text was split on it
                if (Encoding.UTF8.GetByteCount(text) > MaxDnsNameBytes)
                {
                    error = $"DNS name longer than {MaxDnsNameBytes} bytes";
                    return false;
                }
                value = Encoding.UTF8.GetBytes(text);
                return true;
        }
    }

    internal static string ValueToString(MultiaddrProtocol protocol, ReadOnlySpan<byte> value) => protocol.Name switch
    {
        "ip4" or "ip6" => new IPAddress(value).ToString(),
        "tcp" or "udp" => BinaryPrimitives.ReadUInt16BigEndian(value).ToString(System.Globalization.CultureInfo.InvariantCulture),
        "memory" => BinaryPrimitives.ReadUInt64BigEndian(value).ToString(System.Globalization.CultureInfo.InvariantCulture),
        "p2p" => Identity.PeerId.TryFromBytes(value, out var peer) ? peer.ToString() : Base58.Encode(value),
        _ when !protocol.HasValue => "",
        _ => Encoding.UTF8.GetString(value),
    };

    /// <summary>Decodes the binary form, bounded by <see cref="MaxBytes"/> and <see cref="MaxComponents"/>; never throws.</summary>
    public static bool TryFromBytes(ReadOnlySpan<byte> bytes, out Multiaddr addr)
    {
        addr = Empty;
        if (bytes.Length is 0 or > MaxBytes)
        {
            return false;
        }
        // One copy of the bytes, which the components' values are slices of and which is the address's binary form (the
        // decoder takes only minimal varints, so it is exactly what encoding the components gives): no array per value
        // and no second, encoded copy.
        var copy = bytes.ToArray();
        bytes = copy;
        var components = new List<MultiaddrComponent>();
        var offset = 0;
        while (offset < bytes.Length)
        {
            if (components.Count >= MaxComponents)
            {
                return false;
            }
            if (Varint.TryRead(bytes[offset..], out var code, out var n) != DecodeStatus.Done || code > int.MaxValue)
            {
                return false;
            }
            offset += n;
            if (!ByCode.TryGetValue((int)code, out var protocol))
            {
                return false;
            }
            int size;
            if (protocol.IsVariableLength)
            {
                if (Varint.TryRead(bytes[offset..], out var len, out n) != DecodeStatus.Done || len > (ulong)(bytes.Length - offset - n))
                {
                    return false;
                }
                offset += n;
                size = (int)len;
            }
            else
            {
                size = protocol.SizeBits / 8;
                if (size > bytes.Length - offset)
                {
                    return false;
                }
            }
            var value = bytes.Slice(offset, size);
            if (!IsValidValue(protocol, value))
            {
                return false;
            }
            components.Add(new MultiaddrComponent(protocol, copy.AsMemory(offset, size)));
            offset += size;
        }
        addr = new Multiaddr([.. components]) { _bytes = copy };
        return true;
    }

    private static bool IsUtf8(ReadOnlySpan<byte> value) => System.Text.Unicode.Utf8.IsValid(value);

    public static Multiaddr FromBytes(ReadOnlySpan<byte> bytes) =>
        TryFromBytes(bytes, out var addr) ? addr : throw new FormatException("invalid binary multiaddr");

    /// <summary>The binary form: a fresh copy the caller may keep or change.</summary>
    public byte[] ToBytes() => (byte[])EncodedBytes.Clone();

    /// <summary>The binary form without a copy.</summary>
    public ReadOnlyMemory<byte> Bytes => EncodedBytes;

    private byte[] EncodedBytes
    {
        get
        {
            return _bytes ??= Encode(_components);
        }
    }

    private static byte[] Encode(MultiaddrComponent[] components)
    {
        using var ms = new MemoryStream();
        Span<byte> tmp = stackalloc byte[Varint.MaxBytes];
        foreach (var c in components)
        {
            ms.Write(tmp[..Varint.Write(tmp, (ulong)c.Protocol.Code)]);
            if (c.Protocol.IsVariableLength)
            {
                ms.Write(tmp[..Varint.Write(tmp, (ulong)c.Value.Length)]);
            }
            ms.Write(c.Value.Span);
        }
        return ms.ToArray();
    }

    public override string ToString() => _text ??= string.Concat(_components.Select(c => c.ToString()));

    public Multiaddr Encapsulate(Multiaddr other) => new([.. _components, .. other._components]);

    /// <summary>
    /// This address with one more component. Throws <see cref="ArgumentException"/> for a protocol this codec does
    /// not know or a value that is not valid for it (wrong size, not a peer id, a bad DNS name). The value is copied.
    /// </summary>
    public Multiaddr Encapsulate(MultiaddrProtocol protocol, ReadOnlyMemory<byte> value)
    {
        if (!ByCode.TryGetValue(protocol.Code, out var known) || known != protocol)
        {
            throw new ArgumentException($"unknown multiaddr protocol {protocol.Name} ({protocol.Code})", nameof(protocol));
        }
        if (!IsValidValue(known, value.Span))
        {
            throw new ArgumentException($"not a valid value for /{known.Name}", nameof(value));
        }
        return new([.. _components, new MultiaddrComponent(known, value.ToArray())]);
    }

    /// <summary>This address with <c>/p2p/&lt;peer&gt;</c> appended (or replaced).</summary>
    public Multiaddr WithPeer(Identity.PeerId peer) => WithoutPeer().Encapsulate(P2p, peer.ToBytes());

    /// <summary>This address without a trailing <c>/p2p/…</c> component.</summary>
    public Multiaddr WithoutPeer() =>
        _components.Length > 0 && _components[^1].Protocol == P2p ? new Multiaddr(_components[..^1]) : this;

    /// <summary>The peer id in a trailing <c>/p2p/…</c> component, if any.</summary>
    public Identity.PeerId? PeerId =>
        _components.Length > 0 && _components[^1].Protocol == P2p && Identity.PeerId.TryFromBytes(_components[^1].Value.Span, out var p) ? p : null;

    public MultiaddrComponent? Find(MultiaddrProtocol protocol)
    {
        foreach (var c in _components)
        {
            if (c.Protocol == protocol)
            {
                return c;
            }
        }
        return null;
    }

    /// <summary>The IP endpoint of an /ip4|ip6/…/tcp/… address, or null.</summary>
    public IPEndPoint? ToTcpEndPoint()
    {
        if (_components.Length < 2 || (_components[0].Protocol != Ip4 && _components[0].Protocol != Ip6) || _components[1].Protocol != Tcp)
        {
            return null;
        }
        return new IPEndPoint(new IPAddress(_components[0].Value.Span), BinaryPrimitives.ReadUInt16BigEndian(_components[1].Value.Span));
    }

    public static Multiaddr FromTcpEndPoint(IPEndPoint endPoint)
    {
        var ip = endPoint.Address.IsIPv4MappedToIPv6 ? endPoint.Address.MapToIPv4() : endPoint.Address;
        var port = new byte[2];
        BinaryPrimitives.WriteUInt16BigEndian(port, (ushort)endPoint.Port);
        return new Multiaddr([
            new MultiaddrComponent(ip.AddressFamily == AddressFamily.InterNetwork ? Ip4 : Ip6, ip.GetAddressBytes()),
            new MultiaddrComponent(Tcp, port),
        ]);
    }

    public bool Equals(Multiaddr? other) => other is not null && EncodedBytes.AsSpan().SequenceEqual(other.EncodedBytes);

    public override bool Equals(object? obj) => Equals(obj as Multiaddr);

    public override int GetHashCode()
    {
        var h = new HashCode();
        h.AddBytes(EncodedBytes);
        return h.ToHashCode();
    }

    public static bool operator ==(Multiaddr? a, Multiaddr? b) => a?.Equals(b) ?? b is null;

    public static bool operator !=(Multiaddr? a, Multiaddr? b) => !(a == b);
}
