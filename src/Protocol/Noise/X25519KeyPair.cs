using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace Potluck.Protocol.Noise;

/// <summary>
/// An X25519 key pair (Noise <c>DH = 25519</c>, RFC 7748) computed by libsodium 1.0.22, the native library of the
/// <c>libsodium</c> NuGet package that NSec.Cryptography depends on and loads: the same file, so the same code and the
/// same verdict as the rest of the suite, on every machine, with nothing to install and nothing probed. Any 32 bytes
/// are a private key (the scalar multiplication clamps it); a remote key's top bit is ignored and a u ≥ p is taken
/// modulo p (RFC 7748 §5). Never logged.
/// <para>Why not NSec's <c>X25519</c>: NSec keeps every private key and every shared secret in its own
/// <c>sodium_malloc</c> allocation (guard pages, <c>mlock</c>; about ten memory-management system calls to make and
/// free, each a TLB shootdown once the process runs on several cores), and a handshake makes an ephemeral key and three
/// shared secrets on each side: with it, handshakes per second fell to about half (0.51–0.55× in interleaved runs of
/// <c>scripts/bench/run.sh</c>; <c>strace -c</c> showed the eight allocations per handshake). Here the two
/// libsodium functions NSec itself calls for X25519 are called directly on our buffers; the ephemeral scalar lives in
/// a managed array cleared on <see cref="Dispose"/>, and the DH output in the caller's buffer (Noise needs the raw
/// output for its HKDF anyway, which NSec would otherwise hand out only from an exportable shared secret).</para>
/// </summary>
internal sealed class X25519KeyPair : IDisposable
{
    public const int Length = 32;

    private readonly byte[] _private;
    private readonly byte[] _public = new byte[Length];

    private X25519KeyPair(byte[] privateKey)
    {
        _private = privateKey;
        if (Native.BaseMultiply(_private, _public) != 0)
        {
            throw new CryptographicException("libsodium refused to compute an X25519 public key");
        }
    }

    public ReadOnlySpan<byte> PublicKey => _public;

    /// <summary>A fresh key pair from <see cref="RandomNumberGenerator"/>.</summary>
    public static X25519KeyPair Generate() => new(RandomNumberGenerator.GetBytes(Length));

    /// <summary>A fresh key pair from <paramref name="random"/> (the node runtime's security randomness: the OS's, or a simulation's seed).</summary>
    public static X25519KeyPair Generate(Potluck.Protocol.Runtime.ISecureRandom random)
    {
        Span<byte> secret = stackalloc byte[Length];
        random.Fill(secret);
        var pair = FromPrivate(secret);
        CryptographicOperations.ZeroMemory(secret);
        return pair;
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

    /// <summary>
    /// DH(this, remote) into the first 32 bytes of <paramref name="shared"/>; false (and those bytes zero) when the
    /// remote key is not 32 bytes or the result is all zeros, which is what every point of small order gives and what
    /// Noise and libp2p require us to refuse. libsodium refuses an all-zero result itself; the check here makes the
    /// verdict ours whatever the library says.
    /// </summary>
    public bool TryAgree(ReadOnlySpan<byte> remotePublic, Span<byte> shared)
    {
        var output = shared[..Length];
        if (remotePublic.Length != Length || Native.Multiply(_private, remotePublic, output) != 0 || output.IndexOfAnyExcept((byte)0) < 0)
        {
            output.Clear();
            return false;
        }
        return true;
    }

    public void Dispose() => CryptographicOperations.ZeroMemory(_private);

    /// <summary>
    /// The libsodium functions, on spans passed as <c>ref byte</c> (the marshaller pins them; this project has no
    /// <c>unsafe</c>). <c>"libsodium"</c> resolves, as NSec's own imports of it do, to the package's native asset.
    /// </summary>
    private static class Native
    {
        private const string Library = "libsodium";

        static Native()
        {
            // Picks the fastest implementations for this CPU; idempotent and thread-safe (NSec calls it too).
            if (sodium_init() < 0)
            {
                throw new CryptographicException("libsodium failed to initialise");
            }
        }

        public static int BaseMultiply(ReadOnlySpan<byte> scalar, Span<byte> point) =>
            crypto_scalarmult_curve25519_base(ref MemoryMarshal.GetReference(point), ref MemoryMarshal.GetReference(scalar));

        public static int Multiply(ReadOnlySpan<byte> scalar, ReadOnlySpan<byte> point, Span<byte> result) =>
            crypto_scalarmult_curve25519(ref MemoryMarshal.GetReference(result), ref MemoryMarshal.GetReference(scalar),
                ref MemoryMarshal.GetReference(point));

#pragma warning disable SYSLIB1054 // LibraryImport generates unsafe code, which this project does not allow.
        [DllImport(Library)]
        private static extern int sodium_init();

        [DllImport(Library)]
        private static extern int crypto_scalarmult_curve25519_base(ref byte q, ref byte n);

        [DllImport(Library)]
        private static extern int crypto_scalarmult_curve25519(ref byte q, ref byte n, ref byte p);
#pragma warning restore SYSLIB1054
    }
}
