using System.Buffers;
using System.IO.Pipelines;
using System.Runtime.InteropServices;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Pnet;

/// <summary>
/// The receiving half of <see cref="PnetProtector"/>: waits for the remote's 24-byte nonce, then decrypts bytes in
/// place in the raw reader's buffer the first time they are handed out, and hands out that same buffer (after the
/// nonce). It tracks how much of the unconsumed buffer is already plaintext so no byte is decrypted twice.
/// </summary>
internal sealed class PnetReader(PipeReader inner, byte[] key) : PipeReader
{
    private PnetCipher? _cipher;

    /// <summary>"/multistream/1.0.0\n" with its length prefix: what a peer without a swarm key sends first.</summary>
    private static ReadOnlySpan<byte> PlainMultistreamHeader => "\u0013/multistream/1.0.0\n"u8;

    /// <summary>The buffer last handed out; the caller's AdvanceTo positions point into it.</summary>
    private ReadOnlySequence<byte> _handedOut;

    /// <summary>How many bytes from the start of the unconsumed data (after the nonce) are already decrypted.</summary>
    private long _plain;

    public override async ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        while (true)
        {
            var result = await inner.ReadAsync(cancellationToken);
            if (TryTransform(result, out var forwarded))
            {
                return forwarded;
            }
        }
    }

    public override bool TryRead(out ReadResult result)
    {
        if (inner.TryRead(out var innerResult) && TryTransform(innerResult, out result))
        {
            return true;
        }
        result = default;
        return false;
    }

    /// <summary>
    /// Decrypts what is new in <paramref name="result"/>. False, after advancing the inner reader, when the caller
    /// would get an empty buffer that is neither completed nor cancelled (only the nonce, or part of it, arrived).
    /// </summary>
    private bool TryTransform(ReadResult result, out ReadResult forwarded)
    {
        var buffer = result.Buffer;
        if (_cipher is null)
        {
            if (buffer.Length < PnetProtector.NonceSize)
            {
                if (result.IsCompleted && !buffer.IsEmpty)
                {
                    inner.AdvanceTo(buffer.Start, buffer.End);
                    throw new ProtocolViolationException(
                        "pnet", $"the connection ended after {buffer.Length} of the {PnetProtector.NonceSize} nonce bytes", ViolationCode.Malformed, BlastRadius.Connection);
                }
                return Forward(buffer.Slice(0, 0), result, out forwarded);
            }
            var nonce = buffer.Slice(0, PnetProtector.NonceSize).ToArray();
            if (nonce.AsSpan().StartsWith(PlainMultistreamHeader))
            {
                // A random nonce starts so with probability 2^-160: the remote speaks libp2p without a swarm key. Said
                // as a multistream violation, which is how both sides recognise a likely swarm-key mismatch, whatever
                // the remote sent after it (a stranger that hangs up after its first bytes used to look merely gone).
                inner.AdvanceTo(buffer.Start, buffer.End);
                throw new ProtocolViolationException("multistream-select",
                    "the remote sent a plain multistream-select header where a private network's nonce belongs: it has no swarm key",
                    ViolationCode.Malformed, BlastRadius.Connection);
            }
            _cipher = new PnetCipher(key, nonce);
            buffer = buffer.Slice(PnetProtector.NonceSize);
            _plain = 0;
        }

        if (buffer.Length > _plain)
        {
            foreach (var segment in buffer.Slice(_plain))
            {
                // The raw reader's buffers are ours until AdvanceTo: decrypt in place.
                var span = MemoryMarshal.AsMemory(segment).Span;
                _cipher.Transform(span);
            }
            _plain = buffer.Length;
        }
        return Forward(buffer, result, out forwarded);
    }

    private bool Forward(ReadOnlySequence<byte> buffer, ReadResult result, out ReadResult forwarded)
    {
        if (buffer.IsEmpty && !result.IsCompleted && !result.IsCanceled)
        {
            inner.AdvanceTo(buffer.Start, result.Buffer.End);
            forwarded = default;
            return false;
        }
        _handedOut = buffer;
        forwarded = new ReadResult(buffer, result.IsCanceled, result.IsCompleted);
        return true;
    }

    public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
    {
        _plain -= _handedOut.Slice(_handedOut.Start, consumed).Length;
        _handedOut = default;
        inner.AdvanceTo(consumed, examined);
    }

    public override void CancelPendingRead() => inner.CancelPendingRead();

    public override void Complete(Exception? exception = null) => inner.Complete(exception);

    public override ValueTask CompleteAsync(Exception? exception = null) => inner.CompleteAsync(exception);
}
