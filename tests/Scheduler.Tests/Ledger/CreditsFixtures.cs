using System.Security.Cryptography;
using FsCheck;
using FsCheck.Fluent;
using Microsoft.Extensions.Time.Testing;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;

namespace Potluck.Scheduler.Tests.Ledger;

/// <summary>Deterministic keys, messages and temporary ledger directories for the credits tests.</summary>
internal static class CreditsFixtures
{
    /// <summary>The ledger's mechanics with a grant to spend and no debt allowed (a private cluster's kind of setting).</summary>
    public static readonly CreditsOptions Options = new() { InitialGrant = 1_000_000, MaxDebt = 0 };
    public static readonly DateTimeOffset Epoch = new(2025, 1, 1, 0, 0, 0, TimeSpan.Zero);

    public static PrivateKey Key(int n)
    {
        var seed = new byte[32];
        seed[0] = (byte)n;
        seed[1] = (byte)(n >> 8);
        seed[31] = 0x5a;
        return PrivateKey.FromSeed(seed);
    }

    public static readonly PrivateKey Requester = Key(1);
    public static readonly PrivateKey Provider = Key(2);
    public static readonly PrivateKey Stranger = Key(3);

    public static byte[] Lease(int n) => SHA256.HashData(BitConverter.GetBytes(n))[..16];

    public static Attestation MakeAttestation(byte[] lease, PrivateKey requester, PrivateKey provider, ulong fuel = 2_500_000,
        byte[]? output = null) => new()
    {
        LeaseId = lease,
        Requester = requester.PeerId.ToBytes(),
        Provider = provider.PeerId.ToBytes(),
        ModuleHash = SHA256.HashData("module"u8),
        InputHash = SHA256.HashData("input"u8),
        OutputHash = SHA256.HashData(output ?? "output"u8.ToArray()),
        OutputSize = (output ?? "output"u8.ToArray()).Length,
        FuelUsed = fuel,
        Outcome = AttestedOutcome.Exited,
        ExitCode = 0,
        TimestampUnixMs = Epoch.ToUnixTimeMilliseconds(),
    };

    public static AttestationExpectation Expectation(byte[] lease, PrivateKey requester, PrivateKey provider) =>
        AttestationExpectation.For(lease, requester.PeerId, provider.PeerId, "module"u8, "input"u8, "output"u8);

    /// <summary>A signed receipt from <paramref name="requester"/> to <paramref name="provider"/> for a lease.</summary>
    public static SignedReceipt MakeReceipt(byte[] lease, PrivateKey requester, PrivateKey provider, ulong fuel = 2_500_000, ulong price = 1000,
        DateTimeOffset? at = null)
    {
        var attestation = SignedAttestation.Create(MakeAttestation(lease, requester, provider, fuel), provider);
        return SignedReceipt.Create(Credits.Receipt.For(attestation, price, at ?? Epoch), requester);
    }

    /// <summary>Re-signs a payload as <paramref name="key"/> under <paramref name="domain"/>, with no checks.</summary>
    public static byte[] Seal<T>(T payload, PrivateKey key, string domain) =>
        SignedEnvelope.Seal(key, domain, MessagePack.MessagePackSerializer.Serialize(payload)).Encode();

    public static Arbitrary<byte[]> Bytes(int min, int max) =>
        Gen.Choose(min, max).SelectMany(n => Gen.ArrayOf(Gen.Choose(0, 255).Select(b => (byte)b), n)).ToArbitrary();

    public static Gen<byte[]> Hash() => Gen.ArrayOf(Gen.Choose(0, 255).Select(b => (byte)b), 32);

    public static Gen<ulong> AnyULong() =>
        Gen.Choose(int.MinValue, int.MaxValue).Two().Select(t => ((ulong)(uint)t.Item1 << 32) | (uint)t.Item2);

    public static Gen<long> NonNegativeLong() => AnyULong().Select(v => (long)(v >> 1));

    /// <summary>Any well-formed attestation, with the provider key that may sign it.</summary>
    public static Gen<(Attestation Attestation, PrivateKey Provider)> Attestations() =>
        from lease in Gen.Choose(1, 64).SelectMany(n => Gen.ArrayOf(Gen.Choose(0, 255).Select(b => (byte)b), n))
        from parties in Gen.Choose(0, 1000).Two()
        from hashes in Hash().Three()
        from size in NonNegativeLong()
        from fuel in AnyULong()
        from outcome in Gen.Elements(Enum.GetValues<AttestedOutcome>())
        from exit in Gen.Choose(int.MinValue, int.MaxValue)
        from time in NonNegativeLong()
        let provider = Key(parties.Item2 + 1000)
        select (new Attestation
        {
            LeaseId = lease,
            Requester = Key(parties.Item1).PeerId.ToBytes(),
            Provider = provider.PeerId.ToBytes(),
            ModuleHash = hashes.Item1,
            InputHash = hashes.Item2,
            OutputHash = hashes.Item3,
            OutputSize = size,
            FuelUsed = fuel,
            Outcome = outcome,
            ExitCode = exit,
            TimestampUnixMs = time,
        }, provider);
}

/// <summary>A temporary directory per test, removed afterwards.</summary>
internal sealed class TempDir : IDisposable
{
    public TempDir() => Path = Directory.CreateTempSubdirectory("potluck-ledger-").FullName;

    public string Path { get; }

    public string Sub(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // A leftover temp directory is not a test failure.
        }
    }
}

internal static class LedgerFactory
{
    public static CreditLedger Open(string dir, PrivateKey owner, CreditsOptions? options = null, TimeProvider? time = null) =>
        CreditLedger.Open(dir, owner.PeerId, options ?? CreditsFixtures.Options, time ?? new FakeTimeProvider(CreditsFixtures.Epoch));
}
