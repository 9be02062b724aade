using System.Buffers.Binary;
using Potluck.Protocol.Identity;

namespace Potluck.Protocol.Gossipsub;

/// <summary>A message id: opaque bytes compared by value (by default <c>from</c> ‖ <c>seqno</c>).</summary>
public readonly struct MessageId : IEquatable<MessageId>
{
    private readonly byte[]? _bytes;

    public MessageId(byte[] bytes) => _bytes = bytes;

    public ReadOnlySpan<byte> Span => _bytes ?? [];

    public byte[] ToArray() => (byte[])(_bytes ?? []).Clone();

    internal byte[] Raw => _bytes ?? [];

    public bool Equals(MessageId other) => Span.SequenceEqual(other.Span);

    public override bool Equals(object? obj) => obj is MessageId m && Equals(m);

    public override int GetHashCode()
    {
        var h = new HashCode();
        h.AddBytes(Span);
        return h.ToHashCode();
    }

    public override string ToString() => Convert.ToHexString(Span);

    public static bool operator ==(MessageId a, MessageId b) => a.Equals(b);

    public static bool operator !=(MessageId a, MessageId b) => !a.Equals(b);
}

/// <summary>A message delivered to the application (and what a validator sees).</summary>
/// <param name="Topic">The topic it was published to.</param>
/// <param name="Data">The payload.</param>
/// <param name="Id">Its message id.</param>
/// <param name="Author">The signing author (<c>from</c>); null under <see cref="SignaturePolicy.StrictNoSign"/>.</param>
/// <param name="SequenceNumber">The author's sequence number, if any.</param>
/// <param name="ReceivedFrom">The peer that forwarded it to us (our own id for our own messages).</param>
public sealed record GossipMessage(string Topic, ReadOnlyMemory<byte> Data, MessageId Id, PeerId? Author, ulong? SequenceNumber, PeerId ReceivedFrom)
{
    /// <summary>
    /// What the topic's validator made of this message (its decoded, checked form), for the subscriber it is delivered to:
    /// the router validates a message once and delivers this same object, so the application need not decode it twice.
    /// Set by the validator, never sent; it lives as long as the message does (until read from the subscription's bounded
    /// buffer). Null when no validator set it (a node's own message delivered to it unvalidated).
    /// </summary>
    public object? Validated { get; internal set; }

    /// <summary>
    /// The protocol a peer's identify must list for this message to be forwarded to it, advertised to it in IHAVE or
    /// served to it on IWANT (a message older nodes would refuse: <see cref="GossipsubRouter.Speaks"/>). Set by the
    /// validator that accepts it, from what the message holds, so every node that reads it the same way restricts it the
    /// same way; never sent. Null: any subscriber.
    /// </summary>
    public string? Audience { get; internal set; }

    internal static ulong? ReadSeqno(ReadOnlySpan<byte> seqno) =>
        seqno.Length is > 0 and <= 8 ? ReadPadded(seqno) : null;

    private static ulong ReadPadded(ReadOnlySpan<byte> s)
    {
        Span<byte> b = stackalloc byte[8];
        b.Clear();
        s.CopyTo(b[(8 - s.Length)..]);
        return BinaryPrimitives.ReadUInt64BigEndian(b);
    }
}
