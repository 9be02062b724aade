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
/// The transport phase of a Noise session as an <see cref="IDuplexPipe"/>. Two pumps run per channel:
/// the write pump encrypts what the application wrote straight into the connection's output (frames of at
/// most 65519 plaintext bytes, one flush per batch); the read pump decrypts whole frames from the connection
/// straight into the application's input pipe. A frame that fails authentication completes <see cref="Input"/>
/// with a <see cref="ProtocolViolationException"/> and closes the connection (decrypted data the application
/// has not read yet is dropped with it).
/// <para>Closing: completing <see cref="Output"/> half-closes the connection once everything queued is sent;
/// <see cref="DisposeAsync"/> is abortive (the application's reads then end, its writes fail with an
/// <see cref="IOException"/>) and also disposes the connection when it is <see cref="IAsyncDisposable"/>. As
/// with any pipe, the application completes its own ends (<see cref="Input"/> reader, <see cref="Output"/> writer).</para>
/// </summary>
internal sealed class NoiseSecureChannel : ISecureChannel
{
    private const string Protocol = NoiseSecurity.ProtocolId;
    private const int TagLength = NoiseCipherState.TagLength;
    private const int FlushThreshold = 256 * 1024;
    // A segment shorter than this is coalesced with at most this much of the following data (a small copy)
    // instead of becoming a tiny frame; the next frame then starts inside the following segment, copy-free.
    private const int CoalesceBelow = 4096;
    // Frames we send fill exactly one 64 KiB buffer (2-byte length, 65518 bytes, 16-byte tag), so the connection's
    // output pipe packs one frame per pooled 64 KiB buffer instead of spilling each into a 128 KiB one.
    private const int SendPlaintextLength = 64 * 1024 - NoiseFrame.HeaderLength - TagLength;

    private readonly IDuplexPipe _transport;
    private readonly NoiseCipherState _send;
    private readonly NoiseCipherState _receive;
    private readonly ILogger _logger;
    private readonly ProtocolInstruments _instruments;
    private readonly Pipe _inbound;
    private readonly Pipe _outbound;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _writeLoop;
    private readonly Task _readLoop;
    private int _disposed;
    private int _transportClosed;

    public NoiseSecureChannel(IDuplexPipe transport, NoiseCipherState send, NoiseCipherState receive,
                              NoiseRemoteIdentity remote, NoiseOptions options, NodeRuntime runtime, ILogger logger, ProtocolInstruments instruments)
    {
        _instruments = instruments;
        _transport = transport;
        _send = send;
        _receive = receive;
        _logger = logger;
        RemotePublicKey = remote.Key;
        RemotePeer = remote.Peer;
        RemoteEarlyMuxers = remote.EarlyMuxers;
        var inboundLimit = Math.Max(options.MaxBufferedInbound, 2 * NoiseFrame.MaxMessageLength);
        var outboundLimit = Math.Max(options.MaxBufferedOutbound, 2 * NoiseFrame.MaxMessageLength);
        // The outbound pipe's reader (the write loop) resumes inline: it encrypts what the muxer's writer flushed on that writer's
        // thread and hands it to the transport there (whose send loop is inline too), with no thread-pool item between two steps
        // of one pump (about four per lease). The inbound pipe's reader is the application's (the muxer, or whatever negotiates
        // on the channel): it resumes on the runtime's scheduler, so nothing of it ever runs inside the read loop, and a reader
        // that blocks cannot stall the decryption it waits for. Writers held back by a full pipe resume on the scheduler. The
        // write loop's awaits do not capture the context of the thread that ran it inline (a flusher's synchronization context
        // is not the loop's).
        var pipes = runtime.PipeScheduler;
        _inbound = new Pipe(new PipeOptions(readerScheduler: pipes, writerScheduler: pipes, pauseWriterThreshold: inboundLimit,
                                            resumeWriterThreshold: inboundLimit / 2, minimumSegmentSize: 16 * 1024, useSynchronizationContext: false));
        _outbound = new Pipe(new PipeOptions(readerScheduler: PipeScheduler.Inline, writerScheduler: pipes, pauseWriterThreshold: outboundLimit,
                                             resumeWriterThreshold: outboundLimit / 2, minimumSegmentSize: 64 * 1024, useSynchronizationContext: false));
        // The channel's own pumps: they end on their own, log their own failures, and disposal awaits both.
        _writeLoop = runtime.StartLoop(WriteLoopAsync);
        _readLoop = runtime.StartLoop(ReadLoopAsync);
    }

