using System.Runtime.InteropServices;
using Potluck.Protocol.Identity;

namespace Potluck.Protocol.Noise;

/// <summary>
/// X25519 (RFC 7748) through libsodium (<see cref="LibSodium"/>): <c>crypto_scalarmult_curve25519_base</c> for public
/// keys and <c>crypto_scalarmult_curve25519</c> for agreement, which take the raw 32-byte scalar with no per-call key
/// objects (OpenSSL's EVP path builds two keys and a context per call). libsodium refuses an all-zero result (a
/// low-order point) with -1, as Noise and libp2p require; every refusal makes the caller ask BouncyCastle, which
/// refuses it too. No <c>unsafe</c>: spans go in as <c>ref byte</c>, which the marshaller pins.
/// </summary>
internal static class SodiumX25519
{
    private const int KeyLength = 32;

    private static readonly bool Available = Probe();

    /// <summary>True when libsodium loaded and passed the RFC 7748 self-test.</summary>
    public static bool IsAvailable => Available;

    /// <summary>The public key of <paramref name="privateKey"/> (X25519 clamps); false when libsodium is unavailable or failed.</summary>
    public static bool TryGetPublicKey(ReadOnlySpan<byte> privateKey, Span<byte> publicKey) =>
        Available && BaseCore(privateKey, publicKey);

    /// <summary>X25519(<paramref name="privateKey"/>, <paramref name="remotePublic"/>); false on an all-zero result or any error.</summary>
    public static bool TryAgree(ReadOnlySpan<byte> privateKey, ReadOnlySpan<byte> remotePublic, Span<byte> shared) =>
        Available && AgreeCore(privateKey, remotePublic, shared);

    private static bool BaseCore(ReadOnlySpan<byte> privateKey, Span<byte> publicKey) =>
        privateKey.Length == KeyLength && publicKey.Length >= KeyLength
        && crypto_scalarmult_curve25519_base(ref MemoryMarshal.GetReference(publicKey), ref MemoryMarshal.GetReference(privateKey)) == 0;

    private static bool AgreeCore(ReadOnlySpan<byte> privateKey, ReadOnlySpan<byte> remotePublic, Span<byte> shared)
    {
        if (privateKey.Length != KeyLength || remotePublic.Length != KeyLength || shared.Length < KeyLength)
        {
            return false;
        }
        if (crypto_scalarmult_curve25519(ref MemoryMarshal.GetReference(shared), ref MemoryMarshal.GetReference(privateKey),
                ref MemoryMarshal.GetReference(remotePublic)) != 0)
        {
            shared[..KeyLength].Clear();
            return false;
        }
        return true;
    }

    /// <summary>Checks the library against RFC 7748 §6.1 and a low-order point before trusting it.</summary>
    private static bool Probe()
    {
        if (!LibSodium.IsAvailable)
        {
            return false;
        }
        try
        {
            var alicePrivate = Convert.FromHexString("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
            var bobPublic = Convert.FromHexString("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
            var expectedPublic = Convert.FromHexString("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
            var expectedShared = Convert.FromHexString("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
            var publicKey = new byte[KeyLength];
            var shared = new byte[KeyLength];
            return BaseCore(alicePrivate, publicKey) && publicKey.AsSpan().SequenceEqual(expectedPublic)
                   && AgreeCore(alicePrivate, bobPublic, shared) && shared.AsSpan().SequenceEqual(expectedShared)
                   && !AgreeCore(alicePrivate, new byte[KeyLength], shared); // u = 0: all-zero output must be refused
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException or MarshalDirectiveException)
        {
            return false;
        }
    }

#pragma warning disable SYSLIB1054 // LibraryImport generates unsafe code, which this project does not allow.
    [DllImport(LibSodium.Name)]
    private static extern int crypto_scalarmult_curve25519(ref byte shared, ref byte privateKey, ref byte remotePublic);

    [DllImport(LibSodium.Name)]
    private static extern int crypto_scalarmult_curve25519_base(ref byte publicKey, ref byte privateKey);
#pragma warning restore SYSLIB1054
}
