using Potluck.Protocol.Identity;

namespace Potluck.Protocol.Tests.Host;

/// <summary>
/// Fresh identities for floods: a public key from seeded random bytes, with no private key behind it (a private key
/// holds libsodium's guarded memory, three mappings each until finalised; 10,000 of them exhaust a process's mappings).
/// </summary>
internal static class Sybils
{
    public static PublicKey Key(Random random)
    {
        Span<byte> raw = stackalloc byte[32];
        while (true)
        {
            random.NextBytes(raw);
            if (PublicKey.TryCreate(KeyType.Ed25519, raw, out var key))
            {
                return key;
            }
        }
    }

    public static PeerId Mint(Random random) => PeerId.FromPublicKey(Key(random));
}
