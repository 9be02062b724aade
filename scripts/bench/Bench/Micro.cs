using System.Diagnostics;
using NSec.Cryptography;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Noise;
using NSecKey = NSec.Cryptography.Key;
using NSecPublicKey = NSec.Cryptography.PublicKey;
using PublicKey = Potluck.Protocol.Identity.PublicKey;

namespace Potluck.Benchmarks;

/// <summary>
/// Quick per-operation costs of the handshake's and the transport's crypto (µs of one thread's time, best of a few rounds), for
/// finding where handshake CPU goes: not a substitute for BenchmarkDotNet, but needs nothing else.
/// </summary>
internal static class Micro
{
    public static void Run()
    {
        Measure("X25519 key pair", 2000, () => X25519KeyPair.Generate().Dispose());
        using var a = X25519KeyPair.Generate();
        using var b = X25519KeyPair.Generate();
        var shared = new byte[32];
        Measure("X25519 agree", 2000, () => a.TryAgree(b.PublicKey, shared));
        var identity = PrivateKey.Generate();
        var message = new byte[64];
        var signature = identity.Sign(message);
        Measure("Ed25519 sign", 2000, () => identity.Sign(message));
        Measure("Ed25519 verify", 2000, () => identity.PublicKey.Verify(message, signature));
        var remote = identity.PublicKey.ToProtobuf();
        Measure("Ed25519 remote key parse + first verify", 2000,
            () => PublicKey.FromProtobuf(remote).Verify(message, signature));
        Measure("Noise XX handshake state machines, both ends (no I/O, no signatures)", 1000, () =>
        {
            using var i = new NoiseHandshakeState(true, a, ReadOnlySpan<byte>.Empty);
            using var r = new NoiseHandshakeState(false, b, ReadOnlySpan<byte>.Empty);
            var buffer = new byte[1024];
            var payload = new byte[1024];
            var n = i.WriteMessage([], buffer);
            r.ReadMessage(buffer.AsSpan(0, n), payload);
            n = r.WriteMessage(new byte[100], buffer);
            i.ReadMessage(buffer.AsSpan(0, n), payload);
            n = i.WriteMessage(new byte[100], buffer);
            r.ReadMessage(buffer.AsSpan(0, n), payload);
            var (s1, r1) = i.Split();
            var (s2, r2) = r.Split();
            s1.Dispose(); r1.Dispose(); s2.Dispose(); r2.Dispose();
        });
        var key = new byte[32];
        Measure("ChaCha20Poly1305 cipher state create+dispose", 5000, () => new NoiseCipherState(key).Dispose());
        var ck = new byte[32];
        var output = new byte[64];
        Measure("Noise HKDF (3 HMAC-SHA256)", 5000, () => NoiseSymmetricState.Hkdf(ck, key, output));
        using var cipher = new NoiseCipherState(key);
        var plain = new byte[NoiseFrame.MaxPlaintextLength];
        var sealedFrame = new byte[NoiseFrame.MaxMessageLength];
        Measure("ChaCha20Poly1305 encrypt 65519 B", 2000, () => cipher.Encrypt(default, plain, sealedFrame));
        CompareWithNSec(a, b);
    }

