using System.IO.Pipelines;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Metrics;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Security;

namespace Potluck.Protocol.Noise;

/// <summary>
/// The transport phase of a Noise session as an <see cref="IDuplexPipe"/>, framed on the caller's turn: no pump task,
/// no pipe and no cancellation source per channel. The application's reads decrypt whole frames from the connection's
/// input into pooled segments they hand out (<see cref="NoiseInput"/>); its flushes encrypt what it wrote straight into the
/// connection's output, in frames of at most 65519 plaintext bytes, and flush it there (<see cref="NoiseOutput"/>), so
/// back-pressure both ways is the connection's own. A frame that fails authentication fails the read (and every later
/// one) with a <see cref="ProtocolViolationException"/> and closes the connection (decrypted data the application has
/// not read yet is dropped with it).
/// <para>Closing: completing <see cref="Output"/> encrypts what is staged and half-closes the connection;
/// <see cref="DisposeAsync"/> is abortive (the application's reads then end, its flushes fail with an
/// <see cref="IOException"/>) and also disposes the connection when it is <see cref="IAsyncDisposable"/>. As
/// with any pipe, the application completes its own ends (<see cref="Input"/> reader, <see cref="Output"/> writer).</para>
/// </summary>
internal sealed class NoiseSecureChannel : ISecureChannel
{
    private readonly IDuplexPipe _transport;
    private readonly NoiseCipherState _send;
    private readonly NoiseCipherState _receive;
    private readonly ILogger _logger;
    private readonly NoiseInput _input;
    private readonly NoiseOutput _output;
    private Task? _violationClose;
    private int _disposed;
    private int _transportClosed;

    public NoiseSecureChannel(IDuplexPipe transport, NoiseCipherState send, NoiseCipherState receive,
                              NoiseRemoteIdentity remote, NoiseOptions options, NodeRuntime runtime, ILogger logger, ProtocolInstruments instruments)
    {
        _transport = transport;
        _send = send;
        _receive = receive;
        _logger = logger;
        RemotePublicKey = runtime.SharedValues.Share(remote.Key);
        RemotePeer = runtime.SharedValues.Share(remote.Peer); // the id's bytes as other nodes of this process hold them (a simulation's)
        RemoteEarlyMuxers = remote.EarlyMuxers;
        var inboundLimit = Math.Max(options.MaxBufferedInbound, 2 * NoiseFrame.MaxMessageLength);
        var outboundLimit = Math.Max(options.MaxBufferedOutbound, 2 * NoiseFrame.MaxMessageLength);
        _input = new NoiseInput(this, transport.Input, receive, instruments, inboundLimit, runtime.PipeScheduler);
        _output = new NoiseOutput(this, transport.Output, send, instruments, outboundLimit);
    }

    public PeerId RemotePeer { get; }

    public PublicKey RemotePublicKey { get; }

    public IReadOnlyList<string> RemoteEarlyMuxers { get; }

    /// <summary>Decrypted bytes from the remote.</summary>
    public PipeReader Input => _input;

    /// <summary>Bytes to encrypt and send to the remote.</summary>
    public PipeWriter Output => _output;

    /// <summary>The connection below failed under a read or a flush (logged at Debug; the read or flush fails with it).</summary>
    internal void LogTransportError(Exception e)
    {
        if (Failures.Classify(e).Kind == FailureKind.Internal)
        {
            _logger.Unexpected(e);
        }
        else
        {
            _logger.TransportError(e);
        }
    }

    /// <summary>Bad framing or a MAC failure on the input (which already failed): flushes fail, and the connection is closed.</summary>
    internal void OnViolation(string reason)
    {
        _logger.TransportViolation(reason);
        _violationClose = CloseAfterViolationAsync();
    }

    private async Task CloseAfterViolationAsync()
    {
        await _output.Close().ConfigureAwait(false);
        await CloseTransportAsync().ConfigureAwait(false);
    }

    private async ValueTask CloseTransportAsync()
    {
        if (Interlocked.Exchange(ref _transportClosed, 1) != 0)
        {
            return;
        }
        if (_transport is IAsyncDisposable disposable)
        {
            await disposable.DisposeAsync();
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        // Wake a read or flush waiting on the connection and wait until neither uses it, then close it.
        await _input.Close();
        await _output.Close();
        if (_violationClose is { } closing)
        {
            await closing;
        }
        await CloseTransportAsync();
        _send.Dispose();
        _receive.Dispose();
    }
}
