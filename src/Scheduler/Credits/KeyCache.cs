using System.Collections.Concurrent;
using System.Diagnostics.CodeAnalysis;
using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Credits;

/// <summary>
/// Remembers peer ids and public keys already parsed from bytes. Parsing an Ed25519 key (or a peer id that embeds
/// one) decompresses and validates a curve point, which costs about as much as half a signature check; a lease
/// names the same two parties in its terms, attestation, receipt and ledger rows, so each would otherwise be parsed
/// about ten times. Both parses are pure functions of the bytes, so a remembered answer is the answer; only
/// successes are kept, and the cache is emptied when it reaches <see cref="Capacity"/> entries. Shared by the
/// ledgers of every node in a process, which is harmless for a pure function.
/// </summary>
internal static class KeyCache
{
    /// <summary>Entries kept per cache before it is emptied.</summary>
    public const int Capacity = 4096;

    private static readonly ConcurrentDictionary<byte[], PeerId> Peers = new(BytesComparer.Instance);
    private static readonly ConcurrentDictionary<byte[], PublicKey> Keys = new(BytesComparer.Instance);

    /// <summary>Exactly <see cref="PeerId.TryFromBytes"/>.</summary>
    public static bool TryPeer(ReadOnlySpan<byte> bytes, out PeerId peer)
    {
        var lookup = Peers.GetAlternateLookup<ReadOnlySpan<byte>>();
        if (lookup.TryGetValue(bytes, out peer))
        {
            return true;
        }
        if (!PeerId.TryFromBytes(bytes, out peer))
        {
            return false;
        }
        Remember(Peers, bytes, peer);
        return true;
    }

    /// <summary>Exactly <see cref="PublicKey.TryFromProtobuf"/>.</summary>
    public static bool TryPublicKey(ReadOnlySpan<byte> protobuf, [NotNullWhen(true)] out PublicKey? key)
    {
        var lookup = Keys.GetAlternateLookup<ReadOnlySpan<byte>>();
        if (lookup.TryGetValue(protobuf, out key))
        {
            return true;
        }
        if (!PublicKey.TryFromProtobuf(protobuf, out var parsed))
        {
            key = null;
            return false;
        }
        Remember(Keys, protobuf, parsed);
        key = parsed;
        return true;
    }

    private static void Remember<T>(ConcurrentDictionary<byte[], T> cache, ReadOnlySpan<byte> bytes, T value)
    {
        if (cache.Count >= Capacity)
        {
            cache.Clear();
        }
        cache.TryAdd(bytes.ToArray(), value);
    }

    private sealed class BytesComparer : IEqualityComparer<byte[]>, IAlternateEqualityComparer<ReadOnlySpan<byte>, byte[]>
    {
        public static readonly BytesComparer Instance = new();

        public bool Equals(byte[]? x, byte[]? y) => x is null ? y is null : y is not null && x.AsSpan().SequenceEqual(y);

        public int GetHashCode(byte[] obj) => GetHashCode((ReadOnlySpan<byte>)obj);

        public bool Equals(ReadOnlySpan<byte> alternate, byte[] other) => alternate.SequenceEqual(other);

        public int GetHashCode(ReadOnlySpan<byte> alternate)
        {
            var hash = new HashCode();
            hash.AddBytes(alternate);
            return hash.ToHashCode();
        }

        public byte[] Create(ReadOnlySpan<byte> alternate) => alternate.ToArray();
    }
}
