using System.Security.Cryptography;
using NSec.Cryptography;
using NSecKey = NSec.Cryptography.Key;
using NSecPublicKey = NSec.Cryptography.PublicKey;

namespace Potluck.Protocol.Noise;

/// <summary>
/// An X25519 key pair (Noise <c>DH = 25519</c>, RFC 7748) on NSec, that is the libsodium 1.0.22 its NuGet package ships:
/// one implementation on every machine. The private scalar lives in libsodium's guarded memory; it is clamped by the
/// scalar multiplication, so any 32 bytes are a private key. A remote public key's top bit is ignored (RFC 7748 §5) and a
/// non-canonical u (≥ p) is taken modulo p. Never logged.
/// <para>Noise needs the raw DH output for its HKDF, which NSec hands out only from a <see cref="SharedSecret"/> made
/// exportable: <see cref="TryAgree"/> writes it into the caller's buffer (on the stack, cleared after use), so one HKDF
/// (<see cref="NoiseSymmetricState.Hkdf"/>) serves every <c>MixKey</c> and <c>Split</c>, including Split's empty input
/// that NSec's HKDF-SHA256 refuses.</para>
/// </summary>
internal sealed class X25519KeyPair : IDisposable
{
    public const int Length = 32;

    private static readonly X25519 Algorithm = KeyAgreementAlgorithm.X25519;

    private readonly NSecKey _key;
    private readonly byte[] _public = new byte[Length];

    private X25519KeyPair(ReadOnlySpan<byte> privateKey)
    {
        _key = NSecKey.Import(Algorithm, privateKey, KeyBlobFormat.RawPrivateKey);
        _key.PublicKey.TryExport(KeyBlobFormat.RawPublicKey, _public, out _);
    }

    public ReadOnlySpan<byte> PublicKey => _public;

    /// <summary>A fresh key pair from <see cref="RandomNumberGenerator"/>.</summary>
    public static X25519KeyPair Generate()
    {
        Span<byte> scalar = stackalloc byte[Length];
        RandomNumberGenerator.Fill(scalar);
        try
        {
            return new X25519KeyPair(scalar);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(scalar);
        }
    }

    /// <summary>A key pair from fixed private bytes: for test vectors.</summary>
    public static X25519KeyPair FromPrivate(ReadOnlySpan<byte> privateKey)
    {
        if (privateKey.Length != Length)
        {
            throw new ArgumentException("an X25519 private key is 32 bytes", nameof(privateKey));
        }
        return new X25519KeyPair(privateKey);
    }

    /// <summary>
    /// DH(this, remote) into the first 32 bytes of <paramref name="shared"/>; false (and those bytes zero) when the
    /// remote key is not 32 bytes or the result is all zeros, which is what every point of small order gives and what
    /// Noise and libp2p require us to refuse. libsodium refuses an all-zero result itself; the check here makes the
    /// verdict ours whatever the library says.
    /// </summary>
    public bool TryAgree(ReadOnlySpan<byte> remotePublic, Span<byte> shared)
    {
        var output = shared[..Length];
        output.Clear();
        if (remotePublic.Length != Length
            || !NSecPublicKey.TryImport(Algorithm, remotePublic, KeyBlobFormat.RawPublicKey, out var remote))
        {
            return false;
        }
        using var secret = Algorithm.Agree(_key, remote!, new SharedSecretCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport });
        if (secret is null || !secret.TryExport(SharedSecretBlobFormat.RawSharedSecret, output, out var written) || written != Length)
        {
            output.Clear();
            return false;
        }
        return output.IndexOfAnyExcept((byte)0) >= 0;
    }

    public void Dispose() => _key.Dispose();
}
