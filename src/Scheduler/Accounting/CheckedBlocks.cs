using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace Potluck.Scheduler.Accounting;

/// <summary>
/// The half-blocks one node has signed or verified lately, as the SHA-256 of their exact envelope bytes, so that the same
/// bytes are not verified twice there. A node meets one block several times: a payer's proposal to one provider comes to
/// the other provider as the block before the payer's next proposal, then again in the first provider's gossip; a
/// requester hears its own proposals and the agreements it just checked back from the payee; a proposal resent after a
/// lost answer comes again. Whether bytes are a validly signed block (<see cref="SignedBlock.Decode"/>) is a pure function
/// of the bytes and the size limits, so a remembered answer is the answer: a hit requires the same envelope bytes (the
/// same SHA-256: other bytes that pass would take a SHA-256 collision, the bound Bitcoin Core's signature cache rests on
/// too; any other signature, key or payload is other bytes and is verified), and the size limits are checked on every
/// call. Only the digest is kept, not the block: a hit decodes the bytes again without the signature check
/// (<see cref="SignedBlock.DecodeChecked"/>: several times cheaper than a verification, scripts/bench/ChainBench), so an
/// entry is about 40 bytes (its digest in a ring, a 4-byte place in an open-addressing index of twice the ring's slots)
/// instead of about 1.2 KiB with the decoded block. Only blocks that checked are kept (a failure is never
/// remembered, so a flood of bad blocks costs the flooder a verification each, as before); the oldest entry is dropped
/// beyond <see cref="Capacity"/>. One per node, never shared between nodes (a benchmark running three nodes in one
/// process must not let one node's check count for another's).
/// </summary>
internal sealed class CheckedBlocks
{
    /// <summary>
    /// Digests remembered: 40 bytes each (the ring's 32-byte slot, two 4-byte index slots), 40 KiB when full (a
    /// <c>HashSet</c> beside the ring took about 80). Measured at 200
    /// nodes (README, "Strangers' payment blocks"), every hit came within 64 blocks of its first check, and 99.5 % of
    /// what a node checks is strangers' gossiped payments that never come again: a larger cap would hold mostly those.
    /// </summary>
    public const int Capacity = 1024;

    private readonly Lock _gate = new();
    // Both grow as blocks come (empty until then), the set only as far as the ring: sized for Capacity up front they would
    // cost every node, idle or not, what only a busy one needs.
    private Digest[] _order = []; // the digests; oldest first from _oldest once full
    private int[] _index = []; // open addressing (linear probing): a digest's place in _order + 1, 0 empty; twice _order's slots
    private int _count;
    private int _oldest;
    private long _verified;
    private long _remembered;

    /// <summary>Signature checks made here (blocks decoded and verified, valid or not).</summary>
    public long Verified => Interlocked.Read(ref _verified);

    /// <summary>Blocks taken as already checked (no signature check).</summary>
    public long Remembered => Interlocked.Read(ref _remembered);

