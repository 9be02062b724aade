using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Metrics;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Security;

namespace Potluck.Protocol.Noise;

/// <summary>
/// libp2p Noise (<c>/noise</c>), https://github.com/libp2p/specs/blob/master/noise/README.md:
/// <c>Noise_XX_25519_ChaChaPoly_SHA256</c> with an empty prologue, every message framed by a 16-bit big-endian
/// length, the libp2p identity proved by a signed <c>NoiseHandshakePayload</c> in messages 2 and 3, and the
/// <c>stream_muxers</c> extension carried both ways (<see cref="NoiseOptions.EarlyMuxers"/>,
/// <see cref="ISecureChannel.RemoteEarlyMuxers"/>).
/// <para>
/// Choices the spec leaves open: one static Noise key pair is generated per <see cref="NoiseSecurity"/>
/// instance (never stored) and its signed payload is reused by every handshake, as the spec allows;
/// <c>webtransport_certhashes</c> is ignored; the payload of message 1 is ignored. A failed or cancelled
/// handshake completes both ends of the connection's pipes (and disposes it when it is
/// <see cref="IAsyncDisposable"/>). The handshake timeout is the caller's <see cref="CancellationToken"/>.
/// </para>
/// </summary>
public sealed class NoiseSecurity : ISecurityProtocol
{
    public const string ProtocolId = "/noise";

    private readonly X25519KeyPair _static;
    private readonly byte[] _payload;
    private readonly NoiseOptions _options;
    private readonly NodeRuntime _runtime;
    private readonly ILogger _logger;
    private readonly ILogger _channelLogger;
    private readonly ProtocolInstruments _instruments;

    /// <param name="instruments">Where the channels count their bytes (the node's; own ones when not given).</param>
    public NoiseSecurity(ISigner identity, NoiseOptions options, NodeRuntime runtime, ILoggerFactory loggers, ProtocolInstruments? instruments = null)
        : this((identity ?? throw new ArgumentNullException(nameof(identity))).PublicKey, data => identity.Sign(data), options, runtime, loggers, instruments)
    {
    }

    /// <summary>An identity of any key type, given as its public key and a signing function (tests).</summary>
    internal NoiseSecurity(PublicKey identity, Func<byte[], byte[]> sign, NoiseOptions options, NodeRuntime runtime, ILoggerFactory loggers,
        ProtocolInstruments? instruments = null)
    {
        _instruments = instruments ?? ProtocolInstruments.Detached();
        ArgumentNullException.ThrowIfNull(identity);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(runtime);
        ArgumentNullException.ThrowIfNull(loggers);
        _options = options;
        _runtime = runtime;
        _logger = loggers.CreateLogger<NoiseSecurity>();
        _channelLogger = loggers.CreateLogger<NoiseSecureChannel>();
        _static = X25519KeyPair.Generate(runtime.SecureRandom);
        var signature = sign(NoisePayload.SignedData(_static.PublicKey));
        _payload = NoisePayload.Encode(identity, signature, options.EarlyMuxers);
        if (_payload.Length > NoiseFrame.MaxMessageLength - 100)
        {
            throw new ArgumentException("the handshake payload does not fit a Noise message; offer fewer early muxers", nameof(options));
        }
        LocalPeer = identity.ToPeerId();
    }

    public PeerId LocalPeer { get; }

    string ISecurityProtocol.ProtocolId => ProtocolId;

