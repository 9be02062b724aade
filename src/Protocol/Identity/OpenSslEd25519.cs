using System.Runtime.InteropServices;
using EvpPKeyHandle = Potluck.Protocol.Identity.OpenSslEvp.EvpPKeyHandle;

namespace Potluck.Protocol.Identity;

/// <summary>
/// Ed25519 (RFC 8032, pure: no pre-hash, no context) signing and verification through the system's OpenSSL 3
/// (<c>libcrypto.so.3</c>) on Linux, written to take BouncyCastle's managed code off a Noise handshake's CPU
/// (each end signs once and verifies once). .NET has no Ed25519, hence the
/// P/Invoke, as for X25519 in <c>Noise/OpenSslX25519</c>. It turned out no faster here (see <see cref="Preferred"/>). Keys are wrapped once per key object as an
/// <see cref="EvpPKeyHandle"/>; each operation takes a fresh <c>EVP_MD_CTX</c>, so one key may sign or verify
/// on several threads at once. Every failure to set up (no library, a missing export, an OpenSSL error) makes
/// the caller fall back to BouncyCastle; the two must agree (tests check RFC 8032 vectors against both).
/// No <c>unsafe</c>: spans go in as <c>ref byte</c>, which the marshaller pins.
/// </summary>
internal static class OpenSslEd25519
{
    private const string LibCrypto = OpenSslEvp.LibCrypto;
    private const int EvpPkeyEd25519 = 1087; // NID_ED25519
    public const int KeyLength = 32;
    public const int SignatureLength = 64;

    // A zero-length span with a real address: OpenSSL is never handed a null message pointer.
    private static readonly byte[] EmptyMessage = new byte[1];

    private static readonly bool Available = Probe();

    /// <summary>True when OpenSSL's Ed25519 loaded and passed the RFC 8032 self-test.</summary>
    public static bool IsAvailable => Available;

    /// <summary>
    /// Whether <see cref="PrivateKey.Sign"/> and <see cref="PublicKey.Verify"/> take this path: only when asked for
    /// with <c>POTLUCK_OPENSSL_ED25519=1</c>. Measured side by side (scripts/bench, <c>micro</c>) against BouncyCastle
    /// 2.7 with OpenSSL 3.0: signing costs the same (ratio 1.06) and verifying is about 30 % slower (OpenSSL 3.0 verifies
    /// with a plain double-scalar multiplication; BouncyCastle uses precomputed tables), so BouncyCastle stays the fallback.
    /// libsodium (<see cref="SodiumEd25519"/>), faster than both, comes before either when it is installed.
    /// </summary>
    public static bool Preferred { get; } = Available && Environment.GetEnvironmentVariable("POTLUCK_OPENSSL_ED25519") == "1";

    /// <summary>Wraps a 32-byte seed as an OpenSSL private key; null when OpenSSL is unavailable or failed.</summary>
    public static EvpPKeyHandle? TryCreatePrivate(ReadOnlySpan<byte> seed) =>
        Available && seed.Length == KeyLength ? CreatePrivateCore(seed) : null;

    /// <summary>Wraps a 32-byte public key as an OpenSSL key; null when OpenSSL is unavailable or refused it.</summary>
    public static EvpPKeyHandle? TryCreatePublic(ReadOnlySpan<byte> publicKey) =>
        Available && publicKey.Length == KeyLength ? CreatePublicCore(publicKey) : null;

