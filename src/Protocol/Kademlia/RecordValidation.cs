using System.Text;
using Potluck.Protocol.Identity;

namespace Potluck.Protocol.Kademlia;

/// <summary>Checks and orders the values stored under one key namespace (go-libp2p-record's Validator).</summary>
public interface IRecordValidator
{
    /// <summary>True when <paramref name="value"/> may be stored under <paramref name="key"/>. Must not throw on any bytes.</summary>
    bool Validate(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value);

    /// <summary>The index of the best of several valid values for one key (newest, highest sequence…).</summary>
    int Select(ReadOnlySpan<byte> key, IReadOnlyList<byte[]> values);
}

/// <summary>
/// Validators by key namespace: a key <c>/ns/rest</c> is checked by the validator registered for <c>ns</c>.
/// Keys without a registered namespace are rejected, as go and js kad-dht reject records they cannot validate.
/// </summary>
public sealed class RecordValidatorRegistry
{
    /// <summary>Longest namespace accepted. 64 bytes.</summary>
    public const int MaxNamespaceLength = 64;

    private readonly Dictionary<string, IRecordValidator> _validators = new(StringComparer.Ordinal);

    /// <summary>A registry with the <c>pk</c> namespace (public keys checked against the peer id).</summary>
    public static RecordValidatorRegistry CreateDefault()
    {
        var registry = new RecordValidatorRegistry();
        registry.Add(PublicKeyRecordValidator.Namespace, new PublicKeyRecordValidator());
        return registry;
    }

    public IReadOnlyCollection<string> Namespaces => _validators.Keys;

    public void Add(string @namespace, IRecordValidator validator)
    {
        ArgumentException.ThrowIfNullOrEmpty(@namespace);
        if (@namespace.Contains('/') || @namespace.Length > MaxNamespaceLength)
        {
            throw new ArgumentException("a namespace is one path segment of at most 64 characters", nameof(@namespace));
        }
        _validators[@namespace] = validator;
    }

    /// <summary>Reads the namespace of <c>/ns/rest</c>; false for keys of any other shape.</summary>
    public static bool TryGetNamespace(ReadOnlySpan<byte> key, out string @namespace)
    {
        @namespace = "";
        if (key.Length < 3 || key[0] != (byte)'/')
        {
            return false;
        }
        var end = key[1..].IndexOf((byte)'/');
        if (end <= 0 || end > MaxNamespaceLength)
        {
            return false;
        }
        var ns = key.Slice(1, end);
        foreach (var b in ns)
        {
            if (b < 0x21 || b > 0x7e)
            {
                return false;
            }
        }
        @namespace = Encoding.ASCII.GetString(ns);
        return true;
    }

    public bool Validate(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value) =>
        TryGetNamespace(key, out var ns) && _validators.TryGetValue(ns, out var validator) && validator.Validate(key, value);

    /// <summary>The index of the best value, or -1 when the key has no validator or there are no values.</summary>
    public int Select(ReadOnlySpan<byte> key, IReadOnlyList<byte[]> values)
    {
        if (values.Count == 0 || !TryGetNamespace(key, out var ns) || !_validators.TryGetValue(ns, out var validator))
        {
            return -1;
        }
        var best = validator.Select(key, values);
        return best >= 0 && best < values.Count ? best : 0;
    }
}

/// <summary>
/// The <c>/pk/</c> namespace: key <c>/pk/&lt;peer id multihash bytes&gt;</c>, value a protobuf public key whose
/// peer id is that multihash. All valid values are equal, so <see cref="Select"/> takes the first.
/// </summary>
public sealed class PublicKeyRecordValidator : IRecordValidator
{
    public const string Namespace = "pk";

    private static readonly byte[] Prefix = "/pk/"u8.ToArray();

    public static byte[] KeyFor(PeerId peer) => [.. Prefix, .. peer.Bytes];

    public bool Validate(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value)
    {
        if (!key.StartsWith(Prefix) || !PeerId.TryFromBytes(key[Prefix.Length..], out var peer))
        {
            return false;
        }
        return value.Length <= PublicKey.MaxEncodedLength && PublicKey.TryFromProtobuf(value, out var publicKey) && peer.Matches(publicKey);
    }

    public int Select(ReadOnlySpan<byte> key, IReadOnlyList<byte[]> values) => 0;
}

/// <summary>A record was refused: no validator for its namespace, or the validator said no.</summary>
public sealed class RecordValidationException : Exception
{
    public RecordValidationException(string message) : base(message) { }
}
