using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Wasmtime;

namespace Potluck.Scheduler.Sandbox;

/// <summary>
/// Compiled modules by SHA-256: an in-memory LRU in front of an optional on-disk cache.
/// A disk entry is <c>{hash}.{fingerprint}.cwasm</c> = magic ‖ HMAC-SHA256(node key, fingerprint ‖ hash ‖ payload) ‖ payload,
/// where payload is <see cref="Module.Serialize"/>'s output and the node key is a random 32-byte
/// secret this node keeps in the cache folder. Only entries whose HMAC verifies are ever handed to
/// <see cref="Module.Deserialize"/> (deserializing is only safe on bytes this node wrote); any other
/// file is deleted and the module recompiled. Files are written to a temporary name and renamed.
/// </summary>
internal sealed class ModuleCache
{
    private static readonly byte[] Magic = "PLKCWSM1"u8.ToArray();
    private const int MacSize = 32;
    private const string KeyFileName = "node-cache.key";

    private readonly Engine _engine;
    private readonly string _fingerprint;
    private readonly string? _directory;
    private readonly int _capacity;
    private readonly ILogger _logger;
    private readonly object _gate = new();
    private readonly Dictionary<string, LinkedListNode<(string Key, Module Module)>> _map = new(StringComparer.Ordinal);
    private readonly LinkedList<(string Key, Module Module)> _lru = new();
    private byte[]? _key;

    public ModuleCache(Engine engine, string fingerprint, string? directory, int capacity, ILogger logger)
    {
        _engine = engine;
        _fingerprint = fingerprint;
        _directory = directory;
        _capacity = capacity;
        _logger = logger;
        if (directory is not null) Directory.CreateDirectory(directory);
    }

    /// <summary>Disk path of a module's entry (for tests and diagnostics).</summary>
    public string? PathFor(string sha256Hex)
        => _directory is null ? null : Path.Combine(_directory, $"{sha256Hex}.{_fingerprint}.cwasm");

    /// <summary>Returns the compiled module; throws <see cref="WasmtimeException"/> when the bytes do not compile.</summary>
    public Module GetOrCompile(string sha256Hex, ReadOnlySpan<byte> wasm, out ModuleSource source)
    {
        lock (_gate)
        {
            if (_map.TryGetValue(sha256Hex, out var node))
            {
                _lru.Remove(node);
                _lru.AddFirst(node);
                source = ModuleSource.MemoryCache;
                return node.Value.Module;
            }
        }

        var module = TryLoadFromDisk(sha256Hex);
        source = ModuleSource.DiskCache;
        if (module is null)
        {
            module = Module.FromBytes(_engine, sha256Hex, wasm);
            source = ModuleSource.Compiled;
            TryStoreOnDisk(sha256Hex, module);
        }

        lock (_gate)
        {
            if (_map.TryGetValue(sha256Hex, out var raced))
            {
                return raced.Value.Module;
            }
            _map[sha256Hex] = _lru.AddFirst((sha256Hex, module));
            while (_map.Count > _capacity)
            {
                // Not disposed: a concurrent run may still hold it; its safe handle frees it when unreachable.
                var last = _lru.Last!;
                _lru.RemoveLast();
                _map.Remove(last.Value.Key);
            }
        }
        return module;
    }

    private Module? TryLoadFromDisk(string sha256Hex)
    {
        var path = PathFor(sha256Hex);
        if (path is null || !File.Exists(path)) return null;
        try
        {
            var bytes = File.ReadAllBytes(path);
            if (bytes.Length < Magic.Length + MacSize || !bytes.AsSpan(0, Magic.Length).SequenceEqual(Magic))
            {
                Reject(path, sha256Hex, "bad header");
                return null;
            }
            var payload = bytes.AsSpan(Magic.Length + MacSize);
            var expected = ComputeMac(sha256Hex, payload);
            if (!CryptographicOperations.FixedTimeEquals(expected, bytes.AsSpan(Magic.Length, MacSize)))
            {
                Reject(path, sha256Hex, "MAC mismatch");
                return null;
            }
            return Module.Deserialize(_engine, sha256Hex, payload);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or WasmtimeException)
        {
            // A signed entry Wasmtime still refuses (e.g. another CPU): recompile over it.
            SandboxLog.CacheEntryUnreadable(_logger, sha256Hex, e.GetType().Name);
            return null;
        }
    }

    private void Reject(string path, string sha256Hex, string why)
    {
        SandboxLog.CacheEntryRejected(_logger, sha256Hex, why);
        TryDelete(path);
    }

    private void TryStoreOnDisk(string sha256Hex, Module module)
    {
        var path = PathFor(sha256Hex);
        if (path is null) return;
        var temp = $"{path}.{Guid.NewGuid():N}.tmp";
        try
        {
            var payload = module.Serialize();
            using (var f = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                f.Write(Magic);
                f.Write(ComputeMac(sha256Hex, payload));
                f.Write(payload);
                f.Flush(flushToDisk: true);
            }
            File.Move(temp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or WasmtimeException)
        {
            SandboxLog.CacheWriteFailed(_logger, sha256Hex, e.GetType().Name);
            TryDelete(temp);
        }
    }

    private byte[] ComputeMac(string sha256Hex, ReadOnlySpan<byte> payload)
    {
        using var mac = IncrementalHash.CreateHMAC(HashAlgorithmName.SHA256, NodeKey());
        mac.AppendData(System.Text.Encoding.ASCII.GetBytes($"{_fingerprint}\n{sha256Hex}\n"));
        mac.AppendData(payload);
        return mac.GetHashAndReset();
    }

    /// <summary>The node-local secret: created once (owner-only permissions), then reused.</summary>
    private byte[] NodeKey()
    {
        if (_key is not null) return _key;
        var path = Path.Combine(_directory!, KeyFileName);
        for (var attempt = 0; ; attempt++)
        {
            if (File.Exists(path))
            {
                var existing = File.ReadAllBytes(path);
                if (existing.Length == 32) return _key = existing;
                if (attempt > 0) throw new IOException($"cache key {path} is not 32 bytes");
                File.Delete(path);
            }
            var temp = $"{path}.{Guid.NewGuid():N}.tmp";
            var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
            if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            using (var f = new FileStream(temp, options))
            {
                f.Write(RandomNumberGenerator.GetBytes(32));
            }
            try
            {
                File.Move(temp, path, overwrite: false);
            }
            catch (IOException)
            {
                TryDelete(temp); // another sandbox won the race: use its key
            }
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }
}