    /// <summary>Signs into <paramref name="signature"/> (64 bytes); false on any OpenSSL error.</summary>
    public static bool TrySign(EvpPKeyHandle key, ReadOnlySpan<byte> message, Span<byte> signature)
    {
        if (signature.Length < SignatureLength)
        {
            return false;
        }
        if (message.IsEmpty)
        {
            message = EmptyMessage.AsSpan(0, 0);
        }
        var ctx = IntPtr.Zero;
        var added = false;
        try
        {
            key.DangerousAddRef(ref added);
            ctx = EVP_MD_CTX_new();
            nuint length = SignatureLength;
            var ok = ctx != IntPtr.Zero
                     && EVP_DigestSignInit(ctx, IntPtr.Zero, IntPtr.Zero, IntPtr.Zero, key.DangerousGetHandle()) == 1
                     && EVP_DigestSign(ctx, ref MemoryMarshal.GetReference(signature), ref length,
                                       ref MemoryMarshal.GetReference(message), (nuint)message.Length) == 1
                     && length == SignatureLength;
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
                EVP_MD_CTX_free(ctx);
            }
            if (added)
            {
                key.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// Verifies a 64-byte signature. OpenSSL answers only valid or not (its error queue is cleared either way):
    /// a signature of the wrong length is simply invalid.
    /// </summary>
    public static bool Verify(EvpPKeyHandle key, ReadOnlySpan<byte> message, ReadOnlySpan<byte> signature)
    {
        if (signature.Length != SignatureLength)
        {
            return false;
        }
        if (message.IsEmpty)
        {
            message = EmptyMessage.AsSpan(0, 0);
        }
        var ctx = IntPtr.Zero;
        var added = false;
        try
        {
            key.DangerousAddRef(ref added);
            ctx = EVP_MD_CTX_new();
            var ok = ctx != IntPtr.Zero
                     && EVP_DigestVerifyInit(ctx, IntPtr.Zero, IntPtr.Zero, IntPtr.Zero, key.DangerousGetHandle()) == 1
                     && EVP_DigestVerify(ctx, ref MemoryMarshal.GetReference(signature), SignatureLength,
                                         ref MemoryMarshal.GetReference(message), (nuint)message.Length) == 1;
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
                EVP_MD_CTX_free(ctx);
            }
            if (added)
            {
                key.DangerousRelease();
            }
        }
    }

    private static EvpPKeyHandle? CreatePrivateCore(ReadOnlySpan<byte> seed) => OpenSslEvp.TryNewRawPrivateKey(EvpPkeyEd25519, seed);

    private static EvpPKeyHandle? CreatePublicCore(ReadOnlySpan<byte> publicKey) => OpenSslEvp.TryNewRawPublicKey(EvpPkeyEd25519, publicKey);

    /// <summary>Loads the library and checks it against RFC 8032 §7.1 test 2 before trusting it.</summary>
    private static bool Probe()
    {
        if (!OperatingSystem.IsLinux() || Environment.GetEnvironmentVariable("POTLUCK_NO_OPENSSL_ED25519") == "1")
        {
            return false;
        }
        try
        {
            var seed = Convert.FromHexString("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb");
            var publicKey = Convert.FromHexString("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c");
            var message = new byte[] { 0x72 };
            var expected = Convert.FromHexString(
                "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00");
            using var key = CreatePrivateCore(seed);
            using var pub = CreatePublicCore(publicKey);
            if (key is null || pub is null)
            {
                return false;
            }
            var derived = new byte[KeyLength];
            if (!OpenSslEvp.TryGetRawPublicKey(key, derived) || !derived.AsSpan().SequenceEqual(publicKey))
            {
                return false;
            }
            var signature = new byte[SignatureLength];
            if (!TrySign(key, message, signature) || !signature.AsSpan().SequenceEqual(expected))
            {
                return false;
            }
            signature[0] ^= 1;
            return Verify(pub, message, expected) && !Verify(pub, message, signature);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException or MarshalDirectiveException)
        {
            return false;
        }
    }

#pragma warning disable SYSLIB1054 // LibraryImport generates unsafe code, which this project does not allow.
    [DllImport(LibCrypto)]
    private static extern IntPtr EVP_MD_CTX_new();

    [DllImport(LibCrypto)]
    private static extern void EVP_MD_CTX_free(IntPtr ctx);

    [DllImport(LibCrypto)]
    private static extern int EVP_DigestSignInit(IntPtr ctx, IntPtr pctx, IntPtr md, IntPtr engine, IntPtr key);

    [DllImport(LibCrypto)]
    private static extern int EVP_DigestSign(IntPtr ctx, ref byte signature, ref nuint signatureLength, ref byte message, nuint messageLength);

    [DllImport(LibCrypto)]
    private static extern int EVP_DigestVerifyInit(IntPtr ctx, IntPtr pctx, IntPtr md, IntPtr engine, IntPtr key);

    [DllImport(LibCrypto)]
    private static extern int EVP_DigestVerify(IntPtr ctx, ref byte signature, nuint signatureLength, ref byte message, nuint messageLength);

#pragma warning restore SYSLIB1054
}
