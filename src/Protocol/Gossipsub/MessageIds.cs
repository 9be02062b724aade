using Potluck.Protocol.Multiformats;

namespace Potluck.Protocol.Gossipsub;

/// <summary>Message id functions to plug into <see cref="GossipsubOptions.MessageIdFunction"/>.</summary>
public static class MessageIds
{
    /// <summary>
    /// The id js-libp2p's gossipsub (<c>@libp2p/gossipsub</c>, <c>msgIdFnStrictSign</c>) computes by default: the
    /// author's public key in its protobuf encoding followed by the seqno as 8 big-endian bytes. The spec's and
    /// go-libp2p's default (<see cref="GossipsubOptions.MessageIdFunction"/> null) is the peer id bytes followed by
    /// the seqno; for Ed25519 and secp256k1 authors the peer id is an identity multihash of that same protobuf, so
    /// the two ids differ only by the multihash's two header bytes. Nodes of one mesh must agree on ids, or IHAVE
    /// names messages the other side does not recognise: it asks for them again (IWANT) and, when the reply's id
    /// differs from the one it asked for, counts a broken promise (behaviour penalty P₇) against the sender.
    /// Limit: for authors whose peer id hashes the key (RSA), js uses the message's <c>key</c> field, which this
    /// function does not see; it then falls back to the spec's id.
    /// </summary>
    public static byte[] JsLibp2pCompatible(string topic, ReadOnlySpan<byte> from, ReadOnlySpan<byte> seqno, ReadOnlySpan<byte> data)
    {
        if (from.Length <= 2 || from[0] != 0x00
            || Varint.TryRead(from[1..], out var length, out var consumed) != DecodeStatus.Done
            || length != (ulong)(from.Length - 1 - consumed))
        {
            var spec = new byte[from.Length + seqno.Length];
            from.CopyTo(spec);
            seqno.CopyTo(spec.AsSpan(from.Length));
            return spec;
        }
        var key = from[(1 + consumed)..];
        // js turns the seqno into a bigint and writes it back as at least 8 big-endian bytes.
        var significant = seqno.TrimStart((byte)0);
        var seqnoLength = Math.Max(8, significant.Length);
        var id = new byte[key.Length + seqnoLength];
        key.CopyTo(id);
        significant.CopyTo(id.AsSpan(id.Length - significant.Length));
        return id;
    }
}
