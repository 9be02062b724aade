using System.Buffers.Binary;
using System.Security.Cryptography;
using BcChaCha20Poly1305 = Org.BouncyCastle.Crypto.Modes.ChaCha20Poly1305;
using Org.BouncyCastle.Crypto;
using Org.BouncyCastle.Crypto.Parameters;

namespace Potluck.Protocol.Noise;

/// <summary>
/// A Noise <c>CipherState</c> for ChaChaPoly: a 32-byte key and a 64-bit message counter, used as the
/// 96-bit nonce 4 zero bytes ‖ little-endian counter. Uses the platform's ChaCha20-Poly1305 and falls back to
/// BouncyCastle where the platform has none. Not thread-safe; one direction of one connection.
/// </summary>
internal sealed class NoiseCipherState : IDisposable
{
    public const int KeyLength = 32;
    public const int TagLength = 16;

    private readonly ChaCha20Poly1305? _platform;
    private readonly byte[]? _bcKey;
    private ulong _nonce;

    public NoiseCipherState(ReadOnlySpan<byte> key, bool forceBouncyCastle = false)
    {
        if (key.Length != KeyLength)
        {
            throw new ArgumentException("a ChaChaPoly key is 32 bytes", nameof(key));
        }
        if (ChaCha20Poly1305.IsSupported && !forceBouncyCastle)
        {
            _platform = new ChaCha20Poly1305(key);
        }
        else
        {
            _bcKey = key.ToArray();
        }
    }

    /// <summary>The counter the next message will use.</summary>
    public ulong Nonce => _nonce;

    /// <summary>Encrypts <paramref name="plaintext"/> into <paramref name="destination"/> (ciphertext ‖ tag).</summary>
    public void Encrypt(ReadOnlySpan<byte> associatedData, ReadOnlySpan<byte> plaintext, Span<byte> destination)
    {
        if (destination.Length < plaintext.Length + TagLength)
        {
            throw new ArgumentException("destination too small", nameof(destination));
        }
        // 2^64-1 is reserved by the Noise spec; a connection that gets there must end.
        if (_nonce == ulong.MaxValue)
        {
            throw new InvalidOperationException("Noise nonce space exhausted");
        }
        Span<byte> nonce = stackalloc byte[12];
        WriteNonce(nonce, _nonce);
        var ciphertext = destination[..plaintext.Length];
        var tag = destination.Slice(plaintext.Length, TagLength);
        if (_platform is not null)
        {
            _platform.Encrypt(nonce, plaintext, ciphertext, tag, associatedData);
        }
        else
        {
            var cipher = CreateBc(true, nonce, associatedData);
            var n = cipher.ProcessBytes(plaintext, destination);
            cipher.DoFinal(destination[n..]);
        }
        _nonce++;
    }

    /// <summary>
    /// Decrypts ciphertext ‖ tag into <paramref name="plaintext"/>; false when the tag does not verify
    /// (the counter then stays where it was).
    /// </summary>
    public bool TryDecrypt(ReadOnlySpan<byte> associatedData, ReadOnlySpan<byte> ciphertextAndTag, Span<byte> plaintext)
    {
        if (ciphertextAndTag.Length < TagLength)
        {
            return false;
        }
        var length = ciphertextAndTag.Length - TagLength;
        if (plaintext.Length < length)
        {
            throw new ArgumentException("plaintext buffer too small", nameof(plaintext));
        }
        if (_nonce == ulong.MaxValue)
        {
            return false;
        }
        Span<byte> nonce = stackalloc byte[12];
        WriteNonce(nonce, _nonce);
        try
        {
            if (_platform is not null)
            {
                _platform.Decrypt(nonce, ciphertextAndTag[..length], ciphertextAndTag[length..], plaintext[..length], associatedData);
            }
            else
            {
                var cipher = CreateBc(false, nonce, associatedData);
                var n = cipher.ProcessBytes(ciphertextAndTag, plaintext);
                cipher.DoFinal(plaintext[n..]);
            }
        }
        catch (Exception e) when (e is CryptographicException or InvalidCipherTextException)
        {
            plaintext[..length].Clear();
            return false;
        }
        _nonce++;
        return true;
    }

    private BcChaCha20Poly1305 CreateBc(bool encrypt, ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> associatedData)
    {
        var cipher = new BcChaCha20Poly1305();
        cipher.Init(encrypt, new AeadParameters(new KeyParameter(_bcKey!), TagLength * 8, nonce.ToArray(), associatedData.ToArray()));
        return cipher;
    }

    private static void WriteNonce(Span<byte> nonce, ulong counter)
    {
        nonce[..4].Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(nonce[4..], counter);
    }

    public void Dispose()
    {
        _platform?.Dispose();
        if (_bcKey is not null)
        {
            CryptographicOperations.ZeroMemory(_bcKey);
        }
    }
}
