using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Noise;

/// <summary>Settings of <see cref="NoiseSecurity"/>. Every limit on what the remote sends has a documented default.</summary>
public sealed record NoiseOptions
{
    /// <summary>
    /// Stream muxer protocol ids offered in our handshake payload (Noise extension <c>stream_muxers</c>), in
    /// order of preference. Default: empty (nothing offered; multistream-select negotiates the muxer).
    /// Read once, when the <see cref="NoiseSecurity"/> is constructed (the signed payload is built then).
    /// </summary>
    public IReadOnlyList<string> EarlyMuxers { get; init; } = [];

    /// <summary>Most stream muxer names accepted in the remote's handshake payload. Default 16.</summary>
    public int MaxRemoteEarlyMuxers { get; init; } = 16;

    /// <summary>Longest stream muxer name (UTF-8 bytes) accepted from the remote. Default 256.</summary>
    public int MaxEarlyMuxerLength { get; init; } = 256;

    /// <summary>
    /// Decrypted bytes held for the application (decrypted only when it reads; the rest waits in the connection,
    /// whose own buffer holds the remote back). A reader that has examined this much unconsumed and asks for more fails
    /// with a <see cref="ProtocolViolationException"/> (<see cref="ViolationCode.TooLarge"/>) that closes the connection.
    /// At least two frames. Default 1 MiB.
    /// </summary>
    public int MaxBufferedInbound { get; init; } = 1 << 20;

    /// <summary>
    /// Plaintext the application may write without flushing before the channel encrypts it into the connection's
    /// output (not flushed there; a flush's wait is the connection's). At least two frames. Default 1 MiB.
    /// </summary>
    public int MaxBufferedOutbound { get; init; } = 1 << 20;
}
