using System.Runtime.InteropServices;

namespace Potluck.Protocol.Noise;

/// <summary>
/// The OpenSSL 3 (<c>libcrypto.so.3</c>) key calls <see cref="OpenSslX25519"/> makes: raw keys in and out of an
/// <c>EVP_PKEY</c>, held in an <see cref="EvpPKeyHandle"/>. Every failure clears OpenSSL's error
/// queue and returns null or false; callers fall back to another implementation. No <c>unsafe</c>: spans go in as
/// <c>ref byte</c>, which the marshaller pins.
/// </summary>
internal static class OpenSslEvp
{
    public const string LibCrypto = "libcrypto.so.3";

    /// <summary>An <c>EVP_PKEY</c> from a raw private key of <paramref name="type"/> (an OpenSSL NID), or null.</summary>
    public static EvpPKeyHandle? TryNewRawPrivateKey(int type, ReadOnlySpan<byte> key) =>
        Valid(EVP_PKEY_new_raw_private_key(type, IntPtr.Zero, ref MemoryMarshal.GetReference(key), (nuint)key.Length));

    /// <summary>An <c>EVP_PKEY</c> from a raw public key of <paramref name="type"/> (an OpenSSL NID), or null.</summary>
    public static EvpPKeyHandle? TryNewRawPublicKey(int type, ReadOnlySpan<byte> key) =>
        Valid(EVP_PKEY_new_raw_public_key(type, IntPtr.Zero, ref MemoryMarshal.GetReference(key), (nuint)key.Length));

    /// <summary>Writes the key's raw public key, exactly <paramref name="publicKey"/>'s length of it; false on any error.</summary>
    public static bool TryGetRawPublicKey(EvpPKeyHandle key, Span<byte> publicKey)
    {
        var length = (nuint)publicKey.Length;
        if (EVP_PKEY_get_raw_public_key(key, ref MemoryMarshal.GetReference(publicKey), ref length) == 1 && length == (nuint)publicKey.Length)
        {
            return true;
        }
        ClearErrors();
        return false;
    }

    /// <summary>Empties this thread's OpenSSL error queue after a failed call.</summary>
    public static void ClearErrors() => ERR_clear_error();

    private static EvpPKeyHandle? Valid(EvpPKeyHandle handle)
    {
        if (!handle.IsInvalid)
        {
            return handle;
        }
        handle.Dispose();
        ClearErrors();
        return null;
    }

    /// <summary>An <c>EVP_PKEY*</c>, freed with <c>EVP_PKEY_free</c> on dispose or, failing that, by the finalizer.</summary>
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
    private static extern EvpPKeyHandle EVP_PKEY_new_raw_public_key(int type, IntPtr engine, ref byte key, nuint length);

    [DllImport(LibCrypto)]
    private static extern int EVP_PKEY_get_raw_public_key(EvpPKeyHandle key, ref byte publicKey, ref nuint length);

    [DllImport(LibCrypto)]
    private static extern void EVP_PKEY_free(IntPtr key);

    [DllImport(LibCrypto)]
    private static extern void ERR_clear_error();
#pragma warning restore SYSLIB1054
}