    public PeerId RemotePeer { get; }

    public PublicKey RemotePublicKey { get; }

    public IReadOnlyList<string> RemoteEarlyMuxers { get; }

    /// <summary>Decrypted bytes from the remote.</summary>
    public PipeReader Input => _inbound.Reader;

    /// <summary>Bytes to encrypt and send to the remote.</summary>
    public PipeWriter Output => _outbound.Writer;

    private async Task ReadLoopAsync()
    {
        var input = _transport.Input;
        var writer = _inbound.Writer;
        Exception? error = null;
        try
        {
            while (true)
            {
                var result = await input.ReadAsync(_stop.Token);
                var buffer = result.Buffer;
                var (status, consumed, decrypted) = DecryptFrames(buffer, writer);
                var remaining = buffer.Slice(consumed);
                if (!consumed.Equals(buffer.Start))
                {
                    _instruments.BytesReceived(buffer.Length - remaining.Length);
                }
                if (status == DecodeStatus.Invalid)
                {
                    throw new ProtocolViolationException(Protocol, "transport message shorter than its tag", ViolationCode.Malformed, BlastRadius.Connection);
                }
                // When the batch stopped at the flush threshold, whole frames may remain: look again at once.
                input.AdvanceTo(consumed, status == DecodeStatus.NeedMoreData ? buffer.End : consumed);
                if (decrypted > 0 || status == DecodeStatus.Done)
                {
                    var flush = await writer.FlushAsync(_stop.Token);
                    if (flush.IsCompleted)
                    {
                        break; // the application stopped reading
                    }
                }
                if (result.IsCompleted && status == DecodeStatus.NeedMoreData)
                {
                    if (!remaining.IsEmpty)
                    {
                        throw new ProtocolViolationException(Protocol, "connection closed inside a transport message", ViolationCode.Malformed, BlastRadius.Connection);
                    }
                    break;
                }
            }
        }
        catch (Exception e)
        {
            error = Failed(e);
        }
        finally
        {
            input.Complete();
            writer.Complete(error);
        }
        if (error is ProtocolViolationException)
        {
            // Bad framing or a MAC failure closes the connection.
            _stop.Cancel();
            await _writeLoop;
            await CloseTransportAsync();
        }
    }

    /// <summary>
    /// The one catch site of each pump: a violation (bad framing, a MAC failure: the whole connection) at Debug, the
    /// connection below ending at Debug, our own close quietly, anything else as a bug. Returns what the application's
    /// side of the pipe fails with (null: a clean end).
    /// </summary>
    private Exception? Failed(Exception e)
    {
        var failure = Failures.Classify(e, _stop.Token);
        switch (failure.Kind)
        {
            case FailureKind.Cancelled when _stop.IsCancellationRequested:
                return null;
            case FailureKind.ProtocolViolation:
                _logger.TransportViolation(failure.Reason);
                return e;
            case FailureKind.Internal:
                _logger.Unexpected(e);
                return e;
            default:
                _logger.TransportError(e);
                return e as PeerGoneException ?? new PeerGoneException("the connection below the Noise channel failed", e);
        }
    }

