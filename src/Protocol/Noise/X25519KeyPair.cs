using System.Security.Cryptography;
using Org.BouncyCastle.Math.EC.Rfc7748;

namespace Potluck.Protocol.Noise;

/// <summary>
/// An X25519 key pair (Noise <c>DH = 25519</c>). Uses OpenSSL where it is available (<see cref="OpenSslX25519"/>,
/// about 3× faster) and BouncyCastle's RFC 7748 code otherwise or whenever OpenSSL fails. Never logged.
/// </summary>
internal sealed class X25519KeyPair : IDisposable
{
    public const int Length = 32;

    private readonly byte[] _private;
    private readonly byte[] _public = new byte[Length];
    private readonly OpenSslX25519.EvpPKeyHandle? _openSsl;

    private X25519KeyPair(byte[] privateKey, bool forceBouncyCastle)
    {
        _private = privateKey;
        _openSsl = forceBouncyCastle ? null : OpenSslX25519.TryCreate(_private, _public);
        if (_openSsl is null)
        {
            X25519.GeneratePublicKey(_private, _public);
        }
    }

    public ReadOnlySpan<byte> PublicKey => _public;

    /// <summary>True when this key pair computes with OpenSSL.</summary>
    internal bool UsesOpenSsl => _openSsl is not null;

    public static X25519KeyPair Generate()
    {
        var key = new byte[Length];
        RandomNumberGenerator.Fill(key);
        X25519.ClampPrivateKey(key);
        return new X25519KeyPair(key, forceBouncyCastle: false);
    }

    /// <summary>A key pair from fixed private bytes: for test vectors.</summary>
    public static X25519KeyPair FromPrivate(ReadOnlySpan<byte> privateKey, bool forceBouncyCastle = false)
    {
        if (privateKey.Length != Length)
        {
            throw new ArgumentException("an X25519 private key is 32 bytes", nameof(privateKey));
        }
        return new X25519KeyPair(privateKey.ToArray(), forceBouncyCastle);
    }

    /// <summary>DH(this, remote) into <paramref name="shared"/>; false when the result is all zeros (a low-order point).</summary>
    public bool TryAgree(ReadOnlySpan<byte> remotePublic, Span<byte> shared)
    {
        if (remotePublic.Length != Length)
        {
            return false;
        }
        // OpenSSL refuses an all-zero result like any other error: BouncyCastle then gives the answer.
        return (_openSsl is not null && OpenSslX25519.TryAgree(_openSsl, remotePublic, shared))
               || X25519.CalculateAgreement(_private, remotePublic, shared);
    }

    public void Dispose()
    {
        _openSsl?.Dispose();
        CryptographicOperations.ZeroMemory(_private);
    }
}
