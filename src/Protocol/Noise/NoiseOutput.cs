using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using Potluck.Protocol.Metrics;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Noise;

/// <summary>
/// A Noise channel's output, encrypted on the application's own turn: writes are staged in pooled segments
/// (<see cref="SegmentQueue"/>: none held between flushes), and a flush encrypts them straight into the connection's
/// output (frames that fill a 64 KiB buffer, a short segment coalesced with what follows) and flushes it there, batch by
/// batch, so back-pressure is the connection's own. No pump, no pipe. Staged plaintext beyond <c>limit</c> is encrypted
/// into the connection's output at once (not flushed), so no more than that is ever staged here.
/// <para>
/// Completing the writer encrypts what is staged and completes the connection's output (a half-close). After
/// <see cref="Close"/> (disposal, or a violation on the input) writes go nowhere and flushes throw a
/// <see cref="PeerGoneException"/>.
/// </para>
/// </summary>
internal sealed class NoiseOutput : PipeWriter
{
    private const int TagLength = NoiseCipherState.TagLength;
    // One flush of the connection per this much plaintext.
    private const int Batch = 256 * 1024;
    // A segment shorter than this is coalesced with at most this much of the following data (a small copy)
    // instead of becoming a tiny frame; the next frame then starts inside the following segment, copy-free.
    private const int CoalesceBelow = 4096;
    // Frames we send fill exactly one 64 KiB buffer (2-byte length, 65518 bytes, 16-byte tag), so the connection's
    // output packs one frame per pooled 64 KiB buffer instead of spilling each into a 128 KiB one.
    internal const int SendPlaintextLength = 64 * 1024 - NoiseFrame.HeaderLength - TagLength;
    // Staging segments of 64 KiB (pooled, held only from a write until its flush), as the pipe before had: a large write
    // becomes full frames.
    private const int MinimumSegmentSize = 64 * 1024;

    private readonly NoiseSecureChannel _channel;
    private readonly PipeWriter _transport;
    private readonly NoiseCipherState _send;
    private readonly ProtocolInstruments _instruments;
    private readonly int _limit;

    private SegmentQueue _plain;
    private bool _closed;         // disposal: writes go nowhere, flushes throw
    private bool _completed;      // the application completed this writer
    private bool _transportDone;  // the connection's output was completed
    private bool _inTransport;    // a flush is using the connection's output
    private TaskCompletionSource? _left;

    public NoiseOutput(NoiseSecureChannel channel, PipeWriter transport, NoiseCipherState send, ProtocolInstruments instruments, int limit)
    {
        _channel = channel;
        _transport = transport;
        _send = send;
        _instruments = instruments;
        _limit = limit;
    }

    private object Sync => this;

    /// <summary>Whether a pooled segment is held now (tests: a flushed channel holds none).</summary>
    internal bool HoldsMemory
    {
        get
        {
            lock (Sync)
            {
                return _plain.HoldsMemory;
            }
        }
    }

    public override Memory<byte> GetMemory(int sizeHint = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(sizeHint);
        lock (Sync)
        {
            if (_completed)
            {
                throw new InvalidOperationException("writing is not allowed after the writer was completed");
            }
            return _plain.GetMemory(sizeHint, MinimumSegmentSize);
        }
    }

    public override Span<byte> GetSpan(int sizeHint = 0) => GetMemory(sizeHint).Span;

    public override void Advance(int bytes)
    {
        lock (Sync)
        {
            if (_completed)
            {
                throw new InvalidOperationException("writing is not allowed after the writer was completed");
            }
            _plain.Advance(bytes);
            if (_closed)
            {
                _plain.Clear(); // after disposal, writes go nowhere
                return;
            }
            if (_plain.Uncommitted >= _limit && !_inTransport)
            {
                // Bounded staging: encrypt into the connection's output now; the flush sends it.
                _plain.Commit();
                EncryptLocked(long.MaxValue);
            }
        }
    }

    public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
    {
        lock (Sync)
        {
            if (_completed)
            {
                throw new InvalidOperationException("writing is not allowed after the writer was completed");
            }
            if (_closed)
            {
                _plain.Clear();
                return ValueTask.FromException<FlushResult>(new PeerGoneException("the Noise channel was closed"));
            }
            if (_inTransport)
            {
                throw new InvalidOperationException("a flush is already in progress on this channel");
            }
            _plain.Commit();
            _inTransport = true;
        }
        try
        {
            while (true)
            {
                bool more;
                lock (Sync)
                {
                    EncryptLocked(Batch);
                    more = _plain.Length > 0;
                }
                var flush = _transport.FlushAsync(cancellationToken);
                if (!flush.IsCompletedSuccessfully)
                {
                    return AwaitFlushAsync(flush, cancellationToken);
                }
                if (Flushed(flush.Result) is { } done)
                {
                    return new ValueTask<FlushResult>(done);
                }
                if (!more)
                {
                    return new ValueTask<FlushResult>(Leave(default));
                }
            }
        }
        catch (Exception e)
        {
            return ValueTask.FromException<FlushResult>(Failed(e));
        }
    }