    /// <summary>
    /// The choices NSec's API would have made, against ours, interleaved: X25519 with an NSec key per key pair and an
    /// exportable shared secret per agreement (each a <c>sodium_malloc</c> allocation; measured on one thread here, where
    /// its page-table changes are cheaper than in a busy process whose threads run on every core), and NSec's
    /// ChaCha20-Poly1305 against the platform's.
    /// </summary>
    private static void CompareWithNSec(X25519KeyPair a, X25519KeyPair b)
    {
        var x25519 = KeyAgreementAlgorithm.X25519;
        using var nsecKey = NSecKey.Create(x25519);
        var nsecRemote = NSecPublicKey.Import(x25519, b.PublicKey, KeyBlobFormat.RawPublicKey);
        var shared = new byte[32];
        ComparePaths("X25519 key pair", 500,
            ("X25519KeyPair", () => X25519KeyPair.Generate().Dispose()),
            ("NSec Key", () => NSecKey.Create(x25519).Dispose()));
        ComparePaths("X25519 agree", 500,
            ("X25519KeyPair", () => a.TryAgree(b.PublicKey, shared)),
            ("NSec SharedSecret, exported", () =>
            {
                using var secret = x25519.Agree(nsecKey, nsecRemote, new SharedSecretCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport });
                secret!.TryExport(SharedSecretBlobFormat.RawSharedSecret, shared, out _);
            }));
        var key = new byte[32];
        var aead = AeadAlgorithm.ChaCha20Poly1305;
        ComparePaths("ChaCha20-Poly1305 key setup + dispose", 2000,
            ("NoiseCipherState (platform)", () => new NoiseCipherState(key).Dispose()),
            ("NSec Key", () => NSecKey.Import(aead, key, KeyBlobFormat.RawSymmetricKey).Dispose()));
        var plain = new byte[NoiseFrame.MaxPlaintextLength];
        var sealedFrame = new byte[NoiseFrame.MaxMessageLength];
        var nonce = new byte[12];
        using var nsecAeadKey = NSecKey.Import(aead, key, KeyBlobFormat.RawSymmetricKey);
        foreach (var size in new[] { 64, 1024, 16384, NoiseFrame.MaxPlaintextLength })
        {
            using var ours = new NoiseCipherState(key);
            ComparePaths($"ChaCha20-Poly1305 encrypt {size} B", size >= 16384 ? 500 : 5000,
                ("NoiseCipherState (platform)", () => ours.Encrypt(default, plain.AsSpan(0, size), sealedFrame)),
                ("NSec", () => aead.Encrypt(nsecAeadKey, nonce, default, plain.AsSpan(0, size), sealedFrame.AsSpan(0, size + 16))));
        }
    }

    /// <summary>
    /// Several paths interleaved (each round runs every path once, in rotating order), 11 timed rounds after a warm-up:
    /// median µs per operation (wall and this process's CPU) and the median per-round ratio to the first path.
    /// </summary>
    private static void ComparePaths(string name, int count, params (string Name, Action Action)[] paths)
    {
        var wall = paths.Select(_ => new List<double>()).ToArray();
        var cpu = paths.Select(_ => new List<double>()).ToArray();
        var ratios = paths.Select(_ => new List<double>()).ToArray();
        var round = new double[paths.Length];
        for (var r = 0; r < 12; r++)
        {
            for (var k = 0; k < paths.Length; k++)
            {
                var p = (k + r) % paths.Length;
                var action = paths[p].Action;
                var c0 = Environment.CpuUsage.TotalTime;
                var sw = Stopwatch.StartNew();
                for (var i = 0; i < count; i++)
                {
                    action();
                }
                round[p] = sw.Elapsed.TotalMicroseconds / count;
                var c = (Environment.CpuUsage.TotalTime - c0).TotalMicroseconds / count;
                if (r > 0)
                {
                    wall[p].Add(round[p]);
                    cpu[p].Add(c);
                }
            }
            if (r > 0)
            {
                for (var p = 0; p < paths.Length; p++)
                {
                    ratios[p].Add(round[p] / round[0]);
                }
            }
        }
        static double Median(List<double> v) => v.Order().ElementAt(v.Count / 2);
        var parts = paths.Select((p, i) => $"{p.Name} {Median(wall[i]):0.0} µs (cpu {Median(cpu[i]):0.0}, ×{Median(ratios[i]):0.00})");
        Console.WriteLine($"# {name}: {string.Join("; ", parts)}");
    }

    private static void Measure(string name, int count, Action action)
    {
        var best = double.MaxValue;
        for (var round = 0; round < 5; round++)
        {
            var sw = Stopwatch.StartNew();
            for (var i = 0; i < count; i++)
            {
                action();
            }
            best = Math.Min(best, sw.Elapsed.TotalMicroseconds / count);
        }
        Console.WriteLine($"# {name}: {best:0.0} µs");
    }
}
