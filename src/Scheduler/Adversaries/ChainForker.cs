using Potluck.Protocol;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;

namespace Potluck.Scheduler.Adversaries;

/// <summary>
/// A requester that keeps two histories: it signs its half-blocks at whatever seq and previous hash it likes (for example
/// a payment to one provider and another payment to a second provider both at seq 1, so each sees a chain without the
/// other), and sends them on the real <see cref="ChainProtocol.Id"/>. It also forges fork proofs that do not check. Used by
/// the attack tests and the simulator; never by an honest node.
/// </summary>
public sealed class ChainForker(IHost host, PrivateKey key)
{
    private static readonly CreditsOptions Credits = new();

    public PeerId PeerId => key.PeerId;

    /// <summary>A proposal half-block for a receipt this forker signed, at the seq and previous hash it chooses.</summary>
    public SignedBlock Propose(byte[] receiptEnvelope, ulong seq, byte[] previous, DateTimeOffset now)
    {
        var receipt = SignedReceipt.Decode(receiptEnvelope, Credits);
        if (!receipt.IsValid)
        {
            throw new ArgumentException($"not a valid receipt: {receipt.Status}", nameof(receiptEnvelope));
        }
        var r = receipt.Value!.Receipt;
        return SignedBlock.Propose(r, key, seq, previous, now);
    }

    /// <summary>Sends a proposal (with the block it claims came before) and returns the provider's answer.</summary>
    public async Task<ChainAnswer> SendAsync(PeerId provider, SignedBlock proposal, SignedBlock? previous, CancellationToken ct)
    {
        await using var stream = await host.NewStreamAsync(provider, [ChainProtocol.Id], ct);
        await LengthPrefixed.WriteAsync(stream.Output, ChainCodec.Encode(new ChainProposal
        {
            Proposal = proposal.EnvelopeBytes,
            Previous = previous?.EnvelopeBytes ?? [],
        }), ct);
        await stream.Output.CompleteAsync();
        var reply = await LengthPrefixed.ReadAsync(stream.Input, 64 * 1024, ChainProtocol.Id, ct)
            ?? throw new ProtocolViolationException(ChainProtocol.Id, "no answer");
        return ChainCodec.TryDecode(reply, 64 * 1024, out ChainAnswer? answer) ? answer : throw new ProtocolViolationException(ChainProtocol.Id, "malformed answer");
    }

    /// <summary>
    /// "Fork proofs" that do not check, against <paramref name="victim"/>'s block: the same block twice; the block and a
    /// copy with one signature byte flipped; the block and this forker's own block at the same seq (two authors); bytes
    /// that are not a proof at all.
    /// </summary>
    public static IReadOnlyList<byte[]> ForgedForkProofs(SignedBlock victim, SignedBlock other)
    {
        ArgumentNullException.ThrowIfNull(victim);
        ArgumentNullException.ThrowIfNull(other);
        var flipped = (byte[])victim.EnvelopeBytes.Clone();
        flipped[^1] ^= 0x01;
        return
        [
            ChainCodec.Encode(new BlockPair { First = victim.EnvelopeBytes, Second = victim.EnvelopeBytes }),
            ChainCodec.Encode(new BlockPair { First = victim.EnvelopeBytes, Second = flipped }),
            ChainCodec.Encode(new BlockPair { First = victim.EnvelopeBytes, Second = other.EnvelopeBytes }),
            [0x92, 0xc4, 0x02, 0x01, 0x02],
        ];
    }
}
