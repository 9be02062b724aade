using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace Potluck.Scheduler.Accounting;

/// <summary>
/// The half-blocks one node has signed or verified lately, by the SHA-256 of their exact envelope bytes, so that the same
/// bytes are not verified twice there. A node meets one block several times: a payer's proposal to one provider comes to
/// the other provider as the block before the payer's next proposal, then again in the first provider's gossip; a
/// requester hears its own proposals and the agreements it just checked back from the payee; a proposal resent after a
/// lost answer comes again. Whether bytes are a validly signed block (<see cref="SignedBlock.Decode"/>) is a pure function
/// of the bytes and the size limits, so a remembered answer is the answer: a hit requires the same envelope bytes, byte for
/// byte (any other signature, key or payload is other bytes and is verified), and the size limits are checked on every
/// call. Only blocks that checked are kept (a failure is never remembered, so a flood of bad blocks costs the flooder a
/// verification each, as before); the oldest entry is dropped beyond <see cref="Capacity"/>. One per node, never shared
/// between nodes (a benchmark running three nodes in one process must not let one node's check count for another's).
/// </summary>
internal sealed class CheckedBlocks
{
    /// <summary>Blocks remembered (about 1.3 KiB each at most: the block, its bytes and the key).</summary>
    public const int Capacity = 4096;

    private readonly Lock _gate = new();
    // Both grow as blocks come (empty until then): sized for Capacity up front they were 36 KiB per node before its first
    // block, a tenth of an idle simulated node's heap.
    private readonly Dictionary<Digest, SignedBlock> _blocks = [];
    private readonly Queue<Digest> _order = new();
    private long _verified;
    private long _remembered;

    /// <summary>Signature checks made here (blocks decoded and verified, valid or not).</summary>
    public long Verified => Interlocked.Read(ref _verified);

    /// <summary>Blocks taken as already checked (no signature check).</summary>
    public long Remembered => Interlocked.Read(ref _remembered);

    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _blocks.Count;
            }
        }
    }

    /// <summary>
    /// Exactly <see cref="SignedBlock.Decode"/>, without the signature check when these bytes were signed or checked here
    /// lately.
    /// </summary>
    public BlockStatus Decode(byte[] envelopeBytes, ChainOptions options, out SignedBlock? block)
    {
        if (TryGet(envelopeBytes, options, out block))
        {
            return BlockStatus.Valid;
        }
        Interlocked.Increment(ref _verified);
        var status = SignedBlock.Decode(envelopeBytes, options, out block);
        if (status == BlockStatus.Valid)
        {
            Remember(block!);
        }
        return status;
    }

    /// <summary>The block these exact bytes are, when they were signed or checked here lately and fit <paramref name="options"/>' limits.</summary>
    public bool TryGet(byte[] envelopeBytes, ChainOptions options, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out SignedBlock? block)
    {
        ArgumentNullException.ThrowIfNull(envelopeBytes);
        ArgumentNullException.ThrowIfNull(options);
        block = null;
        if (envelopeBytes.Length > options.MaxBlockBytes)
        {
            return false;
        }
        SignedBlock? known;
        lock (_gate)
        {
            _blocks.TryGetValue(Digest.Of(envelopeBytes), out known);
        }
        if (known is null || !known.EnvelopeBytes.AsSpan().SequenceEqual(envelopeBytes) || known.Payload.Length > options.MaxPayloadBytes)
        {
            return false;
        }
        Interlocked.Increment(ref _remembered);
        block = known;
        return true;
    }

    /// <summary>Remembers a block this node signed (or checked some other way): a <see cref="SignedBlock"/> is always signed by its author.</summary>
    public void Remember(SignedBlock block)
    {
        ArgumentNullException.ThrowIfNull(block);
        var digest = Digest.Of(block.EnvelopeBytes);
        lock (_gate)
        {
            if (!_blocks.TryAdd(digest, block))
            {
                return;
            }
            _order.Enqueue(digest);
            while (_blocks.Count > Capacity)
            {
                _blocks.Remove(_order.Dequeue());
            }
        }
    }

    private readonly record struct Digest(ulong A, ulong B, ulong C, ulong D)
    {
        public static Digest Of(ReadOnlySpan<byte> bytes)
        {
            Span<byte> hash = stackalloc byte[SHA256.HashSizeInBytes];
            SHA256.HashData(bytes, hash);
            var words = MemoryMarshal.Cast<byte, ulong>(hash);
            return new Digest(words[0], words[1], words[2], words[3]);
        }
    }
}