    /// <summary>Slots allocated for entries: the ring's and the index's (3 × <see cref="Capacity"/> once full, and fixed from then on).</summary>
    internal int Slots
    {
        get
        {
            lock (_gate)
            {
                return _order.Length + _index.Length;
            }
        }
    }

    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _count;
            }
        }
    }

    /// <summary>
    /// Exactly <see cref="SignedBlock.Decode"/>, without the signature check when these bytes were signed or checked here
    /// lately.
    /// </summary>
    public BlockStatus Decode(byte[] envelopeBytes, ChainOptions options, out SignedBlock? block) => Decode(envelopeBytes, options, out block, remember: null);

    /// <summary>
    /// As <see cref="Decode(byte[], ChainOptions, out SignedBlock?)"/>; a block verified here is remembered only when
    /// <paramref name="remember"/> (null: always) says it may come again.
    /// </summary>
    public BlockStatus Decode(byte[] envelopeBytes, ChainOptions options, out SignedBlock? block, Func<SignedBlock, bool>? remember)
    {
        ArgumentNullException.ThrowIfNull(envelopeBytes);
        ArgumentNullException.ThrowIfNull(options);
        Digest? digest = null;
        if (envelopeBytes.Length <= options.MaxBlockBytes)
        {
            digest = Digest.Of(envelopeBytes);
            if (TryGet(envelopeBytes, digest.Value, options, out block))
            {
                return BlockStatus.Valid;
            }
        }
        Interlocked.Increment(ref _verified);
        var status = SignedBlock.Decode(envelopeBytes, options, out block);
        if (status == BlockStatus.Valid && digest is { } checkedDigest && (remember is null || remember(block!)))
        {
            Remember(checkedDigest);
        }
        return status;
    }

    /// <summary>The block these exact bytes are, when they were signed or checked here lately and fit <paramref name="options"/>' limits.</summary>
    public bool TryGet(byte[] envelopeBytes, ChainOptions options, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out SignedBlock? block)
    {
        ArgumentNullException.ThrowIfNull(envelopeBytes);
        ArgumentNullException.ThrowIfNull(options);
        block = null;
        return envelopeBytes.Length <= options.MaxBlockBytes && TryGet(envelopeBytes, Digest.Of(envelopeBytes), options, out block);
    }

    private bool TryGet(byte[] envelopeBytes, Digest digest, ChainOptions options, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out SignedBlock? block)
    {
        block = null;
        bool known;
        lock (_gate)
        {
            known = IndexOf(digest) >= 0;
        }
        // These bytes verified here: decoded again without the signature check, on a copy as a verification would (the
        // caller's array stays its own), and held to this call's payload limit.
        if (!known || SignedBlock.DecodeChecked(envelopeBytes.ToArray()) is not { } decoded || decoded.Payload.Length > options.MaxPayloadBytes)
        {
            return false;
        }
        Interlocked.Increment(ref _remembered);
        block = decoded;
        return true;
    }

    /// <summary>Remembers a block this node signed (or checked some other way): a <see cref="SignedBlock"/> is always signed by its author.</summary>
    public void Remember(SignedBlock block)
    {
        ArgumentNullException.ThrowIfNull(block);
        Remember(Digest.Of(block.EnvelopeBytes));
    }

    private void Remember(Digest digest)
    {
        lock (_gate)
        {
            if (IndexOf(digest) >= 0)
            {
                return;
            }
            if (_count == Capacity)
            {
                // Full: the oldest goes first, so nothing grows past Capacity.
                RemoveFromIndex(IndexOf(_order[_oldest]));
                _order[_oldest] = digest;
                AddToIndex(_oldest);
                _oldest = (_oldest + 1) % Capacity;
                return;
            }
            if (_count == _order.Length)
            {
                // Not full yet, so in order from 0: the ring grows, the index with it (twice its slots, a power of two).
                Array.Resize(ref _order, Math.Min(Capacity, Math.Max(16, 2 * _order.Length)));
                _index = new int[2 * _order.Length];
                for (var i = 0; i < _count; i++)
                {
                    AddToIndex(i);
                }
            }
            _order[_count] = digest;
            AddToIndex(_count);
            _count++;
        }
    }

    /// <summary>The index slot that holds <paramref name="digest"/>'s place, or -1.</summary>
    private int IndexOf(Digest digest)
    {
        if (_index.Length == 0)
        {
            return -1;
        }
        var mask = _index.Length - 1;
        for (var i = (int)(digest.A & (ulong)mask); ; i = (i + 1) & mask)
        {
            var place = _index[i];
            if (place == 0)
            {
                return -1;
            }
            if (_order[place - 1] == digest)
            {
                return i;
            }
        }
    }

    private void AddToIndex(int place)
    {
        var mask = _index.Length - 1;
        var i = (int)(_order[place].A & (ulong)mask);
        while (_index[i] != 0)
        {
            i = (i + 1) & mask;
        }
        _index[i] = place + 1;
    }

    /// <summary>Empties index slot <paramref name="i"/>, moving back the later entries of its run that would be hidden (Knuth's algorithm R).</summary>
    private void RemoveFromIndex(int i)
    {
        var mask = _index.Length - 1;
        var j = i;
        while (true)
        {
            j = (j + 1) & mask;
            if (_index[j] == 0)
            {
                break;
            }
            var home = (int)(_order[_index[j] - 1].A & (ulong)mask);
            var stays = i <= j ? i < home && home <= j : i < home || home <= j;
            if (!stays)
            {
                _index[i] = _index[j];
                i = j;
            }
        }
        _index[i] = 0;
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
