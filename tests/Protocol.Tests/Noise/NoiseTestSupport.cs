using System.Buffers;
using System.IO.Pipelines;
using Microsoft.Extensions.Logging.Abstractions;
using Org.BouncyCastle.Asn1.X9;
using Org.BouncyCastle.Crypto;
using Org.BouncyCastle.Crypto.Generators;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Security;
using Org.BouncyCastle.X509;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Noise;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Security;

namespace Potluck.Protocol.Tests.Noise;

/// <summary>One end of an in-memory connection; records when it is disposed.</summary>
internal sealed class TestDuplex(PipeReader input, PipeWriter output) : IDuplexPipe, IAsyncDisposable
{
    private readonly TaskCompletionSource _disposed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public PipeReader Input { get; } = input;

    public PipeWriter Output { get; } = output;

    public Task Disposed => _disposed.Task;

    public ValueTask DisposeAsync()
    {
        Input.Complete();
        Output.Complete();
        _disposed.TrySetResult();
        return ValueTask.CompletedTask;
    }
}

/// <summary>
/// Forwards bytes from one pipe to another, optionally recording them and flipping one byte, either at an
/// absolute offset or at the n-th byte that is not part of a 2-byte Noise length prefix. Completion is
/// propagated both ways.
/// </summary>
internal sealed class Relay
{
    private int _headerLeft = 2;
    private int _headerValue;
    private int _bodyLeft;

    public long Count { get; private set; }

    public long BodyCount { get; private set; }

    public long FlipAt { get; set; } = -1;

    public long FlipBodyByte { get; set; } = -1;

    public MemoryStream? Recording { get; set; }

    public Task Run(PipeReader from, PipeWriter to) => Task.Run(async () =>
    {
        while (true)
        {
            var result = await from.ReadAsync();
            foreach (var segment in result.Buffer)
            {
                var span = to.GetSpan(segment.Length)[..segment.Length];
                segment.Span.CopyTo(span);
                for (var i = 0; i < span.Length; i++)
                {
                    Track(ref span[i]);
                }
                Recording?.Write(span);
                to.Advance(segment.Length);
            }
            from.AdvanceTo(result.Buffer.End);
            var flush = await to.FlushAsync();
            if (flush.IsCompleted)
            {
                from.Complete();
                return;
            }
            if (result.IsCompleted)
            {
                from.Complete();
                to.Complete();
                return;
            }
        }
    });

    private void Track(ref byte b)
    {
        if (Count == FlipAt)
        {
            b ^= 0x01;
        }
        Count++;
        if (_headerLeft > 0)
        {
            _headerValue = (_headerValue << 8) | b;
            if (--_headerLeft == 0)
            {
                _bodyLeft = _headerValue;
                _headerValue = 0;
                if (_bodyLeft == 0)
                {
                    _headerLeft = 2;
                }
            }
            return;
        }
        if (BodyCount == FlipBodyByte)
        {
            b ^= 0x80;
        }
        BodyCount++;
        if (--_bodyLeft == 0)
        {
            _headerLeft = 2;
        }
    }
}

internal static class NoiseTestSupport
{
    /// <summary>
    /// One direction of an in-memory connection, holding back its writer at the TCP transport's thresholds (1 MiB, resumed
    /// at 512 KiB): a side may write ahead of its reader as much as on a real connection (the Noise channel reads the
    /// connection only when its application reads, so the connection is the only buffer ahead of it).
    /// </summary>
    public static Pipe Direction() => new(new PipeOptions(pauseWriterThreshold: 1 << 20, resumeWriterThreshold: 1 << 19));

    /// <summary>Two cross-wired ends of an in-memory connection.</summary>
    public static (TestDuplex A, TestDuplex B) CreatePair()
    {
        var ab = Direction();
        var ba = Direction();
        return (new TestDuplex(ba.Reader, ab.Writer), new TestDuplex(ab.Reader, ba.Writer));
    }

    /// <summary>A ↔ relays ↔ B, so tests can watch and tamper with each direction.</summary>
    public static (TestDuplex A, TestDuplex B, Relay AToB, Relay BToA) CreateRelayedPair()
    {
        var aOut = Direction();
        var bIn = Direction();
        var bOut = Direction();
        var aIn = Direction();
        var aToB = new Relay();
        var bToA = new Relay();
        _ = aToB.Run(aOut.Reader, bIn.Writer);
        _ = bToA.Run(bOut.Reader, aIn.Writer);
        return (new TestDuplex(aIn.Reader, aOut.Writer), new TestDuplex(bIn.Reader, bOut.Writer), aToB, bToA);
    }

    public static NoiseSecurity Create(PrivateKey key, params string[] earlyMuxers) =>
        new(key, new NoiseOptions { EarlyMuxers = earlyMuxers }, NodeRuntime.System, NullLoggerFactory.Instance);

    public static PrivateKey Key(byte seed) => PrivateKey.FromSeed(Enumerable.Repeat(seed, 32).ToArray());

    public static async Task<(ISecureChannel Initiator, ISecureChannel Responder)> HandshakeAsync(
        NoiseSecurity initiator, NoiseSecurity responder, TestDuplex a, TestDuplex b, CancellationToken ct, PeerId? expected = null)
    {
        var ta = initiator.SecureAsync(a, true, expected, ct).AsTask();
        var tb = responder.SecureAsync(b, false, null, ct).AsTask();
        await Task.WhenAll(ta, tb);
        return (ta.Result, tb.Result);
    }

