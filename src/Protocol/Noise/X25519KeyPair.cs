using System.Security.Cryptography;
using Org.BouncyCastle.Math.EC.Rfc7748;

namespace Potluck.Protocol.Noise;

/// <summary>Which implementation an <see cref="X25519KeyPair"/> computes with.</summary>
internal enum X25519Path
{
    /// <summary>The fastest available: libsodium, else OpenSSL, else BouncyCastle.</summary>
    Auto,
    Sodium,
    OpenSsl,
    BouncyCastle,
}

/// <summary>
/// An X25519 key pair (Noise <c>DH = 25519</c>). Uses libsodium where it is available (<see cref="SodiumX25519"/>),
/// else OpenSSL (<see cref="OpenSslX25519"/>, about 3× faster than managed code), and BouncyCastle's RFC 7748 code
/// otherwise or whenever the native path refuses (BouncyCastle then decides). Never logged.
/// </summary>
internal sealed class X25519KeyPair : IDisposable
{
    public const int Length = 32;

    private readonly byte[] _private;
    private readonly byte[] _public = new byte[Length];
    private readonly OpenSslEvp.EvpPKeyHandle? _openSsl;
    private readonly bool _sodium;

    private X25519KeyPair(byte[] privateKey, X25519Path path)
    {
        _private = privateKey;
        if (path is X25519Path.Auto or X25519Path.Sodium)
        {
            _sodium = SodiumX25519.TryGetPublicKey(_private, _public);
        }
        if (!_sodium && path is X25519Path.Auto or X25519Path.OpenSsl)
        {
            _openSsl = OpenSslX25519.TryCreate(_private, _public);
        }
        if (!_sodium && _openSsl is null)
        {
            X25519.GeneratePublicKey(_private, _public);
        }
    }

    public ReadOnlySpan<byte> PublicKey => _public;

    /// <summary>True when this key pair computes with OpenSSL.</summary>
    internal bool UsesOpenSsl => _openSsl is not null;

    /// <summary>True when this key pair computes with libsodium.</summary>
    internal bool UsesSodium => _sodium;

    public static X25519KeyPair Generate()
    {
        var key = new byte[Length];
        RandomNumberGenerator.Fill(key);
        X25519.ClampPrivateKey(key);
        return new X25519KeyPair(key, X25519Path.Auto);
    }

    /// <summary>A key pair from fixed private bytes: for test vectors.</summary>
    public static X25519KeyPair FromPrivate(ReadOnlySpan<byte> privateKey, bool forceBouncyCastle = false) =>
        FromPrivate(privateKey, forceBouncyCastle ? X25519Path.BouncyCastle : X25519Path.Auto);

    /// <summary>A key pair from fixed private bytes on a chosen path (falling back when that path is unavailable).</summary>
    public static X25519KeyPair FromPrivate(ReadOnlySpan<byte> privateKey, X25519Path path)
    {
        if (privateKey.Length != Length)
        {
            throw new ArgumentException("an X25519 private key is 32 bytes", nameof(privateKey));
        }
        return new X25519KeyPair(privateKey.ToArray(), path);
    }

    /// <summary>DH(this, remote) into <paramref name="shared"/>; false when the result is all zeros (a low-order point).</summary>
    public bool TryAgree(ReadOnlySpan<byte> remotePublic, Span<byte> shared)
    {
        if (remotePublic.Length != Length)
        {
            return false;
        }
        // The native paths refuse an all-zero result like any other error: BouncyCastle then gives the answer.
        return (_sodium && SodiumX25519.TryAgree(_private, remotePublic, shared))
               || (_openSsl is not null && OpenSslX25519.TryAgree(_openSsl, remotePublic, shared))
               || X25519.CalculateAgreement(_private, remotePublic, shared);
    }

    public void Dispose()
    {
        _openSsl?.Dispose();
        CryptographicOperations.ZeroMemory(_private);
    }
}
