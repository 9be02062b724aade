using Microsoft.Extensions.Time.Testing;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Ledger;

/// <summary>A simulated process crash, thrown from <see cref="CreditLedger.CrashHook"/>.</summary>
internal sealed class SimulatedCrashException : Exception
{
    public SimulatedCrashException(string point) : base($"crash at {point}") { }
}

/// <summary>A node: a key, a data directory and its ledger, which can "crash" (drop the ledger) and restart.</summary>
internal sealed class LedgerNode : IDisposable
{
    private readonly CreditsOptions _options;

    public LedgerNode(string dir, PrivateKey key, CreditsOptions options, FakeTimeProvider time)
    {
        Dir = dir;
        Key = key;
        _options = options;
        Time = time;
        Ledger = LedgerFactory.Open(dir, key, options, time);
    }

    public string Dir { get; }

    public PrivateKey Key { get; }

    public FakeTimeProvider Time { get; }

    public CreditLedger Ledger { get; private set; }

    /// <summary>Everything in memory is lost; only what the ledger committed is there after the restart.</summary>
    public void CrashAndRestart()
    {
        Ledger.Dispose();
        Ledger = LedgerFactory.Open(Dir, Key, _options, Time);
    }

    public void Dispose() => Ledger.Dispose();
}

/// <summary>
/// One lease's payment as a node runs it, following the rules documented on <see cref="CreditLedger"/>:
/// reserve → (lease runs, attestation verified) → sign and settle → send → provider records → ack → delivered.
/// A crash can be injected after any step, or inside any step's transaction.
/// </summary>
internal static class PaymentFlow
{
    public const int Steps = 4;

    /// <summary>Where to crash: after step <c>Step</c> completes, or inside its transaction at hook point <c>Inside</c>.</summary>
    public readonly record struct Crash(int Step, string? Inside);

    public sealed record Lease(byte[] Id, SignedAttestation Attestation, ulong Price, long MaxAmount);

    public static Lease Prepare(LedgerNode requester, LedgerNode provider, int leaseNumber, ulong fuel, ulong price)
    {
        var id = CreditsFixtures.Lease(leaseNumber);
        var attestation = SignedAttestation.Create(MakeAttestation(id, requester.Key, provider.Key, fuel), provider.Key);
        Receipt.TryComputeAmount(fuel, price, out var amount);
        return new Lease(id, attestation, price, amount + 10);
    }

    /// <summary>Runs the steps; returns false when a crash was injected (both nodes have restarted).</summary>
    public static bool Run(LedgerNode requester, LedgerNode provider, Lease lease, Crash? crash)
    {
        for (var step = 0; step < Steps; step++)
        {
            var target = step == 2 ? provider : requester;
            if (crash is { Inside: { } point } c && c.Step == step)
            {
                target.Ledger.CrashHook = p =>
                {
                    if (p == point)
                    {
                        throw new SimulatedCrashException(p);
                    }
                };
            }
            try
            {
                RunStep(step, requester, provider, lease);
            }
            catch (SimulatedCrashException)
            {
                requester.CrashAndRestart();
                provider.CrashAndRestart();
                return false;
            }
            finally
            {
                target.Ledger.CrashHook = null;
            }
            if (crash is { Inside: null } after && after.Step == step)
            {
                requester.CrashAndRestart();
                provider.CrashAndRestart();
                return false;
            }
        }
        return true;
    }

    /// <summary>
    /// What a requester does on restart: a Reserved lease whose attestation it holds is settled afresh (a later
    /// timestamp, so different bytes, same receipt id); every Settled receipt is sent again and acknowledged.
    /// </summary>
    public static void Recover(LedgerNode requester, IReadOnlyDictionary<string, Lease> leases, IReadOnlyDictionary<PeerId, LedgerNode> providers)
    {
        requester.Time.Advance(TimeSpan.FromSeconds(1));
        foreach (var reservation in requester.Ledger.Reservations(PaymentState.Reserved))
        {
            var lease = leases[Convert.ToHexString(reservation.LeaseId)];
            Assert.That(requester.Ledger.Settle(SignReceipt(requester, lease)), Is.EqualTo(LedgerResult.Recorded));
        }
        foreach (var bytes in requester.Ledger.UndeliveredReceipts())
        {
            var receipt = SignedReceipt.Decode(bytes, Options).Value!;
            Assert.That(Deliver(providers[receipt.Provider], bytes, leases[Convert.ToHexString(receipt.Receipt.LeaseId)]),
                Is.AnyOf(LedgerResult.Recorded, LedgerResult.AlreadyRecorded));
            Assert.That(requester.Ledger.MarkDelivered(receipt.Receipt.LeaseId), Is.EqualTo(LedgerResult.Delivered));
        }
    }

    private static void RunStep(int step, LedgerNode requester, LedgerNode provider, Lease lease)
    {
        switch (step)
        {
            case 0:
                Assert.That(requester.Ledger.ReservePayment(lease.Id, provider.Key.PeerId, lease.MaxAmount), Is.EqualTo(LedgerResult.Reserved));
                break;
            case 1:
                Assert.That(requester.Ledger.Settle(SignReceipt(requester, lease)), Is.EqualTo(LedgerResult.Recorded));
                break;
            case 2:
                var bytes = requester.Ledger.GetReservation(lease.Id)!.Receipt!;
                Assert.That(Deliver(provider, bytes, lease), Is.EqualTo(LedgerResult.Recorded));
                break;
            case 3:
                Assert.That(requester.Ledger.MarkDelivered(lease.Id), Is.EqualTo(LedgerResult.Delivered));
                break;
        }
    }

    private static SignedReceipt SignReceipt(LedgerNode requester, Lease lease)
    {
        // The requester checks the attestation against what it holds before it pays.
        var a = lease.Attestation.Attestation;
        var expected = new AttestationExpectation(lease.Id, requester.Key.PeerId, lease.Attestation.Signer.ToPeerId(),
            a.ModuleHash, a.InputHash, a.OutputHash, a.OutputSize);
        var verified = SignedAttestation.Verify(lease.Attestation.EnvelopeBytes, expected, Options);
        Assert.That(verified.Status, Is.EqualTo(VerifyStatus.Valid));
        return SignedReceipt.Create(Receipt.For(verified.Value!, lease.Price, requester.Time.GetUtcNow()), requester.Key);
    }

    /// <summary>The provider's side: verify against its own attestation and the agreed price, then record.</summary>
    private static LedgerResult Deliver(LedgerNode provider, byte[] bytes, Lease lease)
    {
        var verified = SignedReceipt.Verify(bytes, ReceiptExpectation.For(lease.Attestation, lease.Price), Options);
        Assert.That(verified.Status, Is.EqualTo(VerifyStatus.Valid));
        return provider.Ledger.Record(verified.Value!, LedgerEntryKind.Earned);
    }
}
