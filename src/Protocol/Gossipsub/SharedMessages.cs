using System.Diagnostics.CodeAnalysis;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Gossipsub;

/// <summary>
/// Gossip messages equal by content, for <see cref="SharedValues"/> (a simulated mesh's nodes keep one instance of each
/// message they cached and forward): equal when every field's presence and value is (the six fields fix the message's
/// encoding byte for byte), never by id. A peer that sends other bytes under a cached message's id gets its own
/// instance, so a node keeps (and serves on IWANT) exactly the message it validated. The hash is over the fields'
/// bytes with the process's random seed (<see cref="HashCode"/>): a remote cannot aim messages at one slot.
/// </summary>
internal sealed class MessageContent : IEqualityComparer<Pb.Message>
{
    public static readonly MessageContent Instance = new();

    /// <summary>Whether a message may be shared: it carries only the schema's fields (see <see cref="Pb.Message.HasUnknownFields"/>).</summary>
    public static bool Shareable(Pb.Message message) => !message.HasUnknownFields;

    public bool Equals(Pb.Message? x, Pb.Message? y)
    {
        if (ReferenceEquals(x, y))
        {
            return true;
        }
        if (x is null || y is null || x.HasUnknownFields || y.HasUnknownFields)
        {
            return false;
        }
        return Presence(x) == Presence(y)
            && x.From == y.From && x.Seqno == y.Seqno && x.Topic == y.Topic
            && x.Signature == y.Signature && x.Key == y.Key && x.Data == y.Data;
    }

    public int GetHashCode([DisallowNull] Pb.Message m)
    {
        var h = new HashCode();
        h.Add(Presence(m));
        h.AddBytes(m.From.Span);
        h.AddBytes(m.Seqno.Span);
        h.Add(m.Topic, StringComparer.Ordinal);
        h.AddBytes(m.Data.Span);
        h.AddBytes(m.Signature.Span);
        h.AddBytes(m.Key.Span);
        return h.ToHashCode();
    }

    private static int Presence(Pb.Message m) =>
        (m.HasFrom ? 1 : 0) | (m.HasData ? 2 : 0) | (m.HasSeqno ? 4 : 0) | (m.HasTopic ? 8 : 0) | (m.HasSignature ? 16 : 0) | (m.HasKey ? 32 : 0);
}
