using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Security;

namespace Potluck.Protocol.Noise;

/// <summary>
/// The transport phase of a Noise session as an <see cref="IDuplexPipe"/>. Writes are encrypted on the writer's
/// thread when it flushes, straight into the connection's output (frames of at most 65519 plaintext bytes, one
/// connection flush per batch; see <see cref="EncryptingWriter"/>); one pump runs per channel: the read pump decrypts whole frames from the connection
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
    private readonly Pipe _inbound;
    private readonly EncryptingWriter _output;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _readLoop;
    private int _disposed;
    private int _transportClosed;

    public NoiseSecureChannel(IDuplexPipe transport, NoiseCipherState send, NoiseCipherState receive,
                              NoiseRemoteIdentity remote, NoiseOptions options, ILogger logger)
    {
        _transport = transport;
        _send = send;
        _receive = receive;
        _logger = logger;
        RemotePublicKey = remote.Key;
        RemotePeer = remote.Peer;
        RemoteEarlyMuxers = remote.EarlyMuxers;
        var inboundLimit = Math.Max(options.MaxBufferedInbound, 2 * NoiseFrame.MaxMessageLength);
        _inbound = new Pipe(new PipeOptions(pauseWriterThreshold: inboundLimit, resumeWriterThreshold: inboundLimit / 2,
                                            minimumSegmentSize: 16 * 1024, useSynchronizationContext: false));
        _output = new EncryptingWriter(this);
        _readLoop = Task.Run(ReadLoopAsync);
    }

    public PeerId RemotePeer { get; }

    public PublicKey RemotePublicKey { get; }

    public IReadOnlyList<string> RemoteEarlyMuxers { get; }

    /// <summary>Decrypted bytes from the remote.</summary>
    public PipeReader Input => _inbound.Reader;

    /// <summary>Bytes to encrypt and send to the remote.</summary>
    public PipeWriter Output => _output;

    private async Task ReadLoopAsync()
    {
        var input = _transport.Input;
        var writer = _inbound.Writer;
        Exception? error = null;
        try
        {
            while (true)
            {
                var result = await input.ReadAsync(_stop.Token).ConfigureAwait(false);
                var buffer = result.Buffer;
                var (status, consumed, decrypted) = DecryptFrames(buffer, writer);
                var remaining = buffer.Slice(consumed);
                if (status == DecodeStatus.Invalid)
                {
                    throw new ProtocolViolationException(Protocol, "transport message shorter than its tag");
                }
                // When the batch stopped at the flush threshold, whole frames may remain: look again at once.
                input.AdvanceTo(consumed, status == DecodeStatus.NeedMoreData ? buffer.End : consumed);
                if (decrypted > 0 || status == DecodeStatus.Done)
                {
                    var flush = await writer.FlushAsync(_stop.Token).ConfigureAwait(false);
                    if (flush.IsCompleted)
                    {
                        break; // the application stopped reading
                    }
                }
                if (result.IsCompleted && status == DecodeStatus.NeedMoreData)
                {
                    if (!remaining.IsEmpty)
                    {
                        throw new ProtocolViolationException(Protocol, "connection closed inside a transport message");
                    }
                    break;
                }
            }
        }
        catch (ProtocolViolationException e)
        {
            _logger.TransportViolation(e.Reason);
            error = e;
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
        {
            _logger.TransportError(e);
            error = e;
        }
        catch (Exception e)
        {
            _logger.Unexpected(e);
            error = e;
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
            _output.Stop();
            await CloseTransportAsync().ConfigureAwait(false);
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
                    throw new ProtocolViolationException(Protocol, "transport message failed authentication");
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

    /// <summary>Encrypts up to a batch of queued plaintext straight into the connection's output.</summary>
    private SequencePosition EncryptFrames(in ReadOnlySequence<byte> buffer, PipeWriter output, out int frames)
    {
        frames = 0;
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
            await disposable.DisposeAsync().ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        _stop.Cancel();
        _output.Stop();
        await _readLoop.ConfigureAwait(false);
        await CloseTransportAsync().ConfigureAwait(false);
        _output.DisposeCipher();
        _receive.Dispose();
    }

    /// <summary>
    /// <see cref="Output"/>: plaintext is staged in a pipe and encrypted on the writer's own thread when it flushes,
    /// straight into the connection's output, whose flush then carries the writer's back-pressure (no pump task and
    /// no thread hop between the writer and the connection). Completing it encrypts what is staged and half-closes
    /// the connection; after <see cref="Stop"/> (disposal, or a violation on the read side) flushes and new writes
    /// fail with an <see cref="IOException"/>. One writer at a time, as for any <see cref="PipeWriter"/>.
    /// </summary>
    private sealed class EncryptingWriter : PipeWriter
    {
        private readonly NoiseSecureChannel _channel;
        private readonly Pipe _staged = new(new PipeOptions(pauseWriterThreshold: 0, minimumSegmentSize: 64 * 1024,
                                                            readerScheduler: PipeScheduler.Inline, writerScheduler: PipeScheduler.Inline,
                                                            useSynchronizationContext: false));
        private readonly Lock _cipherGate = new(); // encryption against the cipher's disposal
        private bool _cipherDisposed;
        private volatile bool _stopped;
        private int _completed;

        public EncryptingWriter(NoiseSecureChannel channel) => _channel = channel;

        public void Stop()
        {
            _stopped = true;
            _channel._transport.Output.CancelPendingFlush();
        }

        public void DisposeCipher()
        {
            lock (_cipherGate)
            {
                _cipherDisposed = true;
                _channel._send.Dispose();
            }
        }

        public override void Advance(int bytes) => _staged.Writer.Advance(bytes);

        public override Memory<byte> GetMemory(int sizeHint = 0)
        {
            ThrowIfStopped();
            return _staged.Writer.GetMemory(sizeHint);
        }

        public override Span<byte> GetSpan(int sizeHint = 0)
        {
            ThrowIfStopped();
            return _staged.Writer.GetSpan(sizeHint);
        }

        public override void CancelPendingFlush() => _channel._transport.Output.CancelPendingFlush();

        public override async ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
        {
            ThrowIfStopped();
            await _staged.Writer.FlushAsync(CancellationToken.None).ConfigureAwait(false); // never waits: no threshold
            var output = _channel._transport.Output;
            while (true)
            {
                var more = EncryptStaged(output, out var frames);
                if (frames == 0)
                {
                    return new FlushResult(isCanceled: false, isCompleted: false);
                }
                var flush = await output.FlushAsync(cancellationToken).ConfigureAwait(false);
                if (_stopped)
                {
                    throw new IOException("the Noise channel was closed");
                }
                if (flush.IsCanceled || flush.IsCompleted || !more)
                {
                    return flush;
                }
            }
        }

        public override void Complete(Exception? exception = null)
        {
            if (Interlocked.Exchange(ref _completed, 1) != 0)
            {
                return;
            }
            var output = _channel._transport.Output;
            try
            {
                if (!_stopped)
                {
                    _staged.Writer.FlushAsync().AsTask().GetAwaiter().GetResult(); // completes synchronously: no threshold
                    while (EncryptStaged(output, out _))
                    {
                    }
                }
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
            {
                _channel._logger.TransportError(e);
            }
            finally
            {
                _staged.Writer.Complete();
                _staged.Reader.Complete();
                try
                {
                    // Completing commits whatever was encrypted but not yet flushed, then half-closes.
                    output.Complete();
                }
                catch (InvalidOperationException)
                {
                }
            }
        }

        /// <summary>Encrypts up to one batch of what is staged; true when more remains.</summary>
        private bool EncryptStaged(PipeWriter output, out int frames)
        {
            if (!_staged.Reader.TryRead(out var result))
            {
                frames = 0;
                return false;
            }
            var buffer = result.Buffer;
            SequencePosition consumed;
            lock (_cipherGate)
            {
                if (_cipherDisposed || _stopped)
                {
                    _staged.Reader.AdvanceTo(buffer.Start, buffer.End);
                    throw new IOException("the Noise channel was closed");
                }
                consumed = _channel.EncryptFrames(buffer, output, out frames);
            }
            _staged.Reader.AdvanceTo(consumed);
            return !buffer.Slice(consumed).IsEmpty;
        }

        private void ThrowIfStopped()
        {
            if (_stopped)
            {
                throw new IOException("the Noise channel was closed");
            }
        }
    }
}
