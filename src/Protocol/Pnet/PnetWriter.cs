using System.IO.Pipelines;

namespace Potluck.Protocol.Pnet;

/// <summary>
/// The sending half of <see cref="PnetProtector"/>: hands out the raw writer's own memory and encrypts the bytes in
/// place when they are committed with <see cref="Advance"/>, so nothing is copied or allocated per write.
/// </summary>
internal sealed class PnetWriter : PipeWriter
{
    private readonly PipeWriter _inner;
    private readonly PnetCipher _cipher;
    private Memory<byte> _lent;

    public PnetWriter(PipeWriter inner, byte[] key, byte[] nonce)
    {
        _inner = inner;
        _cipher = new PnetCipher(key, nonce);
        var span = inner.GetSpan(PnetProtector.NonceSize);
        nonce.CopyTo(span);
        inner.Advance(PnetProtector.NonceSize);
    }

    public override Memory<byte> GetMemory(int sizeHint = 0) => _lent = _inner.GetMemory(sizeHint);

    public override Span<byte> GetSpan(int sizeHint = 0) => GetMemory(sizeHint).Span;

    public override void Advance(int bytes)
    {
        if ((uint)bytes > (uint)_lent.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(bytes), "Advance went past the memory from the last GetMemory/GetSpan");
        }
        var plain = _lent.Span[..bytes];
        _cipher.Transform(plain);
        _lent = _lent[bytes..];
        _inner.Advance(bytes);
    }

    public override ValueTask<FlushResult> WriteAsync(ReadOnlyMemory<byte> source, CancellationToken cancellationToken = default)
    {
        Encrypt(source.Span);
        return _inner.FlushAsync(cancellationToken);
    }

    /// <summary>Encrypts <paramref name="source"/> straight into the raw writer's buffers.</summary>
    private void Encrypt(ReadOnlySpan<byte> source)
    {
        _lent = default;
        while (!source.IsEmpty)
        {
            var destination = _inner.GetSpan();
            var n = Math.Min(destination.Length, source.Length);
            _cipher.Transform(source[..n], destination);
            _inner.Advance(n);
            source = source[n..];
        }
    }

    public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default) => _inner.FlushAsync(cancellationToken);

    public override void CancelPendingFlush() => _inner.CancelPendingFlush();

    public override bool CanGetUnflushedBytes => _inner.CanGetUnflushedBytes;

    public override long UnflushedBytes => _inner.UnflushedBytes;

    public override void Complete(Exception? exception = null)
    {
        _lent = default;
        _inner.Complete(exception);
    }

    public override ValueTask CompleteAsync(Exception? exception = null)
    {
        _lent = default;
        return _inner.CompleteAsync(exception);
    }
}
