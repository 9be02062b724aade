namespace Potluck.Protocol.Multistream;

/// <summary>Limits on what the remote can make multistream-select do. Every one is checked before anything is allocated.</summary>
public sealed record MultistreamOptions
{
    /// <summary>The defaults: 1024-byte messages (as go- and js-libp2p), 1000 proposals (as rust-libp2p's protocol cap).</summary>
    public static MultistreamOptions Default { get; } = new();

    /// <summary>
    /// Largest message accepted, counting the trailing <c>'\n'</c> but not the varint prefix. Default 1024, the limit
    /// go-multistream and js-libp2p enforce, so any protocol id they can send fits.
    /// </summary>
    public int MaxMessageLength { get; init; } = 1024;

    /// <summary>
    /// How many proposals (including <c>ls</c> requests) a listener answers before it gives up on the negotiation.
    /// Default 1000, rust-libp2p's cap on protocols; every proposal costs the remote a round trip, so this only
    /// bounds how long a peer can keep a negotiation going.
    /// </summary>
    public int MaxProposals { get; init; } = 1000;
}
