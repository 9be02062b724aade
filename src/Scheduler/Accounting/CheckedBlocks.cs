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
/// entry is about 80 bytes instead of about 1.2 KiB with the decoded block. Only blocks that checked are kept (a failure is never
/// remembered, so a flood of bad blocks costs the flooder a verification each, as before); the oldest entry is dropped
/// beyond <see cref="Capacity"/>. One per node, never shared between nodes (a benchmark running three nodes in one
/// process must not let one node's check count for another's).
/// </summary>
internal sealed class CheckedBlocks
{
    /// <summary>
    /// Digests remembered: about 80 bytes each (the set's entry and bucket, the ring's slot), 79 KiB when full. Measured at 200
    /// nodes (README, "Strangers' payment blocks"), every hit came within 64 blocks of its first check, and 99.5 % of
    /// what a node checks is strangers' gossiped payments that never come again: a larger cap would hold mostly those.
    /// </summary>
    public const int Capacity = 1024;

    private readonly Lock _gate = new();
    // Both grow as blocks come (empty until then), the set only as far as the ring: sized for Capacity up front they would
    // cost every node, idle or not, what only a busy one needs.
    private readonly HashSet<Digest> _digests = [];
    private Digest[] _order = []; // oldest first from _oldest once full
    private int _oldest;
    private long _verified;
    private long _remembered;

    /// <summary>Signature checks made here (blocks decoded and verified, valid or not).</summary>
    public long Verified => Interlocked.Read(ref _verified);

    /// <summary>Blocks taken as already checked (no signature check).</summary>
    public long Remembered => Interlocked.Read(ref _remembered);

    /// <summary>Slots allocated for entries: the ring's and the set's (at most about 2 × <see cref="Capacity"/> once full, and fixed from then on).</summary>
    internal int Slots
    {
        get
        {
            lock (_gate)
            {
                return _order.Length + _digests.Capacity;
            }
        }
    }

    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _digests.Count;
            }
        }
    }

    /// <summary>
    /// Exactly <see cref="SignedBlock.Decode"/>, without the signature check when these bytes were signed or checked here
    /// lately.
    /// </summary>
    public BlockStatus Decode(byte[] envelopeBytes, ChainOptions options, out SignedBlock? block)
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
        if (status == BlockStatus.Valid && digest is { } checkedDigest)
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
            known = _digests.Contains(digest);
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
            if (_digests.Count == Capacity)
            {
                if (_digests.Contains(digest))
                {
                    return;
                }
                // Full: the oldest goes first, so the set never grows past Capacity.
                _digests.Remove(_order[_oldest]);
                _digests.Add(digest);
                _order[_oldest] = digest;
                _oldest = (_oldest + 1) % Capacity;
                return;
            }
            if (_digests.Count == _order.Length)
            {
                // Not full yet, so in order from 0: the ring and the set grow together, the set to the ring's size only.
                var grown = Math.Min(Capacity, Math.Max(16, 2 * _order.Length));
                Array.Resize(ref _order, grown);
                _digests.EnsureCapacity(grown);
            }
            if (_digests.Add(digest))
            {
                _order[_digests.Count - 1] = digest;
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
