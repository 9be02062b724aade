using System.Runtime.InteropServices;
using EvpPKeyHandle = Potluck.Protocol.Noise.OpenSslEvp.EvpPKeyHandle;

namespace Potluck.Protocol.Noise;

/// <summary>
/// X25519 (RFC 7748) through the system's OpenSSL 3 (<c>libcrypto.so.3</c>) on Linux: about 3× faster than
/// BouncyCastle's managed code, which dominated handshake CPU. .NET's <c>ECDiffieHellman</c> has no X25519
/// on Linux, hence the P/Invoke. Every failure (no library, a missing export, an OpenSSL error) makes the
/// caller fall back to BouncyCastle; the two must agree (tests check RFC 7748 vectors against both).
/// No <c>unsafe</c>: spans go in as <c>ref byte</c>, which the marshaller pins.
/// </summary>
internal static class OpenSslX25519
{
    private const string LibCrypto = OpenSslEvp.LibCrypto;
    private const int EvpPkeyX25519 = 1034; // NID_X25519
    private const int KeyLength = 32;

    private static readonly bool Available = Probe();

    /// <summary>True when OpenSSL's X25519 loaded and passed the RFC 7748 self-test.</summary>
    public static bool IsAvailable => Available;

    /// <summary>
    /// Wraps a (clamped or not: X25519 clamps) private key as an OpenSSL key and writes its public key.
    /// Null when OpenSSL is unavailable or failed.
    /// </summary>
    public static EvpPKeyHandle? TryCreate(ReadOnlySpan<byte> privateKey, Span<byte> publicKey)
    {
        if (!Available || privateKey.Length != KeyLength || publicKey.Length < KeyLength)
        {
            return null;
        }
        return CreateCore(privateKey, publicKey);
    }

    /// <summary>
    /// DH(<paramref name="key"/>, <paramref name="remotePublic"/>) into <paramref name="shared"/>. False when
    /// OpenSSL refused: an all-zero result (a low-order point) or any other error; the caller then decides
    /// with BouncyCastle.
    /// </summary>
    public static bool TryAgree(EvpPKeyHandle key, ReadOnlySpan<byte> remotePublic, Span<byte> shared)
    {
        if (remotePublic.Length != KeyLength || shared.Length < KeyLength)
        {
            return false;
        }
        using var peer = OpenSslEvp.TryNewRawPublicKey(EvpPkeyX25519, remotePublic);
        if (peer is null)
        {
            return false;
        }
        var ctx = IntPtr.Zero;
        var added = false;
        var peerAdded = false;
        try
        {
            key.DangerousAddRef(ref added);
            peer.DangerousAddRef(ref peerAdded);
            ctx = EVP_PKEY_CTX_new(key.DangerousGetHandle(), IntPtr.Zero);
            nuint length = KeyLength;
            var ok = ctx != IntPtr.Zero
                     && EVP_PKEY_derive_init(ctx) == 1
                     && EVP_PKEY_derive_set_peer(ctx, peer.DangerousGetHandle()) == 1
                     && EVP_PKEY_derive(ctx, ref MemoryMarshal.GetReference(shared), ref length) == 1
                     && length == KeyLength;
            if (!ok)
            {
                OpenSslEvp.ClearErrors();
            }
            return ok;
        }
        finally
        {
            if (ctx != IntPtr.Zero)
            {
                EVP_PKEY_CTX_free(ctx);
            }
            if (peerAdded)
            {
                peer.DangerousRelease();
            }
            if (added)
            {
                key.DangerousRelease();
            }
        }
    }

    private static EvpPKeyHandle? CreateCore(ReadOnlySpan<byte> privateKey, Span<byte> publicKey)
    {
        var handle = OpenSslEvp.TryNewRawPrivateKey(EvpPkeyX25519, privateKey);
        if (handle is not null && !OpenSslEvp.TryGetRawPublicKey(handle, publicKey[..KeyLength]))
        {
            handle.Dispose();
            return null;
        }
        return handle;
    }

    /// <summary>Loads the library and checks it against RFC 7748 §6.1 before trusting it.</summary>
    private static bool Probe()
    {
        if (!OperatingSystem.IsLinux() || Environment.GetEnvironmentVariable("POTLUCK_NO_OPENSSL_X25519") == "1")
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
            using var key = CreateCore(alicePrivate, publicKey);
            if (key is null || !publicKey.AsSpan().SequenceEqual(expectedPublic))
            {
                return false;
            }
            var shared = new byte[KeyLength];
            return TryAgree(key, bobPublic, shared) && shared.AsSpan().SequenceEqual(expectedShared);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException or MarshalDirectiveException)
        {
            return false;
        }
    }

#pragma warning disable SYSLIB1054 // LibraryImport generates unsafe code, which this project does not allow.
    [DllImport(LibCrypto)]
    private static extern IntPtr EVP_PKEY_CTX_new(IntPtr key, IntPtr engine);

    [DllImport(LibCrypto)]
    private static extern void EVP_PKEY_CTX_free(IntPtr ctx);

    [DllImport(LibCrypto)]
    private static extern int EVP_PKEY_derive_init(IntPtr ctx);

    [DllImport(LibCrypto)]
    private static extern int EVP_PKEY_derive_set_peer(IntPtr ctx, IntPtr peer);

    [DllImport(LibCrypto)]
    private static extern int EVP_PKEY_derive(IntPtr ctx, ref byte key, ref nuint length);

#pragma warning restore SYSLIB1054
}
