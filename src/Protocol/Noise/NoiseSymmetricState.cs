using System.Security.Cryptography;

namespace Potluck.Protocol.Noise;

/// <summary>
/// The Noise <c>SymmetricState</c> with SHA-256: chaining key, handshake hash and the current cipher.
/// Noise's HKDF (two outputs: HKDF-Extract with the chaining key as salt, then HKDF-Expand with empty info) is computed
/// directly with the platform's HMAC-SHA256, since the platform's HKDF and NSec's both refuse the empty input key
/// material of <c>Split</c>; <c>MixKey</c> gets the raw X25519 output from <see cref="X25519KeyPair.TryAgree"/>.
/// </summary>
internal sealed class NoiseSymmetricState : IDisposable
{
    public const int HashLength = 32;

    private readonly byte[] _ck = new byte[HashLength];
    private readonly byte[] _h = new byte[HashLength];
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private NoiseCipherState? _cipher;

    public NoiseSymmetricState(ReadOnlySpan<byte> protocolName)
    {
        if (protocolName.Length <= HashLength)
        {
            protocolName.CopyTo(_h);
        }
        else
        {
            SHA256.HashData(protocolName, _h);
        }
        _h.CopyTo(_ck, 0);
    }

    public ReadOnlySpan<byte> HandshakeHash => _h;

    public bool HasKey => _cipher is not null;

    public void MixHash(ReadOnlySpan<byte> data)
    {
        _hash.AppendData(_h);
        _hash.AppendData(data);
        _hash.GetHashAndReset(_h);
    }

    public void MixKey(ReadOnlySpan<byte> inputKeyMaterial)
    {
        Span<byte> output = stackalloc byte[2 * HashLength];
        Hkdf(_ck, inputKeyMaterial, output);
        output[..HashLength].CopyTo(_ck);
        _cipher?.Dispose();
        _cipher = new NoiseCipherState(output.Slice(HashLength, NoiseCipherState.KeyLength));
        CryptographicOperations.ZeroMemory(output);
    }

    /// <summary>Bytes <see cref="EncryptAndHash"/> writes for <paramref name="plaintextLength"/> bytes.</summary>
    public int EncryptedLength(int plaintextLength) => plaintextLength + (HasKey ? NoiseCipherState.TagLength : 0);

    public int EncryptAndHash(ReadOnlySpan<byte> plaintext, Span<byte> destination)
    {
        int written;
        if (_cipher is null)
        {
            plaintext.CopyTo(destination);
            written = plaintext.Length;
        }
        else
        {
            _cipher.Encrypt(_h, plaintext, destination);
            written = plaintext.Length + NoiseCipherState.TagLength;
        }
        MixHash(destination[..written]);
        return written;
    }

    /// <summary>False when the tag does not verify.</summary>
    public bool TryDecryptAndHash(ReadOnlySpan<byte> ciphertext, Span<byte> destination, out int written)
    {
        if (_cipher is null)
        {
            ciphertext.CopyTo(destination);
            written = ciphertext.Length;
        }
        else
        {
            if (ciphertext.Length < NoiseCipherState.TagLength || !_cipher.TryDecrypt(_h, ciphertext, destination))
            {
                written = 0;
                return false;
            }
            written = ciphertext.Length - NoiseCipherState.TagLength;
        }
        MixHash(ciphertext);
        return true;
    }

    /// <summary>The two transport cipher states: (initiator → responder, responder → initiator).</summary>
    public (NoiseCipherState First, NoiseCipherState Second) Split()
    {
        Span<byte> output = stackalloc byte[2 * HashLength];
        Hkdf(_ck, ReadOnlySpan<byte>.Empty, output);
        var result = (new NoiseCipherState(output[..HashLength]),
                      new NoiseCipherState(output[HashLength..]));
        CryptographicOperations.ZeroMemory(output);
        return result;
    }

    /// <summary>Noise <c>HKDF(chaining_key, input_key_material, 2)</c> into 64 bytes of <paramref name="output"/>.</summary>
    internal static void Hkdf(ReadOnlySpan<byte> chainingKey, ReadOnlySpan<byte> inputKeyMaterial, Span<byte> output)
    {
        Span<byte> tempKey = stackalloc byte[HashLength];
        Span<byte> block = stackalloc byte[HashLength + 1];
        HMACSHA256.HashData(chainingKey, inputKeyMaterial, tempKey);
        block[0] = 0x01;
        HMACSHA256.HashData(tempKey, block[..1], output[..HashLength]);
        output[..HashLength].CopyTo(block);
        block[HashLength] = 0x02;
        HMACSHA256.HashData(tempKey, block, output.Slice(HashLength, HashLength));
        CryptographicOperations.ZeroMemory(tempKey);
        CryptographicOperations.ZeroMemory(block);
    }

    public void Dispose()
    {
        CryptographicOperations.ZeroMemory(_ck);
        _cipher?.Dispose();
        _cipher = null;
        _hash.Dispose();
    }
}
