using System.Runtime.InteropServices;

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
    private const string LibCrypto = "libcrypto.so.3";
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
        var peer = EVP_PKEY_new_raw_public_key(EvpPkeyX25519, IntPtr.Zero, ref MemoryMarshal.GetReference(remotePublic), KeyLength);
        if (peer == IntPtr.Zero)
        {
            ERR_clear_error();
            return false;
        }
        var ctx = IntPtr.Zero;
        var added = false;
        try
        {
            key.DangerousAddRef(ref added);
            ctx = EVP_PKEY_CTX_new(key.DangerousGetHandle(), IntPtr.Zero);
            nuint length = KeyLength;
            var ok = ctx != IntPtr.Zero
                     && EVP_PKEY_derive_init(ctx) == 1
                     && EVP_PKEY_derive_set_peer(ctx, peer) == 1
                     && EVP_PKEY_derive(ctx, ref MemoryMarshal.GetReference(shared), ref length) == 1
                     && length == KeyLength;
            if (!ok)
            {
                ERR_clear_error();
            }
            return ok;
        }
        finally
        {
            if (ctx != IntPtr.Zero)
            {
                EVP_PKEY_CTX_free(ctx);
            }
            EVP_PKEY_free(peer);
            if (added)
            {
                key.DangerousRelease();
            }
        }
    }

    private static EvpPKeyHandle? CreateCore(ReadOnlySpan<byte> privateKey, Span<byte> publicKey)
    {
        var handle = EVP_PKEY_new_raw_private_key(EvpPkeyX25519, IntPtr.Zero, ref MemoryMarshal.GetReference(privateKey), KeyLength);
        if (handle.IsInvalid)
        {
            handle.Dispose();
            ERR_clear_error();
            return null;
        }
        nuint length = KeyLength;
        if (EVP_PKEY_get_raw_public_key(handle, ref MemoryMarshal.GetReference(publicKey), ref length) != 1 || length != KeyLength)
        {
            handle.Dispose();
            ERR_clear_error();
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

    /// <summary>An <c>EVP_PKEY*</c>, freed with <c>EVP_PKEY_free</c>.</summary>
    internal sealed class EvpPKeyHandle : SafeHandle
    {
        public EvpPKeyHandle()
            : base(IntPtr.Zero, ownsHandle: true)
        {
        }

        public override bool IsInvalid => handle == IntPtr.Zero;

        protected override bool ReleaseHandle()
        {
            EVP_PKEY_free(handle);
            return true;
        }
    }

#pragma warning disable SYSLIB1054 // LibraryImport generates unsafe code, which this project does not allow.
    [DllImport(LibCrypto)]
    private static extern EvpPKeyHandle EVP_PKEY_new_raw_private_key(int type, IntPtr engine, ref byte key, nuint length);

    [DllImport(LibCrypto)]
    private static extern IntPtr EVP_PKEY_new_raw_public_key(int type, IntPtr engine, ref byte key, nuint length);

    [DllImport(LibCrypto)]
    private static extern int EVP_PKEY_get_raw_public_key(EvpPKeyHandle key, ref byte publicKey, ref nuint length);

    [DllImport(LibCrypto)]
    private static extern void EVP_PKEY_free(IntPtr key);

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

    [DllImport(LibCrypto)]
    private static extern void ERR_clear_error();
#pragma warning restore SYSLIB1054
}
