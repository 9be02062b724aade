using System.IO.Pipelines;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Pnet;

/// <summary>
/// libp2p private networks, PSK v1 (https://github.com/libp2p/specs/blob/master/pnet/Private-Networks-PSK-V1.md):
/// each side first sends a random 24-byte nonce, then XORs everything it sends with the XSalsa20 keystream of
/// (PSK, its own nonce), and decrypts what it receives with (PSK, the remote's nonce). It runs first on a raw
/// connection, under multistream-select and Noise. It neither authenticates nor detects a wrong key: with
/// mismatched keys the layer above reads noise and its handshake fails.
/// <para>
/// The protected pipe is a thin transform over the raw pipe, with no copies and no background pumps: written
/// bytes are encrypted in place in the raw writer's buffer on <c>Advance</c>, and received bytes are decrypted in
/// place in the raw reader's buffer the first time a read hands them out. So there is nothing to stop: completing
/// the protected pipe's ends completes the raw ones, and disposing the raw connection ends both as before.
/// This requires the raw reader to own its buffers (true of <see cref="Pipe"/>, socket and stream pipe readers).
/// </para>
/// <para>
/// Deviations: go-libp2p sends its nonce with its first write; ours is queued at once and leaves with the first
/// flush of the layer above (like go-libp2p, we wait for the remote's nonce only when we read). XSalsa20 is our own
/// SIMD <see cref="PnetCipher"/>, checked against BouncyCastle's XSalsa20Engine and the NaCl vectors in the tests,
/// because the engine's byte-at-a-time ProcessBytes ran at a fraction of the throughput target.
/// </para>
/// </summary>
public static class PnetProtector
{
    /// <summary>The nonce each side sends first.</summary>
    public const int NonceSize = 24;

    /// <summary>
    /// Wraps <paramref name="raw"/> so that everything written is encrypted and everything read is decrypted with
    /// <paramref name="key"/>. Queues a fresh random nonce on <paramref name="raw"/>'s output (sent with the first
    /// flush); never waits. The caller must not use <paramref name="raw"/> directly afterwards.
    /// </summary>
    public static IDuplexPipe Protect(IDuplexPipe raw, SwarmKey key) => Protect(raw, key, SystemSecureRandom.Instance);

    /// <summary>As <see cref="Protect(IDuplexPipe, SwarmKey)"/>, with the nonce from the node's security randomness.</summary>
    public static IDuplexPipe Protect(IDuplexPipe raw, SwarmKey key, ISecureRandom random)
    {
        ArgumentNullException.ThrowIfNull(random);
        var nonce = new byte[NonceSize];
        random.Fill(nonce);
        return Protect(raw, key, nonce);
    }

    /// <summary>As <see cref="Protect(IDuplexPipe, SwarmKey)"/> with a chosen nonce, for tests and test vectors.</summary>
    internal static IDuplexPipe Protect(IDuplexPipe raw, SwarmKey key, byte[] nonce)
    {
        ArgumentNullException.ThrowIfNull(raw);
        ArgumentNullException.ThrowIfNull(key);
        if (nonce.Length != NonceSize)
        {
            throw new ArgumentException($"the nonce is {NonceSize} bytes", nameof(nonce));
        }
        return new ProtectedPipe(new PnetReader(raw.Input, key.KeyBytes), new PnetWriter(raw.Output, key.KeyBytes, nonce));
    }

    private sealed class ProtectedPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }
}
