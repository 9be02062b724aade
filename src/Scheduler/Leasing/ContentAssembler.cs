using System.Buffers;
using System.Security.Cryptography;

namespace Potluck.Scheduler.Leasing;

/// <summary>
/// Collects chunks of content whose size and SHA-256 are known in advance. Chunks must arrive in order; a chunk
/// wholly before the received prefix is a harmless retry and is ignored. Memory grows with bytes received, never
/// with the declared size.
/// </summary>
internal sealed class ContentAssembler
{
    private readonly byte[] _hash;
    private readonly long _size;
    private readonly ArrayBufferWriter<byte> _buffer;

    public ContentAssembler(byte[] hash, long size)
    {
        _hash = hash;
        _size = size;
        _buffer = new ArrayBufferWriter<byte>((int)Math.Clamp(size, 1, 64 << 10));
    }

    public long Received => _buffer.WrittenCount;

    public bool IsComplete => Received == _size;

    public ReadOnlyMemory<byte> Content => _buffer.WrittenMemory;

    public bool HashMatches() => SHA256.HashData(_buffer.WrittenSpan).AsSpan().SequenceEqual(_hash);

    /// <summary>Adds a chunk; returns an error when it is out of order, overflows the size, or completes content with the wrong hash.</summary>
    public string? Add(long offset, ReadOnlySpan<byte> chunk)
    {
        if (offset + chunk.Length <= Received)
        {
            return null;
        }
        if (offset != Received)
        {
            return "data chunk out of order";
        }
        if (offset + chunk.Length > _size)
        {
            return "data beyond the declared size";
        }
        _buffer.Write(chunk);
        if (IsComplete && !HashMatches())
        {
            return "content does not match its hash";
        }
        return null;
    }
}
