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
    /// Decrypted bytes buffered for the application before the channel stops reading the connection
    /// (back-pressure). Default 1 MiB.
    /// </summary>
    public int MaxBufferedInbound { get; init; } = 1 << 20;

    /// <summary>Plaintext bytes the application may queue before its writes wait for encryption. Default 1 MiB.</summary>
    public int MaxBufferedOutbound { get; init; } = 1 << 20;
}
