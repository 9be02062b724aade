using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Potluck.Protocol.Runtime;

/// <summary>
/// Security randomness: ids, nonces, secrets and sampling decisions (DESIGN §11). A real node always has
/// <see cref="SystemSecureRandom"/>; only a simulation, which must replay exactly, gets <see cref="SeededSecureRandom"/>.
/// Never a <see cref="Random"/>: its state can be recovered from what it emits.
/// </summary>
public interface ISecureRandom
{
    /// <summary>Fills <paramref name="destination"/> with random bytes.</summary>
    void Fill(Span<byte> destination);
}

/// <summary>The operating system's cryptographic generator (<see cref="RandomNumberGenerator"/>).</summary>
public sealed class SystemSecureRandom : ISecureRandom
{
    public static SystemSecureRandom Instance { get; } = new();

    private SystemSecureRandom()
    {
    }

    public void Fill(Span<byte> destination) => RandomNumberGenerator.Fill(destination);
}

/// <summary>
/// A deterministic generator for simulations only: SHA-256 in counter mode over a seed, so a simulated mesh replays
/// the same ids, nonces and sampling decisions from the same seed. Anyone who knows the seed predicts every byte:
/// the node builder accepts it only together with a simulated network.
/// </summary>
public sealed class SeededSecureRandom : ISecureRandom
{
    private readonly Lock _gate = new();
    private readonly byte[] _block = new byte[40];
    private readonly byte[] _output = new byte[32];
    private ulong _counter;
    private int _available;

    public SeededSecureRandom(long seed, string purpose = "")
    {
        var material = new byte[8 + System.Text.Encoding.UTF8.GetByteCount(purpose)];
        BinaryPrimitives.WriteInt64LittleEndian(material, seed);
        System.Text.Encoding.UTF8.GetBytes(purpose, material.AsSpan(8));
        SHA256.HashData(material, _block.AsSpan(0, 32));
    }

    public void Fill(Span<byte> destination)
    {
        lock (_gate)
        {
            while (destination.Length > 0)
            {
                if (_available == 0)
                {
                    BinaryPrimitives.WriteUInt64LittleEndian(_block.AsSpan(32), _counter++);
                    SHA256.HashData(_block, _output);
                    _available = _output.Length;
                }
                var n = Math.Min(_available, destination.Length);
                _output.AsSpan(_output.Length - _available, n).CopyTo(destination);
                _available -= n;
                destination = destination[n..];
            }
        }
    }
}

/// <summary>Typed draws from an <see cref="ISecureRandom"/>, without modulo bias.</summary>
public static class SecureRandomExtensions
{
    public static byte[] GetBytes(this ISecureRandom random, int count)
    {
        var bytes = new byte[count];
        random.Fill(bytes);
        return bytes;
    }

    public static ulong NextUInt64(this ISecureRandom random)
    {
        Span<byte> bytes = stackalloc byte[8];
        random.Fill(bytes);
        return BinaryPrimitives.ReadUInt64LittleEndian(bytes);
    }

    /// <summary>A uniform double in [0, 1) with 53 random bits.</summary>
    public static double NextDouble(this ISecureRandom random) => (random.NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>A uniform integer in [0, <paramref name="maxExclusive"/>).</summary>
    public static int NextInt32(this ISecureRandom random, int maxExclusive)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxExclusive);
        var bound = (ulong)maxExclusive;
        var limit = ulong.MaxValue - (ulong.MaxValue % bound);
        while (true)
        {
            var draw = random.NextUInt64();
            if (draw < limit)
            {
                return (int)(draw % bound);
            }
        }
    }
}