    private async ValueTask<FlushResult> AwaitFlushAsync(ValueTask<FlushResult> flush, CancellationToken cancellationToken)
    {
        try
        {
            while (true)
            {
                if (Flushed(await flush.ConfigureAwait(false)) is { } done)
                {
                    return done;
                }
                bool more;
                lock (Sync)
                {
                    more = _plain.Length > 0;
                    if (more)
                    {
                        EncryptLocked(Batch);
                    }
                }
                if (!more)
                {
                    return Leave(default);
                }
                flush = _transport.FlushAsync(cancellationToken);
            }
        }
        catch (Exception e)
        {
            throw Failed(e);
        }
    }

    /// <summary>One flush of the connection's output ended: a result for the application when it ends the flush, else null.</summary>
    private FlushResult? Flushed(FlushResult flush)
    {
        if (flush.IsCompleted)
        {
            throw new PeerGoneException("the connection was closed");
        }
        if (flush.IsCanceled)
        {
            lock (Sync)
            {
                if (_closed)
                {
                    throw new PeerGoneException("the Noise channel was closed");
                }
            }
            return Leave(new FlushResult(isCanceled: true, isCompleted: false)); // the application's own CancelPendingFlush
        }
        return null;
    }

    /// <summary>The flush leaves the connection's output (completing it if the writer was completed or the channel closed meanwhile).</summary>
    private FlushResult Leave(FlushResult result)
    {
        lock (Sync)
        {
            LeaveLocked();
        }
        return result;
    }

    private void LeaveLocked()
    {
        _inTransport = false;
        if (_closed)
        {
            _plain.Clear();
            CompleteTransportLocked();
        }
        else if (_completed)
        {
            _plain.Commit();
            EncryptLocked(long.MaxValue);
            CompleteTransportLocked();
        }
        _left?.TrySetResult();
    }

    private Exception Failed(Exception e)
    {
        if (e is not OperationCanceledException)
        {
            if (e is not PeerGoneException)
            {
                _channel.LogTransportError(e);
                e = new PeerGoneException("the connection below the Noise channel failed", e);
            }
            lock (Sync)
            {
                _plain.Clear();
                _closed = true; // the connection is gone: later flushes fail at once
            }
        }
        Leave(default);
        return e;
    }

    /// <summary>Encrypts up to <paramref name="batch"/> of the staged plaintext into the connection's output (not flushed).</summary>
    private void EncryptLocked(long batch)
    {
        var remaining = _plain.Committed;
        if (remaining.IsEmpty)
        {
            _plain.Consume(0, keepTail: false);
            return;
        }
        long done = 0;
        long sent = 0;
        byte[]? scratch = null;
        try
        {
            while (!remaining.IsEmpty && done < batch)
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
                var span = _transport.GetSpan(frameLength);
                BinaryPrimitives.WriteUInt16BigEndian(span, (ushort)(length + TagLength));
                _send.Encrypt(default, plaintext, span[NoiseFrame.HeaderLength..frameLength]);
                _transport.Advance(frameLength);
                sent += frameLength;
                remaining = remaining.Slice(length);
                done += length;
            }
        }
        finally
        {
            if (scratch is not null)
            {
                ArrayPool<byte>.Shared.Return(scratch);
            }
        }
        _plain.Consume(done, keepTail: false);
        _instruments.BytesSent(sent);
    }

    public override void CancelPendingFlush()
    {
        lock (Sync)
        {
            if (_inTransport && !_transportDone)
            {
                _transport.CancelPendingFlush();
            }
        }
    }

    public override void Complete(Exception? exception = null)
    {
        lock (Sync)
        {
            if (_completed)
            {
                return;
            }
            _completed = true;
            if (_inTransport)
            {
                return; // the flush in progress encrypts the rest and completes the connection's output as it leaves
            }
            if (_closed)
            {
                _plain.Clear();
            }
            else
            {
                // Everything staged is encrypted and committed by the connection output's Complete: a half-close after it.
                _plain.Commit();
                EncryptLocked(long.MaxValue);
            }
            CompleteTransportLocked();
        }
    }

    private void CompleteTransportLocked()
    {
        if (!_transportDone)
        {
            _transportDone = true;
            _transport.Complete();
        }
    }

    /// <summary>
    /// Disposal or a violation on the input: flushes fail from now on and a flush waiting on the connection is woken. The
    /// task completes once no flush uses the connection's output any more (it is then completed; nothing staged is sent).
    /// </summary>
    public Task Close()
    {
        lock (Sync)
        {
            _closed = true;
            if (!_inTransport)
            {
                _plain.Clear();
                CompleteTransportLocked();
                return Task.CompletedTask;
            }
            _left ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            if (!_transportDone)
            {
                _transport.CancelPendingFlush();
            }
            return _left.Task;
        }
    }
}