    /// <summary>Reads everything until the writer completes.</summary>
    public static async Task<byte[]> ReadToEndAsync(PipeReader reader, CancellationToken ct)
    {
        var all = new MemoryStream();
        while (true)
        {
            var result = await reader.ReadAsync(ct);
            foreach (var segment in result.Buffer)
            {
                all.Write(segment.Span);
            }
            reader.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                return all.ToArray();
            }
        }
    }

    /// <summary>Reads exactly <paramref name="count"/> bytes.</summary>
    public static async Task<byte[]> ReadExactlyAsync(PipeReader reader, int count, CancellationToken ct)
    {
        while (true)
        {
            var result = await reader.ReadAsync(ct);
            if (result.Buffer.Length >= count)
            {
                var bytes = result.Buffer.Slice(0, count).ToArray();
                reader.AdvanceTo(result.Buffer.GetPosition(count));
                return bytes;
            }
            if (result.IsCompleted)
            {
                throw new EndOfStreamException();
            }
            reader.AdvanceTo(result.Buffer.Start, result.Buffer.End);
        }
    }

    /// <summary>Writes <paramref name="data"/> in pieces of the sizes <paramref name="random"/> picks, then completes.</summary>
    public static async Task WriteAllAsync(PipeWriter writer, byte[] data, Random random, CancellationToken ct)
    {
        var offset = 0;
        while (offset < data.Length)
        {
            var n = Math.Min(data.Length - offset, random.Next(1, 200_000));
            await writer.WriteAsync(data.AsMemory(offset, n), ct);
            offset += n;
        }
        await writer.CompleteAsync();
    }
}

/// <summary>A libp2p identity of any key type, built with BouncyCastle: the public key and a signer.</summary>
internal sealed record ForeignIdentity(PublicKey PublicKey, Func<byte[], byte[]> Sign)
{
    private static readonly SecureRandom Random = new(new Org.BouncyCastle.Crypto.Prng.DigestRandomGenerator(new Org.BouncyCastle.Crypto.Digests.Sha256Digest()));

    static ForeignIdentity()
    {
        Random.SetSeed(42);
    }

    private static readonly Lazy<ForeignIdentity> CachedRsa = new(Rsa);
    private static readonly Lazy<ForeignIdentity> CachedSecp256k1 = new(Secp256k1);
    private static readonly Lazy<ForeignIdentity> CachedEcdsa = new(EcdsaP256);

    /// <summary>A cached identity of <paramref name="type"/> (RSA key generation is slow).</summary>
    public static ForeignIdentity Of(KeyType type) => type switch
    {
        KeyType.Rsa => CachedRsa.Value,
        KeyType.Secp256k1 => CachedSecp256k1.Value,
        KeyType.Ecdsa => CachedEcdsa.Value,
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    public static ForeignIdentity Rsa()
    {
        var generator = new RsaKeyPairGenerator();
        generator.Init(new KeyGenerationParameters(Random, 2048));
        var pair = generator.GenerateKeyPair();
        var der = SubjectPublicKeyInfoFactory.CreateSubjectPublicKeyInfo(pair.Public).GetDerEncoded();
        return new ForeignIdentity(Create(KeyType.Rsa, der), data => SignWith("SHA-256withRSA", pair.Private, data));
    }

    public static ForeignIdentity Secp256k1()
    {
        var curve = ECNamedCurveTable.GetByName("secp256k1");
        var pair = GenerateEc(new ECDomainParameters(curve.Curve, curve.G, curve.N, curve.H));
        var compressed = ((ECPublicKeyParameters)pair.Public).Q.GetEncoded(true);
        return new ForeignIdentity(Create(KeyType.Secp256k1, compressed), data => SignWith("SHA-256withECDSA", pair.Private, data));
    }

    public static ForeignIdentity EcdsaP256()
    {
        var generator = new ECKeyPairGenerator();
        generator.Init(new ECKeyGenerationParameters(Org.BouncyCastle.Asn1.X9.X9ObjectIdentifiers.Prime256v1, Random));
        var pair = generator.GenerateKeyPair();
        var der = SubjectPublicKeyInfoFactory.CreateSubjectPublicKeyInfo(pair.Public).GetDerEncoded();
        return new ForeignIdentity(Create(KeyType.Ecdsa, der), data => SignWith("SHA-256withECDSA", pair.Private, data));
    }

    private static AsymmetricCipherKeyPair GenerateEc(ECDomainParameters domain)
    {
        var generator = new ECKeyPairGenerator();
        generator.Init(new ECKeyGenerationParameters(domain, Random));
        return generator.GenerateKeyPair();
    }

    private static PublicKey Create(KeyType type, byte[] data) =>
        PublicKey.TryCreate(type, data, out var key) ? key : throw new InvalidOperationException($"test {type} key rejected");

    private static byte[] SignWith(string algorithm, AsymmetricKeyParameter key, byte[] data)
    {
        var signer = SignerUtilities.GetSigner(algorithm);
        signer.Init(true, key);
        signer.BlockUpdate(data, 0, data.Length);
        return signer.GenerateSignature();
    }
}