    public async ValueTask<ISecureChannel> SecureAsync(IDuplexPipe insecure, bool initiator, PeerId? expectedRemote, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(insecure);
        var state = new NoiseHandshakeState(initiator, _static, ReadOnlySpan<byte>.Empty, X25519KeyPair.Generate(_runtime.SecureRandom));
        var message = ArrayPool<byte>.Shared.Rent(NoiseFrame.MaxMessageLength);
        try
        {
            NoiseRemoteIdentity remote;
            if (initiator)
            {
                await WriteMessageAsync(state, [], insecure.Output, ct);
                var length = await ReadMessageAsync(insecure.Input, message, ct);
                remote = ReadPayload(state, message, length, expectedRemote);
                await WriteMessageAsync(state, _payload, insecure.Output, ct);
            }
            else
            {
                var length = await ReadMessageAsync(insecure.Input, message, ct);
                ReadFirst(state, message, length);
                await WriteMessageAsync(state, _payload, insecure.Output, ct);
                length = await ReadMessageAsync(insecure.Input, message, ct);
                remote = ReadPayload(state, message, length, expectedRemote);
            }
            var (send, receive) = state.Split();
            _logger.HandshakeCompleted(remote.Peer, initiator, remote.EarlyMuxers.Count);
            return new NoiseSecureChannel(insecure, send, receive, remote, _options, _runtime, _channelLogger, _instruments);
        }
        catch (Exception e)
        {
            // Logged here at Debug (the caller decides what the failure means for the dial) and rethrown.
            if (Failures.Classify(e, ct).Kind == FailureKind.ProtocolViolation)
            {
                _logger.HandshakeViolation(e.Message);
            }
            else
            {
                _logger.HandshakeAborted(e);
            }
            await CloseAsync(insecure);
            throw;
        }
        finally
        {
            state.Dispose();
            ArrayPool<byte>.Shared.Return(message); // wire bytes only: nothing secret
        }
    }

    private static void ReadFirst(NoiseHandshakeState state, byte[] message, int length)
    {
        var payload = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            state.ReadMessage(message.AsSpan(0, length), payload);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(payload);
        }
    }

    private NoiseRemoteIdentity ReadPayload(NoiseHandshakeState state, byte[] message, int length, PeerId? expectedRemote)
    {
        var payload = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            var payloadLength = state.ReadMessage(message.AsSpan(0, length), payload);
            var remote = NoisePayload.Verify(payload.AsSpan(0, payloadLength), state.RemoteStaticKey, _options);
            if (expectedRemote is { IsEmpty: false } expected && expected != remote.Peer)
            {
                throw new PeerMismatchException(expected, remote.Peer);
            }
            return remote;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(payload);
        }
    }

    private static async ValueTask WriteMessageAsync(NoiseHandshakeState state, byte[] payload, PipeWriter output, CancellationToken ct)
    {
        WriteFrame(state, payload, output);
        var flush = await output.FlushAsync(ct);
        if (flush.IsCompleted)
        {
            throw new PeerGoneException("the connection closed during the Noise handshake");
        }
    }

    private static void WriteFrame(NoiseHandshakeState state, byte[] payload, PipeWriter output)
    {
        var length = state.MessageLength(payload.Length);
        var span = output.GetSpan(NoiseFrame.HeaderLength + length);
        BinaryPrimitives.WriteUInt16BigEndian(span, (ushort)length);
        state.WriteMessage(payload, span[NoiseFrame.HeaderLength..]);
        output.Advance(NoiseFrame.HeaderLength + length);
    }

    /// <summary>Reads one framed handshake message into <paramref name="destination"/> (65535 bytes); returns its length.</summary>
    private static async ValueTask<int> ReadMessageAsync(PipeReader input, byte[] destination, CancellationToken ct)
    {
        while (true)
        {
            var result = await input.ReadAsync(ct);
            var buffer = result.Buffer;
            if (NoiseFrame.TryRead(buffer, 0, out var message, out var end) == DecodeStatus.Done)
            {
                message.CopyTo(destination);
                input.AdvanceTo(end);
                return (int)message.Length;
            }
            if (result.IsCompleted)
            {
                input.AdvanceTo(buffer.Start, buffer.End);
                throw new PeerGoneException("the connection closed during the Noise handshake");
            }
            if (result.IsCanceled)
            {
                ct.ThrowIfCancellationRequested();
            }
            input.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    private static async ValueTask CloseAsync(IDuplexPipe insecure)
    {
        try
        {
            insecure.Input.Complete();
            insecure.Output.Complete();
            if (insecure is IAsyncDisposable disposable)
            {
                await disposable.DisposeAsync();
            }
        }
        catch (Exception e) when (Failures.Classify(e).Kind != FailureKind.Internal)
        {
            // Closing is best effort; the handshake's own failure is what the caller sees.
        }
    }
}