    /// <summary>Decrypts whole frames until the data runs out or a batch is big enough to flush.</summary>
    private (DecodeStatus Status, SequencePosition Consumed, int Decrypted) DecryptFrames(in ReadOnlySequence<byte> buffer, PipeWriter writer)
    {
        var consumed = buffer.Start;
        var decrypted = 0;
        byte[]? scratch = null;
        try
        {
            while (true)
            {
                var status = NoiseFrame.TryRead(buffer.Slice(consumed), TagLength, out var frame, out var end);
                if (status != DecodeStatus.Done)
                {
                    return (status, consumed, decrypted);
                }
                var length = (int)frame.Length - TagLength;
                ReadOnlySpan<byte> ciphertext;
                if (frame.IsSingleSegment)
                {
                    ciphertext = frame.FirstSpan;
                }
                else
                {
                    scratch ??= ArrayPool<byte>.Shared.Rent(NoiseFrame.MaxMessageLength);
                    frame.CopyTo(scratch);
                    ciphertext = scratch.AsSpan(0, (int)frame.Length);
                }
                var destination = writer.GetSpan(Math.Max(length, 1));
                if (!_receive.TryDecrypt(default, ciphertext, destination))
                {
                    throw new ProtocolViolationException(Protocol, "transport message failed authentication", ViolationCode.BadSignature, BlastRadius.Connection);
                }
                writer.Advance(length);
                decrypted += length;
                consumed = end;
                if (decrypted >= FlushThreshold)
                {
                    return (DecodeStatus.Done, consumed, decrypted);
                }
            }
        }
        finally
        {
            if (scratch is not null)
            {
                ArrayPool<byte>.Shared.Return(scratch);
            }
        }
    }

    private async Task WriteLoopAsync()
    {
        var reader = _outbound.Reader;
        var output = _transport.Output;
        Exception? error = null;
        try
        {
            while (true)
            {
                var result = await reader.ReadAsync(_stop.Token).ConfigureAwait(false);
                var buffer = result.Buffer;
                var consumed = EncryptFrames(buffer, output, out var frames, out var sent);
                reader.AdvanceTo(consumed);
                if (frames > 0)
                {
                    _instruments.BytesSent(sent);
                    var flush = await output.FlushAsync(_stop.Token).ConfigureAwait(false);
                    if (flush.IsCompleted)
                    {
                        error = new PeerGoneException("the connection was closed");
                        break;
                    }
                }
                if (result.IsCompleted && buffer.Slice(consumed).IsEmpty)
                {
                    break;
                }
            }
        }
        catch (Exception e)
        {
            error = Failed(e);
        }
        finally
        {
            // Complete commits whatever was encrypted but not yet flushed.
            output.Complete();
            reader.Complete(error ?? (_stop.IsCancellationRequested ? new PeerGoneException("the Noise channel was closed") : null));
        }
    }

    /// <summary>Encrypts up to a batch of queued plaintext straight into the connection's output.</summary>
    private SequencePosition EncryptFrames(in ReadOnlySequence<byte> buffer, PipeWriter output, out int frames, out long sent)
    {
        frames = 0;
        sent = 0;
        var remaining = buffer;
        long batch = 0;
        byte[]? scratch = null;
        try
        {
            while (!remaining.IsEmpty && batch < FlushThreshold)
            {
                var first = remaining.FirstSpan;
                var length = (int)Math.Min(remaining.Length, SendPlaintextLength);
                ReadOnlySpan<byte> plaintext;
                if (first.Length >= length)
                {
                    plaintext = first[..length];
                }
                else if (first.Length >= CoalesceBelow)
                {
                    length = first.Length;
                    plaintext = first;
                }
                else
                {
                    // Copy the short tail and only a little of what follows: copying a whole frame's worth here,
                    // as every frame after a segment's short tail would, doubled the send path's memory traffic.
                    length = Math.Min(length, first.Length + CoalesceBelow);
                    scratch ??= ArrayPool<byte>.Shared.Rent(SendPlaintextLength);
                    remaining.Slice(0, length).CopyTo(scratch);
                    plaintext = scratch.AsSpan(0, length);
                }
                var frameLength = NoiseFrame.HeaderLength + length + TagLength;
                var span = output.GetSpan(frameLength);
                BinaryPrimitives.WriteUInt16BigEndian(span, (ushort)(length + TagLength));
                _send.Encrypt(default, plaintext, span[NoiseFrame.HeaderLength..frameLength]);
                output.Advance(frameLength);
                sent += frameLength;
                remaining = remaining.Slice(length);
                batch += length;
                frames++;
            }
            return remaining.Start;
        }
        finally
        {
            if (scratch is not null)
            {
                ArrayPool<byte>.Shared.Return(scratch);
            }
        }
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
        _stop.Cancel();
        await _writeLoop;
        await _readLoop;
        await CloseTransportAsync();
        _send.Dispose();
        _receive.Dispose();
    }
}
