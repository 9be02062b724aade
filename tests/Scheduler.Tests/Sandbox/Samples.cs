using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Potluck.Scheduler.Tests.Sandbox;

/// <summary>The committed sample modules, and independent C# computations of what they print.</summary>
internal static class Samples
{
    public static string RepoRoot => Potluck.Tests.RepositoryRoot.FullPath;

    private static readonly Dictionary<string, byte[]> Loaded = new();

    /// <summary>samples/{folder}/{name}.wasm (folder defaults to name).</summary>
    public static byte[] Load(string name, string? folder = null)
    {
        var path = Path.Combine(RepoRoot, "samples", folder ?? name, name + ".wasm");
        lock (Loaded)
        {
            if (!Loaded.TryGetValue(path, out var bytes)) Loaded[path] = bytes = File.ReadAllBytes(path);
            return bytes;
        }
    }

    public static byte[] TestModule(string name) => Load(name, "testmods");

    public static string HashChain(byte[] seed, int n)
    {
        var h = SHA256.HashData(seed);
        for (var i = 1; i < n; i++) h = SHA256.HashData(h);
        return Convert.ToHexStringLower(h) + "\n";
    }

    public static string MatMul(int n)
    {
        var a = new double[n * n];
        var b = new double[n * n];
        var c = new double[n * n];
        for (var i = 0; i < n; i++)
        {
            for (var j = 0; j < n; j++)
            {
                a[i * n + j] = (double)((i * 7 + j * 3) % 11) / 4.0 - 1.0;
                b[i * n + j] = (double)((i * 5 + j * 13) % 17) / 8.0 - 1.0;
            }
        }
        for (var i = 0; i < n; i++)
        {
            for (var k = 0; k < n; k++)
            {
                var aik = a[i * n + k];
                for (var j = 0; j < n; j++) c[i * n + j] += aik * b[k * n + j];
            }
        }
        var sum = 0.0;
        foreach (var v in c) sum += v;
        var bits = BitConverter.DoubleToUInt64Bits(sum);
        return string.Create(CultureInfo.InvariantCulture, $"n={n} checksum={sum:F6} bits={bits:x16}\n");
    }

    public static byte[] Render(int w, int h, int maxIt)
    {
        var header = Encoding.ASCII.GetBytes($"P5\n{w} {h}\n255\n");
        var image = new byte[header.Length + w * h];
        header.CopyTo(image, 0);
        for (var py = 0; py < h; py++)
        {
            var cy = -1.25 + 2.5 * (double)py / (double)h;
            for (var px = 0; px < w; px++)
            {
                var cx = -2.5 + 3.5 * (double)px / (double)w;
                double x = 0.0, y = 0.0;
                long it = 0;
                while (it < maxIt)
                {
                    double x2 = x * x, y2 = y * y;
                    if (x2 + y2 > 4.0) break;
                    y = 2.0 * x * y + cy;
                    x = x2 - y2 + cx;
                    it++;
                }
                image[header.Length + py * w + px] = (byte)(it * 255 / maxIt);
            }
        }
        return image;
    }
}
