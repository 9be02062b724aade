using System.Security.Cryptography;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Metrics;

namespace Potluck.Scheduler.Verification;

/// <summary>
/// What a caught cheater loses beyond its reputation: the payments it still holds from this node
/// (<see cref="CreditsOptions.Holdback"/>), forfeited once per lease proven fraudulent, whether this node's own re-run
/// contradicted the provider or a fraud proof it received stood when re-run here.
/// </summary>
public static class Forfeiture
{
    private static readonly byte[] Domain = "potluck-forfeit:"u8.ToArray();

    /// <summary>The key of the proof about <paramref name="leaseId"/> of <paramref name="provider"/>: one forfeit per lease.</summary>
    public static byte[] ProofKey(PeerId provider, ReadOnlySpan<byte> leaseId)
    {
        var id = provider.ToBytes();
        var input = new byte[Domain.Length + 2 + id.Length + leaseId.Length];
        Domain.CopyTo(input, 0);
        input[Domain.Length] = (byte)(id.Length >> 8);
        input[Domain.Length + 1] = (byte)id.Length;
        id.CopyTo(input, Domain.Length + 2);
        leaseId.CopyTo(input.AsSpan(Domain.Length + 2 + id.Length));
        return SHA256.HashData(input);
    }

    /// <summary>Forfeits what <paramref name="provider"/> holds from this node, for the fraud proven on <paramref name="leaseId"/>.</summary>
    public static ForfeitResult Apply(CreditLedger ledger, ComputeInstruments instruments, PeerId provider, ReadOnlySpan<byte> leaseId)
    {
        var result = ledger.Forfeit(provider, ProofKey(provider, leaseId));
        if (!result.AlreadyRecorded && result.Amount > 0)
        {
            instruments.CreditsForfeited(result.Amount);
        }
        return result;
    }
}
