namespace Potluck.Protocol.Gossipsub.Pb;

internal sealed partial class Message
{
    /// <summary>
    /// Whether the message carried fields this schema does not know (kept and re-encoded as they came). Such a message is
    /// never shared (<see cref="Gossipsub.MessageContent"/>): the known fields and their presence fix its encoding, unknown
    /// ones need not.
    /// </summary>
    internal bool HasUnknownFields => _unknownFields is not null;
}
