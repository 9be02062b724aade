using System.Buffers.Binary;
using NSec.Cryptography;
using NSecKey = NSec.Cryptography.Key;

namespace Potluck.Protocol.Noise;

/// <summary>
/// A Noise <c>CipherState</c> for ChaChaPoly (RFC 8439, the IETF variant): a 32-byte key and a 64-bit message counter,
/// used as the 96-bit nonce 4 zero bytes ‖ little-endian counter. NSec's ChaCha20-Poly1305 (the libsodium its package
/// ships), with the key imported once per cipher state into libsodium's guarded memory and every message encrypted
/// between spans, with no allocation. Not thread-safe; one direction of one connection.
/// </summary>
internal sealed class NoiseCipherState : IDisposable
{
    public const int KeyLength = 32;
    public const int TagLength = 16;
    private const int NonceLength = 12;

    private static readonly ChaCha20Poly1305 Aead = AeadAlgorithm.ChaCha20Poly1305;

    private readonly NSecKey _key;
    private ulong _nonce;

    public NoiseCipherState(ReadOnlySpan<byte> key)
    {
        if (key.Length != KeyLength)
        {
            throw new ArgumentException("a ChaChaPoly key is 32 bytes", nameof(key));
        }
        _key = NSecKey.Import(Aead, key, KeyBlobFormat.RawSymmetricKey);
    }

    /// <summary>The counter the next message will use.</summary>
    public ulong Nonce => _nonce;

    /// <summary>
    /// Encrypts <paramref name="plaintext"/> into the first <c>plaintext.Length + 16</c> bytes of
    /// <paramref name="destination"/> (ciphertext ‖ tag), which must not overlap it except in place.
    /// </summary>
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
        Span<byte> nonce = stackalloc byte[NonceLength];
        WriteNonce(nonce, _nonce);
        Aead.Encrypt(_key, nonce, associatedData, plaintext, destination[..(plaintext.Length + TagLength)]);
        _nonce++;
    }

    /// <summary>
    /// Decrypts ciphertext ‖ tag into <paramref name="plaintext"/>; false when the tag does not verify
    /// (the counter then stays where it was, and the plaintext bytes are zero).
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
        Span<byte> nonce = stackalloc byte[NonceLength];
        WriteNonce(nonce, _nonce);
        if (!Aead.Decrypt(_key, nonce, associatedData, ciphertextAndTag, plaintext[..length]))
        {
            plaintext[..length].Clear(); // libsodium clears it too
            return false;
        }
        _nonce++;
        return true;
    }

    private static void WriteNonce(Span<byte> nonce, ulong counter)
    {
        nonce[..4].Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(nonce[4..], counter);
    }

    public void Dispose() => _key.Dispose();
}
