using System.Buffers;
using System.IO.Pipelines;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Multistream;

/// <summary>
/// The input side of <see cref="MultistreamSelect.SelectOneLazyAsync"/>: before handing out data it consumes the
/// listener's header and the echo of the proposal. The negotiation messages are never copied: the first buffer
/// handed out is a slice of the inner reader's buffer that starts after them, so the caller's AdvanceTo consumes
/// them along with its own data. Once verified, every call goes straight to the inner reader.
/// </summary>
internal sealed class LazyNegotiationReader(PipeReader inner, string protocol, MultistreamOptions options) : PipeReader
{
    private enum Expect
    {
        Header,
        Echo,
        Nothing,
    }

    private Expect _expect = Expect.Header;

    public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        return _expect == Expect.Nothing ? inner.ReadAsync(cancellationToken) : VerifyThenReadAsync(cancellationToken);
    }

    private async ValueTask<ReadResult> VerifyThenReadAsync(CancellationToken ct)
    {
        while (_expect != Expect.Nothing)
        {
            var result = await inner.ReadAsync(ct);
            if (TryVerify(result, out var forwarded))
            {
                return forwarded;
            }
        }
        return await inner.ReadAsync(ct);
    }

    public override bool TryRead(out ReadResult result)
    {
        if (_expect == Expect.Nothing)
        {
            return inner.TryRead(out result);
        }
        if (inner.TryRead(out var innerResult) && TryVerify(innerResult, out result))
        {
            return true;
        }
        result = default;
        return false;
    }

    /// <summary>
    /// Consumes what negotiation messages <paramref name="result"/> holds. True with the caller's view of the buffer
    /// once verified and data (or the end) follows, or when the read was cancelled; false after advancing the inner
    /// reader past what it consumed when the caller has nothing to read yet.
    /// </summary>
    private bool TryVerify(ReadResult result, out ReadResult forwarded)
    {
        var buffer = result.Buffer;
        var reader = new SequenceReader<byte>(buffer);
        try
        {
            while (_expect != Expect.Nothing)
            {
                var status = MultistreamMessage.TryRead(ref reader, options.MaxMessageLength, out var text, out var error);
                if (status == DecodeStatus.Invalid)
                {
                    throw MultistreamSelect.Violation(error!);
                }
                if (status == DecodeStatus.NeedMoreData)
                {
                    break;
                }
                if (_expect == Expect.Header)
                {
                    MultistreamSelect.CheckHeader(text!);
                    _expect = Expect.Echo;
                }
                else if (text == protocol)
                {
                    _expect = Expect.Nothing;
                }
                else if (text == MultistreamSelect.NotAvailable)
                {
                    throw new ProtocolNotSupportedException([protocol]);
                }
                else
                {
                    throw MultistreamSelect.Violation(
                        $"the listener answered the lazy proposal with an unexpected message ({MultistreamSelect.Describe(text!)})");
                }
            }
        }
        catch
        {
            inner.AdvanceTo(reader.Position, buffer.End);
            throw;
        }

        // The caller's AdvanceTo on the slice handed out also consumes the negotiation messages before it.
        var rest = buffer.Slice(reader.Position);
        if (_expect == Expect.Nothing && (!rest.IsEmpty || result.IsCompleted || result.IsCanceled))
        {
            forwarded = new ReadResult(rest, result.IsCanceled, result.IsCompleted);
            return true;
        }
        if (result.IsCanceled)
        {
            // Hand out nothing of a half-read answer; AdvanceTo on this empty slice consumes the whole messages read.
            forwarded = new ReadResult(rest.Slice(0, 0), isCanceled: true, isCompleted: false);
            return true;
        }
        // Verified with nothing after it yet, or still waiting for the header or echo.
        inner.AdvanceTo(reader.Position, buffer.End);
        if (result.IsCompleted)
        {
            throw new PeerGoneException($"{MultistreamSelect.Name}: the stream ended before the listener confirmed the protocol");
        }
        forwarded = default;
        return false;
    }

    public override void AdvanceTo(SequencePosition consumed) => inner.AdvanceTo(consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined) => inner.AdvanceTo(consumed, examined);

    public override void CancelPendingRead() => inner.CancelPendingRead();

    public override void Complete(Exception? exception = null) => inner.Complete(exception);

    public override ValueTask CompleteAsync(Exception? exception = null) => inner.CompleteAsync(exception);
}
