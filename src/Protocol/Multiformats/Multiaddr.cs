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
/// transport's <c>memory</c> protocol (code 777, a 64-bit big-endian id, as rust-libp2p uses it).
/// Decoders are bounded by <see cref="MaxBytes"/> and <see cref="MaxComponents"/>.
/// </summary>
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
    public static readonly MultiaddrProtocol QuicV1 = new(0x01CC, "quic-v1", 0);
    public static readonly MultiaddrProtocol Memory = new(0x0309, "memory", 64);

    private static readonly MultiaddrProtocol[] All = [Ip4, Tcp, Udp, Ip6, Dns, Dns4, Dns6, DnsAddr, P2p, P2pCircuit, QuicV1, Memory];
    private static readonly Dictionary<int, MultiaddrProtocol> ByCode = All.ToDictionary(p => p.Code);
    private static readonly Dictionary<string, MultiaddrProtocol> ByName = All.ToDictionary(p => p.Name, StringComparer.Ordinal);

    private readonly MultiaddrComponent[] _components;
    private byte[]? _bytes;
    private string? _text;

    private Multiaddr(MultiaddrComponent[] components) => _components = components;

    public static Multiaddr Empty { get; } = new([]);

    public IReadOnlyList<MultiaddrComponent> Components => _components;

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
        var components = new List<MultiaddrComponent>();
        for (var i = 1; i < parts.Length; i++)
        {
            if (components.Count >= MaxComponents)
            {
                error = $"more than {MaxComponents} components";
                return false;
            }
            if (!ByName.TryGetValue(parts[i], out var protocol))
            {
                error = $"unknown protocol '{parts[i]}'";
                return false;
            }
            if (!protocol.HasValue)
            {
                components.Add(new MultiaddrComponent(protocol, ReadOnlyMemory<byte>.Empty));
                continue;
            }
            if (++i >= parts.Length || parts[i].Length == 0)
            {
                error = $"'{protocol.Name}' needs a value";
                return false;
            }
            if (!TryParseValue(protocol, parts[i], out var value, out error))
            {
                return false;
            }
            components.Add(new MultiaddrComponent(protocol, value));
        }
        addr = new Multiaddr([.. components]);
        if (addr.ToBytes().Length > MaxBytes)
        {
            addr = Empty;
            error = "too long";
            return false;
        }
        return true;
    }

    private static string Truncate(string? s) => s is null ? "" : s.Length > 100 ? s[..100] + "…" : s;

    private static bool TryParseValue(MultiaddrProtocol protocol, string text, out byte[] value, out string error)
    {
        value = [];
        error = "";
        switch (protocol.Name)
        {
            case "ip4":
                if (IPAddress.TryParse(text, out var ip4) && ip4.AddressFamily == AddressFamily.InterNetwork && text.Count(c => c == '.') == 3)
                {
                    value = ip4.GetAddressBytes();
                    return true;
                }
                error = $"'{Truncate(text)}' is not an IPv4 address";
                return false;
            case "ip6":
                if (IPAddress.TryParse(text, out var ip6) && ip6.AddressFamily == AddressFamily.InterNetworkV6)
                {
                    value = ip6.GetAddressBytes();
                    return true;
                }
                error = $"'{Truncate(text)}' is not an IPv6 address";
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
                error = $"'{Truncate(text)}' is not a peer id";
                return false;
            default: // dns names
                if (text.Length > 255)
                {
                    error = "DNS name longer than 255 characters";
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

    /// <summary>Decodes the binary form, bounded by <see cref="MaxBytes"/> and <see cref="MaxComponents"/>.</summary>
    public static bool TryFromBytes(ReadOnlySpan<byte> bytes, out Multiaddr addr)
    {
        addr = Empty;
        if (bytes.Length > MaxBytes)
        {
            return false;
        }
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
            if (protocol == P2p && !Identity.PeerId.TryFromBytes(value, out _))
            {
                return false;
            }
            if ((protocol == Dns || protocol == Dns4 || protocol == Dns6 || protocol == DnsAddr) && (size == 0 || !IsUtf8(value)))
            {
                return false;
            }
            components.Add(new MultiaddrComponent(protocol, value.ToArray()));
            offset += size;
        }
        addr = new Multiaddr([.. components]);
        return true;
    }

    private static bool IsUtf8(ReadOnlySpan<byte> value)
    {
        try
        {
            _ = new UTF8Encoding(false, true).GetString(value);
            return true;
        }
        catch (DecoderFallbackException)
        {
            return false;
        }
    }

    public static Multiaddr FromBytes(ReadOnlySpan<byte> bytes) =>
        TryFromBytes(bytes, out var addr) ? addr : throw new FormatException("invalid binary multiaddr");

    public byte[] ToBytes()
    {
        if (_bytes is not null)
        {
            return _bytes;
        }
        using var ms = new MemoryStream();
        Span<byte> tmp = stackalloc byte[Varint.MaxBytes];
        foreach (var c in _components)
        {
            ms.Write(tmp[..Varint.Write(tmp, (ulong)c.Protocol.Code)]);
            if (c.Protocol.IsVariableLength)
            {
                ms.Write(tmp[..Varint.Write(tmp, (ulong)c.Value.Length)]);
            }
            ms.Write(c.Value.Span);
        }
        return _bytes = ms.ToArray();
    }

    public override string ToString() => _text ??= string.Concat(_components.Select(c => c.ToString()));

    public Multiaddr Encapsulate(Multiaddr other) => new([.. _components, .. other._components]);

    public Multiaddr Encapsulate(MultiaddrProtocol protocol, ReadOnlyMemory<byte> value) =>
        new([.. _components, new MultiaddrComponent(protocol, value)]);

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

    public bool Equals(Multiaddr? other) => other is not null && ToBytes().AsSpan().SequenceEqual(other.ToBytes());

    public override bool Equals(object? obj) => Equals(obj as Multiaddr);

    public override int GetHashCode()
    {
        var h = new HashCode();
        h.AddBytes(ToBytes());
        return h.ToHashCode();
    }

    public static bool operator ==(Multiaddr? a, Multiaddr? b) => a?.Equals(b) ?? b is null;

    public static bool operator !=(Multiaddr? a, Multiaddr? b) => !(a == b);
}
