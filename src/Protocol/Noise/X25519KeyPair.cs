using System.Security.Cryptography;
using Org.BouncyCastle.Math.EC.Rfc7748;

namespace Potluck.Protocol.Noise;

/// <summary>An X25519 key pair (Noise <c>DH = 25519</c>) backed by BouncyCastle's RFC 7748 code. Never logged.</summary>
internal sealed class X25519KeyPair : IDisposable
{
    public const int Length = 32;

    private readonly byte[] _private;
    private readonly byte[] _public = new byte[Length];

    private X25519KeyPair(byte[] privateKey)
    {
        _private = privateKey;
        X25519.GeneratePublicKey(_private, _public);
    }

    public ReadOnlySpan<byte> PublicKey => _public;

    public static X25519KeyPair Generate()
    {
        var key = new byte[Length];
        RandomNumberGenerator.Fill(key);
        X25519.ClampPrivateKey(key);
        return new X25519KeyPair(key);
    }

    /// <summary>A key pair from fixed private bytes: for test vectors.</summary>
    public static X25519KeyPair FromPrivate(ReadOnlySpan<byte> privateKey)
    {
        if (privateKey.Length != Length)
        {
            throw new ArgumentException("an X25519 private key is 32 bytes", nameof(privateKey));
        }
        return new X25519KeyPair(privateKey.ToArray());
    }

    /// <summary>DH(this, remote) into <paramref name="shared"/>; false when the result is all zeros (a low-order point).</summary>
    public bool TryAgree(ReadOnlySpan<byte> remotePublic, Span<byte> shared) =>
        remotePublic.Length == Length && X25519.CalculateAgreement(_private, remotePublic, shared);

    public void Dispose() => CryptographicOperations.ZeroMemory(_private);
}
